"""Operators take escalated calls: real appliance, real SIP callers (baresip), operators as aiortc
clients over the console's HTTPS signalling and WebRTC. What each side says is recognised by
pocketsphinx on what the other side heard.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.speech.stt import phrases_grammar, transcribe
from tests.support import baresip
from tests.support.audio import spoken
from tests.support.console import await_state, call_events, operator, request
from tests.support.operator_client import OperatorClient, read_wav

pytestmark = pytest.mark.sip

# Sentences pocketsphinx tells apart reliably in espeak-ng's voice (checked on the raw WAVs);
# the others are in the grammar so that it has wrong answers to give.
CALLER_SAYS = "please check my account"
OPERATOR_SAYS = "thank you for calling"
OTHER = ["please hold", "my bill is wrong", "one moment please", "good morning"]



def _words(pcm: bytes) -> str:
    return transcribe(spoken(pcm), phrases_grammar([CALLER_SAYS, OPERATOR_SAYS, *OTHER]))


def _channel(path: str, channel: int) -> bytes:
    with wave.open(path) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    return frames[:, channel].copy().tobytes()


async def _dial(phone: baresip.Softphone, app) -> None:
    await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{app.sip_port}")


async def test_an_escalated_caller_and_an_operator_hear_each_other(desk, tmp_path: Path) -> None:
    operator_speech = baresip.speech_wav(tmp_path / "operator.wav", OPERATOR_SAYS, seconds=3)
    caller_speech = baresip.speech_wav(tmp_path / "caller.wav", CALLER_SAYS, seconds=40)
    alice, token = await operator(desk, "alice")
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await _dial(phone, desk)
            offer = await alice.recv("offer", timeout=20)
            context = offer["context"]
            assert (context["queue"], context["caller"], context["called"]) == ("billing", "caller", "300")
            assert context["path"] == ["queue"]

            alice.send({"type": "accept", "offer": offer["offer"]})
            connected = await alice.recv("call", timeout=5)
            assert connected["state"] == "connected" and connected["call"] == offer["call"], connected
            heard_before = len(alice.heard())
            phone.say(caller_speech.path)
            alice.track.play(read_wav(operator_speech.path))
            await asyncio.sleep(4.5)
            alice.send({"type": "hangup"})
            ended = await alice.recv("call", timeout=5)
            assert ended["state"] == "ended"
            due = await alice.recv("wrap_up_due", timeout=5)
            assert due["dispositions"] == ["resolved", "callback"], due
            alice.send({"type": "wrap_up", "call": offer["call"], "disposition": "resolved", "notes": "paid by card"})
            await asyncio.to_thread(phone.wait_closed, 10)
            heard_by_caller = phone.result()
    finally:
        await alice.close()

    (call,) = desk.wait_calls_closed(1)
    assert call["end_reason"] == "operator-hangup" and call["operator"] == "alice", call
    assert OPERATOR_SAYS in _words(baresip.pcm16k(heard_by_caller.heard)), "the caller did not hear alice"
    assert CALLER_SAYS in _words(alice.heard()[heard_before:]), "alice did not hear the caller"
    # The recording: the caller left, what the caller heard (alice) right.
    assert CALLER_SAYS in _words(_channel(call["recording_path"], 0))
    assert OPERATOR_SAYS in _words(_channel(call["recording_path"], 1))
    kinds = [e["kind"] for e in desk.call(call["id"])["events"]]
    for kind in ("escalated", "queued", "offered_to", "accepted", "operator_joined", "operator_left", "wrap_up"):
        assert kind in kinds, kinds
    assert kinds.index("accepted") < kinds.index("operator_left") < kinds.index("ended")
    assert call_events(desk, call["id"], "wrap_up") == [
        {"identity": "alice", "disposition": "resolved", "notes": "paid by card"}]

    # Alice's own calls, and their recordings with Range requests; bob sees none of them.
    status, body, _ = await request(desk, "GET", "/api/calls", token)
    assert [c["id"] for c in body["calls"]] == [call["id"]]
    status, body, headers = await request(desk, "GET", f"/api/calls/{call['id']}/recording", token,
                                          headers={"Range": "bytes=0-43"})
    assert status == 206 and body[:4] == b"RIFF" and len(body) == 44, (status, headers)
    metrics = desk.get("/metrics").decode()
    for line in ('switchboard_queue_wait_seconds_count{queue="billing"} 1.0',
                 'switchboard_operator_offers_total{result="accepted"} 1.0',
                 'switchboard_operators{state="wrap_up"}', 'switchboard_queue_callers_waiting{queue="billing"} 0.0'):
        assert line in metrics, line
    _, bob_token = await _login_token(desk, "bob")
    status, _, _ = await request(desk, "GET", f"/api/calls/{call['id']}/recording", bob_token)
    assert status == 404



async def _login_token(app, name: str) -> tuple[dict, str]:
    from tests.support.console import login

    me = await login(app, name)
    return me, me["token"]


async def test_an_offer_that_rings_out_goes_to_the_next_operator_and_the_first_is_set_away(desk, tmp_path) -> None:
    alice, _ = await operator(desk, "alice")
    bob: OperatorClient | None = None
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await _dial(phone, desk)
            first = await alice.recv("offer", timeout=20)
            bob, _ = await operator(desk, "bob")  # logs in while alice's phone rings
            withdrawn = await alice.recv("offer_withdrawn", timeout=8)
            assert withdrawn == {"type": "offer_withdrawn", "offer": first["offer"], "reason": "ring_timeout"}
            away = await await_state(alice, "away")
            assert away["reason"] == "missed"
            second = await bob.recv("offer", timeout=5)
            assert second["call"] == first["call"]
            bob.send({"type": "decline", "offer": second["offer"]})
            assert (await bob.recv("offer_withdrawn"))["reason"] == "declined"
            alice.send({"type": "state", "state": "available"})
            # Alice is back; bob declined: the call rings alice again.
            third = await alice.recv("offer", timeout=10)
            assert third["call"] == first["call"]
            phone.hangup()  # the caller gives up while it rings
            gone = await alice.recv("offer_withdrawn", timeout=5)
            assert gone["reason"] == "caller_hangup"
    finally:
        await alice.close()
        if bob is not None:
            await bob.close()
    (call,) = desk.wait_calls_closed(1)
    assert [e["identity"] for e in call_events(desk, call["id"], "missed")] == ["alice"]
    assert [e["identity"] for e in call_events(desk, call["id"], "declined")] == ["bob"]
    assert call["operator"] is None


async def test_an_operator_lost_mid_call_puts_the_caller_back_at_the_head_of_the_queue(desk, tmp_path) -> None:
    alice, _ = await operator(desk, "alice")
    bob, _ = await operator(desk, "bob", available=False)
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await _dial(phone, desk)
            offer = await alice.recv("offer", timeout=20)
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            await alice.close()  # the browser is closed mid-call
            bob.send({"type": "state", "state": "available"})
            again = await bob.recv("offer", timeout=15)  # after operator_lost_s (5 s)
            assert again["call"] == offer["call"]
            bob.send({"type": "accept", "offer": again["offer"]})
            assert (await bob.recv("call", timeout=5))["state"] == "connected"
            phone.hangup()
            assert (await bob.recv("call", timeout=5))["state"] == "ended"
    finally:
        await bob.close()
    (call,) = desk.wait_calls_closed(1)
    kinds = [e["kind"] for e in desk.call(call["id"])["events"]]
    assert kinds.count("operator_joined") == 2 and "operator_lost" in kinds and "requeued" in kinds, kinds
    assert call["end_reason"] == "caller-hangup" and call["operator"] == "bob"


async def test_with_nobody_logged_in_the_caller_overflows_at_once(desk, tmp_path) -> None:
    with baresip.Softphone(tmp_path / "caller", max_seconds=30) as phone:
        await _dial(phone, desk)
        await asyncio.to_thread(phone.wait_closed, 20)
    (call,) = desk.wait_calls_closed(1)
    assert call_events(desk, call["id"], "queue_overflow") == [{"queue": "billing", "reason": "no_operators"}]
    assert [e["step"] for e in call_events(desk, call["id"], "step")] == ["queue", "sorry", "bye"]
