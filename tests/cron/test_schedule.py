"""Cron maths on known cases: field syntax, day-field OR, DST gaps and folds, every, at."""

from __future__ import annotations

from datetime import datetime

import pytest

from palyra.cron.schedule import (
    Schedule,
    ScheduleError,
    build_schedule,
    iso,
    parse_duration,
    to_ms,
    zone,
)

PRAGUE = zone("Europe/Prague")
NEW_YORK = zone("America/New_York")


def cron(expr: str, tz: str = "UTC") -> Schedule:
    return build_schedule("cron", expr=expr, timezone=tz)


def upcoming(schedule: Schedule, start: datetime, count: int) -> list[str]:
    tz = start.tzinfo
    assert tz is not None
    return [iso(t, zone(str(tz))) for t in schedule.upcoming(to_ms(start), count)]


def test_fields_lists_ranges_steps_and_names() -> None:
    start = datetime(2026, 1, 1, tzinfo=zone("UTC"))  # a Thursday
    assert upcoming(cron("0 9 * * mon-fri"), start, 3) == [
        "2026-01-01T09:00:00+00:00",
        "2026-01-02T09:00:00+00:00",
        "2026-01-05T09:00:00+00:00",
    ]
    assert upcoming(cron("*/20 8-9 * * *"), start, 4) == [
        "2026-01-01T08:00:00+00:00",
        "2026-01-01T08:20:00+00:00",
        "2026-01-01T08:40:00+00:00",
        "2026-01-01T09:00:00+00:00",
    ]
    assert upcoming(cron("0 0 1 jan,jul *"), start, 2) == [
        "2026-07-01T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
    ]
    assert upcoming(cron("5,10 0 * * *"), start, 2) == [
        "2026-01-01T00:05:00+00:00",
        "2026-01-01T00:10:00+00:00",
    ]


def test_both_day_fields_restricted_means_either() -> None:
    # The 13th or any Friday: 2026-02-06 is a Friday, 2026-02-13 both.
    start = datetime(2026, 2, 1, tzinfo=zone("UTC"))
    assert upcoming(cron("0 0 13 * fri"), start, 3) == [
        "2026-02-06T00:00:00+00:00",
        "2026-02-13T00:00:00+00:00",
        "2026-02-20T00:00:00+00:00",
    ]


def test_prague_spring_gap_fires_at_the_first_minute_after() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    start = datetime(2026, 3, 28, 12, 0, tzinfo=PRAGUE)
    assert upcoming(cron("30 2 * * *", "Europe/Prague"), start, 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Every ticks inside the gap collapse onto 03:00, which fires once.
    start = datetime(2026, 3, 29, 1, 0, tzinfo=PRAGUE)
    assert upcoming(cron("*/30 * * * *", "Europe/Prague"), start, 3) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_prague_autumn_fold_fires_once() -> None:
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:00-02:59 happens twice.
    start = datetime(2026, 10, 24, 12, 0, tzinfo=PRAGUE)
    assert upcoming(cron("30 2 * * *", "Europe/Prague"), start, 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    start = datetime(2026, 10, 25, 1, 0, tzinfo=PRAGUE)
    assert upcoming(cron("*/30 * * * *", "Europe/Prague"), start, 5) == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",  # the second pass over 02:00-02:59 fires nothing
        "2026-10-25T03:30:00+01:00",
    ]


def test_new_york_gap_and_fold() -> None:
    start = datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK)  # 2026-03-08 02:00 EST -> 03:00 EDT
    assert upcoming(cron("30 2 * * *", "America/New_York"), start, 2) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]
    start = datetime(2026, 10, 31, 12, 0, tzinfo=NEW_YORK)  # 2026-11-01 02:00 EDT -> 01:00 EST
    assert upcoming(cron("30 1 * * *", "America/New_York"), start, 2) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]
    # Hourly across the fold: 01:00 twice on the wall, once in the schedule.
    start = datetime(2026, 11, 1, 0, 0, tzinfo=NEW_YORK)
    times = cron("0 * * * *", "America/New_York").upcoming(to_ms(start), 3)
    assert [iso(t, NEW_YORK) for t in times] == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]
    assert times[1] - times[0] == 2 * 3_600_000


def test_every_is_anchored_to_creation_and_does_not_drift() -> None:
    anchor = 1_000_000
    every = build_schedule("every", every="90s", anchor_ms=anchor)
    assert every.next_after(anchor) == anchor + 90_000
    # However late the previous fire was, the next stays on the anchor's grid.
    assert every.next_after(anchor + 90_000 + 37_123) == anchor + 180_000
    assert every.next_after(anchor + 10 * 90_000) == anchor + 11 * 90_000
    assert parse_duration("1h30m") == 5_400_000
    assert parse_duration("2d") == 172_800_000


def test_at_fires_once() -> None:
    at = build_schedule("at", at="2026-12-01T09:00:00+01:00")
    instant = to_ms(datetime(2026, 12, 1, 8, 0, tzinfo=zone("UTC")))
    assert at.next_after(instant - 1) == instant
    assert at.next_after(instant) is None
    assert at.upcoming(instant - 1, 5) == [instant]


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("cron", "61 * * * *", "bad minute field '61'"),
        ("cron", "* * *", "has 3 fields; five are needed"),
        ("cron", "0 0 * * * *", "has 6 fields"),
        ("cron", "0 0 31 2 *", "bad day-of-month"),
        ("cron", "*/0 * * * *", "bad minute"),
        ("every", "500ms", "shorter than the minimum of one second"),
        ("every", "15", "has no unit"),
        ("every", "soon", "cannot read 'soon' as a duration"),
        ("at", "2026-12-01T09:00:00", "has no UTC offset"),
        ("at", "tomorrow", "not an ISO 8601 date-time"),
    ],
)
def test_invalid_schedules_say_why(kind: str, value: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason.replace("*", r"\*")):
        build_schedule(kind, expr=value, every=value, at=value)


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(ScheduleError, match="unknown IANA time zone 'Mars/Olympus'"):
        build_schedule("cron", expr="0 9 * * *", timezone="Mars/Olympus")
