"""G.711 μ-law at 8 kHz ↔ the hub's 16-bit PCM at 16 kHz in 20 ms frames (Twilio Media Streams, audio egress).

Each direction converts once, frame by frame, with filters that keep their state across frames:
resampling each 20 ms chunk on its own (as `appliance.speech.resample` does for whole prompts)
restarts the filter at every chunk edge and adds a click 50 times a second.
"""

from __future__ import annotations

import numpy as np

from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE

__all__ = ["WIRE_RATE", "Inbound", "Outbound", "mulaw_decode", "mulaw_encode"]

WIRE_RATE = 8000
_TAPS = 63
_BIAS = 0x21  # of the 14-bit magnitude the encoder works on
_DECODE_BIAS = 0x84  # of the 16-bit value the decoder gives
_CLIP = 8159
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _lowpass() -> np.ndarray:
    """Windowed sinc at 16 kHz passing what 8 kHz carries (to 3.6 kHz), unity gain."""
    cutoff = 0.45 * WIRE_RATE / SAMPLE_RATE
    taps = np.arange(_TAPS) - (_TAPS - 1) / 2
    kernel = np.sinc(2 * cutoff * taps) * np.hamming(_TAPS)
    return (kernel / kernel.sum()).astype(np.float32)


_KERNEL = _lowpass()


def _decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + _DECODE_BIAS) << exponent) - _DECODE_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


_DECODE = _decode_table()


def mulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes → int16 samples."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples → μ-law bytes: G.711's 14-bit segment search, as the ITU reference code does it."""
    x = samples.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(x), _CLIP) + _BIAS
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)
    code = np.where(segment >= 8, 0x7F,
                    (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8).tobytes()


class _Filter:
    """The low-pass over a stream at 16 kHz, keeping the last samples of each chunk for the next."""

    def __init__(self) -> None:
        self._history = np.zeros(_TAPS - 1, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        joined = np.concatenate([self._history, x])
        self._history = joined[-(_TAPS - 1):]
        return np.convolve(joined, _KERNEL, mode="valid")


class Inbound:
    """The caller's μ-law as the hub's 20 ms frames: decode, 8 → 16 kHz, cut into whole frames."""

    def __init__(self) -> None:
        self._filter = _Filter()
        self._pending = bytearray()

    def frames(self, mulaw: bytes) -> list[bytes]:
        wire = mulaw_decode(mulaw).astype(np.float32)
        stuffed = np.zeros(len(wire) * 2, dtype=np.float32)
        stuffed[::2] = wire * 2  # every other sample zero halves the level; the filter fills them in
        pcm = np.clip(self._filter(stuffed), -32768, 32767).astype("<i2").tobytes()
        self._pending += pcm
        cut = len(self._pending) - len(self._pending) % FRAME_BYTES
        out = [bytes(self._pending[i:i + FRAME_BYTES]) for i in range(0, cut, FRAME_BYTES)]
        del self._pending[:cut]
        return out


class Outbound:
    """The hub's 20 ms frames as μ-law for Twilio: 16 → 8 kHz, encode."""

    def __init__(self) -> None:
        self._filter = _Filter()

    def encode(self, frame: bytes) -> bytes:
        filtered = self._filter(np.frombuffer(frame, dtype="<i2").astype(np.float32))
        return mulaw_encode(np.clip(filtered[::2], -32768, 32767))
