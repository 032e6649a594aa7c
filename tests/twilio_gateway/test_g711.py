"""μ-law as G.711 has it, and resampling that carries over frame edges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from appliance.core.audio import FRAME_BYTES
from appliance.core.g711 import Inbound, Outbound, mulaw_decode, mulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")  # the standard library's G.711, gone in Python 3.13


def test_mulaw_matches_the_standard_librarys_g711() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert mulaw_encode(every) == audioop.lin2ulaw(every.tobytes(), 2)
    codes = bytes(range(256))
    assert mulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_caller_audio_becomes_whole_frames_whatever_the_chunking() -> None:
    wire = mulaw_encode(_tone(8000, 1.0))
    whole = b"".join(Inbound().frames(wire))
    inbound = Inbound()
    pieces = [wire[i:i + 97] for i in range(0, len(wire), 97)]  # chunks that never match a frame
    chunked = b"".join(f for piece in pieces for f in inbound.frames(piece))
    assert chunked == whole and len(whole) == 50 * FRAME_BYTES


def test_a_tone_keeps_its_level_and_has_no_clicks_at_frame_edges() -> None:
    tone = _tone(16000, 1.0)
    outbound, inbound = Outbound(), Inbound()
    wire = b"".join(outbound.encode(tone[i:i + 320].tobytes()) for i in range(0, len(tone), 320))
    back = np.frombuffer(b"".join(inbound.frames(wire)), dtype=np.int16).astype(np.float64)
    settled = back[400:]  # after the filters' delay
    rms = np.sqrt(np.mean(settled ** 2))
    assert abs(rms - 8000 / np.sqrt(2)) < 0.05 * 8000 / np.sqrt(2), rms
    # A click is a jump far beyond a 440 Hz sine's largest step between two samples (~1.1 % of its peak).
    assert np.max(np.abs(np.diff(settled))) < 2 * 8000 * 2 * np.pi * 440 / 16000
