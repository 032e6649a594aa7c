"""The ACD as the desk drives it: operators and callers come and go, time passes on a virtual clock, and
each step answers exact actions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from appliance.flow.schema import Queue, QueueStrategy
from appliance.operators.acd import (
    ACD,
    Action,
    Announce,
    Connect,
    Offer,
    OperatorState,
    OperatorView,
    Overflow,
    OverflowReason,
    QueueSettings,
    Requeued,
    StateChanged,
    Withdraw,
    WithdrawReason,
)

AVAILABLE, AWAY, OFFERED = OperatorState.AVAILABLE, OperatorState.AWAY, OperatorState.OFFERED
ON_CALL, WRAP_UP, LOGGED_OUT = OperatorState.ON_CALL, OperatorState.WRAP_UP, OperatorState.LOGGED_OUT


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def at(self, t: float) -> None:
        assert t >= self.now, "the clock is monotonic"
        self.now = t


def _acd(clock: Clock, strategy: QueueStrategy = "longest_idle", wrap_up: float = 0, ring_timeout: float = 15,
         announce_every: float | None = None) -> ACD:
    billing = QueueSettings(strategy, ring_timeout, wrap_up, announce_every, service_level_s=20)
    return ACD({"billing": billing, "technical": QueueSettings(wrap_up=wrap_up, announce_every=None)}, clock)


def _offer(offer: str, call: str, operator: str, queue: str = "billing", ring: float = 15) -> list[Action]:
    return [Offer(offer, call, operator, queue, ring), StateChanged(operator, OFFERED)]


def _login(acd: ACD, *names: str, queues: tuple[str, ...] = ("billing",)) -> None:
    for name in names:
        assert acd.login(name, queues) == [StateChanged(name, AVAILABLE)]


def _answer(acd: ACD, clock: Clock, call: str, operator: str, offer: str, waited: float = 0) -> None:
    assert acd.accept(operator, offer)[:2] == [Connect(call, operator, "billing", waited, offer),
                                               StateChanged(operator, ON_CALL)]


def _view(acd: ACD, name: str) -> OperatorView:
    view = acd.operator(name)
    assert view is not None, f"{name} is not logged in"
    return view


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- strategies
def test_longest_idle_offers_the_operator_idle_longest(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    assert acd.enqueue("c1", "billing") == _offer("of-1", "c1", "ann")  # a tie: login order
    _answer(acd, clock, "c1", "ann", "of-1")
    assert acd.enqueue("c2", "billing") == _offer("of-2", "c2", "bob")
    _answer(acd, clock, "c2", "bob", "of-2")
    clock.at(4)
    assert acd.call_ended("bob", "c2") == [StateChanged("bob", AVAILABLE)]
    clock.at(6)
    assert acd.call_ended("ann", "c1") == [StateChanged("ann", AVAILABLE)]
    clock.at(7)
    assert acd.enqueue("c3", "billing") == _offer("of-3", "c3", "bob")  # free since 4, ann since 6


def _three_calls_ended_in_reverse(acd: ACD, clock: Clock) -> None:
    """ann, bob and cat take a call each, in that order, and hang up cat first, ann last."""
    _login(acd, "ann", "bob", "cat")
    for n, name in enumerate(("ann", "bob", "cat"), start=1):
        assert acd.enqueue(f"c{n}", "billing") == _offer(f"of-{n}", f"c{n}", name)
        _answer(acd, clock, f"c{n}", name, f"of-{n}")
    for t, (name, call) in enumerate((("cat", "c3"), ("bob", "c2"), ("ann", "c1")), start=4):
        clock.at(t)
        assert acd.call_ended(name, call) == [StateChanged(name, AVAILABLE)]


def test_round_robin_takes_turns_in_login_order(clock: Clock):
    acd = _acd(clock, "round_robin")
    _three_calls_ended_in_reverse(acd, clock)
    # cat was offered last: ann's turn, though cat has been idle longest.
    assert acd.enqueue("c4", "billing") == _offer("of-4", "c4", "ann")
    assert acd.decline("ann", "of-4") == [Withdraw("of-4", "c4", "ann", WithdrawReason.DECLINED),
                                          StateChanged("ann", AVAILABLE), *_offer("of-5", "c4", "bob")]


def test_longest_idle_after_the_same_calls(clock: Clock):
    acd = _acd(clock, "longest_idle")
    _three_calls_ended_in_reverse(acd, clock)
    assert acd.enqueue("c4", "billing") == _offer("of-4", "c4", "cat")


def test_fewest_calls_goes_before_idle_time(clock: Clock):
    acd = _acd(clock, "fewest_calls")
    _login(acd, "ann", "bob")
    for n in (1, 2):  # ann takes two calls, bob one
        acd.enqueue(f"c{n}", "billing")
        _answer(acd, clock, f"c{n}", "ann" if n == 1 else "bob", f"of-{n}")
    clock.at(2)
    acd.call_ended("ann", "c1")
    assert acd.enqueue("c3", "billing") == _offer("of-3", "c3", "ann")  # the only one free
    _answer(acd, clock, "c3", "ann", "of-3")
    clock.at(3)
    acd.call_ended("ann", "c3")
    clock.at(4)
    acd.call_ended("bob", "c2")
    # ann has been idle longer, but bob took fewer calls.
    assert acd.enqueue("c4", "billing") == _offer("of-4", "c4", "bob")
    assert _view(acd, "ann").accepted == 2


def test_ring_all_rings_everyone_and_the_first_accept_wins(clock: Clock):
    acd = _acd(clock, "ring_all")
    _login(acd, "ann", "bob", "cat")
    assert acd.enqueue("c1", "billing") == [*_offer("of-1", "c1", "ann"), *_offer("of-2", "c1", "bob"),
                                            *_offer("of-3", "c1", "cat")]
    clock.at(3)
    assert acd.accept("bob", "of-2") == [
        Connect("c1", "bob", "billing", 3.0, "of-2"), StateChanged("bob", ON_CALL),
        Withdraw("of-1", "c1", "ann", WithdrawReason.TAKEN), StateChanged("ann", AVAILABLE),
        Withdraw("of-3", "c1", "cat", WithdrawReason.TAKEN), StateChanged("cat", AVAILABLE),
    ]
    assert acd.accept("ann", "of-1") == []  # too late: the console's click crossed the withdrawal
    assert acd.stats["billing"].offers == {"offered": 3, "accepted": 1, "taken": 2}


def test_ring_all_decline_leaves_the_others_ringing(clock: Clock):
    acd = _acd(clock, "ring_all")
    _login(acd, "ann", "bob")
    acd.enqueue("c1", "billing")
    assert acd.decline("ann", "of-1") == [Withdraw("of-1", "c1", "ann", WithdrawReason.DECLINED),
                                          StateChanged("ann", AVAILABLE)]
    assert _view(acd, "bob").state is OFFERED


# --- ringing out, declining
def test_ring_timeout_sets_the_operator_away_and_offers_the_next(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    acd.enqueue("c1", "billing")
    assert acd.next_deadline() == 15
    clock.at(14.9)
    assert acd.tick() == []
    clock.at(15)
    assert acd.tick() == [Withdraw("of-1", "c1", "ann", WithdrawReason.RING_TIMEOUT),
                          StateChanged("ann", AWAY, "missed"), *_offer("of-2", "c1", "bob")]
    assert acd.next_deadline() == 30
    assert acd.stats["billing"].offers["ring_timeout"] == 1


def test_decline_passes_the_call_on_and_decliners_get_it_again_after_a_pause(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    acd.enqueue("c1", "billing")
    clock.at(1)
    assert acd.decline("ann", "of-1") == [Withdraw("of-1", "c1", "ann", WithdrawReason.DECLINED),
                                          StateChanged("ann", AVAILABLE), *_offer("of-2", "c1", "bob")]
    clock.at(2)
    # Only decliners are left: nobody rings now.
    assert acd.decline("bob", "of-2") == [Withdraw("of-2", "c1", "bob", WithdrawReason.DECLINED),
                                          StateChanged("bob", AVAILABLE)]
    # Another call is not held up by c1's decliners.
    assert acd.enqueue("c2", "billing") == _offer("of-3", "c2", "ann")
    assert acd.next_deadline() == 16  # ann's pause ends (her offer of c2 would ring out at 17)
    clock.at(16)
    assert acd.tick() == []  # ann is ringing for c2
    clock.at(17)
    assert acd.tick() == [Withdraw("of-3", "c2", "ann", WithdrawReason.RING_TIMEOUT),
                          StateChanged("ann", AWAY, "missed"), *_offer("of-4", "c1", "bob")]  # c1 first


def test_a_newcomer_gets_the_call_before_a_decliner_again(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann")
    acd.enqueue("c1", "billing")
    acd.decline("ann", "of-1")
    clock.at(20)  # ann's pause is over (nobody ticked yet), and bob arrives
    assert acd.login("bob", ["billing"]) == [StateChanged("bob", AVAILABLE), *_offer("of-2", "c1", "bob")]
    assert _view(acd, "ann").state is AVAILABLE


def test_going_away_while_ringing_declines(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    acd.enqueue("c1", "billing")
    assert acd.set_state("ann", "away", "lunch") == [Withdraw("of-1", "c1", "ann", WithdrawReason.DECLINED),
                                                     StateChanged("ann", AWAY, "lunch"),
                                                     *_offer("of-2", "c1", "bob")]


# --- calls racing, callers leaving, operators lost
def test_two_calls_racing_for_the_last_operator(clock: Clock):
    acd = _acd(clock, wrap_up=5)
    _login(acd, "ann")
    assert acd.enqueue("c1", "billing") == _offer("of-1", "c1", "ann")
    assert acd.enqueue("c2", "billing") == []  # waits: ann is ringing
    assert acd.waiting("billing") == ["c1", "c2"]
    _answer(acd, clock, "c1", "ann", "of-1")
    assert acd.waiting("billing") == ["c2"]
    clock.at(30)
    assert acd.call_ended("ann", "c1") == [StateChanged("ann", WRAP_UP)]
    clock.at(35)
    assert acd.tick() == [StateChanged("ann", AVAILABLE), *_offer("of-2", "c2", "ann")]


def test_caller_hangs_up_while_ringing_and_while_waiting(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann")
    acd.enqueue("c1", "billing")
    acd.enqueue("c2", "billing")
    assert acd.caller_left("c1") == [Withdraw("of-1", "c1", "ann", WithdrawReason.CALLER_HANGUP),
                                     StateChanged("ann", AVAILABLE), *_offer("of-2", "c2", "ann")]
    acd.set_state("ann", "away")
    assert acd.caller_left("c2") == []
    assert acd.caller_left("c2") == []  # twice: nothing left to do
    assert acd.waiting("billing") == []
    stats = acd.stats["billing"]
    assert (stats.enqueued, stats.abandoned, stats.answered) == (2, 2, 0)


def test_caller_hangs_up_on_the_operator(clock: Clock):
    acd = _acd(clock, wrap_up=10)
    _login(acd, "ann")
    acd.enqueue("c1", "billing")
    _answer(acd, clock, "c1", "ann", "of-1")
    assert acd.caller_left("c1") == [StateChanged("ann", WRAP_UP)]
    assert acd.call_ended("ann", "c1") == []  # the operator's hang-up crossing the caller's
    assert acd.stats["billing"].abandoned == 0


def test_operator_lost_while_ringing_moves_the_offer_on(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    acd.enqueue("c1", "billing")
    assert acd.operator_lost("ann") == [Withdraw("of-1", "c1", "ann", WithdrawReason.OPERATOR_LOST),
                                        StateChanged("ann", LOGGED_OUT, "lost"), *_offer("of-2", "c1", "bob")]
    assert acd.operator("ann") is None
    assert acd.operator_lost("ann") == []


def test_operator_lost_on_a_call_puts_it_back_at_the_head(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    acd.set_state("bob", "away", "training")
    acd.enqueue("c1", "billing")
    _answer(acd, clock, "c1", "ann", "of-1")
    clock.at(10)
    acd.enqueue("c2", "billing")
    clock.at(20)
    assert acd.operator_lost("ann") == [StateChanged("ann", LOGGED_OUT, "lost"), Requeued("c1", "billing")]
    assert acd.waiting("billing") == ["c1", "c2"]
    clock.at(21)
    assert acd.set_state("bob", "available") == [StateChanged("bob", AVAILABLE), *_offer("of-2", "c1", "bob")]
    assert acd.accept("bob", "of-2")[0] == Connect("c1", "bob", "billing", 1.0, "of-2")  # waited since put back


def test_the_last_operator_lost_on_a_call_overflows_it(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann")
    acd.enqueue("c1", "billing")
    _answer(acd, clock, "c1", "ann", "of-1")
    acd.enqueue("c2", "billing")
    assert acd.operator_lost("ann") == [StateChanged("ann", LOGGED_OUT, "lost"), Overflow("c1", "billing"),
                                        Overflow("c2", "billing")]


# --- wrap-up
def test_wrap_up_blocks_offers_for_exactly_wrap_up_seconds(clock: Clock):
    acd = _acd(clock, wrap_up=10)
    _login(acd, "ann")
    acd.enqueue("c1", "billing")
    _answer(acd, clock, "c1", "ann", "of-1")
    clock.at(100)
    assert acd.call_ended("ann", "c1") == [StateChanged("ann", WRAP_UP)]
    clock.at(101)
    assert acd.enqueue("c2", "billing") == []
    assert acd.next_deadline() == 110
    clock.at(109.999)
    assert acd.tick() == []
    clock.at(110)
    assert acd.tick() == [StateChanged("ann", AVAILABLE), *_offer("of-2", "c2", "ann")]


def test_available_ends_wrap_up_early_and_away_extends_it(clock: Clock):
    acd = _acd(clock, wrap_up=10)
    _login(acd, "ann", "bob")
    for name, n in (("ann", 1), ("bob", 2)):
        acd.enqueue(f"c{n}", "billing")
        _answer(acd, clock, f"c{n}", name, f"of-{n}")
        acd.call_ended(name, f"c{n}")
    assert acd.set_state("ann", "available") == [StateChanged("ann", AVAILABLE)]
    assert acd.set_state("bob", "away", "notes") == [StateChanged("bob", AWAY, "notes")]
    clock.at(10)
    assert acd.tick() == []
    assert acd.next_deadline() is None


# --- announcements
def test_positions_are_announced_every_announce_every_but_not_while_ringing(clock: Clock):
    acd = _acd(clock, announce_every=30, ring_timeout=20)
    assert acd.login("ann", ["billing"], away=True, reason="meeting") == [StateChanged("ann", AWAY, "meeting")]
    acd.enqueue("c1", "billing")
    clock.at(10)
    acd.enqueue("c2", "billing")
    assert acd.next_deadline() == 30
    clock.at(30)
    assert acd.tick() == [Announce("c1", 1)]
    clock.at(40)
    assert acd.tick() == [Announce("c2", 2)]
    clock.at(60)
    assert acd.tick() == [Announce("c1", 1)]
    clock.at(65)
    acd.caller_left("c1")
    clock.at(70)
    assert acd.tick() == [Announce("c2", 1)]
    clock.at(85)
    assert acd.set_state("ann", "available") == [StateChanged("ann", AVAILABLE), *_offer("of-1", "c2", "ann", ring=20)]
    clock.at(100)
    assert acd.tick() == []  # c2 is ringing
    clock.at(105)
    assert acd.tick() == [Withdraw("of-1", "c2", "ann", WithdrawReason.RING_TIMEOUT),
                          StateChanged("ann", AWAY, "missed")]
    clock.at(130)
    assert acd.tick() == [Announce("c2", 1)]


def test_a_late_tick_announces_once(clock: Clock):
    acd = _acd(clock, announce_every=30)
    acd.login("ann", ["billing"], away=True)
    acd.enqueue("c1", "billing")
    clock.at(95)
    assert acd.tick() == [Announce("c1", 1)]
    assert acd.next_deadline() == 120


# --- overflow
def test_a_queue_without_members_overflows_at_once(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", queues=("technical",))
    assert acd.enqueue("c1", "billing") == [Overflow("c1", "billing", OverflowReason.NO_OPERATORS)]
    assert acd.enqueue("c2", "sales") == [Overflow("c2", "sales", OverflowReason.UNKNOWN_QUEUE)]
    assert acd.stats["billing"].overflowed == 1


def test_an_away_member_keeps_calls_waiting_until_the_last_member_logs_out(clock: Clock):
    acd = _acd(clock)
    acd.login("ann", ["billing"], away=True)
    acd.login("bob", ["billing"], away=True)
    assert acd.enqueue("c1", "billing") == []
    assert acd.enqueue("c2", "billing") == []
    assert acd.logout("ann") == [StateChanged("ann", LOGGED_OUT, "logout")]
    assert acd.logout("bob") == [StateChanged("bob", LOGGED_OUT, "logout"), Overflow("c1", "billing"),
                                 Overflow("c2", "billing")]
    assert acd.waiting("billing") == []


def test_leaving_a_queue_by_logging_in_again(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    acd.set_state("bob", "away")
    acd.enqueue("c1", "billing")
    acd.enqueue("c2", "billing")
    assert acd.login("ann", ["technical"]) == [Withdraw("of-1", "c1", "ann", WithdrawReason.OPERATOR_LOST),
                                               StateChanged("ann", AVAILABLE)]
    assert acd.login("bob", ["technical"]) == [Overflow("c1", "billing"), Overflow("c2", "billing")]


# --- transfer
def test_transfer_to_another_queue(clock: Clock):
    acd = _acd(clock, wrap_up=10)
    _login(acd, "ann")
    _login(acd, "tom", queues=("technical",))
    acd.set_state("tom", "away")
    acd.enqueue("c1", "billing")
    _answer(acd, clock, "c1", "ann", "of-1")
    clock.at(50)
    with pytest.raises(ValueError, match="no queue 'sales'"):
        acd.transfer("c1", "sales")
    assert acd.transfer("c1", "technical") == [StateChanged("ann", WRAP_UP), Requeued("c1", "technical")]
    clock.at(53)
    assert acd.set_state("tom", "available") == [StateChanged("tom", AVAILABLE),
                                                 *_offer("of-2", "c1", "tom", "technical")]
    assert acd.accept("tom", "of-2")[0] == Connect("c1", "tom", "technical", 3.0, "of-2")
    assert acd.stats["technical"].enqueued == 1


def test_transfer_to_a_queue_nobody_serves_overflows(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann")
    acd.enqueue("c1", "billing")
    _answer(acd, clock, "c1", "ann", "of-1")
    assert acd.transfer("c1", "technical") == [StateChanged("ann", AVAILABLE), Overflow("c1", "technical")]


# --- SIP desk phones
def test_a_sip_member_is_never_set_away_and_rings_again_after_a_pause(clock: Clock):
    acd = _acd(clock, wrap_up=8)
    desk = "sip:desk1@pbx.example.com"
    assert acd.login(desk, ["billing"], kind="sip") == [StateChanged(desk, AVAILABLE)]
    acd.enqueue("c1", "billing")
    clock.at(15)
    assert acd.tick() == [Withdraw("of-1", "c1", desk, WithdrawReason.RING_TIMEOUT), StateChanged(desk, AVAILABLE)]
    assert acd.next_deadline() == 30
    clock.at(30)
    assert acd.tick() == _offer("of-2", "c1", desk)
    _answer(acd, clock, "c1", desk, "of-2", waited=30)
    assert acd.call_ended(desk, "c1") == [StateChanged(desk, WRAP_UP)]
    clock.at(38)
    assert acd.tick() == [StateChanged(desk, AVAILABLE)]


def test_a_browser_operator_gets_the_call_a_desk_phone_let_ring(clock: Clock):
    acd = _acd(clock)
    desk = "sip:desk1@pbx.example.com"
    acd.login(desk, ["billing"], kind="sip")
    acd.login("ann", ["billing"], away=True)
    acd.enqueue("c1", "billing")
    clock.at(15)
    acd.tick()
    clock.at(16)
    assert acd.set_state("ann", "available") == [StateChanged("ann", AVAILABLE), *_offer("of-2", "c1", "ann")]


# --- views, stats, reload
def test_views_and_service_level(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    _login(acd, "tom", queues=("technical",))
    acd.set_state("bob", "away", "lunch")
    acd.enqueue("c1", "billing")
    clock.at(5)
    acd.enqueue("c2", "billing")
    clock.at(25)
    assert acd.longest_wait("billing") == 25 and acd.longest_wait("technical") == 0
    assert acd.operators_by_state("billing") == {OFFERED: ["ann"], AWAY: ["bob"]}
    assert acd.operators_by_state() == {OFFERED: ["ann"], AWAY: ["bob"], AVAILABLE: ["tom"]}
    _answer(acd, clock, "c1", "ann", "of-1", waited=25)  # the ring ran past the service level
    acd.set_state("bob", "available")
    _answer(acd, clock, "c2", "bob", "of-2", waited=20)
    stats = acd.stats["billing"]
    assert (stats.answered, stats.answered_in_service_level) == (2, 1)
    view = acd.operator("bob")
    assert view is not None and (view.state, view.call, view.since, view.queues) == (ON_CALL, "c2", 25, ("billing",))


def test_a_reload_changes_the_strategy_and_removes_queues(clock: Clock):
    acd = _acd(clock)
    _login(acd, "ann", "bob")
    acd.update_queues({"billing": QueueSettings("ring_all")})
    assert acd.enqueue("c1", "billing") == [*_offer("of-1", "c1", "ann"), *_offer("of-2", "c1", "bob")]
    acd.update_queues({})
    assert acd.enqueue("c2", "billing") == [Overflow("c2", "billing", OverflowReason.UNKNOWN_QUEUE)]
    assert acd.waiting("billing") == ["c1"]  # waiting calls stay until answered


def test_a_reload_that_stops_announcements(clock: Clock):
    acd = _acd(clock, announce_every=30)
    acd.login("ann", ["billing"], away=True)
    acd.enqueue("c1", "billing")
    acd.update_queues({"billing": QueueSettings(announce_every=None)})
    clock.at(30)
    assert acd.tick() == []
    assert acd.next_deadline() is None


def test_queue_settings_come_from_queues_yaml():
    queue = Queue.model_validate({"strategy": "ring_all", "ring_timeout": 20, "announce_every": 0,
                                  "sip_members": ["sip:desk1@pbx.example.com"]})
    assert QueueSettings.of(queue) == QueueSettings("ring_all", 20, 10, None, 20)
    assert QueueSettings.of(Queue()) == QueueSettings()
    assert Queue().dispositions == ["resolved", "follow-up", "transferred", "other"]
    for bad in ({"sip_members": ["desk1@pbx.example.com"]}, {"dispositions": []}, {"ring_timeout": 0},
                {"strategy": "random"}, {"dispositions": ["done", "done"]}):
        with pytest.raises(ValidationError):
            Queue.model_validate(bad)


# --- a property: whatever happens, in any order
OPERATORS = ("ann", "bob", "sip:desk@pbx.example.com")
CALLS = tuple(f"c{n}" for n in range(6))
QUEUES = ("billing", "technical")

_enqueues = st.tuples(st.just("enqueue"), st.sampled_from(CALLS), st.sampled_from(QUEUES))
# Whom these reach is picked among the offers ringing and the calls connected, by number.
_answers = st.tuples(st.just("answer"), st.integers(0, 5), st.sampled_from([True, True, False]))
_steps = st.lists(st.one_of(
    _enqueues, _enqueues, _answers, _answers, _answers,
    st.tuples(st.just("hang_up"), st.integers(0, 5), st.none()),
    st.tuples(st.just("transfer"), st.integers(0, 5), st.sampled_from(QUEUES)),
    st.tuples(st.just("caller_left"), st.sampled_from(CALLS), st.none()),
    st.tuples(st.just("wait"), st.floats(0.5, 40), st.none()),
    st.tuples(st.just("state"), st.sampled_from(OPERATORS), st.sampled_from(["available", "away"])),
    st.tuples(st.just("login"), st.sampled_from(OPERATORS), st.sampled_from([("billing",), ("technical",), QUEUES])),
    st.tuples(st.just("logout"), st.sampled_from(OPERATORS), st.booleans()),
), min_size=10, max_size=80)


@settings(max_examples=300, deadline=None, database=None)
@given(_steps, st.sampled_from(["longest_idle", "ring_all", "round_robin", "fewest_calls"]))
def test_no_operator_is_offered_two_calls_and_no_call_is_lost(steps, strategy):
    clock = Clock()
    acd = ACD({"billing": QueueSettings(strategy, 10, 5, 15), "technical": QueueSettings(wrap_up=0)}, clock)
    # The desk's picture, built only from the actions.
    states: dict[str, OperatorState] = {}
    ringing: dict[str, tuple[str, str]] = {}  # offer → (call, operator)
    call_of: dict[str, str] = {}  # operator → connected call
    waiting: set[str] = set()
    ends: dict[str, list[str]] = {}  # call → how it ended, each time

    def apply(actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Offer(offer_id, call, operator, _, _):
                    assert states[operator] is AVAILABLE and operator not in call_of
                    assert all(op != operator for _, op in ringing.values()), "two offers for one operator"
                    assert call in waiting
                    ringing[offer_id] = (call, operator)
                case Withdraw(offer_id, call, operator, _):
                    assert ringing.pop(offer_id) == (call, operator)
                case Connect(call, operator, _, waited, offer_id):
                    assert ringing.pop(offer_id) == (call, operator) and waited >= 0
                    waiting.remove(call)
                    call_of[operator] = call
                case Overflow(call, _, _):
                    assert call not in waiting or not any(c == call for c, _ in ringing.values())
                    waiting.discard(call)
                    ends.setdefault(call, []).append("overflowed")
                case Requeued(call, _):
                    assert call not in waiting
                    waiting.add(call)
                case StateChanged(operator, state, _):
                    assert states.get(operator, LOGGED_OUT) != state or state is AWAY
                    states[operator] = state
                    if state is LOGGED_OUT:
                        del states[operator]
                    if state is not ON_CALL:
                        call_of.pop(operator, None)
                case Announce(call, position):
                    assert call in waiting and position >= 1

    for name in OPERATORS:
        apply(acd.login(name, QUEUES, kind="sip" if name.startswith("sip:") else "browser"))
    for kind, who, arg in steps:
        if kind == "login":
            apply(acd.login(who, arg, kind="sip" if who.startswith("sip:") else "browser"))
        elif kind == "state":
            apply(acd.set_state(who, arg))
        elif kind == "logout":
            apply(acd.logout(who) if arg else acd.operator_lost(who))
        elif kind == "enqueue":
            if who in ends or who in waiting or who in call_of.values():
                continue  # a call escalates once
            ends[who] = []
            waiting.add(who)
            apply(acd.enqueue(who, arg))
        elif kind == "caller_left":
            was_waiting = who in waiting
            connected = who in call_of.values()
            apply(acd.caller_left(who))
            if was_waiting:
                waiting.discard(who)
                ends[who].append("abandoned")
            elif connected:
                ends[who].append("connected")
        elif kind == "answer":
            if ringing:
                offer, (_, operator) = sorted(ringing.items())[who % len(ringing)]
                apply(acd.accept(operator, offer) if arg else acd.decline(operator, offer))
        elif kind == "hang_up":
            if call_of:
                operator, call = sorted(call_of.items())[who % len(call_of)]
                apply(acd.call_ended(operator, call))
                ends[call].append("connected")
        elif kind == "transfer":
            if call_of:
                operator, call = sorted(call_of.items())[who % len(call_of)]
                apply(acd.transfer(call, arg))
        else:
            deadline = acd.next_deadline()
            clock.at(clock.now + who)
            if deadline is not None and deadline <= clock.now:
                apply(acd.tick())
        # The ACD's view is the desk's view.
        for name in OPERATORS:
            view = acd.operator(name)
            assert (view.state if view else None) == states.get(name)
        assert {c for q in QUEUES for c in acd.waiting(q)} == waiting
        deadline = acd.next_deadline()
        assert deadline is None or deadline > clock.now or acd.tick() == []

    # Every caller still waiting leaves: then each call has ended exactly once.
    for call in sorted(waiting):
        apply(acd.caller_left(call))
        ends[call].append("abandoned")
    for operator, call in list(call_of.items()):
        apply(acd.call_ended(operator, call))
        ends[call].append("connected")
    assert all(len(how) == 1 for how in ends.values()), ends
    assert not ringing
