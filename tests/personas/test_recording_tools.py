"""A persona that takes card numbers pauses the recording through its built-in tools: the
scripted LLM in a real AgentSession calls `pause_recording` and `resume_recording`, which ask
the call for a `record` action (the hub pauses the recorder and masks digits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit.agents import AgentSession

from appliance.flow.persona import Persona
from appliance.personas.persona import build_agent

PERSONA = {
    "name": "payments",
    "instructions": "You take card payments.",
    "builtins": ["pause_recording", "resume_recording"],
    "providers": {"stt": {"name": "pocketsphinx"}, "tts": {"name": "espeak"}},
    "scripted": {
        "intents": {
            "pay": {"phrases": ["pay by card"], "tool": "pause_recording", "after_tool": "Go ahead with the number."},
            "done": {"phrases": ["that is all"], "tool": "resume_recording", "after_tool": "Thank you."},
        },
        "fallback": "Sorry?",
    },
}


@dataclass
class CallActions:
    """The call as the persona's tools see it (`PersonaCall`), keeping what they asked of it."""

    variables: dict[str, Any] = field(default_factory=dict)
    actions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)

    def tool_event(self, name: str, arguments: dict[str, Any], result: Any) -> None:
        self.tools.append(name)

    def exit_after_reply(self, exit_: str, variables: dict[str, Any], reason: str) -> None:
        raise AssertionError("the persona must not exit")

    def call_action(self, action: str, arguments: dict[str, Any]) -> None:
        self.actions.append((action, arguments))

    def load_persona(self, name: str) -> Persona:
        raise AssertionError("no hand-off here")

    def heard_back_channel(self) -> bool:
        return False


def test_the_recording_tools_are_off_unless_listed() -> None:
    plain = {k: v for k, v in PERSONA.items() if k not in ("builtins", "scripted")}
    default = Persona.model_validate({**plain, "scripted": {"intents": {}, "fallback": "Sorry?"}})
    assert "pause_recording" not in default.builtins and "escalate" in default.builtins
    with pytest.raises(ValueError, match="unknown tool 'pause_recording'"):
        Persona.model_validate({k: v for k, v in PERSONA.items() if k != "builtins"})


async def test_the_persona_pauses_and_resumes_the_recording() -> None:
    call = CallActions()
    agent = build_agent(Persona.model_validate(PERSONA), call)
    async with AgentSession() as session:
        await session.start(agent)
        paid = await session.run(user_input="I would like to pay by card")
        paid.expect.contains_function_call(name="pause_recording")
        done = await session.run(user_input="that is all")
        done.expect.contains_function_call(name="resume_recording")

    assert call.actions == [("record", {"pause": True}), ("record", {"pause": False})]
    assert call.tools == ["pause_recording", "resume_recording"]
