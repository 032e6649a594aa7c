"""Real caller audio for the persona tests: espeak-ng speaking, as livekit frames at any rate.

It speaks with the plugin's process-wide synthesizer: a second espeak-ng instance in the
process would take the other's audio (see appliance/personas/plugins/tts_espeak.py).
"""

from __future__ import annotations

import numpy as np
from livekit import rtc

from appliance.core.audio import SAMPLE_RATE
from appliance.personas.plugins.tts_espeak import shared_synthesizer
from appliance.speech.resample import resample


def spoken(text: str, rate: int = SAMPLE_RATE, silence_s: float = 0.3) -> np.ndarray:
    """int16 samples of espeak-ng saying `text` at `rate`, with silence either side."""
    pcm = np.frombuffer(shared_synthesizer().synthesize(text), dtype=np.int16)
    pad = np.zeros(int(SAMPLE_RATE * silence_s), dtype=np.int16)
    return resample(np.concatenate([pad, pcm, pad]), SAMPLE_RATE, rate)


def frames(samples: np.ndarray, rate: int, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    n = rate * frame_ms // 1000
    samples = np.concatenate([samples, np.zeros(-len(samples) % n, dtype=np.int16)])
    return [
        rtc.AudioFrame(data=samples[i : i + n].tobytes(), sample_rate=rate, num_channels=1, samples_per_channel=n)
        for i in range(0, len(samples), n)
    ]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
