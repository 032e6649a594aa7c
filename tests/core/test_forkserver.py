"""The fork server with real processes: workers forked from one that imported their code, and their exits."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from appliance.core.forkserver import ForkServer
from tests.support.wait import wait_until_async

WORKER = "tests.support.forked"


def _said(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}


async def test_workers_run_as_python_m_with_their_args_env_and_name(tmp_path: Path) -> None:
    forks = ForkServer(WORKER, [str(tmp_path / "one")])
    try:
        first = await forks.spawn("sb-first", ["exit", "3"], {"FORKED_TEST": "a"})
        assert await first.wait() == 3 and first.returncode == 3
        said = _said(tmp_path / "one")
        assert said["argv"] == [str(tmp_path / "one"), "exit", "3"] and said["env"] == "a"
        assert said["comm"] == "sb-first" and said["main"] == "__main__" and said["pid"] == first.pid
        assert said["ppid"] != os.getpid()  # the server's child, not ours
        second = await forks.spawn("sb-second", ["exit", "0"], {"FORKED_TEST": "b"})
        assert await second.wait() == 0
        assert _said(tmp_path / "one")["env"] == "b" and _said(tmp_path / "one")["ppid"] == said["ppid"]
    finally:
        await forks.stop()


async def test_a_signalled_worker_reports_the_signal(tmp_path: Path) -> None:
    forks = ForkServer(WORKER, [str(tmp_path / "out"), "wait"])
    try:
        worker = await forks.spawn("sb-waiting", [], {})
        await wait_until_async(lambda: _said(tmp_path / "out"), "the worker to start", 10)
        worker.send_signal(signal.SIGTERM)
        assert await worker.wait() == -signal.SIGTERM
        worker.send_signal(signal.SIGTERM)  # after its exit: nothing, no error
    finally:
        await forks.stop()


async def test_workers_die_with_their_server_and_a_new_one_is_started(tmp_path: Path) -> None:
    forks = ForkServer(WORKER, [str(tmp_path / "out"), "wait"])
    try:
        worker = await forks.spawn("sb-orphan", [], {})
        await wait_until_async(lambda: _said(tmp_path / "out"), "the worker to start", 10)
        server = _said(tmp_path / "out")["ppid"]
        os.kill(server, signal.SIGKILL)
        assert await worker.wait() == -signal.SIGTERM
        assert not Path(f"/proc/{worker.pid}").exists() or "Z" in Path(f"/proc/{worker.pid}/stat").read_text()
        (tmp_path / "out").unlink()
        again = await forks.spawn("sb-again", [], {})
        await wait_until_async(lambda: _said(tmp_path / "out"), "the new worker to start", 10)
        assert _said(tmp_path / "out")["ppid"] != server
        again.kill()
        assert await again.wait() == -signal.SIGKILL
    finally:
        await forks.stop()


async def test_stopping_the_server_stops_its_workers(tmp_path: Path) -> None:
    forks = ForkServer(WORKER, [str(tmp_path / "out"), "wait"])
    worker = await forks.spawn("sb-left", [], {})
    await wait_until_async(lambda: _said(tmp_path / "out"), "the worker to start", 10)
    await forks.stop()
    assert await worker.wait() == -signal.SIGTERM
