"""The Media Streams benchmark's load: N Twilio callers in one asyncio process.

bench/media_streams.py runs this as a process of its own, so that its CPU is measured apart (as
sipp's is) and its event loop is not held up by the benchmark reading /proc. Each caller is
tests.support.media_streams as Twilio brings a call: the signed voice webhook, the stream, then
espeak-ng speech at real time for the whole call, and `stop`. It takes its plan as JSON in its
argument, prints `launched <CLOCK_MONOTONIC>` when the first call starts and, at the end, one JSON line
with every call's outcome and its own event loop's lag.

    TWILIO_AUTH_TOKEN=... python -m bench.media_streams_callers '{"box_url": ..., "calls": 8, ...}'
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import numpy as np

from appliance.core.audio import SAMPLE_RATE
from appliance.core.g711 import WIRE_RATE, mulaw_encode
from appliance.speech.resample import resample
from appliance.speech.tts import EspeakTTS
from tests.support.audio import CALLER_LINES
from tests.support.media_streams import MediaStreamCall, Twilio

__all__ = ["CallOutcome", "Plan", "caller_speech", "heard_gaps"]

FRAME_S = 0.02
# μ-law 0xFF and 0x7F decode to exact zero, so espeak-ng's pauses would reach the recording as
# all-zero frames, which is how bench.calls.inspect_recording finds a frame the hub never had.
# A phone line is never digitally silent: a noise floor this low (about -54 dBFS) keeps it so.
NOISE_FLOOR = 64
REFILL_BELOW_S = 3.0  # queue the speech again when less than this is left to send
CLOSE_WAIT_S = 20.0  # for the box to close the stream after our stop
EDGE_FRAMES = 10  # at each end of what a caller heard, the frames its span is measured from


@dataclass(frozen=True)
class Plan:
    box_url: str  # http://127.0.0.1:PORT
    public_url: str  # the https URL the webhooks are signed for
    account_sid: str
    number: str  # the Twilio number called
    calls: int
    rate: float  # calls started per second
    duration: float  # seconds from a stream's start to its stop


@dataclass
class CallOutcome:
    index: int
    call_sid: str = ""
    failure: str | None = None  # what went wrong, in the benchmark's words; None for a good call
    webhook_ms: float | None = None  # the voice webhook's answer time
    first_media_s: float | None = None  # start → the first audio from the box (answer and greeting)
    frames: int = 0  # 20 ms media messages received
    expected_frames: int = 0  # 20 ms slots from the first to the last of them
    missing: float | None = None  # share of those slots with no frame
    longest_gap_ms: float | None = None  # between two media messages in a row
    clears: int = 0
    close_code: int | None = None  # the box's close after our stop


def caller_speech(seed: int = 13) -> bytes:
    """The caller's lines (tests.support.audio) as μ-law at 8 kHz over a faint noise floor."""
    pcm = np.frombuffer(EspeakTTS().synthesize(" ".join(CALLER_LINES)), dtype=np.int16)
    wire = resample(pcm, SAMPLE_RATE, WIRE_RATE).astype(np.int32)
    noise = np.random.default_rng(seed).integers(-NOISE_FLOOR, NOISE_FLOOR + 1, len(wire))
    return mulaw_encode(np.clip(wire + noise, -32768, 32767).astype(np.int16))


def heard_gaps(arrivals: list[float]) -> tuple[int, int, float | None, float | None]:
    """(frames, 20 ms slots of wall time they span, share of those slots without a frame, longest
    gap in ms) for the arrival times of the box's media messages, one 20 ms frame each.

    The box sends a frame a tick, so frame i is due at t0 + 20 ms × (i + frames lost before it).
    A late frame is not a lost one: each end of the span is taken from the least late of the
    first and of the last EDGE_FRAMES frames, not from the first and last arrivals, whose own
    lateness (the hub's tick, either side's event loop) would read as a frame missing or not.
    """
    if not arrivals:
        return 0, 0, None, None
    received = len(arrivals)
    offsets = np.array(arrivals) - FRAME_S * np.arange(received)  # t0 plus lateness plus frames lost so far
    edge = min(EDGE_FRAMES, received)
    lost = max(0, round(float(offsets[-edge:].min() - offsets[:edge].min()) / FRAME_S))
    longest = max((b - a for a, b in zip(arrivals, arrivals[1:], strict=False)), default=0.0)
    return received, received + lost, lost / (received + lost), round(1000 * longest, 1)


