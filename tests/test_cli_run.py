"""`appliance run` as an admin starts it: a second one on the same data directory refuses at once."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.core.lock import LOCK_FILE, DataDirLock
from tests.support.cli import appliance


def test_run_refuses_a_locked_data_dir_and_touches_nothing_in_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    DataDirLock.acquire(data)  # held by this test's process, as a running appliance holds it
    run = appliance(tmp_path, "run")
    assert run.returncode == 1
    assert run.stderr == (f"appliance: another appliance (pid {os.getpid()}) is running on data_dir {data}; "
                          "not starting a second one\n")
    # No database, hub socket, secret, certificate or edge config: the lock comes before all of them.
    assert [p.name for p in data.iterdir()] == [LOCK_FILE]
    assert not (tmp_path / "rec").exists()
