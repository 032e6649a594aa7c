"""The call-capacity benchmark: how many simultaneous recorded calls one box holds with 0 failures.

Starts the real appliance (tests.support.appliance), ramps sipp callers through the edge in
steps of N simultaneous calls, and measures each step's steady state: INVITE → 200 OK, CPU
and RSS of the appliance's process tree, and the hub's media tick lag. Writes the raw
results to bench/results/ and its section of docs/BENCHMARKS.md.

    python bench/calls.py            # the full ramp (about 10 minutes)
    python bench/calls.py --quick    # steps 4,8 of 10 s calls: checks the benchmark itself
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/calls.py` puts bench/ first, not the repo

import numpy as np

from bench.baseline import BaselineBox
from bench.baseline import run_step as run_baseline_step
from bench.calls_report import analyse, table, write_doc
from bench.common import (
    CLK_TCK,
    DOC,
    RESULTS,
    BusyLoad,
    Proc,
    box_cpu,
    box_ticks,
    code_version,
    first_line,
    log_warnings,
    machine,
    missing_program,
    save_results,
    say,
    snapshot,
    stat_ticks,
    stop_appliance,
    wait_closed,
)
from bench.sipp_load import bench_scenario, find_sipp, percentile, rtt_ms
from tests.support.appliance import ApplianceProcess
from tests.support.sipp.process import SippResult, run_sipp

FULL_STEPS = [8, 32, 64, 100, 120, 150, 160]
QUICK_STEPS = [4, 8]
CALLS_PER_WORKER = 4  # the pjsua2 wheel's compiled-in limit
APPLIANCE_ROLES = ("main", "worker", "forkserver", "kamailio")  # the processes counted as the appliance
FRAME_SAMPLES = 320  # 20 ms at 16 kHz: the hub's frame

# The bench flow: greet, then wait in a menu long enough that the caller always hangs up first.
BENCH_FLOW = """\
name: bench
description: Call-capacity benchmark; greets the caller and keeps the call until they hang up.
entry: welcome
steps:
  welcome:
    say: Welcome to the Switchboard benchmark.
    next: hold
  hold:
    menu:
      prompt: Press 1 to leave.
      options:
        "1": bye
      timeout: 60
      retries: 0
      no_input: bye
      no_match: bye
  bye:
    hangup:
      reason: flow-hangup
"""
# The same, holding the caller up to ten minutes rather than one: for callers who stay through
# several measurement windows and must be the ones who hang up.
HELD_FLOW = BENCH_FLOW.replace("      retries: 0\n", "      retries: 9\n")


# --- the machine --------------------------------------------------------------------------


# --- the appliance's process tree ----------------------------------------------------------


def main_threads(pid: int) -> dict[int, tuple[str, int]]:
    """Per-thread CPU ticks of one process: tid → (name, ticks)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[int(task.name)] = (name, stat_ticks(task / "stat"))
        except (OSError, ValueError):
            continue
    return out


def run_delay_ns(pid: int) -> tuple[int, int]:
    """(ns on CPU, ns runnable but waiting for a CPU) of a process's main thread (/proc schedstat)."""
    fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(fields[0]), int(fields[1])


def worker_threads(app: ApplianceProcess) -> dict[tuple[int, int], tuple[str, int, int]]:
    """Every worker thread: (pid, tid) → (kind, CPU ticks, ns waiting for a CPU).

    Kinds: `asyncio` (the worker's main thread), `pjsua` (SIP, and the conference bridge's ticks
    with our media port callbacks: sip/bridge_clock.py), pjmedia's `media` (RTP in), and the rest
    by their names.
    """
    out = {}
    for pid in app.child_pids():
        try:
            if b"sip.worker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                name = "asyncio" if task.name == str(pid) else (task / "comm").read_text().strip()
                out[(pid, int(task.name))] = (name, stat_ticks(task / "stat"),
                                              int((task / "schedstat").read_text().split()[1]))
            except (OSError, ValueError):
                continue
    return out


