"""Call records in a real SQLite file: what the call log and the API later show."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.storage.db import CallRecord, Storage


@pytest.fixture
def storage(tmp_path: Path):
    storage = Storage(tmp_path / "data" / "switchboard.db")
    yield storage
    storage.close()


def test_database_file_is_created_with_wal(tmp_path: Path):
    path = tmp_path / "nested" / "dir" / "calls.db"
    storage = Storage(path)
    try:
        assert path.exists()
        assert storage.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        storage.close()


def test_open_answer_close_call(storage: Storage):
    storage.open_call("CA0001", trunk="main", from_uri="sip:alice@example.com", to_uri="sip:100@box", flow="default")
    call = storage.get_call("CA0001")
    assert call is not None
    assert (call.trunk, call.from_uri, call.flow) == ("main", "sip:alice@example.com", "default")
    assert call.started_at and call.answered_at is None and call.ended_at is None
    assert call.duration_s is None
    assert [c.id for c in storage.open_calls()] == ["CA0001"]

    storage.update_call("CA0001", answered_at="2026-01-01T10:00:00.000+00:00", flow_version="abc123")
    storage.close_call("CA0001", "caller-hangup")
    call = storage.get_call("CA0001")
    assert call.answered_at == "2026-01-01T10:00:00.000+00:00"
    assert call.flow_version == "abc123"
    assert call.end_reason == "caller-hangup"
    assert call.ended_at is not None
    assert storage.open_calls() == []


def test_record_survives_reopening_the_file(tmp_path: Path):
    path = tmp_path / "calls.db"
    first = Storage(path)
    first.open_call("CA0002", trunk="t")
    first.close_call("CA0002", "flow-hangup")
    first.close()
    # Read back with plain sqlite3: the record is really on disk, not only in a connection.
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT trunk, end_reason FROM calls WHERE id = 'CA0002'").fetchone()
    assert row == ("t", "flow-hangup")
    again = Storage(path)  # migrating an existing file keeps it
    try:
        assert again.get_call("CA0002").end_reason == "flow-hangup"
    finally:
        again.close()


def test_get_unknown_call_is_none(storage: Storage):
    assert storage.get_call("CAnope") is None


def test_close_call_keeps_the_first_reason(storage: Storage):
    storage.open_call("CA0003")
    storage.close_call("CA0003", "caller-hangup")
    first = storage.get_call("CA0003")
    storage.close_call("CA0003", "worker-lost")
    second = storage.get_call("CA0003")
    assert second.end_reason == "caller-hangup"
    assert second.ended_at == first.ended_at


def test_close_orphans_closes_open_calls_and_records_an_event(storage: Storage):
    storage.open_call("CAopen1")
    storage.open_call("CAopen2")
    storage.open_call("CAdone")
    storage.close_call("CAdone", "flow-hangup")

    orphans = storage.close_orphans("appliance-restart")

    assert sorted(c.id for c in orphans) == ["CAopen1", "CAopen2"]
    assert all(c.ended_at is None for c in orphans)  # as they were found, for recording repair
    for call_id in ("CAopen1", "CAopen2"):
        call = storage.get_call(call_id)
        assert call.end_reason == "appliance-restart" and call.ended_at
        events = list(storage.events(call_id))
        assert [(e["kind"], e["data"]) for e in events] == [("closed", {"reason": "appliance-restart"})]
    assert storage.get_call("CAdone").end_reason == "flow-hangup"
    assert list(storage.events("CAdone")) == []
    assert storage.open_calls() == []
    assert storage.close_orphans("again") == []


def test_events_round_trip_json_in_order(storage: Storage):
    storage.open_call("CA0004")
    payloads = [
        ("step", {"step": "welcome", "action": "say"}),
        ("say", {"text": "Grüß Gott – \"quoted\" ☎"}),
        ("variable", {"name": "pin", "nested": {"list": [1, 2.5, None, True]}}),
        ("note", None),
    ]
    for kind, data in payloads:
        storage.add_event("CA0004", kind, data)
    storage.add_event("CAother", "step", {"step": "x"})
    events = list(storage.events("CA0004"))
    assert [(e["kind"], e["data"]) for e in events] == [(k, d or {}) for k, d in payloads]
    assert all(e["at"] for e in events)


def test_recent_calls_newest_first_with_limit(storage: Storage):
    starts = ["2026-01-01T10:00:00.000+00:00", "2026-01-03T10:00:00.000+00:00", "2026-01-02T10:00:00.000+00:00"]
    for i, started in enumerate(starts):
        storage.open_call(f"CA000{i}", started_at=started)
    assert [c.id for c in storage.recent_calls()] == ["CA0001", "CA0002", "CA0000"]
    assert [c.id for c in storage.recent_calls(limit=2)] == ["CA0001", "CA0002"]


def _record(**fields) -> CallRecord:
    base = dict.fromkeys(CallRecord.__dataclass_fields__)
    return CallRecord(**(base | {"id": "CA1", "started_at": "2026-01-01T10:00:00.000+00:00"} | fields))


def test_duration_counts_from_answer_when_answered():
    call = _record(answered_at="2026-01-01T10:00:05.000+00:00", ended_at="2026-01-01T10:01:05.500+00:00")
    assert call.duration_s == 60.5


def test_duration_counts_from_start_when_never_answered():
    assert _record(ended_at="2026-01-01T10:00:02.250+00:00").duration_s == 2.25


def test_duration_is_none_while_open_and_never_negative():
    assert _record().duration_s is None
    record = _record(answered_at="2026-01-01T10:00:05.000+00:00", ended_at="2026-01-01T10:00:01.000+00:00")
    assert record.duration_s == 0.0


def test_duration_of_a_stored_call(storage: Storage):
    storage.open_call("CA0005", started_at="2026-01-01T10:00:00.000+00:00")
    storage.update_call("CA0005", ended_at="2026-01-01T10:00:30.000+00:00", end_reason="x")
    assert storage.get_call("CA0005").duration_s == 30.0
