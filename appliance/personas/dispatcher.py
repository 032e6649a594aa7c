"""Hub side of personas: dispatches a persona worker to a call's room and relays what it does.

Like livekit-agents' job dispatch: a flow asks for a persona, the least-loaded connected
persona worker gets a `Dispatch`, joins the room as an `AgentParticipant`, and reports
transcripts, tool calls and finally its exit. A worker lost mid-call is a `failed` exit.
A supervisor's whisper reaches the persona as an `Instruct`, and the transcript as a
`supervisor` line. A supervisor's take-over switches the persona's audio off (`PersonaIO`)
and mutes it here at once; the persona stays in the room, able to be handed the call back.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from appliance.observability.logging import log_extra
from appliance.rooms import protocol as p
from appliance.rooms.room import Room
from appliance.rooms.server import TRANSCRIPT_TOPIC, AgentParticipant, WorkerConnection, WorkerRegistry
from appliance.storage import Storage

log = logging.getLogger(__name__)



@dataclass
class PersonaAssignment:
    """One persona in one call, as the hub and the flow runner see it (the worker's side is
    personas.session.PersonaJob)."""

    leg: int
    call_id: str
    persona: str
    room: Room
    participant: AgentParticipant
    on_exit: Callable[[str, dict[str, Any]], None]
    on_action: Callable[[str, dict[str, Any]], None]
    done: bool = False
    taken_over_by: str | None = None


class PersonaDispatcher:
    def __init__(self, storage: Storage, workers: WorkerRegistry):
        self.storage = storage
        self.workers = workers  # the hub's registry, kept by the participant server; read here
        self.jobs: dict[tuple[str, int], PersonaAssignment] = {}
        self._legs = itertools.count(1)
        # Told of a persona's summary for the supervisor who took its call over: (call id, text).
        self.on_summary: list[Callable[[str, str], None]] = []

    # --- AgentHandler (called by the participant server)
    def agent_lost(self, agent: WorkerConnection) -> None:
        for (name, _leg), job in list(self.jobs.items()):
            if name == agent.name:
                self._finish(job, "failed", {}, "persona worker lost")

    def agent_message(self, agent: WorkerConnection, message: BaseModel) -> None:
        leg = getattr(message, "leg", None)
        job = self.jobs.get((agent.name, leg)) if leg is not None else None
        if job is None:
            return  # a message about a job already ended
        handler = _HANDLERS.get(type(message))
        if handler is None:
            log.warning("unexpected message from a persona worker", extra=log_extra(type=getattr(message, "type", "?")))
            return
        handler(self, job, message)

    # --- the flow runner's side
    def start(self, call_id: str, room: Room, persona: str, variables: dict[str, Any],
              on_exit: Callable[[str, dict[str, Any]], None],
              on_action: Callable[[str, dict[str, Any]], None]) -> PersonaAssignment | None:
        """Dispatch `persona` to the call; None when no persona worker has room for it."""
        free = [a for a in self.workers.agents.values() if len(a.legs) < a.capacity]
        if not free:
            log.error("no persona worker available", extra=log_extra(call_id=call_id, persona=persona))
            return None
        agent = min(free, key=lambda a: len(a.legs))
        leg = next(self._legs)
        participant = AgentParticipant(f"persona:{persona}:{leg}", agent, leg)
        room.join(participant)
        agent.legs[leg] = participant
        job = PersonaAssignment(leg, call_id, persona, room, participant, on_exit, on_action)
        self.jobs[(agent.name, leg)] = job
        plain = {k: v for k, v in variables.items() if isinstance(v, (str, int, float, bool)) or v is None}
        agent.send(p.Dispatch(leg=leg, call_id=call_id, persona=persona, variables=plain))
        self.storage.add_event(call_id, "persona_started", {"persona": persona, "worker": agent.name})
        log.info("persona dispatched", extra=log_extra(call_id=call_id, persona=persona, worker=agent.name))
        return job

    def release(self, job: PersonaAssignment) -> None:
        """The call ended (or the flow moved on): the persona leaves."""
        if not job.done:
            job.participant.connection.send(p.Release(leg=job.leg))
            self._finish(job, None, {}, "released")

    def instruct(self, call_id: str, text: str, by: str) -> bool:
        """A supervisor (`by`) whispers `text` to the persona on the call: it goes into the
        persona's context for its next reply, the caller hears none of it. False when no
        persona is on the call; ValueError for empty text or text over p.MAX_INSTRUCTION."""
        job = self._job(call_id)
        if job is None:
            return False
        message = p.Instruct(leg=job.leg, text=text, by=by)
        job.participant.connection.send(message)
        row = self.storage.add_transcript(call_id, "supervisor", by, text)
        self.storage.add_event(call_id, "supervisor_instruction", {"identity": by, "text": text})
        # From the persona's participant, as every transcript line is, so that every listener
        # gets it, the supervisor who typed it included (it is not the sender).
        job.room.send_data(TRANSCRIPT_TOPIC, row, sender=job.participant.identity)
        log.info("supervisor whisper sent", extra=log_extra(call_id=call_id, identity=by, persona=job.persona))
        return True

    def take_over(self, call_id: str, by: str) -> str | None:
        """Supervisor `by` talks to the caller now: the persona is silenced at once (its queued
        reply dropped) and its worker switches its input and output off. The persona's name, or
        None when no persona is on the call (or it is already taken over)."""
        return self._switch(call_id, by, enabled=False)

    def hand_back(self, call_id: str, by: str) -> str | None:
        """The supervisor gives the caller back to the persona, which listens again."""
        return self._switch(call_id, by, enabled=True)

    def _switch(self, call_id: str, by: str, enabled: bool) -> str | None:
        job = self._job(call_id)
        if job is None or (job.taken_over_by is None) == enabled:
            return None
        job.taken_over_by = None if enabled else by
        # Muting here stops the reply at the next 20 ms tick, whatever the worker is busy with;
        # the worker's barge-in (ClearAudio) then drops the rest and learns what was played.
        job.participant.muted = not enabled
        job.participant.connection.send(p.PersonaIO(leg=job.leg, enabled=enabled, by=by))
        log.info("persona handed back" if enabled else "persona taken over",
                 extra=log_extra(call_id=call_id, persona=job.persona, identity=by))
        return job.persona

    def _job(self, call_id: str) -> PersonaAssignment | None:
        return next((j for j in self.jobs.values() if j.call_id == call_id and not j.done), None)

    # --- messages from the persona worker
    def _summary(self, job: PersonaAssignment, message: p.Summary) -> None:
        self.storage.add_event(job.call_id, "persona_summary", {"persona": job.persona, "text": message.text})
        for listener in self.on_summary:
            listener(job.call_id, message.text)

    def _segment_end(self, job: PersonaAssignment, message: p.SegmentEnd) -> None:
        job.participant.segment_end(message.segment)

    def _clear_audio(self, job: PersonaAssignment, message: p.ClearAudio) -> None:
        job.participant.clear(message.segment)

    def _transcript(self, job: PersonaAssignment, message: p.Transcript) -> None:
        speaker = "caller" if message.role == "caller" else (message.persona or job.persona)
        if message.role == "caller":
            job.participant.caller_turn_ended()
        row = self.storage.add_transcript(job.call_id, message.role, speaker, message.text, message.interrupted)
        job.room.send_data(TRANSCRIPT_TOPIC, row, sender=job.participant.identity)

    def _tool_event(self, job: PersonaAssignment, message: p.ToolEvent) -> None:
        self.storage.add_event(job.call_id, "tool", {"name": message.name, "arguments": message.arguments,
                                                     "result": message.result})

    def _call_action(self, job: PersonaAssignment, message: p.CallAction) -> None:
        job.on_action(message.action, message.arguments)

    def _exit(self, job: PersonaAssignment, message: p.PersonaExit) -> None:
        if job.taken_over_by is not None:
            # Sent before the worker learnt of the take-over: the supervisor has the caller now,
            # and where the call goes next is theirs to decide.
            log.info("persona exit ignored: taken over",
                     extra=log_extra(call_id=job.call_id, exit=message.exit, identity=job.taken_over_by))
            return
        self._finish(job, message.exit, message.variables, message.reason)

    def _finish(self, job: PersonaAssignment, exit_: str | None, variables: dict[str, Any], reason: str) -> None:
        if job.done:
            return
        job.done = True
        connection = job.participant.connection
        connection.legs.pop(job.leg, None)
        self.jobs.pop((connection.name, job.leg), None)
        job.room.leave(job.participant.identity)
        self.storage.add_event(job.call_id, "persona_ended", {"persona": job.persona, "exit": exit_, "reason": reason})
        if exit_ is not None:
            job.on_exit(exit_, variables)


_HANDLERS: dict[type, Callable[[PersonaDispatcher, PersonaAssignment, Any], None]] = {
    p.SegmentEnd: PersonaDispatcher._segment_end,
    p.ClearAudio: PersonaDispatcher._clear_audio,
    p.Transcript: PersonaDispatcher._transcript,
    p.ToolEvent: PersonaDispatcher._tool_event,
    p.CallAction: PersonaDispatcher._call_action,
    p.PersonaExit: PersonaDispatcher._exit,
    p.Summary: PersonaDispatcher._summary,
}
