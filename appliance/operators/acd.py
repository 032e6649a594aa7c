"""The Automatic Call Distributor: which operator is offered which waiting call, and when.

A pure state machine like the flow engine: the desk tells it what happened (an operator logged
in, a caller escalated, an offer was accepted) and carries out the actions it answers (ring a
browser or a desk phone, withdraw an offer, connect a call, announce a position). It owns no
I/O and reads time only from the injected monotonic clock; the desk calls `tick()` at
`next_deadline()`. Every method returns the actions in the order they happened.

The rules:
- An operator is offered one call at a time, and only when available. Calls are offered in the
  order they joined their queue, calls put back at the head (their operator was lost) first,
  across all the queues an operator serves. A call whose offer is still ringing is skipped, so
  an operator who becomes available meanwhile gets the next call.
- The queue's strategy picks among the available members: the one idle longest (since they
  became available or finished wrap-up), the next after the last one offered (round_robin, in
  order of login), the one with the fewest calls accepted since login (then idle longest), or
  all of them at once (ring_all: the first to accept wins, the others' offers are `taken`).
- Declines and ring-outs: an operator who declined or let a call ring out is passed over for
  that call while any other member is available; if only such operators are, the call is
  offered to them again, but not before `ring_timeout` seconds after they refused it, so a
  decline is never answered by the same call ringing at once. A browser operator who lets an
  offer ring out is set away ("missed"); a SIP desk phone stays available. Going away while
  an offer rings counts as declining it.
- A queue with no logged-in member (any state) overflows at once: a call escalated to it, and
  every call waiting in it when its last member leaves.
- A waiting caller hears their position (1 = next) every `announce_every` seconds after they
  joined the queue, except while an operator's phone is ringing for them: that call is about
  to be answered, and the announcement would talk over the operator's greeting.
- A call put back (operator lost mid-call) or transferred starts waiting anew: its `waited_s`,
  service level and announcements count from then. A queue removed by a reload stops taking
  calls; those already waiting in it stay, under default settings, until answered or until it
  has no member.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from appliance.core.clock import monotonic
from appliance.flow.schema import Queue, QueueStrategy

__all__ = [
    "ACD", "Action", "Announce", "Connect", "Kind", "Offer", "OperatorState", "OperatorView", "Overflow",
    "OverflowReason", "QueueSettings", "QueueStats", "Requeued", "StateChanged", "Withdraw", "WithdrawReason",
]

Kind = Literal["browser", "sip"]


class OperatorState(StrEnum):
    AVAILABLE = "available"
    AWAY = "away"
    OFFERED = "offered"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    LOGGED_OUT = "logged_out"


class WithdrawReason(StrEnum):
    CALLER_HANGUP = "caller_hangup"
    RING_TIMEOUT = "ring_timeout"
    DECLINED = "declined"
    TAKEN = "taken"  # ring_all: another operator accepted first
    OPERATOR_LOST = "operator_lost"  # logged out, browser gone, or no longer serves the queue


class OverflowReason(StrEnum):
    NO_OPERATORS = "no_operators"
    UNKNOWN_QUEUE = "unknown_queue"


@dataclass(frozen=True)
class QueueSettings:
    """What the ACD needs of a queue in flows/queues.yaml."""

    strategy: QueueStrategy = "longest_idle"
    ring_timeout: float = 15.0
    wrap_up: float = 10.0
    announce_every: float | None = 30.0  # None: never
    service_level_s: float = 20.0

    @classmethod
    def of(cls, queue: Queue) -> QueueSettings:
        return cls(queue.strategy, queue.ring_timeout, queue.wrap_up, queue.announce_every or None,
                   queue.service_level_s)


# --- actions
@dataclass(frozen=True)
class Offer:
    """Ring `operator` for `call_id`; they accept or decline within `ring_timeout` seconds."""

    offer_id: str
    call_id: str
    operator: str
    queue: str
    ring_timeout: float


@dataclass(frozen=True)
class Withdraw:
    offer_id: str
    call_id: str
    operator: str
    reason: WithdrawReason


@dataclass(frozen=True)
class Connect:
    """The operator accepted: bridge the caller to them."""

    call_id: str
    operator: str
    queue: str
    waited_s: float
    offer_id: str


@dataclass(frozen=True)
class Announce:
    call_id: str
    position: int  # 1 = next


@dataclass(frozen=True)
class Overflow:
    """Nobody can take the call: the flow goes on at the escalate step's `overflow`."""

    call_id: str
    queue: str
    reason: OverflowReason = OverflowReason.NO_OPERATORS


