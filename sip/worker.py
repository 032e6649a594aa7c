"""A SIP worker process: one pjsua2 endpoint (≤ 4 calls with the PyPI wheel), joined to the hub.

asyncio runs on the main thread and speaks the participant protocol to the hub; the
pjsua2 endpoint runs on its own thread (sip.endpoint). Every 20 ms the caller audio of
all calls goes to the hub in one batch; the hub's batches are queued for playout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

from appliance.core.audio import FRAME_MS
from appliance.observability.logging import log_extra, setup
import appliance.rooms.protocol as p
from sip.endpoint import EndpointSettings, PjThread

log = logging.getLogger("sip.worker")

OFFER_TIMEOUT_S = 5.0
EXIT_REFUSED = 3  # the hub refused our token; the appliance's process pool starts us again with a new one


@dataclass
class LegAudio:
    received: deque[bytes]
    playout: deque[bytes]


class Worker:
    def __init__(self, settings: EndpointSettings, hub_socket: str, token: str):
        self.settings = settings
        self.hub_socket = hub_socket
        self.token = token
        self.loop = asyncio.get_running_loop()
        self.pj = PjThread(settings, self._from_pj)
        self.audio: dict[int, LegAudio] = {}
        self.offers: dict[int, asyncio.TimerHandle] = {}
        self.call_ids: dict[int, str] = {}  # leg → the hub's call id, for our log lines
        self.writer: asyncio.StreamWriter | None = None
        self.stopping = asyncio.Event()
        self._calls_up = asyncio.Event()

    def _from_pj(self, kind: str, leg: int, data: dict[str, Any]) -> None:
        # Runs on the pjsua2 thread: hand over to asyncio and return at once.
        self.loop.call_soon_threadsafe(self._on_pj_event, kind, leg, data)

    def _on_pj_event(self, kind: str, leg: int, data: dict[str, Any]) -> None:
        if kind == "offer":
            self.offers[leg] = self.loop.call_later(OFFER_TIMEOUT_S, self._offer_timeout, leg)
            self._send(p.Offer(leg=leg, **data))
        elif kind == "answered":
            self.audio[leg] = LegAudio(data["received"], data["playout"])
            self._calls_up.set()
            log.info("call leg answered", extra=log_extra(call_id=self.call_ids.get(leg), leg=leg, codec=data["codec"],
                                                          outbound=data["outbound"]))
            if data["outbound"]:
                self._send(p.DialResult(leg=leg, ok=True, code=200, reason="OK", codec=data["codec"]))
            else:
                self._send(p.Answered(leg=leg, codec=data["codec"]))
        elif kind == "dial_result":
            log.info("outbound leg failed", extra=log_extra(call_id=self.call_ids.pop(leg, None), leg=leg,
                                                             code=data["code"], reason=data["reason"]))
            self._send(p.DialResult(leg=leg, **data))
        elif kind == "dtmf":
            self._send(p.Dtmf(leg=leg, **data))
        elif kind == "transfer_result":
            self._send(p.TransferResult(leg=leg, **data))
        elif kind == "ended":
            self.audio.pop(leg, None)
            log.info("call leg ended", extra=log_extra(call_id=self.call_ids.pop(leg, None), leg=leg, reason=data["reason"]))
            timer = self.offers.pop(leg, None)
            if timer:
                timer.cancel()
            self._send(p.Ended(leg=leg, reason=data["reason"]))

    def _offer_timeout(self, leg: int) -> None:
        self.offers.pop(leg, None)
        log.warning("hub did not answer an offer", extra=log_extra(leg=leg))
        self.pj.submit(lambda: self.pj.answer(leg, 503))

    def _send(self, message: Any) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(p.encode_control(message))

    async def run(self) -> None:
        self.pj.start()
        await self.loop.run_in_executor(None, self.pj.wait_started)
        log.info("sip worker started", extra=log_extra(worker=self.settings.name, port=self.settings.sip_port))
        pump = self.loop.create_task(self._pump_audio())
        try:
            while not self.stopping.is_set():
                try:
                    await self._session()
                except (OSError, asyncio.IncompleteReadError) as exc:
                    log.warning("hub connection lost", extra=log_extra(error=str(exc)))
                except p.HubRefused as exc:
                    log.error("the hub refused this worker's token; exiting to be started with a fresh one",
                              extra=log_extra(worker=self.settings.name, reason=str(exc)))
                    self._set_accepting(False)
                    raise
                self._set_accepting(False)
                self.writer = None
                self._hangup_all("hub-lost")
                if not self.stopping.is_set():
                    await asyncio.wait([asyncio.ensure_future(self.stopping.wait())], timeout=1.0)
        finally:
            pump.cancel()
            self.pj.stop()
            await self.loop.run_in_executor(None, self.pj.join, 10)

    async def _session(self) -> None:
        hello = p.Hello(token=self.token, worker=self.settings.name, capacity=self.settings.max_calls)
        reader, writer = await p.join_hub(self.hub_socket, hello)
        self.writer = writer
        self._set_accepting(True)
        try:
            async for message in p.messages(reader, self.stopping):
                if isinstance(message, list):
                    for leg, pcm in message:
                        audio = self.audio.get(leg)
                        if audio is not None:
                            audio.playout.append(pcm)
                else:
                    self._control(message)
        finally:
            writer.close()

    def _control(self, message: Any) -> None:
        if isinstance(message, p.OfferReply):
            timer = self.offers.pop(message.leg, None)
            if timer is None:
                return  # timed out already
            timer.cancel()
            if message.call_id:
                self.call_ids[message.leg] = message.call_id
            self.pj.submit(lambda: self.pj.answer(message.leg, message.code))
        elif isinstance(message, p.Hangup):
            self.pj.submit(lambda: self.pj.hangup(message.leg, message.reason))
        elif isinstance(message, p.Transfer):
            self.pj.submit(lambda: self.pj.transfer(message.leg, message.to))
        elif isinstance(message, p.Dial):
            self.call_ids[message.leg] = message.call_id
            log.info("dialling an outbound leg", extra=log_extra(call_id=message.call_id, leg=message.leg,
                                                                 pii={"to": message.to}))
            self.pj.submit(lambda: self.pj.dial(message.leg, message.to, message.caller_id))
        elif isinstance(message, p.SendDtmf):
            self.pj.submit(lambda: self.pj.send_dtmf(message.leg, message.digits))

    def _set_accepting(self, value: bool) -> None:
        self.pj.accepting = value

    def _hangup_all(self, reason: str) -> None:
        def hang_all() -> None:
            for leg in list(self.pj.legs):
                self.pj.hangup(leg, reason)

        self.pj.submit(hang_all)

    async def _pump_audio(self) -> None:
        """Every 20 ms, all calls' caller audio to the hub in one write."""
        next_at = self.loop.time()
        while True:
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - self.loop.time()))
            if self.writer is None or not self.audio:
                # No call: sleep until one is answered instead of waking 50 times a second.
                self._calls_up.clear()
                await self._calls_up.wait()
                next_at = self.loop.time()
                continue
            batch = []
            for leg, audio in list(self.audio.items()):
                while audio.received:
                    batch.append((leg, audio.received.popleft()))
            if batch and not self.writer.is_closing():
                self.writer.write(p.encode_audio(batch))


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
    args = parser.parse_args(argv)
    setup(os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))
    token = os.environ.get("SWITCHBOARD_WORKER_TOKEN", "")
    settings = EndpointSettings(
        name=args.name, sip_port=args.sip_port, rtp_port=args.rtp_port, rtp_ports=args.rtp_ports,
        max_calls=args.max_calls, poll_ms=args.poll_ms, edge=args.edge,
        edge_key=os.environ.get("SWITCHBOARD_EDGE_KEY", ""), media_address=args.media_address,
        retry_after_s=args.retry_after, outbound_proxy=args.outbound_proxy,
    )

    async def run() -> None:
        worker = Worker(settings, args.hub_socket, token)
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, worker.stopping.set)
        await worker.run()

    try:
        asyncio.run(run())
    except p.HubRefused:
        sys.exit(EXIT_REFUSED)


if __name__ == "__main__":
    main()
