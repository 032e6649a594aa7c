"""Tones the flows play: the voicemail beep and the default hold audio, at the box's rate."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from appliance.core.audio import SAMPLE_RATE


def _tone(freqs: tuple[float, ...], seconds: float, level: float) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # 20 ms ramps: no clicks
    return (wave * fade * level * 32767).astype(np.int16)


@lru_cache(maxsize=1)
def beep() -> bytes:
    return _tone((1000.0,), 0.3, 0.4).tobytes()


@lru_cache(maxsize=1)
def hold() -> bytes:
    """Four seconds of a soft two-note chime and quiet; looped while a caller waits."""
    notes = [_tone((523.25, 659.25), 0.6, 0.12), _tone((392.0, 493.88), 0.6, 0.12)]
    gap = np.zeros(int(SAMPLE_RATE * 0.4), dtype=np.int16)
    rest = np.zeros(int(SAMPLE_RATE * 2.0), dtype=np.int16)
    return np.concatenate([notes[0], gap, notes[1], rest]).tobytes()


@lru_cache(maxsize=1)
def ringback() -> bytes:
    """One cycle of the North American ringback (440 + 480 Hz, 2 s on, 4 s off); looped while a transfer rings."""
    rest = np.zeros(int(SAMPLE_RATE * 4.0), dtype=np.int16)
    return np.concatenate([_tone((440.0, 480.0), 2.0, 0.2), rest]).tobytes()
