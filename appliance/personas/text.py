"""A persona in text: the same Agent (instructions, LLM, tools) without audio.

Used by `appliance flows simulate` and `appliance flows test`, through livekit-agents'
text mode (`AgentSession.run(user_input=...)`), so a persona is tested exactly as it
will reason on a call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult

from appliance.flow.loader import load_personas
from appliance.flow.persona import Persona
from appliance.personas.persona import build_agent
from appliance.personas.whisper import whisper


class TextPersona:
    def __init__(self, name: str, variables: dict[str, Any], flows_dir: Path):
        self.flows_dir = flows_dir
        self.persona = self.load_persona(name)
        self.variables = dict(variables)
        self.exit: tuple[str, dict[str, Any]] | None = None
        self.tools: list[dict[str, Any]] = []
        self.actions: list[tuple[str, dict[str, Any]]] = []
        self._session: AgentSession | None = None

    # --- PersonaCall
    def tool_event(self, name: str, arguments: dict[str, Any], result: Any) -> None:
        self.tools.append({"name": name, "arguments": arguments, "result": result})

    def exit_after_reply(self, exit_: str, variables: dict[str, Any], reason: str) -> None:
        self.exit = (exit_, variables)

    def call_action(self, action: str, arguments: dict[str, Any]) -> None:
        self.actions.append((action, arguments))
        if action == "transfer":
            self.exit = ("human", {"transfer_to": arguments.get("to")})

    def load_persona(self, name: str) -> Persona:
        return load_personas(self.flows_dir / "personas")[name]

    def heard_back_channel(self) -> bool:
        return False  # typed turns have no speech under them

    # --- the conversation
    async def start(self) -> list[str]:
        agent = build_agent(self.persona, self)
        self._session = AgentSession()
        await self._session.start(agent)
        return [self.persona.greeting] if self.persona.greeting else []

    async def reply(self, text: str) -> list[str]:
        """The persona's answer to one caller utterance (after any tool calls)."""
        assert self._session is not None
        result: RunResult[None] = self._session.run(user_input=text)
        await result
        return [e.item.text_content or "" for e in result.events
                if isinstance(e, ChatMessageEvent) and e.item.role == "assistant"]

    async def instruct(self, text: str, by: str) -> None:
        """A supervisor's whisper: it shapes the next reply and is not a reply itself."""
        assert self._session is not None
        await whisper(self._session, text, by)

    async def close(self) -> None:
        if self._session is not None:
            try:
                await asyncio.wait_for(self._session.aclose(), timeout=5)
            except Exception:
                pass
