"""The faults benchmark: what a fault costs the calls on the box, measured with live calls.

1. restart: N callers speak through the edge (sipp), the appliance gets `kill -9`, and a new
   `appliance run` starts at once. From that start: /healthz first answers, the first sipp call
   is answered (a prober calls at R calls/s from the start), every SIP worker is back, every worker
   (personas too) is back. Then the old calls: closed by the new start, their recordings
   playable (`wave` and `soxi`) and as long as the call was until the kill.
2. edge: `kill -9` of Kamailio with N calls up: until it answers OPTIONS again and a new call is
   answered; the old calls' callers still heard (RTP never passed the edge) and ended by BYE.
3. db lock: N calls up while another process holds the database for S seconds, as a reader
   (`BEGIN; SELECT`) and as a writer (`BEGIN IMMEDIATE`): the hub's tick lag over the lock,
   writes that waited, and whether every call has all its events afterwards.

Writes raw results to bench/results/ and its section of docs/BENCHMARKS.md.

    python bench/faults.py             # 50 calls (about 4 minutes)
    python bench/faults.py --quick     # 8 calls: checks the benchmark
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/faults.py` puts bench/ first

from bench.calls import (
    CALLS_PER_WORKER,
    HELD_FLOW,
    histogram,
    histogram_delta,
    histogram_quantile,
    metrics_text,
    wait_quiet,
)
from bench.common import (
    ROOT,
    caller_scenario,
    missing_program,
    pct,
    report_head,
    save_and_print,
    say,
    stop_appliance,
    write_doc_section,
)
from tests.support.appliance import ApplianceProcess
from tests.support.audio import caller_heard
from tests.support.ports import free_port_block
from tests.support.sipp.process import options_status
from tests.support.sipp.scenarios import speaking_caller_scenario

BEGIN, END = "<!-- bench/faults.py: begin -->", "<!-- bench/faults.py: end -->"
TICK_LAG = "switchboard_hub_tick_lag_seconds"


# --- sipp, left running ----------------------------------------------------------------------


def start_sipp(scenario: Path, app: ApplianceProcess, workdir: Path, calls: int, rate: float,
               extra: list[str] = ()) -> subprocess.Popen[bytes]:  # type: ignore[assignment]
    """sipp calling the appliance in the background, stopped by its own handle (`stop_sipp`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["sipp", "-sf", str(scenario), "-s", "100", f"127.0.0.1:{app.sip_port}", "-i", "127.0.0.1",
            "-p", str(free_port_block(1)), "-mi", "127.0.0.1", "-mp", str(free_port_block(4)),
            "-m", str(calls), "-r", str(rate), "-l", str(calls), "-nostdin", "-trace_err",
            "-error_file", str(workdir / "sipp_errors.log"), "-timeout", "600s", *extra]
    return subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_sipp(process: subprocess.Popen[bytes], gently: bool = False) -> None:
    """`gently`: no new calls, the ones up end as their scenario says (sipp's SIGUSR1), for up to 10 s."""
    if gently and process.poll() is None:
        process.send_signal(signal.SIGUSR1)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        process.kill()
        process.wait()


def wait_idle(app: ApplianceProcess, timeout: float = 90) -> None:
    """Until no call is up: each part starts from an empty box."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (health(app) or {}).get("calls_active"):
        time.sleep(0.5)


def first_answer(workdir: Path) -> float | None:
    """ms after sipp started at which its first call was answered (its -trace_rtt file), if any yet."""
    for path in workdir.glob("*_rtt.csv"):
        rows = path.read_text().splitlines()[1:]
        if rows:
            return float(rows[0].split(";")[0])
    return None


def wait_answered(app: ApplianceProcess, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    live: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        live = [c for c in app.calls() if c["answered_at"] and not c["ended_at"]]
        if len(live) >= count:
            break
        time.sleep(0.25)
    return live


def health(app: ApplianceProcess) -> dict[str, Any] | None:
    """/healthz as JSON (its 503 too); None while nothing answers."""
    try:
        return app.health()
    except (OSError, ValueError):
        return None


# --- 1. kill -9 of the appliance ---------------------------------------------------------------


class Watch:
    """Polls /healthz from `t0` (monotonic), noting when each milestone was first reached."""

    def __init__(self, app: ApplianceProcess, t0: float):
        self.app, self.t0 = app, t0
        self.seen: dict[str, float] = {}
        self.sip_up: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-watch", daemon=True)
        self._thread.start()

    def _mark(self, name: str) -> None:
        self.seen.setdefault(name, round(time.monotonic() - self.t0, 3))

    def _run(self) -> None:
        while not self._stop.is_set():
            h = health(self.app)
            if h is not None:
                self._mark("http")
                if h.get("ok"):
                    self._mark("healthz_ok")
                up = h.get("workers_up", 0)
                if not self.sip_up or self.sip_up[-1][1] != up:
                    self.sip_up.append((round(time.monotonic() - self.t0, 3), up))
                if up and up == h.get("workers"):
                    self._mark("sip_workers")
                    if h.get("personas_up") == h.get("personas") and h.get("rtc_up") == h.get("rtc"):
                        self._mark("all_workers")
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def log_phases(app: ApplianceProcess, since: dt.datetime) -> dict[str, Any]:
    """From the new run's log: when start-up steps happened, in s after `since` (the new start)."""
    out: dict[str, Any] = {}
    spawned: list[float] = []
    connected: list[float] = []
    for line in app.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            at = dt.datetime.fromisoformat(entry["ts"]).astimezone(dt.UTC)
        except (ValueError, KeyError, TypeError):
            continue
        if at < since:
            continue
        seconds = round((at - since).total_seconds(), 3)
        msg = entry.get("msg")
        if msg == "process spawned" and entry.get("kind") == "sip-worker":
            spawned.append(seconds)
        elif msg == "worker connected" and entry.get("role") == "sip":
            connected.append(seconds)
        elif msg in ("calls a crash left open closed", "SIP edge answering", "appliance started"):
            out.setdefault(msg, seconds)
    out["sip workers spawned (first, last)"] = [min(spawned, default=None), max(spawned, default=None)]
    out["sip workers connected (first, last)"] = [min(connected, default=None), max(connected, default=None)]
    return out


def check_recordings(calls: list[dict[str, Any]], killed: dt.datetime) -> dict[str, Any]:
    """Each call closed by the new start, its WAV playable by `wave` and sox, and as long as the call until the kill."""
    reasons: dict[str, int] = {}
    short_s: list[float] = []
    unplayable: list[str] = []
    for call in calls:
        reasons[call["end_reason"] or "open"] = reasons.get(call["end_reason"] or "open", 0) + 1
        path = call.get("recording_path")
        try:
            with wave.open(path) as w:
                seconds = w.getnframes() / w.getframerate()
            sox = float(subprocess.run(["soxi", "-D", path], capture_output=True, text=True, check=True).stdout)
        except (OSError, EOFError, wave.Error, subprocess.CalledProcessError, ValueError, TypeError):
            unplayable.append(call["id"])
            continue
        if abs(sox - seconds) > 0.05:
            unplayable.append(call["id"])
        until_kill = (killed - dt.datetime.fromisoformat(call["answered_at"])).total_seconds()
        short_s.append(until_kill - seconds)
    return {"calls": len(calls), "end_reasons": reasons, "unplayable": unplayable,
            "short_of_call_s": {"min": pct(short_s, 0, 2), "p50": pct(short_s, 0.5, 2), "max": pct(short_s, 1, 2)}}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one mode: each milestone's median, and its least and most, over the runs."""
    keys = ("http", "first_sip_call", "healthz_ok", "every_sip_worker", "every_worker")
    values = {k: [r["from_start_s"][k] for r in runs if r["from_start_s"].get(k) is not None] for k in keys}
    gone = [r["children_gone_after_kill_s"] for r in runs if r["children_gone_after_kill_s"] is not None]
    return {"mode": runs[0]["mode"], "repeat": len(runs),
            "from_start_s": {k: pct(v, 0.5, 3) for k, v in values.items()},
            "from_start_range_s": {k: [pct(v, 0, 3), pct(v, 1, 3)] for k, v in values.items()},
            "missing": {k: len(runs) - len(v) for k, v in values.items() if len(v) < len(runs)},
            "children_gone_after_kill_s": pct(gone, 0.5, 3),
            "problems": [p for r in runs for p in r["problems"]], "runs": runs}


def restart(app: ApplianceProcess, root: Path, args: argparse.Namespace, at_once: bool) -> dict[str, Any]:
    """`at_once`: `appliance run` right after the kill, while the killed one's workers still hang up their
    calls; else once they are gone (systemd kills what is left of the unit, then waits RestartSec)."""
    mode = "at-once" if at_once else "after"
    root.mkdir(parents=True, exist_ok=True)
    say(f"restart ({mode}): {args.calls} callers speaking")
    holders = start_sipp(speaking_caller_scenario(root, 300, f"restart_holder_{mode}.xml"), app,
                         root / f"restart-held-{mode}", args.calls, args.rate)
    try:
        live = wait_answered(app, args.calls, args.calls / args.rate + 30)
        if len(live) < args.calls:
            problem = f"{mode}: only {len(live)} of {args.calls} calls were answered before the kill"
            say(f"  {problem}")
            return {"mode": mode, "from_start_s": {}, "children_gone_after_kill_s": None, "problems": [problem]}
        time.sleep(args.hold)
        assert app.process is not None
        children = app.child_pids()
        killed = dt.datetime.now(dt.UTC)
        killed_t = time.monotonic()
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait()
        while (not at_once and time.monotonic() - killed_t < 15
               and any(Path(f"/proc/{pid}").exists() for pid in children)):
            time.sleep(0.005)
        children_gone_s = None if at_once else round(time.monotonic() - killed_t, 3)
        say(f"  killed; its workers and edge gone after {children_gone_s} s; starting again")

        prober_dir = root / f"restart-prober-{mode}"
        prober_dir.mkdir()
        scenario = caller_scenario(prober_dir, 0.2, "prober.xml")
        since = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        app.launch()
        prober_t0 = time.monotonic()
        prober = start_sipp(scenario, app, prober_dir, int(args.probe_rate * 15), args.probe_rate,
                            ["-trace_rtt", "-rtt_freq", "1", "-recv_timeout", "3000"])
        watch = Watch(app, t0)
        deadline = time.monotonic() + 30
        answered_ms = None
        while time.monotonic() < deadline and ("all_workers" not in watch.seen or answered_ms is None):
            answered_ms = first_answer(prober_dir)
            time.sleep(0.02)
        watch.stop()
        stop_sipp(prober, gently=True)
    finally:
        stop_sipp(holders)
    first_call = None if answered_ms is None else round(prober_t0 - t0 + answered_ms / 1000, 3)
    old = [c for c in app.calls() if c["id"] in {call["id"] for call in live}]
    report = {"mode": mode, "calls": args.calls, "held_s": args.hold, "children_gone_after_kill_s": children_gone_s,
              "from_start_s": {"http": watch.seen.get("http"), "first_sip_call": first_call,
                               "healthz_ok": watch.seen.get("healthz_ok"),
                               "every_sip_worker": watch.seen.get("sip_workers"),
                               "every_worker": watch.seen.get("all_workers")},
              "sip_workers_up_over_time": watch.sip_up, "log_phases_s": log_phases(app, since),
              "old_calls": check_recordings(old, killed), "problems": []}
    if report["old_calls"]["end_reasons"] != {"appliance-restart": args.calls}:
        report["problems"].append(f"old calls ended {report['old_calls']['end_reasons']}")
    if report["old_calls"]["unplayable"]:
        report["problems"].append(f"{len(report['old_calls']['unplayable'])} recordings not playable")
    say(f"  from the new start: {report['from_start_s']}")
    return report


# --- 2. kill -9 of Kamailio ------------------------------------------------------------------


def edge(app: ApplianceProcess, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    say(f"edge: {args.calls} callers speaking")
    seen = {c["id"] for c in app.calls()}
    duration = args.calls / args.rate + 12
    callers = start_sipp(speaking_caller_scenario(root, duration, "edge_caller.xml"), app, root / "edge-calls",
                         args.calls, args.rate, ["-trace_stat", "-stf", str(root / "edge-calls" / "stats.csv")])
    try:
        live = wait_answered(app, args.calls, args.calls / args.rate + 30)
        time.sleep(2)
        pid_file = app.data_dir / "edge" / "kamailio.pid"
        old_pid = int(pid_file.read_text())
        killed = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        back = None
        while back is None and time.monotonic() - t0 < 20:
            try:
                if (pid_file.read_text().strip() != str(old_pid)
                        and options_status(app.sip_port, timeout=0.05).endswith("200 OK")):
                    back = round(time.monotonic() - t0, 3)
            except OSError:
                pass
        callers.wait(duration + 60)
    finally:
        stop_sipp(callers)
    stats = (root / "edge-calls" / "stats.csv").read_text().splitlines()
    last = dict(zip(stats[0].split(";"), stats[-1].split(";"), strict=False)) if len(stats) > 1 else {}
    heard = []
    ids = {c["id"] for c in live} - seen
    for call in app.calls():
        if call["id"] in ids and call["recording_path"]:
            offset = (killed - dt.datetime.fromisoformat(call["answered_at"])).total_seconds()
            heard.append(caller_heard(Path(call["recording_path"]), offset, offset + 3))
    return {"calls": len(ids), "edge_answers_again_s": back,
            "callers_ended_by_bye": int(last.get("SuccessfulCall(C)", 0) or 0),
            "caller_heard_3s_after_kill": {"min": pct(heard, 0, 3), "p50": pct(heard, 0.5, 3)}}


# --- 3. the database locked by another process -------------------------------------------------


def db_lock(app: ApplianceProcess, root: Path, args: argparse.Namespace, statement: str) -> dict[str, Any]:
    say(f"db lock ({statement}): {args.calls} callers, lock held {args.lock_s} s")
    workdir = root / f"db-{statement.split()[-1].lower()}"
    seen = {c["id"] for c in app.calls()}
    callers = start_sipp(speaking_caller_scenario(root, args.lock_s + 4, f"db_{len(seen)}.xml"), app, workdir,
                         args.calls, args.rate)
    try:
        wait_answered(app, args.calls, args.calls / args.rate + 30)
        before = histogram(metrics_text(app), TICK_LAG)
        holder = sqlite3.connect(app.data_dir / "switchboard.db", isolation_level=None)
        holder.execute(statement)
        holder.execute("SELECT count(*) FROM calls").fetchall()
        time.sleep(args.lock_s)
        after = histogram(metrics_text(app), TICK_LAG)
        pending = app.metric("switchboard_db_writes_pending")
        holder.execute("COMMIT")
        holder.close()
        callers.wait(args.lock_s + 60)
    finally:
        stop_sipp(callers)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and app.metric("switchboard_db_writes_pending"):
        time.sleep(0.2)
    calls = [c for c in app.calls() if c["id"] not in seen]
    complete = sum(1 for c in calls if c["ended_at"] and _events_complete(app, c["id"]))
    lag = histogram_delta(before, after)
    return {"lock": statement, "held_s": args.lock_s, "calls": len(calls), "calls_with_every_event": complete,
            "writes_waiting_at_release": int(pending),
            "writes_deferred_total": app.metric("switchboard_db_writes_deferred_total"),
            "tick_lag_ms": {"ticks": int(lag["count"]), "expected": int(args.lock_s / 0.02),
                            "p50": _ms(histogram_quantile(lag, 0.5)), "p99": _ms(histogram_quantile(lag, 0.99)),
                            "max_bucket_le": _max_bucket(lag)}}


def _events_complete(app: ApplianceProcess, call_id: str) -> bool:
    kinds = [e["kind"] for e in app.call(call_id)["events"]]
    return kinds[:2] == ["offered", "answered"] and kinds[-1] == "ended" and "say" in kinds


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _max_bucket(hist: dict[str, Any]) -> float | None:
    """The smallest bucket bound holding every tick of the window, in ms (inf: beyond the largest)."""
    for le in sorted(hist["buckets"]):
        if hist["buckets"][le] >= hist["count"]:
            return math.inf if le == math.inf else round(1000 * le, 1)
    return None


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now().astimezone()
    workers = math.ceil(args.calls / CALLS_PER_WORKER) + 1
    root = Path(tempfile.mkdtemp(prefix="sb-bench-faults-"))
    flows = root / "flows"
    flows.mkdir()
    (flows / "bench.yaml").write_text(HELD_FLOW)
    app = ApplianceProcess(root, workers=workers, calls_per_worker=CALLS_PER_WORKER, numbers={"100": "bench"},
                           flows_dir=flows)
    report = report_head("faults", args.argv, started_at)
    report |= {
        "settings": {"calls": args.calls, "rate_cps": args.rate, "probe_rate_cps": args.probe_rate,
                     "workers": workers, "hold_s": args.hold, "lock_s": args.lock_s, "quiet_pct": args.quiet,
                     "repeat": args.repeat},
    }
    say(f"appliance: {workers} SIP workers in {root}")
    try:
        app.start(timeout=60 + 3 * workers)
        time.sleep(2)
        for at_once in (False, True) if "restart" in args.parts else ():
            runs = []
            for attempt in range(args.repeat):
                quiet = wait_quiet(app, args.quiet, args.quiet_wait)
                runs.append(restart(app, root / f"run{attempt}", args, at_once) | {"quiet_before_pct": quiet})
                app.wait_ready(60)
                wait_idle(app)
            report.setdefault("restart", []).append(summarize(runs))
        for part in ["edge"] * ("edge" in args.parts) + ["BEGIN", "BEGIN IMMEDIATE"] * ("db" in args.parts):
            wait_idle(app)
            if part == "edge":
                report["edge"] = edge(app, root, args)
            else:
                report.setdefault("db_lock", []).append(db_lock(app, root, args, part))
    finally:
        stop_appliance(app, report, root, args.keep)
    return report


MODES = {"after": "once its processes are gone", "at-once": "at once"}


def tables(report: dict[str, Any]) -> str:
    before = report.get("before", {})
    runs = [*before.get("restart", []), *report.get("restart", [])]
    names = [f"{MODES[r['mode']]} (before: {before['code']})" for r in before.get("restart", [])]
    names += [MODES[r["mode"]] for r in report.get("restart", [])]
    rows = [f"| `kill -9` of the appliance, then `appliance run`: s from its start | {' | '.join(names)} |",
            "|---|" + "---|" * len(runs)]
    for key, label in (("http", "/healthz answers"), ("first_sip_call", "**first sipp call answered**"),
                       ("every_sip_worker", "every SIP worker back"),
                       ("every_worker", "every worker back (the persona worker too)"), ("healthz_ok", "/healthz `ok`")):
        cells = []
        for r in runs:
            low, high = r["from_start_range_s"][key]
            text = f"{r['from_start_s'][key]} ({low}–{high})" if r.get("missing", {}).get(key) is None else "–"
            cells.append(f"**{text}**" if key == "first_sip_call" else text)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append("| (the killed appliance's processes gone, s after the kill) | "
                + " | ".join(str(r.get("children_gone_after_kill_s") or "–") for r in runs) + " |")
    for r in report.get("restart", []):
        olds = [run["old_calls"] for run in r["runs"] if run.get("old_calls")]
        if not olds:
            continue
        reasons: dict[str, int] = {}
        for old in olds:
            for reason, n in old["end_reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + n
        total = sum(old["calls"] for old in olds)
        playable = total - sum(len(old["unplayable"]) for old in olds)
        shortest = min(o["short_of_call_s"]["min"] for o in olds)
        longest = max(o["short_of_call_s"]["max"] for o in olds)
        rows.append(f"\n{MODES[r['mode']]}: the {total} calls up at the kills ended {reasons}, {playable} "
                    f"recordings playable (`wave` and `soxi` agree), each shorter than its call until the kill by "
                    f"{shortest}–{longest} s; start-up steps in the first new run's log (s after its start): "
                    f"{r['runs'][0].get('log_phases_s')}.")
    e = report.get("edge")
    if e:
        rows += ["", "| `kill -9` of Kamailio with calls up | |", "|---|---|",
                 f"| edge answers OPTIONS again after | {e['edge_answers_again_s']} s |",
                 f"| callers still heard, 3 s after the kill (share of 20 ms frames, min / p50) | "
                 f"{e['caller_heard_3s_after_kill']['min']} / {e['caller_heard_3s_after_kill']['p50']} |",
                 f"| calls ended by the caller's BYE through the new edge | {e['callers_ended_by_bye']} of "
                 f"{e['calls']} |"]
    if report.get("db_lock"):
        rows += ["", "| database held by another process | tick lag p50 / p99 ms (all ticks ≤ ms) | ticks / expected "
                 "| writes waiting at release | calls with every event |", "|---|---|---|---|---|"]
        for d in report["db_lock"]:
            t = d["tick_lag_ms"]
            rows.append(f"| `{d['lock']}` for {d['held_s']} s | {t['p50']} / {t['p99']} ({t['max_bucket_le']}) | "
                        f"{t['ticks']} / {t['expected']} | {d['writes_waiting_at_release']} | "
                        f"{d['calls_with_every_event']} of {d['calls']} |")
    problems = [p for r in runs for p in r.get("problems", [])]
    if problems:
        rows.append(f"\nProblems: {'; '.join(problems)}")
    return "\n".join(rows)


def write_doc(report: dict[str, Any]) -> None:
    m = report["machine"]
    s = report["settings"]
    section = "\n".join([
        BEGIN,
        "## Faults (`bench/faults.py`)",
        "",
        f"Measured {report['date']} on {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('ram_gib')} GiB "
        f"(code {report['code']}), with `{report['command']}`: {s['calls']} sipp callers speaking through the edge "
        f"({s['workers']} SIP workers of {CALLS_PER_WORKER} calls, one persona worker), load average before "
        f"{' '.join(report['loadavg_before'])}. The first call after the restart is the first 200 OK to a sipp "
        f"prober calling {s['probe_rate_cps']:g} times a second from the new start. Each restart figure is the "
        f"median (least–most) of {s['repeat']} restarts, each begun once other work on the box used less than "
        f"{s['quiet_pct']:g} % of a core: the box is shared.",
        "",
        tables(report),
        "",
        *([f"The before column is the code before the fault work, {report['before']['code']}, measured "
           f"{report['before']['date']} on the same box with this script (`--parts restart`, "
           f"{report['before']['json_path']}): there the workers were started as fresh interpreters after "
           f"the other pools, the edge sent calls to workers still starting, and a worker whose SIP port "
           f"was held reported itself started.", ""] if report.get("before") else []),
        END,
        "",
    ])
    write_doc_section(section, BEGIN, END)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python bench/faults.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50, help="calls up during each fault (default 50)")
    parser.add_argument("--rate", type=float, default=10, help="calls started per second (default 10)")
    parser.add_argument("--probe-rate", type=float, default=20,
                        help="calls per second the restart's prober places from the new start (default 20)")
    parser.add_argument("--hold", type=float, default=5, help="seconds the calls run before the kill (default 5)")
    parser.add_argument("--lock-s", type=float, default=8, help="seconds the database is held (default 8)")
    parser.add_argument("--quiet", type=float, default=40,
                        help="before the restart, wait until other work on the box is below this %% of a core "
                             "(default 40)")
    parser.add_argument("--quiet-wait", type=float, default=120, help="longest wait for a quiet box, s (default 120)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="restarts in each mode; the table shows their median (least–most) (default 3)")
    parser.add_argument("--parts", type=lambda v: v.split(","), default=["restart", "edge", "db"],
                        help="which parts, comma-separated: restart, edge, db (default all)")
    parser.add_argument("--before", type=Path,
                        help="results JSON of an earlier run (e.g. of the code before a change, --parts restart): "
                             "its restart figures are shown beside this run's")
    parser.add_argument("--quick", action="store_true", help="8 calls: checks the benchmark; writes no doc")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument("--keep", action="store_true", help="keep the appliance's temp dir (logs, recordings)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.quick:
        args.calls, args.no_doc, args.repeat = 8, True, 1
    if missing_program("bench/faults.py", ("sipp", "kamailio", "soxi")):
        return 2
    report = run(args)
    if args.before:
        earlier = json.loads(args.before.read_text())
        report["before"] = {"code": earlier["code"], "date": earlier["date"], "json_path": str(args.before),
                            "restart": earlier.get("restart", [])}
    tag = "-quick" if args.quick else (f"-{args.tag}" if args.tag else "")
    save_and_print(report, "faults", tag, tables(report))
    if not args.no_doc:
        write_doc(report)
        print(f"wrote {ROOT / 'docs' / 'BENCHMARKS.md'}")
    return 1 if any(r.get("problems") for r in report.get("restart", [])) else 0


if __name__ == "__main__":
    sys.exit(main())