@dataclass(frozen=True)
class StateChanged:
    """Every change of an operator's state or its reason, for the desk to store and show."""

    operator: str
    state: OperatorState
    reason: str = ""


@dataclass(frozen=True)
class Requeued:
    """A connected call waits again: its operator was lost (at the head) or transferred it."""

    call_id: str
    queue: str


Action = Offer | Withdraw | Connect | Announce | Overflow | StateChanged | Requeued


# --- what the desk's wallboard and metrics read
@dataclass
class QueueStats:
    enqueued: int = 0  # escalations and transfers in
    answered: int = 0
    answered_in_service_level: int = 0
    abandoned: int = 0  # the caller hung up while waiting (or ringing)
    overflowed: int = 0
    offers: Counter[str] = field(default_factory=Counter)  # offered; then by result: accepted or a WithdrawReason


@dataclass(frozen=True)
class OperatorView:
    name: str
    kind: Kind
    queues: tuple[str, ...]
    state: OperatorState
    reason: str
    since: float  # clock() when the state began
    accepted: int  # calls accepted since login
    offer: str | None
    call: str | None


# --- inside
@dataclass
class _Operator:
    name: str
    kind: Kind
    queues: frozenset[str]
    seq: int  # login order: round_robin's order and every tie-break
    state: OperatorState
    reason: str
    since: float
    idle_since: float  # when they last became available other than after an offer
    accepted: int = 0
    offer: str | None = None
    call: str | None = None
    call_queue: str = ""
    wrap_until: float | None = None


@dataclass
class _Ringing:
    offer_id: str
    call_id: str
    operator: str
    deadline: float


@dataclass
class _Call:
    call_id: str
    queue: str
    order: tuple[int, int]  # (0 put back at the head | 1, arrival number)
    enqueued_at: float
    next_announce: float | None
    offers: dict[str, str] = field(default_factory=dict)  # operator → offer id
    refused: dict[str, float] = field(default_factory=dict)  # operator → when they declined or let it ring out


