"""When a caller's turn ends, on real audio (espeak-ng through G.722) in a livekit-agents
AgentSession set up as a call's is (appliance/personas/session.py): a pause inside a sentence
("I would like to … check my order") does not end the turn, a whole short request is answered
after the box's short silence, and with the words-so-far check off the same pause is answered
into (the reason for the check)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from livekit.agents import AgentSession

from appliance.config import PersonasConfig
from appliance.flow.persona import Persona
from appliance.personas.persona import build_agent
from appliance.personas.plugins import build_vad
from appliance.personas.vad import SpeechTimedVAD
from tests.personas.test_session_numbers import DIGITS, Call, PacedCaller
from tests.personas.test_session_voice import InstantSpeaker
from tests.support.spoken_requests import SpokenRequest

ENDPOINTING_S = PersonasConfig().endpointing_s  # the box's default
ASK = "What is your order number?"
PERSONA: dict[str, Any] = {
    "name": "orders",
    "instructions": "You check orders.",
    "builtins": ["set_variable"],
    "scripted": {"intents": {
        "check": {"phrases": ["check my order", "where is my order", "my order"], "reply": ASK, "expects": "number"},
        "number": {"phrases": DIGITS, "tool": "set_variable", "arguments": {"name": "order", "value": "{digits}"},
                   "after_tool": "Thank you."},
    }},
}


class Conversation:
    """What the persona said, and whether the caller still had words to say when it started to."""

    def __init__(self, caller: PacedCaller) -> None:
        self.caller = caller
        self.replies: list[str] = []
        self.started_while_caller_had_more: list[bool] = []
        self.caller_turns: list[str] = []
        self.replied = asyncio.Event()
        self.tail_frames = 0  # frames of the line's silence after the sentence's last word

    def attach(self, session: AgentSession) -> None:
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "role", None) == "assistant":
            # The speaker plays a reply the moment it is made, and the reply is added then.
            # Frames still queued are the rest of the caller's sentence and its tail of
            # silence: more than the tail left means the reply came before the sentence ended.
            self.started_while_caller_had_more.append(self.caller.frames.qsize() > self.tail_frames)
            self.replies.append(item.text_content or "")
            self.replied.set()
        elif getattr(item, "role", None) == "user":
            self.caller_turns.append(item.text_content or "")


async def _converse(request: SpokenRequest, incomplete_pause: float, endpointing_s: float) -> Conversation:
    persona = Persona.model_validate({**PERSONA, "turns": {"incomplete_pause": incomplete_pause}})
    caller, speaker = PacedCaller(), InstantSpeaker()
    session = AgentSession(
        vad=SpeechTimedVAD(build_vad({"name": "silero", "options": {"min_silence_duration": endpointing_s}})),
        turn_handling={"turn_detection": "vad", "endpointing": {"min_delay": endpointing_s, "max_delay": 3.0}},
    )
    session.input.audio = caller
    session.output.audio = speaker
    talk = Conversation(caller)
    talk.attach(session)
    async with session:
        await session.start(build_agent(persona, Call()))
        audio = np.frombuffer(request.line("g722"), dtype=np.int16)
        talk.tail_frames = (len(audio) - int(request.end_s * 16_000)) // 320 - 1
        caller.say(audio)
        await asyncio.wait_for(talk.replied.wait(), timeout=20)
        await asyncio.sleep(1.5)  # a second turn, had the pause split the sentence, would be answered by now
    return talk


@pytest.mark.parametrize("parts", [("I would like to", "check my order."), ("Where is my", "order?")])
async def test_a_pause_inside_a_sentence_does_not_end_the_callers_turn(parts: tuple[str, ...]) -> None:
    request = SpokenRequest(parts, (0.7,), "en-us", 160)
    talk = await _converse(request, incomplete_pause=1.0, endpointing_s=ENDPOINTING_S)
    assert talk.started_while_caller_had_more == [False], talk.__dict__
    assert talk.replies == [ASK], talk.replies
    assert len(talk.caller_turns) == 1 and "order" in talk.caller_turns[0], talk.caller_turns


async def test_a_whole_short_request_is_answered() -> None:
    request = SpokenRequest(("where is my order",), (), "en-gb", 160)
    talk = await _converse(request, incomplete_pause=1.0, endpointing_s=ENDPOINTING_S)
    assert talk.replies == [ASK], talk.replies
    assert talk.started_while_caller_had_more == [False]


async def test_with_the_check_off_the_same_pause_is_answered_into() -> None:
    # The control: what the check prevents. The VAD's silence alone ends the turn inside the pause.
    request = SpokenRequest(("Where is my", "order?"), (0.7,), "en-us", 160)
    talk = await _converse(request, incomplete_pause=0.0, endpointing_s=ENDPOINTING_S)
    assert talk.started_while_caller_had_more[:1] == [True], talk.__dict__
