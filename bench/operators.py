"""The operator-calls benchmark: N SIP callers talking to N operators (WebRTC) at once.

Starts the real appliance (tests.support.appliance) with the console's desk flow (number 300
→ queue billing), signs in N operators as aiortc clients over the console's HTTPS API, and
places N sipp callers that echo every RTP packet back (`-rtp_echo`). Each operator accepts
its offer and sends a continuous 500 Hz tone with a 60 ms chirp every second; the chirps come
back to it through the whole path (browser → rtc worker → hub → SIP worker → caller → and
back), so one clock, the operator's, times the round trip. The recording (left: the caller,
right: what the caller heard) splits it into the WebRTC leg and the SIP leg. Measures per N:
audio gaps, CPU of the appliance's process tree, accept → audio, and the delay. Writes raw
results to bench/results/ and its section of docs/BENCHMARKS.md.

    python bench/operators.py                 # sizes 5,10,15,20,25,30 (about 8 minutes)
    python bench/operators.py --quick         # sizes 2,5 with short windows: checks the benchmark
    python bench/operators.py --sizes 10,20
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import statistics
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/operators.py` puts bench/ first, not the repo

import numpy as np

from appliance.console.rtc_media import PacedAudioTrack
from bench.calls import (
    CALLS_PER_WORKER,
    find_sipp,
    histogram,
    histogram_delta,
    histogram_quantile,
    metrics_text,
)
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
from bench.operators_report import table, write_doc
from tests.support.appliance import ApplianceProcess
from tests.support.console import add_user, operator
from tests.support.operator_client import OperatorClient
from tests.support.sipp.process import SippResult, run_sipp

FLOWS = ROOT / "tests" / "console" / "flows"
FULL_SIZES = [5, 10, 15, 20, 25, 30]
QUICK_SIZES = [2, 5]

# --- the operator's signal -----------------------------------------------------------------

RATE = 16_000
FRAME = 320  # 20 ms: the hub's frame
TONE_HZ = 500  # 32 samples a period: every 20 ms frame of it is the same
PERIOD_FRAMES = 50  # a chirp every second
CHIRP_FRAMES = 3  # 60 ms
SILENT_RMS = 300.0  # the tone is ~2,800 RMS; a frame below this carried no signal
MATCH = 0.5  # normalised correlation a chirp must reach to count as found
SEARCH_S = 0.9  # a chirp's echo is looked for this long after it was sent (below the 1 s period)

_t = np.arange(FRAME) / RATE
TONE = (4000 * np.sin(2 * np.pi * TONE_HZ * _t)).astype(np.int16)
_tc = np.arange(CHIRP_FRAMES * FRAME) / RATE
_f0, _f1 = 800.0, 3400.0  # inside G.711's band
CHIRP = (12000 * np.sin(2 * np.pi * (_f0 * _tc + (_f1 - _f0) / (2 * _tc[-1]) * _tc**2))
         * np.hanning(len(_tc)) ** 0.25).astype(np.int16)


class SignalTrack(PacedAudioTrack):
    """The tone, a chirp every second, and the wall-clock time each chirp was handed to aiortc."""

    def __init__(self) -> None:
        super().__init__()
        self._frame = 0
        self.chirps_sent: list[float] = []

    def next_frame(self) -> bytes:
        phase = self._frame % PERIOD_FRAMES
        self._frame += 1
        if phase >= CHIRP_FRAMES:
            return TONE.tobytes()
        if phase == 0:
            self.chirps_sent.append(time.time())
        return CHIRP[phase * FRAME:(phase + 1) * FRAME].tobytes()


def _pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int16).astype(np.float64)


def chirp_match(pcm: np.ndarray) -> np.ndarray:
    """Normalised correlation of the chirp with `pcm` at every start sample (1: a perfect copy)."""
    n = len(CHIRP)
    if len(pcm) < n:
        return np.zeros(0)
    size = 1 << int(math.ceil(math.log2(len(pcm) + n)))
    corr = np.fft.irfft(np.fft.rfft(pcm, size) * np.conj(np.fft.rfft(CHIRP.astype(np.float64), size)), size)
    corr = corr[: len(pcm) - n + 1]
    energy = np.concatenate(([0.0], np.cumsum(pcm**2)))
    window = np.sqrt(np.maximum(energy[n:] - energy[:-n], 1e-9))
    return corr / (window * float(np.linalg.norm(CHIRP.astype(np.float64))))


def find_chirp(match: np.ndarray, start: int, end: int) -> int | None:
    """The sample where a chirp starts in [start, end), or None if none reaches MATCH."""
    start, end = max(0, start), min(len(match), end)
    if end <= start:
        return None
    best = start + int(np.argmax(match[start:end]))
    return best if match[best] >= MATCH else None


def frame_rms(pcm: np.ndarray) -> np.ndarray:
    frames = len(pcm) // FRAME
    return np.sqrt(np.mean(pcm[: frames * FRAME].reshape(frames, FRAME) ** 2, axis=1))


def is_tone(frame: np.ndarray) -> bool:
    """Whether most of a frame's energy is the operator's 500 Hz tone (not a hold announcement)."""
    total = float(np.sum(frame**2))
    if total <= 0:
        return False
    a = float(np.dot(frame, np.sin(2 * np.pi * TONE_HZ * _t)))
    b = float(np.dot(frame, np.cos(2 * np.pi * TONE_HZ * _t)))
    return 2 * (a * a + b * b) / FRAME / total > 0.6


# --- one operator's leg --------------------------------------------------------------------


@dataclass
class Leg:
    name: str
    client: OperatorClient
    track: SignalTrack
    call: str | None = None
    accepted_at: float | None = None
    connected_at: float | None = None
    problem: str | None = None


class Heard:
    """What an operator heard, with each sample's arrival time (from the client's per-frame arrivals)."""

    def __init__(self, client: OperatorClient):
        self.pcm = _pcm(client.heard())
        arrivals = list(client.arrivals)
        self.times = np.array([t for t, _ in arrivals])
        self.ends = np.array([b // 2 for _, b in arrivals])  # samples heard once each frame was in

    def time_of(self, sample: int) -> float:
        """When `sample` arrived: its frame's arrival, less the samples after it in that frame."""
        i = min(int(np.searchsorted(self.ends, sample, side="right")), len(self.ends) - 1)
        return float(self.times[i] - (self.ends[i] - 1 - sample) / RATE)

    def sample_at(self, when: float) -> int:
        i = int(np.searchsorted(self.times, when))
        return int(self.ends[i - 1]) if i > 0 else 0


