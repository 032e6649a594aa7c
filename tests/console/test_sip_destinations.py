"""A queue staffed by a desk phone (baresip) instead of a browser: the box dials it with the
bridge-transfer machinery; it answers and talks to the caller, or rings out and the call is
offered on. A desk phone not in transfers.allowed never goes live."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.speech.stt import phrases_grammar, transcribe
from tests.support import baresip
from tests.support.appliance import ROOT
from tests.support.audio import spoken
from tests.support.console import add_user, call_events, operator

pytestmark = pytest.mark.sip

FLOWS = Path(__file__).parent / "flows"
CALLER_SAYS = "please check my account"


def _flows(tmp_path: Path, member: str) -> Path:
    flows = tmp_path / "flows"
    shutil.copytree(FLOWS, flows)
    queues = yaml.safe_load((flows / "queues.yaml").read_text())
    queues["queues"]["billing"]["sip_members"] = [member]
    (flows / "queues.yaml").write_text(yaml.safe_dump(queues))
    return flows



async def test_a_desk_phone_in_a_queue_is_dialled_answers_and_hears_the_caller(appliance_factory, tmp_path) -> None:
    caller_speech = baresip.speech_wav(tmp_path / "caller.wav", CALLER_SAYS, seconds=40)
    with (baresip.Softphone(tmp_path / "deskphone", max_seconds=90, user="desk") as deskphone,
          baresip.Softphone(tmp_path / "caller", max_seconds=90) as caller):
        member = f"sip:desk@127.0.0.1:{deskphone.sip_port}"
        app = appliance_factory(flows_dir=_flows(tmp_path, member), numbers={"300": "desk"},
                                extra={"transfers": {"allowed": [member]}})
        await asyncio.to_thread(caller.dial, f"sip:300@127.0.0.1:{app.sip_port}")
        # It rings and nobody picks up: after the queue's 4 s ring time it is offered (rung) again.
        await asyncio.to_thread(deskphone.wait_event, "CALL_INCOMING", 1, 10)
        await asyncio.to_thread(deskphone.wait_event, "CALL_CLOSED", 1, 10)
        await asyncio.to_thread(deskphone.wait_event, "CALL_INCOMING", 2, 15)
        await asyncio.to_thread(deskphone.accept)
        caller.say(caller_speech.path)
        await asyncio.sleep(4)
        deskphone.hangup()
        await asyncio.to_thread(caller.wait_closed, 10)
        heard = deskphone.result().heard
    (call,) = app.wait_calls_closed(1)
    assert call["operator"] == member and call["end_reason"] == "operator-hangup", call
    assert [e["identity"] for e in call_events(app, call["id"], "offered_to")] == [member, member]
    assert call_events(app, call["id"], "operator_joined") == [{"identity": member}]
    assert heard is not None
    grammar = phrases_grammar([CALLER_SAYS, "please hold", "my bill is wrong"])
    assert CALLER_SAYS in transcribe(spoken(baresip.pcm16k(heard)), grammar)


def test_a_desk_phone_outside_transfers_allowed_is_a_flow_error(tmp_path: Path) -> None:
    flows = _flows(tmp_path, "sip:+19005550100@carrier.example.com")
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "flows", "check", str(flows)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "queues.yaml:1:1: queue 'billing': SIP member sip:+19005550100@carrier.example.com is not allowed" \
        in result.stdout + result.stderr


async def test_an_operator_transfers_the_caller_to_an_allowed_destination_and_only_there(
        appliance_factory, tmp_path: Path) -> None:

    caller_speech = baresip.speech_wav(tmp_path / "caller.wav", CALLER_SAYS, seconds=40)
    with (baresip.Softphone(tmp_path / "sales", max_seconds=90, user="sales") as sales,
          baresip.Softphone(tmp_path / "caller", max_seconds=90) as caller):
        allowed = f"sip:sales@127.0.0.1:{sales.sip_port}"
        app = appliance_factory(rtc_workers=1, flows_dir=FLOWS, numbers={"300": "desk"},
                                extra={"transfers": {"allowed": [allowed]}})
        add_user(app, "alice", queues="billing")
        alice, _ = await operator(app, "alice")
        try:
            await asyncio.to_thread(caller.dial, f"sip:300@127.0.0.1:{app.sip_port}")
            offer = await alice.recv("offer", timeout=20)
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            alice.send({"type": "transfer", "to": "sip:+19005550100@127.0.0.1"})
            assert "not an allowed destination" in (await alice.recv("error"))["message"]
            alice.send({"type": "transfer", "to": allowed})
            await asyncio.to_thread(sales.wait_event, "CALL_INCOMING", 1, 10)
            await asyncio.to_thread(sales.accept)
            ended = await alice.recv("call", timeout=5)
            assert (ended["state"], ended["reason"]) == ("ended", "transferred")
            await alice.recv("wrap_up_due", timeout=5)
            caller.say(caller_speech.path)
            await asyncio.sleep(4)
            sales.hangup()
            await asyncio.to_thread(caller.wait_closed, 10)
            heard = sales.result().heard
        finally:
            await alice.close()
    (call,) = app.wait_calls_closed(1)
    assert call["end_reason"] == "transferred" and call["operator"] == "alice", call
    assert call_events(app, call["id"], "operator_transfer") == [{"identity": "alice", "to": allowed}]
    assert call_events(app, call["id"], "transfer_refused") == [{"to": "sip:+19005550100@127.0.0.1"}]
    assert heard is not None
    grammar = phrases_grammar([CALLER_SAYS, "please hold", "my bill is wrong"])
    assert CALLER_SAYS in transcribe(spoken(baresip.pcm16k(heard)), grammar)
