"""The desk's behaviours on a real appliance: racing escalations, position announcements,
hold and mute, transfers between queues, and wrap-up blocking offers. Operators are aiortc
clients; callers are baresip.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.speech.stt import phrases_grammar, transcribe
from tests.support import baresip
from tests.support.audio import utterances
from tests.support.console import await_state, call_events, operator

pytestmark = pytest.mark.sip



async def _dial(phone: baresip.Softphone, app) -> None:
    await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{app.sip_port}")



async def test_two_callers_racing_for_the_last_operator_one_rings_the_other_waits_and_hears_its_place(
        desk, tmp_path: Path) -> None:
    alice, _ = await operator(desk, "alice", available=False)
    try:
        with (baresip.Softphone(tmp_path / "first", max_seconds=90) as first,
              baresip.Softphone(tmp_path / "second", max_seconds=90, user="second") as second):
            await asyncio.gather(_dial(first, desk), _dial(second, desk))
            # Both wait with alice away; the queue announces places every 6 s (tests/console/flows).
            await asyncio.sleep(8)
            alice.send({"type": "state", "state": "available"})
            offer = await alice.recv("offer", timeout=5)
            await asyncio.sleep(1)
            assert not [m for m in alice.messages if m["type"] == "offer"], "two calls offered to one operator"
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            alice.send({"type": "hangup"})
            await alice.recv("wrap_up_due", timeout=5)
            wrap_up_began = asyncio.get_running_loop().time()
            later = await alice.recv("offer", timeout=10)  # after the queue's 2 s wrap-up
            assert asyncio.get_running_loop().time() - wrap_up_began >= 1.8
            assert later["call"] != offer["call"]
            assert later["context"]["waited_s"] >= 8
            alice.send({"type": "accept", "offer": later["offer"]})
            await alice.recv("call", timeout=5)
            alice.send({"type": "hangup"})
            await alice.recv("wrap_up_due", timeout=5)
            heard = [first.result().heard, second.result().heard]
    finally:
        await alice.close()
    calls = desk.wait_calls_closed(2)
    assert sorted(c["operator"] for c in calls) == ["alice", "alice"]
    # Every 6 s each waiting caller hears their place: the one who came second, "number 2".
    places = sorted(tuple(e["position"] for e in call_events(desk, c["id"], "announced")) for c in calls)
    assert places[0][0] == 1 and places[1][0] == 2, places
    # And it is heard: the hold tone runs under it, so words are looked for, not sentences.
    grammar = phrases_grammar(["you are next in line", "you are number two in line", "please hold"])
    said = [" ".join(transcribe(part, grammar) for part in utterances(baresip.pcm16k(path))) for path in heard]
    assert any("two" in text.split() for text in said) and all("line" in text.split() for text in said), said


async def test_hold_mute_and_a_transfer_to_another_queue(desk, tmp_path: Path) -> None:
    alice, _ = await operator(desk, "alice")
    carol, _ = await operator(desk, "carol")  # serves technical only
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=90) as phone:
            await _dial(phone, desk)
            offer = await alice.recv("offer", timeout=20)
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            alice.send({"type": "hold"})
            held = await alice.recv("call")
            assert (held["state"], held["muted"]) == ("held", False)
            alice.send({"type": "resume"})
            assert (await alice.recv("call"))["state"] == "connected"
            alice.send({"type": "mute", "muted": True})
            muted = await alice.recv("call")
            assert (muted["state"], muted["muted"]) == ("connected", True)
            alice.send({"type": "transfer", "queue": "nowhere"})
            assert "no queue" in (await alice.recv("error"))["message"]
            alice.send({"type": "transfer", "queue": "technical"})
            ended = await alice.recv("call")
            assert (ended["state"], ended["reason"]) == ("ended", "transferred")
            await alice.recv("wrap_up_due")
            moved = await carol.recv("offer", timeout=10)
            assert (moved["call"], moved["context"]["queue"]) == (offer["call"], "technical")
            carol.send({"type": "accept", "offer": moved["offer"]})
            assert (await carol.recv("call", timeout=5))["state"] == "connected"
            carol.send({"type": "hangup"})
            await carol.recv("wrap_up_due", timeout=5)
    finally:
        await alice.close()
        await carol.close()
    (call,) = desk.wait_calls_closed(1)
    assert call["operator"] == "carol" and call["end_reason"] == "operator-hangup"
    kinds = [e["kind"] for e in desk.call(call["id"])["events"]]
    assert kinds.count("held") == 1 and kinds.count("resumed") == 1, kinds
    assert call_events(desk, call["id"], "operator_transfer") == [{"identity": "alice", "queue": "technical"}]
    assert [e["identity"] for e in call_events(desk, call["id"], "operator_joined")] == ["alice", "carol"]


async def test_states_are_stored_and_an_operator_cannot_act_on_a_call_not_theirs(desk, tmp_path: Path) -> None:
    alice, _ = await operator(desk, "alice")
    bob, _ = await operator(desk, "bob", available=False)
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await _dial(phone, desk)
            offer = await alice.recv("offer", timeout=20)
            bob.send({"type": "accept", "offer": offer["offer"]})  # not offered to bob
            assert (await bob.recv("error"))["message"] == "no such offer for you"
            bob.send({"type": "hangup"})
            assert (await bob.recv("error"))["message"] == "not on a call"
            bob.send({"type": "wrap_up", "call": offer["call"], "disposition": "resolved"})
            assert (await bob.recv("error"))["message"] == "not your call"
            bob.send({"type": "accept"})  # malformed: no offer
            assert (await bob.recv("error"))["request"] == "accept"
            bob.send({"type": "teleport"})
            await bob.recv("error")
            bob.send({"type": "ping", "id": 7})
            assert (await bob.recv("pong"))["id"] == 7  # the session is still up
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            phone.hangup()
            assert (await alice.recv("call", timeout=10))["state"] == "ended"
            await await_state(alice, "wrap_up")
            await await_state(alice, "available", timeout=5)
            alice.send({"type": "state", "state": "away", "reason": "lunch"})
            away = await await_state(alice, "away")
            assert away["reason"] == "lunch"
    finally:
        await alice.close()
        await bob.close()
    desk.wait_calls_closed(1)
    import sqlite3

    with sqlite3.connect(desk.data_dir / "switchboard.db") as db:
        states = [row for row in db.execute("SELECT state, reason FROM agent_events WHERE operator = 'alice' "
                                            "ORDER BY id")]
    assert states[:6] == [("away", "signed in"), ("available", ""), ("offered", ""), ("on_call", ""), ("wrap_up", ""),
                          ("available", "")]
    assert ("away", "lunch") in states
