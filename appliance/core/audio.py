"""The one audio format inside the box: 16 kHz, 16-bit signed little-endian mono, 20 ms frames.

Every track in a room, every prompt and every recording channel uses it; the SIP workers
convert from and to the wire codec (PCMU/PCMA at 8 kHz are resampled by pjmedia).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000
BYTES_PER_SAMPLE = 2
FRAME_BYTES = SAMPLES_PER_FRAME * BYTES_PER_SAMPLE
SILENCE = bytes(FRAME_BYTES)


def frames_of(pcm: bytes) -> list[bytes]:
    """Split PCM into whole frames, padding the last with silence."""
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1] + bytes(FRAME_BYTES - len(frames[-1]))
    return frames


def duration_s(pcm: bytes) -> float:
    return len(pcm) / (SAMPLE_RATE * BYTES_PER_SAMPLE)


class StandingDelay:
    """Delay a live audio queue keeps for good: what it never drained below over a whole window.

    A queue between two 20 ms clocks (a worker's and the hub's) is fed and drained at the same
    rate, so a burst that fills it stays as delay for the rest of the call. Trimming only what
    stayed queued for `window` pulls, one 20 ms frame a second, wears that delay away without a
    gap anyone notices, and lets the queue ride out a burst without losing audio, which a hard
    cap at a few frames does not (measured with bench/operators.py: a 3-frame cap lost 15 % of
    the audio at 15 operators on a busy box).
    """

    def __init__(self, target: int, window: int = 50):
        self.target = target
        self.window = window
        self._low: int | None = None
        self._pulls = 0

    def excess(self, pending: int) -> int:
        """Frames to drop now (0 or 1), given `pending` queued at this pull."""
        self._low = pending if self._low is None else min(self._low, pending)
        self._pulls += 1
        if self._pulls < self.window:
            return 0
        excess = min(1, max(0, self._low - self.target))
        self._pulls, self._low = 0, None
        return excess


def interleave(left: bytes, right: bytes, dtype: type[np.generic] = np.int16) -> np.ndarray:
    """Two mono channels of one length as stereo, (samples, 2): a recording's or a stream's frame."""
    return np.column_stack((np.frombuffer(left, dtype=dtype), np.frombuffer(right, dtype=dtype)))
