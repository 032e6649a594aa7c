"""Retention: deletes the audio (recordings and voicemail) of calls that ended long enough ago.

The call records stay, marked as pruned, so the API can say the file was deleted on purpose.
Only ended calls are touched, and only files inside recordings_dir, so it is safe to run
beside a running appliance (which keeps writing live calls' files and records).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from appliance.core.errors import MaintenanceError
from appliance.observability.logging import log_extra
from appliance.storage import Storage
from appliance.storage.db import StoredAudio

__all__ = ["Pruned", "PruneReport", "prune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    audio: StoredAudio
    size: int  # bytes freed (0 if the file was already gone)
    missing: bool


@dataclass
class PruneReport:
    cutoff: str
    pruned: list[Pruned] = field(default_factory=list)
    # Recorded under another directory (recordings_dir changed since): never ours to delete.
    outside: list[StoredAudio] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pruned)

    @property
    def calls(self) -> int:
        return len({p.audio.call_id for p in self.pruned})


def prune(storage: Storage, recordings_dir: Path, older_than: dt.timedelta, now: dt.datetime,
          dry_run: bool = False) -> PruneReport:
    """Delete (or with `dry_run` only list) the audio of calls that ended before `now - older_than`."""
    if older_than <= dt.timedelta(0):
        raise MaintenanceError("--older-than must be more than 0 days")
    root = recordings_dir.resolve()
    cutoff = (now - older_than).astimezone(dt.UTC).isoformat(timespec="milliseconds")
    report = PruneReport(cutoff)
    for audio in storage.audio_of_calls_ended_before(cutoff):
        path = Path(audio.path).resolve()
        if root not in path.parents:
            report.outside.append(audio)
            continue
        try:
            size, missing = path.stat().st_size, False
        except FileNotFoundError:
            # Deleted by hand, or by a run stopped between the file and the mark: only the mark is left to do.
            size, missing = 0, True
        if not dry_run:
            # The file first, then the mark: a stop between them leaves a mark still to write, never a
            # record claiming a deletion that did not happen.
            path.unlink(missing_ok=True)
            storage.mark_pruned(audio)
            _remove_empty_parents(path.parent, root)
            log.info("recording pruned", extra=log_extra(call_id=audio.call_id, kind=audio.kind, bytes=size))
        report.pruned.append(Pruned(audio, size, missing))
    return report


def _remove_empty_parents(directory: Path, root: Path) -> None:
    """The YYYY/MM/DD directories a prune emptied; never `root` itself."""
    while directory != root and root in directory.parents:
        try:
            os.rmdir(directory)
        except OSError:  # not empty (or not ours): whatever is above is not empty either
            return
        directory = directory.parent
