"""A SIP worker process: one pjsua2 endpoint (≤ 4 calls with the PyPI wheel), joined to the hub.

asyncio runs on the main thread and speaks the participant protocol to the hub; the
pjsua2 endpoint runs on its own thread (sip.endpoint). The hub's clock paces the audio: its
batch for this worker comes every 20 ms tick while the worker has calls (empty when nobody
speaks to them), is queued for playout, and is answered at once with the caller audio of all
calls in one batch. A timer of the worker's own would wake its loop a second time per tick.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel

import appliance.rooms.protocol as p
from appliance.core.reasons import EndReason
from appliance.observability.logging import log_extra, setup
from appliance.rooms.client import EXIT_REFUSED, HubClient, dispatch, run_worker
from sip.credentials import DialAuth
from sip.endpoint import EndpointSettings, PjThread
from sip.events import CallOffered, DialFailed, DtmfReceived, LegAnswered, LegEnded, PjEvent, TransferFinished

__all__ = ["EXIT_REFUSED", "Worker", "main"]

log = logging.getLogger("sip.worker")

OFFER_TIMEOUT_S = 5.0


@dataclass
class LegAudio:
    received: deque[bytes]
    playout: deque[bytes]


class Worker:
    """The hub's end of the pjsua2 thread: its events become protocol messages, the hub's orders pjsua2 commands."""

    def __init__(self, settings: EndpointSettings, hub_socket: str, token: str):
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.pj = PjThread(settings, self._from_pj)
        self.media: dict[int, LegAudio] = {}  # answered legs: their audio, crossing from and to the pjsua2 thread
        self.offers: dict[int, asyncio.TimerHandle] = {}
        self.call_ids: dict[int, str] = {}  # leg → the hub's call id, for our log lines
        self.stopping = asyncio.Event()
        self.hub = HubClient(hub_socket, p.Hello(token=token, worker=settings.name, capacity=settings.max_calls),
                             self.stopping)

    # --- the pjsua2 thread's events
    def _from_pj(self, event: PjEvent) -> None:
        # Runs on the pjsua2 thread: hand over to asyncio and return at once.
        self.loop.call_soon_threadsafe(self._on_pj_event, event)

    def _on_pj_event(self, event: PjEvent) -> None:
        _PJ_EVENTS[type(event)](self, event)

    def _offered(self, event: CallOffered) -> None:
        self.offers[event.leg] = self.loop.call_later(OFFER_TIMEOUT_S, self._offer_timeout, event.leg)
        self.hub.send(p.Offer(leg=event.leg, sip_call_id=event.sip_call_id, from_uri=event.from_uri,
                              to_uri=event.to_uri, to_user=event.to_user, trunk=event.trunk, source=event.source))

    def _answered(self, event: LegAnswered) -> None:
        leg = event.leg
        self.media[leg] = LegAudio(event.received, event.playout)
        log.info("call leg answered", extra=log_extra(call_id=self.call_ids.get(leg), leg=leg, codec=event.codec,
                                                      outbound=event.outbound))
        if event.outbound:
            self.hub.send(p.DialResult(leg=leg, ok=True, code=200, reason="OK", codec=event.codec))
        else:
            self.hub.send(p.Answered(leg=leg, codec=event.codec))

    def _dial_failed(self, event: DialFailed) -> None:
        log.info("outbound leg failed", extra=log_extra(call_id=self.call_ids.pop(event.leg, None), leg=event.leg,
                                                         code=event.code, reason=event.reason))
        self.hub.send(p.DialResult(leg=event.leg, ok=False, code=event.code, reason=event.reason))

    def _dtmf(self, event: DtmfReceived) -> None:
        self.hub.send(p.Dtmf(leg=event.leg, digit=event.digit, method=event.method))

    def _transfer_finished(self, event: TransferFinished) -> None:
        self.hub.send(p.TransferResult(leg=event.leg, ok=event.ok, code=event.code, reason=event.reason))

    def _ended(self, event: LegEnded) -> None:
        self.media.pop(event.leg, None)
        log.info("call leg ended", extra=log_extra(call_id=self.call_ids.pop(event.leg, None), leg=event.leg,
                                                   reason=event.reason))
        timer = self.offers.pop(event.leg, None)
        if timer:
            timer.cancel()
        rtp = p.Rtp(**asdict(event.rtp)) if event.rtp else None
        self.hub.send(p.Ended(leg=event.leg, reason=event.reason, rtp=rtp))

    def _offer_timeout(self, leg: int) -> None:
        self.offers.pop(leg, None)
        log.warning("hub did not answer an offer", extra=log_extra(leg=leg))
        self.pj.submit(lambda: self.pj.answer(leg, 503))

    async def run(self) -> None:
        self.pj.start()
        await self.loop.run_in_executor(None, self.pj.wait_started)
        log.info("sip worker started", extra=log_extra(worker=self.settings.name, port=self.settings.sip_port))
        try:
            await self.hub.run(self)
        finally:
            # Refused or stopping: the edge's next INVITEs get 503 (another worker) while we go.
            self._set_accepting(False)
            self.pj.stop()
            await self.loop.run_in_executor(None, self.pj.join, 10)

    # --- HubSession: the hub's side
    def joined(self) -> None:
        self._set_accepting(True)

    def audio(self, frames: list[tuple[int, bytes]]) -> None:
        """The hub's tick: play what it sent, answer with what the callers said since the last one."""
        for leg, pcm in frames:
            audio = self.media.get(leg)
            if audio is not None:
                audio.playout.append(pcm)
        batch = []
        for leg, audio in list(self.media.items()):
            while audio.received:
                batch.append((leg, audio.received.popleft()))
        self.hub.send_audio(batch)

    async def lost(self) -> None:
        # Without the hub nobody hears the callers or decides for them: their calls are over.
        self._set_accepting(False)
        self._hangup_all(EndReason.HUB_LOST)

    def control(self, message: BaseModel) -> None:
        dispatch(_HUB_MESSAGES, self, message)

    def _offer_reply(self, message: p.OfferReply) -> None:
        timer = self.offers.pop(message.leg, None)
        if timer is None:
            return  # timed out already
        timer.cancel()
        if message.call_id:
            self.call_ids[message.leg] = message.call_id
        self.pj.submit(lambda: self.pj.answer(message.leg, message.code))

    def _hangup(self, message: p.Hangup) -> None:
        self.pj.submit(lambda: self.pj.hangup(message.leg, message.reason))

    def _clear_playback(self, message: p.ClearPlayback) -> None:
        pass  # the media port holds at most PLAYOUT_MAX_FRAMES (160 ms) beyond the hub: not worth a cut

    def _transfer(self, message: p.Transfer) -> None:
        self.pj.submit(lambda: self.pj.transfer(message.leg, message.to))

    def _dial(self, message: p.Dial) -> None:
        self.call_ids[message.leg] = message.call_id
        log.info("dialling an outbound leg", extra=log_extra(call_id=message.call_id, leg=message.leg,
                                                             pii={"to": message.to}))
        self.pj.submit(lambda: self.pj.dial(message.leg, message.to, message.caller_id))

    def _send_dtmf(self, message: p.SendDtmf) -> None:
        self.pj.submit(lambda: self.pj.send_dtmf(message.leg, message.digits))

    def _set_accepting(self, value: bool) -> None:
        self.pj.accepting = value

    def _hangup_all(self, reason: str) -> None:
        def hang_all() -> None:
            for leg in list(self.pj.legs):
                self.pj.hangup(leg, reason)

        self.pj.submit(hang_all)


