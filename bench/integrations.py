"""The integrations benchmark: how late event webhooks arrive with many live calls, and what a live
audio egress stream costs.

Starts the real appliance (tests.support.appliance) with the call-capacity benchmark's flow (a
greeting, then a menu that holds the call) and one event-webhook receiver: a loopback HTTP server
in this process answering 204. N sipp callers (silent) call in at R calls/s and hold; then, with
all N live, steps of K WebSocket clients each tap a different call's audio (`track=both`, 16 kHz)
while the appliance's CPU is measured over a steady window; then the calls end.

1. Webhook delay: for every event of every call (call_started, call_answered, call_ended,
   recording_ready), the time from the change that made it (the outbox row's `created_at`, the
   appliance's clock) to its delivery (`done_at`, when the receiver's 2xx came back), read from
   the appliance's SQLite outbox after the run; and the same measured on receipt by the receiver
   (its wall clock, same box).
2. Egress cost: the appliance's CPU (its main process, where the hub and the WebSocket handlers
   run) in each step above the step with no stream, per stream.

Writes raw results to bench/results/ and its section of docs/BENCHMARKS.md.

    python bench/integrations.py                # 100 calls, streams 0,5,10,0 (about 4 minutes)
    python bench/integrations.py --quick        # 10 calls, streams 0,2: checks the benchmark
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    ROOT = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(ROOT))  # `python bench/integrations.py` puts bench/ first, not the repo

import aiohttp
from aiohttp import web

from bench.calls import CALLS_PER_WORKER, HELD_FLOW
from bench.common import (
    ROOT,
    SteadyWindow,
    caller_scenario,
    code_version,
    first_line,
    machine,
    missing_program,
    pct,
    save_and_print,
    say,
    stop_appliance,
    write_doc_section,
)
from tests.support.appliance import ApplianceProcess
from tests.support.http_server import LoopbackServer
from tests.support.sipp.process import run_sipp

BEGIN, END = "<!-- integrations:begin -->", "<!-- integrations:end -->"


class Receiver:
    """The webhook receiver: answers 204 and keeps each event's id, name and receipt time."""

    def __init__(self) -> None:
        self.received: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.server = LoopbackServer({"/hooks": self._answer})

    async def _answer(self, request: web.Request) -> web.Response:
        at = time.time()
        body = json.loads(await request.read())
        with self.lock:
            self.received[body["id"]] = (body["event"], at)
        return web.Response(status=204)


async def _stream(url: str, token: str, stop: asyncio.Event, counts: list[int]) -> None:
    """One egress client: reads the call's audio until told to stop; counts bytes received."""
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, headers={"Authorization": f"Bearer {token}"}) as socket:
        while not stop.is_set():
            try:
                message = await socket.receive(timeout=0.5)
            except TimeoutError:
                continue
            if message.type == aiohttp.WSMsgType.BINARY:
                counts[0] += len(message.data)
            elif message.type != aiohttp.WSMsgType.TEXT:
                return


async def egress_step(app: ApplianceProcess, calls: list[str], streams: int, args: argparse.Namespace
                      ) -> dict[str, Any]:
    stop = asyncio.Event()
    counts = [[0] for _ in range(streams)]
    token = app.token("admin")
    tasks = [asyncio.create_task(_stream(f"ws://127.0.0.1:{app.http_port}/api/calls/{calls[i]}/audio?track=both",
                                         token, stop, counts[i])) for i in range(streams)]
    await asyncio.sleep(args.settle)
    received_before = sum(c[0] for c in counts)
    window = SteadyWindow(app, [])
    await asyncio.sleep(args.window)
    measured = window.stop()
    received = sum(c[0] for c in counts) - received_before
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    # 16 kHz stereo s16le: 64,000 bytes a second per stream.
    expected = streams * 64_000 * measured["seconds"]
    step = {"streams": streams, "cpu": measured["cpu"], "box_cpu": measured["box_cpu"],
            "other_load_pct": measured["other_load_pct"],
            "audio_received_pct": round(100 * received / expected, 1) if expected else None}
    say(f"  {streams} stream(s): appliance {step['cpu']['appliance']}% of a core (main {step['cpu'].get('main')}%); "
        f"audio received {step['audio_received_pct']}%; other work {step['other_load_pct']}%")
    return step


