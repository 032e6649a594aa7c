"""The operator desk: browsers' sessions, the ACD's decisions carried out, operators in rooms.

It is the hub's `BrowserHandler` (WebRTC gateway workers report sessions and data-channel
messages here) and the one place that executes the ACD's actions: ringing a console,
joining an operator to a caller's room, holding, wrapping up. The ACD itself decides
nothing here; the calls it serves are reached through `QueuedCall`, which the call manager
implements, so operators never import calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ValidationError

from appliance.core.clock import iso_now
from appliance.core.reasons import EndReason
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.operators import acd as a
from appliance.operators import protocol as op
from appliance.operators.context import call_context
from appliance.operators.supervision import SUPERVISING, Supervision
from appliance.rooms import protocol as p
from appliance.rooms.room import Room
from appliance.rooms.server import BrowserParticipant, WorkerConnection, WorkerRegistry
from appliance.storage import Storage

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 15.0  # aiortc gathers candidates before it answers: well under a second on a LAN
# How often the wallboard is rebuilt and compared with what consoles hold: a change reaches them
# within this, as an update of the rows that changed (whole boards at this rate flooded the
# WebRTC worker at 50 calls and 10 supervisors: bench/supervisors.py).
WALLBOARD_S = 0.2


class DeskError(Exception):
    """A browser session cannot be made (no WebRTC worker, a refused offer): said to the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class QueuedCall(Protocol):
    """An escalated call as the desk sees it (the call manager implements it)."""

    id: str
    room: Room

    def variables(self) -> dict[str, Any]: ...
    def connected(self, operator: str) -> None: ...
    def returned(self) -> None: ...
    def overflow(self, reason: str) -> None: ...
    def announce(self, text: str) -> None: ...
    def hold(self, on: bool) -> None: ...
    def hangup(self, reason: str) -> None: ...
    def ring_member(self, uri: str, timeout: float, answered: Callable[[bool], None]) -> None: ...
    def stop_ringing_member(self) -> None: ...
    def transfer(self, to: str, done: Callable[[bool, str | None], None]) -> bool: ...
    def step(self) -> str | None: ...
    def flow(self) -> str: ...
    def persona(self) -> str | None: ...
    def instruct_persona(self, text: str, by: str) -> bool: ...
    def take_over_persona(self, by: str) -> str | None: ...
    def hand_back_persona(self, by: str) -> str | None: ...


@dataclass
class Session:
    """One browser's WebRTC session: a person, their audio leg and their control channel."""

    identity: str
    role: str
    queues: list[str]
    participant: BrowserParticipant
    answer: asyncio.Future[p.RtcAnswer]
    open: bool = False
    call: str | None = None  # the call they are on (in its room unless held)
    held: bool = False
    muted: bool = False
    offers: set[str] = field(default_factory=set)
    joined: str | None = None  # a supervisor: the call they are in
    mode: str | None = None  # listen | whisper | barge | taken_over
    taken_from: str | None = None  # taken over: the operator or persona:<name> it was taken from

    def send(self, message: BaseModel) -> None:
        self.participant.send(message.model_dump(mode="json"))


@dataclass
class Waiting:
    call: QueuedCall
    queue: str
    since: float  # the ACD's clock when it (last) began waiting
    operator: str | None = None  # who has it, once connected


