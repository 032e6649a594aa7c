"""The participant protocol under attack, on a real hub socket: whatever a peer sends, or fails
to read, costs the hub that peer's connection and nothing else, with a warning saying why."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import struct
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from appliance.core.audio import FRAME_BYTES
from appliance.flow.webhook import MAX_REPLY_BYTES
from appliance.personas.dispatcher import PersonaDispatcher
from appliance.rooms import protocol as p
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant
from appliance.rooms.server import (
    AGENT_QUEUE_FRAMES,
    ParticipantServer,
    SipParticipant,
    WorkerConnection,
    WorkerRegistry,
)
from appliance.rooms.tokens import TokenAuthority, worker_identity
from appliance.storage import Storage

# Short, so a test of a peer that stalls does not take the production 10 s.
HANDSHAKE_S = 0.3
FRAME_S = 0.3
# How long a test waits for the hub to do what it must (cut a peer off, answer one): far
# above any of the hub's own timeouts, so a failure here means "never", not "slow".
PATIENCE_S = 4.0

FRAME = bytes(range(256)) * (FRAME_BYTES // 256) + bytes(FRAME_BYTES % 256)


def header(length: int, kind: int) -> bytes:
    return struct.pack(">IB", length, kind)


def control(body: bytes) -> bytes:
    return header(len(body) + 1, p.KIND_CONTROL) + body


def audio(body: bytes) -> bytes:
    return header(len(body) + 1, p.KIND_AUDIO) + body


def leg_frame(leg: int, pcm: bytes, length: int | None = None) -> bytes:
    return struct.pack(">IH", leg, len(pcm) if length is None else length) + pcm


class Calls:
    """The CallHandler: records what the hub hands it, refuses every offer as busy."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, BaseModel]] = []
        self.lost: list[str] = []

    async def offer(self, worker: WorkerConnection, offer: p.Offer) -> p.OfferReply:
        self.seen.append((worker.name, offer))
        return p.OfferReply(leg=offer.leg, code=486, reason="Busy Here")

    def answered(self, worker: WorkerConnection, message: p.Answered) -> None:
        self.seen.append((worker.name, message))

    def dtmf(self, worker: WorkerConnection, message: p.Dtmf) -> None:
        self.seen.append((worker.name, message))

    def ended(self, worker: WorkerConnection, message: p.Ended) -> None:
        self.seen.append((worker.name, message))

    def transfer_result(self, worker: WorkerConnection, message: p.TransferResult) -> None:
        self.seen.append((worker.name, message))

    def dial_result(self, worker: WorkerConnection, message: p.DialResult) -> None:
        self.seen.append((worker.name, message))

    def worker_lost(self, worker: WorkerConnection) -> None:
        self.lost.append(worker.name)


class Endless(AudioTrack):
    """A publisher that always has a frame: every subscriber in its room hears it on every tick."""

    def pull(self) -> bytes | None:
        return FRAME


def tone(identity: str = "tone") -> Participant:
    participant = Participant(identity, kind="prompt", subscribe=False)
    participant.publish(Endless(identity))
    return participant


