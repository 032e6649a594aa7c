"""The persona voice-turn benchmark: how long a caller waits for the persona's answer, where the
wait goes, and how many persona calls the box holds before the wait grows past 1 s.

Starts the real appliance (tests.support.appliance) with the order desk persona (flows/orders.yaml
on number 300, its lookup_order tool on a loopback order API) and calls it with baresip. The
caller says "I would like to check my order." and "one two three four" in turn, one utterance
every 8 s, so every reply has finished before the next question. A turn's latency is measured at
the SIP side, from baresip's dumps: the end of the caller's speech in what baresip sent to the
first persona audio in what it received. The breakdown of each turn comes from the call's
recording, the appliance log and the transcripts. Writes bench/results/ and the "Persona voice
turns" section of docs/BENCHMARKS.md.

    python bench/personas.py          # 3 calls one after another, then 2, 4, 8, 12, 16 at once (~13 min)
    python bench/personas.py --quick  # 1 short call, then 2 at once: checks the benchmark (~3 min)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/personas.py` puts bench/ first, not the repo

import numpy as np

from appliance.config import PersonasConfig
from bench.common import (
    DOC,
    code_version,
    command_output,
    log_warnings,
    machine,
    process_rss_kb,
    save_results,
    say,
    wait_closed,
)
from bench.personas_plan import (
    CAPACITY_P95_S,
    FIRST_AT_S,
    FRAME_S,
    JITTER_FRAMES,
    LOUD_RMS,
    NUMBER,
    PERIOD_S,
    PHASES,
    RATE,
    SAYS,
    SPEECH_GAP_S,
)
from bench.personas_report import (
    analyse,
    latency_table,
    load_table,
    phase_table,
    write_doc,
)
from tests.support import baresip
from tests.support.appliance import ApplianceProcess
from tests.support.orders_api import OrdersApi

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- audio ----------------------------------------------------------------------------------


def wav_channel(path: Path | str, channel: int = 0) -> np.ndarray:
    """One channel of a 16 kHz WAV (baresip's dumps are converted to it first) as float samples."""
    with wave.open(str(path)) as w:
        if w.getframerate() != RATE:
            pcm = np.frombuffer(baresip.pcm16k(Path(path)), dtype=np.int16)
            return pcm.astype(np.float64)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, w.getnchannels())
    return data[:, channel].astype(np.float64)


def energy(samples: np.ndarray) -> np.ndarray:
    """RMS per 10 ms frame."""
    n = int(RATE * FRAME_S)
    k = len(samples) // n
    return np.sqrt(np.mean(samples[: k * n].reshape(k, n) ** 2, axis=1)) if k else np.zeros(0)


def sound_runs(rms: np.ndarray, min_s: float = 0.1, gap_s: float = SPEECH_GAP_S) -> list[tuple[float, float]]:
    """(start, end) in seconds of stretches of sound; quiet shorter than `gap_s` joins them."""
    loud = np.flatnonzero(rms > LOUD_RMS)
    runs: list[list[int]] = []
    for i in loud:
        if runs and i - runs[-1][1] <= gap_s / FRAME_S:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a * FRAME_S, (b + 1) * FRAME_S) for a, b in runs if (b + 1 - a) * FRAME_S >= min_s]


def onset_after(rms: np.ndarray, after_s: float, before_s: float) -> float | None:
    """First loud frame in [after_s, before_s): when sound starts again after a point."""
    a, b = max(0, round(after_s / FRAME_S)), min(len(rms), round(before_s / FRAME_S))
    loud = np.flatnonzero(rms[a:b] > LOUD_RMS)
    return (a + int(loud[0])) * FRAME_S if len(loud) else None


def loud_at(rms: np.ndarray, at_s: float, width_s: float = 0.05) -> bool:
    a, b = max(0, int((at_s - width_s) / FRAME_S)), int((at_s + width_s) / FRAME_S)
    return bool(np.any(rms[a:b] > LOUD_RMS))


def envelope_shift(a: np.ndarray, b: np.ndarray, max_s: float = 1.5) -> float:
    """Seconds by which b lags a, from the cross-correlation of their loud/quiet envelopes."""
    x, y = (a > LOUD_RMS).astype(float), (b > LOUD_RMS).astype(float)
    n = min(len(x), len(y))
    x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
    lags = range(-int(max_s / FRAME_S), int(max_s / FRAME_S) + 1)
    scores = [float(np.dot(x[max(0, -k) : n - max(0, k)], y[max(0, k) : n - max(0, -k)])) for k in lags]
    return list(lags)[int(np.argmax(scores))] * FRAME_S


def microphone(path: Path, turns: int) -> list[str]:
    """The caller's side: the two sentences in turn at FIRST_AT_S + k·PERIOD_S, silence elsewhere.

    The silence outlasts the call: baresip hangs up when its microphone file ends.
    """
    from appliance.speech.tts import EspeakTTS

    tts = EspeakTTS()
    seconds = FIRST_AT_S + turns * PERIOD_S + 15
    pcm = bytearray(int(seconds * RATE) * 2)
    said = []
    for k in range(turns):
        text = SAYS[k % len(SAYS)]
        speech = tts.synthesize(text)
        start = int((FIRST_AT_S + k * PERIOD_S) * RATE) * 2
        pcm[start : start + len(speech)] = speech
        said.append(text)
    write_microphone(path, bytes(pcm))
    return said


