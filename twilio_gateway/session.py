"""One Media Stream's protocol as a pure state machine: events in, actions out.

Events are what Twilio sends (`Received`, or a frame that is not the protocol: `Broken`), the
socket going (`Gone`), the hub's answer and orders, and the timeouts the I/O side arms for the
phase it is told; actions are messages to the hub and to Twilio, a close, the REST hang-up or
redirect. Nothing here does I/O or reads a clock, so tests assert exact action lists (stream.py
does the I/O).

  STARTING --start with a good ticket--> OFFERED --hub 200--> ANSWERED --stop/hang-up/break--> ENDED
  (anything else along the way ends it; the hub hears `Ended` exactly once for a call it opened)

A blind transfer runs beside the phases: the hub's Transfer becomes a REST redirect to <Dial>
(PENDING), Twilio's answer the hub's TransferResult (DONE, or back to NONE). Twilio stops the
stream of a call it redirects, perhaps before its API has answered, so an end while PENDING is
told to the hub only with the outcome; once DONE the call has left the box: it ends as
transferred, and a hang-up from the hub must not end it at Twilio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiohttp import WSCloseCode
from pydantic import BaseModel

import appliance.rooms.protocol as p
from appliance.core.g711 import WIRE_RATE, Inbound, Outbound
from appliance.core.reasons import EndReason
from twilio_gateway import messages as m
from twilio_gateway.tickets import StreamTickets, Ticket, TicketRefused
from twilio_gateway.transfer import NotDialable, dial_twiml

__all__ = ["Action", "Event", "Phase", "StreamSession", "Transferring"]

MARK_EVERY = 10  # a mark every 200 ms of what the caller hears: Twilio says back how far it has played
# Audio sent that Twilio has not said (by its marks) it played. The hub sends at real time, so a
# live stream lags by its network's delay; seconds behind is a client that stopped reading or
# playing, however much the socket buffers between us still take in (on loopback, minutes of it).
MAX_UNHEARD_FRAMES = 5 * 1000 // 20


class Phase(Enum):
    STARTING = "starting"  # the socket is open; no start accepted yet
    OFFERED = "offered"  # start accepted, the call offered to the hub
    ANSWERED = "answered"  # a call in the hub
    ENDED = "ended"


class Transferring(Enum):
    NONE = "none"
    PENDING = "pending"  # Twilio's API asked to redirect the call
    DONE = "done"  # Twilio took the new TwiML: the caller has left the box


# --- events in
@dataclass(frozen=True)
class Received:
    message: m.Connected | m.Start | m.Media | m.Dtmf | m.Mark | m.Stop


@dataclass(frozen=True)
class Broken:
    """A frame that is not the protocol (bad JSON, binary, oversized), or a writer a second behind."""

    code: int
    why: str


@dataclass(frozen=True)
class Gone:
    """The socket closed under us."""


@dataclass(frozen=True)
class TimedOut:
    """The wait of `phase` is over (for start, or for the hub's answer)."""

    phase: Phase


@dataclass(frozen=True)
class HubReply:
    reply: p.OfferReply


@dataclass(frozen=True)
class HubHangup:
    reason: str


@dataclass(frozen=True)
class HubFrame:
    pcm: bytes


@dataclass(frozen=True)
class HubClear:
    """The hub dropped queued audio the caller was hearing (barge-in)."""


@dataclass(frozen=True)
class HubTransfer:
    """The hub's blind transfer (`to` as the hub writes it: tel:+E164 or a sip: URI)."""

    to: str
    caller_id: str | None


@dataclass(frozen=True)
class Redirected:
    """What Twilio's API answered to the redirect: `code` its HTTP status (503 if it never answered)."""

    ok: bool
    code: int
    reason: str


Event = Received | Broken | Gone | TimedOut | HubReply | HubHangup | HubFrame | HubClear | HubTransfer | Redirected


# --- actions out
@dataclass(frozen=True)
class ToHub:
    message: BaseModel


@dataclass(frozen=True)
class ToTwilio:
    text: str


@dataclass(frozen=True)
class DropUnsent:
    """Drop what is queued for Twilio and not yet written: a `clear` overtakes it."""


@dataclass(frozen=True)
class CallerAudio:
    frames: tuple[bytes, ...]


@dataclass(frozen=True)
class Close:
    code: int
    why: str = ""  # empty for an ordinary end


@dataclass(frozen=True)
class EndAtTwilio:
    """End the phone call itself (the REST API): closing a <Connect><Stream> alone moves Twilio on."""

    call_sid: str


@dataclass(frozen=True)
class RedirectAtTwilio:
    """Give the live call new TwiML (the REST API); its answer comes back as `Redirected`."""

    call_sid: str
    twiml: str


Action = ToHub | ToTwilio | DropUnsent | CallerAudio | Close | EndAtTwilio | RedirectAtTwilio


@dataclass(frozen=True)
class StreamCall:
    stream_sid: str
    ticket: Ticket


class StreamSession:
    def __init__(self, leg: int, tickets: StreamTickets):
        self.leg = leg
        self.tickets = tickets
        self.phase = Phase.STARTING
        self.call: StreamCall | None = None
        self.call_id: str | None = None
        self.reason: str = EndReason.STREAM_LOST  # the call's end reason, once ENDED
        self._abandoned = False  # ended while the hub was deciding: a late yes must be undone
        self.transferring = Transferring.NONE
        self._held_end: str | None = None  # the stream's end while a redirect was pending: told with its outcome
        self._inbound = Inbound()
        self._outbound = Outbound()
        self._sent_frames = 0
        self._heard_frames = 0  # up to the last mark Twilio said back
        self._reported_ms = 0  # the lag the hub was last told (Playout)

    def handle(self, event: Event) -> list[Action]:
        return _EVENTS[type(event)](self, event)

    @property
    def unheard_ms(self) -> int:
        return (self._sent_frames - self._heard_frames) * 20

    # --- Twilio's messages
    def _received(self, event: Received) -> list[Action]:
        message = event.message
        if self.phase is Phase.ENDED:
            return []  # media after stop, and the like: the stream is over
        if self.phase is Phase.STARTING and not isinstance(message, (m.Connected, m.Start)):
            return self._end(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION, f"{message.event} before start")
        return _MESSAGES[type(message)](self, message)

    def _connected(self, message: m.Connected) -> list[Action]:
        if self.phase is not Phase.STARTING:
            return self._end(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION, "connected after start")
        return []

    def _start(self, message: m.Start) -> list[Action]:
        if self.phase is not Phase.STARTING:
            return self._end(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION, "a second start")
        start = message.start
        fmt = start.media_format
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != (m.MULAW_8K, WIRE_RATE, 1):
            return self._end(EndReason.STREAM_LOST, WSCloseCode.UNSUPPORTED_DATA,
                             f"media format {fmt.encoding} at {fmt.sample_rate} Hz; only μ-law 8 kHz mono")
        try:
            ticket = self.tickets.redeem(start.custom_parameters.get("token", ""), start.call_sid)
        except TicketRefused as exc:
            return self._end(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION, str(exc))
        self.call = StreamCall(message.stream_sid, ticket)
        self.phase = Phase.OFFERED
        return [ToHub(p.Offer(leg=self.leg, sip_call_id=ticket.call_sid, from_uri=f"sip:{ticket.caller}@twilio",
                              to_uri=f"sip:{ticket.called}@twilio", to_user=ticket.called))]

    def _media(self, message: m.Media) -> list[Action]:
        try:
            audio = message.media.audio()
        except m.MediaStreamError as exc:
            return self._end(EndReason.STREAM_LOST, WSCloseCode.INVALID_TEXT, str(exc))
        frames = self._inbound.frames(audio)
        # Before the hub answers, the caller's audio has nowhere to go (as on SIP before the 200).
        return [CallerAudio(tuple(frames))] if frames and self.phase is Phase.ANSWERED else []

    def _dtmf(self, message: m.Dtmf) -> list[Action]:
        if self.phase is not Phase.ANSWERED:
            return []
        return [ToHub(p.Dtmf(leg=self.leg, digit=message.dtmf.digit, method="twilio"))]

    def _mark(self, message: m.Mark) -> list[Action]:
        """Twilio has played up to a mark of ours: what was sent since is still in its buffer."""
        if not message.mark.name.isdigit() or self.phase is not Phase.ANSWERED:
            return []
        self._heard_frames = max(self._heard_frames, min(int(message.mark.name), self._sent_frames))
        if self.unheard_ms == self._reported_ms:
            return []
        self._reported_ms = self.unheard_ms
        return [ToHub(p.Playout(leg=self.leg, behind_ms=min(self.unheard_ms, 60_000)))]

    def _stop(self, message: m.Stop) -> list[Action]:
        return self._end(EndReason.CALLER_HANGUP, WSCloseCode.OK, "")

    # --- the socket and the clock
    def _broken(self, event: Broken) -> list[Action]:
        return self._end(EndReason.STREAM_LOST, event.code, event.why)

    def _gone(self, event: Gone) -> list[Action]:
        return self._end(EndReason.STREAM_LOST, WSCloseCode.OK, "")

    def _timed_out(self, event: TimedOut) -> list[Action]:
        if event.phase is not self.phase:
            return []  # armed for a phase since left
        if self.phase is Phase.STARTING:
            return self._end(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION, "no start within the time allowed")
        if self.phase is Phase.OFFERED:
            return self._end(EndReason.STREAM_LOST, WSCloseCode.TRY_AGAIN_LATER, "the hub did not answer")
        return []

    # --- the hub
    def _hub_reply(self, event: HubReply) -> list[Action]:
        reply = event.reply
        if self.phase is not Phase.OFFERED:
            if self._abandoned and reply.code == 200:
                self._abandoned = False
                return [ToHub(p.Ended(leg=self.leg, reason=self.reason))]
            return []
        if reply.code != 200 or reply.call_id is None:
            # Closing a <Connect><Stream> moves Twilio to the next verb: there is none, so the call ends.
            self.phase = Phase.ENDED
            self.reason = f"refused-{reply.code}"
            return [Close(WSCloseCode.OK, f"the hub refused the call: {reply.code} {reply.reason}")]
        self.call_id = reply.call_id
        self.phase = Phase.ANSWERED
        return [ToHub(p.Answered(leg=self.leg, codec="PCMU/8000"))]

    def _hub_hangup(self, event: HubHangup) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        self.phase = Phase.ENDED
        self.reason = event.reason
        if self.call is None or self.transferring is Transferring.DONE:
            return [Close(WSCloseCode.OK)]  # the phone call is Twilio's now, dialling the destination
        return [EndAtTwilio(self.call.ticket.call_sid), Close(WSCloseCode.OK)]

    def _hub_frame(self, event: HubFrame) -> list[Action]:
        if self.phase is not Phase.ANSWERED or self.call is None:
            return []
        self._sent_frames += 1
        if self._sent_frames - self._heard_frames > MAX_UNHEARD_FRAMES:
            return self._end(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION,
                             f"client stopped reading: {self.unheard_ms} ms sent and not played")
        actions: list[Action] = [ToTwilio(m.media_out(self.call.stream_sid, self._outbound.encode(event.pcm)).frame())]
        if self._sent_frames % MARK_EVERY == 0:
            mark = m.MarkName(name=str(self._sent_frames))
            actions.append(ToTwilio(m.MarkOut(stream_sid=self.call.stream_sid, mark=mark).frame()))
        return actions

    def _hub_clear(self, event: HubClear) -> list[Action]:
        if self.phase is not Phase.ANSWERED or self.call is None:
            return []
        return [DropUnsent(), ToTwilio(m.Clear(stream_sid=self.call.stream_sid).frame())]

    def _hub_transfer(self, event: HubTransfer) -> list[Action]:
        if self.phase is not Phase.ANSWERED or self.call is None or self.transferring is not Transferring.NONE:
            return [ToHub(p.TransferResult(leg=self.leg, ok=False, code=491,
                                           reason="no answered call, or a transfer already under way"))]
        try:
            twiml = dial_twiml(event.to, event.caller_id)
        except NotDialable as exc:
            return [ToHub(p.TransferResult(leg=self.leg, ok=False, code=416, reason=str(exc)))]
        self.transferring = Transferring.PENDING
        return [RedirectAtTwilio(self.call.ticket.call_sid, twiml)]

    def _redirected(self, event: Redirected) -> list[Action]:
        if self.transferring is not Transferring.PENDING:
            return []
        self.transferring = Transferring.DONE if event.ok else Transferring.NONE
        actions: list[Action] = [ToHub(p.TransferResult(leg=self.leg, ok=event.ok, code=event.code,
                                                        reason=event.reason))]
        if self._held_end is not None:
            # Twilio stopped the stream while its API was deciding: redirected, or the caller hung up.
            self.reason = EndReason.TRANSFERRED if event.ok else self._held_end
            self._held_end = None
            actions.append(ToHub(p.Ended(leg=self.leg, reason=self.reason)))
        return actions

    def _end(self, reason: str, code: int, why: str) -> list[Action]:
        """The stream ends from our side or Twilio's: the hub hears of a call it has (or may yet open)."""
        was, self.phase = self.phase, Phase.ENDED
        if self.transferring is Transferring.DONE:
            reason = EndReason.TRANSFERRED  # Twilio ends the stream of the call it has sent on
        self.reason = reason
        actions: list[Action] = []
        if was is Phase.ANSWERED and self.transferring is Transferring.PENDING:
            self._held_end = reason
        elif was is Phase.ANSWERED:
            actions.append(ToHub(p.Ended(leg=self.leg, reason=reason)))
        elif was is Phase.OFFERED:
            self._abandoned = True
        return actions + [Close(code, why)]


_EVENTS: dict[type, Callable[[StreamSession, Any], list[Action]]] = {
    Received: StreamSession._received,
    Broken: StreamSession._broken,
    Gone: StreamSession._gone,
    TimedOut: StreamSession._timed_out,
    HubReply: StreamSession._hub_reply,
    HubHangup: StreamSession._hub_hangup,
    HubFrame: StreamSession._hub_frame,
    HubClear: StreamSession._hub_clear,
    HubTransfer: StreamSession._hub_transfer,
    Redirected: StreamSession._redirected,
}
_MESSAGES: dict[type, Callable[[StreamSession, Any], list[Action]]] = {
    m.Connected: StreamSession._connected,
    m.Start: StreamSession._start,
    m.Media: StreamSession._media,
    m.Dtmf: StreamSession._dtmf,
    m.Mark: StreamSession._mark,
    m.Stop: StreamSession._stop,
}
