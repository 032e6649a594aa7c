"""A caller reads an order number to a persona in two groups, pausing between them, on real
audio (espeak-ng through G.722) in a livekit-agents AgentSession set up as a call's is: the
persona waits out the pause and calls its tool once, with the whole number."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession

from appliance.config import PersonasConfig
from appliance.flow.persona import Persona
from appliance.personas.persona import build_agent
from appliance.personas.plugins import build_vad
from appliance.personas.vad import SpeechTimedVAD
from tests.personas.speech import frames
from tests.personas.test_session_voice import CallerAudio, InstantSpeaker
from tests.support.spoken_numbers import SpokenNumber, line_audio, line_speech

ENDPOINTING_S = PersonasConfig().endpointing_s  # the box's default
DIGITS = ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PERSONA = {
    "name": "orders",
    "instructions": "You check orders.",
    "builtins": ["set_variable"],
    "scripted": {"intents": {
        "check": {"phrases": ["check my order", "where is my order"], "reply": "What is your order number?",
                  "expects": "number"},
        "number": {"phrases": DIGITS, "tool": "set_variable", "arguments": {"name": "order", "value": "{digits}"},
                   "after_tool": "Thank you."},
    }},
}


class PacedCaller(CallerAudio):
    """The caller's frames at the pace a call delivers them, 20 ms each, then silence: the
    session's endpointing counts wall-clock time, so a pause must take as long as it lasts."""

    async def __anext__(self) -> rtc.AudioFrame:
        loop = asyncio.get_running_loop()
        self._due = max(getattr(self, "_due", 0.0), loop.time() - 0.02) + 0.02
        await asyncio.sleep(self._due - loop.time())
        if self.frames.empty():
            return frames(np.zeros(320, dtype=np.int16), 16_000)[0]
        return self.frames.get_nowait()


class Call:
    """The call a persona's tools act on (`PersonaCall`): here it only keeps what they did."""

    def __init__(self) -> None:
        self.variables: dict[str, Any] = {}
        self.tools: list[tuple[str, dict[str, Any]]] = []

    def tool_event(self, name: str, arguments: dict[str, Any], result: Any) -> None:
        self.tools.append((name, arguments))

    def exit_after_reply(self, exit_: str, variables: dict[str, Any], reason: str) -> None: ...
    def call_action(self, action: str, arguments: dict[str, Any]) -> None: ...
    def load_persona(self, name: str) -> Persona:
        raise AssertionError("no hand-offs here")

    def heard_back_channel(self) -> bool:
        return False


async def _reads_number(persona: dict[str, Any], number: SpokenNumber) -> tuple[Call, list[str]]:
    call, caller, speaker = Call(), PacedCaller(), InstantSpeaker()
    session = AgentSession(
        vad=SpeechTimedVAD(build_vad({"name": "silero", "options": {"min_silence_duration": ENDPOINTING_S}})),
        turn_handling={"turn_detection": "vad", "endpointing": {"min_delay": ENDPOINTING_S, "max_delay": 3.0}},
    )
    session.input.audio = caller
    session.output.audio = speaker
    replies: list[str] = []
    replied = asyncio.Event()

    def on_item(event: Any) -> None:
        if getattr(event.item, "role", None) == "assistant":
            replies.append(event.item.text_content or "")
            replied.set()

    session.on("conversation_item_added", on_item)
    async with session:
        await session.start(build_agent(Persona.model_validate(persona), call))
        caller.say(np.frombuffer(line_speech("where is my order", "g722"), dtype=np.int16))
        await asyncio.wait_for(replied.wait(), timeout=15)
        assert replies == ["What is your order number?"], replies
        replied.clear()
        caller.say(np.frombuffer(line_audio(number, "g722"), dtype=np.int16))
        await asyncio.wait_for(replied.wait(), timeout=20)
        await asyncio.sleep(3)  # a turn of its own for the number's last group would be answered by now
    return call, replies


async def test_a_number_read_in_two_groups_reaches_the_tool_whole() -> None:
    number = SpokenNumber(("555", "12"), (0.9,), "en-us", 160)
    call, replies = await _reads_number(PERSONA, number)
    assert call.tools == [("set_variable", {"name": "order", "value": "55512"})], (call.tools, replies)
    assert replies[-1] == "Thank you."
