"""One Media Streams WebSocket: checked, joined to the hub as a caller's leg, carried until either side ends it.

The socket must open with `start` (after an optional `connected`) carrying a stream ticket a signed
voice webhook issued; until then nothing reaches the hub. Caller audio becomes the hub's 20 ms frames;
the hub's frames go out as they come (the hub's clock paces them at real time, so Twilio buffers
little). A frame that breaks the protocol, a binary or oversized one, a client that stops reading or a
socket that just closes ends the stream with `stream-lost`; `stop` ends it with `caller-hangup`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel

import appliance.rooms.protocol as p
from appliance.core.reasons import EndReason
from appliance.observability.logging import log_extra
from twilio_gateway import messages as m
from twilio_gateway.codec import WIRE_RATE, Inbound, Outbound
from twilio_gateway.tickets import StreamTickets, Ticket, TicketRefused

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0  # Twilio sends connected and start at once; a socket silent this long is not Twilio
OFFER_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0  # for the client's answer to our close  # as a SIP worker waits for the hub's decision
# The caller's audio waiting for the gateway's next batch to the hub: as the hub's own jitter bound.
RECEIVED_FRAMES = 10
# Frames (and marks) waiting to be written to a socket: a second. A client this far behind has
# stopped reading; holding more would only grow the box for a call nobody hears.
OUTGOING_FRAMES = 50
MARK_EVERY = 10  # a mark every 200 ms of reply: Twilio says back how far the caller has heard
# Audio sent that Twilio has not said (by its marks) it played. The hub sends at real time, so a
# live stream lags by its network's delay; seconds behind is a client that stopped reading or playing,
# whatever the socket buffers between us still take in (on loopback they hold minutes of it).
MAX_UNHEARD_FRAMES = 5 * 1000 // 20


class StreamClosed(Exception):
    """The stream ends: `reason` goes to the call's record, `code` and `detail` to the client."""

    def __init__(self, reason: str, code: int = WSCloseCode.OK, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.code = code
        self.detail = detail


@dataclass
class StreamCall:
    """What the stream is, once its start is accepted."""

    stream_sid: str
    ticket: Ticket


class MediaStream:
    def __init__(self, leg: int, request: web.Request, ws: web.WebSocketResponse,
                 send: Callable[[BaseModel], None], complete: Callable[[str], None]):
        self.leg = leg
        self.request = request
        self.ws = ws
        self._send_hub = send  # a control message to the hub
        self._complete = complete  # end the Twilio call through the REST API
        self.call: StreamCall | None = None
        self.call_id: str | None = None
        self.received: deque[bytes] = deque(maxlen=RECEIVED_FRAMES)
        self.offer_reply: asyncio.Future[p.OfferReply] = asyncio.get_running_loop().create_future()
        self._inbound = Inbound()
        self._outbound = Outbound()
        self._outgoing: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTGOING_FRAMES)
        self._ended = asyncio.get_running_loop().create_future()  # the hub or the writer ended it: the reason
        self._sent_frames = 0
        self._heard_frames = 0  # up to the last mark Twilio said back

    # --- the life of the stream
    async def run(self, tickets: StreamTickets) -> None:
        """Carry the stream until it ends; never raises for anything the client does."""
        reason: str = EndReason.STREAM_LOST
        joined = False
        writer = asyncio.get_running_loop().create_task(self._write())
        try:
            self.call = await asyncio.wait_for(self._start(tickets), START_TIMEOUT_S)
            joined = await self._join()
            if joined:
                reason = await self._carry()
        except TimeoutError:
            await self._refuse(StreamClosed(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION,
                                            "no start within the time allowed"))
        except StreamClosed as exc:
            reason = exc.reason
            await self._refuse(exc)
        finally:
            writer.cancel()
            if joined and not self._ended.done():
                self._send_hub(p.Ended(leg=self.leg, reason=reason))
            await self._close(WSCloseCode.OK, b"")
            log.info("media stream ended", extra=log_extra(call_id=self.call_id, leg=self.leg, reason=reason))

    async def _start(self, tickets: StreamTickets) -> StreamCall:
        while True:
            message = await self._next()
            if isinstance(message, m.Connected):
                continue
            if not isinstance(message, m.Start):
                raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION,
                                   f"{message.event} before start")
            start = message.start
            fmt = start.media_format
            if (fmt.encoding, fmt.sample_rate, fmt.channels) != (m.MULAW_8K, WIRE_RATE, 1):
                raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.UNSUPPORTED_DATA,
                                   f"media format {fmt.encoding} at {fmt.sample_rate} Hz; only μ-law 8 kHz mono")
            try:
                ticket = tickets.redeem(start.custom_parameters.get("token", ""), start.call_sid)
            except TicketRefused as exc:
                raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION, str(exc)) from None
            return StreamCall(message.stream_sid, ticket)

    async def _join(self) -> bool:
        """Offer the call to the hub as a SIP worker offers an INVITE; True once answered."""
        assert self.call is not None
        ticket = self.call.ticket
        self._send_hub(p.Offer(leg=self.leg, sip_call_id=ticket.call_sid, from_uri=f"sip:{ticket.caller}@twilio",
                               to_uri=f"sip:{ticket.called}@twilio", to_user=ticket.called))
        try:
            reply = await asyncio.wait_for(asyncio.shield(self.offer_reply), OFFER_TIMEOUT_S)
        except TimeoutError:
            raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.TRY_AGAIN_LATER, "the hub did not answer") from None
        if reply.code != 200 or reply.call_id is None:
            # Closing a <Connect><Stream> moves Twilio to the next verb: there is none, so the call ends.
            log.info("media stream call refused", extra=log_extra(leg=self.leg, code=reply.code))
            raise StreamClosed(f"refused-{reply.code}", WSCloseCode.OK, f"{reply.code} {reply.reason}")
        self.call_id = reply.call_id
        self._send_hub(p.Answered(leg=self.leg, codec="PCMU/8000"))
        log.info("media stream answered", extra=log_extra(call_id=self.call_id, leg=self.leg,
                                                          stream=self.call.stream_sid))
        return True

    async def _carry(self) -> str:
        """Until stop, the socket's end, a broken frame, or the hub's hang-up: the call's end reason."""
        reading = asyncio.ensure_future(self._read())
        done, _ = await asyncio.wait([reading, self._ended], return_when=asyncio.FIRST_COMPLETED)
        if self._ended in done:
            reading.cancel()
            return str(self._ended.result())
        return reading.result()

    async def _read(self) -> str:
        try:
            while True:
                message = await self._next()
                if isinstance(message, m.Media):
                    for frame in self._inbound.frames(message.media.audio()):
                        self.received.append(frame)
                elif isinstance(message, m.Dtmf):
                    self._send_hub(p.Dtmf(leg=self.leg, digit=message.dtmf.digit, method="twilio"))
                elif isinstance(message, m.Mark):
                    self._marked(message.mark.name)
                elif isinstance(message, m.Stop):
                    return EndReason.CALLER_HANGUP
                else:
                    raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.POLICY_VIOLATION,
                                       f"{message.event} after start")
        except m.MediaStreamError as exc:
            await self._refuse(StreamClosed(EndReason.STREAM_LOST, WSCloseCode.INVALID_TEXT, str(exc)))
        except StreamClosed as exc:
            await self._refuse(exc)
            return exc.reason
        return EndReason.STREAM_LOST

    async def _next(self) -> m.Connected | m.Start | m.Media | m.Dtmf | m.Mark | m.Stop:
        """The next message; StreamClosed for a closed socket, a frame that is not one (bad JSON, binary, oversized)."""
        frame = await self.ws.receive()
        if frame.type == WSMsgType.TEXT:
            try:
                return m.decode(frame.data)
            except m.MediaStreamError as exc:
                raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.INVALID_TEXT, str(exc)) from None
        if frame.type == WSMsgType.BINARY:
            raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.UNSUPPORTED_DATA, "binary frame; text frames only")
        if frame.type == WSMsgType.ERROR:
            # aiohttp has closed the socket already (an oversized frame: 1009).
            raise StreamClosed(EndReason.STREAM_LOST, WSCloseCode.MESSAGE_TOO_BIG, str(frame.data))
        raise StreamClosed(EndReason.STREAM_LOST)  # closed by the client, or under us

    async def _refuse(self, exc: StreamClosed) -> None:
        if exc.detail:
            log.warning("media stream closed", extra=log_extra(call_id=self.call_id, leg=self.leg, why=exc.detail,
                                                               code=int(exc.code)))
        await self._close(exc.code, exc.detail[:120].encode())

    async def _close(self, code: int, message: bytes) -> None:
        """Close with `code`; a client that reads nothing more (not even our close) is cut off."""
        if self.ws.closed:
            return
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            if self.request.transport is not None:
                self.request.transport.abort()

    # --- the hub's side
    def play(self, frame: bytes) -> None:
        """One 20 ms frame of what the caller hears."""
        if self.call is None or self._ended.done():
            return
        self._put(m.media_out(self.call.stream_sid, self._outbound.encode(frame)).frame())
        self._sent_frames += 1
        if self._sent_frames - self._heard_frames > MAX_UNHEARD_FRAMES:
            self._stalled(f"{(self._sent_frames - self._heard_frames) * 20} ms sent and not played")
        elif self._sent_frames % MARK_EVERY == 0:
            self._put(m.MarkOut(stream_sid=self.call.stream_sid, mark=m.MarkName(name=str(self._sent_frames))).frame())

    def clear(self) -> None:
        """The hub dropped what was queued for the caller: drop what Twilio and we hold too."""
        if self.call is None or self._ended.done():
            return
        dropped = self._outgoing.qsize()
        while not self._outgoing.empty():
            self._outgoing.get_nowait()
        self._put(m.Clear(stream_sid=self.call.stream_sid).frame())
        log.info("media stream cleared", extra=log_extra(
            call_id=self.call_id, leg=self.leg, unsent_frames=dropped,
            unheard_ms=(self._sent_frames - self._heard_frames) * 20))

    def hangup(self, reason: str) -> None:
        """The hub ended the call: end it at Twilio (the caller's phone) and close the stream."""
        if self._ended.done():
            return
        self._ended.set_result(reason)
        if self.call is not None:
            self._complete(self.call.ticket.call_sid)

    def _put(self, text: str) -> None:
        try:
            self._outgoing.put_nowait(text)
        except asyncio.QueueFull:
            self._stalled(f"{OUTGOING_FRAMES} messages unwritten")

    def _stalled(self, why: str) -> None:
        if self._ended.done():
            return
        log.warning("media stream client stopped reading", extra=log_extra(call_id=self.call_id, leg=self.leg,
                                                                            why=why))
        self._ended.set_result(EndReason.STREAM_LOST)
        self._send_hub(p.Ended(leg=self.leg, reason=EndReason.STREAM_LOST))

    def _marked(self, name: str) -> None:
        if name.isdigit():
            self._heard_frames = max(self._heard_frames, min(int(name), self._sent_frames))

    async def _write(self) -> None:
        try:
            while True:
                text = await self._outgoing.get()
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass  # the socket closed under us: the reader sees it and ends the stream