def threads_by_kind(before: dict, after: dict, seconds: float) -> dict[str, dict[str, float]]:
    kinds: dict[str, dict[str, float]] = {}
    for key, (name, ticks, wait) in after.items():
        if key in before:
            k = kinds.setdefault(name, {"cpu_pct": 0.0, "runq_wait_pct": 0.0, "threads": 0})
            k["cpu_pct"] += 100 * (ticks - before[key][1]) / CLK_TCK / seconds
            k["runq_wait_pct"] += 100 * (wait - before[key][2]) / 1e9 / seconds
            k["threads"] += 1
    return {name: {"cpu_pct": round(v["cpu_pct"], 1), "runq_wait_pct": round(v["runq_wait_pct"], 1),
                   "threads": int(v["threads"])}
            for name, v in sorted(kinds.items(), key=lambda kv: -kv[1]["cpu_pct"]) if v["cpu_pct"] >= 0.1}


def cpu_by_role(before: dict[int, Proc], after: dict[int, Proc], seconds: float) -> dict[str, Any]:
    """CPU in % of one core over the window, per role, with the busiest process of each role."""
    roles: dict[str, list[float]] = {}
    for pid, proc in after.items():
        if pid in before:
            pct = 100 * (proc.cpu_ticks - before[pid].cpu_ticks) / CLK_TCK / seconds
            roles.setdefault(proc.role, []).append(pct)
    out: dict[str, Any] = {
        role: {"total": round(sum(v), 1), "max": round(max(v), 1), "processes": len(v)} for role, v in roles.items()
    }
    out["appliance_total"] = round(sum(out[r]["total"] for r in APPLIANCE_ROLES if r in out), 1)
    # Processes that appeared or vanished mid-window: a restarted worker is a finding.
    out["pids_changed"] = sorted(set(before) ^ set(after))
    return out


def rss_kb(procs: dict[int, Proc], roles: tuple[str, ...] = APPLIANCE_ROLES) -> int:
    return sum(p.rss_kb for p in procs.values() if p.role in roles)


# --- /metrics ------------------------------------------------------------------------------


def histogram(text: str, name: str) -> dict[str, Any]:
    """Cumulative buckets, sum and count of one Prometheus histogram from the text format."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)  # type: ignore[union-attr]
            buckets[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count = float(line.rsplit(" ", 1)[1])
    return {"buckets": buckets, "sum": total, "count": count}


def histogram_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "buckets": {le: after["buckets"][le] - before["buckets"].get(le, 0.0) for le in after["buckets"]},
        "sum": after["sum"] - before["sum"],
        "count": after["count"] - before["count"],
    }


def histogram_quantile(hist: dict[str, Any], q: float) -> float | None:
    """Like PromQL's histogram_quantile: linear inside the bucket; the top finite bound past it."""
    count = hist["count"]
    if count <= 0:
        return None
    rank = q * count
    lower_le, lower_count = 0.0, 0.0
    finite = [le for le in sorted(hist["buckets"]) if le != math.inf]
    for le in sorted(hist["buckets"]):
        cumulative = hist["buckets"][le]
        if cumulative >= rank:
            if le == math.inf:
                return finite[-1] if finite else None
            inside = cumulative - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / inside if inside else 1.0)
        lower_le, lower_count = le, cumulative
    return finite[-1] if finite else None


def share_above(hist: dict[str, Any], bound: float) -> float | None:
    if hist["count"] <= 0 or bound not in hist["buckets"]:
        return None
    return 1 - hist["buckets"][bound] / hist["count"]


def metrics_text(app: ApplianceProcess) -> str:
    body = app.get("/metrics")
    return body.decode() if isinstance(body, bytes) else json.dumps(body)


def tick_lag(metrics_before: str, metrics_after: str, seconds: float) -> dict[str, Any]:
    """How late the hub's 20 ms tick ran between two /metrics texts `seconds` apart."""
    lag = histogram_delta(histogram(metrics_before, "switchboard_hub_tick_lag_seconds"),
                          histogram(metrics_after, "switchboard_hub_tick_lag_seconds"))
    return {
        "ticks": int(lag["count"]),
        "expected_ticks": int(seconds / 0.02),
        "mean_ms": _round(1000 * lag["sum"] / lag["count"] if lag["count"] else None),
        "p50_ms": _round(_ms(histogram_quantile(lag, 0.50))),
        "p95_ms": _round(_ms(histogram_quantile(lag, 0.95))),
        "p99_ms": _round(_ms(histogram_quantile(lag, 0.99))),
        "over_20ms": _round(share_above(lag, 0.02), 4),
    }


