"""The one clock: wall time for records, monotonic time for timers."""

from __future__ import annotations

import datetime as dt
import time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_now() -> str:
    return utcnow().isoformat(timespec="milliseconds")


def monotonic() -> float:
    return time.monotonic()
