"""Real calls from sipp through the Kamailio edge into pjsua2 workers, rooms and flows."""

from __future__ import annotations

import datetime as dt
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario

pytestmark = pytest.mark.sip


def _channels(path: str) -> tuple[np.ndarray, np.ndarray, float]:
    with wave.open(path) as w:
        assert w.getnchannels() == 2
        assert w.getframerate() == 16000
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
        return data[:, 0], data[:, 1], w.getnframes() / w.getframerate()


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def _seconds(a: str, b: str) -> float:
    return (dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds()


def test_dtmf_1_takes_the_sales_branch_and_is_recorded(appliance, tmp_path: Path) -> None:
    result = run_sipp(caller_scenario(tmp_path, "1"), appliance.sip_port, tmp_path)
    assert result.successful == 1, result.output

    (call,) = appliance.wait_calls_closed(1)
    assert call["end_reason"] == "flow-hangup"
    assert call["flow"] == "default" and len(call["flow_version"]) == 12
    assert call["trunk"] == "test"
    rtp = appliance.wait_event(call["id"], "rtp")["data"]
    events = appliance.call(call["id"])["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["offered", "answered"] and kinds[-2:] == ["ended", "rtp"]  # the flow hung up
    assert {"kind": "dtmf", "data": {"digit": "1", "method": "rfc4733"}} in [
        {"kind": e["kind"], "data": e["data"]} for e in events
    ]
    steps = [e["data"]["step"] for e in events if e["kind"] == "step"]
    assert steps == ["welcome", "main_menu", "sales", "done"]

    left, right, seconds = _channels(call["recording_path"])
    answered_for = _seconds(call["answered_at"], call["ended_at"])
    assert abs(seconds - answered_for) < 0.5, (seconds, answered_for)
    # Caller audio (the pcap's speech) on the left, the greeting on the right.
    assert _rms(left) > 200
    first_two_s = right[: 2 * 16000]
    assert _rms(first_two_s) > 500
    # The caller is not on the right nor the box on the left: channels differ.
    assert not np.array_equal(left[: len(right)], right[: len(left)])

    # Every packet of the caller's RTP (the worker's pjmedia counted them) is a frame of caller
    # audio in the recording, where a frame no caller audio reached is exact zeros. There are
    # more such frames than packets: pjmedia conceals a few after the packets stop.
    assert kinds.count("rtp") == 1
    assert rtp["leg"] == "caller" and rtp["lost"] == 0 and rtp["sent"] > 0
    heard = int(np.count_nonzero(left[: len(left) // 320 * 320].reshape(-1, 320).any(axis=1)))
    assert rtp["received"] > 100 and heard >= rtp["received"] - rtp["discarded"], (heard, rtp)


def test_16_concurrent_calls_each_with_record_and_recording(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=4)
    result = run_sipp(caller_scenario(tmp_path, "2"), app.sip_port, tmp_path, calls=16, rate=16, limit=16)
    assert result.successful == 16 and result.failed == 0, result.output
    calls = app.wait_calls_closed(16)
    assert len({c["id"] for c in calls}) == 16
    assert {c["end_reason"] for c in calls} == {"flow-hangup"}
    assert len({c["recording_path"] for c in calls}) == 16
    assert len({c["worker"] for c in calls}) == 4  # spread over every worker
    for call in calls:
        left, right, seconds = _channels(call["recording_path"])
        assert seconds > 4
        assert _rms(right) > 300 and _rms(left) > 100


def test_dtmf_by_sip_info_takes_the_support_branch(appliance, tmp_path: Path) -> None:
    result = run_sipp(caller_scenario(tmp_path, "2", method="info"), appliance.sip_port, tmp_path)
    assert result.successful == 1, result.output
    (call,) = appliance.wait_calls_closed(1)
    events = appliance.call(call["id"])["events"]
    assert {"digit": "2", "method": "info"} in [e["data"] for e in events if e["kind"] == "dtmf"]
    assert [e["data"]["step"] for e in events if e["kind"] == "step"][-2:] == ["support", "done"]