def webhook_delays(app: ApplianceProcess, receiver: Receiver) -> dict[str, Any]:
    with sqlite3.connect(app.data_dir / "switchboard.db") as db:
        rows = db.execute("SELECT event, body, created_at, done_at, state FROM webhook_outbox").fetchall()
    by_event: dict[str, list[float]] = {}
    on_receipt: list[float] = []
    states: dict[str, int] = {}
    for event, body, created, done, state in rows:
        states[state] = states.get(state, 0) + 1
        if state == "delivered":
            by_event.setdefault(event, []).append(1000 * (done - created))
            got = receiver.received.get(json.loads(body)["id"])
            if got is not None:
                on_receipt.append(1000 * (got[1] - created))
    every = [ms for values in by_event.values() for ms in values]
    return {
        "events": len(rows), "states": states, "received": len(receiver.received),
        "delivered_ms": _dist(every), "received_ms": _dist(on_receipt),
        "by_event_ms": {event: _dist(values) for event, values in sorted(by_event.items())},
    }


def _dist(values: list[float]) -> dict[str, Any]:
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "max": pct(values, 1.0), "n": len(values)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now().astimezone()
    workers = math.ceil(args.calls / CALLS_PER_WORKER) + 1
    root = Path(tempfile.mkdtemp(prefix="sb-bench-integrations-"))
    flows = root / "flows"
    flows.mkdir()
    (flows / "bench.yaml").write_text(HELD_FLOW)
    receiver = Receiver()
    report: dict[str, Any] = {
        "benchmark": "integrations",
        "date": started_at.isoformat(timespec="seconds"),
        "command": "python bench/integrations.py " + " ".join(args.argv),
        "machine": machine({"sipp": first_line(["sipp", "-v"]), "kamailio": first_line(["kamailio", "-v"])}),
        "code": code_version(("appliance", "sip")),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "settings": {"calls": args.calls, "rate_cps": args.rate, "streams": args.streams, "window_s": args.window,
                     "workers": workers},
        "problems": [],
    }
    with receiver.server.in_thread():
        url = f"{receiver.server.url}/hooks"
        app = ApplianceProcess(root, workers=workers, calls_per_worker=CALLS_PER_WORKER,
                               numbers={"100": "bench"}, flows_dir=flows,
                               extra={"webhooks": {"allowed": [url]}, "events": {"webhooks": [{"url": url}]}})
        say(f"appliance: {workers} SIP workers in {root}; load average {' '.join(report['loadavg_before'])}")
        try:
            app.start(timeout=60 + 3 * workers)
            ramp_s = args.calls / args.rate
            hold_s = ramp_s + len(args.streams) * (args.settle + args.window + 2) + 10
            sipp = asyncio.create_task(asyncio.to_thread(
                run_sipp, caller_scenario(root, hold_s), app.sip_port, root, calls=args.calls, rate=args.rate,
                service="100", timeout=hold_s + ramp_s + 60))
            deadline = time.monotonic() + ramp_s + 30
            live: list[str] = []
            while time.monotonic() < deadline:
                live = [c["id"] for c in app.calls() if c["answered_at"] and not c["ended_at"]]
                if len(live) >= args.calls:
                    break
                await asyncio.sleep(0.5)
            say(f"{len(live)} of {args.calls} calls live")
            if len(live) < args.calls:
                report["problems"].append(f"only {len(live)} of {args.calls} calls were live")
            report["egress"] = [await egress_step(app, live, min(k, len(live)), args) for k in args.streams]
            result = await sipp
            if result.failed or result.successful != args.calls:
                report["problems"].append(f"sipp: {result.successful} successful, {result.failed} failed")
            end = time.monotonic() + 60
            while time.monotonic() < end and any(not c["ended_at"] for c in app.calls()):
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # the last calls' recording_ready events
            report["webhooks"] = webhook_delays(app, receiver)
        finally:
            stop_appliance(app, report, root, args.keep)
    base = [s["cpu"]["appliance"] for s in report.get("egress", []) if s["streams"] == 0]
    if base:
        zero = sum(base) / len(base)
        report["per_stream_pct"] = {str(s["streams"]): round((s["cpu"]["appliance"] - zero) / s["streams"], 2)
                                    for s in report["egress"] if s["streams"]}
    return report