# --- recordings ----------------------------------------------------------------------------


def inspect_recording(path: str | None) -> dict[str, Any]:
    """Length of a call's WAV and the share of 20 ms frames where the caller's channel is empty.

    The recorder writes exact zeros on the caller's side for a tick with no caller frame, and
    G.711 never decodes to an all-zero frame, so empty frames are frames the hub did not have.
    """
    if not path or not Path(path).exists():
        return {"seconds": 0.0, "caller_missing": 1.0, "caller_missing_inside": 1.0, "exists": False}
    with wave.open(path) as w:
        seconds = w.getnframes() / w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, w.getnchannels())
    frames = len(data) // FRAME_SAMPLES
    if frames == 0:
        return {"seconds": seconds, "caller_missing": 1.0, "caller_missing_inside": 1.0, "exists": True}
    left = data[: frames * FRAME_SAMPLES, 0].reshape(frames, FRAME_SAMPLES)
    right = data[: frames * FRAME_SAMPLES, 1].astype(np.float64)
    empty = ~left.any(axis=1)
    missing = float(np.mean(empty))
    # Frames before the caller's first RTP packet (the answer's round trip) and after its last (the
    # tick its BYE ends) were never sent: the share between them is what the box lost of what arrived.
    voiced = np.flatnonzero(~empty)
    missing_inside = float(np.mean(empty[voiced[0]: voiced[-1] + 1])) if len(voiced) else 1.0
    greeting_rms = float(np.sqrt(np.mean(right[: 2 * 16000] ** 2))) if len(right) else 0.0
    return {"seconds": round(seconds, 2), "caller_missing": missing, "caller_missing_inside": missing_inside,
            "greeting_rms": round(greeting_rms, 1),
            "exists": True}


# --- one step ------------------------------------------------------------------------------


@dataclass
class Step:
    calls: int
    passed: bool = False
    problems: list[str] = field(default_factory=list)
    sipp_successful: int = 0
    sipp_failed: int = 0
    invite_200_ms: dict[str, float | None] = field(default_factory=dict)
    steady_s: float = 0.0
    cpu: dict[str, Any] = field(default_factory=dict)
    cpu_pct_per_call: float | None = None
    main_threads: list[dict[str, Any]] = field(default_factory=list)
    hub_thread: dict[str, float] = field(default_factory=dict)
    worker_threads: dict[str, Any] = field(default_factory=dict)
    box_cpu: dict[str, float] = field(default_factory=dict)
    other_load_pct: float | None = None
    extra_load_pct: float | None = None  # the --extra-load process's own CPU, % of a core
    rss_mb_total: float = 0.0
    rss_mb_per_call: float | None = None
    tick_lag: dict[str, Any] = field(default_factory=dict)
    offer_s: dict[str, Any] = field(default_factory=dict)
    records: dict[str, Any] = field(default_factory=dict)
    hub_stalls: int = 0
    sipp_tail: str = ""


