"""The participant protocol server: out-of-process participants join rooms here.

SIP workers bring callers (`SipParticipant`); persona workers bring AI agents
(`AgentParticipant`); WebRTC gateway workers bring people in browsers (`BrowserParticipant`),
as a LiveKit SIP service, livekit-agents workers and client SDKs join a LiveKit server. What
happens to a call is decided above, by a `CallHandler`; to an agent's messages, by an
`AgentHandler`; to a browser session's, by a `BrowserHandler`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from appliance.core.audio import FRAME_BYTES, FRAME_MS
from appliance.core.clock import monotonic
from appliance.core.errors import AuthError, ProtocolError
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.rooms import protocol as p
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant
from appliance.rooms.tokens import HUB, WORKER_ROLES, TokenAuthority, worker_identity

log = logging.getLogger(__name__)

# 200 ms of caller audio may wait for the hub's tick; more means the hub is behind and
# old audio is worth less than fresh audio.
CALLER_JITTER_FRAMES = 10
BROWSER_LATENCY_FRAMES = 1
TRANSCRIPT_TOPIC = "transcript"  # room data: one line of a call's transcript (a storage row)
# Legs the hub dials are numbered by the hub from here, so they never meet the ids a
# worker gives the calls it is offered (counted up from 1).
FIRST_DIALLED_LEG = 1 << 31
# A persona's reply is queued whole and plays at the hub's pace: two minutes of speech is
# longer than any reply; more is a persona worker filling the hub's memory.
AGENT_QUEUE_FRAMES = 2 * 60 * 1000 // FRAME_MS
# What a persona worker may send the hub; anything else is a broken or hostile worker (a SIP
# worker's messages are the keys of ParticipantServer._control's table).
AGENT_MESSAGES = (p.SegmentEnd, p.ClearAudio, p.Transcript, p.ToolEvent, p.CallAction, p.PersonaExit, p.Summary)
# Workers that bring callers (a SIP worker's legs, a Twilio Media Streams gateway's streams).
CALLER_ROLES = ("sip", "twilio")
# What a WebRTC gateway worker may send the hub.
RTC_MESSAGES = (p.RtcAnswer, p.RtcState, p.RtcData)


def _cut_off(reason: str, worker: WorkerConnection | None) -> None:
    """The one warning for every peer the hub cuts off; `reason` says which rule it broke."""
    # Clipped: some reasons quote what the peer sent (a pydantic error, a worker name).
    log.warning("participant cut off", extra=log_extra(reason=reason[:500], worker=worker.name if worker else None,
                                                       role=worker.role if worker else None))


class WorkerConnection:
    """One connected process (a SIP worker or a persona worker) and its legs in rooms."""

    def __init__(self, name: str, role: str, capacity: int, writer: asyncio.StreamWriter):
        self.name = name
        self.role = role
        self.capacity = capacity
        self.writer = writer
        self.legs: dict[int, RemoteParticipant] = {}
        self.outgoing: list[tuple[int, bytes]] = []
        self._dialled = 0

    def next_dialled_leg(self) -> int:
        self._dialled += 1
        return FIRST_DIALLED_LEG + self._dialled

    @property
    def room_for_calls(self) -> int:
        return self.capacity - len(self.legs)

    def send(self, message: BaseModel) -> None:
        if not self.writer.is_closing():
            self.writer.write(p.encode_control(message))

    def flush(self) -> None:
        """Write the tick's audio in one batch, unless the worker has stopped reading what we write.

        A SIP worker with calls gets a batch every tick, empty when nobody speaks to its callers:
        it is the worker's clock, answered with its callers' audio (sip/worker.py)."""
        outgoing, self.outgoing = self.outgoing, []
        if self.writer.is_closing():
            return
        backlog = self.writer.transport.get_write_buffer_size()
        if backlog > p.MAX_BACKLOG:
            self.cut_off(f"not reading: {backlog} bytes unsent")
        elif outgoing or (self.legs and self.role == "sip"):
            self.writer.write(p.encode_audio(outgoing))

    def cut_off(self, reason: str) -> None:
        _cut_off(reason, self)
        # abort, not close: close waits to deliver what is unsent, to a peer that may never read it.
        # The connection's reader then sees the end of the stream and lets the worker go.
        self.writer.transport.abort()


class WorkerRegistry:
    """The hub's one list of connected workers, by role and name.

    Built by the composition root and handed to the participant server, which alone adds and
    removes workers, and to whoever picks a worker (a SIP worker for a bridge transfer's
    outbound leg, a persona worker for a dispatch), which only reads it.
    """

    def __init__(self) -> None:
        self.sip: dict[str, WorkerConnection] = {}
        self.agents: dict[str, WorkerConnection] = {}
        self.rtc: dict[str, WorkerConnection] = {}
        # The Twilio Media Streams gateway: its calls are callers' legs, as a SIP worker's are, but it
        # dials nobody, so bridge transfers pick from `sip` alone.
        self.twilio: dict[str, WorkerConnection] = {}
        # Told (role, name, connected) as workers join and leave: the SIP edge routes calls only to
        # the SIP workers the hub has (sip/gateway.py).
        self.on_change: list[Callable[[str, str, bool], None]] = []

    def of(self, role: str) -> dict[str, WorkerConnection]:
        return {"sip": self.sip, "agent": self.agents, "rtc": self.rtc, "twilio": self.twilio}[role]

    def changed(self, role: str, name: str, connected: bool) -> None:
        for listener in self.on_change:
            listener(role, name, connected)


class RemoteParticipant(Participant):
    """A participant whose media lives in another process: audio in by batches, the mix out."""

    def __init__(self, identity: str, kind: str, connection: WorkerConnection, leg: int, jitter: int | None,
                 latency: int | None = None):
        super().__init__(identity, kind=kind)
        self.connection = connection
        self.leg = leg
        self.publish(AudioTrack(kind, max_frames=jitter, latency_frames=latency))
        self.sink = self

    def push(self, frame: bytes) -> None:
        self.connection.outgoing.append((self.leg, frame))

    def received(self, frame: bytes) -> None:
        assert self.track is not None
        self.track.write_frame(frame)


class SipParticipant(RemoteParticipant):
    """A SIP leg on a worker: the caller, or a destination the hub dialled for the call `call_id`."""

    def __init__(self, identity: str, worker: WorkerConnection, leg: int, call_id: str):
        super().__init__(identity, "sip", worker, leg, jitter=CALLER_JITTER_FRAMES)
        self.call_id = call_id

    @property
    def worker(self) -> WorkerConnection:
        return self.connection

    def hangup(self, reason: str) -> None:
        self.connection.send(p.Hangup(leg=self.leg, reason=reason))

    def audio_cut(self, speaker: str) -> None:
        self.connection.send(p.ClearPlayback(leg=self.leg))

    def transfer(self, to: str, caller_id: str | None = None) -> None:
        self.connection.send(p.Transfer(leg=self.leg, to=to, caller_id=caller_id))

    def dial(self, uri: str, caller_id: str | None = None) -> None:
        self.connection.send(p.Dial(leg=self.leg, call_id=self.call_id, to=uri, caller_id=caller_id))

    def send_dtmf(self, digits: str) -> None:
        self.connection.send(p.SendDtmf(leg=self.leg, digits=digits))


@dataclass
class ReplySegment:
    """One persona reply as queued on the agent's track, in frames counted by the track."""

    start: int  # queued_frames when its first frame arrived
    end: int | None = None  # queued_frames at its SegmentEnd; None while the reply is still arriving
    segment: int | None = None  # the agent's number for it, known at its SegmentEnd


