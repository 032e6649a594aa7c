"""The browser-audio conversions and the worker's message rate limit, without a network."""

from __future__ import annotations

import fractions

import numpy as np
from av import AudioFrame

from appliance.console.rtc_media import HubAudioTrack, InboundAudio
from appliance.console.rtc_worker import RateLimit
from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE, SAMPLES_PER_FRAME, SILENCE


def tone(rate: int, channels: int, seconds: float, hz: float = 440.0) -> list[AudioFrame]:
    """20 ms decoded frames as aiortc's decoders hand them over (packed s16)."""
    n = rate // 50
    t = np.arange(int(rate * seconds)) / rate
    samples = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    frames = []
    for i in range(0, len(samples) - n + 1, n):
        packed = np.repeat(samples[i : i + n], channels).reshape(1, -1)
        frame = AudioFrame.from_ndarray(packed, format="s16", layout="stereo" if channels == 2 else "mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, i, fractions.Fraction(1, rate)
        frames.append(frame)
    return frames


def dominant_hz(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def test_opus_and_pcmu_decodes_become_whole_16k_mono_frames() -> None:
    for rate, channels in ((48000, 2), (8000, 1)):
        inbound = InboundAudio()
        out = [pcm for frame in tone(rate, channels, 1.0) for pcm in inbound.convert(frame)]
        assert {len(pcm) for pcm in out} == {FRAME_BYTES}
        assert 48 <= len(out) <= 50  # a second, less what the resampler still holds
        assert abs(dominant_hz(b"".join(out[5:45])) - 440) < 5


def test_a_codec_switch_mid_session_is_followed() -> None:
    inbound = InboundAudio()
    out = [pcm for frame in tone(48000, 2, 0.5) + tone(8000, 1, 0.5) for pcm in inbound.convert(frame)]
    assert {len(pcm) for pcm in out} == {FRAME_BYTES} and len(out) >= 46


async def test_the_outbound_track_plays_the_hubs_frames_then_silence() -> None:
    track = HubAudioTrack(max_frames=3)
    frames = [bytes([n]) * FRAME_BYTES for n in range(1, 6)]
    for frame in frames:
        track.push(frame)
    assert track.pending == 3  # the oldest went: latency stays bounded
    played = [await track.recv() for _ in range(4)]
    assert [f.to_ndarray().tobytes() for f in played] == [*frames[2:], SILENCE]
    assert [f.pts for f in played] == [0, SAMPLES_PER_FRAME, 2 * SAMPLES_PER_FRAME, 3 * SAMPLES_PER_FRAME]
    assert {(f.sample_rate, f.layout.name, f.format.name) for f in played} == {(SAMPLE_RATE, "mono", "s16")}


def test_the_rate_limit_allows_a_window_full_then_drops_until_the_next() -> None:
    now = [100.0]
    limit = RateLimit(50, lambda: now[0])
    assert all(limit.allow() for _ in range(50))
    assert not limit.allow() and not limit.allow()
    assert limit.dropped == 2
    now[0] += 0.99
    assert not limit.allow()
    now[0] += 0.02
    assert limit.allow() and limit.dropped == 0