class ACD:
    def __init__(self, queues: Mapping[str, QueueSettings], clock: Callable[[], float] = monotonic) -> None:
        self.clock = clock
        self._queues = dict(queues)
        self._operators: dict[str, _Operator] = {}
        self._waiting: dict[str, _Call] = {}
        self._on_call: dict[str, str] = {}  # call → operator
        self._offers: dict[str, _Ringing] = {}  # in the order they were made
        self._stats: dict[str, QueueStats] = {}
        self._last_offered: dict[str, int] = {}  # queue → seq of the operator offered last
        self._logins = 0
        self._arrivals = 0
        self._offer_ids = 0
        self._out: list[Action] = []

    # --- configuration
    @property
    def queues(self) -> Mapping[str, QueueSettings]:
        return self._queues

    def update_queues(self, queues: Mapping[str, QueueSettings]) -> list[Action]:
        """A reload: new settings apply to offers made from now on."""
        self._queues = dict(queues)
        return self._done()

    # --- operators
    def login(self, operator: str, queues: Collection[str], kind: Kind = "browser",
              away: bool = False, reason: str = "") -> list[Action]:
        """Log in (available, or away with `reason`); logged in already: now serving `queues`."""
        now = self.clock()
        op = self._operators.get(operator)
        if op is None:
            self._logins += 1
            state = OperatorState.AWAY if away else OperatorState.AVAILABLE
            reason = reason if away else ""
            self._operators[operator] = _Operator(operator, kind, frozenset(queues), self._logins, state, reason,
                                                  since=now, idle_since=now)
            self._out.append(StateChanged(operator, state, reason))
            return self._done()
        op.kind, op.queues = kind, frozenset(queues)
        if op.offer is not None and self._offers[op.offer].call_id in self._waiting:
            call = self._waiting[self._offers[op.offer].call_id]
            if call.queue not in op.queues:
                self._withdraw(op.offer, WithdrawReason.OPERATOR_LOST)
                self._become(op, OperatorState.AVAILABLE)
        return self._done()

    def set_state(self, operator: str, state: Literal["available", "away"], reason: str = "") -> list[Action]:
        """The operator's own choice. Available ends wrap-up early; away while ringing declines the offer.
        Ignored on a call and for an unknown operator (a message racing a logout)."""
        op = self._operators.get(operator)
        if op is None or op.state is OperatorState.ON_CALL:
            return []
        if state == "available":
            if op.state in (OperatorState.AWAY, OperatorState.WRAP_UP):
                self._become_available(op, self.clock())
        elif state == "away":
            if op.offer is not None:
                self._refuse(op.offer, WithdrawReason.DECLINED)  # the state goes straight to away
            op.wrap_until = None
            self._become(op, OperatorState.AWAY, reason)
        else:
            raise ValueError(f"an operator sets themselves available or away, not {state!r}")
        return self._done()

    def logout(self, operator: str, reason: str = "logout") -> list[Action]:
        """An offer ringing for them moves on; a call they are on goes back to the head of its queue."""
        op = self._operators.get(operator)
        if op is None:
            return []
        if op.offer is not None:
            self._withdraw(op.offer, WithdrawReason.OPERATOR_LOST)
        del self._operators[operator]
        self._become(op, OperatorState.LOGGED_OUT, reason)
        if op.call is not None:
            del self._on_call[op.call]
            self._requeue(op.call, op.call_queue, head=True)
        return self._done()

    def operator_lost(self, operator: str) -> list[Action]:
        """The browser is gone: as a logout; the desk logs them in again when it comes back."""
        return self.logout(operator, reason="lost")

    # --- calls
    def enqueue(self, call_id: str, queue: str, head: bool = False) -> list[Action]:
        if call_id in self._waiting or call_id in self._on_call:
            raise ValueError(f"call {call_id} is already in the ACD")
        if queue not in self._queues:
            self._out.append(Overflow(call_id, queue, OverflowReason.UNKNOWN_QUEUE))
            return self._take()
        self._stat(queue).enqueued += 1
        if not self._has_members(queue):
            self._overflow(call_id, queue)
        else:
            self._add(call_id, queue, head)
        return self._done()

    def caller_left(self, call_id: str) -> list[Action]:
        """Hung up while waiting (offers withdrawn at once, counted abandoned) or while connected (call ended)."""
        if call_id in self._on_call:
            return self.call_ended(self._on_call[call_id], call_id)
        call = self._waiting.get(call_id)
        if call is None:
            return []
        for offer_id in list(call.offers.values()):
            self._become(self._withdraw(offer_id, WithdrawReason.CALLER_HANGUP), OperatorState.AVAILABLE)
        del self._waiting[call_id]
        self._stat(call.queue).abandoned += 1
        return self._done()

    def accept(self, operator: str, offer_id: str) -> list[Action]:
        """Ignored unless the offer is still ringing for this operator (it may have just been withdrawn)."""
        ringing = self._offers.get(offer_id)
        if ringing is None or ringing.operator != operator:
            return []
        now = self.clock()
        op = self._operators[operator]
        call = self._waiting.pop(ringing.call_id)
        del self._offers[offer_id], call.offers[operator]
        op.offer, op.call, op.call_queue = None, call.call_id, call.queue
        op.accepted += 1
        waited = now - call.enqueued_at
        stats = self._stat(call.queue)
        stats.offers["accepted"] += 1
        stats.answered += 1
        if waited <= self._settings(call.queue).service_level_s:
            stats.answered_in_service_level += 1
        self._on_call[call.call_id] = operator
        self._out.append(Connect(call.call_id, operator, call.queue, waited, offer_id))
        self._become(op, OperatorState.ON_CALL)
        for other in list(call.offers.values()):
            self._become(self._withdraw(other, WithdrawReason.TAKEN, call), OperatorState.AVAILABLE)
        return self._done()

    def decline(self, operator: str, offer_id: str) -> list[Action]:
        ringing = self._offers.get(offer_id)
        if ringing is None or ringing.operator != operator:
            return []
        self._become(self._refuse(offer_id, WithdrawReason.DECLINED), OperatorState.AVAILABLE)
        return self._done()

    def call_ended(self, operator: str, call_id: str) -> list[Action]:
        """Either side hung up: the operator wraps up for the queue's `wrap_up` seconds."""
        op = self._operators.get(operator)
        if op is None or op.call != call_id:
            return []
        self._end_call(op)
        return self._done()

    def transfer(self, call_id: str, queue: str) -> list[Action]:
        """The operator hands the caller to `queue`: it waits there anew; the operator wraps up."""
        if queue not in self._queues:
            raise ValueError(f"there is no queue {queue!r} to transfer to")
        operator = self._on_call.get(call_id)
        if operator is None:
            return []
        self._end_call(self._operators[operator])
        self._stat(queue).enqueued += 1
        self._requeue(call_id, queue, head=False)
        return self._done()

    # --- time
    def tick(self) -> list[Action]:
        """Fire what is due at clock(): ring-outs, ends of wrap-up, position announcements."""
        now = self.clock()
        for ringing in [r for r in self._offers.values() if r.deadline <= now]:
            if ringing.offer_id in self._offers:
                op = self._refuse(ringing.offer_id, WithdrawReason.RING_TIMEOUT)
                if op.kind == "browser":  # nobody at the desk: stop ringing it
                    self._become(op, OperatorState.AWAY, "missed")
                else:
                    self._become(op, OperatorState.AVAILABLE)
        for op in list(self._operators.values()):
            if op.state is OperatorState.WRAP_UP and op.wrap_until is not None and op.wrap_until <= now:
                self._become_available(op, op.wrap_until)
        self._settle()
        self._announce(now)
        return self._take()

    def next_deadline(self) -> float | None:
        now = self.clock()
        times = [r.deadline for r in self._offers.values()]
        times += [op.wrap_until for op in self._operators.values() if op.wrap_until is not None]
        for call in self._waiting.values():
            if call.next_announce is not None:
                times.append(call.next_announce)
            ring_timeout = self._settings(call.queue).ring_timeout
            # A refusal's pause ending can let the call ring the refuser again.
            times += [t + ring_timeout for t in call.refused.values() if t + ring_timeout > now]
        return min(times, default=None)

    # --- views
    def waiting(self, queue: str) -> list[str]:
        """The calls waiting in `queue`, next first (those ringing an operator included)."""
        return [call.call_id for call in self._in_order(queue)]

    def longest_wait(self, queue: str) -> float:
        oldest = self.waiting_since(queue)
        return 0.0 if oldest is None else self.clock() - oldest

    def waiting_since(self, queue: str) -> float | None:
        """The clock when the longest-waiting caller in `queue` began waiting; None if nobody waits."""
        return min((call.enqueued_at for call in self._waiting.values() if call.queue == queue), default=None)

    def operator(self, name: str) -> OperatorView | None:
        op = self._operators.get(name)
        if op is None:
            return None
        return OperatorView(op.name, op.kind, tuple(sorted(op.queues)), op.state, op.reason, op.since, op.accepted,
                            op.offer, op.call)

    def operators_by_state(self, queue: str | None = None) -> dict[OperatorState, list[str]]:
        """Logged-in operators (of `queue`, or all), in login order."""
        out: dict[OperatorState, list[str]] = {}
        for op in self._operators.values():
            if queue is None or queue in op.queues:
                out.setdefault(op.state, []).append(op.name)
        return out

    @property
    def stats(self) -> Mapping[str, QueueStats]:
        return self._stats

    # --- inside
    def _settings(self, queue: str) -> QueueSettings:
        return self._queues.get(queue) or QueueSettings()

    def _stat(self, queue: str) -> QueueStats:
        return self._stats.setdefault(queue, QueueStats())

    def _has_members(self, queue: str) -> bool:
        return any(queue in op.queues for op in self._operators.values())

    def _in_order(self, queue: str | None = None) -> list[_Call]:
        calls = (call for call in self._waiting.values() if queue is None or call.queue == queue)
        return sorted(calls, key=lambda call: call.order)

    def _add(self, call_id: str, queue: str, head: bool) -> None:
        now = self.clock()
        self._arrivals += 1
        every = self._settings(queue).announce_every
        self._waiting[call_id] = _Call(call_id, queue, (0 if head else 1, self._arrivals), now,
                                       now + every if every else None)

    def _requeue(self, call_id: str, queue: str, head: bool) -> None:
        if self._has_members(queue):
            self._add(call_id, queue, head)
            self._out.append(Requeued(call_id, queue))
        else:
            self._overflow(call_id, queue)

    def _overflow(self, call_id: str, queue: str) -> None:
        self._stat(queue).overflowed += 1
        self._out.append(Overflow(call_id, queue))

    def _end_call(self, op: _Operator) -> None:
        assert op.call is not None
        del self._on_call[op.call]
        op.call = None
        now = self.clock()
        wrap_up = self._settings(op.call_queue).wrap_up
        if wrap_up > 0:
            op.wrap_until = now + wrap_up
            self._become(op, OperatorState.WRAP_UP)
        else:
            self._become_available(op, now)

    def _become(self, op: _Operator, state: OperatorState, reason: str = "") -> None:
        if (op.state, op.reason) != (state, reason):
            op.state, op.reason, op.since = state, reason, self.clock()
            self._out.append(StateChanged(op.name, state, reason))

    def _become_available(self, op: _Operator, idle_since: float) -> None:
        op.wrap_until = None
        op.idle_since = idle_since
        self._become(op, OperatorState.AVAILABLE)

    def _withdraw(self, offer_id: str, reason: WithdrawReason, call: _Call | None = None) -> _Operator:
        """Take back one offer; the caller sets the operator's state."""
        ringing = self._offers.pop(offer_id)
        call = call or self._waiting[ringing.call_id]
        del call.offers[ringing.operator]
        op = self._operators[ringing.operator]
        op.offer = None
        self._stat(call.queue).offers[reason] += 1
        self._out.append(Withdraw(offer_id, call.call_id, op.name, reason))
        return op

    def _refuse(self, offer_id: str, reason: WithdrawReason) -> _Operator:
        """A decline or a ring-out: the call is passed to others first. The caller sets the operator's state."""
        call_id = self._offers[offer_id].call_id
        op = self._withdraw(offer_id, reason)
        self._waiting[call_id].refused[op.name] = self.clock()
        return op

    def _done(self) -> list[Action]:
        self._settle()
        return self._take()

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _settle(self) -> None:
        """Overflow calls whose queue has no member left, then offer what can be offered."""
        for call in self._in_order():
            if not self._has_members(call.queue):
                assert not call.offers
                del self._waiting[call.call_id]
                self._overflow(call.call_id, call.queue)
        for call in self._in_order():
            if not call.offers:
                for op in self._choose(call):
                    self._offer(call, op)

    def _announce(self, now: float) -> None:
        for queue in sorted({call.queue for call in self._waiting.values()}):
            every = self._settings(queue).announce_every
            for position, call in enumerate(self._in_order(queue), start=1):
                if every is None:  # a reload turned them off
                    call.next_announce = None
                elif call.next_announce is not None and call.next_announce <= now:
                    while call.next_announce <= now:  # a late tick announces once
                        call.next_announce += every
                    if not call.offers:  # ringing: about to be answered
                        self._out.append(Announce(call.call_id, position))

    def _choose(self, call: _Call) -> list[_Operator]:
        now = self.clock()
        settings = self._settings(call.queue)
        available = [op for op in self._operators.values()
                     if op.state is OperatorState.AVAILABLE and call.queue in op.queues]
        fresh = [op for op in available if op.name not in call.refused]
        if not fresh:
            fresh = [op for op in available if call.refused[op.name] + settings.ring_timeout <= now]
        if not fresh:
            return []
        return _STRATEGIES[settings.strategy](self, call.queue, fresh)

    def _offer(self, call: _Call, op: _Operator) -> None:
        settings = self._settings(call.queue)
        self._offer_ids += 1
        offer_id = f"of-{self._offer_ids}"
        self._offers[offer_id] = _Ringing(offer_id, call.call_id, op.name, self.clock() + settings.ring_timeout)
        call.offers[op.name] = offer_id
        op.offer = offer_id
        self._stat(call.queue).offers["offered"] += 1
        self._out.append(Offer(offer_id, call.call_id, op.name, call.queue, settings.ring_timeout))
        self._become(op, OperatorState.OFFERED)

    # --- strategies: which of the candidates (in login order) ring
    def _longest_idle(self, queue: str, candidates: list[_Operator]) -> list[_Operator]:
        return [min(candidates, key=lambda op: (op.idle_since, op.seq))]

    def _fewest_calls(self, queue: str, candidates: list[_Operator]) -> list[_Operator]:
        return [min(candidates, key=lambda op: (op.accepted, op.idle_since, op.seq))]

    def _round_robin(self, queue: str, candidates: list[_Operator]) -> list[_Operator]:
        last = self._last_offered.get(queue, 0)
        chosen = next((op for op in candidates if op.seq > last), candidates[0])
        self._last_offered[queue] = chosen.seq
        return [chosen]

    def _ring_all(self, queue: str, candidates: list[_Operator]) -> list[_Operator]:
        return candidates


_STRATEGIES: dict[str, Callable[[ACD, str, list[_Operator]], list[_Operator]]] = {
    "longest_idle": ACD._longest_idle,
    "fewest_calls": ACD._fewest_calls,
    "round_robin": ACD._round_robin,
    "ring_all": ACD._ring_all,
}