_PJ_EVENTS: dict[type, Callable[[Worker, Any], None]] = {
    CallOffered: Worker._offered,
    LegAnswered: Worker._answered,
    DialFailed: Worker._dial_failed,
    DtmfReceived: Worker._dtmf,
    TransferFinished: Worker._transfer_finished,
    LegEnded: Worker._ended,
}
_HUB_MESSAGES: dict[type, Callable[[Worker, Any], None]] = {
    p.OfferReply: Worker._offer_reply,
    p.Hangup: Worker._hangup,
    p.ClearPlayback: Worker._clear_playback,
    p.Transfer: Worker._transfer,
    p.Dial: Worker._dial,
    p.SendDtmf: Worker._send_dtmf,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sip.worker", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, required=True)
    parser.add_argument("--rtp-ports", type=int, default=100)
    parser.add_argument("--max-calls", type=int, default=4)
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--media-address")
    parser.add_argument("--retry-after", type=int, default=5)
    parser.add_argument("--outbound-proxy", help="SIP URI calls we place are routed through (the edge)")
    parser.add_argument("--edge", required=True,
                        help="host:port the SIP edge sends from; INVITEs from anywhere else get 403")
    parser.add_argument("--hub-socket", required=True)
    parser.add_argument("--dial-auth-host", help="host:port whose 401/407 challenges the calls we place answer")
    parser.add_argument("--dial-auth-user", help="digest user for them; the password comes in the environment")
    args = parser.parse_args(argv)
    setup(os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))
    token = os.environ.get("SWITCHBOARD_WORKER_TOKEN", "")
    settings = EndpointSettings(
        name=args.name, sip_port=args.sip_port, rtp_port=args.rtp_port, rtp_ports=args.rtp_ports,
        max_calls=args.max_calls, poll_ms=args.poll_ms, edge=args.edge,
        edge_key=os.environ.get("SWITCHBOARD_EDGE_KEY", ""), media_address=args.media_address,
        retry_after_s=args.retry_after, outbound_proxy=args.outbound_proxy,
        dial_auth=DialAuth.for_worker(args.dial_auth_host, args.dial_auth_user, os.environ),
    )

    run_worker(lambda: Worker(settings, args.hub_socket, token))


if __name__ == "__main__":
    main()