class AgentParticipant(RemoteParticipant):
    """A persona: its replies arrive faster than real time and play at the hub's pace.

    It tells the agent how much of each reply the caller really heard, so an interrupted
    reply is truncated in the agent's context where the caller stopped hearing it.
    """

    def __init__(self, identity: str, connection: WorkerConnection, leg: int):
        super().__init__(identity, "agent", connection, leg, jitter=None)
        self._segments: deque[ReplySegment] = deque()
        self._turn_from: float | None = None  # when the caller's last final transcript came; None once answered

    def caller_turn_ended(self) -> None:
        """The caller's final transcript reached the hub: the persona's reply is due."""
        self._turn_from = monotonic()

    def received(self, frame: bytes) -> None:
        assert self.track is not None
        if self.track.pending >= AGENT_QUEUE_FRAMES:
            raise ProtocolError(f"persona audio over {AGENT_QUEUE_FRAMES} frames queued")
        if self._turn_from is not None and (not self._segments or self._segments[-1].end is not None):
            # A reply's first frame: the persona's own part of the caller's wait (turn commit, LLM,
            # tools, TTS, the socket); the endpointing silence before and the wire after are not in it.
            metrics.persona_turn.observe(monotonic() - self._turn_from)
            self._turn_from = None
        self._open_segment()
        self.track.write_frame(frame)

    def segment_end(self, segment: int) -> None:
        assert self.track is not None
        current = self._open_segment()  # new here: an empty reply
        current.segment = segment
        current.end = self.track.queued_frames

    def _open_segment(self) -> ReplySegment:
        """The reply frames are arriving for, begun now if the last one has ended."""
        assert self.track is not None
        if not self._segments or self._segments[-1].end is not None:
            self._segments.append(ReplySegment(start=self.track.queued_frames))
        return self._segments[-1]

    def clear(self, segment: int) -> None:
        assert self.track is not None
        # What the hub has played, less what still sat in a listener's buffer beyond the hub.
        behind = self.room.listeners_behind(self.identity) if self.room is not None else 0
        heard = self.track.played_frames - behind
        for reply in self._segments:
            played = max(0, min(heard, reply.end if reply.end is not None else heard) - reply.start)
            # A reply still arriving has no number yet: it is the one the barge-in names.
            self._played(segment if reply.segment is None else reply.segment, played, interrupted=True)
        self._segments.clear()
        self.track.clear()

    def after_tick(self) -> None:
        assert self.track is not None
        while (self._segments and self._segments[0].end is not None
               and self.track.played_frames >= self._segments[0].end):
            reply = self._segments.popleft()
            assert reply.end is not None and reply.segment is not None  # ended replies have both
            self._played(reply.segment, reply.end - reply.start, interrupted=False)

    def _played(self, segment: int, frames: int, interrupted: bool) -> None:
        self.connection.send(p.Played(leg=self.leg, segment=segment, seconds=frames * FRAME_MS / 1000,
                                      interrupted=interrupted))