def write_microphone(path: Path, pcm: bytes) -> None:
    """A caller's microphone file for baresip: 16 kHz s16le mono WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)


# --- the appliance's processes ----------------------------------------------------------------


def _ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def processes(app: ApplianceProcess, callers: list[Path] = ()) -> dict[int, str]:  # type: ignore[assignment]
    """pid → role (main, sip, persona, kamailio, baresip) for the appliance and our callers."""
    assert app.process is not None
    roles = {app.process.pid: "main"}
    for pid in app.child_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        roles[pid] = ("persona" if b"appliance.personas.worker" in cmdline else "sip" if b"sip.worker" in cmdline
                      else "kamailio" if b"kamailio" in cmdline else "other")
    marks = [str(c).encode() for c in callers]
    if marks:
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline.startswith(b"baresip\0") and any(m in cmdline for m in marks):
                    roles[int(proc.name)] = "baresip"
    return roles


def box_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole box from /proc/stat; busy is all but idle and iowait."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


class Meter:
    """CPU of the appliance's processes, our callers and the rest of the box over a window, and RSS samples."""

    def __init__(self, app: ApplianceProcess, callers: list[Path] = ()):  # type: ignore[assignment]
        self.app, self.callers = app, list(callers)
        self.roles = processes(app, self.callers)
        self.before = {pid: self._safe_ticks(pid) for pid in self.roles}
        self.box_before, self.self_before = box_ticks(), _ticks(os.getpid())
        self.started = time.monotonic()
        self.rss: list[dict[str, int]] = []

    @staticmethod
    def _safe_ticks(pid: int) -> int | None:
        try:
            return _ticks(pid)
        except (OSError, ValueError):
            return None

    def sample_rss(self) -> None:
        by_role: dict[str, int] = {}
        for pid, role in processes(self.app).items():
            try:
                by_role[role] = by_role.get(role, 0) + process_rss_kb(pid)
            except OSError:
                continue
        self.rss.append(by_role)

    def stop(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        cpu: dict[str, float] = {}
        per_process: dict[str, list[float]] = {}
        for pid, role in self.roles.items():
            after, before = self._safe_ticks(pid), self.before.get(pid)
            if after is None or before is None:
                continue
            pct = 100 * (after - before) / CLK_TCK / seconds
            cpu[role] = cpu.get(role, 0.0) + pct
            per_process.setdefault(role, []).append(pct)
        busy, _ = box_ticks()
        box_busy = 100 * (busy - self.box_before[0]) / CLK_TCK / seconds
        bench = 100 * (_ticks(os.getpid()) - self.self_before) / CLK_TCK / seconds
        ours = sum(cpu.values()) + bench
        rss = {role: int(np.median([s.get(role, 0) for s in self.rss])) for role in {r for s in self.rss for r in s}}
        return {
            "seconds": round(seconds, 1),
            "cpu_pct": {role: round(v, 1) for role, v in sorted(cpu.items())},
            "cpu_pct_max_process": {role: round(max(v), 1) for role, v in sorted(per_process.items())},
            "bench_pct": round(bench, 1),
            "box_busy_pct": round(box_busy, 1),
            "other_load_pct": round(box_busy - ours, 1),
            "rss_kb": rss,
        }


def other_load(app: ApplianceProcess | None, seconds: float = 3.0) -> float:
    """% of a core the box spends on work that is neither the appliance nor this benchmark."""
    roles = processes(app) if app is not None else {}
    ours = {pid: Meter._safe_ticks(pid) for pid in [*roles, os.getpid()]}
    busy0, _ = box_ticks()
    started = time.monotonic()
    time.sleep(seconds)
    busy1, _ = box_ticks()
    elapsed = time.monotonic() - started  # longer than asked when the box is overloaded
    mine = sum((Meter._safe_ticks(pid) or 0) - (t or 0) for pid, t in ours.items() if t is not None)
    return round(100 * (busy1 - busy0 - mine) / CLK_TCK / elapsed, 1)


def wait_quiet(app: ApplianceProcess, limit: float, longest: float) -> float:
    """Wait (up to `longest` s) until other work on the box is below `limit` % of a core; the last reading."""
    deadline = time.monotonic() + longest
    load = other_load(app)
    while load > limit and time.monotonic() < deadline:
        say(f"  other work on the box: {load}% of a core; waiting for it to drop below {limit}%")
        time.sleep(5)
        load = other_load(app)
    return load


# --- one call ---------------------------------------------------------------------------------


@dataclass
class Turn:
    call: str
    index: int
    said: str
    sent_end_s: float  # end of the caller's speech in baresip's sent dump (s from its start)
    latency_s: float | None = None  # SIP side: sent speech end → first reply sound in the heard dump
    hub_latency_s: float | None = None  # the recording: caller speech end (left) → reply sound (right)
    inbound_s: float | None = None  # wire → hub: speech end in sent → in the recording's left channel
    vad_s: float | None = None  # recording speech end → the "caller state listening" log line
    stt_s: float | None = None  # listening → the caller transcript row's `at`
    commit_s: float | None = None  # transcript → the "persona state thinking" log line
    reply_s: float | None = None  # thinking → first reply sound in the recording (LLM, tool, TTS, hub)
    outbound_s: float | None = None  # hub → wire: reply sound in the recording → in the heard dump
    end_wall: float | None = None  # the caller's speech end on the wall clock (baresip's anchor)
    other_session_starting: bool = False  # another call's persona started on the same worker meanwhile
    other_session_ending: bool = False  # another call on the same worker hung up up to 3 s before or meanwhile
    heard_as: str = ""  # what pocketsphinx made of it
    reply: str = ""
    tool: bool = False
    problem: str = ""


@dataclass
class CallRun:
    index: int
    workdir: Path
    said: list[str]
    seconds: float
    established_wall: float | None = None
    result: baresip.BaresipCall | None = None


def place_call(app: ApplianceProcess, run: CallRun, delay_s: float) -> None:
    """One baresip caller; notes the wall-clock time it printed "Call established"."""
    time.sleep(delay_s)
    out: dict[str, baresip.BaresipCall] = {}
    caller = threading.Thread(target=lambda: out.update(call=baresip.call(
        f"sip:{NUMBER}@127.0.0.1:{app.sip_port}", run.workdir / "microphone.wav", run.workdir, seconds=run.seconds,
        jitter_frames=JITTER_FRAMES)))
    caller.start()
    log, offset = run.workdir / "baresip.log", 0
    while caller.is_alive() and run.established_wall is None:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            if b"Call established" in chunk:
                run.established_wall = time.time()
            offset += max(0, len(chunk) - 40)  # the marker may straddle two reads
        except OSError:
            pass
        time.sleep(0.005)
    caller.join()
    run.result = out.get("call")


def _wall(iso: str) -> float:
    when = dt.datetime.fromisoformat(iso)
    return when.timestamp()  # the log's naive local times and the records' UTC times alike


def session_log(app: ApplianceProcess) -> dict[str, list[tuple[float, str, str]]]:
    """call id → [(wall time, message, state)] of the persona sessions' start and state lines."""
    out: dict[str, list[tuple[float, str, str]]] = {}
    for line in app.log_path.read_text(errors="replace").splitlines():
        if '"appliance.personas.' not in line and '"call ended"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (entry.get("msg") in ("caller state", "persona state", "persona job started", "call ended")
                and entry.get("call_id")):
            out.setdefault(entry["call_id"], []).append((_wall(entry["ts"]), entry["msg"], entry.get("state", "")))
    return out


