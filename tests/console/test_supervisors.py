"""Supervisors on a real appliance: the wallboard, and joining a live call to listen, whisper,
barge and take over. The supervisor (an aiortc client) plays a steady tone and everyone else is
silent, so who heard the supervisor when is read off the audio: the operator's ears, and the
recording's right channel (what the caller heard), against the audited mode changes.
"""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.core.audio import SAMPLE_RATE
from tests.support import baresip
from tests.support.console import add_user, call_events, epoch, operator
from tests.support.operator_client import OperatorClient

pytestmark = pytest.mark.sip

MODE_S = 2.5  # each mode lasts this long; the middle of it is measured
LOUD = 300.0  # RMS above which the tone is there (it is ~4,000; silence is ~0)


def _tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * 1000 * t) * 6000).astype(np.int16).tobytes()


def _rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0


def _heard_between(client: OperatorClient, start: float, end: float) -> bytes:
    """What the client heard between two wall-clock times (by its frames' arrival times)."""
    offsets = [n for t, n in client.arrivals if start <= t <= end]
    return client.heard()[offsets[0]:offsets[-1]] if len(offsets) > 1 else b""


@pytest.fixture
def supervised(desk):
    add_user(desk, "sam", role="supervisor")
    return desk


async def test_a_supervisor_listens_whispers_barges_and_takes_over(supervised, tmp_path: Path) -> None:
    desk = supervised
    alice, _ = await operator(desk, "alice")
    sam, _ = await operator(desk, "sam", client=OperatorClient(), available=False)
    sam.track.play(_tone(60))
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=90) as phone:
            await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{desk.sip_port}")
            offer = await alice.recv("offer", timeout=20)
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            call_id = offer["call"]

            # The wallboard shows the call with alice on it.
            board = await sam.board_until(
                lambda b: any(c["call"] == call_id and c["on_call"] == ["alice"] for c in b["calls"]), timeout=3)
            assert {q["queue"]: q["on_call"] for q in board["queues"]}["billing"] == 1
            assert [o["state"] for o in board["operators"] if o["operator"] == "alice"] == ["on_call"]

            sam.send({"type": "join", "call": call_id, "mode": "listen"})
            joined = await sam.recv("joined")
            assert joined["mode"] == "listen" and joined["on_call"] == ["alice"], joined
            await asyncio.sleep(MODE_S)
            for mode in ("whisper", "barge"):
                sam.send({"type": "mode", "mode": mode})
                assert (await sam.recv("joined"))["mode"] == mode
                await asyncio.sleep(MODE_S)
            sam.send({"type": "take_over"})
            taken = await sam.recv("joined")
            assert taken["mode"] == "taken_over" and taken["on_call"] == ["sam"], taken
            ended = await alice.recv("call", timeout=5)
            assert (ended["state"], ended["reason"]) == ("ended", "taken over by sam")
            await asyncio.sleep(MODE_S)
            sam.send({"type": "hangup"})
            assert (await sam.recv("left", timeout=5))["reason"] == "call ended"
            await asyncio.to_thread(phone.wait_closed, 10)
    finally:
        await alice.close()
        await sam.close()

    (call,) = desk.wait_calls_closed(1)
    assert call["operator"] == "sam" and call["end_reason"] == "operator-hangup", call
    detail = desk.call(call["id"])
    changes = [(e["kind"], e["data"].get("mode"), epoch(e["at"])) for e in detail["events"]
               if e["kind"] in ("supervisor_joined", "supervisor_mode", "taken_over")]
    assert [(kind, mode) for kind, mode, _ in changes] == [
        ("supervisor_joined", "listen"), ("supervisor_mode", "whisper"), ("supervisor_mode", "barge"),
        ("taken_over", None)]
    assert call_events(desk, call["id"], "taken_over") == [{"identity": "sam", "from": "alice"}]
    windows = [(start + 0.6, start + MODE_S - 0.4) for _, _, start in changes]

    # The operator: hears the supervisor when whispered to and in barge, not when listened in on.
    alice_heard = [_rms(_heard_between(alice, a, b)) for a, b in windows[:3]]
    assert alice_heard[0] < LOUD < min(alice_heard[1:]), alice_heard

    # What the caller heard (the recording's right channel): only barge and take over.
    answered = epoch(detail["answered_at"])
    with wave.open(call["recording_path"]) as w:
        right = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)[:, 1].copy()
    caller_heard = [_rms(right[int((a - answered) * SAMPLE_RATE):int((b - answered) * SAMPLE_RATE)].tobytes())
                    for a, b in windows]
    assert max(caller_heard[:2]) < LOUD < min(caller_heard[2:]), caller_heard


