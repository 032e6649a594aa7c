"""Stream tickets: what ties a Media Streams WebSocket to a voice webhook Twilio signed.

The WebSocket upgrade carries no signature we could check against a form, so the signed voice
webhook issues a random one-time token for its CallSid and puts it in the stream's custom
parameters; the stream's `start` must bring it back unused, unexpired and for the same CallSid.
Nobody can open a stream from the internet without first getting a webhook past the signature.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from appliance.core.clock import monotonic

__all__ = ["StreamTickets", "Ticket", "TicketRefused"]

# Tickets issued and not yet used or expired: a flood of signed webhooks (only Twilio can send
# them) is the only way to fill this; far above any box's calls per stream-token lifetime.
MAX_OUTSTANDING = 4096


@dataclass(frozen=True)
class Ticket:
    call_sid: str
    caller: str
    called: str
    expires: float


class TicketRefused(Exception):
    """The start's token is not one we issued, was used, expired, or names another call."""


class StreamTickets:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = monotonic):
        self.ttl_s = ttl_s
        self.clock = clock
        self._issued: dict[str, Ticket] = {}

    def issue(self, call_sid: str, caller: str, called: str) -> str:
        self._expire()
        if len(self._issued) >= MAX_OUTSTANDING:
            # The oldest goes: its stream, if it ever comes, is refused and Twilio ends that call.
            self._issued.pop(next(iter(self._issued)))
        token = secrets.token_urlsafe(24)
        self._issued[token] = Ticket(call_sid, caller, called, self.clock() + self.ttl_s)
        return token

    def redeem(self, token: str, call_sid: str) -> Ticket:
        """The ticket for `token`, used up; TicketRefused saying why not."""
        self._expire()
        ticket = self._issued.get(token)
        if ticket is None:
            raise TicketRefused("stream token not issued by a signed voice webhook, used already, or expired")
        if not secrets.compare_digest(ticket.call_sid, call_sid):
            raise TicketRefused("stream token was issued for another call")
        del self._issued[token]
        return ticket

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, ticket in self._issued.items() if ticket.expires <= now]:
            del self._issued[token]
