"""The participant protocol server: SIP workers connect here and bring call legs into rooms.

Each SIP call leg becomes a `SipParticipant` in its call's room. What happens to a call
(which room, which flow, whether to answer) is decided above, by a `CallHandler`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from appliance.core.audio import FRAME_BYTES
from appliance.core.errors import AuthError, ProtocolError
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.rooms import protocol as p
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant
from appliance.rooms.tokens import TokenAuthority

log = logging.getLogger(__name__)

# 200 ms of caller audio may wait for the hub's tick; more means the hub is behind and
# old audio is worth less than fresh audio.
CALLER_JITTER_FRAMES = 10


class SipParticipant(Participant):
    """The caller, as a participant: audio from the worker in, the room's mix out to the worker."""

    def __init__(self, identity: str, worker: "WorkerConnection", leg: int):
        super().__init__(identity, kind="sip")
        self.worker = worker
        self.leg = leg
        self.publish(AudioTrack("caller", max_frames=CALLER_JITTER_FRAMES))
        self.sink = self

    def push(self, frame: bytes) -> None:
        self.worker.outgoing.append((self.leg, frame))

    def hangup(self, reason: str) -> None:
        self.worker.send(p.Hangup(leg=self.leg, reason=reason))

    def transfer(self, to: str) -> None:
        self.worker.send(p.Transfer(leg=self.leg, to=to))


class CallHandler(Protocol):
    async def offer(self, worker: "WorkerConnection", offer: p.Offer) -> p.OfferReply: ...
    def answered(self, worker: "WorkerConnection", message: p.Answered) -> None: ...
    def dtmf(self, worker: "WorkerConnection", message: p.Dtmf) -> None: ...
    def ended(self, worker: "WorkerConnection", message: p.Ended) -> None: ...
    def transfer_result(self, worker: "WorkerConnection", message: p.TransferResult) -> None: ...
    def worker_lost(self, worker: "WorkerConnection") -> None: ...


class WorkerConnection:
    def __init__(self, name: str, writer: asyncio.StreamWriter):
        self.name = name
        self.writer = writer
        self.legs: dict[int, SipParticipant] = {}
        self.outgoing: list[tuple[int, bytes]] = []

    def send(self, message: BaseModel) -> None:
        if not self.writer.is_closing():
            self.writer.write(p.encode_control(message))

    def flush(self) -> None:
        if self.outgoing and not self.writer.is_closing():
            self.writer.write(p.encode_audio(self.outgoing))
        self.outgoing = []


class ParticipantServer:
    def __init__(self, hub: Hub, tokens: TokenAuthority, handler: CallHandler):
        self.hub = hub
        self.tokens = tokens
        self.handler = handler
        self.workers: dict[str, WorkerConnection] = {}
        self._server: asyncio.AbstractServer | None = None
        hub.after_tick.append(self._flush_all)

    async def start(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        path.chmod(0o600)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            for worker in list(self.workers.values()):
                worker.writer.close()
            await self._server.wait_closed()

    def _flush_all(self) -> None:
        for worker in self.workers.values():
            worker.flush()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker: WorkerConnection | None = None
        try:
            worker = await self._handshake(reader, writer)
            while True:
                kind, body = await p.read_frame(reader)
                if kind == p.KIND_AUDIO:
                    for leg, pcm in p.decode_audio(body):
                        participant = worker.legs.get(leg)
                        # A frame of the wrong size would break the room's mix for everyone.
                        if participant is not None and participant.track is not None and len(pcm) == FRAME_BYTES:
                            participant.track.write_frame(pcm)
                elif kind == p.KIND_CONTROL:
                    message = p.decode_control(body)
                    try:
                        await self._control(worker, message)
                    except ProtocolError:
                        raise
                    except Exception:
                        # Our bug in one call's handling must not drop every call on the worker.
                        log.exception("control message failed", extra=log_extra(worker=worker.name, type=message.type))
                else:
                    raise ProtocolError(f"unknown frame kind {kind}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except (ProtocolError, AuthError) as exc:
            log.warning("participant protocol error", extra=log_extra(error=str(exc)))
        finally:
            writer.close()
            if worker is not None and self.workers.get(worker.name) is worker:
                del self.workers[worker.name]
                metrics.workers_up.set(len(self.workers))
                log.warning("sip worker disconnected", extra=log_extra(worker=worker.name, legs=len(worker.legs)))
                self.handler.worker_lost(worker)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WorkerConnection:
        kind, body = await asyncio.wait_for(p.read_frame(reader), timeout=10)
        hello = p.decode_control(body) if kind == p.KIND_CONTROL else None
        if not isinstance(hello, p.Hello):
            raise ProtocolError("first message must be hello")
        grant = self.tokens.verify(hello.token)
        if not grant.allows("sip"):
            raise AuthError(f"{grant.identity} has no sip grant")
        old = self.workers.get(hello.worker)
        if old is not None:
            # A restarted worker reconnects under its name: the old connection's calls are gone.
            old.writer.close()
        worker = WorkerConnection(hello.worker, writer)
        self.workers[worker.name] = worker
        metrics.workers_up.set(len(self.workers))
        worker.send(p.Welcome())
        log.info("sip worker connected", extra=log_extra(worker=worker.name, capacity=hello.capacity))
        return worker

    async def _control(self, worker: WorkerConnection, message: BaseModel) -> None:
        handlers = {
            p.Answered: self.handler.answered,
            p.Dtmf: self.handler.dtmf,
            p.Ended: self.handler.ended,
            p.TransferResult: self.handler.transfer_result,
        }
        if isinstance(message, p.Offer):
            # Offers are decided concurrently so one slow decision never holds the stream.
            asyncio.get_running_loop().create_task(self._offer(worker, message))
        elif type(message) in handlers:
            handlers[type(message)](worker, message)
        else:
            raise ProtocolError(f"unexpected {getattr(message, 'type', '?')} from a worker")

    async def _offer(self, worker: WorkerConnection, offer: p.Offer) -> None:
        with metrics.answer_latency.time():
            reply = await self.handler.offer(worker, offer)
        worker.send(reply)
