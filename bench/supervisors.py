"""The supervisors' benchmark: how late the wallboard shows a call, and what a listening supervisor costs.

Starts the real appliance (tests.support.appliance) with a one-step flow (number 300 → queue
billing, where callers wait on hold: one operator is signed in but away, so nobody answers and
nobody overflows), signs in K supervisors as aiortc clients over the console's HTTPS API, and
measures two things:

1. Wallboard delay. With N sipp callers on hold, P probe callers (a second sipp with a message
   trace) call in one at a time, hold a few seconds and hang up. Each probe's INVITE and BYE are
   sent at times sipp writes in its trace (wall clock); the first wallboard that shows the call,
   and the first after it that no longer does, are timed on receipt by a supervisor's client
   (wall clock, same box).
2. Listening cost. With C callers on hold, the same K supervisors signed in throughout, steps
   of 0, K/2, K (…) supervisors each joined to a call in listen mode: CPU of the appliance's
   process tree over a steady window per step; the cost of one listener is the difference from
   the steps with none, divided by the listeners.

Writes raw results to bench/results/ and its section of docs/BENCHMARKS.md.

    python bench/supervisors.py                 # 50 calls, 30 probes; 10 supervisors (about 4 minutes)
    python bench/supervisors.py --quick         # 10 calls, 8 probes, 2 supervisors: checks the benchmark
    python bench/supervisors.py --calls 50 --listeners 0,5,10,0
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/supervisors.py` puts bench/ first, not the repo

import numpy as np

from appliance.operators import protocol as op
from bench.calls import CALLS_PER_WORKER, find_sipp
from bench.common import (
    DOC,
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
)
from bench.supervisors_report import table, write_doc
from tests.support.appliance import ApplianceProcess
from tests.support.console import add_user, operator
from tests.support.operator_client import OperatorClient
from tests.support.sipp.process import SippResult, run_sipp

QUEUES = ROOT / "tests" / "console" / "flows" / "queues.yaml"  # billing: the console tests' queue
# Callers wait in billing for as long as the benchmark needs (the console tests' desk flow gives up at 120 s).
FLOW = """\
name: supervised
description: straight to the billing queue, where callers wait on hold (bench/supervisors.py)
numbers: ["300"]
entry: queue
steps:
  queue:
    escalate:
      queue: billing
      announcement: Please hold.
      max_wait: 3600
      overflow: bye
  bye:
    hangup: {}
