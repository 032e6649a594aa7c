"""Audio between a browser's WebRTC tracks and the hub's 20 ms frames, converted once each way.

Inbound, aiortc's decoded frames (Opus: 48 kHz stereo, PCMU: 8 kHz mono) become the box's
16 kHz mono frames through one resampler per session. Outbound, a track hands aiortc the
hub's frames at 16 kHz mono on its own 20 ms clock; aiortc's encoders resample from there.
"""

from __future__ import annotations

import asyncio
import fractions
from collections import deque
from collections.abc import AsyncIterator

import numpy as np
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, AudioResampler

from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE, SAMPLES_PER_FRAME, SILENCE, StandingDelay

__all__ = ["OUTBOUND_FRAMES", "HubAudioTrack", "InboundAudio", "PacedAudioTrack", "frames_from",
           "shorten_jitter_buffer"]

# The hub's frames a browser leg may have waiting: 200 ms, as the hub's own jitter bound for a
# caller (rooms.server.CALLER_JITTER_FRAMES). The oldest go first, so latency cannot grow.
OUTBOUND_FRAMES = 10
# What may stand queued for good: a frame of jitter between the hub's clock and the track's.
LATENCY_FRAMES = 1
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class InboundAudio:
    """A session's decoded browser audio in, exact 16 kHz mono s16le 20 ms frames out."""

    def __init__(self) -> None:
        self._resampler: AudioResampler | None = None
        self._source: tuple[str, str, int] | None = None
        self._pending = b""

    def convert(self, frame: AudioFrame) -> list[bytes]:
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if source != self._source:
            # A resampler takes one input format for life (PyAV raises on another); a browser
            # may switch between the negotiated codecs mid-session, so start a new one then.
            self._resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            self._source = source
        assert self._resampler is not None
        pcm = self._pending + b"".join(out.to_ndarray().tobytes() for out in self._resampler.resample(frame))
        whole = len(pcm) - len(pcm) % FRAME_BYTES
        self._pending = pcm[whole:]
        return [pcm[i : i + FRAME_BYTES] for i in range(0, whole, FRAME_BYTES)]


async def frames_from(track: MediaStreamTrack) -> AsyncIterator[bytes]:
    """A remote audio track's audio as the box's 20 ms frames, until the track ends."""
    inbound = InboundAudio()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if isinstance(frame, AudioFrame):
            for pcm in inbound.convert(frame):
                yield pcm


# aiortc's audio receiver holds 4 frames after the one it completes (a frame is complete when
# the next packet arrives): 100 ms before decoding, on every browser's audio. A LAN needs one.
RECEIVE_PREFETCH = 1
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"  # aiortc's attribute (1.9 to 1.16); no public setting


def shorten_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Give an audio receiver a jitter buffer of RECEIVE_PREFETCH frames; False if aiortc changed inside.

    Measured with bench/operators.py (aiortc 1.16): the WebRTC leg's round trip was about 300 ms."""
    current = getattr(receiver, _JITTER_BUFFER, None)
    if receiver.track.kind != "audio" or not isinstance(current, JitterBuffer):
        return False
    setattr(receiver, _JITTER_BUFFER, JitterBuffer(capacity=current.capacity, prefetch=RECEIVE_PREFETCH))
    return True


class PacedAudioTrack(MediaStreamTrack):
    """A 16 kHz mono track that gives aiortc one 20 ms frame every 20 ms of its own clock.

    Paced as aiortc's AudioStreamTrack is (pts counted in samples), on the event loop's
    monotonic clock rather than wall time, so a clock step cannot stall or rush it.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    def next_frame(self) -> bytes:
        """The PCM of the next 20 ms (FRAME_BYTES); silence here."""
        return SILENCE

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += SAMPLES_PER_FRAME
            await asyncio.sleep(self._start + self._pts / SAMPLE_RATE - loop.time())
        samples = np.frombuffer(self.next_frame(), dtype=np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame


class HubAudioTrack(PacedAudioTrack):
    """What the hub sends one browser leg: its frames as they came, silence when none is queued.

    Two 20 ms clocks (the hub's and this track's) feed and drain the queue at the same rate:
    delay that stands in it is trimmed (`StandingDelay`), bursts are ridden out.
    """

    def __init__(self, max_frames: int = OUTBOUND_FRAMES, latency_frames: int = LATENCY_FRAMES):
        super().__init__()
        self._frames: deque[bytes] = deque(maxlen=max_frames)
        self._standing = StandingDelay(latency_frames)

    def push(self, frame: bytes) -> None:
        self._frames.append(frame)

    @property
    def pending(self) -> int:
        return len(self._frames)

    def next_frame(self) -> bytes:
        for _ in range(self._standing.excess(len(self._frames))):
            self._frames.popleft()
        return self._frames.popleft() if self._frames else SILENCE