async def one_call(session: aiohttp.ClientSession, twilio: Twilio, plan: Plan, index: int,
                   speech: bytes) -> CallOutcome:
    loop = asyncio.get_running_loop()
    out = CallOutcome(index)
    asked = loop.time()
    try:
        out.call_sid, twiml = await twilio.voice(session, f"+1555{index:07d}", plan.number)
    except (AssertionError, aiohttp.ClientError, ET.ParseError, TimeoutError) as exc:
        out.failure = f"webhook not answered: {str(exc)[:200]}"
        return out
    out.webhook_ms = round(1000 * (loop.time() - asked), 1)
    if twiml.stream_url is None:
        out.failure = f"webhook answered without a stream: {twiml.text[:200]}"
        return out
    try:
        stream = await MediaStreamCall.open(session, twilio.box_url, out.call_sid, plan.account_sid)
    except (aiohttp.ClientError, TimeoutError) as exc:
        out.failure = f"stream not opened: {str(exc)[:200]}"
        return out
    try:
        await stream.start(twiml.parameters)
        started = loop.time()
        stop_at = started + plan.duration
        while (left := stop_at - loop.time()) > 0 and not stream.closed.done():
            if stream.queued_s < REFILL_BELOW_S:
                stream.say(speech)
            await asyncio.wait([stream.closed], timeout=min(1.0, left))
        if stream.closed.done():
            out.failure = f"stream closed early by the box ({stream.closed.result()})"
        else:
            await stream.stop()
            try:
                out.close_code = await stream.close_code(CLOSE_WAIT_S)
            except TimeoutError:
                out.failure = f"stream not closed within {CLOSE_WAIT_S:g} s of stop"
        out.frames, out.expected_frames, out.missing, out.longest_gap_ms = heard_gaps(stream.heard_at)
        out.first_media_s = round(stream.heard_at[0] - started, 3) if stream.heard_at else None
        out.clears = len(stream.clears)
        if not stream.heard_at and out.failure is None:
            out.failure = "stream did not start: no audio from the box"
    except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
        out.failure = out.failure or f"stream broke: {str(exc)[:200]}"
    finally:
        await stream.close()
    return out


class LoopLag:
    """How late this process's own event loop wakes for a 20 ms sleep (the callers' pacing)."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + FRAME_S
            await asyncio.sleep(FRAME_S)
            self.late_ms.append(1000 * (loop.time() - due))

    async def stop(self) -> dict[str, float | None]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        values = np.array(self.late_ms) if self.late_ms else None
        return {q: None if values is None else round(float(np.percentile(values, p)), 1)
                for q, p in (("p50_ms", 50), ("p99_ms", 99), ("max_ms", 100))}


async def run(plan: Plan, auth_token: str) -> dict[str, Any]:
    speech = caller_speech()
    twilio = Twilio(plan.account_sid, auth_token, plan.public_url, plan.box_url)
    lag = LoopLag()
    # aiohttp's connector holds 100 connections by default, and every stream keeps one.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loop = asyncio.get_running_loop()
        print(f"launched {time.monotonic()}", flush=True)
        launched = loop.time()
        lag.start()
        tasks = []
        for index in range(plan.calls):
            await asyncio.sleep(max(0.0, launched + index / plan.rate - loop.time()))
            tasks.append(loop.create_task(one_call(session, twilio, plan, index, speech)))
        outcomes = await asyncio.gather(*tasks)
    return {"calls": [asdict(o) for o in outcomes], "loop_lag": await lag.stop()}


def main() -> int:
    plan = Plan(**json.loads(sys.argv[1]))
    result = asyncio.run(run(plan, os.environ["TWILIO_AUTH_TOKEN"]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
