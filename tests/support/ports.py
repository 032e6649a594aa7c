"""Free loopback ports for the processes a test starts (the appliance, sipp, baresip, servers).

A block is free when checked but bound only later, some of it not while a test runs at all: a
SIP worker binds its RTP ports only during calls. So every block handed out is written down in
one registry that every test process on the box reads and writes under a lock, and no process
hands out a block that overlaps one written there: the 10,000-call soak's appliance logged pjsua
`RTP socket bind() ... Address already in use` at ports of its block while other sessions' tests
ran, whose pickers could not see its idle ports (docs/BENCHMARKS.md, "The RTP bind lines of the
10,000-call run").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["free_port_block", "release_port_block"]

REGISTRY = Path(tempfile.gettempdir()) / "switchboard-test-ports.json"
# A process's blocks that nobody releases (sipp's, baresip's, a server's): only its last few are
# kept, as its processes stop with its tests, and a session that kept every one would run out of ports.
# Held blocks (an appliance's RTP block) stay until released or until their process is gone.
KEEP_PER_PROCESS = 32
LOWEST = 10000
# One registry user at a time in this process; releases wait in `_pending` (see release_port_block).
_lock = threading.Lock()
_pending: list[int] = []


def free_port_block(count: int, hold: bool = False) -> int:
    """First port of `count` consecutive ports free for both UDP and TCP on 127.0.0.1.

    Chosen at random so that tests running side by side rarely race for one, and below the
    kernel's ephemeral range (32768 and up), where any process's outgoing socket may take a port
    between this check and its use: aiortc's ICE sockets, by the dozen, were seen to. With `hold`,
    the block stays reserved for this process until `release_port_block`, not only while it is
    among its last few, and comes from the upper half of the range, which only held blocks use.
    """
    # Held blocks apart from the others: a few dozen small blocks strewn over one range would leave
    # no gap for a benchmark's thousands of RTP ports.
    middle = (LOWEST + _ephemeral_start()) // 2
    low, high = (middle, _ephemeral_start()) if hold else (LOWEST, middle)
    with _lock, _registry() as blocks:
        gaps = _gaps(low, high - count, count, blocks)
        room = sum(last - first + 1 for first, last in gaps)
        for _ in range(200 if room else 0):
            base = _nth(gaps, secrets.randbelow(room))
            if not _bindable(base, count):
                continue
            blocks.append({"pid": os.getpid(), "start": base, "end": base + count, "hold": hold})
            mine = [i for i, block in enumerate(blocks) if block["pid"] == os.getpid() and not block["hold"]]
            for i in reversed(mine[:-KEEP_PER_PROCESS]):
                del blocks[i]
            return base
    raise RuntimeError("no free port block")


def release_port_block(start: int) -> None:
    """This process no longer needs the block it was given at `start`.

    Never waits: it runs from finalizers, which the garbage collector may call inside
    `free_port_block` itself, whose registry lock a wait here would never get (a whole test run
    hung so). A release that cannot take the lock at once is written back by whoever holds it.
    """
    _pending.append(start)
    if _lock.acquire(blocking=False):
        try:
            with _registry():
                pass
        finally:
            _lock.release()


def _gaps(low: int, high: int, count: int, blocks: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The first ports (from `low` to `high`) of `count` ports overlapping no block, as ranges."""
    gaps = []
    cursor = low
    for block in sorted(blocks, key=lambda b: b["start"]):
        if block["start"] - count >= cursor:
            gaps.append((cursor, min(block["start"] - count, high)))
        cursor = max(cursor, block["end"])
    if cursor <= high:
        gaps.append((cursor, high))
    return [(first, last) for first, last in gaps if first <= last]


def _nth(gaps: list[tuple[int, int]], n: int) -> int:
    for first, last in gaps:
        if n <= last - first:
            return first + n
        n -= last - first + 1
    raise IndexError(n)


def _bindable(base: int, count: int) -> bool:
    sockets = []
    try:
        for port in range(base, base + count):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def _registry() -> Iterator[list[dict[str, Any]]]:
    """The blocks of live processes, locked against every other test process until written back
    (with this process's pending releases applied); the caller holds `_lock`."""
    with open(os.open(REGISTRY, os.O_RDWR | os.O_CREAT, 0o666), "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            blocks = [block for block in json.loads(f.read() or "[]") if _alive(block["pid"])]
        except (ValueError, KeyError, TypeError):
            blocks = []  # a registry from another version of this file: start afresh
        yield blocks
        while _pending:
            start = _pending.pop()
            blocks[:] = [b for b in blocks if not (b["pid"] == os.getpid() and b["start"] == start)]
        f.seek(0)
        f.truncate()
        f.write(json.dumps(blocks))
        f.flush()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's test run
    return True


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