class BrowserParticipant(RemoteParticipant):
    """A person in a browser (an operator or a supervisor), session `leg` on a WebRTC gateway worker.

    It exists from the session's offer; the desk joins it to a call's room and takes it out
    again, so one WebRTC connection serves every call of an operator's shift.
    """

    def __init__(self, identity: str, connection: WorkerConnection, leg: int):
        # A person talking to a caller: delay that stands in the queue for the hub's tick is
        # trimmed to a frame of jitter (see StandingDelay); bursts up to the jitter bound pass.
        super().__init__(identity, "operator", connection, leg, jitter=CALLER_JITTER_FRAMES,
                         latency=BROWSER_LATENCY_FRAMES)

    def send(self, payload: dict[str, object]) -> None:
        """One message on the session's data channel."""
        self.connection.send(p.RtcData(leg=self.leg, payload=payload))

    def on_data(self, topic: str, payload: dict[str, Any], sender: str) -> None:
        # A call's live transcript reaches everyone in its room who has a screen.
        if topic == TRANSCRIPT_TOPIC:
            self.send({"type": "transcript", "call": payload.get("call_id", ""), "role": payload.get("role", ""),
                       "speaker": payload.get("speaker", ""), "text": payload.get("text", "")})

    def close(self, reason: str) -> None:
        self.connection.send(p.RtcClose(leg=self.leg, reason=reason))


