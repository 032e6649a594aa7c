"""One persona in one call: an AgentSession joined to the room through the hub.

Reports transcripts and tool calls to the hub, exits (resolved / human / failed) when a
tool says so and its last reply has played, and fails — never hangs — when a provider
breaks, the caller stays silent too long, or the turn limit is reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents import vad as lk_vad

from appliance.flow.loader import load_personas
from appliance.flow.persona import Persona
from appliance.observability.logging import log_extra
from appliance.personas.io import HubAudioInput, HubAudioOutput
from appliance.personas.persona import build_agent
from appliance.personas.summary import summarise
from appliance.personas.whisper import whisper
from appliance.rooms import protocol as p

log = logging.getLogger(__name__)

EXIT_AFTER_REPLY_MAX_S = 15.0  # a reply that never finishes playing must not keep the caller


class PersonaJob:
    def __init__(self, dispatch: p.Dispatch, flows_dir: Path, vad: lk_vad.VAD,
                 send: Callable[[Any], None], send_audio: Callable[[int, bytes], None],
                 endpointing_s: float, webhooks_allowed: list[str]):
        self.leg = dispatch.leg
        self.call_id = dispatch.call_id
        self.persona_name = dispatch.persona
        self.variables: dict[str, Any] = dict(dispatch.variables)
        self.flows_dir = flows_dir
        self.webhooks_allowed = webhooks_allowed
        self.vad = vad
        self._send = send
        self.input = HubAudioInput()
        self.output = HubAudioOutput(self.leg, send_audio, send)
        self.endpointing_s = endpointing_s
        self.session: AgentSession | None = None
        self._pending_exit: tuple[str, dict[str, Any], str] | None = None
        self._exited = False
        self._turns = 0
        self._silence: asyncio.TimerHandle | None = None
        self.persona: Persona | None = None
        self._caller_speaking_since: float | None = None
        self._caller_speech_s = 0.0  # how long the caller's last utterance was, by the VAD
        self._started = asyncio.Event()  # start() has run, whether the session came up or not
        self._whispers: set[asyncio.Task[None]] = set()
        self.taken_over_by: str | None = None  # a supervisor talks to the caller; the persona is switched off
        self._summary: asyncio.Task[None] | None = None

    # --- PersonaCall (what tools may do)
    def tool_event(self, name: str, arguments: dict[str, Any], result: Any) -> None:
        self._send(p.ToolEvent(leg=self.leg, name=name, arguments=arguments, result=result))

    def exit_after_reply(self, exit_: str, variables: dict[str, Any], reason: str) -> None:
        self._pending_exit = (exit_, variables, reason)
        asyncio.get_running_loop().call_later(EXIT_AFTER_REPLY_MAX_S, self._exit, exit_, variables, reason)

    def call_action(self, action: str, arguments: dict[str, Any]) -> None:
        self._send(p.CallAction(leg=self.leg, action=action, arguments=arguments))

    def heard_back_channel(self) -> bool:
        """The caller's last utterance was too short to interrupt the reply that is playing."""
        if self.session is None or self.persona is None or self.session.agent_state != "speaking":
            return False
        short = self._caller_speech_s < self.persona.interruption.min_duration
        if short:
            log.info("back-channel ignored",
                     extra=log_extra(call_id=self.call_id, seconds=round(self._caller_speech_s, 2)))
        return short

    def load_persona(self, name: str) -> Persona:
        # Read per call, so an edit the hub refused is refused here too, not run unchecked.
        persona = load_personas(self.flows_dir / "personas", self.webhooks_allowed)[name]
        self.persona = persona
        return persona

    # --- lifecycle
    async def start(self) -> None:
        try:
            persona = self.load_persona(self.persona_name)
            agent = build_agent(persona, self)
            session: AgentSession = AgentSession(
                vad=self.vad,
                turn_handling={
                    "turn_detection": "vad",
                    "endpointing": {"min_delay": self.endpointing_s, "max_delay": 3.0},
                    "interruption": {"enabled": True, "min_duration": persona.interruption.min_duration,
                                     "min_words": persona.interruption.min_words},
                    # The reply is generated from each final transcript while the turn's end is
                    # still being confirmed, and dropped if the caller goes on. Its text only: a
                    # turn held open (turns.py) would otherwise synthesise speech for nothing, and
                    # espeak-ng's first sentence takes 1-6 ms (docs/BENCHMARKS.md).
                    "preemptive_generation": {"enabled": True, "preemptive_tts": False},
                },
                max_tool_steps=3,
            )
            self.session = session
            session.input.audio = self.input
            session.output.audio = self.output
            session.on("user_input_transcribed", self._on_user_transcript)
            session.on("conversation_item_added", self._on_item)
            session.on("agent_state_changed", self._on_agent_state)
            session.on("error", self._on_error)
            session.on("user_state_changed", self._on_user_state)
            await session.start(agent)
            self._arm_silence()
            if persona.greeting:
                session.say(persona.greeting)
        except Exception as exc:
            log.exception("persona failed to start", extra=log_extra(call_id=self.call_id, persona=self.persona_name))
            self._exit("failed", {"persona_error": f"{type(exc).__name__}: {exc}"}, "start failed")
        finally:
            self._started.set()

    async def close(self) -> None:
        self._exited = True
        for task in [*self._whispers, *([self._summary] if self._summary else [])]:
            task.cancel()
        if self._silence:
            self._silence.cancel()
        self.input.close()
        if self.session is not None:
            try:
                await asyncio.wait_for(self.session.aclose(), timeout=5)
            except Exception:
                log.warning("persona session did not close cleanly", extra=log_extra(call_id=self.call_id))

    def audio(self, pcm: bytes) -> None:
        self.input.push(pcm)

    def played(self, message: p.Played) -> None:
        self.output.played(message)

    def instruct(self, message: p.Instruct) -> None:
        """A supervisor's whisper: into the persona's context for its next reply, never spoken."""
        # It may come right behind the Dispatch, before start() has made the session.
        task = asyncio.get_running_loop().create_task(self._whisper(message.text, message.by))
        self._whispers.add(task)
        task.add_done_callback(self._whispers.discard)

    async def _whisper(self, text: str, by: str) -> None:
        await self._started.wait()
        if self.session is None or self._exited:
            return
        try:
            await whisper(self.session, text, by)
        except Exception:
            log.exception("supervisor whisper not added", extra=log_extra(call_id=self.call_id, by=by))
            return
        log.info("supervisor whisper added", extra=log_extra(call_id=self.call_id, by=by, pii={"text": text}))

    def set_io(self, message: p.PersonaIO) -> None:
        """A supervisor takes the call over (off) or hands it back (on): livekit-agents' own
        input/output switching, as its warm transfer does; the session, its context and tools stay."""
        task = asyncio.get_running_loop().create_task(self._set_io(message.enabled, message.by))
        self._whispers.add(task)
        task.add_done_callback(self._whispers.discard)

    async def _set_io(self, enabled: bool, by: str) -> None:
        await self._started.wait()
        session = self.session
        if session is None or self._exited or enabled == (self.taken_over_by is None):
            return
        if not enabled:
            self.taken_over_by = by
            self._pending_exit = None  # a hand-over it had planned is the supervisor's call now
            if self._silence:
                self._silence.cancel()
            # Output first: from here no frame of the current reply leaves for the hub.
            session.output.set_audio_enabled(False)
            session.input.set_audio_enabled(False)
            try:
                session.interrupt(force=True)
            except RuntimeError:
                pass  # nothing was playing
            self.output.clear_buffer()
            log.info("persona switched off: taken over", extra=log_extra(call_id=self.call_id, by=by))
            if self.persona is not None and self.persona.providers.llm.name != "scripted":
                self._summary = asyncio.get_running_loop().create_task(self._send_summary(session))
            return
        self.taken_over_by = None
        session.input.set_audio_enabled(True)
        session.output.set_audio_enabled(True)
        self._arm_silence()
        log.info("persona switched on: handed back", extra=log_extra(call_id=self.call_id, by=by))

    async def _send_summary(self, session: AgentSession) -> None:
        model = session.current_agent.llm
        if not isinstance(model, llm.LLM):
            return
        try:
            text = await summarise(model, session.history)
        except Exception as exc:
            log.warning("persona summary failed", extra=log_extra(call_id=self.call_id, error=repr(exc)))
            return
        if text:
            self._send(p.Summary(leg=self.leg, text=text))

    # --- session events
    def _on_user_transcript(self, event: Any) -> None:
        if not event.is_final or not event.transcript.strip():
            return
        self._arm_silence()
        self._send(p.Transcript(leg=self.leg, role="caller", text=event.transcript))

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "role", None) == "user":
            # A turn is what livekit committed: a sentence said in parts, each part its own
            # final transcript (turns.py holds them together), is one.
            self._turns += 1
            if self.persona and self._turns > self.persona.limits.max_turns:
                self._exit("failed", {"persona_error": "turn limit reached"}, "max_turns")
        if getattr(item, "role", None) != "assistant":
            return
        text = item.text_content or ""
        interrupted = bool(getattr(item, "interrupted", False))
        if interrupted and text:
            # Keep in the context what the caller heard: the share of words the played share
            # of the audio carried (espeak-ng gives no word timings to cut at exactly).
            heard, sent = self.output.last_played
            words = text.split()
            kept = round(len(words) * min(1.0, heard / sent)) if sent > 0 else len(words)
            text = " ".join(words[:kept])
            item.content = [text]
        if text:
            self._send(p.Transcript(leg=self.leg, role="persona", text=text,
                                    persona=self.persona.name if self.persona else "", interrupted=interrupted))

    def _on_user_state(self, event: Any) -> None:
        log.info("caller state", extra=log_extra(call_id=self.call_id, state=event.new_state))
        if event.new_state == "speaking":
            self._caller_speaking_since = event.created_at
        elif event.old_state == "speaking" and self._caller_speaking_since is not None:
            # The VAD says "listening" only after endpointing_s of silence.
            self._caller_speech_s = max(0.0, event.created_at - self._caller_speaking_since - self.endpointing_s)
            self._caller_speaking_since = None

    def _on_agent_state(self, event: Any) -> None:
        log.info("persona state", extra=log_extra(call_id=self.call_id, state=event.new_state))
        if event.new_state == "listening":
            self._arm_silence()
            if self._pending_exit is not None:
                self._exit(*self._pending_exit)

    def _on_error(self, event: Any) -> None:
        error = getattr(event, "error", event)
        recoverable = getattr(error, "recoverable", False)
        log.error("persona provider error",
                  extra=log_extra(call_id=self.call_id, error=str(error), recoverable=recoverable))
        if not recoverable:
            self._exit("failed", {"persona_error": str(error)}, "provider error")

    def _arm_silence(self) -> None:
        if self._silence:
            self._silence.cancel()
        if self.persona is not None and self.taken_over_by is None:
            self._silence = asyncio.get_running_loop().call_later(
                self.persona.limits.max_silence, self._exit,
                "failed", {"persona_error": "caller silent"}, "max_silence")

    def _exit(self, exit_: str, variables: dict[str, Any], reason: str) -> None:
        if self._exited or self.taken_over_by is not None:
            return  # taken over: the supervisor decides where the call goes
        self._exited = True
        if self._silence:
            self._silence.cancel()
        self._send(p.PersonaExit(leg=self.leg, exit=exit_, variables=variables, reason=reason))
