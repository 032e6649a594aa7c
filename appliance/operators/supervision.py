"""Supervisors on live calls: join any call to listen, whisper or barge, switch between them
without leaving, take the call over from its operator or AI persona, and hand it back to the
persona.

Who hears whom is the hub's business (a participant's `audience`); here each mode is turned
into an audience, every step is an audited call event, and the supervisor is told what the
call is and was (`joined`), including the persona's own summary when it writes one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.core.reasons import EndReason
from appliance.observability.logging import log_extra
from appliance.operators import protocol as op
from appliance.operators.context import call_context

if TYPE_CHECKING:
    from appliance.operators.desk import Desk, QueuedCall, Session

log = logging.getLogger(__name__)

SUPERVISING = ("supervisor", "admin")
NO_LIVE_TRANSCRIPT = ("No live transcript while people talk: the offline recogniser follows menus and persona "
                      "turns, not open conversation. The recording has both sides.")


class Supervision:
    def __init__(self, desk: Desk):
        self.desk = desk
        self.storage = desk.storage

    def handle(self, session: Session, message: Any) -> str | None:
        """A supervisor's console message; an error to say back, or None. Raises KeyError for a
        message supervisors do not send."""
        return self._handlers[type(message)](self, session, message)

    def handles(self, message: Any) -> bool:
        return type(message) in self._handlers

    # --- what the desk tells supervisors
    def call_ended(self, call_id: str) -> None:
        for watcher in list(self.desk.sessions.values()):
            if watcher.joined == call_id:
                self.leave(watcher, "call ended")

    def summary(self, call_id: str, text: str) -> None:
        """The persona's summary of a call a supervisor took over from it (personas' on_summary)."""
        for watcher in self.desk.sessions.values():
            if watcher.joined == call_id and watcher.taken_from and watcher.taken_from.startswith("persona:"):
                watcher.send(op.PersonaSummary(call=call_id, persona=watcher.taken_from.removeprefix("persona:"),
                                               text=text))

    def leave(self, session: Session, reason: str) -> None:
        call_id, session.joined = session.joined, None
        self.desk.out_of_room(session)
        session.participant.audience = None
        session.mode = session.taken_from = None
        if call_id is not None:
            self.storage.add_event(call_id, "supervisor_left", {"identity": session.identity, "reason": reason})
            session.send(op.LeftCall(call=call_id, reason=reason))

    # --- the supervisor's requests
    def _join_call(self, session: Session, message: op.JoinCall) -> str | None:
        call = self.desk.lookup(message.call)
        if call is None:
            return "no such live call"
        if session.mode == "taken_over":
            return "you are talking to a caller: hang up first"
        if session.joined is not None and session.joined != call.id:
            self.leave(session, "joined another call")
        session.joined = call.id
        if session.participant.room is None:
            self.desk.join_room(session, call)
        self._apply_mode(session, call, message.mode)
        self.storage.add_event(call.id, "supervisor_joined", {"identity": session.identity, "mode": message.mode})
        self._send_joined(session, call)
        return None

    def _set_mode(self, session: Session, message: op.SetMode) -> str | None:
        call = self.desk.lookup(session.joined or "")
        if call is None:
            return "not in a call"
        if session.mode == "taken_over":
            return "you have taken this call over"
        self._apply_mode(session, call, message.mode)
        self.storage.add_event(call.id, "supervisor_mode", {"identity": session.identity, "mode": message.mode})
        self._send_joined(session, call)
        return None

    def _whisper_text(self, session: Session, message: op.WhisperText) -> str | None:
        call = self.desk.lookup(session.joined or "")
        if call is None:
            return "not in a call"
        if not call.instruct_persona(message.text, session.identity):
            return "no AI persona is on this call; whisper by voice to its operator"
        return None

    def _take_over(self, session: Session, message: op.TakeOver) -> str | None:
        call = self.desk.lookup(session.joined or "")
        if call is None:
            return "not in a call"
        if session.mode == "taken_over":
            return "you have taken this call over already"
        waiting = self.desk.calls.get(call.id)
        if waiting is not None and waiting.operator is not None:
            taken_from = waiting.operator
            self.desk.release_operator(call.id, f"taken over by {session.identity}")
        elif (persona := call.take_over_persona(session.identity)) is not None:
            taken_from = f"persona:{persona}"
        else:
            return "nobody to take this call from (it is with the flow or waiting in a queue)"
        session.mode = "taken_over"
        session.taken_from = taken_from
        session.participant.audience = None
        self.storage.add_event(call.id, "taken_over", {"identity": session.identity, "from": taken_from})
        self.storage.update_call(call.id, operator=session.identity)
        log.info("call taken over",
                 extra=log_extra(call_id=call.id, supervisor=session.identity, taken_from=taken_from))
        self._send_joined(session, call)
        return None

    def _hand_back(self, session: Session, message: op.HandBack) -> str | None:
        call = self.desk.lookup(session.joined or "")
        if call is None:
            return "not in a call"
        if session.mode != "taken_over" or not (session.taken_from or "").startswith("persona:"):
            return "only a call taken over from an AI persona can be handed back"
        persona = call.hand_back_persona(session.identity)
        if persona is None:
            return "the persona has left this call"
        self.storage.add_event(call.id, "handed_back", {"identity": session.identity, "to": f"persona:{persona}"})
        log.info("call handed back", extra=log_extra(call_id=call.id, supervisor=session.identity, persona=persona))
        session.taken_from = None
        self._apply_mode(session, call, "listen")
        self._send_joined(session, call)
        return None

    def _hangup(self, session: Session, message: op.HangUp) -> str | None:
        call = self.desk.lookup(session.joined or "") if session.mode == "taken_over" else None
        if call is None:
            return "not on a call"
        call.hangup(EndReason.OPERATOR_HANGUP)
        return None

    def _leave(self, session: Session, message: op.LeaveCall) -> str | None:
        if session.joined is None:
            return "not in a call"
        if session.mode == "taken_over":
            return "you are talking to the caller: hang up or hand back first"
        self.leave(session, "left")
        return None

    def _ping(self, session: Session, message: op.Ping) -> str | None:
        session.send(op.Pong(id=message.id))
        return None

    # --- modes and what the supervisor sees
    def _apply_mode(self, session: Session, call: QueuedCall, mode: str) -> None:
        waiting = self.desk.calls.get(call.id)
        operator = waiting.operator if waiting is not None else None
        audiences: dict[str, frozenset[str] | None] = {
            "listen": frozenset(),
            # On an AI call there is nobody to whisper to by voice: the persona takes typed whispers.
            "whisper": frozenset({operator}) if operator else frozenset(),
            "barge": None,
        }
        session.participant.audience = audiences[mode]
        session.mode = mode

    def _send_joined(self, session: Session, call: QueuedCall) -> None:
        waiting = self.desk.calls.get(call.id)
        variables = call.variables()
        context = call_context(self.storage, call.id, waiting.queue if waiting else "", 0.0, variables)
        on_call = [f"persona:{name}" for name in [call.persona()] if name]
        if waiting is not None and waiting.operator:
            on_call.append(waiting.operator)
        if session.mode == "taken_over":
            on_call.append(session.identity)
        # People's words are not recognised live: pocketsphinx is reliable with a grammar, not on open
        # conversation, and the box ships no open-vocabulary model. Personas transcribe their own calls.
        persona_call = call.persona() or (session.taken_from or "").startswith("persona:")
        session.send(op.Joined(call=call.id, mode=session.mode or "listen", context=context,
                               timeline=list(self.storage.events(call.id)), on_call=on_call or ["flow"],
                               transcript_note="" if persona_call else NO_LIVE_TRANSCRIPT,
                               taken_from=session.taken_from))

    _handlers: dict[type, Callable[[Supervision, Session, Any], str | None]] = {
        op.JoinCall: _join_call, op.SetMode: _set_mode, op.WhisperText: _whisper_text, op.TakeOver: _take_over,
        op.HandBack: _hand_back, op.LeaveCall: _leave, op.HangUp: _hangup, op.Ping: _ping,
    }
