"""The Media Streams benchmark: how many concurrent Twilio Media Streams calls one box holds with 0
failures and no audio gaps over 1 %, and what each costs, beside the SIP path in the same run.

Starts the real appliance (tests.support.appliance) with Twilio enabled and SIP workers, the
capacity benchmark's flow (bench/calls.py BENCH_FLOW: a greeting, then a menu that holds the call)
on both a Twilio number and the SIP number. Each step runs N callers from
bench/media_streams_callers.py (one asyncio process, its CPU counted apart) that speak for the
whole call and then send `stop`, and measures its steady state: the appliance's CPU (the gateway
runs in its main process) and RSS per call, the hub's tick lag, gaps in what each caller heard
and in each recording's caller channel. Then the same steps over SIP with sipp, by
bench/calls.py's own step. Writes raw results to bench/results/ and its section of
docs/BENCHMARKS.md.

    python bench/media_streams.py            # steps 16,32,64,96,128,160 both ways (about 15 minutes)
    python bench/media_streams.py --quick    # steps 4,8 of 10 s calls, no doc: checks the benchmark
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/media_streams.py` puts bench/ first, not the repo

from aiohttp import web

from bench.calls import (
    BENCH_FLOW,
    CALLS_PER_WORKER,
    check_records,
    log_count,
    measure_idle,
    metrics_text,
    ramp,
    ramp_args,
    ramp_parser,
    rss_kb,
    run_delay_ns,
    step_line,
    tick_lag,
    wait_active,
    wait_quiet,
)
from bench.calls import Step as SipStep
from bench.calls import run_step as run_sip_step
from bench.common import (
    CALLERS_MODULE,
    DOC,
    SteadyWindow,
    code_version,
    first_line,
    log_warnings,
    machine,
    missing_program,
    pct,
    save_results,
    say,
    snapshot,
    stop_appliance,
    wait_closed,
)
from bench.media_streams_callers import Plan
from bench.media_streams_report import analyse, tables, write_doc
from tests.support.appliance import ApplianceProcess
from tests.support.http_server import LoopbackServer

# Doubling to 64, where both paths pass (bench/calls.py held 120 SIP calls on this box), then steps
# of 32 through where the main process, whose one event loop runs the hub and every stream's
# WebSocket, should run out of its one core (--quick: about 0.75 % of a core per added call), up
# to 160, past the SIP ramp's 120. Media Streams calls have no 4-calls-per-process limit.
FULL_STEPS = [16, 32, 64, 96, 128, 160]
QUICK_STEPS = [4, 8]
GAP_LIMIT = 0.01  # a step fails when any call misses more than this share of its 20 ms frames
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
NUMBER = "+15550100"  # the Twilio number; SIP callers dial 100, both reach the bench flow
PUBLIC_URL = "https://switchboard.example.com"  # what the webhooks are signed for (a proxy's URL)


# --- one Media Streams step ----------------------------------------------------------------


@dataclass
class StreamStep:
    calls: int
    passed: bool = False
    problems: list[str] = field(default_factory=list)
    failed: int = 0  # calls with any failure the callers saw
    failures: dict[str, int] = field(default_factory=dict)  # by kind
    webhook_ms: dict[str, float | None] = field(default_factory=dict)
    first_media_ms: dict[str, float | None] = field(default_factory=dict)  # start → first audio from the box
    heard_frames: dict[str, int | None] = field(default_factory=dict)  # the greeting and prompt, per caller
    heard_missing_pct: dict[str, float | None] = field(default_factory=dict)
    longest_heard_gap_ms: float | None = None
    clears: int = 0
    callers_loop_lag: dict[str, float | None] = field(default_factory=dict)
    steady_s: float = 0.0
    cpu: dict[str, Any] = field(default_factory=dict)  # % of a core by role (bench.common.cpu_window)
    cpu_pct_per_call: float | None = None  # the appliance's tree
    main_cpu_pct_per_call: float | None = None  # its main process: the hub and the Twilio gateway
    callers_cpu_pct_per_call: float | None = None
    hub_thread: dict[str, float] = field(default_factory=dict)
    box_cpu: dict[str, float] = field(default_factory=dict)
    other_load_pct: float | None = None
    rss_mb_total: float = 0.0
    rss_mb_per_call: float | None = None
    tick_lag: dict[str, Any] = field(default_factory=dict)
    hub_stalls: int = 0
    rest_requests: int = 0  # hang-ups through Twilio's API: the flow ended a call, which it must not here
    records: dict[str, Any] = field(default_factory=dict)
    callers_tail: str = ""


def failure_kind(failure: str) -> str:
    """A caller's failure text as its kind: "webhook not answered: ..." → "webhook not answered"."""
    return failure.split(":", 1)[0].split(" (", 1)[0]