class Desk:
    def __init__(self, storage: Storage, workers: WorkerRegistry, acd: a.ACD,
                 queue_info: Callable[[str], tuple[list[str], float]], operator_lost_s: float = 5.0,
                 ice_servers: Callable[[], list[dict[str, Any]]] = list):
        self.storage = storage
        self.workers = workers
        self.acd = acd
        self.queue_info = queue_info  # queue → (dispositions, wrap_up seconds)
        self.operator_lost_s = operator_lost_s
        self.ice_servers = ice_servers
        self.sessions: dict[tuple[str, int], Session] = {}
        self.calls: dict[str, Waiting] = {}
        self.sip_members: dict[str, list[str]] = {}  # a desk phone's URI → the queues it serves
        self._next_leg = 0
        self._lost: dict[str, asyncio.TimerHandle] = {}  # operator → the timer that gives up on them
        # Set by the composition root once the call manager exists (it needs the desk first):
        # any live call by id, and the wallboard's figures.
        self.lookup: Callable[[str], QueuedCall | None] = lambda call_id: None
        self.wallboard: Callable[[], op.Wallboard] | None = None
        self._board: op.Wallboard | None = None  # what every open supervisor's console holds
        self._next_wallboard = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.supervision = Supervision(self)

    # --- lifecycle
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._clock(), name="desk-clock")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        for session in list(self.sessions.values()):
            session.participant.close("appliance stopping")

    async def _clock(self) -> None:
        """Ring timeouts, wrap-up ends and announcements fall due on the ACD's clock."""
        while True:
            # Whichever comes first: something the ACD must do, or the next wallboard.
            due = [t for t in (self.acd.next_deadline(), self._next_wallboard) if t is not None]
            wait = max(0.0, min(WALLBOARD_S, min(due) - self.acd.clock()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._run(self.acd.tick())
            self._publish_wallboard()

    def _publish_wallboard(self) -> None:
        """The rows that changed since consoles were last told, to every supervisor (built from
        memory, not SQLite; nothing is sent when nothing changed)."""
        now = self.acd.clock()
        if self.wallboard is None or now < self._next_wallboard:
            return
        self._next_wallboard = now + WALLBOARD_S
        watchers = [s for s in self.sessions.values() if s.open and s.role in SUPERVISING]
        if not watchers:
            self._board = None  # the next supervisor gets a fresh board
            return
        board = self.wallboard()
        update = op.diff(self._board, board) if self._board is not None else None
        self._board = board
        if update is not None:
            for session in watchers:
                session.send(update)

    def _send_wallboard(self, session: Session) -> None:
        """A supervisor's console opened: the board every other console holds, which the
        updates that follow build on."""
        if self.wallboard is None:
            return
        if self._board is None:
            self._board = self.wallboard()
        session.send(self._board)

    # --- browser sessions
    async def connect(self, identity: str, role: str, queues: list[str], sdp: str) -> str:
        """A browser's offer → the WebRTC worker's answer. One session per browser tab."""
        worker = max(self.workers.rtc.values(), key=lambda w: w.room_for_calls, default=None)
        if worker is None or worker.room_for_calls <= 0:
            raise DeskError(503, "no WebRTC gateway can take a session now")
        self._next_leg += 1
        leg = self._next_leg
        participant = BrowserParticipant(identity, worker, leg)
        answer: asyncio.Future[p.RtcAnswer] = asyncio.get_running_loop().create_future()
        session = Session(identity, role, queues, participant, answer)
        worker.legs[leg] = participant
        self.sessions[(worker.name, leg)] = session
        worker.send(p.RtcOffer(leg=leg, sdp=sdp, identity=identity, ice_servers=self.ice_servers()))
        try:
            reply = await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            self._drop(worker, leg)
            raise DeskError(504, "the WebRTC gateway did not answer") from None
        if not reply.ok:
            self._drop(worker, leg)
            raise DeskError(400, f"offer refused: {reply.error}")
        log.info("browser session answered", extra=log_extra(operator=identity, worker=worker.name, leg=leg))
        return reply.sdp

    def rtc_message(self, worker: WorkerConnection, message: BaseModel) -> None:
        leg = getattr(message, "leg", None)
        session = self.sessions.get((worker.name, leg)) if isinstance(leg, int) else None
        if session is None:
            return  # a session the desk already let go
        if isinstance(message, p.RtcAnswer):
            if not session.answer.done():
                session.answer.set_result(message)
        elif isinstance(message, p.RtcState):
            if message.state == "open":
                self._opened(session)
            else:
                self._closed(worker, session, message.reason or "browser gone")
        elif isinstance(message, p.RtcData):
            self._client_message(session, message.payload)

    def rtc_lost(self, worker: WorkerConnection) -> None:
        for (name, _), session in list(self.sessions.items()):
            if name == worker.name:
                self._closed(worker, session, "WebRTC gateway lost")

    def _opened(self, session: Session) -> None:
        if session.open:
            return
        session.open = True
        for other in self._sessions_of(session.identity):
            if other is not session and other.open:
                # A second tab (or a reload whose old session lingers): the newest one is the console.
                other.participant.close("signed in elsewhere")
        session.send(op.Welcome(identity=session.identity, role=session.role, queues=session.queues))
        if session.role in SUPERVISING:
            self._send_wallboard(session)
        pending = self._lost.pop(session.identity, None)
        if pending is not None:
            # The browser came back (a reload, a network blip) before the caller was given up on.
            pending.cancel()
            waiting = next((w for w in self.calls.values() if w.operator == session.identity), None)
            if waiting is not None:
                session.call = waiting.call.id
                self.join_room(session, waiting.call)
                session.send(op.CallState(call=waiting.call.id, state="connected", reason="rejoined"))
                return
        if session.role == "operator":
            # Signed in is not ready: the console says when (a `state` message), so no call rings
            # a browser whose operator has not yet sat down.
            self._run(self.acd.login(session.identity, session.queues, away=True, reason="signed in"))

    def _closed(self, worker: WorkerConnection, session: Session, reason: str) -> None:
        self._drop(worker, session.participant.leg)
        if not session.open:
            return
        session.open = False
        if any(s.open for s in self._sessions_of(session.identity)):
            return  # replaced by a newer tab: the operator is still here
        log.warning("operator's browser gone", extra=log_extra(operator=session.identity, reason=reason,
                                                               call_id=session.call))
        if session.call is not None and session.call in self.calls:
            self.out_of_room(session)
            identity = session.identity
            self.storage.add_event(session.call, "operator_lost", {"identity": identity, "reason": reason})
            self._lost[identity] = asyncio.get_running_loop().call_later(
                self.operator_lost_s, self._give_up, identity)
            return
        if session.joined is not None:
            # A supervisor who had taken the call over leaves the caller with nobody: said in the log.
            self.supervision.leave(session, "browser gone")
        self._run(self.acd.logout(session.identity) if session.role == "operator" else [])

    def _give_up(self, identity: str) -> None:
        """The operator did not come back: the caller returns to the head of the queue."""
        self._lost.pop(identity, None)
        self._run(self.acd.operator_lost(identity))

    def _drop(self, worker: WorkerConnection, leg: int) -> None:
        worker.legs.pop(leg, None)
        session = self.sessions.pop((worker.name, leg), None)
        if session is not None and session.participant.room is not None:
            session.participant.room.leave(session.identity)

    def _sessions_of(self, identity: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.identity == identity]

    def session_of(self, identity: str) -> Session | None:
        return next((s for s in self._sessions_of(identity) if s.open), None)

    # --- the console's messages
    def _client_message(self, session: Session, payload: dict[str, Any]) -> None:
        try:
            message = op.client_messages.validate_python(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            session.send(op.Error(message=f"{where}: {first['msg']}", request=str(payload.get("type", ""))[:32]))
            return
        handler = self._handlers.get(type(message))
        if session.role in SUPERVISING and self.supervision.handles(message):
            error = self.supervision.handle(session, message)
        elif session.role not in SUPERVISING and handler is not None:
            error = handler(self, session, message)
        else:
            log.warning("console request refused: role", extra=log_extra(operator=session.identity,
                                                                         role=session.role, request=message.type))
            session.send(op.Error(message="not allowed for this role", request=message.type))
            return
        if error:
            log.warning("console request refused", extra=log_extra(operator=session.identity, request=message.type,
                                                                   error=error))
            session.send(op.Error(message=error, request=message.type))

    def _set_state(self, session: Session, message: op.SetState) -> str | None:
        if message.state == "logged_out":
            if session.call is not None:
                return "hang up or transfer the call first"
            self._run(self.acd.logout(session.identity))
            session.participant.close("logged out")
            return None
        if session.call is not None:
            return "finish the call first"
        self._run(self.acd.set_state(session.identity, message.state, message.reason))
        return None

    def _accept(self, session: Session, message: op.Accept) -> str | None:
        if message.offer not in session.offers:
            return "no such offer for you"
        self._run(self.acd.accept(session.identity, message.offer))
        return None

    def _decline(self, session: Session, message: op.Decline) -> str | None:
        if message.offer not in session.offers:
            return "no such offer for you"
        self._run(self.acd.decline(session.identity, message.offer))
        return None

    def _mute(self, session: Session, message: op.Mute) -> str | None:
        if session.call is None:
            return "not on a call"
        session.muted = message.muted
        session.participant.muted = message.muted
        self._call_state(session, "held" if session.held else "connected")
        return None

    def _hold(self, session: Session, message: op.Hold | op.Resume) -> str | None:
        waiting = self.calls.get(session.call or "")
        if waiting is None:
            return "not on a call"
        held = isinstance(message, op.Hold)
        if held == session.held:
            return None
        session.held = held
        if held:
            self.out_of_room(session)
        else:
            self.join_room(session, waiting.call)
        waiting.call.hold(held)
        self.storage.add_event(waiting.call.id, "held" if held else "resumed", {"identity": session.identity})
        self._call_state(session, "held" if held else "connected")
        return None

    def _transfer(self, session: Session, message: op.TransferTo) -> str | None:
        waiting = self.calls.get(session.call or "")
        if waiting is None:
            return "not on a call"
        if message.to is not None:
            return self._transfer_out(session, waiting, message.to)
        if message.queue is None:
            return "name a queue or a destination to transfer to"
        if message.queue not in self.acd.queues:
            return f"no queue named {message.queue!r}"
        self.storage.add_event(waiting.call.id, "operator_transfer", {"identity": session.identity,
                                                                      "queue": message.queue})
        self.leave_call(session, waiting, "transferred")
        self.wrap_up_due(session, waiting.call.id, waiting.queue)
        waiting.operator = None
        waiting.queue = message.queue
        waiting.since = self.acd.clock()
        waiting.call.returned()
        self._run(self.acd.transfer(waiting.call.id, message.queue))
        return None

    def _transfer_out(self, session: Session, waiting: Waiting, to: str) -> str | None:
        """Bridge the caller to `to`; the operator stays on until it answers (and on the call if it fails)."""
        identity, call_id = session.identity, waiting.call.id

        def done(ok: bool, error: str | None) -> None:
            current = self.session_of(identity)
            if not ok:
                self.storage.add_event(call_id, "operator_transfer_failed", {"identity": identity, "error": error})
                if current is not None:
                    current.send(op.Error(message=f"transfer to {to} failed: {error}", request="transfer"))
                return
            left = self.calls.pop(call_id, None)
            if left is None:
                return  # the caller hung up meanwhile
            if current is not None:
                self.leave_call(current, left, "transferred")
                self.wrap_up_due(current, call_id, left.queue)
            self.storage.add_event(call_id, "operator_left", {"identity": identity})
            self._run(self.acd.call_ended(identity, call_id))

        if not waiting.call.transfer(to, done):
            return f"{to} is not an allowed destination (transfers.allowed)"
        self.storage.add_event(call_id, "operator_transfer", {"identity": identity, "to": to})
        return None

    def _hangup(self, session: Session, message: op.HangUp) -> str | None:
        waiting = self.calls.get(session.call or "")
        if waiting is None:
            return "not on a call"
        waiting.call.hangup(EndReason.OPERATOR_HANGUP)  # comes back through call_ended
        return None

    def _wrap_up(self, session: Session, message: op.WrapUp) -> str | None:
        if not self.storage.handled_by(message.call, session.identity):
            return "not your call"
        queue = next((e["data"].get("queue") for e in self.storage.events(message.call)
                      if e["kind"] == "accepted" and e["data"].get("identity") == session.identity), None)
        dispositions, _ = self.queue_info(queue or "")
        if message.disposition not in dispositions:
            return f"disposition must be one of: {', '.join(dispositions)}"
        self.storage.add_event(message.call, "wrap_up", {"identity": session.identity,
                                                         "disposition": message.disposition, "notes": message.notes})
        return None

    def _ping(self, session: Session, message: op.Ping) -> str | None:
        session.send(op.Pong(id=message.id))
        return None

    _handlers: dict[type, Callable[[Desk, Session, Any], str | None]] = {
        op.SetState: _set_state, op.Accept: _accept, op.Decline: _decline, op.Mute: _mute, op.Hold: _hold,
        op.Resume: _hold, op.TransferTo: _transfer, op.HangUp: _hangup, op.WrapUp: _wrap_up, op.Ping: _ping,
    }

    def queues_changed(self, queues: dict[str, a.QueueSettings], sip_members: dict[str, list[str]]) -> None:
        """flows/queues.yaml was (re)loaded: new settings, and desk phones logged in or out."""
        self._run(self.acd.update_queues(queues))
        for uri in set(self.sip_members) - set(sip_members):
            self._run(self.acd.logout(uri, reason="removed from queues.yaml"))
        for uri, served in sip_members.items():
            self._run(self.acd.login(uri, served, kind="sip"))
        self.sip_members = dict(sip_members)

    # --- calls (from the call manager)
    def enqueue(self, call: QueuedCall, queue: str) -> None:
        self.calls[call.id] = Waiting(call, queue, self.acd.clock())
        self.storage.add_event(call.id, "queued", {"queue": queue})
        self._run(self.acd.enqueue(call.id, queue))

    def call_ended(self, call_id: str) -> None:
        """The call is over (either side hung up, or it failed)."""
        self.supervision.call_ended(call_id)
        waiting = self.calls.pop(call_id, None)
        if waiting is None:
            return
        if waiting.operator is None:
            metrics.queue_abandoned.labels(waiting.queue).inc()
            self._run(self.acd.caller_left(call_id))
            return
        identity = waiting.operator
        pending = self._lost.pop(identity, None)
        if pending is not None:
            pending.cancel()
        session = self.session_of(identity)
        if session is not None:
            self.leave_call(session, waiting, "ended")
        self.storage.add_event(call_id, "operator_left", {"identity": identity})
        self._run(self.acd.call_ended(identity, call_id))
        if session is not None:
            self.wrap_up_due(session, call_id, waiting.queue)

    def release_operator(self, call_id: str, reason: str) -> None:
        """The operator leaves a call that goes on without them (a supervisor took it over): to wrap-up."""
        waiting = self.calls.pop(call_id, None)
        if waiting is None or waiting.operator is None:
            return
        identity = waiting.operator
        session = self.session_of(identity)
        if session is not None:
            self.leave_call(session, waiting, reason)
            self.wrap_up_due(session, call_id, waiting.queue)
        self.storage.add_event(call_id, "operator_left", {"identity": identity})
        self._run(self.acd.call_ended(identity, call_id))

    def wrap_up_due(self, session: Session, call_id: str, queue: str) -> None:
        dispositions, wrap_up = self.queue_info(queue)
        session.send(op.WrapUpDue(call=call_id, dispositions=dispositions, seconds=wrap_up))

    @staticmethod
    def out_of_room(session: Session) -> None:
        if session.participant.room is not None:
            session.participant.room.leave(session.identity)

    def leave_call(self, session: Session, waiting: Waiting, reason: str) -> None:
        self.out_of_room(session)
        session.call = None
        session.held = session.muted = False
        session.participant.muted = False
        session.send(op.CallState(call=waiting.call.id, state="ended", reason=reason))

    def join_room(self, session: Session, call: QueuedCall) -> None:
        if session.participant.room is None and not call.room.closed:
            assert session.participant.track is not None
            session.participant.track.clear()  # what the microphone caught before the call
            call.room.join(session.participant)

    def _call_state(self, session: Session, state: Literal["connected", "held"]) -> None:
        if session.call is not None:
            session.send(op.CallState(call=session.call, state=state, muted=session.muted))

    # --- the ACD's decisions, carried out
    def _run(self, actions: list[a.Action]) -> None:
        for action in actions:
            handler = self._actions.get(type(action))
            if handler is None:
                raise TypeError(f"the desk has no handler for {type(action).__name__}")
            handler(self, action)
        if actions:
            self._wake.set()
            self._gauges()

    def _offer(self, action: a.Offer) -> None:
        waiting = self.calls.get(action.call_id)
        if waiting is not None and action.operator in self.sip_members:
            self.storage.add_event(action.call_id, "offered_to", {"identity": action.operator,
                                                                 "offer": action.offer_id})
            waiting.call.ring_member(action.operator, action.ring_timeout,
                                     lambda ok: self._member_answered(action.operator, action.offer_id, ok))
            return
        session = self.session_of(action.operator)
        if waiting is None or session is None:
            return
        session.offers.add(action.offer_id)
        waited = self.acd.clock() - waiting.since
        context = call_context(self.storage, action.call_id, action.queue, waited, waiting.call.variables())
        session.send(op.Offered(offer=action.offer_id, call=action.call_id, ring_timeout_s=action.ring_timeout,
                                context=context))
        self.storage.add_event(action.call_id, "offered_to", {"identity": action.operator, "offer": action.offer_id})

    def _member_answered(self, uri: str, offer_id: str, ok: bool) -> None:
        self._run(self.acd.accept(uri, offer_id) if ok else self.acd.decline(uri, offer_id))

    def _withdraw(self, action: a.Withdraw) -> None:
        metrics.operator_offers.labels(action.reason).inc()
        waiting = self.calls.get(action.call_id)
        if action.operator in self.sip_members and waiting is not None and action.reason != "declined":
            waiting.call.stop_ringing_member()  # rang out, taken by another, or the caller left
        session = self.session_of(action.operator)
        if session is not None:
            session.offers.discard(action.offer_id)
            session.send(op.OfferWithdrawn(offer=action.offer_id, reason=action.reason))
        kind = {"declined": "declined", "ring_timeout": "missed"}.get(action.reason)
        if kind and action.call_id in self.calls:
            self.storage.add_event(action.call_id, kind, {"identity": action.operator, "offer": action.offer_id})

    def _connect(self, action: a.Connect) -> None:
        metrics.operator_offers.labels("accepted").inc()
        metrics.queue_wait.labels(action.queue).observe(action.waited_s)
        settings = self.acd.queues.get(action.queue)
        if settings is not None and action.waited_s <= settings.service_level_s:
            metrics.queue_answered_in_service_level.labels(action.queue).inc()
        waiting = self.calls.get(action.call_id)
        session = self.session_of(action.operator)
        member = action.operator in self.sip_members
        if waiting is None or (session is None and not member):
            return  # the ACD learns of it through caller_left / operator_lost, already on their way
        waiting.operator = action.operator
        self.storage.add_event(waiting.call.id, "accepted", {"identity": action.operator, "queue": action.queue,
                                                             "offer": action.offer_id,
                                                             "waited_s": round(action.waited_s, 2)})
        self.storage.add_event(waiting.call.id, "operator_joined", {"identity": action.operator})
        self.storage.update_call(waiting.call.id, operator=action.operator)
        waiting.call.connected(action.operator)
        log.info("operator connected", extra=log_extra(call_id=waiting.call.id, operator=action.operator,
                                                       waited_s=round(action.waited_s, 2)))
        if session is None:
            return  # a desk phone: the bridged leg is in the room already
        session.offers.discard(action.offer_id)
        session.call = waiting.call.id
        self.join_room(session, waiting.call)
        context = call_context(self.storage, waiting.call.id, action.queue, action.waited_s,
                               waiting.call.variables())
        session.send(op.CallState(call=waiting.call.id, state="connected", context=context))

    def _announce(self, action: a.Announce) -> None:
        waiting = self.calls.get(action.call_id)
        if waiting is not None and waiting.operator is None:
            self.storage.add_event(action.call_id, "announced", {"position": action.position})
            waiting.call.announce(_position(action.position))

    def _overflow(self, action: a.Overflow) -> None:
        waiting = self.calls.pop(action.call_id, None)
        if waiting is not None:
            self.storage.add_event(action.call_id, "queue_overflow", {"queue": action.queue, "reason": action.reason})
            waiting.call.overflow(action.reason)

    def _returned(self, action: a.Requeued) -> None:
        waiting = self.calls.get(action.call_id)
        if waiting is None or waiting.operator is None:
            return
        session = self.session_of(waiting.operator)
        if session is not None:
            self.leave_call(session, waiting, "returned to queue")
        self.storage.add_event(action.call_id, "requeued", {"queue": action.queue, "identity": waiting.operator})
        waiting.operator = None
        waiting.queue = action.queue
        waiting.since = self.acd.clock()
        waiting.call.returned()

    def _state(self, action: a.StateChanged) -> None:
        self.storage.add_agent_event(action.operator, action.state, action.reason)
        session = self.session_of(action.operator)
        if session is not None:
            session.send(op.StateIs(state=action.state, reason=action.reason, since=iso_now()))

    _actions: dict[type, Callable[[Desk, Any], None]] = {
        a.Offer: _offer, a.Withdraw: _withdraw, a.Connect: _connect, a.Announce: _announce,
        a.Overflow: _overflow, a.Requeued: _returned, a.StateChanged: _state,
    }

    def _gauges(self) -> None:
        for queue in self.acd.queues:
            metrics.queue_waiting.labels(queue).set(len(self.acd.waiting(queue)))
            metrics.queue_longest_wait.labels(queue).set(self.acd.longest_wait(queue))
        by_state = self.acd.operators_by_state()
        for state in a.OperatorState:
            if state is not a.OperatorState.LOGGED_OUT:
                metrics.operators.labels(state.value).set(len(by_state.get(state, [])))


def _position(position: int) -> str:
    if position <= 1:
        return "You are next in line."
    return f"You are number {position} in line."

