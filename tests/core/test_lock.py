"""The data directory's lock: one holder at a time, named in the refusal, and nothing stale after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.core.errors import AlreadyRunningError
from appliance.core.lock import LOCK_FILE, DataDirLock

ROOT = Path(__file__).resolve().parents[2]


def _holder(data_dir: Path, then: str = "import time; time.sleep(60)") -> subprocess.Popen[str]:
    """Another process that takes the lock, says so on stdout, then runs `then`."""
    code = (f"from pathlib import Path; from appliance.core.lock import DataDirLock; "
            f"lock = DataDirLock.acquire(Path({str(data_dir)!r})); print('locked', flush=True); {then}")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "locked\n"
    return process


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = _holder(data)
    try:
        with pytest.raises(AlreadyRunningError) as refused:
            DataDirLock.acquire(data)
        assert str(refused.value) == (f"another appliance (pid {holder.pid}) is running on data_dir {data}; "
                                      "not starting a second one")
        assert (data / LOCK_FILE).read_text() == f"{holder.pid}\n"  # the loser wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_killed_by_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = _holder(data)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = DataDirLock.acquire(data)
    assert lock.path.read_text() == f"{os.getpid()}\n"


def test_a_child_the_holder_left_behind_does_not_keep_the_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # The child is given every descriptor the holder has (close_fds=False); the holder then dies.
    holder = _holder(data, "import os, subprocess; child = subprocess.Popen(['sleep', '60'], close_fds=False); "
                           "print(child.pid, flush=True); os._exit(0)")
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    holder.wait()
    try:
        assert DataDirLock.acquire(data).path.read_text() == f"{os.getpid()}\n"
    finally:
        os.kill(child, signal.SIGKILL)