def summarise_callers(step: StreamStep, result: dict[str, Any], n: int) -> None:
    outcomes = result["calls"]
    failures = [o["failure"] for o in outcomes if o["failure"]]
    step.failed = len(failures)
    for failure in failures:
        step.failures[failure_kind(failure)] = step.failures.get(failure_kind(failure), 0) + 1
    if failures:
        step.problems.append(f"{len(failures)} of {n} Media Streams calls failed: {step.failures}; "
                             f"first: {failures[0]}")
    bad_close = [o["close_code"] for o in outcomes if o["close_code"] not in (None, 1000)]
    if bad_close:
        step.problems.append(f"{len(bad_close)} streams closed with codes {sorted(set(bad_close))} after stop")
    webhook = [o["webhook_ms"] for o in outcomes if o["webhook_ms"] is not None]
    first = [1000 * o["first_media_s"] for o in outcomes if o["first_media_s"] is not None]
    missing = [100 * o["missing"] for o in outcomes if o["missing"] is not None]
    step.webhook_ms = {"p50": pct(webhook, 0.5), "p95": pct(webhook, 0.95), "max": pct(webhook, 1.0)}
    step.first_media_ms = {"p50": pct(first, 0.5), "p95": pct(first, 0.95), "max": pct(first, 1.0)}
    frames = [o["frames"] for o in outcomes if o["frames"]]
    step.heard_frames = {"min": min(frames, default=None), "max": max(frames, default=None)}
    step.heard_missing_pct = {"mean": round(statistics.mean(missing), 2) if missing else None,
                              "max": pct(missing, 1.0, 2), "calls": len(missing)}
    step.longest_heard_gap_ms = max((o["longest_gap_ms"] for o in outcomes if o["longest_gap_ms"] is not None),
                                    default=None)
    step.clears = sum(o["clears"] for o in outcomes)
    step.callers_loop_lag = result["loop_lag"]
    if missing and max(missing) > 100 * GAP_LIMIT:
        over = sum(1 for m in missing if m > 100 * GAP_LIMIT)
        step.problems.append(f"{over} callers heard gaps over {100 * GAP_LIMIT:g}% (max {max(missing):.2f}%)")


def check_recording_gaps(step: StreamStep | SipStep, records: dict[str, Any]) -> None:
    """This benchmark's bound on the recordings' caller channel, for both paths."""
    worst = records.get("caller_missing_pct", {}).get("max")
    if worst is not None and worst > 100 * GAP_LIMIT:
        step.problems.append(f"recordings' caller channel missing up to {worst}% of frames "
                             f"(bound {100 * GAP_LIMIT:g}%)")
        step.passed = False


def start_callers(app: ApplianceProcess, n: int, args: argparse.Namespace, workdir: Path) -> subprocess.Popen[bytes]:
    plan = Plan(box_url=f"http://127.0.0.1:{app.http_port}", public_url=PUBLIC_URL, account_sid=ACCOUNT_SID,
                number=NUMBER, calls=n, rate=args.rate, duration=args.duration)
    with open(workdir / "callers.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", CALLERS_MODULE, json.dumps(asdict(plan))], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                env=os.environ | {"TWILIO_AUTH_TOKEN": app.environment["TWILIO_AUTH_TOKEN"]})