def analyse_call(run: CallRun, record: dict[str, Any],
                 states: list[tuple[float, str, str]]) -> tuple[list[Turn], dict[str, Any]]:
    result = run.result
    info: dict[str, Any] = {"call_id": record["id"], "end_reason": record.get("end_reason"), "problems": []}
    if result is None or not result.established or result.sent is None or result.heard is None:
        info["problems"].append("baresip did not establish the call or wrote no dumps")
        return [], info
    sent, heard = wav_channel(result.sent), wav_channel(result.heard)
    # Both dumps end at the hang-up; the heard one starts later by baresip's jitter buffer
    # (its first frames are written when the buffer first gives them out), so align the ends.
    shift = len(sent) / RATE - len(heard) / RATE
    info.update(codec=result.codec, heard_dump_shift_s=round(shift, 3))
    sent_rms, heard_rms = energy(sent), energy(heard)
    heard_rms = np.concatenate([np.zeros(max(0, round(shift / FRAME_S))), heard_rms])

    with wave.open(record["recording_path"]) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2).astype(np.float64)
    left_rms, right_rms = energy(stereo[:, 0]), energy(stereo[:, 1])
    recording_wall = _wall(record["answered_at"])  # the recorder joins the room when the call is answered
    # Caller speech in the recording lags the sent dump by the inbound path (and the dumps'
    # start offset); found once per call from the envelopes, then refined turn by turn.
    lag = envelope_shift(sent_rms, left_rms)
    info["recording_lag_s"] = round(lag, 3)
    anchor = run.established_wall
    info["established_minus_answered_s"] = None if anchor is None else round(anchor - recording_wall, 3)

    utterances = [r for r in sound_runs(sent_rms, min_s=0.3)]
    if len(utterances) != len(run.said):
        info["problems"].append(f"{len(utterances)} utterances in the sent dump, {len(run.said)} in the script")
    left_runs = sound_runs(left_rms, min_s=0.3)
    transcript = record.get("transcript", [])
    tools = [_wall(e["at"]) for e in record.get("events", []) if e["kind"] == "tool"]
    turns: list[Turn] = []
    for i, (_start, end) in enumerate(utterances):
        turn = Turn(call=record["id"], index=i, said=run.said[i] if i < len(run.said) else "?",
                    sent_end_s=round(end, 3))
        turns.append(turn)
        until = utterances[i + 1][0] if i + 1 < len(utterances) else len(sent_rms) * FRAME_S
        if loud_at(heard_rms, end):
            turn.problem = "the persona was still talking when the caller stopped"
            continue
        heard_at = onset_after(heard_rms, end, until)
        if heard_at is None:
            turn.problem = "no reply before the next utterance"
            continue
        turn.latency_s = round(heard_at - end, 3)

        # The same turn in the recording: the caller's speech ending near end + lag.
        near = [r for r in left_runs if abs(r[1] - (end + lag)) < 0.3]
        if not near:
            turn.problem = "caller speech not found in the recording"
            continue
        left_end = min(near, key=lambda r: abs(r[1] - (end + lag)))[1]
        right_at = onset_after(right_rms, left_end, left_end + (until - end))
        if right_at is None:
            turn.problem = "no reply in the recording"
            continue
        turn.hub_latency_s = round(right_at - left_end, 3)
        left_wall, right_wall = recording_wall + left_end, recording_wall + right_at
        if anchor is not None:
            turn.end_wall = round(anchor + end, 3)
            turn.inbound_s = round(left_wall - (anchor + end), 3)
            turn.outbound_s = round((anchor + heard_at) - right_wall, 3)

        next_wall = left_wall + (until - end)
        said = [t for t in transcript if t["role"] == "caller" and left_wall - 0.1 < _wall(t["at"]) < next_wall]
        if not said:
            turn.problem = "no caller transcript"
            continue
        if len(said) > 1:
            turn.problem = f"the caller's turn was heard as {len(said)} turns"
        stt_wall = _wall(said[0]["at"])
        turn.heard_as = said[0]["text"]
        replies = [t for t in transcript if t["role"] == "persona" and stt_wall <= _wall(t["at"]) < next_wall + 6]
        turn.reply = replies[0]["text"] if replies else ""
        turn.tool = any(stt_wall <= at < next_wall for at in tools)
        listening = [at for at, msg, state in states if msg == "caller state" and state == "listening"
                     and left_wall - 0.2 < at <= stt_wall + 0.05]
        thinking = [at for at, msg, state in states if msg == "persona state" and state == "thinking"
                    and stt_wall - 0.05 <= at < right_wall + 0.05]
        if listening:
            turn.vad_s = round(listening[-1] - left_wall, 3)
            turn.stt_s = round(stt_wall - listening[-1], 3)
        if thinking:
            turn.commit_s = round(thinking[0] - stt_wall, 3)
            turn.reply_s = round(right_wall - thinking[0], 3)
    return turns, info


