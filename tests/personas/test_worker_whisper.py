"""A supervisor's whisper on a live persona: a real persona worker process (silero, pocketsphinx,
espeak-ng, the scripted LLM in an AgentSession) joined to a real hub over the participant
protocol. The whisper says nothing by itself, and the persona's next reply is the one it asked for.
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

from appliance.personas.dispatcher import PersonaDispatcher
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant, Room
from appliance.rooms.server import ParticipantServer, WorkerRegistry
from appliance.rooms.tokens import TokenAuthority, worker_identity
from appliance.storage import Storage
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
                   HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance.personas.worker", "--name", "p1", "--hub-socket",
                str(root / "hub.sock"), "--flows-dir", str(root / "flows"), "--capacity", "1",
                "--endpointing", "0.25", env=env, stderr=stderr)
        try:
            await wait_until_async(lambda: "p1" in workers.agents, "the persona worker to join the hub",
                                   timeout=60, detail=log.read_text)
            yield Switchboard(hub, storage, personas, log)
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
            await server.stop()
            await hub.stop()
            storage.close()
            print(log.read_text())


async def test_a_whisper_changes_the_personas_next_reply_and_is_not_heard(board: Switchboard) -> None:
    board.storage.open_call(CALL)
    room: Room = board.hub.create_room(CALL)
    caller = Participant("caller", "sip")
    caller.publish(AudioTrack("caller"))
    room.join(caller)
    exits: list[str] = []
    job = board.personas.start(CALL, room, "shop", {}, on_exit=lambda e, v: exits.append(e),
                               on_action=lambda a, v: None)
    assert job is not None
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
