"""The service's files are its own: database, recordings and secrets unreadable to other users
of the box, and secrets kept out of the environments of the processes it starts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance.config import Config
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario

pytestmark = pytest.mark.sip


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_and_recordings_are_private_even_when_started_with_umask_0(appliance_factory, tmp_path: Path) -> None:
    # An older version left these open: directories 0755 and a database 0644.
    root = tmp_path / "appliance0"
    (root / "data").mkdir(parents=True, mode=0o755)
    (root / "data").chmod(0o755)
    old_db = root / "data" / "switchboard.db"
    old_db.touch()
    old_db.chmod(0o644)
    (root / "recordings").mkdir(mode=0o777)
    (root / "recordings").chmod(0o777)

    app = appliance_factory(umask=0)
    assert app.root == root
    result = run_sipp(caller_scenario(tmp_path, "1"), app.sip_port, tmp_path)
    assert result.successful == 1, result.output
    (call,) = app.wait_calls_closed(1)

    assert _mode(app.data_dir) == 0o750
    assert _mode(app.recordings_dir) == 0o750
    for path in app.data_dir.glob("switchboard.db*"):
        assert _mode(path) & 0o027 == 0, (path, oct(_mode(path)))
    recording = Path(call["recording_path"])
    assert recording.is_file()
    assert _mode(recording) & 0o027 == 0, oct(_mode(recording))
    # The YYYY/MM/DD directories the recorder made, too.
    for directory in recording.relative_to(app.recordings_dir).parents:
        if directory != Path("."):
            assert _mode(app.recordings_dir / directory) & 0o027 == 0, directory
    for path in (app.data_dir / "edge").iterdir():
        assert _mode(path) & 0o027 == 0, (path, oct(_mode(path)))

    # Logs can be shared: the caller's number is in them only as a redacted PII field.
    log = app.log_path.read_text()
    assert "+15550100" not in log and "[redacted]" in log


def test_no_child_process_inherits_the_api_secret(appliance) -> None:
    children = appliance.child_pids()
    assert len(children) >= appliance.workers + 1  # the workers and Kamailio at least
    secret = appliance.secret.encode()
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        assert b"SWITCHBOARD_API_SECRET=" not in environ, pid
        assert secret not in environ, pid


def test_a_generated_secret_is_0600_from_its_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(data_dir=tmp_path / "data")
    monkeypatch.delenv(config.auth.api_secret_env, raising=False)
    old = os.umask(0)
    try:
        secret = config.api_secret()
    finally:
        os.umask(old)
    path = tmp_path / "data" / "api_secret"
    assert _mode(path) == 0o600
    assert len(secret) >= 32 and config.api_secret() == secret
