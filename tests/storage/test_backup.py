"""`appliance backup DEST` as an admin (or a timer) runs it: a real database being written
to while the copy is made; the copy must be a whole, valid database."""

from __future__ import annotations

import re
import sqlite3
import stat
import threading
from pathlib import Path

from appliance.storage import Storage
from tests.support.cli import appliance

NAME = re.compile(r"^switchboard-\d{8}T\d{6}Z\.sqlite3$")


class Writer(threading.Thread):
    """Calls and their events written as the appliance writes them, until stopped."""

    def __init__(self, database: Path):
        super().__init__(daemon=True)
        self.database = database
        self.written = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        storage = Storage(self.database)  # its own connection, as the running appliance has
        try:
            while not self.stop.is_set():
                call_id = f"CA{self.written:010x}"
                storage.open_call(call_id, from_uri="sip:+15550100@127.0.0.1")
                for kind in ("offered", "answered", "step"):
                    storage.add_event(call_id, kind, {"n": self.written})
                storage.close_call(call_id, "caller-hangup")
                self.written += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            storage.close()


def _rows(path: Path) -> tuple[str, int, int]:
    with sqlite3.connect(path) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        return check, db.execute("SELECT count(*) FROM calls").fetchone()[0], \
            db.execute("SELECT count(*) FROM call_events").fetchone()[0]


def test_a_backup_taken_while_calls_are_written_is_a_valid_whole_database(tmp_path: Path) -> None:
    database = tmp_path / "data" / "switchboard.db"
    Storage(database).close()
    dest = tmp_path / "backups"
    dest.mkdir()
    writer = Writer(database)
    writer.start()
    try:
        while writer.written < 200 and writer.error is None:
            writer.stop.wait(0.01)
        before = writer.written
        result = appliance(tmp_path, "backup", str(dest))
        during = writer.written
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.error is None, writer.error
    assert during > before, "the writer kept writing while the backup ran"
    assert result.returncode == 0, result.stderr

    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == dest and NAME.match(path.name), result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.iterdir()) == [path.name], "no partial file or journal left"
    check, calls, events = _rows(path)
    assert check == "ok"
    # Every call written before the backup began is in it, and the copy is of one instant: only
    # the newest call may be caught between its own writes (each is committed on its own).
    assert before <= calls <= writer.written
    assert 3 * (calls - 1) <= events <= 3 * calls


def test_keep_removes_the_oldest_backups_beyond_n(tmp_path: Path) -> None:
    Storage(tmp_path / "data" / "switchboard.db").close()
    dest = tmp_path / "backups"
    dest.mkdir()
    made = Path(appliance(tmp_path, "backup", str(dest)).stdout.strip())
    older = [dest / f"switchboard-2025010{day}T000000Z.sqlite3" for day in (1, 2, 3)]
    for path in older:
        path.write_bytes(made.read_bytes())
    unrelated = dest / "notes.txt"
    unrelated.write_text("the admin's own file")

    made.unlink()  # a backup a second at most: make room for the next one's name
    result = appliance(tmp_path, "backup", str(dest), "--keep", "2")

    assert result.returncode == 0, result.stderr
    newest = Path(result.stdout.strip().splitlines()[-1])
    assert f"removed {older[0]}" in result.stdout and f"removed {older[1]}" in result.stdout
    assert sorted(dest.iterdir()) == sorted([older[2], newest, unrelated])


def test_bad_destinations_and_counts_are_one_line_errors(tmp_path: Path) -> None:
    Storage(tmp_path / "data" / "switchboard.db").close()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (("backup", str(tmp_path / "nowhere")), 1, "is not a directory"),
        (("backup", str(a_file)), 1, "is not a directory"),
        (("backup", str(tmp_path), "--keep", "0"), 2, "argument --keep: must be at least 1"),
        (("backup", str(tmp_path), "--keep", "two"), 2, "argument --keep: 'two' is not an integer"),
    ]
    for args, code, message in cases:
        result = appliance(tmp_path, *args)
        assert result.returncode == code, result
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_no_database_yet_is_a_clear_error(tmp_path: Path) -> None:
    result = appliance(tmp_path, "backup", str(tmp_path))
    assert result.returncode == 1
    assert "no database at" in result.stderr and "Traceback" not in result.stderr
