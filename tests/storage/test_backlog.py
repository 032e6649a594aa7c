"""Another process holding the database's write lock: the appliance's writes wait, in order, and none is lost."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.storage.db import Storage, StoredAudio
from tests.support.wait import wait_until_async


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process would) holding the write lock until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.execute("COMMIT")
        other.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "switchboard.db"


async def test_writes_held_back_by_a_lock_wait_in_order_and_are_all_written(path: Path) -> None:
    deferred: list[int] = []
    storage = Storage(path, defer_when_locked=True, on_deferred=lambda: deferred.append(1))
    seen: list[str] = []
    storage.observers.append(lambda call_id, what, data: seen.append(what))
    try:
        with write_lock(path):
            storage.open_call("CA1", flow="default")
            storage.add_event("CA1", "offered")
            storage.update_call("CA1", answered_at="2026-01-01T10:00:00.000+00:00")
            storage.add_event("CA1", "answered")
            storage.add_transcript("CA1", "caller", "caller", "hello")
            first = storage.add_recording("CA1", "voicemail", "/rec/CA1-voicemail.wav", 3.0)
            second = storage.add_recording("CA1", "voicemail", "/rec/CA1-voicemail-2.wav", 1.0)
            storage.audio_moved(StoredAudio("CA1", "voicemail", "/rec/CA1-voicemail.wav", first, ""),
                                "/rec/CA1-voicemail.ogg", 3.0, "ogg_opus")
            storage.add_agent_event("alice", "available")
            storage.close_call("CA1", "caller-hangup")
            storage.add_event("CA1", "ended", {"reason": "caller-hangup"})
            # Nothing raised and nothing is readable yet: every write waits behind the first.
            assert storage.pending_writes == len(deferred) == 11
            assert storage.get_call("CA1") is None
            # Observers hear of each change as it happens, not when it reaches the disk.
            assert seen == ["opened", "offered", "answered", "recording:voicemail", "recording:voicemail",
                            "converted:voicemail", "ended"]
        await wait_until_async(lambda: storage.pending_writes == 0, "the backlog written", 5)
        call = storage.get_call("CA1")
        assert call is not None and call.end_reason == "caller-hangup" and call.answered_at
        assert [e["kind"] for e in storage.events("CA1")] == ["offered", "answered", "ended"]
        assert [t["text"] for t in storage.transcripts("CA1")] == ["hello"]
        assert [(r["id"], r["path"]) for r in storage.recordings("CA1")] == [
            (first, "/rec/CA1-voicemail.ogg"), (second, "/rec/CA1-voicemail-2.wav")]
        assert [e.state for e in storage.agent_events("alice")] == ["available"]
    finally:
        storage.close()


async def test_writes_go_straight_to_disk_while_a_reader_holds_a_long_transaction(path: Path) -> None:
    storage = Storage(path, defer_when_locked=True)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM calls").fetchall()
        storage.open_call("CA2", flow="default")
        storage.add_event("CA2", "offered")
        assert storage.pending_writes == 0  # WAL: a reader never holds the writer back
        assert [e["kind"] for e in storage.events("CA2")] == ["offered"]
        assert reader.execute("SELECT count(*) FROM calls").fetchone()[0] == 0  # its snapshot, as of its BEGIN
    finally:
        reader.close()
        storage.close()


async def test_a_write_that_fails_for_another_reason_still_raises(path: Path) -> None:
    storage = Storage(path, defer_when_locked=True)
    try:
        storage.open_call("CA3", flow="default")
        with pytest.raises(sqlite3.IntegrityError):
            storage.open_call("CA3", flow="default")
        assert storage.pending_writes == 0
    finally:
        storage.close()


async def test_close_writes_what_still_waits(path: Path) -> None:
    storage = Storage(path, defer_when_locked=True)
    with write_lock(path):
        storage.open_call("CA4", flow="default")
        assert storage.pending_writes == 1
    storage.close()  # before any retry: close writes it, the lock being gone
    reopened = Storage(path)
    try:
        assert reopened.get_call("CA4") is not None
    finally:
        reopened.close()


def test_without_the_backlog_a_write_waits_for_the_lock_as_sqlite_does(path: Path) -> None:
    storage = Storage(path)  # the command-line tools: no event loop to keep going
    try:
        storage.db.execute("PRAGMA busy_timeout = 100")
        with write_lock(path), pytest.raises(sqlite3.OperationalError, match="locked"):
            storage.open_call("CA5", flow="default")
        storage.open_call("CA5", flow="default")
        assert storage.get_call("CA5") is not None
    finally:
        storage.close()
