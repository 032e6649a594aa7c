"""The Media Streams gateway: every stream a caller's leg in the hub, over the participant protocol.

It runs in the appliance's process, because the WebSockets arrive at the appliance's HTTP server
(handing each socket to another process would need descriptor passing or a second listener behind
the proxy), and joins the hub over its unix socket as a SIP worker does: an Offer per stream, the
OfferReply, Answered, 20 ms frames both ways in one batch per tick, Dtmf, Ended; the hub's Hangup
ends the call at Twilio through its REST API, and its Transfer redirects the call there to <Dial> the
destination. Nothing here limits calls per process as pjsua2 does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel

import appliance.rooms.protocol as p
from appliance.config import TwilioConfig
from appliance.core.api import Operation
from appliance.core.audio import FRAME_MS
from appliance.core.reasons import EndReason
from appliance.observability.logging import log_extra
from appliance.rooms.client import HubClient, dispatch
from twilio_gateway.messages import MAX_MESSAGE
from twilio_gateway.rest import TwilioCalls
from twilio_gateway.stream import MediaStream
from twilio_gateway.tickets import StreamTickets
from twilio_gateway.webhooks import Webhooks

__all__ = ["WORKER_NAME", "TwilioGateway"]

log = logging.getLogger(__name__)

WORKER_NAME = "twilio"
RETRY_S = 1.0
# CallSid → our call id, for status callbacks, which come until after the call has ended.
REMEMBERED_CALLS = 1024
WRITE_BUFFER = 16 * 1024


class TwilioGateway:
    def __init__(self, config: TwilioConfig, auth_token: str, hub_socket: str, token: Callable[[], str],
                 on_status: Callable[[str, str, dict[str, Any]], None]):
        assert config.account_sid is not None  # TwilioConfig.check
        self.config = config
        self.auth_token = auth_token
        self.hub_socket = hub_socket
        self.token = token  # a fresh worker token for each join: one minted at start expires
        self.on_status = on_status  # (call id, kind, data) → the call's record
        self.stopping = asyncio.Event()
        self.tickets = StreamTickets(config.stream_token_ttl_s)
        self.webhooks = Webhooks(config, auth_token, self.tickets, self._accepting, self._status)
        self.streams: dict[int, MediaStream] = {}
        self.hub = HubClient(hub_socket, self._hello(), self.stopping, retry_s=RETRY_S)
        self.calls: TwilioCalls | None = None
        self._call_ids: OrderedDict[str, str] = OrderedDict()
        self._next_leg = 0
        self._task: asyncio.Task[None] | None = None
        self._streams_up = asyncio.Event()

    def _hello(self) -> p.Hello:
        return p.Hello(token=self.token(), worker=WORKER_NAME, capacity=self.config.max_streams)

    def register(self, app: web.Application) -> Sequence[Operation]:
        return self.webhooks.register(app, self.media)

    async def start(self) -> None:
        assert self.config.account_sid is not None
        self.calls = TwilioCalls(self.config.account_sid, self.auth_token, self.config.api_base_url)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="twilio-gateway")

    async def stop(self) -> None:
        self.stopping.set()
        for stream in list(self.streams.values()):
            stream.hangup(EndReason.APPLIANCE_STOP)
        if self._task is not None:
            await self._task
        if self.calls is not None:
            await self.calls.close()

    async def _run(self) -> None:
        pump = asyncio.get_running_loop().create_task(self._pump_audio())
        try:
            while not self.stopping.is_set():
                self.hub.hello = self._hello()
                try:
                    await self.hub.run(self)
                except p.HubRefused:
                    await asyncio.sleep(RETRY_S)  # logged by the client; the next try has a fresh token
        finally:
            pump.cancel()

    def _accepting(self) -> bool:
        return self.hub.connected and len(self.streams) < self.config.max_streams

    # --- the Media Streams socket
    async def media(self, request: web.Request) -> web.WebSocketResponse:
        # receive_timeout: Twilio sends media every 20 ms, so a socket silent this long is gone.
        # writer_limit: a second of our media is ~15 KB; buffering more for a client only hides
        # that it stopped reading (MediaStream then ends the call after OUTGOING_FRAMES more).
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, receive_timeout=60, writer_limit=WRITE_BUFFER)
        await ws.prepare(request)
        if not self._accepting():
            log.warning("media stream refused: not joined to the hub, or full")
            await ws.close(code=1013, message=b"not accepting calls")
            return ws
        self._next_leg += 1
        leg = self._next_leg
        assert self.calls is not None
        stream = MediaStream(leg, request, ws, self.tickets, self.hub.send, self.calls.complete, self.calls.redirect)
        self.streams[leg] = stream
        self._streams_up.set()
        try:
            await stream.run()
        finally:
            self.streams.pop(leg, None)
        return ws

    def _status(self, call_sid: str, fields: dict[str, str]) -> None:
        call_id = self._call_ids.get(call_sid)
        if call_id is None:
            log.info("Twilio status for a call we do not know",
                     extra=log_extra(call_sid=call_sid, status=fields.get("CallStatus")))
            return
        self.on_status(call_id, "twilio_status", {"call_sid": call_sid} | fields)

    # --- HubSession: the hub's side
    def joined(self) -> None:
        log.info("twilio gateway joined the hub")

    def audio(self, frames: list[tuple[int, bytes]]) -> None:
        for leg, pcm in frames:
            stream = self.streams.get(leg)
            if stream is not None:
                stream.play(pcm)

    def control(self, message: BaseModel) -> None:
        dispatch(_HUB_MESSAGES, self, message)

    async def lost(self) -> None:
        # Without the hub nobody hears the callers or decides for them: their calls are over.
        for stream in list(self.streams.values()):
            stream.hangup(EndReason.HUB_LOST)

    def _offer_reply(self, message: p.OfferReply) -> None:
        stream = self.streams.get(message.leg)
        if stream is None:
            if message.code == 200:
                # The stream is gone while the hub decided: the call it has just opened must close,
                # not wait for a worker loss. (A stream still here is told by its session.)
                self.hub.send(p.Ended(leg=message.leg, reason=EndReason.STREAM_LOST))
            return
        call = stream.session.call
        if message.call_id and call is not None:
            self._call_ids[call.ticket.call_sid] = message.call_id
            while len(self._call_ids) > REMEMBERED_CALLS:
                self._call_ids.popitem(last=False)
        stream.offer_reply(message)

    def _hangup(self, message: p.Hangup) -> None:
        stream = self.streams.get(message.leg)
        if stream is not None:
            stream.hangup(message.reason)

    def _clear(self, message: p.ClearPlayback) -> None:
        stream = self.streams.get(message.leg)
        if stream is not None:
            stream.clear()

    def _transfer(self, message: p.Transfer) -> None:
        # Not a REFER: Twilio is given new TwiML that dials the destination (transfer.py).
        stream = self.streams.get(message.leg)
        if stream is None:
            self.hub.send(p.TransferResult(leg=message.leg, ok=False, code=481, reason="the stream has ended"))
            return
        stream.transfer(message.to, message.caller_id)

    def _dial(self, message: p.Dial) -> None:
        # The hub dials bridge transfers from SIP workers only (calls.bridge.pick_worker).
        self.hub.send(p.DialResult(leg=message.leg, ok=False, reason="the Twilio gateway places no calls"))

    def _send_dtmf(self, message: p.SendDtmf) -> None:
        log.warning("DTMF to a Media Streams caller is not supported", extra=log_extra(leg=message.leg))

    async def _pump_audio(self) -> None:
        """Every 20 ms, every stream's caller audio to the hub in one write."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if not self.streams:
                self._streams_up.clear()
                await self._streams_up.wait()
                next_at = loop.time()
                continue
            batch = []
            for leg, stream in list(self.streams.items()):
                while stream.received:
                    batch.append((leg, stream.received.popleft()))
            self.hub.send_audio(batch)


_HUB_MESSAGES: dict[type, Callable[[TwilioGateway, Any], None]] = {
    p.OfferReply: TwilioGateway._offer_reply,
    p.Hangup: TwilioGateway._hangup,
    p.ClearPlayback: TwilioGateway._clear,
    p.Transfer: TwilioGateway._transfer,
    p.Dial: TwilioGateway._dial,
    p.SendDtmf: TwilioGateway._send_dtmf,
}
