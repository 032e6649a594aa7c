"""The users and agent_events tables in a real SQLite file: accounts and operator state history."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from appliance.core.errors import AccountError
from appliance.storage.db import AgentEvent, Storage


@pytest.fixture
def storage(tmp_path: Path):
    storage = Storage(tmp_path / "switchboard.db")
    yield storage
    storage.close()


def test_user_round_trip_and_update(storage: Storage):
    added = storage.add_user("ada", "operator", ["billing"], "scrypt$hash")
    assert storage.get_user("ada") == added
    assert (added.queues, added.disabled, added.created_at == added.updated_at) == (["billing"], False, True)
    changed = storage.update_user("ada", queues=["billing", "technical"], disabled=True, role="supervisor")
    assert (changed.queues, changed.disabled, changed.role) == (["billing", "technical"], True, "supervisor")
    assert changed.created_at == added.created_at and changed.updated_at >= added.updated_at
    assert storage.get_user("nobody") is None
    assert [u.username for u in storage.list_users()] == ["ada"]


def test_duplicate_user_is_an_account_error_and_keeps_the_first(storage: Storage):
    storage.add_user("ada", "operator", [], "first")
    with pytest.raises(AccountError, match="user 'ada' already exists"):
        storage.add_user("ada", "admin", [], "second")
    user = storage.get_user("ada")
    assert user is not None and (user.role, user.password_hash) == ("operator", "first")


def test_update_user_refuses_unknown_users_and_columns(storage: Storage):
    with pytest.raises(AccountError, match="no user 'ghost'"):
        storage.update_user("ghost", disabled=True)
    storage.add_user("ada", "operator", [], "h")
    with pytest.raises(TypeError, match="username"):
        storage.update_user("ada", username="eve")


def test_hash_is_not_in_the_records_repr(storage: Storage):
    assert "secret-hash" not in repr(storage.add_user("ada", "operator", [], "secret-hash"))


def test_agent_events_in_order_by_operator_and_since(storage: Storage):
    first = storage.add_agent_event("ada", "available")
    storage.add_agent_event("bob", "away", reason="lunch")
    storage.add_agent_event("ada", "on_call", call_id="c1", queue="billing")
    assert [e.state for e in storage.agent_events()] == ["available", "away", "on_call"]
    assert [(e.state, e.call_id, e.queue) for e in storage.agent_events("ada")] == [
        ("available", None, None), ("on_call", "c1", "billing")]
    (bob,) = storage.agent_events("bob")
    assert bob == AgentEvent(2, bob.at, "bob", "away", "lunch", None, None)
    assert first.at <= bob.at
    assert storage.agent_events(since=first.at)[0] == first  # inclusive
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert storage.agent_events(since=future) == []
    past = dt.datetime.now(dt.timezone(dt.timedelta(hours=-5))) - dt.timedelta(minutes=1)
    assert len(storage.agent_events("ada", since=past)) == 2


def test_migration_adds_the_new_tables_to_an_older_database_and_runs_twice(tmp_path: Path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE calls (id TEXT PRIMARY KEY, started_at TEXT)")
    old.execute("INSERT INTO calls VALUES ('c1', '2026-01-01T00:00:00')")
    old.commit()
    old.close()
    for _ in range(2):
        storage = Storage(path)
        assert {"users", "agent_events", "calls"} <= set(storage.db.table_names())
        if not storage.list_users():
            storage.add_user("ada", "admin", [], "h")
        storage.close()
    storage = Storage(path)
    try:
        assert [u.username for u in storage.list_users()] == ["ada"]
        assert storage.db.execute("SELECT id FROM calls").fetchall() == [("c1",)]
    finally:
        storage.close()
