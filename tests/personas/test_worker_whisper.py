"""A supervisor on a live persona: a real persona worker process (silero, pocketsphinx, espeak-ng,
the scripted LLM in an AgentSession) joined to a real hub over the participant protocol.

A whisper says nothing by itself, and the persona's next reply is the one it asked for. A
take-over switches the persona's input and output off (it neither answers nor speaks) without
ending its session, which answers again when handed back; a persona with a real LLM (here the
local fake of an OpenAI-compatible endpoint) writes the supervisor a summary.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.personas.dispatcher import PersonaAssignment, PersonaDispatcher
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant, Room
from appliance.rooms.server import ParticipantServer, WorkerRegistry
from appliance.rooms.tokens import TokenAuthority, worker_identity
from appliance.storage import Storage
from tests.personas.openai_endpoint import ChatEndpoint
from tests.personas.speech import spoken
from tests.support.hub import NoCalls
from tests.support.wait import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
CALL = "CA00000000f1"
PERSONA = """
name: shop
instructions: You answer the Acme shop's phone. Keep answers short.
greeting: Hello, Acme shop.
builtins: []
scripted:
  intents:
    hours: {phrases: [opening hours, when are you open], reply: We are open nine to five.}
  whispers:
    discount: {phrases: [discount], reply: I can offer you a ten percent discount.}
  fallback: Sorry, I did not catch that.
"""


@dataclass
class Switchboard:
    hub: Hub
    storage: Storage
    personas: PersonaDispatcher
    log: Path
    flows: Path

    def lines(self) -> list[tuple[str, str]]:
        return [(row["role"], row["text"]) for row in self.storage.transcripts(CALL)]


@pytest.fixture
async def board() -> AsyncIterator[Switchboard]:
    # tmp_path can be too long for a unix socket's 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sb-whisper-") as directory:
        root = Path(directory)
        (root / "flows" / "personas").mkdir(parents=True)
        (root / "flows" / "personas" / "shop.yaml").write_text(PERSONA)
        hub, workers = Hub(), WorkerRegistry()
        tokens = TokenAuthority("whisper-key", "whisper-secret-long-enough-for-hmac-sha256")
        storage = Storage(root / "db.sqlite")
        personas = PersonaDispatcher(storage, workers)
        server = ParticipantServer(hub, tokens, workers, NoCalls(), personas)  # type: ignore[arg-type]
        await server.start(root / "hub.sock")
        hub.start()
        log = root / "worker.log"
        env = dict(os.environ, SWITCHBOARD_AGENT_TOKEN=tokens.mint(worker_identity("agent", "p1"), "agent"),
                   HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), SWITCHBOARD_TEST_KEY="sk-local")
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance.personas.worker", "--name", "p1", "--hub-socket",
                str(root / "hub.sock"), "--flows-dir", str(root / "flows"), "--capacity", "1",
                "--endpointing", "0.25", env=env, stderr=stderr)
        try:
            await wait_until_async(lambda: "p1" in workers.agents, "the persona worker to join the hub",
                                   timeout=60, detail=log.read_text)
            yield Switchboard(hub, storage, personas, log, root / "flows")
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
            await server.stop()
            await hub.stop()
            storage.close()
            print(log.read_text())


def _call(board: Switchboard, persona: str = "shop") -> tuple[Participant, PersonaAssignment, list[str]]:
    """A caller in a room with `persona`: the caller, the persona's job, the exits it took."""
    board.storage.open_call(CALL)
    room: Room = board.hub.create_room(CALL)
    caller = Participant("caller", "sip")
    caller.publish(AudioTrack("caller"))
    room.join(caller)
    exits: list[str] = []
    job = board.personas.start(CALL, room, persona, {}, on_exit=lambda e, v: exits.append(e),
                               on_action=lambda a, v: None)
    assert job is not None
    return caller, job, exits


