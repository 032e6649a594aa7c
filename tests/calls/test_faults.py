"""Bad input and faults on the call path: refused calls, malformed SIP, a broken flow, a lost worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import wave
from pathlib import Path

import pytest

from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.held_call import WAIT_S, hold_flows, live_call
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario, refused_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


def test_source_no_trunk_allows_gets_403(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(trunk_sources=["10.99.0.0/16"])
    result = run_sipp(refused_scenario(tmp_path, 403), app.sip_port, tmp_path)
    assert result.successful == 1, result.output
    assert app.calls() == []


def test_unknown_number_gets_404(appliance, tmp_path: Path) -> None:
    result = run_sipp(refused_scenario(tmp_path, 404), appliance.sip_port, tmp_path, service="999")
    assert result.successful == 1, result.output
    assert appliance.calls() == []


def test_all_workers_full_gets_503_with_retry_after(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=1, calls_per_worker=2)
    holders = tmp_path / "holders"
    holders.mkdir()
    held = threading.Thread(
        target=run_sipp,
        args=(caller_scenario(holders, None, wait_ms=1000, bye_timeout_ms=30000), app.sip_port, holders),
        kwargs={"calls": 2, "rate": 10},
    )
    held.start()
    try:
        wait_until(lambda: len(app.calls()) >= 2, "two calls held", 10, interval=0.2)
        assert len(app.calls()) == 2
        result = run_sipp(refused_scenario(tmp_path, 503, r"Retry-After: *[0-9]+"), app.sip_port, tmp_path)
        assert result.successful == 1, result.output
    finally:
        held.join(60)
    assert len(app.calls()) == 2


def test_malformed_sip_does_not_stop_the_next_call(appliance, tmp_path: Path) -> None:
    garbage = [
        os.urandom(700),
        b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\nFrom: <sip:a@b>",
        b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nX-Huge: " + b"a" * 60000 + b"\r\n\r\n",
        b"\x00\xff" * 300,
        b"SIP/2.0 200 OK\r\n\r\n",
    ]
    worker_port = appliance.worker_base
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for payload in garbage:
            for port in (appliance.sip_port, worker_port):
                s.sendto(payload, ("127.0.0.1", port))
    time.sleep(0.5)
    assert appliance.process.poll() is None
    assert appliance.health()["workers_up"] == 2
    result = run_sipp(caller_scenario(tmp_path, "2"), appliance.sip_port, tmp_path)
    assert result.successful == 1, result.output
    (call,) = appliance.wait_calls_closed(1)
    assert call["end_reason"] == "flow-hangup"


def test_broken_flow_refuses_to_start_naming_file_and_line(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "default.yaml").write_text((ROOT / "flows" / "default.yaml").read_text())
    (flows / "broken.yaml").write_text("name: broken\nentry: start\nsteps:\n  start:\n    say: hi\n    next: nowhere\n")
    app = ApplianceProcess(tmp_path, flows_dir=flows)
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(app.config_path), "run"],
        cwd=ROOT, env=app.env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert f"{flows / 'broken.yaml'}:6:11: step 'nowhere' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_killed_worker_is_restarted_and_its_calls_closed(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=2)
    callers = threading.Thread(
        target=run_sipp,
        args=(caller_scenario(tmp_path, None, wait_ms=1000, bye_timeout_ms=40000), app.sip_port, tmp_path),
        kwargs={"calls": 4, "rate": 10, "timeout": 60},
    )
    callers.start()
    try:
        wait_until(lambda: len([c for c in app.calls() if c["answered_at"]]) >= 4, "four answered calls", 10,
                   interval=0.2)
        time.sleep(3)  # some seconds of recording
        old_pid = app.worker_pid("w1")
        os.kill(old_pid, signal.SIGKILL)

        lost: list[dict] = wait_until(lambda: [c for c in app.calls() if c["end_reason"] == "worker-lost"],
                                      "calls closed as worker-lost", 15, interval=0.2)
        assert lost and {c["worker"] for c in lost} == {"w1"}
        on_w2 = [c for c in app.calls() if c["worker"] == "w2"]
        assert on_w2 and all(c["ended_at"] is None for c in on_w2)  # other calls go on
        for call in lost:
            with wave.open(call["recording_path"]) as w:
                assert w.getnchannels() == 2 and w.getnframes() / w.getframerate() > 2.5

        wait_until(lambda: app.health()["workers_up"] >= 2, "both workers up", 15, interval=0.2)
        assert app.worker_pid("w1") != old_pid
        assert app.get("/healthz", auth=False)["workers_up"] == 2
        text = app.get("/metrics").decode()
        assert 'switchboard_worker_restarts_total{role="sip"} 1.0' in text
        assert 'switchboard_workers_up{role="sip"} 2.0' in text
    finally:
        callers.join(90)
    # The calls on the surviving worker ran their flow to its end.
    for call in app.wait_calls_closed(4, timeout=40):
        if call["worker"] == "w2":
            assert call["end_reason"] == "flow-hangup"


def test_a_second_run_on_the_same_data_dir_refuses_and_the_first_goes_on(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=2, flows_dir=hold_flows(tmp_path / "flows"), numbers={"100": "hold"})
    hub_socket = app.data_dir / "hub.sock"
    with live_call(app, tmp_path / "live") as live:
        socket_before = os.stat(hub_socket)
        # As an admin starting one by hand while systemd runs the box: same config, same data dir.
        second = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(app.config_path), "run"],
                                cwd=ROOT, env=app.env, capture_output=True, text=True, timeout=WAIT_S)
        assert second.returncode == 1
        assert second.stderr == (f"appliance: another appliance (pid {app.process.pid}) is running on data_dir "
                                 f"{app.data_dir}; not starting a second one\n")

        # It touched nothing of the first's: the call is live, the hub listens on the same socket.
        assert app.call(live.id)["ended_at"] is None
        assert os.stat(hub_socket).st_ino == socket_before.st_ino
        # So a worker the first restarts finds its hub again (the other worker, not the call's).
        idle = "w2" if live.record["worker"] == "w1" else "w1"
        old_pid = app.worker_pid(idle)
        os.kill(old_pid, signal.SIGKILL)

        def rejoined() -> bool:
            try:
                restarted = app.worker_pid(idle) != old_pid
            except LookupError:
                return False  # between the kill and the restart
            return restarted and app.health()["ok"]

        wait_until(rejoined, "the worker to rejoin", WAIT_S, interval=0.2, detail=app.log_tail)
        text = app.get("/metrics").decode()
        assert 'switchboard_worker_restarts_total{role="sip"} 1.0' in text
        assert 'switchboard_workers_up{role="sip"} 2.0' in text
        assert app.call(live.id)["ended_at"] is None
    (result,) = live.results
    assert result.successful == 1, result.output
    assert app.call(live.id)["end_reason"] == "caller-hangup"


def _healthz_503(app: ApplianceProcess) -> dict:
    """/healthz's body, having checked that it answered 503."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        app.get("/healthz", auth=False)
    assert refused.value.code == 503
    return json.loads(refused.value.read())


