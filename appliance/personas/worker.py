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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from appliance.observability.logging import log_extra, setup
from appliance.rooms import protocol as p
from appliance.rooms.client import HubClient, dispatch, run_worker

log = logging.getLogger("appliance.personas.worker")


class PersonaWorker:
    def __init__(self, name: str, hub_socket: str, token: str, flows_dir: Path, capacity: int, endpointing_s: float,
                 webhooks_allowed: list[str]):
        self.name = name
        self.webhooks_allowed = webhooks_allowed
        self.flows_dir = flows_dir
        self.capacity = capacity
        self.endpointing_s = endpointing_s
        self.jobs: dict[int, Any] = {}
        self.stopping = asyncio.Event()
        self.hub = HubClient(hub_socket, p.Hello(token=token, worker=name, capacity=capacity), self.stopping)
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

        await asyncio.get_running_loop().run_in_executor(None, self.prewarm)
        await self.hub.run(self)

    def send(self, message: Any) -> None:
        self.hub.send(message)

    def send_audio(self, leg: int, pcm: bytes) -> None:
        self.hub.send_audio([(leg, pcm)])

    # --- HubSession
    def joined(self) -> None:
        log.info("persona worker joined the hub", extra=log_extra(worker=self.name, capacity=self.capacity))

    def audio(self, frames: list[tuple[int, bytes]]) -> None:
        for leg, pcm in frames:
            job = self.jobs.get(leg)
            if job is not None:
                job.audio(pcm)

    async def lost(self) -> None:
        # The hub ended every persona's call with the connection (the dispatcher fails them).
        await asyncio.gather(*(job.close() for job in self.jobs.values()), *self.closing)
        self.jobs.clear()

    def control(self, message: BaseModel) -> None:
        dispatch(_HUB_MESSAGES, self, message)

    def _dispatch(self, message: p.Dispatch) -> None:
        from appliance.personas.session import PersonaJob

        job = PersonaJob(message, self.flows_dir, self.vad, self.send, self.send_audio, self.endpointing_s,
                         self.webhooks_allowed)
        self.jobs[message.leg] = job
        log.info("persona job started", extra=log_extra(call_id=message.call_id, persona=message.persona))
        asyncio.get_running_loop().create_task(job.start())

    def _release(self, message: p.Release) -> None:
        job = self.jobs.pop(message.leg, None)
        if job is not None:
            # Closing a session can take seconds; the read loop carries the other calls' audio.
            task = asyncio.get_running_loop().create_task(job.close())
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)

    def _played(self, message: p.Played) -> None:
        job = self.jobs.get(message.leg)
        if job is not None:
            job.played(message)

    def _instruct(self, message: p.Instruct) -> None:
        job = self.jobs.get(message.leg)
        if job is not None:
            job.instruct(message)

    def _persona_io(self, message: p.PersonaIO) -> None:
        job = self.jobs.get(message.leg)
        if job is not None:
            job.set_io(message)


_HUB_MESSAGES: dict[type, Callable[[PersonaWorker, Any], None]] = {
    p.Dispatch: PersonaWorker._dispatch,
    p.Release: PersonaWorker._release,
    p.Played: PersonaWorker._played,
    p.Instruct: PersonaWorker._instruct,
    p.PersonaIO: PersonaWorker._persona_io,
}


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

    run_worker(lambda: PersonaWorker(args.name, args.hub_socket, os.environ.get("SWITCHBOARD_AGENT_TOKEN", ""),
                                     Path(args.flows_dir), args.capacity, args.endpointing, args.webhook_allowed))


if __name__ == "__main__":
    main()