async def take_call(leg: Leg, timeout: float) -> None:
    """Wait for an offer, accept it, and wait for the call to be connected."""
    try:
        offer = await leg.client.recv("offer", timeout=timeout)
        leg.call = offer["call"]
        leg.accepted_at = time.time()
        leg.client.send({"type": "accept", "offer": offer["offer"]})
        while True:
            message = await leg.client.recv("call", timeout=10)
            if message.get("state") == "connected":
                leg.connected_at = time.time()
                return
    except TimeoutError:
        leg.problem = "no offer" if leg.call is None else "not connected"


def analyse_leg(leg: Leg, record: dict[str, Any], window: tuple[float, float]) -> dict[str, Any]:
    """Gaps, accept → audio and round trips of one operator's call, over the steady `window`."""
    heard = Heard(leg.client)
    w0, w1 = window
    out: dict[str, Any] = {"operator": leg.name, "call": leg.call}
    if not len(heard.times) or leg.accepted_at is None:
        out["problem"] = leg.problem or "heard nothing"
        return out

    # Gaps in what the operator heard (the whole loop), by arrival time within the window.
    in_window = (heard.times >= w0) & (heard.times < w1)
    frames_heard = np.diff(np.concatenate(([0], heard.ends)))[in_window] // FRAME
    rms = frame_rms(heard.pcm)
    first_frame = heard.ends[in_window] // FRAME - frames_heard
    loud = sum(int(np.sum(rms[f:f + k] >= SILENT_RMS)) for f, k in zip(first_frame, frames_heard, strict=True))
    expected = (w1 - w0) / 0.02
    out["loop_gap_pct"] = round(100 * max(0.0, 1 - loud / expected), 2)

    # Accept → audio. Operator side: the first frame with any sound after accept (the caller's
    # echo, of the hold announcement or of the tone). Caller side: the first echo of the
    # operator's own tone, less half a round trip (the way back from the caller).
    start = heard.sample_at(leg.accepted_at)
    after = np.nonzero(rms[start // FRAME:] >= SILENT_RMS)[0]
    if len(after):
        out["accept_to_heard_ms"] = round(1000 * (heard.time_of((start // FRAME + int(after[0])) * FRAME)
                                                  - leg.accepted_at), 1)
    match = chirp_match(heard.pcm)
    rtts = []
    for sent in leg.track.chirps_sent:
        if w0 <= sent < w1 - SEARCH_S:
            at = find_chirp(match, heard.sample_at(sent), heard.sample_at(sent + SEARCH_S))
            if at is not None:
                # A chirp starts a sent frame: its first sample left 319 samples before the frame's end.
                rtts.append(heard.time_of(at) - (sent - (FRAME - 1) / RATE))
    out["chirps_sent"] = sum(1 for s in leg.track.chirps_sent if w0 <= s < w1 - SEARCH_S)
    out["rtt_ms"] = [round(1000 * r, 1) for r in rtts]
    # The way back, early in the call: half the round trip of the first chirp after accept (the
    # path's queues fill during the first seconds, so the steady round trip would be too long).
    first = next(((s, find_chirp(match, heard.sample_at(s), heard.sample_at(s + SEARCH_S)))
                  for s in leg.track.chirps_sent if s > leg.accepted_at), None)
    if first is not None and first[1] is not None:
        back = (heard.time_of(first[1]) - (first[0] - (FRAME - 1) / RATE)) / 2
        out["first_rtt_ms"] = round(2000 * back, 1)
        for f in range(start // FRAME, len(rms)):
            if is_tone(heard.pcm[f * FRAME:(f + 1) * FRAME]):
                out["accept_to_caller_ms"] = round(1000 * (heard.time_of(f * FRAME) - back - leg.accepted_at), 1)
                break
    out.update(analyse_recording(record.get("recording_path")))
    return out


def analyse_recording(path: str | None) -> dict[str, Any]:
    """From the call's stereo WAV: gaps toward the caller (right) and back from the echoing caller
    (left) after the operator's first chirp, and the SIP leg's round trip (each chirp on the right
    to its echo on the left: one file, one timeline)."""
    if not path or not Path(path).exists():
        return {"recording": "missing"}
    with wave.open(path) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, w.getnchannels())
    left, right = data[:, 0].astype(np.float64), data[:, 1].astype(np.float64)
    right_match, left_match = chirp_match(right), chirp_match(left)
    chirps = []  # chirp starts on the right, one a second, from the first the caller got
    at = find_chirp(right_match, 0, len(right_match))
    while at is not None:
        chirps.append(at)
        at = find_chirp(right_match, at + int(0.95 * RATE), at + int(1.05 * RATE))
    if len(chirps) < 3:
        return {"recording": f"{len(chirps)} operator chirps found toward the caller"}
    sip_rtts = []
    for r in chirps[1:-1]:
        echo = find_chirp(left_match, r, r + int(SEARCH_S * RATE))
        if echo is not None:
            sip_rtts.append(1000 * (echo - r) / RATE)
    # Steady part: one second after the first chirp the caller got to the last chirp found,
    # which ends before the caller hangs up.
    a, b = (chirps[0] + RATE) // FRAME, chirps[-1] // FRAME
    gap = {name: round(100 * float(np.mean(frame_rms(pcm)[a:b] < SILENT_RMS)), 2)
           for name, pcm in (("to_caller_gap_pct", right), ("from_caller_gap_pct", left))}
    return gap | {"sip_rtt_ms": [round(x, 1) for x in sip_rtts], "recorded_chirps": len(chirps)}


# --- one step ------------------------------------------------------------------------------


@dataclass
class Step:
    operators: int
    problems: list[str] = field(default_factory=list)
    connect_s: float | None = None
    steady_s: float | None = None
    sipp_successful: int = 0
    sipp_failed: int = 0
    cpu: dict[str, Any] = field(default_factory=dict)
    box_cpu: dict[str, float] = field(default_factory=dict)
    other_load_pct: float | None = None
    tick_lag_p95_ms: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    legs: list[dict[str, Any]] = field(default_factory=list)


def summarise(legs: list[dict[str, Any]]) -> dict[str, Any]:
    def all_of(key: str) -> list[float]:
        return [v for leg in legs for v in (leg.get(key) if isinstance(leg.get(key), list) else [leg.get(key)])
                if v is not None]

    rtt = all_of("rtt_ms")
    sip = all_of("sip_rtt_ms")
    sent = sum(leg.get("chirps_sent", 0) for leg in legs)
    return {
        "loop_gap_pct": {"mean": _mean(all_of("loop_gap_pct")), "max": _max(all_of("loop_gap_pct"))},
        "to_caller_gap_pct": {"mean": _mean(all_of("to_caller_gap_pct")), "max": _max(all_of("to_caller_gap_pct"))},
        "from_caller_gap_pct": {"mean": _mean(all_of("from_caller_gap_pct")),
                                "max": _max(all_of("from_caller_gap_pct"))},
        "accept_to_heard_ms": {"p50": pct(all_of("accept_to_heard_ms"), 0.5),
                               "p95": pct(all_of("accept_to_heard_ms"), 0.95)},
        "accept_to_caller_ms": {"p50": pct(all_of("accept_to_caller_ms"), 0.5),
                                "p95": pct(all_of("accept_to_caller_ms"), 0.95)},
        "rtt_ms": {"p50": pct(rtt, 0.5), "p95": pct(rtt, 0.95), "samples": len(rtt), "chirps_sent": sent},
        "first_rtt_ms": {"p50": pct(all_of("first_rtt_ms"), 0.5), "p95": pct(all_of("first_rtt_ms"), 0.95)},
        "one_way_ms": {"p50": pct([r / 2 for r in rtt], 0.5), "p95": pct([r / 2 for r in rtt], 0.95)},
        "sip_rtt_ms": {"p50": pct(sip, 0.5), "p95": pct(sip, 0.95), "samples": len(sip)},
        "webrtc_rtt_ms_p50": (None if not rtt or not sip
                              else round(float(np.median(rtt)) - float(np.median(sip)), 1)),
    }


def _mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 2) if values else None


def _max(values: list[float]) -> float | None:
    return round(max(values), 2) if values else None


async def run_step(app: ApplianceProcess, n: int, args: argparse.Namespace, workdir: Path) -> Step:
    step = Step(operators=n)
    workdir.mkdir(parents=True)
    began = time.monotonic()
    legs = []
    for i in range(n):
        track = SignalTrack()
        client = OperatorClient(track=track)
        try:
            await operator(app, f"op{i}", client=client)
        except (TimeoutError, AssertionError) as error:
            step.problems.append(f"operator op{i} could not sign in and connect ({type(error).__name__}); "
                                 f"{i} of {n} connected")
            await asyncio.gather(client.close(), *(leg.client.close() for leg in legs), return_exceptions=True)
            return step
        legs.append(Leg(f"op{i}", client, track))
    step.connect_s = round(time.monotonic() - began, 1)
    ramp_s = n / args.rate
    call_s = ramp_s + args.settle + args.window + 8
    scenario = caller_scenario(workdir, call_s, "echo_caller.xml")
    sipp_task = asyncio.create_task(asyncio.to_thread(
        run_sipp, scenario, app.sip_port, workdir, calls=n, rate=args.rate, limit=n, service="300",
        timeout=call_s + ramp_s + 60, extra=["-rtp_echo"]))
    try:
        await asyncio.gather(*(take_call(leg, timeout=ramp_s + 20) for leg in legs))
        missing = [leg.name for leg in legs if leg.connected_at is None]
        if missing:
            step.problems.append(f"{len(missing)} operators without a connected call: {missing[:5]}")
        await asyncio.sleep(args.settle)
        window = SteadyWindow(app, find_sipp(workdir))
        metrics_before = metrics_text(app)
        w0 = time.time()
        await asyncio.sleep(args.window)
        w1 = time.time()
        measured = window.stop()
        metrics_after = metrics_text(app)
        step.steady_s, step.cpu = measured["seconds"], measured["cpu"]
        step.box_cpu, step.other_load_pct = measured["box_cpu"], measured["other_load_pct"]
        step.cpu["rtc_per_leg"] = round(step.cpu.get("rtc", 0.0) / n, 2)
        lag = histogram_delta(histogram(metrics_before, "switchboard_hub_tick_lag_seconds"),
                              histogram(metrics_after, "switchboard_hub_tick_lag_seconds"))
        p95 = histogram_quantile(lag, 0.95)
        step.tick_lag_p95_ms = None if p95 is None else round(1000 * p95, 1)
        sipp: SippResult = await sipp_task
        step.sipp_successful, step.sipp_failed = sipp.successful, sipp.failed
        if sipp.failed or sipp.successful != n:
            step.problems.append(f"sipp: {sipp.successful} successful, {sipp.failed} failed of {n}")
    finally:
        if not sipp_task.done():
            await asyncio.gather(sipp_task, return_exceptions=True)
        await asyncio.sleep(1.0)  # the calls close; the recordings are written
        for leg in legs:
            await leg.client.close()
    for leg in legs:
        record = await asyncio.to_thread(_closed_record, app, leg.call) if leg.call else {}
        step.legs.append(analyse_leg(leg, record, (w0, w1)))
    step.summary = summarise(step.legs)
    unread = sorted({str(leg["recording"]) for leg in step.legs if "recording" in leg})
    if unread:
        step.problems.append(f"recordings not measured: {'; '.join(unread)[:200]}")
    return step


def _closed_record(app: ApplianceProcess, call_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    record = app.call(call_id)
    while not record.get("ended_at") and time.monotonic() < deadline:
        time.sleep(0.3)
        record = app.call(call_id)
    return record


# --- the run -------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now().astimezone()
    workers = args.workers or math.ceil(max(args.sizes) / CALLS_PER_WORKER) + 1
    root = Path(tempfile.mkdtemp(prefix="sb-bench-operators-"))
    app = ApplianceProcess(root, workers=workers, calls_per_worker=CALLS_PER_WORKER, rtc_workers=args.rtc_workers,
                           numbers={"300": "desk"}, flows_dir=FLOWS)
    report: dict[str, Any] = {
        "benchmark": "operators",
        "date": started_at.isoformat(timespec="seconds"),
        "command": "python bench/operators.py " + " ".join(args.argv),
        "machine": machine({"sipp": first_line(["sipp", "-v"]), "kamailio": first_line(["kamailio", "-v"])}),
        "code": code_version(("appliance", "sip")),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "settings": {"sizes": args.sizes, "window_s": args.window, "settle_s": args.settle, "rate_cps": args.rate,
                     "workers": workers, "rtc_workers": args.rtc_workers},
        "steps": [],
    }
    say(f"appliance: {workers} SIP workers, {args.rtc_workers} rtc worker(s) in {root}; "
        f"load average {' '.join(report['loadavg_before'])}")
    try:
        app.start(timeout=60 + 3 * workers)
        for i in range(max(args.sizes)):
            add_user(app, f"op{i}", queues="billing")
        for n in args.sizes:
            time.sleep(args.pause)
            load = Path("/proc/loadavg").read_text().split()[0]
            say(f"step {n}: {n} operators, {n} echoing callers (load average {load})")
            step = await run_step(app, n, args, root / f"step-{n}")
            step.summary["loadavg_1m_before"] = float(load)
            report["steps"].append(asdict(step))
            if not step.legs:
                say(f"  N={n}: {'; '.join(step.problems)}; the ramp stops")
                break
            say(_step_line(step))
    finally:
        stop_appliance(app, report, root, args.keep)
    report["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    return report


def _step_line(s: Step) -> str:
    m = s.summary
    return (f"  N={s.operators} loop gaps {m['loop_gap_pct']['mean']}% (max {m['loop_gap_pct']['max']}), "
            f"to caller {m['to_caller_gap_pct']['mean']}%, from caller {m['from_caller_gap_pct']['mean']}%; "
            f"accept→heard p50/p95 {m['accept_to_heard_ms']['p50']}/{m['accept_to_heard_ms']['p95']} ms, "
            f"accept→caller {m['accept_to_caller_ms']['p50']}/{m['accept_to_caller_ms']['p95']} ms; "
            f"rtt p50/p95 {m['rtt_ms']['p50']}/{m['rtt_ms']['p95']} ms ({m['rtt_ms']['samples']} of "
            f"{m['rtt_ms']['chirps_sent']} chirps), sip leg {m['sip_rtt_ms']['p50']} ms; "
            f"cpu appliance {s.cpu.get('appliance')}% of a core ({s.cpu.get('appliance_pct_of_box')}% of the box; "
            f"rtc {s.cpu.get('rtc')}%, {s.cpu.get('rtc_per_leg')}%/leg; workers {s.cpu.get('worker')}%, "
            f"main {s.cpu.get('main')}%), clients {s.cpu.get('bench_clients')}%, sipp {s.cpu.get('sipp')}%, "
            f"box busy {s.box_cpu.get('busy')}% (other {s.other_load_pct}%); tick lag p95 {s.tick_lag_p95_ms} ms"
            + (f"; PROBLEMS: {'; '.join(s.problems)}" if s.problems else ""))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/operators.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        help=f"operators (= callers) per step (default {','.join(map(str, FULL_SIZES))})")
    parser.add_argument("--window", type=float, help="seconds of steady state measured per step (default 20)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after the last accept before the window")
    parser.add_argument("--rate", type=float, default=10, help="calls started per second (default 10)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between steps (default 3)")
    parser.add_argument("--workers", type=int, help="SIP workers (default ceil(max size / 4) + 1)")
    parser.add_argument("--rtc-workers", type=int, default=1, help="WebRTC gateway processes (default 1)")
    parser.add_argument("--quick", action="store_true", help="sizes 2,5 with 6 s windows: checks the benchmark")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md (default in --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the appliance's temp dir (logs, recordings)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    args.window = args.window or (6.0 if args.quick else 20.0)
    if args.quick:
        args.no_doc = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if missing_program("bench/operators.py"):
        return 2
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    report = asyncio.run(run(args))
    save_and_print(report, "operators", "-quick" if args.quick else "", table(report))
    if not args.no_doc and report["steps"]:
        write_doc(report)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if report["steps"] and not report["steps"][0]["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
