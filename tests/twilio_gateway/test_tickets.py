"""Stream tickets: one use, one call, a limited time (on an injected clock)."""

from __future__ import annotations

import pytest

from twilio_gateway.tickets import StreamTickets, TicketRefused

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


def test_tokens_not_issued_are_refused_and_tokens_differ() -> None:
    tickets = StreamTickets(30, Clock())
    assert tickets.issue(CALL, "", "1") != tickets.issue(CALL, "", "1")
    with pytest.raises(TicketRefused):
        tickets.redeem("", CALL)
