"""A persona worker process: prewarmed models, joined to the hub, running dispatched personas.

STT and VAD are CPU work; in their own processes they never stall the hub's media clock
or the SIP workers. Like a livekit-agents worker, it registers with a capacity and takes
jobs (`Dispatch`) until told to release them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from appliance.observability.logging import log_extra, setup
from appliance.rooms import protocol as p

log = logging.getLogger("appliance.personas.worker")

EXIT_REFUSED = 3  # the hub refused our token; the appliance's process pool starts us again with a new one


class PersonaWorker:
    def __init__(self, name: str, hub_socket: str, token: str, flows_dir: Path, capacity: int, endpointing_s: float,
                 webhooks_allowed: list[str]):
        self.name = name
        self.webhooks_allowed = webhooks_allowed
        self.hub_socket = hub_socket
        self.token = token
        self.flows_dir = flows_dir
        self.capacity = capacity
        self.endpointing_s = endpointing_s
        self.jobs: dict[int, Any] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.outgoing: list[tuple[int, bytes]] = []
        self.stopping = asyncio.Event()
        self.closing: set[asyncio.Task[None]] = set()

    def prewarm(self) -> None:
        """Load what every session needs once, before the first caller waits for it."""
        from livekit.plugins import silero

        from appliance.personas.vad import SpeechTimedVAD
        from appliance.speech.tts import EspeakTTS

        # The caller's turn ends after this much silence (silero's default is 0.55 s): on the
        # phone every 100 ms here is 100 ms the caller waits for an answer.
        self.vad = SpeechTimedVAD(silero.VAD.load(min_silence_duration=self.endpointing_s))
        EspeakTTS().synthesize("Hello.")

    async def run(self) -> None:
        # livekit plugins register themselves on import, which must happen on the main thread.
        import livekit.plugins.silero  # noqa: F401

        import appliance.personas.session  # noqa: F401

        await self._run()

    def send(self, message: Any) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(p.encode_control(message))

    def send_audio(self, leg: int, pcm: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(p.encode_audio([(leg, pcm)]))

    async def _run(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.prewarm)
        while not self.stopping.is_set():
            try:
                await self._session()
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.warning("hub connection lost", extra=log_extra(error=str(exc)))
            except p.HubRefused as exc:
                log.error("the hub refused this worker's token; exiting to be started with a fresh one",
                          extra=log_extra(worker=self.name, reason=str(exc)))
                raise
            await asyncio.gather(*(job.close() for job in self.jobs.values()), *self.closing)
            self.jobs.clear()
            if not self.stopping.is_set():
                await asyncio.sleep(1.0)

    async def _session(self) -> None:
        hello = p.Hello(token=self.token, worker=self.name, capacity=self.capacity)
        reader, writer = await p.join_hub(self.hub_socket, hello)
        self.writer = writer
        log.info("persona worker joined the hub", extra=log_extra(worker=self.name, capacity=self.capacity))
        try:
            async for message in p.messages(reader, self.stopping):
                if isinstance(message, list):
                    for leg, pcm in message:
                        job = self.jobs.get(leg)
                        if job is not None:
                            job.audio(pcm)
                else:
                    await self._control(message)
        finally:
            writer.close()
            self.writer = None

    async def _control(self, message: Any) -> None:
        from appliance.personas.session import PersonaJob

        if isinstance(message, p.Dispatch):
            job = PersonaJob(message, self.flows_dir, self.vad, self.send, self.send_audio, self.endpointing_s,
                             self.webhooks_allowed)
            self.jobs[message.leg] = job
            log.info("persona job started", extra=log_extra(call_id=message.call_id, persona=message.persona))
            asyncio.get_running_loop().create_task(job.start())
        elif isinstance(message, p.Release):
            job = self.jobs.pop(message.leg, None)
            if job is not None:
                # Closing a session can take seconds; the read loop carries the other calls' audio.
                task = asyncio.get_running_loop().create_task(job.close())
                self.closing.add(task)
                task.add_done_callback(self.closing.discard)
        elif isinstance(message, p.Played):
            job = self.jobs.get(message.leg)
            if job is not None:
                job.played(message)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m appliance.personas.worker", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--hub-socket", required=True)
    parser.add_argument("--flows-dir", required=True)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--endpointing", type=float, required=True, help="seconds of silence that end a turn")
    parser.add_argument("--webhook-allowed", action="append", default=[], help="a URL prefix persona tools may call")
    args = parser.parse_args(argv)
    setup(os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub at run time

    async def run() -> None:
        worker = PersonaWorker(args.name, args.hub_socket, os.environ.get("SWITCHBOARD_AGENT_TOKEN", ""),
                               Path(args.flows_dir), args.capacity, args.endpointing, args.webhook_allowed)
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, worker.stopping.set)
        await worker.run()

    try:
        asyncio.run(run())
    except p.HubRefused:
        sys.exit(EXIT_REFUSED)


if __name__ == "__main__":
    main()
