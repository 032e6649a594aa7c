"""The tests' port picker: a block one test process holds is never handed to another one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from tests.support import ports
from tests.support.ports import free_port_block, release_port_block

ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import sys
from tests.support.ports import free_port_block
print(free_port_block(int(sys.argv[1]), hold=True), flush=True)
sys.stdin.read()
"""


def _held_picks_inside(start: int, size: int, picks: int) -> list[int]:
    """Held blocks of 4 picked (and let go) `picks` times: those that overlap [start, start + size)."""
    picked = [free_port_block(4, hold=True) for _ in range(picks)]
    for port in picked:
        release_port_block(port)
    return [port for port in picked if start - 4 < port < start + size]


def test_a_block_another_process_holds_is_not_handed_out_while_it_lives() -> None:
    """An appliance's RTP block is bound only during calls: the soak's appliance found ports of its
    block taken by other test runs' sipp and baresip, whose pickers saw them free."""
    size = 4000  # a sixth of the range: a picker that did not know of it would land in it at once
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(size)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        start = int(holder.stdout.readline())
        assert _held_picks_inside(start, size, 60) == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    # Gone with its process: the range is everybody's again.
    assert _held_picks_inside(start, size, 100)


def test_a_held_block_is_free_again_once_released() -> None:
    size = 4000
    start = free_port_block(size, hold=True)
    assert _held_picks_inside(start, size, 60) == []
    release_port_block(start)
    assert _held_picks_inside(start, size, 100)


def test_other_blocks_never_land_where_blocks_are_held() -> None:
    """sipp's and baresip's ports are kept only while among their process's last 32: from a range
    of their own they cannot reach an appliance's RTP block once forgotten."""
    start = free_port_block(4000, hold=True)
    try:
        assert [p for p in (free_port_block(4) for _ in range(100)) if p + 4 > start] == []
    finally:
        release_port_block(start)


def test_a_release_from_inside_a_pick_neither_waits_nor_is_lost() -> None:
    """The garbage collector may run a block's finalizer (release_port_block) while this very
    process holds the registry to pick a block: the release must not wait for that lock (a whole
    test run hung so) and must still be written back."""
    held = free_port_block(8, hold=True)
    done = threading.Event()

    def pick_that_releases() -> None:
        with ports._lock, ports._registry():
            release_port_block(held)
        done.set()

    threading.Thread(target=pick_that_releases, daemon=True).start()
    assert done.wait(30), "release_port_block waited for the registry lock its own process held"
    with ports._lock, ports._registry() as blocks:
        assert not [b for b in blocks if b["pid"] == os.getpid() and b["start"] == held]
