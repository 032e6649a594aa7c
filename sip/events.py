"""What a worker's pjsua2 thread reports, each event about one leg.

Plain data, built on the pjsua2 thread and read on the event loop: nothing pjsua2 crosses
over but the media port's deques. The worker dispatches on these types.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "CallOffered", "LegAnswered", "DialFailed", "DtmfReceived", "TransferFinished", "LegEnded", "PjEvent",
    "EventSink", "RtpCounts",
]


@dataclass(frozen=True)
class CallOffered:
    """An INVITE from the edge, answered 180 and waiting for the hub's decision."""

    leg: int
    sip_call_id: str
    from_uri: str
    to_uri: str
    to_user: str
    trunk: str | None
    source: str | None


@dataclass(frozen=True)
class LegAnswered:
    """Media is up: `received` fills with the far end's frames, `playout` is drained to it."""

    leg: int
    codec: str
    received: deque[bytes]
    playout: deque[bytes]
    outbound: bool  # a leg we dialled (its answer is the dial's result)


@dataclass(frozen=True)
class DialFailed:
    """A leg we dialled ended before it was answered, or could not be placed at all."""

    leg: int
    code: int
    reason: str


@dataclass(frozen=True)
class DtmfReceived:
    leg: int
    digit: str
    method: str  # "rfc4733" or "info"


@dataclass(frozen=True)
class TransferFinished:
    """The final outcome of a REFER the hub asked for."""

    leg: int
    ok: bool
    code: int
    reason: str


@dataclass(frozen=True)
class RtpCounts:
    """A leg's RTP over its call, from pjmedia's stream counters: the caller's side (received)
    and ours (sent). A re-INVITE that re-creates the stream adds the new stream's counts."""

    received: int = 0  # packets
    lost: int = 0  # sequence numbers never received
    discarded: int = 0  # received, but too late or too many for the jitter buffer
    sent: int = 0
    jitter_max_ms: float = 0.0

    def __add__(self, other: RtpCounts) -> RtpCounts:
        return RtpCounts(self.received + other.received, self.lost + other.lost, self.discarded + other.discarded,
                         self.sent + other.sent, max(self.jitter_max_ms, other.jitter_max_ms))


@dataclass(frozen=True)
class LegEnded:
    leg: int
    reason: str  # an EndReason, or refused-NNN / sip-NNN
    rtp: RtpCounts | None = None  # None: the leg never had media


PjEvent = CallOffered | LegAnswered | DialFailed | DtmfReceived | TransferFinished | LegEnded
EventSink = Callable[[PjEvent], None]
