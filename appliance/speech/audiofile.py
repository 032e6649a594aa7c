"""Audio files a flow names (WAV), converted once to the box's format."""

from __future__ import annotations

import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

from appliance.core.audio import SAMPLE_RATE
from appliance.speech.resample import resample


@lru_cache(maxsize=64)
def load_wav(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            samples = samples.reshape(-1, w.getnchannels()).mean(axis=1).astype(np.int16)
        return resample(samples, w.getframerate(), SAMPLE_RATE).tobytes()
