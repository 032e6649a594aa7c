"""The worker side of the participant protocol: join the hub, stay joined, send to it.

One client for every worker process (SIP workers, persona workers), as every LiveKit
participant uses the same SDK: it joins with a hello, hands what the hub sends to the
worker's `HubSession`, and joins again after a lost connection until the worker stops.
A refused token (`protocol.HubRefused`) is not retried: it propagates, the worker exits
with `EXIT_REFUSED`, and the appliance's process pool starts it again with a fresh token.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

import appliance.rooms.protocol as p
from appliance.observability.logging import log_extra

__all__ = ["EXIT_REFUSED", "RETRY_S", "HubClient", "HubSession", "WorkerProcess", "dispatch", "run_worker"]

log = logging.getLogger(__name__)

EXIT_REFUSED = 3  # the worker's exit status when the hub refused its token (see the module docstring)
# Between a lost connection and the next try. Short: the hub restarting is the usual cause and
# a worker away from it takes no calls; the hub's unix socket costs nothing to try.
RETRY_S = 1.0


class HubSession(Protocol):
    """What a worker does with its connection to the hub; called on the event loop."""

    def joined(self) -> None:
        """The hub welcomed us: calls may come."""

    def audio(self, frames: list[tuple[int, bytes]]) -> None:
        """One batch of the hub's audio: (leg, 20 ms of PCM) for any of our legs."""

    def control(self, message: BaseModel) -> None:
        """One control message from the hub."""

    async def lost(self) -> None:
        """The connection is gone (not after a refusal): whatever rode on it is over."""


class HubClient:
    def __init__(self, socket_path: str, hello: p.Hello, stopping: asyncio.Event, retry_s: float = RETRY_S):
        self.socket_path = socket_path
        self.hello = hello
        self.stopping = stopping
        self.retry_s = retry_s
        self._writer: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def send(self, message: BaseModel) -> None:
        """A control message to the hub; dropped while there is no connection (the hub forgot us then)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(p.encode_control(message))

    def send_audio(self, frames: list[tuple[int, bytes]]) -> None:
        """One audio batch: every leg's frames in one write, so the hub reads one frame per tick."""
        if frames and self._writer is not None and not self._writer.is_closing():
            self._writer.write(p.encode_audio(frames))

    async def run(self, session: HubSession) -> None:
        """Stay joined until `stopping` is set; raises HubRefused when the hub refuses our token."""
        while not self.stopping.is_set():
            try:
                await self._connection(session)
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.warning("hub connection lost", extra=log_extra(error=str(exc)))
            except p.HubRefused as exc:
                log.error("the hub refused this worker's token; exiting to be started with a fresh one",
                          extra=log_extra(worker=self.hello.worker, reason=str(exc)))
                raise
            await session.lost()
            if not self.stopping.is_set():
                stopped = asyncio.ensure_future(self.stopping.wait())
                await asyncio.wait([stopped], timeout=self.retry_s)
                stopped.cancel()

    async def _connection(self, session: HubSession) -> None:
        reader, writer = await p.join_hub(self.socket_path, self.hello)
        self._writer = writer
        try:
            session.joined()
            async for message in p.messages(reader, self.stopping):
                if isinstance(message, list):
                    session.audio(message)
                else:
                    session.control(message)
        finally:
            self._writer = None
            writer.close()


W = TypeVar("W")


def dispatch(table: Mapping[type, Callable[[W, Any], None]], worker: W, message: BaseModel) -> None:
    """Hand one hub message to the worker's handler for its type (a worker's `HubSession.control`)."""
    handler = table.get(type(message))
    if handler is None:
        # A newer hub's message this worker does not know: not worth dropping every call for.
        log.warning("unexpected message from the hub", extra=log_extra(type=getattr(message, "type", "?")))
        return
    handler(worker, message)


class WorkerProcess(Protocol):
    stopping: asyncio.Event

    async def run(self) -> None: ...


def run_worker(make: Callable[[], WorkerProcess]) -> None:
    """A worker process's main: run until SIGTERM or SIGINT; exit EXIT_REFUSED if the hub refuses us."""

    async def main() -> None:
        worker = make()  # on the running loop: workers take it at construction
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, worker.stopping.set)
        await worker.run()

    try:
        asyncio.run(main())
    except p.HubRefused:
        sys.exit(EXIT_REFUSED)
