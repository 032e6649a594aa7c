"""The one clock: wall time for records, monotonic time for timers."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

# What time-dependent logic is given instead of reading the time itself: the flow engine's
# business hours, the simulator's virtual time. Tests pass a fixed or stepped one.
WallClock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_now() -> str:
    return utcnow().isoformat(timespec="milliseconds")


def monotonic() -> float:
    return time.monotonic()