class Peer:
    """A worker's end of the hub socket, writing whatever a test tells it to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: Path) -> Peer:
        return cls(*await asyncio.open_unix_connection(str(path)))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def receive(self) -> BaseModel | list[tuple[int, bytes]]:
        kind, body = await asyncio.wait_for(p.read_frame(self.reader), PATIENCE_S)
        return p.decode_audio(body) if kind == p.KIND_AUDIO else p.decode_control(body)

    async def receive_control(self) -> BaseModel:
        while True:  # audio batches of the hub's ticks may come first
            message = await self.receive()
            if isinstance(message, BaseModel):
                return message

    async def cut_off(self) -> None:
        """Returns once the hub has closed this connection; fails the test if it never does."""
        try:
            async with asyncio.timeout(PATIENCE_S):
                while await self.reader.read(1 << 16):
                    pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("the hub kept the connection open")

    async def still_open(self) -> bool:
        """The hub has not closed this connection (what it sent meanwhile is read and dropped)."""
        try:
            async with asyncio.timeout(2 * FRAME_S + 0.2):  # past every timeout the hub may apply
                while await self.reader.read(1 << 16):
                    pass
            return False
        except TimeoutError:
            return True
        except ConnectionResetError:
            return False

    def close(self) -> None:
        self.writer.close()


@dataclass
class Switchboard:
    hub: Hub
    tokens: TokenAuthority
    calls: Calls
    personas: PersonaDispatcher
    storage: Storage
    server: ParticipantServer
    path: Path
    names: Any = field(default_factory=lambda: itertools.count(1))

    async def worker(self, role: str = "sip", name: str | None = None, capacity: int = 4) -> Peer:
        name = name or f"{role}-{next(self.names)}"
        peer = await Peer.connect(self.path)
        token = self.tokens.mint(worker_identity(role, name), role)
        peer.send(p.encode_control(p.Hello(token=token, worker=name, capacity=capacity)))
        assert await peer.receive_control() == p.Welcome()
        return peer

    def connection(self, name: str) -> WorkerConnection:
        return {**self.server.registry.sip, **self.server.registry.agents}[name]

    async def assert_serving(self) -> None:
        """A well-behaved worker still joins, and the hub's clock still runs."""
        peer = await self.worker()
        peer.close()
        assert self.hub._task is not None and not self.hub._task.done()


async def open_switchboard(directory: Path, timeout_s: float = HANDSHAKE_S) -> Switchboard:
    hub = Hub()
    tokens = TokenAuthority("fuzz-key", "fuzz-secret-long-enough-for-hmac-sha256")
    calls = Calls()
    storage = Storage(directory / "db.sqlite")
    workers = WorkerRegistry()
    personas = PersonaDispatcher(storage, workers)
    server = ParticipantServer(hub, tokens, workers, calls, personas, handshake_timeout_s=timeout_s,
                               frame_timeout_s=timeout_s)
    path = directory / "hub.sock"
    await server.start(path)
    hub.start()
    return Switchboard(hub, tokens, calls, personas, storage, server, path)


async def close_switchboard(board: Switchboard) -> None:
    await board.server.stop()
    await board.hub.stop()
    board.storage.close()


