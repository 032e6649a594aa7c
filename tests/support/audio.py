"""Audio helpers for tests that recognise what was said."""

from __future__ import annotations

import numpy as np

from appliance.core.audio import SAMPLE_RATE

FRAME = SAMPLE_RATE // 50  # 20 ms


def spoken(pcm: bytes, floor: float = 300.0, margin_s: float = 0.3) -> bytes:
    """The part of 16 kHz s16le `pcm` from its first loud 20 ms to its last, with a margin.

    pocketsphinx normalises each utterance by its mean cepstrum: seconds of a recording's
    silence around two seconds of speech pull that mean towards silence and the words apart
    (measured: "thank you for calling" padded to 3 s was heard as "you for bill you").
    """
    x = np.frombuffer(pcm, dtype=np.int16)
    n = len(x) // FRAME
    rms = np.sqrt(np.mean(x[: n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms > floor)
    if not len(loud):
        return b""
    margin = int(margin_s * SAMPLE_RATE)
    return x[max(0, loud[0] * FRAME - margin): min(len(x), (loud[-1] + 1) * FRAME + margin)].tobytes()


def utterances(pcm: bytes, floor: float = 300.0, gap_s: float = 0.3, margin_s: float = 0.2) -> list[bytes]:
    """The stretches of speech in `pcm`, split where it is quiet for `gap_s` or more (see `spoken`)."""
    x = np.frombuffer(pcm, dtype=np.int16)
    n = len(x) // FRAME
    rms = np.sqrt(np.mean(x[: n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms > floor)
    if not len(loud):
        return []
    gap = int(gap_s * 50)
    runs, start = [], loud[0]
    for before, after in zip(loud, loud[1:], strict=False):
        if after - before > gap:
            runs.append((start, before))
            start = after
    runs.append((start, loud[-1]))
    margin = int(margin_s * SAMPLE_RATE)
    return [x[max(0, a * FRAME - margin): min(len(x), (b + 1) * FRAME + margin)].tobytes() for a, b in runs]
