"""Bad input and faults on the call path: refused calls, malformed SIP, a broken flow, a lost worker,
a killed SIP edge, a full recordings disk, a database another process keeps locked."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import wave
from pathlib import Path

import pytest

from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.audio import caller_heard
from tests.support.disk import fill, small_filesystem
from tests.support.held_call import WAIT_S, hold_flows, live_call
from tests.support.sipp.process import SippResult, options_status, run_sipp
from tests.support.sipp.scenarios import caller_scenario, refused_scenario, speaking_caller_scenario
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


def _edge_answers(app: ApplianceProcess) -> bool:
    try:
        return options_status(app.sip_port).startswith("SIP/2.0 200")
    except OSError:  # no answer within the probe's timeout: down, or still starting
        return False


def test_killed_sip_edge_is_restarted_and_calls_keep_media_and_end_by_bye(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=2)
    talkers = tmp_path / "talkers"
    talkers.mkdir()
    result: dict[str, SippResult] = {}
    # Four callers that speak for 12 s, then hang up with a BYE along the edge's Record-Route.
    callers = threading.Thread(target=lambda: result.setdefault("sipp", run_sipp(
        speaking_caller_scenario(talkers, 12), app.sip_port, talkers, calls=4, rate=10, timeout=60)))
    callers.start()
    try:
        answered = app.wait_answered(4)
        time.sleep(2)
        pid_file = app.data_dir / "edge" / "kamailio.pid"
        old_pid = int(pid_file.read_text())
        killed_at = dt.datetime.now(dt.UTC)
        os.kill(old_pid, signal.SIGKILL)

        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() not in ("", str(old_pid))
                   and _edge_answers(app), "the edge to answer again", 15, interval=0.2, detail=app.log_tail)
        # A new call goes through the restarted edge to a worker and runs its flow.
        newcomer = tmp_path / "newcomer"
        newcomer.mkdir()
        fresh = run_sipp(caller_scenario(newcomer, "2"), app.sip_port, newcomer)
        assert fresh.successful == 1, fresh.output
    finally:
        callers.join(60)
    # The old calls' BYEs passed the new edge (same route signature) and reached their workers.
    assert result["sipp"].successful == 4, result["sipp"].output
    calls = {c["id"]: c for c in app.wait_calls_closed(5)}
    for call in answered:
        record = calls[call["id"]]
        assert record["end_reason"] == "caller-hangup"
        # The caller's RTP went on arriving at the worker while the edge was down and after.
        offset = (killed_at - dt.datetime.fromisoformat(record["answered_at"])).total_seconds()
        assert caller_heard(Path(record["recording_path"]), offset, offset + 4) > 0.9
    assert app.metric("switchboard_sip_edge_restarts_total") == 1


def test_full_recordings_disk_costs_recordings_silence_not_calls(appliance_factory, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small-disk", "2m") as disk:
        app = appliance_factory(extra={"recordings_dir": str(disk)})
        filler = disk / "filler"
        fill(filler)
        result: dict[str, SippResult] = {}
        callers = threading.Thread(target=lambda: result.setdefault("sipp", run_sipp(
            speaking_caller_scenario(tmp_path, 9), app.sip_port, tmp_path, calls=2, rate=10, timeout=60)))
        callers.start()
        try:
            app.wait_answered(2)
            time.sleep(3)
            assert app.metric("switchboard_recording_errors_total") > 0
            filler.unlink()  # space again
            freed_at = dt.datetime.now(dt.UTC)
        finally:
            callers.join(60)
        assert result["sipp"].successful == 2, result["sipp"].output  # the calls went on to the callers' BYEs
        assert app.process.poll() is None
        calls = app.wait_calls_closed(2)
        for call in calls:
            assert call["end_reason"] == "caller-hangup"
            path = Path(call["recording_path"])
            with wave.open(str(path)) as w:  # playable, as long as the call
                length = w.getnframes() / w.getframerate()
            answered = dt.datetime.fromisoformat(call["answered_at"])
            assert abs(length - (dt.datetime.fromisoformat(call["ended_at"]) - answered).total_seconds()) < 0.5
            freed = (freed_at - answered).total_seconds()
            assert caller_heard(path, 0, freed - 0.5) == 0.0  # the disk was full: silence
            assert caller_heard(path, freed + 1, length - 0.5) > 0.9  # the recording resumed
        log = app.log_path.read_text()
        # Once per call when writing failed, once when it worked again: not every half second.
        assert log.count("recording write failed") == 2 and log.count("recording writes again") == 2
        assert "Traceback" not in log
        app.stop()


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN"], ids=["writer", "reader"])
def test_calls_during_a_long_database_lock_keep_their_audio_and_every_record(appliance_factory, tmp_path: Path,
                                                                              lock: str) -> None:
    app = appliance_factory(workers=2)
    holder = sqlite3.connect(app.data_dir / "switchboard.db", isolation_level=None)
    holder.execute(lock)
    holder.execute("SELECT count(*) FROM calls").fetchall()  # a reader's snapshot, or a writer's lock
    locked_at = dt.datetime.now(dt.UTC)
    result: dict[str, SippResult] = {}
    callers = threading.Thread(target=lambda: result.setdefault("sipp", run_sipp(
        speaking_caller_scenario(tmp_path, 6), app.sip_port, tmp_path, calls=4, rate=4, timeout=60)))
    callers.start()
    try:
        time.sleep(8)  # the calls come, speak and hang up while the lock is held
    finally:
        holder.execute("COMMIT")
        holder.close()
        callers.join(60)
    assert result["sipp"].successful == 4, result["sipp"].output
    assert app.process.poll() is None
    calls = app.wait_calls_closed(4)
    assert len(calls) == 4
    for call in calls:
        assert call["end_reason"] == "caller-hangup"
        kinds = [e["kind"] for e in app.call(call["id"])["events"]]
        assert kinds[:2] == ["offered", "answered"] and kinds[-2:] == ["rtp", "ended"] and "say" in kinds
        # The caller was heard all along: no write held the hub's media clock.
        answered = dt.datetime.fromisoformat(call["answered_at"])
        assert answered > locked_at
        assert caller_heard(Path(call["recording_path"]), 0.5, 5.5) > 0.9
    log = app.log_path.read_text()
    assert "Traceback" not in log and "hub clock stalled" not in log
    if lock == "BEGIN IMMEDIATE":
        assert app.metric("switchboard_db_writes_deferred_total") > 0
        assert "database writes caught up" in log
    assert app.metric("switchboard_db_writes_pending") == 0


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

    # The SIP edge is the appliance's too: without it no call comes in, whatever the workers. The
    # appliance starts it again at once, so a squatter on its port keeps the new one from starting.
    (edge,) = [pid for pid in app.child_pids() if _parent(pid) == app.process.pid and b"kamailio" in _cmdline(pid)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        os.kill(edge, signal.SIGKILL)
        wait_until(lambda: _bind(squatter, app.sip_port), "the edge's port to be free", WAIT_S, interval=0.001)
        wait_until(lambda: not app.health()["edge_running"], "the appliance to see its edge gone", WAIT_S)
        health = _healthz_503(app)
        assert health["ok"] is False and health["short"] == [] and health["edge_running"] is False
    # Its next start, after the back-off of a start that failed, finds the port free.
    wait_until(lambda: app.health()["ok"], "the edge back", 15, interval=0.2, detail=app.log_tail)
    assert app.metric("switchboard_sip_edge_restarts_total") == 1


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
