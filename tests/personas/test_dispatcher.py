"""The hub side of personas: dispatch to the least-loaded worker, transcripts stored and
published live on the room's data channel, exits and worker loss reach the flow."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from appliance.core.audio import FRAME_BYTES
from appliance.personas.dispatcher import TRANSCRIPT_TOPIC, PersonaDispatcher
from appliance.rooms import protocol as p
from appliance.rooms.room import Participant, Room
from appliance.rooms.server import WorkerConnection, WorkerRegistry
from appliance.storage import Storage


class Writer:
    """The stream end of a worker connection: collects what the hub sends."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    async def messages(self) -> list[Any]:
        reader = asyncio.StreamReader()
        reader.feed_data(self.data)
        reader.feed_eof()
        out = []
        while True:
            try:
                kind, body = await p.read_frame(reader)
            except asyncio.IncompleteReadError:
                return out
            out.append(p.decode_control(body) if kind == p.KIND_CONTROL else p.decode_audio(body))


class Supervisor(Participant):
    def __init__(self) -> None:
        super().__init__("supervisor", kind="supervisor", hidden=True)
        self.received: list[tuple[str, dict[str, Any]]] = []

    def on_data(self, topic: str, payload: dict[str, Any], sender: str) -> None:
        self.received.append((topic, payload))


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "db.sqlite")
    storage.open_call("CA0000000001")
    return storage


def _agent(workers: WorkerRegistry, name: str, capacity: int = 2) -> tuple[WorkerConnection, Writer]:
    """A connected persona worker, registered as the participant server would after its hello."""
    writer = Writer()
    agent = WorkerConnection(name, "agent", capacity, writer)  # type: ignore[arg-type]
    workers.agents[name] = agent
    return agent, writer


async def test_dispatch_transcripts_and_exit(storage: Storage) -> None:
    workers = WorkerRegistry()
    dispatcher = PersonaDispatcher(storage, workers)
    busy, _ = _agent(workers, "p1", capacity=1)
    idle, writer = _agent(workers, "p2", capacity=2)
    busy.legs[99] = None  # type: ignore[assignment]  # p1 is full
    room = Room("CA0000000001")
    supervisor = Supervisor()
    room.join(supervisor)
    exits: list[tuple[str, dict[str, Any]]] = []
    job = dispatcher.start("CA0000000001", room, "orders", {"caller": "+1555", "obj": object()},
                           on_exit=lambda e, v: exits.append((e, v)), on_action=lambda a, v: None)
    assert job is not None and job.participant.connection is idle
    (dispatch,) = await writer.messages()
    assert dispatch == p.Dispatch(leg=job.leg, call_id="CA0000000001", persona="orders", variables={"caller": "+1555"})

    dispatcher.agent_message(idle, p.Transcript(leg=job.leg, role="caller", text="check my order"))
    dispatcher.agent_message(idle, p.Transcript(leg=job.leg, role="persona", text="Sure.", persona="orders"))
    rows = storage.transcripts("CA0000000001")
    assert [(r["role"], r["speaker"], r["text"]) for r in rows] == [("caller", "caller", "check my order"),
                                                                     ("persona", "orders", "Sure.")]
    assert [topic for topic, _ in supervisor.received] == [TRANSCRIPT_TOPIC, TRANSCRIPT_TOPIC]
    assert supervisor.received[1][1]["text"] == "Sure."

    dispatcher.agent_message(idle, p.PersonaExit(leg=job.leg, exit="human", variables={"queue": "billing"}))
    assert exits == [("human", {"queue": "billing"})]
    assert job.participant.identity not in room.participants and idle.legs == {}


async def test_a_lost_worker_fails_its_personas_and_none_available_is_none(storage: Storage) -> None:
    workers = WorkerRegistry()
    dispatcher = PersonaDispatcher(storage, workers)
    assert dispatcher.start("CA0000000001", Room("r"), "orders", {}, lambda e, v: None, lambda a, v: None) is None
    agent, _ = _agent(workers, "p1")
    exits: list[str] = []
    job = dispatcher.start("CA0000000001", Room("CA0000000001"), "orders", {}, lambda e, v: exits.append(e),
                           lambda a, v: None)
    assert job is not None
    dispatcher.agent_lost(agent)
    assert exits == ["failed"]