@pytest.fixture
async def board() -> AsyncIterator[Switchboard]:
    # tmp_path is too long for a unix socket's 108 bytes under parametrized test names.
    with tempfile.TemporaryDirectory(prefix="sb-fuzz-") as directory:
        board = await open_switchboard(Path(directory))
        yield board
        await close_switchboard(board)


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The reasons the hub gave, in its warnings, for cutting peers off."""
    return [
        str(record.fields["reason"])  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "appliance.rooms.server" and record.levelno == logging.WARNING
        and "reason" in getattr(record, "fields", {})
    ]


def assert_reason(caplog: pytest.LogCaptureFixture, expected: str) -> None:
    assert any(expected in reason for reason in reasons(caplog)), reasons(caplog)


def hello_body(**fields: Any) -> bytes:
    return json.dumps({"type": "hello", "token": "x", "worker": "w", "capacity": 4} | fields).encode()


# (what the peer sends first, a phrase of the reason the hub must give)
BEFORE_HELLO = {
    "http request": (b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n", "out of range"),  # 'GET ' is 1.2 GB
    "length 0": (header(0, p.KIND_CONTROL), "out of range"),
    "length 2^32-1": (header(2**32 - 1, p.KIND_CONTROL), "out of range"),
    "length MAX_FRAME+1": (header(p.MAX_FRAME + 1, p.KIND_AUDIO) + b"\x00" * 64, "out of range"),
    "4 MB control frame announced": (header(p.MAX_FRAME, p.KIND_CONTROL), "control message of"),
    "4 MB audio frame announced": (header(p.MAX_FRAME, p.KIND_AUDIO), "audio batch of"),
    "audio before hello": (audio(leg_frame(1, FRAME)), "audio batch of"),
    "unknown kind": (header(9, 7) + b"12345678", "unknown frame kind 7"),
    "kind 0": (header(1, 0), "unknown frame kind 0"),
    "bad token": (control(hello_body(token="not.a.jwt")), "invalid token"),
    "json list": (control(b"[]"), "bad control message"),
    "json string": (control(b'"hello"'), "bad control message"),
    "hello with wrong types": (control(hello_body(capacity="four", worker=7)), "bad control message"),
    "hello with no capacity": (control(b'{"type": "hello", "token": "x", "worker": "w"}'), "bad control message"),
    "hello with capacity 0": (control(hello_body(capacity=0)), "bad control message"),
    "hello with absurd capacity": (control(hello_body(capacity=10**30)), "bad control message"),
    "welcome instead of hello": (p.encode_control(p.Welcome()), "first message must be hello"),
    "nested 100000 deep": (control(b"[" * 100_000), "bad control message"),
    "nested 100000 deep, closed": (control(b"[" * 100_000 + b"]" * 100_000), "bad control message"),
    "100k-digit integer": (control(hello_body()[:-1] + b', "n": 1' + b"0" * 100_000 + b"}"), "bad control message"),
    "a hello over the control limit": (control(hello_body(token="x" * p.MAX_CONTROL)), "control message of"),
    "not utf-8": (control(b'{"type": "hello", "token": "\xff\xfe\xc0", "worker": "w", "capacity": 4}'),
                  "bad control message"),
}


@pytest.mark.parametrize("data, reason", BEFORE_HELLO.values(), ids=BEFORE_HELLO.keys())
async def test_a_bad_first_frame_is_cut_off_with_a_reason(board: Switchboard, caplog, data: bytes, reason: str):
    peer = await Peer.connect(board.path)
    peer.send(data)
    await peer.cut_off()
    assert_reason(caplog, reason)
    assert board.server.registry.sip == {} and board.server.registry.agents == {}
    await board.assert_serving()


async def test_a_role_without_a_worker_grant_is_refused(board: Switchboard, caplog):
    peer = await Peer.connect(board.path)
    peer.send(p.encode_control(p.Hello(token=board.tokens.mint("op", "operator"), worker="w", capacity=4)))
    await peer.cut_off()
    assert reasons(caplog)  # the token's audience or its role, whichever the hub checks first
    await board.assert_serving()


@pytest.mark.parametrize("data", [b"", b"\x00\x00", p.encode_control(p.Hello(token="x", worker="w", capacity=4))[:40]],
                         ids=["nothing", "half a header", "half a hello"])
async def test_a_peer_that_stalls_before_hello_times_out(board: Switchboard, caplog, data: bytes):
    # The slowloris: connect, maybe start a frame, then say nothing and never close.
    peer = await Peer.connect(board.path)
    peer.send(data)
    await peer.cut_off()
    assert_reason(caplog, "no hello within")
    await board.assert_serving()


# (what a worker sends after its welcome, a phrase of the reason the hub must give)
AFTER_HELLO = {
    "length 0": (header(0, p.KIND_CONTROL), "out of range"),
    "length 2^32-1": (header(2**32 - 1, p.KIND_AUDIO), "out of range"),
    "length MAX_FRAME+1": (header(p.MAX_FRAME + 1, p.KIND_CONTROL), "out of range"),
    "4 MB control frame announced": (header(p.MAX_FRAME, p.KIND_CONTROL), "control message of"),
    "4 MB audio frame announced": (header(p.MAX_FRAME, p.KIND_AUDIO), "audio batch of"),
    "unknown kind": (header(3, 3) + b"ab", "unknown frame kind 3"),
    "garbage": (b"\x00\x00\x00\x05\x01\xde\xad\xbe\xef", "bad control message"),
    "json list": (control(b"[]"), "bad control message"),
    "unknown type": (control(b'{"type": "nope", "leg": 1}'), "bad control message"),
    "bad dtmf digit": (control(b'{"type": "dtmf", "leg": 1, "digit": "x"}'), "bad control message"),
    "leg as a string": (control(b'{"type": "ended", "leg": "one", "reason": "x"}'), "bad control message"),
    "nested 40000 deep": (control(b'{"a":' * 40_000), "bad control message"),
    "nested 100000 deep, closed": (control(b"[" * 100_000 + b"]" * 100_000), "bad control message"),
    "100k-digit leg": (control(b'{"type": "ended", "reason": "x", "leg": 1' + b"0" * 100_000 + b"}"),
                       "bad control message"),
    "not utf-8": (control(b'{"type": "ended", "leg": 1, "reason": "\xff\xfe"}'), "bad control message"),
    "a second hello": (p.encode_control(p.Hello(token="x", worker="w", capacity=1)), "unexpected hello"),
    "a hub-only message": (p.encode_control(p.Dial(leg=1, call_id="CA1", to="sip:a@b")), "unexpected dial"),
    "a reason over the control limit": (control(json.dumps({"type": "ended", "leg": 1, "reason": "x" * p.MAX_CONTROL})
                                                .encode()), "control message of"),
    "audio: a cut leg header": (audio(leg_frame(1, FRAME) + b"\x00\x00\x00"), "truncated audio batch"),
    "audio: frame longer than the body": (audio(leg_frame(1, FRAME[:10], length=FRAME_BYTES)), "shorter than"),
    "audio: frame of the wrong size": (audio(leg_frame(1, FRAME[:10])), "audio frame of 10 bytes"),
    "audio: an empty frame": (audio(leg_frame(1, b"")), "audio frame of 0 bytes"),
    "audio: 100k tiny frames": (p.encode_audio([(leg, b"") for leg in range(100_000)]), "audio batch of"),
    "audio: more than capacity x frames": (p.encode_audio([(1, FRAME)] * (4 * p.MAX_BATCH_FRAMES_PER_LEG + 1)),
                                           "audio batch of"),
}


@pytest.mark.parametrize("role", ["sip", "agent"])
@pytest.mark.parametrize("data, reason", AFTER_HELLO.values(), ids=AFTER_HELLO.keys())
async def test_a_bad_frame_from_a_worker_cuts_off_that_worker_only(board: Switchboard, caplog, role: str,
                                                                   data: bytes, reason: str):
    bystander = await board.worker("sip", "bystander")
    peer = await board.worker(role, "offender", capacity=4)
    peer.send(data)
    await peer.cut_off()
    assert_reason(caplog, reason)
    assert "offender" not in board.server.registry.sip and "offender" not in board.server.registry.agents
    if role == "sip":
        assert board.calls.lost == ["offender"]
    # The other worker is untouched: still registered, still answered.
    assert "bystander" in board.server.registry.sip
    bystander.send(p.encode_control(p.Offer(leg=1, sip_call_id="c", from_uri="f", to_uri="t", to_user="u")))
    assert await bystander.receive_control() == p.OfferReply(leg=1, code=486, reason="Busy Here")
    await board.assert_serving()


async def test_a_worker_that_stalls_mid_frame_is_cut_off(board: Switchboard, caplog):
    # After hello, silence between frames is normal (no calls); silence inside one is not.
    idle = await board.worker("sip", "idle")
    peer = await board.worker("sip", "slowloris")
    frame = p.encode_control(p.Ended(leg=1, reason="caller-hangup"))
    peer.send(frame[:-5])
    await peer.cut_off()
    assert_reason(caplog, "not received within")
    assert "slowloris" not in board.server.registry.sip
    assert await idle.still_open() and "idle" in board.server.registry.sip


async def test_a_full_batch_at_capacity_is_accepted(board: Switchboard):
    """The batch limit is no tighter than a worker that fell a second behind: every leg, every frame."""
    peer = await board.worker("sip", "w", capacity=4)
    worker = board.connection("w")
    legs = {}
    for leg in range(1, 5):
        room = board.hub.create_room(f"room-{leg}")
        legs[leg] = SipParticipant("caller", worker, leg, room.name)
        room.join(legs[leg])
        worker.legs[leg] = legs[leg]
    peer.send(p.encode_audio([(leg, FRAME) for leg in range(1, 5)] * p.MAX_BATCH_FRAMES_PER_LEG))
    peer.send(p.encode_control(p.Answered(leg=1)))  # read after the batch: the batch was read whole
    async with asyncio.timeout(PATIENCE_S):
        while ("w", p.Answered(leg=1)) not in board.calls.seen:
            await asyncio.sleep(0.01)
    assert "w" in board.server.registry.sip


async def test_audio_for_legs_that_do_not_exist_is_dropped_not_fatal(board: Switchboard, caplog):
    # A worker's next batch may still carry a leg the hub just hung up: that is a race, not an offence.
    peer = await board.worker("sip", "w")
    peer.send(p.encode_audio([(leg, FRAME) for leg in (7, 8, 2**32 - 1)]))
    peer.send(p.encode_control(p.Offer(leg=9, sip_call_id="c", from_uri="f", to_uri="t", to_user="u")))
    assert await peer.receive_control() == p.OfferReply(leg=9, code=486, reason="Busy Here")
    assert "w" in board.server.registry.sip and reasons(caplog) == []


async def test_messages_about_another_workers_legs_reach_nothing_of_it(board: Switchboard, caplog):
    owner = await board.worker("sip", "owner")
    intruder = await board.worker("sip", "intruder")
    worker = board.connection("owner")
    room = board.hub.create_room("CA1")
    caller = SipParticipant("caller", worker, 1, "CA1")
    room.join(caller)
    worker.legs[1] = caller
    room.join(tone())
    received: list[bytes] = []
    caller.received = received.append  # type: ignore[method-assign]

    intruder.send(p.encode_audio([(1, FRAME)]))
    for message in (p.Ended(leg=1, reason="caller-hangup"), p.Dtmf(leg=1, digit="5"), p.Answered(leg=1)):
        intruder.send(p.encode_control(message))
    intruder.send(p.encode_control(p.Offer(leg=2, sip_call_id="c", from_uri="f", to_uri="t", to_user="u")))
    assert await intruder.receive_control() == p.OfferReply(leg=2, code=486, reason="Busy Here")
    # The hub hands the call handler the sender, never the leg's owner; the owner's leg is untouched.
    assert {name for name, _ in board.calls.seen} == {"intruder"}
    assert received == [] and worker.legs == {1: caller} and "caller" in room.participants
    assert isinstance(await owner.receive(), list)  # and it still hears the room
    assert reasons(caplog) == []


async def test_persona_messages_about_another_workers_job_reach_nothing_of_it(board: Switchboard):
    owner = await board.worker("agent", "p-owner")
    intruder = await board.worker("agent", "p-intruder")
    board.storage.open_call("CA0000000001")
    room = board.hub.create_room("CA0000000001")
    exits: list[str] = []
    board.connection("p-intruder").capacity = 0  # full, so the job goes to the owner
    job = board.personas.start("CA0000000001", room, "orders", {}, lambda e, v: exits.append(e), lambda a, v: None)
    assert job is not None and job.participant.connection is board.connection("p-owner")
    assert isinstance(await owner.receive_control(), p.Dispatch)

    intruder.send(p.encode_control(p.PersonaExit(leg=job.leg, exit="resolved")))
    intruder.send(p.encode_control(p.Transcript(leg=job.leg, role="persona", text="I am someone else")))
    intruder.send(p.encode_audio([(job.leg, FRAME)] * 5))
    owner.send(p.encode_audio([(job.leg, FRAME)]))
    owner.send(p.encode_control(p.PersonaExit(leg=job.leg, exit="human")))
    async with asyncio.timeout(PATIENCE_S):
        while not exits:
            await asyncio.sleep(0.01)
    assert exits == ["human"]  # the owner's, never the intruder's
    assert board.storage.transcripts("CA0000000001") == []
    assert "p-intruder" in board.server.registry.agents


async def test_the_largest_legitimate_control_message_is_accepted(board: Switchboard, caplog):
    # A persona's webhook tool relays the tool's reply (capped by the flows' HTTP client) and its arguments.
    peer = await board.worker("agent", "p")
    reply = {"text": "é" * (MAX_REPLY_BYTES // 2 - 16)}  # 64 KB of UTF-8 once encoded
    event = p.ToolEvent(leg=1, name="lookup", arguments={"query": "x" * 4000}, result=reply)
    peer.send(p.encode_control(event))
    assert len(p.encode_control(event)) > MAX_REPLY_BYTES
    assert await peer.still_open() and "p" in board.server.registry.agents and reasons(caplog) == []


async def test_a_persona_that_floods_the_hub_with_audio_is_cut_off(board: Switchboard, caplog):
    """A reply is queued whole, so the queue is bounded by the longest reply, not by the batch limit."""
    peer = await board.worker("agent", "p", capacity=4)
    board.storage.open_call("CA0000000001")
    room = board.hub.create_room("CA0000000001")
    job = board.personas.start("CA0000000001", room, "orders", {}, lambda e, v: None, lambda a, v: None)
    assert job is not None
    batch = p.encode_audio([(job.leg, FRAME)] * (4 * p.MAX_BATCH_FRAMES_PER_LEG))  # the largest allowed
    for _ in range(AGENT_QUEUE_FRAMES // (4 * p.MAX_BATCH_FRAMES_PER_LEG) + 3):
        peer.send(batch)
    await peer.cut_off()
    assert_reason(caplog, "persona audio over")
    assert job.participant.track is not None and job.participant.track.pending <= AGENT_QUEUE_FRAMES


async def test_a_huge_reason_reaches_the_call_handler_clipped(board: Switchboard, caplog):
    # Reasons come from remote SIP parties through the worker: clipped, not fatal, or a caller
    # answering a transfer with a long reason phrase could cut off every call on the worker.
    peer = await board.worker("sip", "w")
    peer.send(p.encode_control(p.TransferResult(leg=1, ok=False, code=486, reason="x" * 60_000)))
    peer.send(p.encode_control(p.Ended(leg=1, reason="y" * 60_000)))
    async with asyncio.timeout(PATIENCE_S):
        while len(board.calls.seen) < 2:
            await asyncio.sleep(0.01)
    transfer, ended = (message for _, message in board.calls.seen)
    assert transfer.reason == "x" * p.MAX_REASON  # type: ignore[attr-defined]
    assert ended.reason == "y" * p.MAX_REASON  # type: ignore[attr-defined]
    assert "w" in board.server.registry.sip and reasons(caplog) == []


async def test_a_worker_that_never_reads_is_cut_off_and_the_hub_keeps_ticking(board: Switchboard, caplog):
    """64 legs hear a tone every 20 ms; their worker never reads. The hub cuts it off once its
    unsent audio passes the limit, and the other worker keeps hearing its own call throughout."""
    ticks = 0

    def count() -> None:
        nonlocal ticks
        ticks += 1

    board.hub.after_tick.append(count)
    listener = await board.worker("sip", "listener")
    listening = board.connection("listener")
    room = board.hub.create_room("CA-listener")
    room.join(tone())
    leg = SipParticipant("caller", listening, 1, room.name)
    room.join(leg)
    listening.legs[1] = leg

    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deaf.connect(str(board.path))
    hello = p.Hello(token=board.tokens.mint(worker_identity("sip", "deaf"), "sip"), worker="deaf", capacity=64)
    deaf.sendall(p.encode_control(hello))
    async with asyncio.timeout(PATIENCE_S):
        while "deaf" not in board.server.registry.sip:
            await asyncio.sleep(0.01)
    deaf_worker = board.connection("deaf")
    crowd = board.hub.create_room("CA-deaf")
    crowd.join(tone())
    for n in range(64):
        participant = SipParticipant(f"caller-{n}", deaf_worker, n, crowd.name)
        crowd.join(participant)
        deaf_worker.legs[n] = participant

    heard = 0
    most_queued = 0  # what the hub held for the deaf worker, sampled between ticks
    try:
        # 64 legs × 646 bytes × 50 ticks/s is 2 MB/s: the limit is passed within seconds.
        async with asyncio.timeout(p.MAX_BACKLOG / (64 * (FRAME_BYTES + 6) * 50) + PATIENCE_S):
            while "deaf" in board.server.registry.sip:
                message = await listener.receive()
                heard += isinstance(message, list)
                if not deaf_worker.writer.is_closing():
                    most_queued = max(most_queued, deaf_worker.writer.transport.get_write_buffer_size())
        cut_at = ticks
        assert_reason(caplog, "not reading")
        assert board.calls.lost == ["deaf"]
        # Checked before each tick's write, so at most one tick's batch over the limit.
        assert 0 < most_queued <= p.MAX_BACKLOG + 64 * (FRAME_BYTES + 6) + 5
        assert heard > 10  # it heard its call all along, not only after the cut
        for _ in range(5):  # and still does, on ticks after the cut
            assert isinstance(await listener.receive(), list)
        assert ticks > cut_at and not board.hub._task.done()  # type: ignore[union-attr]
    finally:
        deaf.close()
    await board.assert_serving()


# --- property-based: random frames thrown at one hub, which must keep serving after each

KINDS = st.sampled_from([p.KIND_CONTROL, p.KIND_AUDIO, 0, 3, 255])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
MESSAGE_TYPES = ["hello", "welcome", "offer", "offer_reply", "answered", "dtmf", "ended", "hangup", "transfer",
                 "transfer_result", "dial", "dial_result", "dispatch", "release", "segment_end", "clear_audio",
                 "played", "transcript", "tool_event", "call_action", "persona_exit", "send_dtmf", "nope"]
CONTROL_BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda t, fields: json.dumps({"type": t, **fields}).encode(), st.sampled_from(MESSAGE_TYPES),
              st.dictionaries(st.sampled_from(["leg", "reason", "digit", "code", "ok", "segment", "exit", "token",
                                               "worker", "capacity", "text", "role", "variables"]),
                              JSON_VALUES, max_size=6)),
)
AUDIO_BODIES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([b"", FRAME[:1], FRAME[:10], FRAME])), max_size=8)
    .map(lambda frames: b"".join(leg_frame(leg, pcm) for leg, pcm in frames)),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(KINDS)
    body = draw(AUDIO_BODIES if kind == p.KIND_AUDIO else CONTROL_BODIES)
    length = draw(st.one_of(st.just(len(body) + 1), st.integers(0, 2**32 - 1), st.integers(0, len(body) + 8)))
    return header(length, kind) + body


@st.composite
def stalls(draw: st.DrawFn) -> bytes:
    """The start of a frame that never ends: a header, maybe part of the body."""
    kind = draw(st.sampled_from([p.KIND_CONTROL, p.KIND_AUDIO]))
    length = draw(st.integers(2, 1024))
    return header(length, kind) + draw(st.binary(max_size=length - 2))


@pytest.mark.parametrize("role", [None, "sip", "agent"], ids=["before hello", "sip worker", "persona worker"])
def test_random_frames_never_cost_the_hub_more_than_one_connection(caplog, role: str | None):
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory(prefix="sb-fuzz-") as directory:
        # Timeouts short enough for a hundred stalled peers in a few seconds.
        board = loop.run_until_complete(open_switchboard(Path(directory), timeout_s=0.05))

        async def throw(data: list[bytes], stall: bytes | None) -> None:
            given_reasons = len(reasons(caplog))
            peer = await (board.worker(role) if role else Peer.connect(board.path))
            for frame in data:
                peer.send(frame)
            if stall is None:
                peer.writer.write_eof()
            else:
                peer.send(stall)
            await peer.cut_off()  # the hub lets go of it: for an offence, at the end of the stream, or a timeout
            peer.close()
            if stall is not None:
                # Stopping mid-frame always breaks a rule (if nothing before it did), and is said.
                assert len(reasons(caplog)) > given_reasons
            await board.assert_serving()

        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(data=st.lists(frames(), min_size=0, max_size=4), stall=st.none() | stalls())
        def example(data: list[bytes], stall: bytes | None) -> None:
            loop.run_until_complete(throw(data, stall))

        try:
            example()
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert errors == [], [r.getMessage() for r in errors]  # our bugs, never the peer's
        finally:
            loop.run_until_complete(close_switchboard(board))
            loop.close()
