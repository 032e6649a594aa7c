"""Sample-rate conversion for prompts and recognition: windowed-sinc low-pass, then interpolation."""

from __future__ import annotations

import numpy as np


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """int16 mono at src_rate → int16 mono at dst_rate."""
    if src_rate == dst_rate or len(samples) == 0:
        return samples.astype(np.int16)
    x = samples.astype(np.float32)
    if dst_rate < src_rate:
        # Remove what the lower rate cannot carry, or it folds back as hiss.
        cutoff = 0.45 * dst_rate / src_rate
        taps = np.arange(-32, 33)
        kernel = np.sinc(2 * cutoff * taps) * np.hamming(len(taps))
        x = np.convolve(x, kernel / kernel.sum(), mode="same")
    n_out = round(len(x) * dst_rate / src_rate)
    positions = np.arange(n_out) * (src_rate / dst_rate)
    y = np.interp(positions, np.arange(len(x)), x)
    return np.clip(y, -32768, 32767).astype(np.int16)
