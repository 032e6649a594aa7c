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
    local = now.astimezone(ZoneInfo(hours.timezone))
    if local.date().isoformat() in hours.holidays:
        return False
    day = DAYS[local.weekday()]
    minute = local.hour * 60 + local.minute
    for spec, ranges in hours.weekly.items():
        if day in _days(spec):
            for span in ranges:
                start, end = span.split("-")
                if _minutes(start) <= minute < _minutes(end):
                    return True
    return False
