"""The whole offline voice pipeline in a livekit-agents AgentSession, without a room: silero
hears the caller's speech end, pocketsphinx transcribes it, the scripted LLM calls a tool,
and espeak-ng speaks the answer.

Audio goes in through an AudioInput and out through an AudioOutput that plays instantly;
a sink must report on_playback_finished once per flushed segment, or the session waits.
"""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentSession, function_tool
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

from appliance.flow import intents
from appliance.personas.plugins import build_llm, build_stt, build_tts, build_vad
from appliance.personas.plugins.tts_espeak import shared_synthesizer
from tests.personas.speech import frames, spoken


class CallerAudio(AudioInput):
    def __init__(self) -> None:
        super().__init__(label="test-caller")
        self.frames: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()

    def say(self, samples: np.ndarray) -> None:
        for frame in frames(samples, 16_000):
            self.frames.put_nowait(frame)

    async def __anext__(self) -> rtc.AudioFrame:
        return await self.frames.get()


class InstantSpeaker(AudioOutput):
    """Plays each segment the moment it is flushed, keeping what was played."""

    def __init__(self) -> None:
        super().__init__(label="test-speaker", capabilities=AudioOutputCapabilities(pause=False), sample_rate=16_000)
        self.segments: list[bytes] = []
        self._current = bytearray()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._current += bytes(frame.data.cast("B"))

    def flush(self) -> None:
        super().flush()
        seconds = len(self._current) / 32_000
        self.segments.append(bytes(self._current))
        self._current = bytearray()
        self.on_playback_finished(playback_position=seconds, interrupted=False)

    def clear_buffer(self) -> None:
        self._current = bytearray()


@function_tool
async def lookup_order(order_id: str) -> dict:
    """Look up an order by its number."""
    return {"order_id": order_id, "status": "shipped"}


PHRASES = ["where is my order", "order"]


async def test_a_spoken_question_gets_a_spoken_answer_from_a_tool() -> None:
    caller, speaker = CallerAudio(), InstantSpeaker()
    session = AgentSession(
        vad=build_vad({"name": "silero"}),
        stt=build_stt({"name": "pocketsphinx", "options": {"phrases": PHRASES}}),
        llm=build_llm({"name": "scripted", "options": {"intents": {"order": {
            "phrases": PHRASES, "tool": "lookup_order", "arguments": {"order_id": "42"},
            "after_tool": "Your order has {status}."}}}}),
        tts=build_tts({"name": "espeak"}),
        turn_handling={"turn_detection": "vad", "endpointing": {"min_delay": 0.2, "max_delay": 2.0}},
    )
    session.input.audio = caller
    session.output.audio = speaker
    answered = asyncio.Event()
    session.on("conversation_item_added",
               lambda ev: answered.set() if getattr(ev.item, "role", None) == "assistant" else None)

    async with session:
        await session.start(Agent(instructions="You answer order questions.", tools=[lookup_order]))
        caller.say(spoken("where is my order", silence_s=1.0))
        await asyncio.wait_for(answered.wait(), timeout=15)

        messages = [item for item in session.history.items if item.type == "message"]
        calls = [item for item in session.history.items if item.type == "function_call"]

    assert intents.match(messages[0].text_content, {"order": PHRASES}) == "order"
    assert [call.name for call in calls] == ["lookup_order"]
    assert messages[-1].role == "assistant" and messages[-1].text_content == "Your order has shipped."
    # What the caller heard is espeak-ng saying the answer.
    played = np.frombuffer(b"".join(speaker.segments), dtype=np.int16)
    said = np.frombuffer(shared_synthesizer().synthesize("Your order has shipped."), dtype=np.int16)
    assert 0 <= len(played) - len(said) <= 640, (len(played), len(said))  # livekit may pad the end
    assert np.array_equal(played[: len(said)], said)
