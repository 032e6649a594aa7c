"""Call records and call events, operator accounts and operator state changes in SQLite (WAL),
through sqlite-utils.

Writes are small and synchronous on purpose: a record must be on disk before the call
goes on, so a crash never loses that the call happened. In the running appliance
(`defer_when_locked`), a write another process's lock holds back waits in order in a backlog
(appliance/storage/backlog.py) rather than stalling the event loop; tools on the command line
wait for the lock as SQLite does (5 s).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.core.clock import iso_now
from appliance.core.errors import AccountError
from appliance.core.masking import mask_all_digits
from appliance.storage.backlog import WriteBacklog

# The event that makes a call an operator's own ({"identity": ...}); the operator console writes it.
OPERATOR_JOINED = "operator_joined"

CALL_COLUMNS = {
    "id": str,
    "trunk": str,
    "from_uri": str,
    "to_uri": str,
    "started_at": str,
    "answered_at": str,
    "ended_at": str,
    "end_reason": str,
    "flow": str,
    "flow_version": str,
    "recording_path": str,
    "worker": str,
    "operator": str,  # the last operator who talked to the caller
    "recording_pruned_at": str,  # when retention deleted the recording's file (the path stays, as history)
}
RECORDING_COLUMNS = {"id": int, "call_id": str, "kind": str, "path": str, "created_at": str, "duration_s": float,
                     "pruned_at": str}


@dataclass
class CallRecord:
    id: str
    trunk: str | None
    from_uri: str | None
    to_uri: str | None
    started_at: str
    answered_at: str | None
    ended_at: str | None
    end_reason: str | None
    flow: str | None
    flow_version: str | None
    recording_path: str | None
    worker: str | None
    operator: str | None = None
    recording_pruned_at: str | None = None

    @property
    def duration_s(self) -> float | None:
        from datetime import datetime

        if not self.ended_at:
            return None
        start = datetime.fromisoformat(self.answered_at or self.started_at)
        return max(0.0, (datetime.fromisoformat(self.ended_at) - start).total_seconds())


USER_COLUMNS = {
    "username": str,
    "role": str,
    "queues": str,  # a JSON list of queue names
    "password_hash": str,
    "disabled": int,
    "created_at": str,
    "updated_at": str,
}
# What update_user may change; the username is the key and created_at is history.
USER_UPDATABLE = ("role", "queues", "password_hash", "disabled")


@dataclass
class UserRecord:
    """A person who may log in to the console. The hash stays out of reprs (and so out of logs)."""

    username: str
    role: str
    queues: list[str]
    password_hash: str = field(repr=False)
    disabled: bool
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UserRecord:
        return cls(**(row | {"queues": json.loads(row["queues"]), "disabled": bool(row["disabled"])}))


@dataclass(frozen=True)
class StoredAudio:
    """A file of a call's audio: its recording (`recording_id` None) or a voicemail message."""

    call_id: str
    kind: str
    path: str
    recording_id: int | None
    call_ended_at: str


@dataclass(frozen=True)
class AgentEvent:
    """One operator state change (available, away, on a call, wrap-up, logged out...), for reports."""

    id: int
    at: str
    operator: str
    state: str
    reason: str
    call_id: str | None
    queue: str | None