class CallHandler(Protocol):
    async def offer(self, worker: WorkerConnection, offer: p.Offer) -> p.OfferReply: ...
    def answered(self, worker: WorkerConnection, message: p.Answered) -> None: ...
    def dtmf(self, worker: WorkerConnection, message: p.Dtmf) -> None: ...
    def ended(self, worker: WorkerConnection, message: p.Ended) -> None: ...
    def transfer_result(self, worker: WorkerConnection, message: p.TransferResult) -> None: ...
    def dial_result(self, worker: WorkerConnection, message: p.DialResult) -> None: ...
    def worker_lost(self, worker: WorkerConnection) -> None: ...


class AgentHandler(Protocol):
    def agent_message(self, agent: WorkerConnection, message: BaseModel) -> None: ...
    def agent_lost(self, agent: WorkerConnection) -> None: ...


class BrowserHandler(Protocol):
    def rtc_message(self, worker: WorkerConnection, message: BaseModel) -> None: ...
    def rtc_lost(self, worker: WorkerConnection) -> None: ...


class ParticipantServer:
    def __init__(self, hub: Hub, tokens: TokenAuthority, registry: WorkerRegistry, handler: CallHandler,
                 agents: AgentHandler | None = None, browsers: BrowserHandler | None = None,
                 handshake_timeout_s: float = p.HANDSHAKE_TIMEOUT_S, frame_timeout_s: float = p.FRAME_TIMEOUT_S):
        self.hub = hub
        self.tokens = tokens
        self.handler = handler
        self.agents = agents
        self.browsers = browsers
        self.handshake_timeout_s = handshake_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.registry = registry
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # every open one, hello or not
        hub.after_tick.append(self._after_tick)

    async def start(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        path.chmod(0o600)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            # Abort (a peer that does not read would hold a close open), then let each connection
            # end as if its peer had left: cancelling them instead makes asyncio log an error each.
            connections = dict(self._connections)
            for writer in connections.values():
                writer.transport.abort()
            await asyncio.gather(*connections, return_exceptions=True)
            await self._server.wait_closed()

    def _after_tick(self) -> None:
        for agent in self.registry.agents.values():
            for leg in agent.legs.values():
                if isinstance(leg, AgentParticipant):
                    leg.after_tick()
            agent.flush()
        for worker in (*self.registry.sip.values(), *self.registry.rtc.values(), *self.registry.twilio.values()):
            worker.flush()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        worker: WorkerConnection | None = None
        try:
            worker = await self._handshake(reader, writer)
            max_audio = p.max_audio_batch(worker.capacity)
            while True:
                kind, body = await p.read_frame(reader, p.MAX_CONTROL, max_audio, timeout=self.frame_timeout_s)
                if kind == p.KIND_AUDIO:
                    for leg, pcm in p.decode_audio(body, frame_bytes=FRAME_BYTES):
                        participant = worker.legs.get(leg)
                        # None: a leg the hub has just ended can still be in the worker's next batch.
                        if participant is not None:
                            participant.received(pcm)
                else:  # read_frame lets through no other kind
                    message = p.decode_control(body)
                    try:
                        await self._control(worker, message)
                    except ProtocolError:
                        raise
                    except Exception:
                        # Our bug in one call's handling must not drop every call on the worker.
                        log.exception("control message failed", extra=log_extra(worker=worker.name, type=message.type))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer left, or was cut off where the reason was known (WorkerConnection.cut_off)
        except (ProtocolError, AuthError) as exc:
            _cut_off(str(exc), worker)
        finally:
            del self._connections[task]
            # abort, not close: close would wait to deliver what is unsent, to a peer that may never read.
            writer.transport.abort()
            if worker is not None:
                registry = self.registry.of(worker.role)
                current = registry.get(worker.name) is worker
                if current:
                    del registry[worker.name]
                    metrics.workers_up.labels(worker.role).set(len(registry))
                    self.registry.changed(worker.role, worker.name, False)
                    log.warning("worker disconnected", extra=log_extra(worker=worker.name, role=worker.role,
                                                                     legs=len(worker.legs)))
                if worker.role in CALLER_ROLES and (current or worker.legs):
                    # A connection replaced by its worker's reconnect still had calls: they died with
                    # the old process and their records must close.
                    self.handler.worker_lost(worker)
                elif worker.role == "agent" and current and self.agents is not None:
                    self.agents.agent_lost(worker)
                elif worker.role == "rtc" and current and self.browsers is not None:
                    self.browsers.rtc_lost(worker)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WorkerConnection:
        try:
            # The whole hello, header to last byte: a peer that says nothing, or trickles, is let go.
            kind, body = await asyncio.wait_for(p.read_frame(reader, p.MAX_CONTROL, max_audio=0),
                                                self.handshake_timeout_s)
        except TimeoutError:
            raise ProtocolError(f"no hello within {self.handshake_timeout_s} s") from None
        hello = p.decode_control(body) if kind == p.KIND_CONTROL else None
        if not isinstance(hello, p.Hello):
            raise ProtocolError("first message must be hello")
        try:
            grant = self.tokens.verify(hello.token, HUB)
            if not grant.allows(*WORKER_ROLES):
                raise AuthError(f"{grant.identity} has no worker grant ({', '.join(WORKER_ROLES)})")
            if grant.identity != worker_identity(grant.role, hello.worker):
                # Else one worker's token could take over another's name and its calls.
                raise AuthError(f"token of {grant.identity} cannot join as worker {hello.worker!r}")
        except AuthError as exc:
            # Said, so that a worker with an expired token exits to be respawned with a fresh
            # one instead of retrying forever while the edge still sends it calls.
            writer.write(p.encode_control(p.Refused(reason=str(exc)[:200])))
            raise
        registry = self.registry.of(grant.role)
        old = registry.get(hello.worker)
        if old is not None:
            # A restarted worker reconnects under its name: the old connection's legs are gone.
            # abort, not close: a hung old process would never read what close waits to deliver.
            old.writer.transport.abort()
        worker = WorkerConnection(hello.worker, grant.role, hello.capacity, writer)
        registry[worker.name] = worker
        metrics.workers_up.labels(grant.role).set(len(registry))
        self.registry.changed(grant.role, worker.name, True)
        worker.send(p.Welcome())
        log.info("worker connected", extra=log_extra(worker=worker.name, role=grant.role, capacity=hello.capacity))
        return worker

    async def _control(self, worker: WorkerConnection, message: BaseModel) -> None:
        if worker.role == "agent":
            if self.agents is None:
                raise ProtocolError("no agent handler")
            if not isinstance(message, AGENT_MESSAGES):
                raise ProtocolError(f"unexpected {getattr(message, 'type', '?')} from a persona worker")
            self.agents.agent_message(worker, message)
            return
        if worker.role == "rtc":
            if self.browsers is None:
                raise ProtocolError("no browser handler")
            if not isinstance(message, RTC_MESSAGES):
                raise ProtocolError(f"unexpected {getattr(message, 'type', '?')} from a WebRTC worker")
            self.browsers.rtc_message(worker, message)
            return
        handlers = {
            p.Answered: self.handler.answered,
            p.Dtmf: self.handler.dtmf,
            p.Ended: self.handler.ended,
            p.TransferResult: self.handler.transfer_result,
            p.DialResult: self.handler.dial_result,
            p.Playout: self._playout,
        }
        if isinstance(message, p.Offer):
            # Offers are decided concurrently so one slow decision never holds the stream.
            asyncio.get_running_loop().create_task(self._offer(worker, message))
        elif type(message) in handlers:
            # A table keyed by type: mypy cannot tie each key to its handler's message parameter.
            handlers[type(message)](worker, message)  # type: ignore[operator]
        else:
            raise ProtocolError(f"unexpected {getattr(message, 'type', '?')} from a worker")

    @staticmethod
    def _playout(worker: WorkerConnection, message: p.Playout) -> None:
        leg = worker.legs.get(message.leg)
        if leg is not None:
            leg.behind_frames = message.behind_ms // FRAME_MS

    async def _offer(self, worker: WorkerConnection, offer: p.Offer) -> None:
        with metrics.answer_latency.time():
            reply = await self.handler.offer(worker, offer)
        worker.send(reply)
