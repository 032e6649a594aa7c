"""Pausing the recording while a card number is keyed (PCI DSS): a baresip caller speaks all the
time and keys 4111 1111 1111 1111 while a flow's `record: {pause: true}` is in force; afterwards
an admin pauses and resumes the same call over the API.

The digits appear nowhere (database, logs), the recording is exact silence while paused and
still as long as the call, and the pauses are events saying who asked and where in the file the
silence lies."""

from __future__ import annotations

import asyncio
import sqlite3
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import baresip, console
from tests.support.audio import counting_speech
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip

FLOWS = Path(__file__).parent / "pci_flows"
CARD = "4111111111111111"


def _post(app: Any, path: str, role: str = "admin", token: str | None = None) -> tuple[int, dict[str, Any]]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{app.http_port}{path}", method="POST", data=b"",
                                     headers={"Authorization": f"Bearer {token or app.token(role)}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_card_digits_keyed_while_paused_are_stored_nowhere_and_the_recording_is_silent(
        appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(flows_dir=FLOWS, numbers={"300": "pay"}, extra={"webhooks": {"allowed": []}})
    microphone = counting_speech(tmp_path / "caller.wav", 90)
    with baresip.Softphone(tmp_path / "caller", max_seconds=90) as phone:
        await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{app.sip_port}")
        phone.say(microphone)
        (call,) = await asyncio.to_thread(
            wait_until, lambda: [c for c in app.calls() if c["answered_at"]], "the call", 10, 0.2)
        call_id = call["id"]
        await asyncio.to_thread(wait_until, lambda: _kinds(app, call_id).count("recording_paused"),
                                "the flow to pause the recording", 20, 0.2)
        await asyncio.sleep(3)  # the prompt
        await asyncio.to_thread(phone.press, CARD + "#", 0.3)
        await asyncio.to_thread(wait_until, lambda: "recording_resumed" in _kinds(app, call_id),
                                "the flow to resume the recording", 20, 0.2)
        await asyncio.sleep(2)

        # Over the API: an admin pauses, a second pause conflicts, an operator who is not on the
        # call learns nothing of it, then the admin resumes.
        operator = app.token("operator")
        assert _post(app, f"/api/calls/{call_id}/recording/pause") == (200, {"call": call_id, "paused": True})
        assert _post(app, f"/api/calls/{call_id}/recording/pause")[0] == 409
        assert _post(app, f"/api/calls/{call_id}/recording/pause", token=operator)[0] == 404
        assert _post(app, "/api/calls/nonsense/recording/pause")[0] == 400
        assert _post(app, "/api/calls/CA0123456789ab/recording/pause")[0] == 404
        await asyncio.sleep(2)
        assert _post(app, f"/api/calls/{call_id}/recording/resume") == (200, {"call": call_id, "paused": False})
        await asyncio.sleep(1)
        phone.hangup()
    (call,) = app.wait_calls_closed(1, timeout=20)
    detail = app.call(call_id)

    # Who paused and resumed, and when.
    pauses = [(e["kind"], e["data"]["by"]) for e in detail["events"]
              if e["kind"] in ("recording_paused", "recording_resumed")]
    assert pauses == [("recording_paused", "flow"), ("recording_resumed", "flow"),
                      ("recording_paused", "test-admin"), ("recording_resumed", "test-admin")], pauses

    # The digits are nowhere: not in any table of the database, not in the log.
    with sqlite3.connect(app.data_dir / "switchboard.db") as db:
        dump = "\n".join(db.iterdump())
    assert "4111" not in dump and "1111" not in dump
    assert "4111" not in app.log_path.read_text(errors="replace")
    keyed = [e["data"]["digit"] for e in detail["events"] if e["kind"] == "dtmf"]
    assert len(keyed) >= len(CARD) and set(keyed[:len(CARD)]) == {"•"}, keyed
    (card,) = [e["data"]["value"] for e in detail["events"] if e["kind"] == "variable" and e["data"]["name"] == "card"]
    assert card == "•" * len(CARD)

    # The recording: as long as the call, exact silence on both channels while paused, the
    # caller heard on the left otherwise.
    with wave.open(call["recording_path"]) as w:
        rate = w.getframerate()
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    length_s = len(stereo) / rate
    answered, ended = console.epoch(call["answered_at"]), console.epoch(call["ended_at"])
    assert abs(length_s - (ended - answered)) < 0.5, (length_s, ended - answered)
    # Each pause says where in the file its silence begins and ends; that is where the call was.
    at = {(e["kind"], e["data"]["by"]): e["data"]["recording_s"] for e in detail["events"]
          if e["kind"] in ("recording_paused", "recording_resumed")}
    for e in detail["events"]:
        if e["kind"] in ("recording_paused", "recording_resumed"):
            assert abs(e["data"]["recording_s"] - (console.epoch(e["at"]) - answered)) < 0.3, e
    for by in ("flow", "test-admin"):
        start, end = at[("recording_paused", by)], at[("recording_resumed", by)]
        assert end - start > 1.5
        inside = stereo[round(start * rate): round(end * rate)]
        assert not inside.any(), f"sound in the recording while paused by {by}"
    before = stereo[int(0.5 * rate): round(at[("recording_paused", "flow")] * rate), 0]
    assert np.sqrt(np.mean(before.astype(np.float64) ** 2)) > 300, "the caller was not recorded before the pause"
    between = stereo[round(at[("recording_resumed", "flow")] * rate):
                     round(at[("recording_paused", "test-admin")] * rate), 0]
    assert np.sqrt(np.mean(between.astype(np.float64) ** 2)) > 300, "the caller was not recorded after resuming"

def _kinds(app: Any, call_id: str) -> list[str]:
    return [e["kind"] for e in app.call(call_id)["events"]]