def wait_active(app: ApplianceProcess, count: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if app.health()["calls_active"] >= count:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    return False


def log_count(app: ApplianceProcess, needle: str) -> int:
    try:
        return app.log_path.read_text(errors="replace").count(needle)
    except OSError:
        return 0


def run_step(app: ApplianceProcess, n: int, args: argparse.Namespace, workdir: Path, idle_rss_kb: int,
             seen: set[str]) -> Step:
    step = Step(calls=n)
    workdir.mkdir(parents=True)
    scenario = bench_scenario(workdir, args.duration)
    ramp_s = n / args.rate
    result: dict[str, SippResult] = {}
    stalls_before = log_count(app, "hub clock stalled")

    def call() -> None:
        result["sipp"] = run_sipp(
            scenario, app.sip_port, workdir, calls=n, rate=args.rate, limit=n,
            timeout=args.duration + ramp_s + 60,
            extra=["-trace_rtt", "-rtt_freq", "1", "-fd", "1"],
        )

    caller = threading.Thread(target=call, name=f"sipp-{n}")
    launched = time.monotonic()
    caller.start()

    # Steady state: from every call in (plus a second for media to settle) to just before
    # the first caller's BYE, which cannot come earlier than launch + duration.
    window_end = launched + args.duration - 0.5
    all_in = wait_active(app, n, min(window_end - 2, launched + ramp_s + 15))
    if not all_in:
        step.problems.append(f"only {app.health()['calls_active']} of {n} calls were up at once")
    time.sleep(1.0)
    sipp_pids = find_sipp(workdir)
    start = time.monotonic()
    main_pid = app.process.pid  # type: ignore[union-attr]
    before = snapshot(app, sipp_pids + args.load_pids)
    threads_before = main_threads(main_pid)
    delay_before = run_delay_ns(main_pid)
    workers_before = worker_threads(app)
    box_before = box_ticks()
    self_before = _self_ticks()
    metrics_before = metrics_text(app)
    rss_samples = []
    while time.monotonic() < window_end - 1.0:
        time.sleep(1.0)
        rss_samples.append(rss_kb(snapshot(app)))
    after = snapshot(app, sipp_pids + args.load_pids)
    threads_after = main_threads(main_pid)
    delay_after = run_delay_ns(main_pid)
    workers_after = worker_threads(app)
    box_after = box_ticks()
    self_after = _self_ticks()
    metrics_after = metrics_text(app)
    steady = time.monotonic() - start
    step.steady_s = round(steady, 1)

    caller.join()
    sipp = result.get("sipp")
    if sipp is None:
        step.problems.append("sipp did not report")
        return step
    step.sipp_successful, step.sipp_failed = sipp.successful, sipp.failed
    step.sipp_tail = sipp.output[-1500:] if sipp.failed or sipp.successful != n else ""
    if sipp.failed or sipp.successful != n:
        step.problems.append(f"sipp: {sipp.successful} successful, {sipp.failed} failed of {n}")

    rtts = rtt_ms(workdir)
    step.invite_200_ms = {
        "p50": _round(percentile(rtts, 0.50)), "p95": _round(percentile(rtts, 0.95)),
        "max": _round(max(rtts) if rtts else None), "samples": len(rtts),
    }

    step.cpu = cpu_by_role(before, after, steady)
    step.cpu_pct_per_call = round(step.cpu["appliance_total"] / n, 2)
    step.main_threads = _thread_cpu(threads_before, threads_after, steady)
    step.hub_thread = {
        "cpu_pct": round(100 * (delay_after[0] - delay_before[0]) / 1e9 / steady, 1),
        "runq_wait_pct": round(100 * (delay_after[1] - delay_before[1]) / 1e9 / steady, 1),
    }
    step.worker_threads = threads_by_kind(workers_before, workers_after, steady)
    step.box_cpu = box_cpu(box_before, box_after, steady)
    bench_self = 100 * (self_after - self_before) / CLK_TCK / steady
    step.extra_load_pct = step.cpu.get("load", {}).get("total")
    step.other_load_pct = round(step.box_cpu["busy"] - step.cpu["appliance_total"]
                                - step.cpu.get("sipp", {}).get("total", 0.0) - (step.extra_load_pct or 0.0)
                                - bench_self, 1)
    steady_rss = statistics.median(rss_samples) if rss_samples else rss_kb(after)
    step.rss_mb_total = round(steady_rss / 1024, 1)
    step.rss_mb_per_call = round((steady_rss - idle_rss_kb) / 1024 / n, 2)

    step.tick_lag = tick_lag(metrics_before, metrics_after, steady)
    offers = histogram(metrics_after, "switchboard_call_offer_seconds")
    step.offer_s = {"p95_ms_cumulative": _round(_ms(histogram_quantile(offers, 0.95)))}

    calls = wait_closed(app, seen, n, timeout=60)
    seen.update(c["id"] for c in calls)
    step.hub_stalls = log_count(app, "hub clock stalled") - stalls_before
    step.records = check_records(calls, n, args.duration, step.problems)
    step.passed = not step.problems
    return step


def check_records(calls: list[dict[str, Any]], n: int, duration: float, problems: list[str]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for c in calls:
        reasons[c["end_reason"] or "open"] = reasons.get(c["end_reason"] or "open", 0) + 1
    recordings = [inspect_recording(c.get("recording_path")) for c in calls]
    seconds = [r["seconds"] for r in recordings]
    missing = [r["caller_missing"] for r in recordings]
    inside = [r["caller_missing_inside"] for r in recordings]
    # As tests/calls does: a recording covers the call from answer to hang-up within 0.5 s.
    gaps = [abs(r["seconds"] - _answered_for(c)) for r, c in zip(recordings, calls, strict=True)]
    short = [s for s, gap in zip(seconds, gaps, strict=True) if gap > 0.5 or abs(s - duration) > 1.5]
    if len(calls) != n:
        problems.append(f"{len(calls)} call records for {n} calls")
    if reasons != {"caller-hangup": n}:
        problems.append(f"end reasons {reasons}, want caller-hangup for all {n}")
    if short:
        problems.append(f"{len(short)} recordings shorter than their call (~{duration:.0f} s): {sorted(short)[:5]}")
    workers = {c["worker"] for c in calls}
    return {
        "count": len(calls),
        "end_reasons": reasons,
        "workers_used": len(workers),
        "recording_s": {"min": min(seconds, default=None), "max": max(seconds, default=None)},
        "recording_short_of_call_s_max": _round(max(gaps, default=None), 2),
        "caller_missing_pct": {
            "mean": _round(100 * statistics.mean(missing), 2) if missing else None,
            "max": _round(100 * max(missing), 2) if missing else None,
        },
        "caller_missing_inside_pct": {
            "mean": _round(100 * statistics.mean(inside), 2) if inside else None,
            "max": _round(100 * max(inside), 2) if inside else None,
        },
        "greeting_rms_min": min((r.get("greeting_rms", 0.0) for r in recordings), default=None),
    }


def _self_ticks() -> int:
    return stat_ticks(Path("/proc/self/stat"))


def _thread_cpu(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]],
                seconds: float) -> list[dict[str, Any]]:
    rows = []
    for tid, (name, ticks) in after.items():
        if tid in before:
            pct = 100 * (ticks - before[tid][1]) / CLK_TCK / seconds
            if pct >= 0.5:
                rows.append({"tid": tid, "name": name, "cpu_pct": round(pct, 1)})
    return sorted(rows, key=lambda r: -r["cpu_pct"])


