"""Stream tickets: what ties a Media Streams WebSocket to a voice webhook Twilio signed.

The WebSocket upgrade carries no signature we could check against a form, so the signed voice
webhook issues a random one-time token for its CallSid and puts it in the stream's custom
parameters; the stream's `start` must bring it back unused, unexpired and for the same CallSid.
Nobody can open a stream from the internet without first getting a webhook past the signature.

A signature has no date, so a captured signed webhook stays good: each CallSid gets one ticket,
ever (as long as it is remembered, `REMEMBER_S`). The webhook repeated while that ticket is
unused gets it again (Twilio retrying a lost answer changes nothing); once it was used or has
expired, the call had its chance of a stream and `issue` says so.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from appliance.core.clock import monotonic

__all__ = ["REMEMBER_S", "StreamTickets", "Ticket", "TicketRefused"]

# How long a CallSid is remembered: far beyond any call, so a replay within it opens nothing.
REMEMBER_S = 6 * 3600.0
# CallSids remembered at most (~150 bytes each): a box at its 256 streams of 5-minute calls sees
# ~18,000 in REMEMBER_S. Only Twilio can add one (the webhook is signed); past this the oldest go.
MAX_REMEMBERED = 50_000


@dataclass(frozen=True)
class Ticket:
    call_sid: str
    caller: str
    called: str
    expires: float


@dataclass
class _Seen:
    """A CallSid's one ticket: its token until redeemed (None after), and when it was issued."""

    token: str | None
    issued: float


class TicketRefused(Exception):
    """The start's token is not one we issued, was used, expired, or names another call."""


class StreamTickets:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = monotonic):
        self.ttl_s = ttl_s
        self.clock = clock
        self._issued: dict[str, Ticket] = {}  # unused and unexpired, by token
        self._seen: OrderedDict[str, _Seen] = OrderedDict()  # by CallSid, oldest first

    def issue(self, call_sid: str, caller: str, called: str) -> str | None:
        """The token for `call_sid`'s stream: new, or the unused one issued before; None when the
        call's ticket was used or has expired (a call gets one stream)."""
        self._expire()
        seen = self._seen.get(call_sid)
        if seen is not None:
            return seen.token if seen.token in self._issued else None
        if len(self._seen) >= MAX_REMEMBERED:
            self._forget_oldest()
        token = secrets.token_urlsafe(24)
        now = self.clock()
        self._issued[token] = Ticket(call_sid, caller, called, now + self.ttl_s)
        self._seen[call_sid] = _Seen(token, now)
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
        self._seen[call_sid].token = None
        return ticket

    def _expire(self) -> None:
        # Both in issue order with one lifetime each: what is due is at the front.
        now = self.clock()
        while self._issued:
            token, ticket = next(iter(self._issued.items()))
            if ticket.expires > now:
                break
            del self._issued[token]
        while self._seen and next(iter(self._seen.values())).issued + REMEMBER_S <= now:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, seen = self._seen.popitem(last=False)
        if seen.token is not None:
            # Its stream, if it ever comes, is refused and Twilio ends that call.
            self._issued.pop(seen.token, None)