class Storage:
    def __init__(self, path: Path, defer_when_locked: bool = False, on_deferred: Callable[[], None] | None = None):
        """`defer_when_locked`: writes another process's lock holds back wait in a backlog (the
        running appliance, whose event loop must not stall); `on_deferred` is told of each."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite_utils.Database(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Told of each change to a call (event webhooks): (call id, what, data). "opened" and
        # "recording:<kind>" besides the event kinds of add_event. Called inside the write.
        self.observers: list[Callable[[str, str, dict[str, Any]], None]] = []
        # Calls whose recording is paused for a card number: every digit of their events and
        # transcripts is masked before it is stored (and before observers see it).
        self._masked: set[str] = set()
        self._migrate()
        # Ids the code hands out before the row may be written (the backlog): their tables' last, counted on.
        self._last_id = {table: self.db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
                         for table in ("recordings", "agent_events")}
        self._backlog = WriteBacklog(self.db.conn, on_deferred) if defer_when_locked else None

    @property
    def pending_writes(self) -> int:
        """Writes waiting for another process to release the database (their changes not yet readable)."""
        return len(self._backlog) if self._backlog is not None else 0

    def _write(self, statement: Callable[[], object]) -> None:
        if self._backlog is None:
            statement()
        else:
            self._backlog.write(statement)

    def _next_id(self, table: str) -> int:
        self._last_id[table] += 1
        return self._last_id[table]

    def _notify(self, call_id: str, what: str, data: dict[str, Any]) -> None:
        for observer in self.observers:
            observer(call_id, what, data)

    def _migrate(self) -> None:
        if "calls" not in self.db.table_names():
            self.db.table("calls").create(CALL_COLUMNS, pk="id")
            self.db.table("calls").create_index(["started_at"])
        missing = set(CALL_COLUMNS) - set(self.db.table("calls").columns_dict)
        for column in sorted(missing):  # a database from before the column existed
            self.db.table("calls").add_column(column, CALL_COLUMNS[column])
        if "call_events" not in self.db.table_names():
            self.db.table("call_events").create(
                {"id": int, "call_id": str, "at": str, "kind": str, "data": str}, pk="id"
            )
            self.db.table("call_events").create_index(["call_id"])
        if "transcripts" not in self.db.table_names():
            self.db.table("transcripts").create(
                {"id": int, "call_id": str, "at": str, "role": str, "speaker": str, "text": str, "interrupted": int},
                pk="id",
            )
            self.db.table("transcripts").create_index(["call_id"])
        if "recordings" not in self.db.table_names():
            self.db.table("recordings").create(RECORDING_COLUMNS, pk="id")
            self.db.table("recordings").create_index(["call_id"])
        for column in sorted(set(RECORDING_COLUMNS) - set(self.db.table("recordings").columns_dict)):
            self.db.table("recordings").add_column(column, RECORDING_COLUMNS[column])
        if "users" not in self.db.table_names():
            self.db.table("users").create(USER_COLUMNS, pk="username", not_null={"role", "password_hash"})
        if "agent_events" not in self.db.table_names():
            self.db.table("agent_events").create(
                {"id": int, "at": str, "operator": str, "state": str, "reason": str, "call_id": str, "queue": str},
                pk="id",
            )
            self.db.table("agent_events").create_index(["operator", "at"])
            self.db.table("agent_events").create_index(["at"])
        if "webhook_outbox" not in self.db.table_names():
            # Each event for each receiver, written before the first attempt: a restart resumes it.
            self.db.table("webhook_outbox").create(
                {"id": int, "url": str, "call_id": str, "event": str, "body": str, "created_at": float,
                 "attempts": int, "next_at": float, "last_error": str, "done_at": float, "state": str},
                pk="id",
            )
            self.db.table("webhook_outbox").create_index(["url", "state", "id"])

    def close(self) -> None:
        if self._backlog is not None:
            self._backlog.close()
        self.db.close()

    # calls
    def open_call(self, call_id: str, **fields: Any) -> None:
        row = {c: None for c in CALL_COLUMNS} | {"id": call_id, "started_at": iso_now()} | fields
        self._write(lambda: self.db.table("calls").insert(row))
        self._notify(call_id, "opened", row)

    def update_call(self, call_id: str, **fields: Any) -> None:
        self._write(lambda: self.db.table("calls").update(call_id, fields))

    def close_call(self, call_id: str, end_reason: str) -> None:
        # Only the first close counts: a hang-up racing a worker loss keeps the first reason.
        args = [iso_now(), end_reason, call_id]

        def close() -> None:
            with self.db.conn:
                self.db.execute("UPDATE calls SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL", args)

        self._write(close)

    def get_call(self, call_id: str) -> CallRecord | None:
        rows = list(self.db.table("calls").rows_where("id = ?", [call_id]))
        return CallRecord(**rows[0]) if rows else None

    def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        rows = self.db.table("calls").rows_where(order_by="started_at desc", limit=limit)
        return [CallRecord(**r) for r in rows]

    def calls_handled_by(self, identity: str, limit: int = 20) -> list[CallRecord]:
        """Newest first, the calls a person (an operator) joined."""
        rows = self.db.query(
            "SELECT calls.* FROM calls WHERE id IN (SELECT call_id FROM call_events WHERE kind = ? "
            "AND json_extract(data, '$.identity') = ?) ORDER BY started_at DESC LIMIT ?",
            [OPERATOR_JOINED, identity, limit],
        )
        return [CallRecord(**r) for r in rows]

    def handled_by(self, call_id: str, identity: str) -> bool:
        rows = self.db.query(
            "SELECT 1 FROM call_events WHERE call_id = ? AND kind = ? AND json_extract(data, '$.identity') = ? LIMIT 1",
            [call_id, OPERATOR_JOINED, identity],
        )
        return next(iter(rows), None) is not None

    def open_calls(self) -> list[CallRecord]:
        return [CallRecord(**r) for r in self.db.table("calls").rows_where("ended_at IS NULL")]

    def close_orphans(self, end_reason: str, converting: bool = False) -> list[CallRecord]:
        """Close calls a previous run left open (a crash); returns them for recording repair.
        `converting`: their recordings are WAVs the converter will replace."""
        orphans = self.open_calls()
        for call in orphans:
            self.close_call(call.id, end_reason)
            self.add_event(call.id, "closed", {"reason": end_reason} | ({"converting": True} if converting else {}))
        return orphans

    # transcripts: what the caller and the personas said, in order
    def add_transcript(self, call_id: str, role: str, speaker: str, text: str,
                       interrupted: bool = False) -> dict[str, Any]:
        if call_id in self._masked:
            text = mask_all_digits(text)
        row = {"call_id": call_id, "at": iso_now(), "role": role, "speaker": speaker, "text": text,
               "interrupted": int(interrupted)}
        self._write(lambda: self.db.table("transcripts").insert(row))
        return row

    def transcripts(self, call_id: str) -> list[dict[str, Any]]:
        return list(self.db.table("transcripts").rows_where("call_id = ?", [call_id], order_by="id"))

    # recordings besides the call's own (voicemail messages)
    def add_recording(self, call_id: str, kind: str, path: str, duration_s: float, converting: bool = False) -> int:
        """Record a message; `converting`: its file is the WAV a converter is about to replace."""
        recording_id = self._next_id("recordings")
        row = {"id": recording_id, "call_id": call_id, "kind": kind, "path": path, "created_at": iso_now(),
               "duration_s": duration_s}
        self._write(lambda: self.db.table("recordings").insert(row))
        self._notify(call_id, f"recording:{kind}", row | {"id": recording_id, "converting": converting})
        return recording_id

    def recordings(self, call_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if call_id:
            where.append("call_id = ?")
            args.append(call_id)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        return list(self.db.table("recordings").rows_where(" AND ".join(where) or None, args, order_by="id"))

    # retention: audio files of ended calls, and the mark that one was deleted
    def audio_of_calls_ended_before(self, cutoff: str) -> list[StoredAudio]:
        """Recordings and voicemail not yet pruned of calls that ended before `cutoff` (ISO, as
        `ended_at` holds it); a call in progress has no `ended_at`, so its files are never here."""
        calls = self.db.query(
            "SELECT id, recording_path, ended_at FROM calls WHERE ended_at IS NOT NULL AND ended_at < ? "
            "AND recording_path IS NOT NULL AND recording_pruned_at IS NULL ORDER BY ended_at",
            [cutoff],
        )
        found = [StoredAudio(r["id"], "call", r["recording_path"], None, r["ended_at"]) for r in calls]
        others = self.db.query(
            "SELECT recordings.id, call_id, kind, path, calls.ended_at FROM recordings JOIN calls "
            "ON calls.id = recordings.call_id WHERE calls.ended_at IS NOT NULL AND calls.ended_at < ? "
            "AND recordings.pruned_at IS NULL ORDER BY calls.ended_at, recordings.id",
            [cutoff],
        )
        found += [StoredAudio(r["call_id"], r["kind"], r["path"], r["id"], r["ended_at"]) for r in others]
        return found

    def audio_of_ended_calls(self) -> list[StoredAudio]:
        """Every recording and voicemail file, not pruned, of calls that have ended (the converter's backlog)."""
        return self.audio_of_calls_ended_before("9999")  # ISO times sort as text: every ended call

    def audio_moved(self, audio: StoredAudio, path: str, seconds: float, audio_format: str) -> None:
        """The audio now lives at `path`, converted to `audio_format`; tells observers `converted:<kind>`."""
        key: str | int
        if audio.recording_id is None:
            table, key, change = "calls", audio.call_id, {"recording_path": path}
        else:
            table, key, change = "recordings", audio.recording_id, {"path": path}
        self._write(lambda: self.db.table(table).update(key, change))
        self._notify(audio.call_id, f"converted:{audio.kind}", {"path": path, "duration_s": round(seconds, 2),
                                                                  "format": audio_format})

    def mark_pruned(self, audio: StoredAudio) -> None:
        key: str | int
        if audio.recording_id is None:
            sql, key = "UPDATE calls SET recording_pruned_at = ? WHERE id = ?", audio.call_id
        else:
            sql, key = "UPDATE recordings SET pruned_at = ? WHERE id = ?", audio.recording_id
        args = [iso_now(), key]

        def mark() -> None:
            with self.db.conn:
                self.db.execute(sql, args)

        self._write(mark)

    # events
    def mask(self, call_id: str, on: bool) -> None:
        """While on, nothing of `call_id` with a digit in it is stored as it was said or pressed."""
        if on:
            self._masked.add(call_id)
        else:
            self._masked.discard(call_id)

    def add_event(self, call_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        if call_id in self._masked:
            data = mask_all_digits(data or {})
        row = {"call_id": call_id, "at": iso_now(), "kind": kind, "data": json.dumps(data or {})}
        self._write(lambda: self.db.table("call_events").insert(row))
        self._notify(call_id, kind, data or {})

    # event webhooks' outbox: appliance.integrations.webhooks decides; this only stores
    def enqueue_webhook(self, url: str, call_id: str, event: str, body: str, now: float) -> None:
        row = {"url": url, "call_id": call_id, "event": event, "body": body, "created_at": now, "attempts": 0,
               "next_at": now, "last_error": None, "done_at": None, "state": "pending"}
        self._write(lambda: self.db.table("webhook_outbox").insert(row))

    def next_webhook(self, url: str) -> dict[str, Any] | None:
        """The oldest event not yet delivered to `url` (events go out in the order they happened)."""
        return next(self.db.table("webhook_outbox").rows_where(
            "url = ? AND state = 'pending'", [url], order_by="id", limit=1), None)

    def webhook_urls_pending(self) -> list[str]:
        return [r["url"] for r in self.db.query("SELECT DISTINCT url FROM webhook_outbox WHERE state = 'pending'")]

    def webhook_attempted(self, outbox_id: int, state: str, attempts: int, next_at: float, error: str | None,
                          done_at: float | None) -> None:
        fields = {"state": state, "attempts": attempts, "next_at": next_at, "last_error": error, "done_at": done_at}
        self._write(lambda: self.db.table("webhook_outbox").update(outbox_id, fields))

    def events(self, call_id: str) -> Iterator[dict[str, Any]]:
        for row in self.db.table("call_events").rows_where("call_id = ?", [call_id], order_by="id"):
            yield {"at": row["at"], "kind": row["kind"], "data": json.loads(row["data"])}

    # users: the console's accounts (appliance.operators.accounts validates and hashes; this only stores)
    def add_user(self, username: str, role: str, queues: list[str], password_hash: str,
                 disabled: bool = False) -> UserRecord:
        now = iso_now()
        row = {"username": username, "role": role, "queues": json.dumps(queues), "password_hash": password_hash,
               "disabled": int(disabled), "created_at": now, "updated_at": now}
        # INSERT OR IGNORE and a count, not catching sqlite's IntegrityError: the same answer
        # whichever constraint sqlite would have named, and no half-written row to roll back.
        with self.db.conn:
            cursor = self.db.execute(
                f"INSERT OR IGNORE INTO users ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                list(row.values()),
            )
        if cursor.rowcount == 0:
            raise AccountError(f"user {username!r} already exists")
        return UserRecord.from_row(row)

    def get_user(self, username: str) -> UserRecord | None:
        rows = list(self.db.table("users").rows_where("username = ?", [username]))
        return UserRecord.from_row(rows[0]) if rows else None

    def list_users(self) -> list[UserRecord]:
        return [UserRecord.from_row(r) for r in self.db.table("users").rows_where(order_by="username")]

    def update_user(self, username: str, **fields: Any) -> UserRecord:
        """Change `role`, `queues` (a list), `password_hash` or `disabled` (a bool)."""
        unknown = set(fields) - set(USER_UPDATABLE)
        if unknown:
            raise TypeError(f"update_user cannot change {sorted(unknown)}")
        row = dict(fields)
        if "queues" in row:
            row["queues"] = json.dumps(row["queues"])
        if "disabled" in row:
            row["disabled"] = int(row["disabled"])
        row["updated_at"] = iso_now()
        with self.db.conn:
            cursor = self.db.execute(
                f"UPDATE users SET {', '.join(f'{c} = ?' for c in row)} WHERE username = ?",
                [*row.values(), username],
            )
        if cursor.rowcount == 0:
            raise AccountError(f"no user {username!r}")
        user = self.get_user(username)
        assert user is not None
        return user

    # agent events: every operator state change, in order
    def add_agent_event(self, operator: str, state: str, reason: str = "", call_id: str | None = None,
                        queue: str | None = None) -> AgentEvent:
        event = AgentEvent(self._next_id("agent_events"), iso_now(), operator, state, reason, call_id, queue)

        def insert() -> None:
            with self.db.conn:
                self.db.execute("INSERT INTO agent_events (id, at, operator, state, reason, call_id, queue) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [event.id, event.at, operator, state, reason, call_id, queue])

        self._write(insert)
        return event

    def agent_events(self, operator: str | None = None, since: str | dt.datetime | None = None) -> list[AgentEvent]:
        """Oldest first; `since` (inclusive) is an ISO time as `at` holds it, or an aware datetime."""
        where, args = [], []
        if operator is not None:
            where.append("operator = ?")
            args.append(operator)
        if since is not None:
            if isinstance(since, dt.datetime):
                # `at` is UTC ISO text (iso_now), so a datetime compares as the same text.
                since = since.astimezone(dt.UTC).isoformat(timespec="milliseconds")
            where.append("at >= ?")
            args.append(since)
        rows = self.db.table("agent_events").rows_where(" AND ".join(where) or None, args, order_by="id")
        return [AgentEvent(**r) for r in rows]