def _answered_for(call: dict[str, Any]) -> float:
    if not call.get("answered_at") or not call.get("ended_at"):
        return 0.0
    ended, answered = dt.datetime.fromisoformat(call["ended_at"]), dt.datetime.fromisoformat(call["answered_at"])
    return (ended - answered).total_seconds()


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


# --- the run -------------------------------------------------------------------------------


def measure_idle(app: ApplianceProcess, seconds: float) -> dict[str, Any]:
    before = snapshot(app)
    box_before = box_ticks()
    workers_before = worker_threads(app)
    metrics_before = metrics_text(app)
    time.sleep(seconds)
    after = snapshot(app)
    box = box_cpu(box_before, box_ticks(), seconds)
    workers_after = worker_threads(app)
    lag = histogram_delta(histogram(metrics_before, "switchboard_hub_tick_lag_seconds"),
                          histogram(metrics_text(app), "switchboard_hub_tick_lag_seconds"))
    cpu = cpu_by_role(before, after, seconds)
    workers = app.workers
    return {
        "seconds": seconds,
        "cpu": cpu,
        "cpu_pct_per_worker": round(cpu["appliance_total"] / workers, 2),
        "worker_process_cpu_pct_mean": round(cpu["worker"]["total"] / cpu["worker"]["processes"], 2)
        if "worker" in cpu else None,
        "rss_kb": rss_kb(after),
        "rss_mb_per_worker_process": round(
            sum(p.rss_kb for p in after.values() if p.role == "worker") / 1024 / max(1, workers), 1),
        "tick_lag_p95_ms": _round(_ms(histogram_quantile(lag, 0.95))),
        "worker_threads": threads_by_kind(workers_before, workers_after, seconds),
        "box_cpu": box,
        "other_load_pct": round(box["busy"] - cpu["appliance_total"], 1),
    }