def run_stream_step(app: ApplianceProcess, rest: LoopbackServer, n: int, args: argparse.Namespace, workdir: Path,
                    idle_rss_kb: int, seen: set[str]) -> StreamStep:
    step = StreamStep(calls=n)
    workdir.mkdir(parents=True)
    ramp_s = n / args.rate
    stalls_before, rest_before = log_count(app, "hub clock stalled"), len(rest.requests)
    callers = start_callers(app, n, args, workdir)
    assert callers.stdout is not None
    first = callers.stdout.readline().decode()
    if not first.startswith("launched "):
        callers.wait()
        step.problems.append("the callers did not start: " + (workdir / "callers.log").read_text()[-500:])
        return step
    launched = float(first.split()[1])  # CLOCK_MONOTONIC, as time.monotonic() here

    # Steady state, as bench/calls.py takes it: from every call up (and a second for media to
    # settle) to just before the first caller's stop, which comes `duration` after its start.
    window_end = launched + args.duration - 0.5
    if not wait_active(app, n, min(window_end - 2, launched + ramp_s + 15)):
        step.problems.append(f"only {app.get('/healthz', auth=False)['calls_active']} of {n} calls were up at once")
    time.sleep(1.0)
    main_pid = app.process.pid  # type: ignore[union-attr]
    window = SteadyWindow(app, [callers.pid])
    metrics_before, delay_before = metrics_text(app), run_delay_ns(main_pid)
    rss_samples = []
    while time.monotonic() < window_end - 1.0:
        time.sleep(1.0)
        rss_samples.append(rss_kb(snapshot(app)))
    measured = window.stop()
    metrics_after, delay_after = metrics_text(app), run_delay_ns(main_pid)
    step.steady_s = steady = measured["seconds"]
    step.cpu, step.box_cpu, step.other_load_pct = measured["cpu"], measured["box_cpu"], measured["other_load_pct"]
    step.cpu_pct_per_call = round(step.cpu["appliance"] / n, 2)
    step.main_cpu_pct_per_call = round(step.cpu.get("main", 0.0) / n, 2)
    step.callers_cpu_pct_per_call = round(step.cpu.get("callers", 0.0) / n, 2)
    step.hub_thread = {
        "cpu_pct": round(100 * (delay_after[0] - delay_before[0]) / 1e9 / steady, 1),
        "runq_wait_pct": round(100 * (delay_after[1] - delay_before[1]) / 1e9 / steady, 1),
    }
    steady_rss = statistics.median(rss_samples) if rss_samples else rss_kb(snapshot(app))
    step.rss_mb_total = round(steady_rss / 1024, 1)
    step.rss_mb_per_call = round((steady_rss - idle_rss_kb) / 1024 / n, 2)
    step.tick_lag = tick_lag(metrics_before, metrics_after, steady)

    try:
        out, _ = callers.communicate(timeout=args.duration + ramp_s + 90)
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        callers.kill()
        callers.wait()
        step.callers_tail = (workdir / "callers.log").read_text(errors="replace")[-1500:]
        step.problems.append(f"the callers did not report ({type(exc).__name__})")
        return step
    summarise_callers(step, result, n)

    calls = wait_closed(app, seen, n, timeout=60)
    seen.update(c["id"] for c in calls)
    step.hub_stalls = log_count(app, "hub clock stalled") - stalls_before
    step.rest_requests = len(rest.requests) - rest_before
    step.records = check_records(calls, n, args.duration, step.problems)
    step.passed = not step.problems
    check_recording_gaps(step, step.records)
    return step


def stream_line(s: StreamStep) -> str:
    lag = s.tick_lag
    return (f"  N={s.calls} {'PASS' if s.passed else 'FAIL'} failed={s.failed} "
            f"webhook p95={s.webhook_ms.get('p95')} ms, start→audio p95={s.first_media_ms.get('p95')} ms; "
            f"cpu={s.cpu.get('appliance')}% (main {s.cpu.get('main')}%; {s.main_cpu_pct_per_call}%/call main, "
            f"{s.cpu_pct_per_call}%/call tree) callers {s.cpu.get('callers')}% rss/call={s.rss_mb_per_call} MB; "
            f"tick lag p95={lag.get('p95_ms')} ms, >20ms {lag.get('over_20ms')}, stalls {s.hub_stalls}; "
            f"hub thread cpu {s.hub_thread.get('cpu_pct')}% runq-wait {s.hub_thread.get('runq_wait_pct')}%; "
            f"heard missing max {s.heard_missing_pct.get('max')}% (longest gap {s.longest_heard_gap_ms} ms), "
            f"recording caller missing max {s.records.get('caller_missing_pct', {}).get('max')}%; "
            f"callers' loop lag p99 {s.callers_loop_lag.get('p99_ms')} ms; "
            f"box busy {s.box_cpu.get('busy')}% (other {s.other_load_pct}%)")


# --- the run -------------------------------------------------------------------------------


async def _call_resource(request: web.Request) -> web.Response:
    """Twilio's answer to a hang-up through its REST API (only a flow hang-up asks)."""
    sid = request.path.rsplit("/", 1)[-1].removesuffix(".json")
    return web.json_response({"sid": sid, "account_sid": ACCOUNT_SID, "status": "completed"})


