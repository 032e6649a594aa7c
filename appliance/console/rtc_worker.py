"""A WebRTC gateway worker process: browser sessions (operators, supervisors) joined to the hub.

aiortc's media and DTLS work stays out of the hub's process, as pjsua2's does in sip/. The
hub sends a browser's offer (`RtcOffer`); the worker answers it, relays the session's
"control" data channel both ways (`RtcData`) and its audio in the protocol's audio batches,
with the session number as the leg. Whatever a browser sends is bounded here (offer, message
size and rate) before the hub sees it; a bad offer is refused with a reason, never a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamTrack
from pydantic import BaseModel

from appliance.console.rtc_media import HubAudioTrack, frames_from, shorten_jitter_buffer
from appliance.core.audio import FRAME_MS
from appliance.observability.logging import log_extra, setup
from appliance.operators.protocol import MAX_MESSAGE
from appliance.rooms import protocol as p
from appliance.rooms.client import HubClient, dispatch, run_worker

__all__ = ["CONTROL_LABEL", "MESSAGES_PER_S", "OPEN_TIMEOUT_S", "RateLimit", "RtcWorker", "main"]

log = logging.getLogger("appliance.console.rtc_worker")

CONTROL_LABEL = "control"  # the one data channel a console opens
# A console sends a message per click; 50 a second is a script, not a person. The excess is
# dropped here, so a flooding browser costs the hub nothing.
MESSAGES_PER_S = 50
# A browser has this long from our answer to open its control channel; a session without
# one is a page that went away mid-connect, holding a slot of the worker's capacity.
OPEN_TIMEOUT_S = 30.0
# The browser's frames waiting for the next batch to the hub: as the hub's own jitter bound.
INBOUND_FRAMES = 10
# The codecs we answer with: Opus (every browser) and PCMU (anything else); aiortc's G.722
# and PCMA are left out of the answer.
CODECS = ("audio/opus", "audio/pcmu")
_ICE_SERVER_KEYS = {"urls", "username", "credential"}


class OfferRefused(Exception):
    """An offer we will not answer; the message goes back to the hub as RtcAnswer.error."""


class RateLimit:
    """At most `per_s` events in each one-second window of the injected clock."""

    def __init__(self, per_s: int, clock: Callable[[], float]):
        self.per_s = per_s
        self.clock = clock
        self._window = clock()
        self._count = 0
        self.dropped = 0  # in the current window

    def allow(self) -> bool:
        now = self.clock()
        if now - self._window >= 1.0:
            self._window, self._count, self.dropped = now, 0, 0
        self._count += 1
        if self._count > self.per_s:
            self.dropped += 1
            return False
        return True


@dataclass(eq=False)
class RtcSession:
    """One browser's peer connection, its control channel and its audio both ways."""

    leg: int
    identity: str
    pc: RTCPeerConnection
    limit: RateLimit
    outbound: HubAudioTrack = field(default_factory=HubAudioTrack)
    inbound: deque[bytes] = field(default_factory=lambda: deque(maxlen=INBOUND_FRAMES))
    channel: RTCDataChannel | None = None
    answered: bool = False
    opened: bool = False
    ended: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    open_timer: asyncio.TimerHandle | None = None

    async def close(self) -> None:
        if self.open_timer is not None:
            self.open_timer.cancel()
        for task in self.tasks:
            task.cancel()
        self.outbound.stop()
        await self.pc.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class RtcWorker:
    def __init__(self, name: str, hub_socket: str, token: str, capacity: int):
        self.name = name
        self.capacity = capacity
        self.sessions: dict[int, RtcSession] = {}
        self.stopping = asyncio.Event()
        self.hub = HubClient(hub_socket, p.Hello(token=token, worker=name, capacity=capacity), self.stopping)
        self.loop = asyncio.get_running_loop()
        self._closing: set[asyncio.Task[None]] = set()
        self._sessions_up = asyncio.Event()

    async def run(self) -> None:
        pump = self.loop.create_task(self._pump_audio())
        try:
            await self.hub.run(self)
        finally:
            pump.cancel()
            await self._close_all()

    # --- HubSession
    def joined(self) -> None:
        log.info("rtc worker joined the hub", extra=log_extra(worker=self.name, capacity=self.capacity))

    def audio(self, frames: list[tuple[int, bytes]]) -> None:
        for leg, pcm in frames:
            session = self.sessions.get(leg)
            if session is not None:
                session.outbound.push(pcm)

    async def lost(self) -> None:
        # The hub forgot every browser leg with the connection: their sessions are over.
        await self._close_all()

    def control(self, message: BaseModel) -> None:
        dispatch(_HUB_MESSAGES, self, message)

    # --- the hub's messages
    def _offer(self, offer: p.RtcOffer) -> None:
        task = self.loop.create_task(self._answer(offer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _data(self, message: p.RtcData) -> None:
        session = self.sessions.get(message.leg)
        if session is None or session.channel is None or session.channel.readyState != "open":
            log.info("data for a session without an open channel dropped", extra=log_extra(leg=message.leg))
            return
        session.channel.send(json.dumps(message.payload))

    def _close(self, message: p.RtcClose) -> None:
        session = self.sessions.get(message.leg)
        if session is not None:
            self._end(session, message.reason or "closed by the hub")

    # --- a session's life
    async def _answer(self, offer: p.RtcOffer) -> None:
        """Exactly one RtcAnswer for every offer."""
        started = self.loop.time()
        session: RtcSession | None = None
        try:
            session = self._new_session(offer)
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            for transceiver in session.pc.getTransceivers():
                shorten_jitter_buffer(transceiver.receiver)
            # aiortc gathers every candidate in setLocalDescription: nothing to trickle afterwards.
            await session.pc.setLocalDescription(await session.pc.createAnswer())
            if session.ended:
                raise OfferRefused("the session was closed before it was answered")
            reply = p.RtcAnswer(leg=offer.leg, ok=True, sdp=session.pc.localDescription.sdp)  # may be over MAX_SDP
        except Exception as exc:
            # A malformed offer surfaces as any of aiortc's errors (ValueError, OperationError,
            # AssertionError from its SDP parser…): all mean "this offer", not "this worker".
            detail = str(exc) or type(exc).__name__
            error = detail if isinstance(exc, OfferRefused) else f"offer not accepted: {detail}"
            log.warning("browser offer refused", extra=log_extra(leg=offer.leg, identity=offer.identity, error=error))
            if session is not None:
                self._discard(session)
            self.hub.send(p.RtcAnswer(leg=offer.leg, ok=False, error=error))
            return
        session.answered = True
        session.open_timer = self.loop.call_later(OPEN_TIMEOUT_S, self._open_timeout, session)
        self.hub.send(reply)
        log.info("browser offer answered", extra=log_extra(leg=offer.leg, identity=offer.identity,
                                                           seconds=round(self.loop.time() - started, 3)))

    def _new_session(self, offer: p.RtcOffer) -> RtcSession:
        if offer.leg in self.sessions:
            raise OfferRefused(f"session {offer.leg} already exists on this worker")
        if len(self.sessions) >= self.capacity:
            raise OfferRefused(f"worker at capacity ({self.capacity} sessions)")
        try:
            description = aiortc_sdp.SessionDescription.parse(offer.sdp)
        except Exception as exc:
            raise OfferRefused(f"unparsable SDP offer ({str(exc) or type(exc).__name__})") from None
        if not any(media.kind == "audio" for media in description.media):
            raise OfferRefused("the offer has no audio m-line")
        offered = {codec.mimeType.lower() for media in description.media if media.kind == "audio"
                   for codec in media.rtp.codecs}
        if not offered & set(CODECS):
            raise OfferRefused("the offer has no audio codec we take (Opus or PCMU)")
        session = RtcSession(leg=offer.leg, identity=offer.identity,
                             pc=RTCPeerConnection(RTCConfiguration(iceServers=_ice_servers(offer.ice_servers))),
                             limit=RateLimit(MESSAGES_PER_S, self.loop.time))
        self.sessions[offer.leg] = session
        self._sessions_up.set()
        transceiver = session.pc.addTransceiver(session.outbound, direction="sendrecv")
        transceiver.setCodecPreferences([codec for codec in RTCRtpSender.getCapabilities("audio").codecs
                                         if codec.mimeType.lower() in CODECS])
        session.pc.on("track", lambda track: self._on_track(session, track))
        session.pc.on("datachannel", lambda channel: self._on_datachannel(session, channel))
        session.pc.on("connectionstatechange", lambda: self._on_connection_state(session))
        return session

    def _on_track(self, session: RtcSession, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        task = self.loop.create_task(self._read_audio(session, track))
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def _read_audio(self, session: RtcSession, track: MediaStreamTrack) -> None:
        async for pcm in frames_from(track):
            session.inbound.append(pcm)

    def _on_datachannel(self, session: RtcSession, channel: RTCDataChannel) -> None:
        if channel.label != CONTROL_LABEL or session.channel is not None:
            log.warning("unexpected data channel closed", extra=log_extra(leg=session.leg, label=channel.label[:64]))
            channel.close()
            return
        session.channel = channel
        channel.on("message", lambda message: self._from_browser(session, message))
        channel.on("close", lambda: self._end(session, "control channel closed"))
        # A channel the browser opened is open when aiortc announces it; "open" is for the rest.
        if channel.readyState == "open":
            self._opened(session)
        else:
            channel.on("open", lambda: self._opened(session))

    def _opened(self, session: RtcSession) -> None:
        if session.opened or session.ended:
            return
        session.opened = True
        if session.open_timer is not None:
            session.open_timer.cancel()
        self.hub.send(p.RtcState(leg=session.leg, state="open"))
        log.info("browser control channel open", extra=log_extra(leg=session.leg, identity=session.identity))

    def _open_timeout(self, session: RtcSession) -> None:
        if not session.opened:
            self._end(session, f"no control channel within {OPEN_TIMEOUT_S:g} s")

    def _on_connection_state(self, session: RtcSession) -> None:
        if session.pc.connectionState in ("failed", "closed"):
            self._end(session, f"connection {session.pc.connectionState}")

    def _from_browser(self, session: RtcSession, message: str | bytes) -> None:
        # The rate first: every message counts, so a flood of bad ones cannot flood the log either.
        if not session.limit.allow():
            if session.limit.dropped == 1:  # once per window, however long the flood
                log.warning("browser messages over the rate limit dropped",
                            extra=log_extra(leg=session.leg, identity=session.identity, per_s=MESSAGES_PER_S))
            return
        if isinstance(message, bytes):
            self._drop(session, "binary message", len(message))
            return
        size = len(message.encode())
        if size > MAX_MESSAGE:
            self._drop(session, "message over the size limit", size)
            return
        try:
            payload = json.loads(message)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            self._drop(session, "not a JSON object", size)
            return
        self.hub.send(p.RtcData(leg=session.leg, payload=payload))

    def _drop(self, session: RtcSession, reason: str, size: int) -> None:
        log.warning("browser message dropped", extra=log_extra(leg=session.leg, identity=session.identity,
                                                               reason=reason, bytes=size))

    def _end(self, session: RtcSession, reason: str) -> None:
        """The session is over: the hub hears it once (if it was answered), and it is closed."""
        if session.ended:
            return
        session.ended = True
        if session.answered:
            self.hub.send(p.RtcState(leg=session.leg, state="closed", reason=reason))
            log.info("browser session ended", extra=log_extra(leg=session.leg, identity=session.identity,
                                                              reason=reason))
            self._discard(session)
        # Not yet answered: _answer sees `ended` when its await returns, refuses and discards.

    def _discard(self, session: RtcSession) -> None:
        session.ended = True
        if self.sessions.get(session.leg) is session:
            del self.sessions[session.leg]
        task = self.loop.create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_all(self) -> None:
        for session in list(self.sessions.values()):
            self._discard(session)
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _pump_audio(self) -> None:
        """Every 20 ms, every session's browser audio to the hub in one write."""
        next_at = self.loop.time()
        while True:
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - self.loop.time()))
            if not self.sessions:
                # No session: sleep until one begins instead of waking 50 times a second.
                self._sessions_up.clear()
                await self._sessions_up.wait()
                next_at = self.loop.time()
                continue
            batch = []
            for leg, session in list(self.sessions.items()):
                while session.inbound:
                    batch.append((leg, session.inbound.popleft()))
            self.hub.send_audio(batch)


def _ice_servers(servers: list[dict[str, Any]]) -> list[RTCIceServer]:
    # Always a list: with None, aiortc asks a public STUN server (stun.l.google.com) while
    # gathering, and a LAN appliance has no business telling Google its operators' addresses.
    result = []
    for server in servers:
        unknown = set(server) - _ICE_SERVER_KEYS
        if unknown or "urls" not in server:
            raise OfferRefused(f"bad ice server: needs urls, may have username and credential, got {sorted(server)}")
        result.append(RTCIceServer(**server))
    return result


_HUB_MESSAGES: dict[type, Callable[[RtcWorker, Any], None]] = {
    p.RtcOffer: RtcWorker._offer,
    p.RtcData: RtcWorker._data,
    p.RtcClose: RtcWorker._close,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m appliance.console.rtc_worker", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--hub-socket", required=True)
    parser.add_argument("--capacity", type=int, default=32, help="browser sessions this worker holds")
    args = parser.parse_args(argv)
    setup(os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))

    run_worker(lambda: RtcWorker(args.name, args.hub_socket, os.environ.get("SWITCHBOARD_RTC_TOKEN", ""),
                                 args.capacity))


if __name__ == "__main__":
    main()