def other_load(app: ApplianceProcess, seconds: float = 2.0, load_pids: list[int] = ()) -> float:  # type: ignore[assignment]
    """% of a core the box spends on anything but this appliance, this benchmark and its extra load."""
    before, box_before, self_before = snapshot(app, load_pids), box_ticks(), _self_ticks()
    time.sleep(seconds)
    after, box_after, self_after = snapshot(app, load_pids), box_ticks(), _self_ticks()
    cpu = cpu_by_role(before, after, seconds)
    ours = (cpu["appliance_total"] + cpu.get("load", {}).get("total", 0.0)
            + 100 * (self_after - self_before) / CLK_TCK / seconds)
    return box_cpu(box_before, box_after, seconds)["busy"] - ours


def wait_quiet(app: ApplianceProcess, limit_pct: float, max_wait_s: float,
               load_pids: list[int] = ()) -> float:  # type: ignore[assignment]
    """Wait (bounded) until other work on the box is below `limit_pct` of a core; returns the last reading.

    Other people's test runs on a shared box would otherwise be counted against the appliance.
    """
    deadline = time.monotonic() + max_wait_s
    readings = [other_load(app, 3.0, load_pids), other_load(app, 3.0, load_pids)]
    while max(readings[-2:]) > limit_pct and time.monotonic() < deadline:
        say(f"  waiting for a quiet box: other work is using {readings[-1]:.0f}% of a core")
        readings.append(other_load(app, 3.0, load_pids))
    return round(readings[-1], 1)


