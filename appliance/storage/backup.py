"""Backups of the database: a consistent copy made with SQLite's online backup API while the
appliance keeps writing, checked, private (0600), and named by its UTC time so that names sort
by age; older ones beyond a count are removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from appliance.core.errors import MaintenanceError

__all__ = ["Backup", "backup"]

PREFIX = "switchboard-"
SUFFIX = ".sqlite3"
NAME = re.compile(r"^switchboard-\d{8}T\d{6}Z\.sqlite3$")
# The appliance holds short write locks; a copy waits this long for one to end rather than fail.
BUSY_TIMEOUT_S = 30.0


@dataclass
class Backup:
    path: Path
    removed: list[Path] = field(default_factory=list)


def backup(database: Path, dest: Path, now: dt.datetime, keep: int | None = None) -> Backup:
    """Copy `database` into the directory `dest`; then, with `keep`, delete all but the newest `keep` backups."""
    if keep is not None and keep < 1:
        raise MaintenanceError("--keep must be at least 1 (the backup just made)")
    if not database.is_file():
        raise MaintenanceError(f"no database at {database}")
    if not dest.is_dir():
        raise MaintenanceError(f"backup destination {dest} is not a directory")
    path = dest / f"{PREFIX}{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}{SUFFIX}"
    partial = dest / f".{path.name}.partial"
    try:
        # Made 0600 before a byte is in it: it holds every call record and the console's password hashes.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        _copy(database, partial)
        if path.exists():
            raise MaintenanceError(f"{path} already exists (one backup a second at most)")
        os.replace(partial, path)
    except OSError as exc:
        raise MaintenanceError(f"cannot write the backup in {dest}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    result = Backup(path)
    if keep is not None:
        backups = sorted(p for p in dest.iterdir() if NAME.match(p.name))
        for old in backups[:-keep]:
            old.unlink()
            result.removed.append(old)
    return result


def _copy(database: Path, target: Path) -> None:
    # Not mode=ro: a read-only connection to a WAL database fails when its -shm is not there yet.
    # Nothing is written through it; the backup holds only a read transaction.
    source = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S)
    copy = sqlite3.connect(target)
    try:
        # All pages in one step: one read transaction, so the copy is the database at one instant,
        # while WAL lets the appliance go on writing beside it.
        source.backup(copy)
        # A single self-contained file: no -wal or -shm beside it to lose when it is moved.
        copy.execute("PRAGMA journal_mode=DELETE")
        verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise MaintenanceError(f"the copy of {database} failed its check: {verdict}")
    except sqlite3.Error as exc:
        raise MaintenanceError(f"cannot copy {database}: {exc}") from None
    finally:
        copy.close()
        source.close()