def _bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False  # the killed worker's socket is not closed yet
    return True


def test_healthz_is_503_naming_the_role_while_a_worker_is_missing(appliance_factory) -> None:
    app = appliance_factory(workers=2)
    health = app.get("/healthz", auth=False)  # 200
    assert health["ok"] and health["short"] == [] and health["edge_running"]
    assert health["roles"] == {"sip": {"expected": 2, "up": 2}, "agent": {"expected": 1, "up": 1}}

    old_pid = app.worker_pid("w1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        os.kill(old_pid, signal.SIGKILL)
        # Another process takes w1's SIP port, so w1 cannot start again until the block ends.
        wait_until(lambda: _bind(squatter, app.worker_base), "w1's SIP port to be free", WAIT_S, interval=0.01)
        wait_until(lambda: app.health()["short"], "the hub to see w1 gone", WAIT_S, interval=0.1)
        health = _healthz_503(app)
        assert health["ok"] is False and health["short"] == ["sip"]
        assert health["roles"]["sip"] == {"expected": 2, "up": 1}
        # The supervisor keeps trying: w1 is missing, not given up on.
        wait_until(lambda: "process exited; restarting" in app.log_path.read_text(), "a failed restart", WAIT_S)
        assert _healthz_503(app)["short"] == ["sip"]

    wait_until(lambda: app.health()["ok"], "w1 back", WAIT_S, interval=0.2, detail=app.log_tail)
    health = app.get("/healthz", auth=False)  # 200 again
    assert health["short"] == [] and health["roles"]["sip"] == {"expected": 2, "up": 2}

    # The SIP edge is the appliance's too: without it no call comes in, whatever the workers.
    (edge,) = [pid for pid in app.child_pids() if _parent(pid) == app.process.pid and b"kamailio" in _cmdline(pid)]
    os.kill(edge, signal.SIGKILL)
    wait_until(lambda: not app.health()["edge_running"], "the appliance to see its edge gone", WAIT_S)
    health = _healthz_503(app)
    assert health["ok"] is False and health["short"] == [] and health["edge_running"] is False


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