async def test_operators_cannot_supervise_and_supervisors_are_audited(supervised, tmp_path: Path) -> None:
    desk = supervised
    alice, _ = await operator(desk, "alice")
    bob, _ = await operator(desk, "bob", available=False)
    sam, _ = await operator(desk, "sam", available=False)
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{desk.sip_port}")
            offer = await alice.recv("offer", timeout=20)
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            bob.send({"type": "join", "call": offer["call"], "mode": "listen"})
            assert (await bob.recv("error"))["message"] == "not allowed for this role"
            sam.send({"type": "join", "call": "CA0000000000", "mode": "listen"})
            assert (await sam.recv("error"))["message"] == "no such live call"
            sam.send({"type": "accept", "offer": offer["offer"]})  # an operator's action
            assert (await sam.recv("error"))["message"] == "not allowed for this role"
            sam.send({"type": "whisper_text", "text": "offer a discount"})
            assert (await sam.recv("error"))["message"] == "not in a call"
            sam.send({"type": "join", "call": offer["call"], "mode": "barge"})
            await sam.recv("joined")
            sam.send({"type": "whisper_text", "text": "offer a discount"})
            assert "no AI persona" in (await sam.recv("error"))["message"]
            sam.send({"type": "leave"})
            assert (await sam.recv("left"))["reason"] == "left"
            await asyncio.sleep(1.5)
            assert not [m for m in bob.messages if m["type"].startswith("wallboard")], "an operator got the wallboard"
            phone.hangup()
            await alice.recv("call", timeout=10)
    finally:
        for client in (alice, bob, sam):
            await client.close()
    (call,) = desk.wait_calls_closed(1)
    assert call_events(desk, call["id"], "supervisor_joined") == [{"identity": "sam", "mode": "barge"}]
    assert call_events(desk, call["id"], "supervisor_left") == [{"identity": "sam", "reason": "left"}]



async def _board_until(sam: OperatorClient, check, timeout: float = 10) -> dict:
    """The wallboard once `check(queue billing's row, board)` holds."""
    return await sam.board_until(lambda b: check(next(q for q in b["queues"] if q["queue"] == "billing"), b),
                                 timeout)


def _longest_wait(queue: dict) -> float:
    """What the console shows as the queue's longest wait: from the oldest caller's instant."""
    return 0.0 if queue["waiting_since"] is None else time.time() - queue["waiting_since"]


async def test_the_wallboard_counts_a_scripted_morning(supervised, tmp_path: Path) -> None:
    """Two callers wait with alice away; one gives up; alice answers the other after 21 s (over the
    queue's 20 s service level); the wallboard's figures follow, a second at a time."""
    desk = supervised
    alice, _ = await operator(desk, "alice", available=False)
    sam, _ = await operator(desk, "sam", available=False)
    try:
        with (baresip.Softphone(tmp_path / "first", max_seconds=90) as first,
              baresip.Softphone(tmp_path / "second", max_seconds=90, user="second") as second):
            await asyncio.gather(asyncio.to_thread(first.dial, f"sip:300@127.0.0.1:{desk.sip_port}"),
                                 asyncio.to_thread(second.dial, f"sip:300@127.0.0.1:{desk.sip_port}"))
            board = await _board_until(sam, lambda q, b: q["waiting"] == 2 and _longest_wait(q) >= 3)
            billing = next(q for q in board["queues"] if q["queue"] == "billing")
            assert (billing["away"], billing["available"], billing["abandoned_today"]) == (1, 0, 0), billing
            assert all(c["queue"] == "billing" and c["on_hold"] for c in board["calls"]), board["calls"]
            first.hangup()
            board = await _board_until(sam, lambda q, b: q["abandoned_today"] == 1)
            assert next(q for q in board["queues"] if q["queue"] == "billing")["waiting"] == 1
            await _board_until(sam, lambda q, b: _longest_wait(q) >= 21, timeout=30)
            alice.send({"type": "state", "state": "available"})
            offer = await alice.recv("offer", timeout=5)
            alice.send({"type": "accept", "offer": offer["offer"]})
            await alice.recv("call", timeout=5)
            board = await _board_until(sam, lambda q, b: q["answered_today"] == 1)
            billing = next(q for q in board["queues"] if q["queue"] == "billing")
            assert (billing["waiting"], billing["on_call"], billing["in_service_level_today"]) == (0, 1, 0), billing
            assert [(o["operator"], o["state"]) for o in board["operators"]] == [("alice", "on_call")]
            second.hangup()
            await alice.recv("wrap_up_due", timeout=10)
    finally:
        await alice.close()
        await sam.close()