def ramp(app: ApplianceProcess, steps: list[int], args: argparse.Namespace, run_one: Callable[[int, int], Any],
         line: Callable[[Any], str], name: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run `run_one(n, attempt)` for each step in turn until a step fails, after waiting for a quiet
    box; a step that failed while other work used more than `args.quiet` is run again (up to
    `args.attempts`). Steps are dataclasses with calls, passed, problems and other_load_pct.
    Returns (the steps run, the attempts run again), as dicts."""
    label = f"{name} step" if name else "step"
    done: list[dict[str, Any]] = []
    retried: list[dict[str, Any]] = []
    for n in steps:
        for attempt in range(1, args.attempts + 1):
            quiet = wait_quiet(app, args.quiet, args.quiet_wait, args.load_pids)
            say(f"{label} {n}: {n} calls of {args.duration:.0f} s at {args.rate:g} calls/s")
            step = run_one(n, attempt)
            say(line(step))
            noisy = step.other_load_pct is not None and step.other_load_pct > args.quiet
            if step.passed or not noisy or attempt == args.attempts:
                break
            # Failed while other work shared the box: that is not the appliance's number. Once more.
            say(f"{label} {n} failed with other work at {step.other_load_pct}% of a core (before: {quiet}%); again")
            retried.append(asdict(step))
            time.sleep(args.settle)
        done.append(asdict(step))
        if not step.passed:
            say(f"{label} {n} failed: {'; '.join(step.problems)}")
            break
        time.sleep(args.settle)
    return done, retried


def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now().astimezone()
    workers = args.workers or math.ceil(max(args.steps) / CALLS_PER_WORKER) + 1
    root = Path(tempfile.mkdtemp(prefix="sb-bench-calls-"))
    flows = root / "flows"
    flows.mkdir()
    (flows / "bench.yaml").write_text(BENCH_FLOW)
    app = ApplianceProcess(root, workers=workers, calls_per_worker=CALLS_PER_WORKER,
                           numbers={"100": "bench"}, flows_dir=flows)
    report: dict[str, Any] = {
        "benchmark": "calls",
        "date": started_at.isoformat(timespec="seconds"),
        "command": "python bench/calls.py " + " ".join(args.argv),
        "machine": machine({"sipp": first_line(["sipp", "-v"]), "kamailio": first_line(["kamailio", "-v"])}),
        "code": code_version(("appliance", "sip")),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "settings": {"steps": args.steps, "duration_s": args.duration, "rate_cps": args.rate,
                     "workers": workers, "calls_per_worker": CALLS_PER_WORKER, "idle_s": args.idle,
                     "hub_nice": args.hub_nice, "quiet_pct": args.quiet, "extra_load": args.extra_load},
        "steps": [],
    }
    say(f"appliance: {workers} workers in {root}")
    load = BusyLoad(args.extra_load)
    try:
        app.start(timeout=60 + 3 * workers)
        if args.hub_nice is not None:
            # setpriority on a PID changes that one thread on Linux: here the hub's asyncio loop.
            os.setpriority(os.PRIO_PROCESS, app.process.pid, args.hub_nice)  # type: ignore[union-attr]
        time.sleep(args.settle)
        wait_quiet(app, args.quiet, args.quiet_wait)
        idle = measure_idle(app, args.idle)
        report["idle"] = idle
        say(f"idle: {idle['cpu']['appliance_total']}% of a core for {workers} workers "
             f"({idle['cpu_pct_per_worker']}% per worker), RSS {idle['rss_kb'] / 1024:.0f} MB")
        if args.extra_load:
            args.load_pids = [load.start()]
            say(f"extra load: a process busy {100 * args.extra_load:.0f}% of every 20 ms (pid {args.load_pids[0]})")
        seen: set[str] = set()
        report["steps"], report["retried"] = ramp(
            app, args.steps, args,
            lambda n, attempt: run_step(app, n, args, root / f"step-{n}-{attempt}", idle["rss_kb"], seen), step_line)
    finally:
        load.stop()
        # Read before stopping: shutdown logs its own warnings (workers disconnecting).
        report["log_warnings"] = log_warnings(app.log_path)
        stop_appliance(app, report, root, args.keep)
    if args.baseline and report["steps"]:
        report["baseline"] = run_baseline(args, workers, [s["calls"] for s in report["steps"]])
    passed = [s["calls"] for s in report["steps"] if s["passed"]]
    report["max_calls_0_failures"] = max(passed, default=0)
    report["first_failure"] = next((s["calls"] for s in report["steps"] if not s["passed"]), None)
    return report


def run_baseline(args: argparse.Namespace, workers: int, steps: list[int]) -> list[dict[str, Any]]:
    """The same steps against pjsua2 processes that record by themselves (bench/baseline.py)."""
    root = Path(tempfile.mkdtemp(prefix="sb-bench-baseline-"))
    box = BaselineBox(root, workers, CALLS_PER_WORKER)
    results = []
    say(f"baseline: {workers} pjsua2 processes recording with pjsua2's own recorder, behind the same edge")
    try:
        box.start()
        for n in steps:
            time.sleep(args.settle)
            step = run_baseline_step(box, n, args.duration, args.rate, root / f"baseline-{n}")
            say(f"  baseline N={n} failed={step['sipp_failed']} invite→200 p50={step['invite_200_ms']['p50']} "
                f"p95={step['invite_200_ms']['p95']} ms cpu={step['cpu']['total']}% "
                f"({step['cpu_pct_per_call']}%/call) recordings={step['recordings']}")
            results.append(step)
    finally:
        box.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return results


def step_line(s: Step) -> str:
    return (f"  N={s.calls} {'PASS' if s.passed else 'FAIL'} failed={s.sipp_failed} "
            f"invite→200 p50={s.invite_200_ms.get('p50')} p95={s.invite_200_ms.get('p95')} ms "
            f"cpu={s.cpu.get('appliance_total')}% ({s.cpu_pct_per_call}%/call; "
            f"main {s.cpu.get('main', {}).get('total')}%, "
            f"workers {s.cpu.get('worker', {}).get('total')}%, kamailio {s.cpu.get('kamailio', {}).get('total')}%, "
            f"sipp {s.cpu.get('sipp', {}).get('total')}%) rss/call={s.rss_mb_per_call} MB "
            f"tick lag p95={s.tick_lag.get('p95_ms')} ms, >20ms {s.tick_lag.get('over_20ms')}, stalls {s.hub_stalls}; "
            f"hub thread cpu {s.hub_thread.get('cpu_pct')}% runq-wait {s.hub_thread.get('runq_wait_pct')}%; "
            f"box busy {s.box_cpu.get('busy')}% (other load {s.other_load_pct}%); "
            f"extra load {s.extra_load_pct}%; "
            f"caller audio missing {s.records.get('caller_missing_pct', {}).get('mean')}% "
            f"(max {s.records.get('caller_missing_pct', {}).get('max')}%), recording vs call max "
            f"{s.records.get('recording_short_of_call_s_max')} s")


def ramp_parser(prog: str, description: str | None, full_steps: list[int]) -> argparse.ArgumentParser:
    """The options of a capacity ramp: this benchmark's, and bench/media_streams.py's."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        help=f"concurrency steps, comma-separated (default {','.join(map(str, full_steps))})")
    parser.add_argument("--duration", type=float, help="seconds each call lasts (default 30)")
    parser.add_argument("--rate", type=float, default=20, help="calls started per second in a step (default 20)")
    parser.add_argument("--workers", type=int, help="SIP workers (default ceil(max step / 4) + 1)")
    parser.add_argument("--idle", type=float, help="seconds of idle measurement before the ramp (default 20)")
    parser.add_argument("--settle", type=float, default=5, help="seconds between steps (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help=f"steps {','.join(map(str, QUICK_STEPS))} of 10 s calls, 5 s idle, no doc: "
                             "checks the benchmark")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md (default in --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the appliance's temp dir (logs, recordings)")
    parser.add_argument("--quiet", type=float, default=25,
                        help="before a step, wait until other work on the box is below this %% of a core; a step that "
                             "fails with more other work than this is run once more (default 25)")
    parser.add_argument("--quiet-wait", type=float, default=300, help="longest wait for a quiet box, s (default 300)")
    parser.add_argument("--attempts", type=int, default=3,
                        help="runs of a step that keeps failing on a busy box (default 3)")
    return parser


def ramp_args(parser: argparse.ArgumentParser, argv: list[str], full_steps: list[int]) -> argparse.Namespace:
    """`argv` parsed by a `ramp_parser`, with the defaults that depend on --quick."""
    args = parser.parse_args(argv)
    args.argv = argv
    args.load_pids = []
    args.steps = args.steps or (QUICK_STEPS if args.quick else full_steps)
    args.duration = args.duration or (10.0 if args.quick else 30.0)
    args.idle = args.idle if args.idle is not None else (5.0 if args.quick else 20.0)
    if args.quick:
        args.no_doc = True
    if args.duration < 8:
        parser.error("--duration must be at least 8 s: the steady state needs every call up at once")
    return args


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ramp_parser("python bench/calls.py", __doc__, FULL_STEPS)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the baseline (pjsua2 recording by itself) after the ramp (skipped in --quick)")
    parser.add_argument("--extra-load", type=float, default=0.0,
                        help="a fixed extra load during the steps: a process busy this fraction of a core "
                             "(e.g. 0.5), measured apart from the appliance")
    parser.add_argument("--hub-nice", type=int,
                        help="experiment: renice the hub's event-loop thread (the main process's main thread) "
                             "to this value after start, e.g. -10")
    args = ramp_args(parser, argv, FULL_STEPS)
    if args.quick:
        args.baseline = False
    return args


def latest_extra_load() -> dict[str, Any] | None:
    """The newest run under --extra-load in bench/results, shown beside the ramp."""
    runs = sorted(RESULTS.glob("calls-*-extra-load*.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(runs[-1].read_text()) if runs else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if missing_program("bench/calls.py"):
        return 2
    # A crashing worker then leaves its Python stacks in the appliance log.
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    report = run(args)
    tag = (("-quick" if args.quick else "") + ("" if args.hub_nice is None else f"-hub-nice{args.hub_nice}")
           + (f"-extra-load{args.extra_load:g}" if args.extra_load else ""))
    report["analysis"] = analysis = analyse(report)
    path = save_results(report, "calls", tag)
    print()
    print(table(report))
    print(f"\nlargest concurrency with 0 failed calls: {report['max_calls_0_failures']}")
    print(analysis)
    print(f"raw results: {path}")
    if args.extra_load:
        print("with --extra-load the run goes beside the ramp in the doc: the next full run includes its latest")
    elif not args.no_doc and "idle" in report:
        write_doc(report, analysis, latest_extra_load())
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if report["steps"] and report["steps"][0]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