# --- a step: N calls at once ----------------------------------------------------------------------


@dataclass
class Step:
    concurrent: int
    calls: int
    turns_per_call: int
    passed: bool = False
    problems: list[str] = field(default_factory=list)
    other_load_before_pct: float | None = None
    latency: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, Any] = field(default_factory=dict)
    meter: dict[str, Any] = field(default_factory=dict)
    session_start: dict[str, Any] = field(default_factory=dict)  # "persona job started" → first "persona state"
    persona_rss_mb_before: float | None = None  # between steps: what earlier sessions left behind
    persona_rss_mb_per_session: float | None = None
    call_info: list[dict[str, Any]] = field(default_factory=list)
    discarded_rounds: list[dict[str, Any]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    a = np.array(values) * 1000
    return {"n": len(values),
            "p50_ms": round(float(np.percentile(a, 50))), "p95_ms": round(float(np.percentile(a, 95))),
            "mean_ms": round(float(a.mean())), "min_ms": round(float(a.min())), "max_ms": round(float(a.max()))}




def summarise(step: Step, turns: list[Turn]) -> None:
    ok = [t for t in turns if t.latency_s is not None]
    step.latency = stats([t.latency_s for t in ok])  # type: ignore[misc]
    step.latency["hub"] = stats([t.hub_latency_s for t in ok if t.hub_latency_s is not None])
    step.latency["turns"] = len(turns)
    step.latency["unanswered_or_skipped"] = len(turns) - len(ok)
    step.latency["by_kind"] = {
        "tool (lookup_order)": stats([t.latency_s for t in ok if t.tool]),  # type: ignore[misc]
        "no tool": stats([t.latency_s for t in ok if not t.tool]),  # type: ignore[misc]
    }
    step.latency["while_another_session_started"] = stats([t.latency_s for t in ok if t.other_session_starting])  # type: ignore[misc]
    step.latency["while_another_session_ended"] = stats([t.latency_s for t in ok if t.other_session_ending])  # type: ignore[misc]
    step.latency["with_no_session_starting_or_ending"] = stats(
        [t.latency_s for t in ok if not t.other_session_starting and not t.other_session_ending])  # type: ignore[misc]
    step.latency["by_turn_in_call"] = {
        "first": stats([t.latency_s for t in ok if t.index == 0]),  # type: ignore[misc]
        "later": stats([t.latency_s for t in ok if t.index > 0]),  # type: ignore[misc]
    }
    full = [t for t in ok if all(getattr(t, p) is not None for p in PHASES)]
    step.phases = {p: stats([getattr(t, p) for t in full]) for p in PHASES}
    step.phases["transport_both_ways_s"] = stats([t.latency_s - t.hub_latency_s for t in full])  # type: ignore[operator]
    step.phases["speech_end_to_transcript_s"] = stats([t.vad_s + t.stt_s for t in full])  # type: ignore[operator]
    step.phases["reply_tool_s"] = stats([t.reply_s for t in full if t.tool])  # type: ignore[misc]
    step.phases["reply_no_tool_s"] = stats([t.reply_s for t in full if not t.tool])  # type: ignore[misc]
    step.phases["turns_with_every_phase"] = len(full)
    step.turns = [asdict(t) for t in turns]


def run_step(app: ApplianceProcess, concurrent: int, calls: int, turns: int, workdir: Path,
             seen: set[str], args: argparse.Namespace) -> Step:
    """`calls` calls of `turns` turns, `concurrent` at a time, their starts spread over one period.

    A round of calls during which other work on the box took more than --quiet is run again,
    while the run's --retries last; the discarded round is kept in the step's record.
    """
    step = Step(concurrent=concurrent, calls=calls, turns_per_call=turns)
    step.other_load_before_pct = wait_quiet(app, args.quiet, args.quiet_wait)
    before = Meter(app)
    before.sample_rss()
    step.persona_rss_mb_before = round(before.stop()["rss_kb"].get("persona", 0) / 1024, 1)
    seconds = FIRST_AT_S + turns * PERIOD_S
    all_turns: list[Turn] = []
    meters = []
    states: dict[str, list[tuple[float, str, str]]] = {}
    first_rss_kb = None  # the first round's: later rounds of the step reuse what it left behind
    for first in range(0, calls, concurrent):
        for attempt in range(1, 100):
            runs = []
            for k in range(first, min(calls, first + concurrent)):
                run_dir = workdir / f"call{k + 1}-{attempt}"
                run_dir.mkdir(parents=True)
                runs.append(CallRun(k, run_dir, microphone(run_dir / "microphone.wav", turns), seconds))
            meter = place_calls(app, runs, seconds)
            first_rss_kb = first_rss_kb or meter["rss_kb"].get("persona")
            records = wait_closed(app, seen, len(runs), timeout=40)
            seen.update(r["id"] for r in records)
            if meter["other_load_pct"] > args.quiet and args.retries > 0:
                args.retries -= 1
                step.discarded_rounds.append({"calls": [r.index + 1 for r in runs], "meter": meter})
                say(f"  other work took {meter['other_load_pct']}% of a core during calls "
                     f"{[r.index + 1 for r in runs]}: running them again ({args.retries} retries left)")
                wait_quiet(app, args.quiet, args.quiet_wait)
                continue
            break
        meters.append(meter)
        states = session_log(app)
        for run in runs:
            record = match_record(records, run)
            if record is None:
                step.problems.append(f"call {run.index + 1}: no call record")
                continue
            detail = app.call(record["id"])
            turns_, info = analyse_call(run, detail, states.get(record["id"], []))
            info["persona_worker"] = next((e["data"].get("worker") for e in detail["events"]
                                           if e["kind"] == "persona_started"), None)
            step.call_info.append(info)
            step.problems.extend(f"call {run.index + 1}: {p}" for p in info["problems"])
            all_turns.extend(turns_)
    step.session_start = stats(mark_neighbours(all_turns, step.call_info, states))
    step.meter = merge_meters(meters)
    if first_rss_kb and step.persona_rss_mb_before is not None:
        step.persona_rss_mb_per_session = round((first_rss_kb / 1024 - step.persona_rss_mb_before) / concurrent, 1)
    summarise(step, all_turns)
    p95 = step.latency.get("p95_ms")
    if p95 is None:
        step.problems.append("no turn was answered")
    elif p95 > CAPACITY_P95_S * 1000:
        step.problems.append(f"turn latency p95 {p95} ms > {CAPACITY_P95_S * 1000:.0f} ms")
    if step.latency["unanswered_or_skipped"]:
        step.problems.append(f"{step.latency['unanswered_or_skipped']} of {len(all_turns)} turns not measured "
                             f"({', '.join(sorted({t.problem for t in all_turns if t.latency_s is None}))})")
    step.passed = p95 is not None and p95 <= CAPACITY_P95_S * 1000
    return step


def place_calls(app: ApplianceProcess, runs: list[CallRun], seconds: float) -> dict[str, Any]:
    """Run one round of callers, their starts spread over one period; the load while all talk."""
    spread = PERIOD_S / len(runs)
    threads = [threading.Thread(target=place_call, args=(app, r, j * spread)) for j, r in enumerate(runs)]
    for t in threads:
        t.start()
    # Steady state: every call in and talking, until the first caller hangs up.
    time.sleep(spread * (len(runs) - 1) + FIRST_AT_S)
    meter = Meter(app, [r.workdir for r in runs])
    window_end = time.monotonic() + seconds - FIRST_AT_S - spread * (len(runs) - 1) - 2
    while time.monotonic() < window_end:
        meter.sample_rss()
        time.sleep(1.0)
    result = meter.stop()
    for t in threads:
        t.join()
    return result


def mark_neighbours(turns: list[Turn], calls: list[dict[str, Any]],
                    states: dict[str, list[tuple[float, str, str]]]) -> list[float]:
    """Flag turns during which another call's persona started or was released on the same worker;
    returns how long each session took to start.

    A session's start (persona file, agent, livekit's provider prewarm, which loads the
    pocketsphinx decoder) runs from "persona job started" to its first "persona state" line;
    its release follows the call's "call ended".
    """
    worker = {c["call_id"]: c.get("persona_worker") for c in calls}
    starting: dict[str, tuple[float, float]] = {}
    ended: dict[str, float] = {}
    for call_id, lines in states.items():
        began = [at for at, msg, _ in lines if msg == "persona job started"]
        ready = [at for at, msg, _ in lines if msg == "persona state"]
        if began and ready:
            starting[call_id] = (began[0], ready[0])
        for at, msg, _ in lines:
            if msg == "call ended":
                ended[call_id] = at
    for t in turns:
        if t.end_wall is None or t.latency_s is None:
            continue
        same = [other for other in worker if other != t.call and worker[other] == worker.get(t.call)]
        until = t.end_wall + t.latency_s
        t.other_session_starting = any(o in starting and starting[o][0] < until and starting[o][1] > t.end_wall - 0.5
                                       for o in same)
        # A release is felt for as long as livekit takes to close the session (seconds, see the docs).
        t.other_session_ending = any(o in ended and t.end_wall - 3.0 < ended[o] < until for o in same)
    return [b - a for call_id, (a, b) in starting.items() if call_id in worker]


def merge_meters(meters: list[dict[str, Any]]) -> dict[str, Any]:
    """Several windows (one per round of calls) as one: time-weighted CPU, median RSS."""
    total = sum(m["seconds"] for m in meters) or 1.0

    def weighted(key: str) -> dict[str, float]:
        roles = {r for m in meters for r in m[key]}
        return {r: round(sum(m[key].get(r, 0.0) * m["seconds"] for m in meters) / total, 1) for r in sorted(roles)}

    return {
        "seconds": round(total, 1),
        "cpu_pct": weighted("cpu_pct"),
        "cpu_pct_max_process": {r: max(m["cpu_pct_max_process"].get(r, 0.0) for m in meters)
                                for r in {r for m in meters for r in m["cpu_pct_max_process"]}},
        "bench_pct": round(sum(m["bench_pct"] * m["seconds"] for m in meters) / total, 1),
        "box_busy_pct": round(sum(m["box_busy_pct"] * m["seconds"] for m in meters) / total, 1),
        "other_load_pct": round(sum(m["other_load_pct"] * m["seconds"] for m in meters) / total, 1),
        "rss_kb": {r: int(np.median([m["rss_kb"].get(r, 0) for m in meters]))
                   for r in {r for m in meters for r in m["rss_kb"]}},
    }


def match_record(records: list[dict[str, Any]], run: CallRun) -> dict[str, Any] | None:
    """The call record answered closest to when this caller saw the call established."""
    if run.established_wall is None or not records:
        return None
    answered = [r for r in records if r.get("answered_at")]
    best = min(answered, key=lambda r: abs(_wall(r["answered_at"]) - run.established_wall), default=None)
    return best if best is not None and abs(_wall(best["answered_at"]) - run.established_wall) < 2 else None


# --- the parts, offline -------------------------------------------------------------------------


def offline_parts() -> dict[str, Any]:
    """The providers timed alone in this process, on this box: what each costs per turn."""
    from livekit.agents import llm

    from appliance.flow.loader import load_personas
    from appliance.personas.persona import grammar_for_persona
    from appliance.personas.plugins.llm_scripted import ScriptedLLM
    from appliance.speech.stt import decoder_for
    from appliance.speech.tts import EspeakTTS

    persona = load_personas(ROOT / "flows" / "personas")["orders"]
    out: dict[str, Any] = {}
    t = time.perf_counter()
    decoder = decoder_for(grammar_for_persona(persona))
    out["stt_decoder_load_ms"] = round(1000 * (time.perf_counter() - t))
    tts = EspeakTTS()
    decode: dict[str, float] = {}
    for text in SAYS:
        # As the STT stream cuts it: 0.1 s before the first voiced frame and after the last.
        pcm = bytes(int(0.1 * RATE) * 2) + tts.synthesize(text) + bytes(int(0.1 * RATE) * 2)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            decoder.hyp()
            times.append(time.perf_counter() - t)
        decode[text] = round(1000 * float(np.median(times)), 1)
    out["stt_decode_ms"] = decode
    renders: dict[str, Any] = {}
    render = type(tts)._cached.__wrapped__  # the uncached render: what a new reply costs
    for text in ("Sure.", "Order 1234 is shipped.", "Sure. What is your order number?"):
        t = time.perf_counter()
        pcm = render(tts, text, tts.default_voice)
        cold = time.perf_counter() - t
        lead = onset_after(energy(np.frombuffer(pcm, dtype=np.int16).astype(np.float64)), 0, 5) or 0.0
        renders[text] = {"render_ms": round(1000 * cold, 1), "audio_s": round(len(pcm) / 2 / RATE, 2),
                         "leading_silence_ms": round(1000 * lead)}
    out["tts_render"] = renders
    scripted = ScriptedLLM(persona.scripted.model_dump() if persona.scripted else {})
    timings = []
    for text in ("i would like to check my order", "one two three four"):
        ctx = llm.ChatContext()
        ctx.add_message(role="user", content=text)
        t = time.perf_counter()
        for _ in range(100):
            scripted.respond(ctx, {"lookup_order", "escalate", "end_call", "handoff"})
        timings.append((time.perf_counter() - t) / 100)
    out["llm_scripted_ms"] = round(1000 * max(timings), 3)
    out["vad"] = vad_cost()
    return out


def vad_cost() -> dict[str, Any]:
    """silero's inference per window as livekit reports it, over 10 s of speech and silence."""
    from livekit import rtc
    from livekit.agents import vad as lk_vad
    from livekit.plugins import silero

    from appliance.speech.tts import EspeakTTS

    async def measure() -> dict[str, Any]:
        model = silero.VAD.load(min_silence_duration=0.35)
        stream = model.stream()
        speech = EspeakTTS().synthesize(SAYS[0])
        pcm = (bytes(RATE) + speech + bytes(2 * RATE)) * 2
        durations: list[float] = []

        async def read() -> None:
            async for event in stream:
                if event.type == lk_vad.VADEventType.INFERENCE_DONE:
                    durations.append(event.inference_duration)

        reader = asyncio.create_task(read())
        t = time.perf_counter()
        for i in range(0, len(pcm) - 640, 640):
            stream.push_frame(rtc.AudioFrame(data=pcm[i : i + 640], sample_rate=RATE, num_channels=1,
                                             samples_per_channel=320))
        stream.end_input()
        await reader
        wall = time.perf_counter() - t
        audio_s = len(pcm) / 2 / RATE
        return {"windows": len(durations), "inference_ms_median": round(1000 * float(np.median(durations)), 2),
                "cpu_pct_of_a_core_per_stream": round(100 * wall / audio_s, 1)}

    return asyncio.run(measure())


# --- the run --------------------------------------------------------------------------------------


def _baresip_version() -> str:
    version = re.search(r"baresip v([\d.]+)", command_output(["baresip", "-h"]))
    return version.group(1) if version else "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/personas.py " + " ".join(args.argv),
        "machine": machine({"baresip": _baresip_version()}),
        "code": code_version(("appliance", "sip", "flows")),
        "settings": {
            "persona_workers": args.persona_workers, "sessions_per_worker": args.sessions_per_worker,
            "endpointing_s": args.endpointing, "sip_workers": args.sip_workers, "period_s": PERIOD_S,
            "sequential_calls": args.calls, "turns_sequential": args.turns, "turns_concurrent": args.turns_concurrent,
            "steps": args.steps, "says": list(SAYS), "retries": args.retries, "quiet_pct": args.quiet,
        },
        "steps": [],
    }
    say("timing the providers alone")
    report["offline"] = offline_parts()
    say(f"  {json.dumps(report['offline'])}")
    root = Path(tempfile.mkdtemp(prefix="sb-bench-personas-"))
    with OrdersApi().http.in_thread() as api:
        flows = root / "flows"
        shutil.copytree(ROOT / "flows", flows)
        persona = flows / "personas" / "orders.yaml"
        persona.write_text(persona.read_text().replace("http://127.0.0.1:8765/", f"http://127.0.0.1:{api.port}/"))
        (root / "appliance").mkdir()
        app = ApplianceProcess(
            root / "appliance", workers=args.sip_workers, calls_per_worker=4, numbers={NUMBER: "orders"},
            flows_dir=flows,
            extra={"webhooks": {"allowed": [f"http://127.0.0.1:{api.port}/", "http://127.0.0.1:8765/"]},
                   "personas": {"workers": args.persona_workers, "sessions_per_worker": args.sessions_per_worker,
                                "endpointing_s": args.endpointing}},
        )
        try:
            say(f"starting the appliance in {root}")
            app.start(timeout=60)
            time.sleep(2)
            idle = Meter(app)
            for _ in range(5):
                idle.sample_rss()
                time.sleep(1)
            report["idle"] = idle.stop()
            idle_persona = report["idle"]["rss_kb"].get("persona", 0)
            say(f"idle: persona workers {idle_persona / 1024:.0f} MB RSS, "
                f"box other load {report['idle']['other_load_pct']}%")
            seen: set[str] = set()
            for n in args.steps:
                calls, turns = (args.calls, args.turns) if n == 1 else (n, args.turns_concurrent)
                say(f"step: {calls} call(s) of {turns} turns, {n} at a time")
                step = run_step(app, n, calls, turns, root / f"step{n}", seen, args)
                say(step_line(step))
                report["steps"].append(asdict(step))
                p95, missing = step.latency.get("p95_ms"), step.latency.get("unanswered_or_skipped", 0)
                too_slow = p95 is None or p95 > 2000 * CAPACITY_P95_S or missing > 0.2 * step.latency["turns"]
                if not args.all_steps and n > 1 and too_slow:
                    break
            rss = Meter(app)
            rss.sample_rss()
            report["after_rss_kb"] = rss.stop()["rss_kb"]
            report["persona_sessions"] = sum(s["calls"] + sum(len(d["calls"]) for d in s["discarded_rounds"])
                                             for s in report["steps"])
            report["speaking_state_lines"] = sum(
                1 for states in session_log(app).values() for _, msg, state in states
                if msg == "persona state" and state == "speaking")
        finally:
            app.stop()
            report["log_warnings"] = log_warnings(app.log_path)
            if args.keep:
                report["workdir"] = str(root)
            else:
                shutil.rmtree(root, ignore_errors=True)
    # The largest step that, with every smaller step, kept turn latency p95 within the limit.
    capacity = 0
    for step in sorted(report["steps"], key=lambda s: s["concurrent"]):
        if not step["passed"]:
            break
        capacity = step["concurrent"]
    report["capacity_concurrent_calls"] = capacity
    # The same, counting only turns with no other session starting or ending on their worker.
    capacity = 0
    for step in sorted(report["steps"], key=lambda s: s["concurrent"]):
        if step["latency"].get("with_no_session_starting_or_ending", {}).get("p95_ms", 10**6) > CAPACITY_P95_S * 1000:
            break
        capacity = step["concurrent"]
    report["capacity_without_neighbour_sessions"] = capacity
    return report


