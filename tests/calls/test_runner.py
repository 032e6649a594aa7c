"""The flow runner without SIP: a real room, real storage and espeak-ng, with the SIP leg's
controls recorded. What a call would notice: what was dialled, what the flow was told, what
was recorded and where.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from appliance.calls.runner import CallControl, CallServices, FlowRunner
from appliance.core.clock import utcnow
from appliance.flow import engine as fe
from appliance.flow.actions import ACTION_TYPES, ActionTable, UnknownAction, ignore
from appliance.flow.checker import FlowContext
from appliance.flow.loader import parse
from appliance.personas.dispatcher import PersonaDispatcher
from appliance.recording.recorder import recording_path
from appliance.rooms.room import Room
from appliance.rooms.server import WorkerRegistry
from appliance.speech.tts import EspeakTTS
from appliance.storage import Storage

FLOW = """\
name: desk
entry: start
steps:
  start:
    transfer:
      to: "{to}"
      on_error: sorry
  sorry:
    say: Sorry.
    next: bye
  bye:
    hangup:
"""


class Leg:
    """The SIP leg's side of CallControl: what the runner asked of it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    def control(self) -> CallControl:
        return CallControl(hangup=lambda reason: self.asked.append(("hangup", reason)),
                           transfer=lambda to: self.asked.append(("refer", to)),
                           bridge=lambda to, timeout: self.asked.append(("bridge", to)),
                           send_dtmf=lambda digits: self.asked.append(("dtmf", digits)),
                           escalate=lambda queue: self.asked.append(("escalate", queue)),
                           pause_recording=lambda paused, by: self.asked.append(("record", (paused, by))),
                           start_egress=lambda action: self.asked.append(("egress", action.url)))


def _runner(tmp_path: Path, to: str, allowed: list[str]) -> tuple[FlowRunner, Leg, Storage]:
    # Loaded under a policy that allows `to`; the call runs under `allowed`, as after a config change.
    flow, problems = parse(FLOW.format(to=to), "desk.yaml", FlowContext(transfers_allowed=[to]))
    assert flow is not None, problems
    storage = Storage(tmp_path / "calls.db")
    storage.open_call("CA1")
    services = CallServices(tts=EspeakTTS(), storage=storage, personas=PersonaDispatcher(storage, WorkerRegistry()),
                            flows_dir=tmp_path, recording_dir=tmp_path / "rec", transfers_allowed=allowed,
                            persona_fallback=lambda name: "Let me take you back.")
    leg = Leg()
    return FlowRunner("CA1", Room("CA1"), fe.FlowEngine(flow), services, leg.control()), leg, storage


def _kinds(storage: Storage) -> list[str]:
    return [e["kind"] for e in storage.events("CA1")]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_an_allowed_destination_is_referred(tmp_path: Path) -> None:
    runner, leg, _ = _runner(tmp_path, "sip:desk@example.com", ["sip:desk@example.com"])
    runner.start()
    await _settle()
    assert leg.asked == [("refer", "sip:desk@example.com")]
    runner.stop()


async def test_a_destination_the_policy_no_longer_allows_is_not_dialled(tmp_path: Path) -> None:
    # The flow was checked against one list when loaded; the live call's list is the one that counts.
    runner, leg, storage = _runner(tmp_path, "sip:desk@example.com", [])
    runner.start()
    await _settle()
    assert ("refer", "sip:desk@example.com") not in leg.asked
    assert "transfer_refused" in _kinds(storage)
    assert runner.engine.step_id == "sorry"
    runner.stop()


async def test_a_persona_transfer_is_checked_by_the_same_list(tmp_path: Path) -> None:
    runner, leg, storage = _runner(tmp_path, "sip:desk@example.com", ["sip:desk@example.com"])
    runner.persona._on_action("transfer", {"to": "sip:elsewhere@example.com"})
    runner.persona._on_action("transfer", {"to": "sip:desk@example.com"})
    assert leg.asked == [("refer", "sip:desk@example.com")]
    assert _kinds(storage).count("transfer_refused") == 1
    assert runner.persona.transferring


async def test_persona_actions_go_through_their_table(tmp_path: Path) -> None:
    runner, leg, storage = _runner(tmp_path, "sip:desk@example.com", [])
    done: list[fe.PersonaDone] = []
    runner.persona.done = done.append
    runner.persona._on_action("send_dtmf", {"digits": "12"})
    runner.persona._on_action("set_variable", {"name": "ticket", "value": 42})
    runner.persona._on_action("open_the_pod_bay_doors", {})  # from a peer: recorded, not obeyed
    runner.persona._exit("resolved", {"mood": "calm"})
    assert leg.asked == [("dtmf", "12")]
    assert done == [fe.PersonaDone("resolved", {"ticket": 42, "mood": "calm"})]
    assert _kinds(storage).count("persona_action") == 3


async def test_no_persona_worker_says_the_fallback_then_fails(tmp_path: Path) -> None:
    runner, _, _ = _runner(tmp_path, "sip:desk@example.com", [])
    done: list[fe.PersonaDone] = []
    runner.persona.done = done.append
    runner.persona.start(fe.StartPersona("helper", {}))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if runner.track.pending:
            break
    assert runner.track.pending > 0 and not done  # the caller hears the fallback first
    while runner.track.pull() is not None:
        pass
    assert done == [fe.PersonaDone("failed", {"persona_error": "no persona worker available"})]


async def test_voicemail_is_filed_beside_the_calls_recording(tmp_path: Path) -> None:
    runner, _, storage = _runner(tmp_path, "sip:desk@example.com", [])
    runner._start_recording(fe.StartRecording("voicemail", max_seconds=5, beep=True))
    runner._voicemail.push(b"\0" * 640)  # type: ignore[union-attr]
    runner._stop_recording()
    event = await asyncio.wait_for(runner._events.get(), 1)
    assert isinstance(event, fe.RecordingDone)
    assert Path(event.path or "") == recording_path(tmp_path / "rec", "CA1", utcnow(), "voicemail")
    assert recording_path(tmp_path / "rec", "CA1", utcnow()).parent == Path(event.path or "").parent
    assert [r["kind"] for r in storage.recordings("CA1")] == ["voicemail"]
    runner.stop()


def test_recording_paths_by_kind() -> None:
    when = dt.datetime(2026, 3, 7, tzinfo=dt.UTC)
    assert recording_path(Path("/rec"), "CAabc", when, "voicemail") == Path("/rec/2026/03/07/CAabc-voicemail.wav")


def test_an_action_table_must_cover_every_action() -> None:
    handlers = {kind: ignore for kind in ACTION_TYPES}
    del handlers[fe.Say]
    with pytest.raises(UnknownAction, match="Say"):
        ActionTable("test", handlers)


async def test_an_action_the_engine_does_not_declare_fails_loudly() -> None:
    table = ActionTable("test", {kind: ignore for kind in ACTION_TYPES})
    with pytest.raises(UnknownAction, match="str"):
        await table.perform(["not an action"])  # type: ignore[list-item]