def tables(report: dict[str, Any]) -> str:
    w = report.get("webhooks", {})
    rows = ["| event webhooks | p50 / p95 / max ms | events |", "|---|---|---|"]
    if w:
        rows.append(f"| **change → delivered (receiver's 2xx back)** | **{_fmt(w['delivered_ms'])}** | "
                    f"{w['delivered_ms']['n']} |")
        rows.append(f"| change → received by the receiver | {_fmt(w['received_ms'])} | {w['received_ms']['n']} |")
        for event, d in w["by_event_ms"].items():
            rows.append(f"| of them `{event}` | {_fmt(d)} | {d['n']} |")
    rows += ["", "| egress streams | appliance CPU % of a core (main) | audio received % | other work % of a core |",
             "|---|---|---|---|"]
    for s in report.get("egress", []):
        rows.append(f"| {s['streams']} | {s['cpu']['appliance']} ({s['cpu'].get('main')}) | "
                    f"{s['audio_received_pct'] if s['audio_received_pct'] is not None else '–'} | "
                    f"{s['other_load_pct']} |")
    if report.get("per_stream_pct"):
        rows.append(f"\nPer stream, above the steps with none: {report['per_stream_pct']} (% of a core).")
    if report["problems"]:
        rows.append(f"\nProblems: {'; '.join(report['problems'])}")
    return "\n".join(rows)


def _fmt(d: dict[str, Any]) -> str:
    return f"{d['p50']} / {d['p95']} / {d['max']}"


def write_doc(report: dict[str, Any]) -> None:
    m = report["machine"]
    section = "\n".join([
        BEGIN,
        "## Integrations: event webhooks and live audio egress",
        "",
        f"Measured {report['date']} on {m.get('cpu', '?')}, {m.get('cores', '?')} cores "
        f"(code {report['code']}), with `{report['command']}`: {report['settings']['calls']} sipp calls "
        f"held live (the capacity benchmark's flow), every event to one loopback receiver answering 204, "
        f"then steps of WebSocket clients each tapping another call's audio (16 kHz stereo).",
        "",
        tables(report),
        "",
        "Delay is from the change that made the event (the outbox row written in SQLite) to the receiver's "
        "answer, as the appliance logs it; the webhook's own JSON and signing happen inside it. Egress cost "
        "is the appliance's CPU with the streams above the steps with none.",
        END,
        "",
    ])
    write_doc_section(section, BEGIN, END)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[0, 5, 10, 0])
    parser.add_argument("--window", type=float, default=15, help="seconds of each CPU window")
    parser.add_argument("--settle", type=float, default=3)
    parser.add_argument("--quick", action="store_true", help="10 calls, streams 0,2: checks the benchmark")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument("--keep", action="store_true", help="keep the appliance's temp dir")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.quick:
        args.calls, args.streams, args.window = 10, [0, 2], 5
    if missing_program("bench/integrations.py"):
        return 2
    report = asyncio.run(run(args))
    tag = "-quick" if args.quick else (f"-{args.tag}" if args.tag else "")
    save_and_print(report, "integrations", tag, tables(report))
    if not args.no_doc and not args.quick:
        write_doc(report)
        print(f"wrote {ROOT / 'docs' / 'BENCHMARKS.md'}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