def step_line(s: Step) -> str:
    lat, ph, m = s.latency, s.phases, s.meter
    return (f"  N={s.concurrent} {'PASS' if s.passed else 'FAIL'} turns={lat.get('n')}/{lat.get('turns')} "
            f"latency p50={lat.get('p50_ms')} p95={lat.get('p95_ms')} max={lat.get('max_ms')} ms "
            f"(hub-side p50={lat['hub'].get('p50_ms')}); "
            f"vad p50={ph['vad_s'].get('p50_ms')} stt p50={ph['stt_s'].get('p50_ms')} "
            f"reply p50={ph['reply_s'].get('p50_ms')} transport p50={ph['transport_both_ways_s'].get('p50_ms')} ms; "
            f"cpu persona={m['cpu_pct'].get('persona')}% sip={m['cpu_pct'].get('sip')}% "
            f"main={m['cpu_pct'].get('main')}% "
            f"baresip={m['cpu_pct'].get('baresip')}% box={m['box_busy_pct']}% other={m['other_load_pct']}%; "
            f"persona RSS/session={s.persona_rss_mb_per_session} MB; {'; '.join(s.problems)[:300]}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/personas.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        help="concurrent calls per step, comma-separated (default 1,2,4,8,12,16)")
    parser.add_argument("--calls", type=int, help="calls one after another in the step of 1 (default 3)")
    parser.add_argument("--turns", type=int, help="turns per call in the step of 1 (default 10)")
    parser.add_argument("--turns-concurrent", type=int, help="turns per call in the later steps (default 7)")
    parser.add_argument("--endpointing", type=float, default=PersonasConfig().endpointing_s,
                        help=f"personas.endpointing_s (default {PersonasConfig().endpointing_s:g}, the appliance's)")
    parser.add_argument("--quick", action="store_true", help="1 call of 4 turns, then 2 at once: checks the benchmark")
    parser.add_argument("--all-steps", action="store_true",
                        help="keep ramping after a step fails (by default the ramp goes on past a step that only "
                             f"misses p95 {CAPACITY_P95_S:g} s, and stops at p95 > {2 * CAPACITY_P95_S:g} s "
                             "or unanswered turns)")
    parser.add_argument("--report", type=Path, help="only re-render docs/BENCHMARKS.md from this results file")
    add_run_options(parser)
    parser.add_argument("--retries", type=int,
                        help="rounds of calls run again, over the whole run, because other work on the box took more "
                             "than --quiet during them (default 2; 0 with --quick)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.steps = args.steps or ([1, 2] if args.quick else [1, 2, 4, 8, 12, 16])
    args.calls = args.calls or (1 if args.quick else 3)
    args.turns = args.turns or (4 if args.quick else 10)
    args.turns_concurrent = args.turns_concurrent or (4 if args.quick else 7)
    args.retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    check_run_options(parser, args)
    return args


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of a persona benchmark's box and run (shared with bench/persona_turns.py)."""
    parser.add_argument("--persona-workers", type=int, default=2)
    parser.add_argument("--sessions-per-worker", type=int, default=8)
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md (default in --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (appliance log, recordings, dumps)")
    parser.add_argument("--tag", default="", help="suffix of the results file, for experiments (implies --no-doc)")
    parser.add_argument("--quiet", type=float, default=30,
                        help="before a step, wait until other work on the box is below this %% of a core (default 30)")
    parser.add_argument("--quiet-wait", type=float, default=30, help="longest wait for a quiet box, s (default 30)")


def check_run_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """SIP workers for the largest step, enough persona sessions for it, no doc from a check or an experiment."""
    args.sip_workers = max(1, -(-max(args.steps) // 4))
    if max(args.steps) > args.persona_workers * args.sessions_per_worker:
        parser.error(f"step {max(args.steps)} needs more persona sessions than "
                     f"{args.persona_workers} workers × {args.sessions_per_worker}")
    if args.quick or args.tag:
        args.no_doc = True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        report = json.loads(args.report.read_text())
        report["analysis"] = analyse(report)
        args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_doc(report, report["analysis"])
        print(report["analysis"])
        return 0
    for program in ("baresip", "kamailio", "sox", "espeak-ng"):
        if shutil.which(program) is None:
            print(f"bench/personas.py needs {program} (scripts/test.sh installs it)", file=sys.stderr)
            return 2
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    report = run(args)
    report["analysis"] = analysis = analyse(report)
    path = save_results(report, "personas", f"{'-quick' if args.quick else ''}{'-' + args.tag if args.tag else ''}")
    print()
    print(latency_table(report))
    print()
    print(phase_table(report))
    print()
    print(load_table(report))
    print()
    print(analysis)
    print(f"raw results: {path}")
    if not args.no_doc:
        write_doc(report, analysis)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if report["steps"] and report["steps"][0]["latency"].get("n") else 1


if __name__ == "__main__":
    sys.exit(main())
