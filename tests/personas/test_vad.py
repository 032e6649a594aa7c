"""SpeechTimedVAD: silero's events, with an utterance's speech timed without the pause after it."""

from __future__ import annotations

import numpy as np
from livekit.agents import vad
from livekit.plugins import silero

from appliance.personas.vad import SpeechTimedVAD
from tests.personas.speech import frames, spoken


async def _events(detector: vad.VAD, samples: np.ndarray) -> list[vad.VADEvent]:
    stream = detector.stream()
    for frame in frames(samples, 16_000):
        stream.push_frame(frame)
    stream.end_input()
    return [event async for event in stream]


async def test_speech_duration_while_speaking_leaves_out_the_pause() -> None:
    silence_s = 0.6
    samples = spoken("right", silence_s=1.0)
    plain = await _events(silero.VAD.load(min_silence_duration=silence_s), samples)
    timed = await _events(SpeechTimedVAD(silero.VAD.load(min_silence_duration=silence_s)), samples)

    def longest_while_speaking(events: list[vad.VADEvent]) -> float:
        return max(e.speech_duration for e in events if e.type == vad.VADEventType.INFERENCE_DONE and e.speaking)

    (end,) = [e for e in timed if e.type == vad.VADEventType.END_OF_SPEECH]
    # silero counts the pause it waits through; the wrapper reports the word's own length,
    # which is what END_OF_SPEECH says too.
    assert longest_while_speaking(plain) > end.speech_duration + silence_s / 2
    assert abs(longest_while_speaking(timed) - end.speech_duration) < 0.1
    assert [e.type for e in timed if e.type != vad.VADEventType.INFERENCE_DONE] == \
        [e.type for e in plain if e.type != vad.VADEventType.INFERENCE_DONE]
