"""Polling until something is true: the one place tests wait on a deadline.

`wait_until` for tests that drive the appliance from outside (a process, HTTP, sipp runs);
`wait_until_async` for tests sharing an event loop with the code under test, where a
blocking sleep would stall the very thing being waited for. Both return the predicate's
first truthy value and fail with what they waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["wait_until", "wait_until_async"]


def _timed_out(what: str, timeout: float, detail: Callable[[], str] | None) -> AssertionError:
    message = f"timed out after {timeout} s waiting for {what}"
    return AssertionError(f"{message}\n{detail()}" if detail else message)


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 10.0, interval: float = 0.1,
               detail: Callable[[], str] | None = None) -> T:
    """Call `predicate` every `interval` s until it returns something truthy, and return that.

    After `timeout` s, an AssertionError naming `what` (and `detail()`, e.g. a log tail).
    A predicate may raise to give up early (a process that died).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, detail)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], T], what: str, timeout: float = 10.0, interval: float = 0.1,
                           detail: Callable[[], str] | None = None) -> T:
    """`wait_until` for a test on the event loop: sleeps with asyncio between calls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise _timed_out(what, timeout, detail)
        await asyncio.sleep(interval)