"""
SILENT_RMS = 100.0  # a received 20 ms frame below this carried nothing a supervisor would hear
FRAME = 320  # 20 ms at 16 kHz, as the client hears it


# --- a supervisor's console ------------------------------------------------------------------


@dataclass(frozen=True)
class Board:
    received: float  # wall clock, when the data channel handed it to this client
    at: float  # wall clock, when the hub built it (its `at`)
    calls: frozenset[str]
    size: int  # bytes of JSON


class SupervisorClient(OperatorClient):
    """A supervisor's browser: keeps each wallboard as its receive time and call ids, and passes
    every other message on as the operator client does."""

    def __init__(self) -> None:
        super().__init__()
        self.boards: list[Board] = []
        self._board: op.Wallboard | None = None

    def _on_message(self, message: str | bytes) -> None:
        received = time.time()
        data = json.loads(message)
        if data.get("type") == "wallboard":
            self._board = op.Wallboard.model_validate(data)
        elif data.get("type") == "wallboard_update" and self._board is not None:
            self._board = op.apply(self._board, op.WallboardUpdate.model_validate(data))
        else:
            super()._on_message(message)
            return
        at = dt.datetime.fromisoformat(data["at"]).timestamp()
        self.boards.append(Board(received, at, frozenset(c["call"] for c in self._board.calls), len(message)))

    def live(self) -> frozenset[str]:
        return self.boards[-1].calls if self.boards else frozenset()


async def wait_live(client: SupervisorClient, count: int, timeout: float) -> bool:
    """Until the wallboard shows exactly `count` live calls (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(client.live()) == count:
            return True
        await asyncio.sleep(0.2)
    return False


# --- sipp's message trace ----------------------------------------------------------------------


def sent_times(trace: str) -> dict[str, dict[str, float]]:
    """Call-ID → method → wall-clock time sipp first sent that request (from its -trace_msg file)."""
    out: dict[str, dict[str, float]] = {}
    # Each entry: a dashed line with the time (date, time, then Unix time), "UDP message sent
    # (N bytes):", a blank line, the message.
    for stamp, body in re.findall(r"^-{10,} ([^\n]*)\n(.*?)(?=^-{10,} |\Z)", trace, re.MULTILINE | re.DOTALL):
        head, _, message = body.partition("\n\n")
        if "message sent" not in head:
            continue
        method = message.lstrip().split(" ", 1)[0]
        call_id = re.search(r"^Call-ID:\s*(\S+)", message, re.MULTILINE | re.IGNORECASE)
        if call_id and method.isalpha() and method.isupper():
            out.setdefault(call_id.group(1), {}).setdefault(method, _stamp(stamp))
    return out


def _stamp(text: str) -> float:
    unix = re.search(r"(\d{9,}\.\d+)\s*$", text)
    if unix:
        return float(unix.group(1))
    date, clock = text.split()[:2]  # local time, as sipp prints it
    return dt.datetime.fromisoformat(f"{date}T{clock}").timestamp()


def appliance_call_ids(app: ApplianceProcess, since: str) -> dict[str, dict[str, Any]]:
    """SIP Call-ID → the appliance's call record, for the calls that started after `since` (ISO)."""
    out = {}
    for call in app.calls():
        if call["started_at"] >= since:
            record = app.call(call["id"])
            offered: dict[str, Any] = next((e["data"] for e in record["events"] if e["kind"] == "offered"), {})
            if offered.get("sip_call_id"):
                out[offered["sip_call_id"]] = record
    return out


def hold_callers(app: ApplianceProcess, workdir: Path, calls: int, rate: float,
                 seconds: float) -> asyncio.Task[SippResult]:
    """`calls` sipp callers to number 300 (into the queue, on hold) for `seconds` each, in the background."""
    scenario = caller_scenario(workdir, seconds, "caller.xml")
    return asyncio.create_task(asyncio.to_thread(
        run_sipp, scenario, app.sip_port, workdir, calls=calls, rate=rate, service="300",
        timeout=seconds + calls / rate + 60))


def sipp_problems(who: str, result: SippResult, calls: int) -> list[str]:
    ok = not result.failed and result.successful == calls
    return [] if ok else [f"{who}: {result.successful} successful, {result.failed} failed of {calls}"]


# --- 1. wallboard delay ------------------------------------------------------------------------


def probe_delays(boards: list[Board], invite: float | None, bye: float | None,
                 record: dict[str, Any]) -> dict[str, Any]:
    """One probe call: INVITE sent → first board showing it (appear), BYE sent → first board after
    that without it (gone); each split where the hub's record (started_at, ended_at) puts it."""
    call_id = record["id"]
    out: dict[str, Any] = {"call": call_id}
    shown = next((b for b in boards if call_id in b.calls), None)
    gone = None if shown is None else next(
        (b for b in boards if b.received > shown.received and call_id not in b.calls), None)
    if shown is None or gone is None:
        out["problem"] = "never on the wallboard" if shown is None else "still on the wallboard"
    for name, sent, hub, board in (("appear", invite, record.get("started_at"), shown),
                                   ("gone", bye, record.get("ended_at"), gone)):
        if sent is None or board is None:
            continue
        out[f"{name}_ms"] = round(1000 * (board.received - sent), 1)
        if hub:
            at = dt.datetime.fromisoformat(hub).timestamp()
            out[f"{name}_sip_ms"] = round(1000 * (at - sent), 1)  # sipp → edge → SIP worker → hub
            out[f"{name}_board_ms"] = round(1000 * (board.received - at), 1)
    return out


def _dist(values: list[float]) -> dict[str, Any]:
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "max": pct(values, 1.0), "n": len(values)}


