"""`appliance recordings prune` on a real SQLite database and real WAV files: old ended calls
lose their audio and keep their records; calls in progress and recent ones are untouched."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from appliance.core.clock import utcnow
from appliance.recording.recorder import recording_path
from appliance.recording.voicemail import Voicemail
from appliance.recording.wavfile import WavWriter
from appliance.storage import Storage
from tests.support.cli import appliance

RATE = 16_000


def _iso(days_ago: float) -> str:
    return (utcnow() - dt.timedelta(days=days_ago)).isoformat(timespec="milliseconds")


def _recorded_call(storage: Storage, root: Path, call_id: str, ended_days_ago: float | None,
                   seconds: float = 1.0) -> Path:
    """A call as the appliance leaves it: its stereo recording, closed `ended_days_ago` (None: in progress)."""
    started = utcnow() - dt.timedelta(days=(ended_days_ago or 0) + 0.01)
    path = recording_path(root, call_id, started)
    writer = WavWriter(path, channels=2, rate=RATE, header_every_bytes=RATE * 4)
    writer.write(b"\x01\x00" * int(2 * RATE * seconds))
    writer.close()
    storage.open_call(call_id, started_at=started.isoformat(timespec="milliseconds"), recording_path=str(path))
    if ended_days_ago is not None:
        storage.update_call(call_id, ended_at=_iso(ended_days_ago), end_reason="caller-hangup")
    return path


def test_prune_deletes_old_audio_keeps_records_and_leaves_live_and_recent_calls(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data" / "switchboard.db")
    root = tmp_path / "rec"
    old = _recorded_call(storage, root, "CA00000001", ended_days_ago=40, seconds=2)
    message = Voicemail(storage, "CA00000001", root, "voicemail")
    message.push(b"\x02\x00" * RATE)
    message.finish()
    recent = _recorded_call(storage, root, "CA00000002", ended_days_ago=10)
    # Started long ago and still going: a call in progress is never pruned, however old.
    live = _recorded_call(storage, root, "CA00000003", ended_days_ago=None)
    storage.update_call("CA00000003", started_at=_iso(45))
    old_bytes = old.stat().st_size + message.path.stat().st_size

    dry = appliance(tmp_path, "recordings", "prune", "--older-than", "30", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 2 files of 1 calls" in dry.stdout and f"{old_bytes} bytes" in dry.stdout
    assert old.exists() and message.path.exists()

    done = appliance(tmp_path, "recordings", "prune", "--older-than", "30")
    assert done.returncode == 0, done.stderr
    assert f"removed {old}" in done.stdout and f"removed {message.path}" in done.stdout
    assert "removed 2 files of 1 calls" in done.stdout and f"{old_bytes} bytes" in done.stdout
    assert not old.exists() and not message.path.exists()
    assert not old.parent.exists(), "the emptied day directory goes too"
    assert recent.exists() and live.exists()

    call = storage.get_call("CA00000001")
    assert call is not None and call.recording_pruned_at and call.recording_path == str(old)
    assert call.end_reason == "caller-hangup", "the record itself stays"
    (voicemail,) = storage.recordings("CA00000001")
    assert voicemail["pruned_at"]
    assert storage.get_call("CA00000002").recording_pruned_at is None  # type: ignore[union-attr]
    assert storage.get_call("CA00000003").recording_pruned_at is None  # type: ignore[union-attr]

    again = appliance(tmp_path, "recordings", "prune", "--older-than", "30")
    assert again.returncode == 0 and "removed 0 files of 0 calls" in again.stdout


def test_a_file_already_gone_is_marked_pruned(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data" / "switchboard.db")
    path = _recorded_call(storage, tmp_path / "rec", "CA00000004", ended_days_ago=5)
    path.unlink()

    done = appliance(tmp_path, "recordings", "prune", "--older-than", "1")

    assert done.returncode == 0, done.stderr
    assert "(file already gone)" in done.stdout and "removed 1 files of 1 calls" in done.stdout
    assert storage.get_call("CA00000004").recording_pruned_at  # type: ignore[union-attr]


def test_audio_outside_the_recordings_dir_is_kept(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data" / "switchboard.db")
    elsewhere = _recorded_call(storage, tmp_path / "old-recordings", "CA00000005", ended_days_ago=50)

    done = appliance(tmp_path, "recordings", "prune", "--older-than", "30")

    assert done.returncode == 0, done.stderr
    assert f"kept {elsewhere}: outside recordings_dir" in done.stderr
    assert elsewhere.exists()
    assert storage.get_call("CA00000005").recording_pruned_at is None  # type: ignore[union-attr]


def test_bad_ages_are_one_line_errors(tmp_path: Path) -> None:
    for days in ("-3", "0", "soon"):
        result = appliance(tmp_path, "recordings", "prune", "--older-than", days)
        assert result.returncode == 2, result
        assert "argument --older-than" in result.stderr and "Traceback" not in result.stderr
    missing = appliance(tmp_path, "recordings", "prune")
    assert missing.returncode == 2 and "--older-than" in missing.stderr
