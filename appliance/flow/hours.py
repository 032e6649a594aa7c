"""Business hours: is a moment inside the weekly opening hours, outside holidays, in a time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from appliance.flow.schema import DAYS, Hours


def _days(spec: str) -> list[str]:
    if "-" not in spec:
        return [spec]
    first, last = spec.split("-", 1)
    i, j = DAYS.index(first), DAYS.index(last)
    return list(DAYS[i : j + 1]) if i <= j else list(DAYS[i:] + DAYS[: j + 1])


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def is_open(hours: Hours, now: dt.datetime) -> bool:
    """Open when a weekly range covers the moment; a range like 22:00-02:00 runs past midnight."""
    local = now.astimezone(ZoneInfo(hours.timezone))
    if local.date().isoformat() in hours.holidays:
        return False
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    minute = local.hour * 60 + local.minute
    for spec, ranges in hours.weekly.items():
        days = _days(spec)
        for span in ranges:
            start, end = (_minutes(t) for t in span.split("-"))
            if start < end:
                if today in days and start <= minute < end:
                    return True
            elif (today in days and minute >= start) or (yesterday in days and minute < end):
                return True
    return False