def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now().astimezone()
    workers = args.workers or (math.ceil(max(args.steps) / CALLS_PER_WORKER) + 1 if args.sip else 1)
    root = Path(tempfile.mkdtemp(prefix="sb-bench-media-streams-"))
    flows = root / "flows"
    flows.mkdir()
    (flows / "bench.yaml").write_text(BENCH_FLOW)
    rest = LoopbackServer(default=_call_resource)
    report: dict[str, Any] = {
        "benchmark": "media_streams",
        "date": started_at.isoformat(timespec="seconds"),
        "command": "python bench/media_streams.py " + " ".join(args.argv),
        "machine": machine({"sipp": first_line(["sipp", "-v"]), "kamailio": first_line(["kamailio", "-v"]),
                            "espeak_ng": first_line(["espeak-ng", "--version"]).split("  Data at")[0]}),
        "code": code_version(("appliance", "sip", "twilio_gateway")),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "settings": {"steps": args.steps, "duration_s": args.duration, "rate_cps": args.rate, "workers": workers,
                     "calls_per_worker": CALLS_PER_WORKER, "max_streams": max(args.steps), "idle_s": args.idle,
                     "quiet_pct": args.quiet, "gap_limit_pct": 100 * GAP_LIMIT, "sip": args.sip},
        "streams": [], "sip": [],
    }
    with rest.in_thread():
        app = ApplianceProcess(
            root, workers=workers, calls_per_worker=CALLS_PER_WORKER, numbers={"100": "bench", NUMBER: "bench"},
            flows_dir=flows, environment={"TWILIO_AUTH_TOKEN": secrets.token_hex(16)},
            extra={"personas": {"workers": 0},
                   "twilio": {"enabled": True, "public_url": PUBLIC_URL, "account_sid": ACCOUNT_SID,
                              "numbers": [NUMBER], "api_base_url": rest.url, "max_streams": max(args.steps)}})
        say(f"appliance: Twilio enabled (max {max(args.steps)} streams), {workers} SIP workers in {root}")
        try:
            app.start(timeout=60 + 3 * workers)
            time.sleep(args.settle)
            wait_quiet(app, args.quiet, args.quiet_wait)
            report["idle"] = idle = measure_idle(app, args.idle)
            say(f"idle: {idle['cpu']['appliance_total']}% of a core (main {idle['cpu']['main']['total']}%), "
                f"RSS {idle['rss_kb'] / 1024:.0f} MB")
            seen: set[str] = set()
            report["streams"], report["streams_retried"] = ramp(
                app, args.steps, args,
                lambda n, attempt: run_stream_step(app, rest, n, args, root / f"streams-{n}-{attempt}",
                                                   idle["rss_kb"], seen),
                stream_line, "Media Streams")
            if args.sip:
                def sip_step(n: int, attempt: int) -> SipStep:
                    step = run_sip_step(app, n, args, root / f"sip-{n}-{attempt}", idle["rss_kb"], seen)
                    check_recording_gaps(step, step.records)
                    return step

                ran = [s["calls"] for s in report["streams"]]
                report["sip"], report["sip_retried"] = ramp(app, ran, args, sip_step, step_line, "SIP")
        finally:
            # Read before stopping: shutdown logs its own warnings (workers disconnecting).
            report["log_warnings"] = log_warnings(app.log_path)
            stop_appliance(app, report, root, args.keep)
    for path in ("streams", "sip"):
        passed = [s["calls"] for s in report[path] if s["passed"]]
        report[f"max_{path}_0_failures"] = max(passed, default=0)
        report[f"first_{path}_failure"] = next((s["calls"] for s in report[path] if not s["passed"]), None)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ramp_parser("python bench/media_streams.py", __doc__, FULL_STEPS)
    parser.add_argument("--no-sip", dest="sip", action="store_false", help="skip the SIP path's steps")
    args = ramp_args(parser, argv, FULL_STEPS)
    if max(args.steps) > 256:
        parser.error("the Twilio gateway holds at most 256 streams (twilio.max_streams)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if missing_program("bench/media_streams.py", ("sipp", "kamailio", "espeak-ng")):
        return 2
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")  # a crashing worker leaves its stacks in the log
    report = run(args)
    report["analysis"] = analysis = analyse(report)
    path = save_results(report, "media_streams", "-quick" if args.quick else "")
    print()
    print(tables(report))
    print(f"\nlargest concurrency with 0 failures and gaps ≤ {100 * GAP_LIMIT:g}%: Media Streams "
          f"{report['max_streams_0_failures']}, SIP {report['max_sip_0_failures'] if args.sip else '(not run)'}")
    print(analysis)
    print(f"raw results: {path}")
    if not args.no_doc and "idle" in report:
        write_doc(report, analysis)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if report["streams"] and report["streams"][0]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
