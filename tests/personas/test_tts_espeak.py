"""EspeakPluginTTS through livekit's synthesize(): 16 kHz mono frames of speech, as long as espeak-ng's render."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit.agents import tts

from appliance.core.audio import FRAME_MS, SAMPLE_RATE
from appliance.personas.plugins.tts_espeak import EspeakPluginTTS, shared_synthesizer
from tests.personas.speech import rms

GREETING = "Thank you for calling. How can I help you today?"


async def _frames(engine: EspeakPluginTTS, text: str) -> list[tts.SynthesizedAudio]:
    async with engine.synthesize(text) as stream:
        return [event async for event in stream]


async def test_speech_arrives_as_16_khz_mono_frames_of_the_renders_length() -> None:
    events = await _frames(EspeakPluginTTS(), GREETING)

    frames = [e.frame for e in events]
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(SAMPLE_RATE, 1)}
    # livekit re-frames what the provider pushes (it splits off a 10 ms tail to mark the end).
    assert max(f.samples_per_channel for f in frames) == SAMPLE_RATE * FRAME_MS // 1000
    expected_s = len(shared_synthesizer().synthesize(GREETING, "en-us")) / 2 / SAMPLE_RATE
    total_s = sum(f.duration for f in frames)
    assert total_s == pytest.approx(expected_s, abs=FRAME_MS / 1000)
    assert 1.5 < total_s < 6.0  # nine words at a speaking pace
    assert len({e.request_id for e in events}) == 1 and events[-1].is_final


async def test_the_frames_carry_speech_energy() -> None:
    frame = await EspeakPluginTTS().synthesize(GREETING).collect()

    samples = np.frombuffer(frame.data, dtype=np.int16)
    per_20ms = samples[: len(samples) // 320 * 320].reshape(-1, 320)
    voiced = [rms(chunk) > 300 for chunk in per_20ms]
    assert rms(samples) > 1000
    assert sum(voiced) / len(voiced) > 0.5  # mostly speech, with pauses between words


async def test_a_voice_can_be_chosen_and_an_unknown_one_is_refused() -> None:
    british = await EspeakPluginTTS(voice="en-gb-x-rp").synthesize("Good morning").collect()
    assert british.duration > 0.3

    with pytest.raises(ValueError, match="no voice"):
        EspeakPluginTTS(voice="en-gb")  # espeak-ng's British voice is "en-gb-x-rp" (or "en")


async def test_synthesis_leaves_the_event_loop_free() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    # Not said before in this process: not served from the render cache.
    await EspeakPluginTTS().synthesize(" ".join(["The quick brown fox jumps over the lazy dog."] * 6)).collect()
    ticker.cancel()

    assert ticks > 10


async def test_metrics_are_reported_by_the_base_class() -> None:
    engine = EspeakPluginTTS()
    seen = []
    engine.on("metrics_collected", seen.append)

    await engine.synthesize("One moment please.").collect()
    await asyncio.sleep(0)

    assert len(seen) == 1 and seen[0].audio_duration > 0.5 and seen[0].characters_count == 18


def test_capabilities_say_batch_only_in_the_box_format() -> None:
    engine = EspeakPluginTTS()

    assert engine.capabilities.streaming is False
    assert (engine.sample_rate, engine.num_channels) == (SAMPLE_RATE, 1)
