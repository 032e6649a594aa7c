"""A crash of the whole appliance mid-call: on restart the record is closed and the recording plays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import pytest

from tests.support.appliance import ROOT
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


def test_kill_9_of_the_appliance_then_restart(appliance, tmp_path: Path) -> None:
    caller = threading.Thread(
        target=run_sipp,
        args=(caller_scenario(tmp_path, None, wait_ms=1000, bye_timeout_ms=20000), appliance.sip_port, tmp_path),
        kwargs={"calls": 1, "timeout": 40},
    )
    caller.start()
    try:
        wait_until(lambda: [c for c in appliance.calls() if c["answered_at"]], "the call to be answered", 10,
                   interval=0.2)
        time.sleep(3)
        children = appliance.child_pids()
        assert children
        os.kill(appliance.process.pid, signal.SIGKILL)
        appliance.process.wait()
        # Workers and the edge follow their parent (PR_SET_PDEATHSIG), freeing their ports.
        wait_until(lambda: not appliance.child_pids(), "the workers and the edge to exit", 10, interval=0.2)
        assert appliance.child_pids() == []

        appliance.start()
        (call,) = appliance.calls()
        assert call["end_reason"] == "appliance-restart"
        with wave.open(call["recording_path"]) as w:
            assert w.getnchannels() == 2 and w.getnframes() / w.getframerate() > 2.0
        kinds = [e["kind"] for e in appliance.call(call["id"])["events"]]
        assert kinds[-1] == "closed"
    finally:
        caller.join(60)


def test_appliance_calls_lists_recent_calls(appliance, tmp_path: Path) -> None:
    result = run_sipp(caller_scenario(tmp_path, "1"), appliance.sip_port, tmp_path)
    assert result.successful == 1, result.output
    (call,) = appliance.wait_calls_closed(1)
    listing = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(appliance.config_path), "calls"],
        cwd=ROOT, env=appliance.env, capture_output=True, text=True, timeout=30,
    )
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()[:2]
    assert header.split()[:4] == ["id", "from", "to", "start"]
    assert row.startswith(call["id"])
    assert "flow-hangup" in row and call["recording_path"] in row
    assert "sip:+15550100" in row


def test_metrics_count_calls_and_responses(appliance, tmp_path: Path) -> None:
    run_sipp(caller_scenario(tmp_path, "1"), appliance.sip_port, tmp_path)
    appliance.wait_calls_closed(1)
    text = appliance.get("/metrics").decode()
    assert 'switchboard_calls_total{outcome="flow-hangup"} 1.0' in text
    assert "switchboard_calls_active 0.0" in text
    assert 'switchboard_sip_responses_total{code="200"} 1.0' in text
    assert 'switchboard_workers_up{role="sip"} 2.0' in text
    recorded = [line for line in text.splitlines() if line.startswith("switchboard_recordings_bytes_total ")]
    assert recorded and float(recorded[0].split()[1]) > 100_000