async def test_a_whisper_changes_the_personas_next_reply_and_is_not_heard(board: Switchboard) -> None:
    caller, job, exits = _call(board)
    await wait_until_async(lambda: board.lines(), "the greeting to play", timeout=30, detail=board.log.read_text)

    persona_audio = job.participant.track
    assert persona_audio is not None
    sent = persona_audio.queued_frames
    assert board.personas.instruct(CALL, "Offer the caller a ten percent discount", by="sup-anna")
    await asyncio.sleep(1.0)  # time enough for a reply the whisper must not cause
    assert persona_audio.queued_frames == sent  # the persona said nothing: the caller heard nothing of it
    assert caller.track is not None
    caller.track.write(spoken("when are you open", silence_s=0.5).tobytes())
    await wait_until_async(lambda: len(board.lines()) >= 4, "the persona's reply", timeout=30,
                           detail=lambda: f"{board.lines()}\n{board.log.read_text()}")

    lines = board.lines()
    assert lines[:2] == [("persona", "Hello, Acme shop."), ("supervisor", "Offer the caller a ten percent discount")]
    assert lines[2][0] == "caller"  # whatever pocketsphinx heard: the whisper answers this turn
    assert lines[3:] == [("persona", "I can offer you a ten percent discount.")]
    assert exits == []
    board.personas.release(job)


async def test_a_persona_taken_over_neither_hears_nor_speaks_until_handed_back(board: Switchboard) -> None:
    caller, job, exits = _call(board)
    persona_audio = job.participant.track
    assert persona_audio is not None and caller.track is not None
    await wait_until_async(lambda: persona_audio.queued_frames > 0, "the greeting to start", timeout=30,
                           detail=board.log.read_text)

    assert board.personas.take_over(CALL, "sup-anna") == "shop"
    assert job.participant.muted  # at the next tick, whatever the worker is doing
    assert board.personas.take_over(CALL, "sup-bob") is None  # taken over already
    await asyncio.sleep(1.0)  # the worker switches its input and output off
    sent = persona_audio.queued_frames
    caller.track.write(spoken("when are you open", silence_s=0.5).tobytes())
    await asyncio.sleep(4.0)  # time enough to hear, think and answer, were it listening
    assert persona_audio.queued_frames == sent, "the persona spoke while taken over"
    # It heard nothing (the greeting, cut within 0.1 s, is kept only as far as it was heard).
    before = board.lines()
    assert "caller" not in [role for role, _ in before], before
    assert exits == [] and not job.done  # the session is still there

    assert board.personas.hand_back(CALL, "sup-anna") == "shop"
    assert not job.participant.muted
    await asyncio.sleep(0.5)
    caller.track.write(spoken("when are you open", silence_s=0.5).tobytes())
    await wait_until_async(lambda: len(board.lines()) >= len(before) + 2, "the persona's answer after the hand-back",
                           timeout=30, detail=lambda: f"{board.lines()}\n{board.log.read_text()}")
    after = board.lines()[len(before):]
    # Whatever pocketsphinx made of it, the persona heard the caller and answered.
    assert [role for role, _ in after] == ["caller", "persona"], after
    assert exits == []
    board.personas.release(job)


async def test_a_persona_with_an_llm_writes_the_supervisor_a_summary(board: Switchboard) -> None:
    endpoint = ChatEndpoint()
    await endpoint.start()
    try:
        (board.flows / "personas" / "helper.yaml").write_text(f"""
name: helper
instructions: You answer the Acme shop's phone.
greeting: Hello, Acme shop, Anna speaking.
builtins: []
providers:
  llm: {{name: openai, options: {{base_url: '{endpoint.url}', model: test, api_key_env: SWITCHBOARD_TEST_KEY}}}}
""")
        summaries: list[tuple[str, str]] = []
        board.personas.on_summary.append(lambda call_id, text: summaries.append((call_id, text)))
        _caller, job, _exits = _call(board, "helper")
        await wait_until_async(lambda: board.lines(), "the greeting", timeout=30, detail=board.log.read_text)

        board.personas.take_over(CALL, "sup-anna")
        await wait_until_async(lambda: summaries, "the persona's summary", timeout=30, detail=board.log.read_text)
    finally:
        await endpoint.stop()

    ((call_id, text),) = summaries
    assert call_id == CALL
    # What the model was asked: the conversation, then the instruction, with no tools to act with.
    request = endpoint.requests[-1]
    assert "taking this phone call over" in request["messages"][-1]["content"]
    assert not request.get("tools")
    assert text == "Summary. assistant: Hello, Acme shop, Anna speaking."
    (event,) = [e for e in board.storage.events(CALL) if e["kind"] == "persona_summary"]
    assert event["data"] == {"persona": "helper", "text": text}
    board.personas.release(job)
