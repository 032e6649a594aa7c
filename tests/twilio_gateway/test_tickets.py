"""Stream tickets: one use, one call, a limited time (on an injected clock)."""

from __future__ import annotations

import pytest

from twilio_gateway import tickets as tickets_module
from twilio_gateway.tickets import REMEMBER_S, StreamTickets, TicketRefused

CALL, OTHER = "CA" + "1" * 32, "CA" + "2" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_ticket_is_redeemed_once_for_its_own_call() -> None:
    tickets = StreamTickets(30, Clock())
    token = tickets.issue(CALL, "+15557654321", "+15550100")
    with pytest.raises(TicketRefused, match="another call"):
        tickets.redeem(token, OTHER)
    ticket = tickets.redeem(token, CALL)
    assert (ticket.call_sid, ticket.caller, ticket.called) == (CALL, "+15557654321", "+15550100")
    with pytest.raises(TicketRefused, match="used already"):
        tickets.redeem(token, CALL)


def test_a_ticket_expires() -> None:
    clock = Clock()
    tickets = StreamTickets(30, clock)
    token = tickets.issue(CALL, "", "+15550100")
    clock.now += 30
    with pytest.raises(TicketRefused, match="expired"):
        tickets.redeem(token, CALL)


def test_tokens_not_issued_are_refused_and_calls_tokens_differ() -> None:
    tickets = StreamTickets(30, Clock())
    assert tickets.issue(CALL, "", "1") != tickets.issue(OTHER, "", "1")
    with pytest.raises(TicketRefused):
        tickets.redeem("", CALL)


# --- one stream per CallSid: a signed webhook replayed opens nothing
def test_a_call_asking_again_gets_its_unused_ticket_and_nothing_once_it_was_used() -> None:
    clock = Clock()
    tickets = StreamTickets(30, clock)
    token = tickets.issue(CALL, "+15557654321", "+15550100")
    clock.now += 10
    assert tickets.issue(CALL, "+15557654321", "+15550100") == token  # Twilio retrying: the same ticket
    tickets.redeem(token, CALL)
    assert tickets.issue(CALL, "+15557654321", "+15550100") is None
    clock.now += REMEMBER_S - 11
    assert tickets.issue(CALL, "+15557654321", "+15550100") is None
    assert tickets.issue(OTHER, "+15557654321", "+15550100") is not None  # other calls as ever


def test_a_call_whose_ticket_expired_unused_gets_none() -> None:
    clock = Clock()
    tickets = StreamTickets(30, clock)
    token = tickets.issue(CALL, "", "+15550100")
    clock.now += 30
    assert tickets.issue(CALL, "", "+15550100") is None
    with pytest.raises(TicketRefused, match="expired"):
        tickets.redeem(token, CALL)


def test_a_call_is_forgotten_after_remember_s() -> None:
    clock = Clock()
    tickets = StreamTickets(30, clock)
    tickets.redeem(tickets.issue(CALL, "", "1"), CALL)
    clock.now += REMEMBER_S - 1
    assert tickets.issue(CALL, "", "1") is None
    clock.now += 1
    assert tickets.issue(CALL, "", "1") is not None  # the memory's bound: documented in docs/TWILIO.md


def test_past_max_remembered_the_oldest_call_goes_with_its_unused_ticket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tickets_module, "MAX_REMEMBERED", 2)
    tickets = StreamTickets(30, Clock())
    oldest = tickets.issue(CALL, "", "1")
    tickets.issue(OTHER, "", "1")
    tickets.issue("CA" + "3" * 32, "", "1")
    with pytest.raises(TicketRefused):
        tickets.redeem(oldest, CALL)
    assert tickets.issue(OTHER, "", "1") is not None