def board_stats(clients: list[SupervisorClient], w0: float, w1: float) -> dict[str, Any]:
    """The boards received in [w0, w1): their spacing, build → receipt, size, and how far apart
    the supervisors got the same board."""
    mine = [b for b in clients[0].boards if w0 <= b.received < w1]
    received = [b.received for b in mine]
    by_at: dict[float, list[float]] = {}
    for client in clients:
        for b in client.boards:
            if w0 <= b.received < w1:
                by_at.setdefault(b.at, []).append(b.received)
    spread = [1000 * (max(r) - min(r)) for r in by_at.values() if len(r) == len(clients)]
    return {
        "boards": len(mine),
        "interval_ms": _dist([1000 * b for b in np.diff(received)]) if len(received) > 1 else {},
        # A 2 s interval is a board the appliance did not send in its second.
        "intervals_over_1_5_s": int(np.sum(np.diff(received) > 1.5)),
        "build_to_received_ms": _dist([1000 * (b.received - b.at) for b in mine]),
        "calls_shown": {"min": min((len(b.calls) for b in mine), default=None),
                        "max": max((len(b.calls) for b in mine), default=None)},
        "bytes_mean": round(float(np.mean([b.size for b in mine])), 0) if mine else None,
        "fan_out_spread_ms": _dist(spread),
    }


