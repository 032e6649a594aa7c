"""One Media Streams WebSocket's I/O: frames become StreamSession events, its actions are carried out.

Reads the socket, arms the session's timeouts, writes to Twilio through a bounded queue (a second
of messages: a client behind that is not reading), hands caller audio to the gateway's batches
and control messages to the hub, and closes the socket when the session says so. The protocol
itself, what is allowed when and what follows, is session.py's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from pydantic import BaseModel

import appliance.rooms.protocol as p
from appliance.observability.logging import log_extra
from twilio_gateway import messages as m
from twilio_gateway.session import (
    Broken,
    CallerAudio,
    Close,
    DropUnsent,
    EndAtTwilio,
    Event,
    Gone,
    HubClear,
    HubFrame,
    HubHangup,
    HubReply,
    HubTransfer,
    Phase,
    Received,
    RedirectAtTwilio,
    Redirected,
    StreamSession,
    TimedOut,
    ToHub,
    ToTwilio,
)
from twilio_gateway.tickets import StreamTickets

__all__ = ["MediaStream"]

log = logging.getLogger(__name__)

# How long each phase may wait: Twilio sends connected and start at once; the hub decides an
# offer as it does a SIP worker's.
TIMEOUTS_S = {Phase.STARTING: 10.0, Phase.OFFERED: 5.0}
CLOSE_TIMEOUT_S = 2.0  # for the client's answer to our close
# The caller's audio waiting for the gateway's next batch to the hub. Generous (5 s, as a SIP
# worker's): the hub records every caller frame it gets and bounds the live queue itself, so a
# frame dropped here after the event loop stalled would be lost from the recording too.
RECEIVED_FRAMES = 250
# Messages waiting to be written to the socket: a second of media. A client this far behind has
# stopped reading; holding more would only grow the box for a call nobody hears.
OUTGOING_MESSAGES = 60


class MediaStream:
    def __init__(self, leg: int, request: web.Request, ws: web.WebSocketResponse, tickets: StreamTickets,
                 send_hub: Callable[[BaseModel], None], end_at_twilio: Callable[[str], None],
                 redirect_at_twilio: Callable[[str, str, Callable[[Redirected], None]], None]):
        self.request = request
        self.ws = ws
        self.session = StreamSession(leg, tickets)
        self.received: deque[bytes] = deque(maxlen=RECEIVED_FRAMES)
        self._send_hub = send_hub
        self._end_at_twilio = end_at_twilio
        self._redirect_at_twilio = redirect_at_twilio
        loop = asyncio.get_running_loop()
        self._outgoing: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTGOING_MESSAGES)
        self._closing: asyncio.Future[Close] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timed_phase: Phase | None = None
        self._behind = False

    @property
    def leg(self) -> int:
        return self.session.leg

    # --- what the gateway hands over from the hub
    def offer_reply(self, reply: p.OfferReply) -> None:
        self.feed(HubReply(reply))

    def play(self, pcm: bytes) -> None:
        self.feed(HubFrame(pcm))

    def clear(self) -> None:
        self.feed(HubClear())

    def hangup(self, reason: str) -> None:
        self.feed(HubHangup(reason))

    def transfer(self, to: str, caller_id: str | None) -> None:
        self.feed(HubTransfer(to, caller_id))

    # --- the state machine's side
    def feed(self, event: Event) -> None:
        for action in self.session.handle(event):
            _ACTIONS[type(action)](self, action)
        if self._behind:
            self._behind = False
            self.feed(Broken(WSCloseCode.POLICY_VIOLATION, f"client stopped reading: {OUTGOING_MESSAGES} messages "
                                                           "unwritten"))
        self._arm_timer()

    def _arm_timer(self) -> None:
        phase = self.session.phase
        if phase is self._timed_phase:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timed_phase = phase
        timeout = TIMEOUTS_S.get(phase)
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self.feed, TimedOut(phase))

    def _to_hub(self, action: ToHub) -> None:
        self._send_hub(action.message)
        if isinstance(action.message, p.Answered):
            log.info("media stream answered", extra=log_extra(call_id=self.session.call_id, leg=self.leg))

    def _to_twilio(self, action: ToTwilio) -> None:
        try:
            self._outgoing.put_nowait(action.text)
        except asyncio.QueueFull:
            self._behind = True

    def _drop_unsent(self, action: DropUnsent) -> None:
        dropped = self._outgoing.qsize()
        while not self._outgoing.empty():
            self._outgoing.get_nowait()
        log.info("media stream cleared", extra=log_extra(call_id=self.session.call_id, leg=self.leg,
                                                         unsent=dropped, unheard_ms=self.session.unheard_ms))

    def _caller_audio(self, action: CallerAudio) -> None:
        self.received.extend(action.frames)

    def _close(self, action: Close) -> None:
        if not self._closing.done():
            self._closing.set_result(action)

    def _end_call_at_twilio(self, action: EndAtTwilio) -> None:
        self._end_at_twilio(action.call_sid)

    def _redirect_call_at_twilio(self, action: RedirectAtTwilio) -> None:
        log.info("media stream call redirected to dial its transfer", extra=log_extra(
            call_id=self.session.call_id, leg=self.leg, pii={"twiml": action.twiml}))
        # The stream may be over by the answer (Twilio stops it as it redirects): the session
        # still tells the hub.
        self._redirect_at_twilio(action.call_sid, action.twiml, self.feed)

    # --- the socket
    async def run(self) -> None:
        """Carry the stream until it ends; never raises for anything the client does."""
        self._arm_timer()
        writer = asyncio.get_running_loop().create_task(self._write())
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            waits: list[asyncio.Future[Any]] = [reader, self._closing]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            writer.cancel()
            if self._timer is not None:
                self._timer.cancel()
            if not self._closing.done():
                self.feed(Gone())  # cancelled (the appliance stopping): end as a lost stream
            close = self._closing.result()
            if close.why:
                log.warning("media stream closed", extra=log_extra(call_id=self.session.call_id, leg=self.leg,
                                                                   why=close.why[:300], code=int(close.code)))
            await self._close_socket(close.code, close.why[:120].encode())
            log.info("media stream ended", extra=log_extra(call_id=self.session.call_id, leg=self.leg,
                                                           reason=self.session.reason))

    async def _read(self) -> None:
        while not self._closing.done():
            try:
                event = _event(await self.ws.receive())
            except TimeoutError:  # receive_timeout: Twilio sends media every 20 ms
                event = Broken(WSCloseCode.POLICY_VIOLATION, "the client went silent")
            self.feed(event)
            if isinstance(event, (Gone, Broken)):
                return

    async def _write(self) -> None:
        try:
            while True:
                await self.ws.send_str(await self._outgoing.get())
        except (ConnectionError, RuntimeError):
            pass  # the socket closed under us: the reader sees it and ends the stream

    async def _close_socket(self, code: int, message: bytes) -> None:
        """Close with `code`; a client that reads nothing more (not even our close) is cut off."""
        if self.ws.closed:
            return
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            if self.request.transport is not None:
                self.request.transport.abort()


def _event(frame: WSMessage) -> Event:
    """A WebSocket frame as the session's event."""
    if frame.type == WSMsgType.TEXT:
        try:
            return Received(m.decode(frame.data))
        except m.MediaStreamError as exc:
            return Broken(WSCloseCode.INVALID_TEXT, str(exc))
    if frame.type == WSMsgType.BINARY:
        return Broken(WSCloseCode.UNSUPPORTED_DATA, "binary frame; text frames only")
    if frame.type == WSMsgType.ERROR:
        # aiohttp has closed the socket already (an oversized frame: 1009).
        return Broken(WSCloseCode.MESSAGE_TOO_BIG, f"unreadable frame: {frame.data}")
    return Gone()  # closed by the client, or under us


_ACTIONS: dict[type, Callable[[MediaStream, Any], None]] = {
    ToHub: MediaStream._to_hub,
    ToTwilio: MediaStream._to_twilio,
    DropUnsent: MediaStream._drop_unsent,
    CallerAudio: MediaStream._caller_audio,
    Close: MediaStream._close,
    EndAtTwilio: MediaStream._end_call_at_twilio,
    RedirectAtTwilio: MediaStream._redirect_call_at_twilio,
}
