"""A crash of the whole appliance mid-call: on restart the records are closed, the recordings play and
SIP is answered again (bench/faults.py measures how soon)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from tests.support.appliance import ROOT
from tests.support.audio import caller_heard
from tests.support.ports import free_port_block
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario, speaking_caller_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


def _callers(workdir: Path, port: int, scenario: Path, calls: int) -> subprocess.Popen[bytes]:
    """sipp placing `calls` calls that stay up, left running: stopped by its handle."""
    return subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-s", "100", f"127.0.0.1:{port}", "-i", "127.0.0.1",
         "-p", str(free_port_block(1)), "-mi", "127.0.0.1", "-mp", str(free_port_block(4)),
         "-m", str(calls), "-r", "10", "-l", str(calls), "-nostdin", "-timeout", "60s"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_of_the_appliance_then_restart(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=4)
    held = tmp_path / "held"
    held.mkdir()
    callers = _callers(held, app.sip_port, speaking_caller_scenario(held, 120), 12)
    try:
        live = app.wait_answered(12)
        time.sleep(3)
        assert app.child_pids()
        killed = dt.datetime.now(dt.UTC)
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait()
        # Workers, their fork server and the edge follow their parent (PR_SET_PDEATHSIG), freeing their ports.
        wait_until(lambda: not app.child_pids(), "the workers and the edge to exit", 10, interval=0.2)
        assert app.child_pids() == []

        app.start()
    finally:
        callers.kill()
        callers.wait()
    # The calls a crash left open are closed, and their recordings play as long as they lasted.
    for call in live:
        record = app.call(call["id"])
        assert record["end_reason"] == "appliance-restart"
        assert [e["kind"] for e in record["events"]][-1] == "closed"
        path = record["recording_path"]
        with wave.open(path) as w:
            assert w.getnchannels() == 2
            seconds = w.getnframes() / w.getframerate()
        assert float(subprocess.run(["soxi", "-D", path], capture_output=True, text=True, check=True).stdout) == \
            pytest.approx(seconds, abs=0.01)
        # Written every half second: at most that much is lost of the call until the kill.
        until_kill = (killed - dt.datetime.fromisoformat(record["answered_at"])).total_seconds()
        assert until_kill - 1 < seconds <= until_kill
        assert caller_heard(Path(path), 0.5, seconds - 0.5) > 0.9
    # SIP is answered again: a call runs its flow to the end.
    after = tmp_path / "after"
    after.mkdir()
    result = run_sipp(caller_scenario(after, "2"), app.sip_port, after)
    assert result.successful == 1, result.output
    (new,) = [c for c in app.wait_calls_closed(13) if c["id"] not in {c["id"] for c in live}]
    assert new["end_reason"] == "flow-hangup"


def test_restarted_at_once_while_the_killed_workers_still_hang_up_every_worker_takes_calls(
        appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=2)
    held = tmp_path / "held"
    held.mkdir()
    callers = _callers(held, app.sip_port, speaking_caller_scenario(held, 120), 8)
    try:
        app.wait_answered(8)
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait()
        # At once: the killed appliance's workers are still hanging up their calls, on the SIP ports
        # the new workers need; each new worker waits for its port rather than run without one.
        app.start()
    finally:
        callers.kill()
        callers.wait()
    after = tmp_path / "after"
    after.mkdir()
    result = run_sipp(caller_scenario(after, "2"), app.sip_port, after, calls=8, rate=20)
    assert result.successful == 8, result.output
    new = [c for c in app.wait_calls_closed(16) if c["end_reason"] != "appliance-restart"]
    assert len(new) == 8 and {c["worker"] for c in new} == {"w1", "w2"}
    assert all(c["end_reason"] == "flow-hangup" for c in new)


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
