"""Business hours as the caller's clock sees them: weekly ranges, time zones with DST, holidays, edges."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from appliance.flow.hours import is_open
from appliance.flow.schema import Hours

UTC = dt.UTC


def hours(weekly: dict[str, list[str]], timezone: str = "UTC", holidays: list[str] | None = None) -> Hours:
    return Hours(timezone=timezone, weekly=weekly, holidays=holidays or [], open="welcome", closed="after_hours")


def at(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso)


OFFICE = hours({"mon-fri": ["08:00-18:00"], "sat": ["09:00-13:00"]}, timezone="America/New_York")


@pytest.mark.parametrize(
    "moment, expected",
    [
        # 2026-11-24 is a Tuesday; New York is on EST (UTC-5) in November.
        ("2026-11-24T12:59:00+00:00", False),  # 07:59
        ("2026-11-24T13:00:00+00:00", True),   # 08:00: the start is inside
        ("2026-11-24T15:00:00+00:00", True),   # 10:00
        ("2026-11-24T22:59:00+00:00", True),   # 17:59
        ("2026-11-24T23:00:00+00:00", False),  # 18:00: the end is outside
        ("2026-11-25T03:00:00+00:00", False),  # 22:00 Tuesday, though Wednesday in UTC
        ("2026-11-27T15:00:00+00:00", True),   # Friday, the last day of mon-fri
        ("2026-11-28T14:00:00+00:00", True),   # Saturday 09:00
        ("2026-11-28T17:59:59+00:00", True),   # Saturday 12:59:59
        ("2026-11-28T18:00:00+00:00", False),  # Saturday 13:00
        ("2026-11-29T15:00:00+00:00", False),  # Sunday: not listed, closed
        ("2026-11-30T13:00:00+00:00", True),   # Monday, the first day of mon-fri
    ],
)
def test_weekday_range_and_single_day_in_new_york(moment: str, expected: bool):
    assert is_open(OFFICE, at(moment)) is expected


def test_the_same_utc_moment_is_open_in_summer_and_closed_in_winter():
    # 12:30 UTC is 08:30 on EDT (UTC-4) in July but 07:30 on EST (UTC-5) in November.
    assert is_open(OFFICE, at("2026-07-14T12:30:00+00:00")) is True
    assert is_open(OFFICE, at("2026-11-24T12:30:00+00:00")) is False
    # and the evening edge moves the other way
    assert is_open(OFFICE, at("2026-07-14T22:30:00+00:00")) is False  # 18:30 EDT
    assert is_open(OFFICE, at("2026-11-24T22:30:00+00:00")) is True  # 17:30 EST


def test_local_wall_clock_is_what_counts_across_the_dst_change():
    early = hours({"sun": ["01:00-03:00"]}, timezone="America/New_York")
    # 2026-11-01 (Sunday): clocks go back at 02:00 EDT; 01:30 happens twice, both inside.
    assert is_open(early, at("2026-11-01T05:30:00+00:00"))  # 01:30 EDT
    assert is_open(early, at("2026-11-01T06:30:00+00:00"))  # 01:30 EST
    assert not is_open(early, at("2026-11-01T08:00:00+00:00"))  # 03:00 EST


def test_a_moment_in_another_zone_is_converted_first():
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert is_open(OFFICE, dt.datetime(2026, 11, 24, 14, 0, tzinfo=berlin)) is True  # 08:00 in New York
    assert is_open(OFFICE, dt.datetime(2026, 11, 24, 13, 59, tzinfo=berlin)) is False


@pytest.mark.parametrize(
    "day, expected",
    [
        ("2026-11-26", False),  # Thursday
        ("2026-11-27", True),   # Friday
        ("2026-11-28", True),   # Saturday
        ("2026-11-29", True),   # Sunday
        ("2026-11-30", True),   # Monday
        ("2026-12-01", False),  # Tuesday
        ("2026-12-02", False),  # Wednesday
    ],
)
def test_a_day_range_wraps_around_the_weekend(day: str, expected: bool):
    weekend = hours({"fri-mon": ["10:00-16:00"]})
    assert is_open(weekend, at(f"{day}T12:00:00+00:00")) is expected


def test_a_single_day_range_and_several_ranges_a_day():
    split = hours({"wed-wed": ["09:00-12:00", "13:00-17:00"]})
    assert is_open(split, at("2026-11-25T11:59:00+00:00"))
    assert not is_open(split, at("2026-11-25T12:30:00+00:00"))  # lunch
    assert is_open(split, at("2026-11-25T13:00:00+00:00"))
    assert not is_open(split, at("2026-11-24T11:00:00+00:00"))  # Tuesday


def test_days_listed_twice_open_in_either_range():
    both = hours({"mon-fri": ["09:00-12:00"], "fri": ["14:00-16:00"]})
    assert is_open(both, at("2026-11-27T10:00:00+00:00"))
    assert is_open(both, at("2026-11-27T15:00:00+00:00"))
    assert not is_open(both, at("2026-11-26T15:00:00+00:00"))


def test_end_of_day_is_written_24_00_and_includes_the_last_minute():
    late = hours({"mon-sun": ["18:00-24:00"]})
    assert is_open(late, at("2026-11-24T23:59:59+00:00"))
    assert not is_open(late, at("2026-11-25T00:00:00+00:00"))  # midnight is the next day's 00:00
    always = hours({"mon-sun": ["00:00-24:00"]})
    assert is_open(always, at("2026-11-25T00:00:00+00:00"))
    assert is_open(always, at("2026-11-24T23:59:59+00:00"))


def test_holidays_are_closed_all_day_by_the_local_date():
    always = hours({"mon-sun": ["00:00-24:00"]}, timezone="America/New_York", holidays=["2026-12-25"])
    assert not is_open(always, at("2026-12-25T15:00:00+00:00"))
    # 22:00 on Christmas Eve in New York is already the 25th in UTC: still open
    assert is_open(always, at("2026-12-25T03:00:00+00:00"))
    # 22:00 on Christmas Day in New York is the 26th in UTC: still closed
    assert not is_open(always, at("2026-12-26T03:00:00+00:00"))
    assert is_open(always, at("2026-12-26T15:00:00+00:00"))


def test_nothing_listed_is_never_open():
    assert not is_open(hours({}), at("2026-11-24T12:00:00+00:00"))


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("timezone", "Mars/Olympus_Mons", "unknown time zone"),
        ("weekly", {"monday": ["09:00-17:00"]}, "days are mon, tue"),
        ("weekly", {"mon-": ["09:00-17:00"]}, "days are"),
        ("weekly", {"mon-wed-fri": ["09:00-17:00"]}, "days are"),  # a list, not a range
        ("weekly", {"mon": ["9:00-17:00"]}, "not a HH:MM-HH:MM range"),
        ("weekly", {"mon": ["09:00-25:00"]}, "not a HH:MM-HH:MM range"),
        ("weekly", {"mon": ["24:00-24:00"]}, "not a HH:MM-HH:MM range"),
        ("weekly", {"mon": ["09:60-10:00"]}, "not a HH:MM-HH:MM range"),
        ("weekly", {"mon": ["09:00"]}, "not a HH:MM-HH:MM range"),
        ("holidays", ["2026-02-30"], "not a YYYY-MM-DD date"),
        ("holidays", ["25.12.2026"], "not a YYYY-MM-DD date"),
    ],
)
def test_bad_hours_are_refused_with_the_reason(field: str, value, fragment: str):
    good = {"timezone": "UTC", "weekly": {"mon": ["09:00-17:00"]}, "holidays": [], "open": "a", "closed": "b"}
    with pytest.raises(ValidationError) as caught:
        Hours(**{**good, field: value})
    assert fragment in str(caught.value)


def test_an_overnight_range_is_open_or_refused():
    try:
        night = hours({"mon": ["22:00-02:00"]})
    except ValidationError:
        return
    assert is_open(night, at("2026-11-23T23:00:00+00:00"))
