"""Writes that wait their turn: while another process holds SQLite's write lock, the appliance's
writes are kept in order and tried again, instead of stalling the event loop (and with it the
hub's 20 ms media clock) for as long as the lock is held, or failing and being lost.

In WAL mode readers never block the writer: a `sqlite3` shell in a long `BEGIN; SELECT` or a
backup costs nothing. Another writer does (a long `BEGIN IMMEDIATE`, a migration by hand): each
attempt then waits at most `LOCK_WAIT_S` (the connection's busy timeout), after which the write
joins the backlog, and the backlog is tried again every `RETRY_S` without waiting at all. While
writes wait, the appliance's own reads do not see them yet.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["LOCK_WAIT_S", "RETRY_S", "WriteBacklog"]

LOCK_WAIT_S = 0.02  # an attempt blocks the event loop at most about one media tick
RETRY_S = 0.1
CLOSE_WAIT_S = 5.0  # at shutdown, how long the last waiting writes may wait for the lock

Write = Callable[[], object]  # one write, its own transaction: all of it commits or none


def _busy(error: sqlite3.OperationalError) -> bool:
    # Extended codes (SQLITE_BUSY_SNAPSHOT, …) keep the primary code in their low byte.
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


class WriteBacklog:
    def __init__(self, conn: sqlite3.Connection, on_deferred: Callable[[], None] | None = None):
        self._conn = conn
        self._conn.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_S * 1000)}")
        self.on_deferred = on_deferred  # e.g. a metric's inc: storage knows no metrics
        self._pending: deque[Write] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._since = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    def write(self, statement: Write) -> None:
        """Run `statement` now if the database lets us, else after every write already waiting."""
        if not self._pending and self._attempt(statement):
            return
        if not self._pending:
            self._since = time.monotonic()
            log.warning("database locked by another process; writes wait in order",
                        extra={"fields": {"lock_wait_s": LOCK_WAIT_S}})
        self._pending.append(statement)
        if self.on_deferred is not None:
            self.on_deferred()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RETRY_S, self._retry)

    def _attempt(self, statement: Write) -> bool:
        try:
            statement()
        except sqlite3.OperationalError as error:
            self._conn.rollback()  # a statement outside sqlite-utils' atomic() leaves its transaction open
            if not _busy(error):
                raise
            return False
        return True

    def _retry(self) -> None:
        self._timer = None
        # The lock was held a moment ago: look without waiting, so a long lock costs the loop nothing.
        written = self._drain(wait_s=0.0)
        if self._pending:
            self._timer = asyncio.get_running_loop().call_later(RETRY_S, self._retry)
        elif written:
            log.warning("database writes caught up",
                        extra={"fields": {"writes": written, "waited_s": round(time.monotonic() - self._since, 2)}})

    def _drain(self, wait_s: float) -> int:
        self._conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        written = 0
        try:
            while self._pending and self._attempt(self._pending[0]):
                self._pending.popleft()
                written += 1
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_S * 1000)}")
        return written

    def close(self) -> None:
        """Write what still waits, waiting up to CLOSE_WAIT_S for the lock; say what could not be."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        self._drain(wait_s=CLOSE_WAIT_S)
        if self._pending:
            log.error("database still locked at shutdown; writes lost", extra={"fields": {"writes": len(self)}})