async def test_playback_reports_say_what_was_heard(storage: Storage) -> None:
    workers = WorkerRegistry()
    dispatcher = PersonaDispatcher(storage, workers)
    agent, writer = _agent(workers, "p1")
    room = Room("CA0000000001")
    job = dispatcher.start("CA0000000001", room, "orders", {}, lambda e, v: None, lambda a, v: None)
    assert job is not None
    for _ in range(10):
        job.participant.received(b"\x01\x00" * (FRAME_BYTES // 2))
    dispatcher.agent_message(agent, p.SegmentEnd(leg=job.leg, segment=0))
    for _ in range(4):  # the hub's clock plays 4 of the 10 frames
        room.tick()
        job.participant.after_tick()
    dispatcher.agent_message(agent, p.ClearAudio(leg=job.leg, segment=1))  # the caller barges in
    played = [m for m in await writer.messages() if isinstance(m, p.Played)]
    assert played == [p.Played(leg=job.leg, segment=0, seconds=0.08, interrupted=True)]


async def test_what_a_caller_had_not_heard_yet_is_not_reported_as_heard(storage: Storage) -> None:
    # A Twilio caller's ear runs behind the hub by what Twilio still buffers (its marks say how much).
    workers = WorkerRegistry()
    dispatcher = PersonaDispatcher(storage, workers)
    agent, writer = _agent(workers, "p1")
    room = Room("CA0000000001")
    caller = Participant("caller", kind="sip")
    room.join(caller)
    job = dispatcher.start("CA0000000001", room, "orders", {}, lambda e, v: None, lambda a, v: None)
    assert job is not None
    for _ in range(10):
        job.participant.received(b"\x01\x00" * (FRAME_BYTES // 2))
    dispatcher.agent_message(agent, p.SegmentEnd(leg=job.leg, segment=0))
    for _ in range(4):
        room.tick()
        job.participant.after_tick()
    caller.behind_frames = 3  # 3 of the 4 frames played are still in Twilio's buffer
    dispatcher.agent_message(agent, p.ClearAudio(leg=job.leg, segment=1))
    played = [m for m in await writer.messages() if isinstance(m, p.Played)]
    assert played == [p.Played(leg=job.leg, segment=0, seconds=0.02, interrupted=True)]


async def test_a_supervisor_whisper_reaches_the_persona_and_the_transcript(storage: Storage) -> None:
    workers = WorkerRegistry()
    dispatcher = PersonaDispatcher(storage, workers)
    assert not dispatcher.instruct("CA0000000001", "Offer a discount.", by="sup-anna")  # no persona yet
    agent, writer = _agent(workers, "p1")
    room = Room("CA0000000001")
    supervisor = Supervisor()
    room.join(supervisor)
    job = dispatcher.start("CA0000000001", room, "orders", {}, lambda e, v: None, lambda a, v: None)
    assert job is not None

    assert dispatcher.instruct("CA0000000001", "Offer a discount.", by="sup-anna")

    assert (await writer.messages())[-1] == p.Instruct(leg=job.leg, text="Offer a discount.", by="sup-anna")
    [row] = storage.transcripts("CA0000000001")
    assert (row["role"], row["speaker"], row["text"]) == ("supervisor", "sup-anna", "Offer a discount.")
    [(topic, published)] = supervisor.received  # published live, as the persona's lines are
    assert topic == TRANSCRIPT_TOPIC and published["role"] == "supervisor" and published["speaker"] == "sup-anna"
    assert {"kind": "supervisor_instruction", "data": {"identity": "sup-anna", "text": "Offer a discount."}} in [
        {"kind": e["kind"], "data": e["data"]} for e in storage.events("CA0000000001")]
    with pytest.raises(ValueError):
        dispatcher.instruct("CA0000000001", "x" * (p.MAX_INSTRUCTION + 1), by="sup-anna")
    assert len(storage.transcripts("CA0000000001")) == 1  # a refused whisper is not stored

    dispatcher.release(job)
    assert not dispatcher.instruct("CA0000000001", "Offer a discount.", by="sup-anna")