async def measure_wallboard(app: ApplianceProcess, clients: list[SupervisorClient], args: argparse.Namespace,
                            workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    out: dict[str, Any] = {"calls": args.calls, "probes": args.probes, "problems": []}
    ramp_s = args.calls / args.rate
    probe_span = args.probes / args.probe_rate + args.probe_hold
    base_s = ramp_s + args.settle + probe_span + 15
    base_task = hold_callers(app, workdir, args.calls, args.rate, base_s)
    try:
        if not await wait_live(clients[0], args.calls, ramp_s + 30):
            out["problems"].append(f"the wallboard showed {len(clients[0].live())} of {args.calls} calls")
        await asyncio.sleep(args.settle)
        probe_dir = workdir / "probes"
        probe_dir.mkdir()
        trace = probe_dir / "messages.log"
        since = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        window = SteadyWindow(app, [])
        w0 = time.time()
        probes: SippResult = await asyncio.to_thread(
            run_sipp, caller_scenario(probe_dir, args.probe_hold, "probe.xml"), app.sip_port, probe_dir,
            calls=args.probes, rate=args.probe_rate, service="300", timeout=probe_span + 60,
            extra=["-trace_msg", "-message_file", str(trace)])
        await asyncio.sleep(2.5)  # the last probe leaves the wallboard
        w1 = time.time()
        out["load"] = window.stop()
        out["problems"] += sipp_problems("probe sipp", probes, args.probes)
        sent = sent_times(trace.read_text(errors="replace") if trace.exists() else "")
        records = await asyncio.to_thread(appliance_call_ids, app, since)
        out["probe_calls"] = [
            probe_delays(clients[0].boards, times.get("INVITE"), times.get("BYE"), records[sip_id])
            for sip_id, times in sent.items() if sip_id in records]
        if len(out["probe_calls"]) != args.probes:
            out["problems"].append(f"{len(out['probe_calls'])} of {args.probes} probes found in the "
                                   f"trace and the call records")
        out["boards"] = board_stats(clients, w0, w1)
        out["problems"] += sipp_problems("sipp", await base_task, args.calls)
    finally:
        if not base_task.done():
            await asyncio.gather(base_task, return_exceptions=True)
    calls = out.get("probe_calls", [])
    for key in ("appear_ms", "appear_sip_ms", "appear_board_ms", "gone_ms", "gone_sip_ms", "gone_board_ms"):
        out[key] = _dist([c[key] for c in calls if key in c])
    out["problems"] += sorted({f"probe: {c['problem']}" for c in calls if "problem" in c})
    return out


# --- 2. listening cost ---------------------------------------------------------------------------


@dataclass
class ListenStep:
    listeners: int
    signed_in: int  # supervisors connected (listening or not)
    steady_s: float | None = None
    cpu: dict[str, Any] = field(default_factory=dict)
    box_cpu: dict[str, float] = field(default_factory=dict)
    other_load_pct: float | None = None
    heard_frames_pct: float | None = None  # of the window's 20 ms frames, mean over listeners
    audible_frames_pct: float | None = None
    problems: list[str] = field(default_factory=list)


async def set_listeners(clients: list[SupervisorClient], calls: list[str], k: int,
                        joined: dict[int, str]) -> list[str]:
    """The first `k` supervisors each in a call (round the calls) in listen mode; the rest in none."""
    problems = []
    for i, client in enumerate(clients):
        want = calls[i % len(calls)] if i < k else None
        if joined.get(i) == want:
            continue
        try:
            if want is None:
                client.send({"type": "leave"})
                await client.recv("left", timeout=10)
                joined.pop(i)
            else:
                client.send({"type": "join", "call": want, "mode": "listen"})
                await client.recv("joined", timeout=10)
                joined[i] = want
        except TimeoutError:
            problems.append(f"sam{i}: no answer to {'leave' if want is None else 'join'}")
    return problems


def heard_in(client: SupervisorClient, w0: float, w1: float) -> tuple[float, float]:
    """What one listener received in [w0, w1): frames, and frames with sound, in % of the window's."""
    arrivals = list(client.arrivals)
    ends = [end for when, end in arrivals if when < w0]
    first = ends[-1] if ends else 0
    last = max((end for when, end in arrivals if when < w1), default=0)
    pcm = np.frombuffer(client.heard()[first:last], dtype=np.int16).astype(np.float64)
    frames = len(pcm) // FRAME
    rms = np.sqrt(np.mean(pcm[:frames * FRAME].reshape(frames, FRAME) ** 2, axis=1)) if frames else np.zeros(0)
    expected = (w1 - w0) / 0.02
    return 100 * frames / expected, 100 * int(np.sum(rms >= SILENT_RMS)) / expected


async def measure_step(app: ApplianceProcess, step: ListenStep, clients: list[SupervisorClient],
                       args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Settle, then one steady window: CPU, and what the step's listeners received."""
    await asyncio.sleep(args.settle)
    window = SteadyWindow(app, find_sipp(workdir))
    w0 = time.time()
    await asyncio.sleep(args.window)
    w1 = time.time()
    measured = window.stop()
    step.steady_s, step.cpu = measured["seconds"], measured["cpu"]
    step.box_cpu, step.other_load_pct = measured["box_cpu"], measured["other_load_pct"]
    if step.listeners:
        heard = [heard_in(clients[i], w0, w1) for i in range(step.listeners)]
        step.heard_frames_pct = round(float(np.mean([h[0] for h in heard])), 1)
        step.audible_frames_pct = round(float(np.mean([h[1] for h in heard])), 1)
    say(f"    appliance {step.cpu['appliance']}% of a core (rtc {step.cpu.get('rtc')}%, main "
        f"{step.cpu.get('main')}%, SIP workers {step.cpu.get('worker')}%); box busy "
        f"{step.box_cpu['busy']}%, other work {step.other_load_pct}%")
    return asdict(step)


async def measure_listening(app: ApplianceProcess, clients: list[SupervisorClient], args: argparse.Namespace,
                            workdir: Path) -> dict[str, Any]:
    """First one supervisor signed in (the others sign out and back in), then the listening steps
    with all of them signed in."""
    workdir.mkdir(parents=True)
    out: dict[str, Any] = {"calls": args.listen_calls, "steps": [], "problems": []}
    if not await wait_live(clients[0], 0, 30):
        out["problems"].append("calls from the wallboard measurement still live")
    ramp_s = args.listen_calls / args.rate
    steps = len(args.listeners) + (len(clients) > 1)
    call_s = ramp_s + steps * (args.settle + args.window + 3) + 5 + 2 * len(clients)
    sipp_task = hold_callers(app, workdir, args.listen_calls, args.rate, call_s)
    joined: dict[int, str] = {}
    try:
        if not await wait_live(clients[0], args.listen_calls, ramp_s + 30):
            out["problems"].append(f"the wallboard showed {len(clients[0].live())} of {args.listen_calls} calls")
            return out
        calls = sorted(clients[0].live())
        if len(clients) > 1:
            say(f"  1 supervisor signed in (of {len(clients)}), none listening")
            await asyncio.gather(*(c.close() for c in clients[1:]), return_exceptions=True)
            out["steps"].append(await measure_step(app, ListenStep(0, 1), clients, args, workdir))
            for i in range(1, len(clients)):
                clients[i] = SupervisorClient()
                await operator(app, f"sam{i}", available=False, client=clients[i])
        for k in args.listeners:
            say(f"  {k} listening supervisor(s) on {len(calls)} calls, {len(clients)} signed in")
            step = ListenStep(k, len(clients))
            step.problems = await set_listeners(clients, calls, k, joined)
            out["steps"].append(await measure_step(app, step, clients, args, workdir))
        await set_listeners(clients, calls, 0, joined)
        out["problems"] += sipp_problems("sipp", await sipp_task, args.listen_calls)
    finally:
        if not sipp_task.done():
            await asyncio.gather(sipp_task, return_exceptions=True)
    out["per_listener"] = per_listener(out["steps"], len(clients))
    out["per_signed_in"] = per_signed_in(out["steps"], len(clients))
    return out


def per_listener(steps: list[dict[str, Any]], signed_in: int) -> dict[str, Any]:
    """The cost of one listening supervisor: each step's CPU above the mean of the steps with all
    `signed_in` supervisors connected and none listening, divided by its listeners; the slope of a
    least-squares line through those steps."""
    steps = [s for s in steps if s["signed_in"] == signed_in]
    base = [s["cpu"] for s in steps if s["listeners"] == 0]
    if not base or not any(s["listeners"] for s in steps):
        return {}
    out: dict[str, Any] = {}
    for role in ("appliance", "rtc", "main", "worker"):
        zero = float(np.mean([c.get(role, 0.0) for c in base]))
        out[role] = {str(s["listeners"]): round((s["cpu"].get(role, 0.0) - zero) / s["listeners"], 2)
                     for s in steps if s["listeners"]}
    xs = [s["listeners"] for s in steps]
    ys = [s["cpu"]["appliance"] for s in steps]
    out["appliance_slope"] = round(float(np.polyfit(xs, ys, 1)[0]), 2) if len(set(xs)) > 1 else None
    out["baseline_appliance"] = [c["appliance"] for c in base]
    return out


def per_signed_in(steps: list[dict[str, Any]], signed_in: int) -> dict[str, float] | None:
    """What one more supervisor signed in, not listening, costs: the steps with all of them and
    none listening against the step with one, divided by the difference."""
    one = next((s["cpu"] for s in steps if s["signed_in"] == 1), None)
    base = [s["cpu"] for s in steps if s["signed_in"] == signed_in and s["listeners"] == 0]
    if one is None or not base or signed_in < 2:
        return None
    return {role: round((float(np.mean([c.get(role, 0.0) for c in base])) - one.get(role, 0.0)) / (signed_in - 1), 2)
            for role in ("appliance", "rtc", "main", "worker")}


# --- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now().astimezone()
    workers = args.workers or math.ceil((args.calls + math.ceil(args.probe_hold * args.probe_rate) + 1)
                                        / CALLS_PER_WORKER) + 1
    root = Path(tempfile.mkdtemp(prefix="sb-bench-supervisors-"))
    flows = root / "flows"
    flows.mkdir()
    (flows / "supervised.yaml").write_text(FLOW)
    shutil.copy(QUEUES, flows / "queues.yaml")
    app = ApplianceProcess(root, workers=workers, calls_per_worker=CALLS_PER_WORKER, rtc_workers=args.rtc_workers,
                           numbers={"300": "supervised"}, flows_dir=flows)
    report: dict[str, Any] = {
        "benchmark": "supervisors",
        "date": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python bench/supervisors.py", *args.argv]),
        "machine": machine({"sipp": first_line(["sipp", "-v"]), "kamailio": first_line(["kamailio", "-v"])}),
        "code": code_version(("appliance", "sip")),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "settings": {"calls": args.calls, "probes": args.probes, "probe_rate_cps": args.probe_rate,
                     "probe_hold_s": args.probe_hold, "supervisors": args.supervisors,
                     "listen_calls": args.listen_calls, "listeners": args.listeners, "window_s": args.window,
                     "settle_s": args.settle, "rate_cps": args.rate, "workers": workers,
                     "rtc_workers": args.rtc_workers},
        "problems": [],
    }
    say(f"appliance: {workers} SIP workers, {args.rtc_workers} rtc worker(s) in {root}; "
        f"load average {' '.join(report['loadavg_before'])}")
    clients: list[SupervisorClient] = []
    away: OperatorClient | None = None
    try:
        app.start(timeout=60 + 3 * workers)
        add_user(app, "alice", queues="billing")
        for i in range(args.supervisors):
            add_user(app, f"sam{i}", role="supervisor")
        # Signed in but away: the queue has an operator, so callers wait instead of overflowing.
        away, _ = await operator(app, "alice", available=False)
        for i in range(args.supervisors):
            client = SupervisorClient()
            await operator(app, f"sam{i}", available=False, client=client)
            clients.append(client)
        say(f"{args.supervisors} supervisors signed in; wallboard: {args.calls} callers on hold, "
            f"{args.probes} probe calls of {args.probe_hold:g} s")
        report["wallboard"] = await measure_wallboard(app, clients, args, root / "wallboard")
        say(_wallboard_line(report["wallboard"]))
        say(f"listening: {args.listen_calls} callers on hold, listeners {args.listeners}")
        report["listening"] = await measure_listening(app, clients, args, root / "listening")
        say(_listening_line(report["listening"]))
    except (TimeoutError, AssertionError) as error:
        report["problems"].append(f"{type(error).__name__}: {error}"[:300])
        say(f"stopped: {report['problems'][-1]}")
    finally:
        await asyncio.gather(*(c.close() for c in clients), *([away.close()] if away else []),
                             return_exceptions=True)
        stop_appliance(app, report, root, args.keep)
    report["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    return report


def _wallboard_line(w: dict[str, Any]) -> str:
    b = w.get("boards", {})
    return (f"  INVITE → shown p50/p95 {w['appear_ms']['p50']}/{w['appear_ms']['p95']} ms, BYE → gone "
            f"{w['gone_ms']['p50']}/{w['gone_ms']['p95']} ms ({w['appear_ms']['n']} probes); boards every "
            f"{b.get('interval_ms', {}).get('p50')} ms, build → received p95 "
            f"{b.get('build_to_received_ms', {}).get('p95')} ms"
            + (f"; PROBLEMS: {'; '.join(w['problems'])}" if w["problems"] else ""))


def _listening_line(listening: dict[str, Any]) -> str:
    p = listening.get("per_listener", {})
    return (f"  per listening supervisor, % of a core: appliance {p.get('appliance')}, rtc {p.get('rtc')}; "
            f"slope {p.get('appliance_slope')}; per supervisor signed in, not listening: "
            f"{listening.get('per_signed_in')}"
            + (f"; PROBLEMS: {'; '.join(listening['problems'])}" if listening["problems"] else ""))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/supervisors.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, help="callers on hold while the wallboard is timed (default 50)")
    parser.add_argument("--probes", type=int, help="probe calls timed onto and off the wallboard (default 30)")
    parser.add_argument("--probe-rate", type=float, default=0.73,
                        help="probe calls per second (default 0.73: not a divisor of the 1 s wallboard)")
    parser.add_argument("--probe-hold", type=float, default=3.0, help="seconds each probe call lasts (default 3)")
    parser.add_argument("--supervisors", type=int, help="supervisors signed in throughout (default 10)")
    parser.add_argument("--listen-calls", type=int, help="callers on hold while listening is measured (default 10)")
    parser.add_argument("--listeners", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        help="listening supervisors per step (default 0,5,10,0)")
    parser.add_argument("--window", type=float, help="seconds of steady state per listening step (default 20)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each window (default 3)")
    parser.add_argument("--rate", type=float, default=10, help="callers started per second (default 10)")
    parser.add_argument("--workers", type=int, help="SIP workers (default: enough for the calls and probes, + 1)")
    parser.add_argument("--rtc-workers", type=int, default=1, help="WebRTC gateway processes (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="10 calls, 8 probes, 2 supervisors, listeners 0,2 with 6 s windows")
    parser.add_argument("--tag", default="", help="added to the results file's name (e.g. 2-supervisors)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md (default in --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the appliance's temp dir (logs)")
    args = parser.parse_args(argv)
    args.argv = argv
    quick = args.quick
    args.calls = args.calls or (10 if quick else 50)
    args.probes = args.probes or (8 if quick else 30)
    args.supervisors = args.supervisors or (2 if quick else 10)
    args.listen_calls = args.listen_calls or 10
    args.listeners = args.listeners or ([0, 2] if quick else [0, args.supervisors // 2, args.supervisors, 0])
    args.window = args.window or (6.0 if quick else 20.0)
    if max(args.listeners) > args.supervisors:
        parser.error("--listeners cannot exceed --supervisors")
    if quick:
        args.no_doc = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if missing_program("bench/supervisors.py"):
        return 2
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    report = asyncio.run(run(args))
    tag = ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    save_and_print(report, "supervisors", tag, table(report))
    if not args.no_doc and "wallboard" in report:
        write_doc(report)
        print(f"wrote {DOC.relative_to(ROOT)}")
    problems = report["problems"] + report.get("wallboard", {}).get("problems", []) \
        + report.get("listening", {}).get("problems", [])
    return 0 if "listening" in report and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
