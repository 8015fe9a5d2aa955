"""When a job fires: `cron` expressions in an IANA zone, fixed `every` intervals, one-shot `at`.

Times cross this module as Unix milliseconds (UTC instants). Cron matching is done by cronsim
on *naive local wall-clock* times; mapping a matched local time to an instant is ours, because
that is where daylight-saving changes bite:

- a local time skipped by a spring-forward gap fires at the first existing minute after the
  gap (02:30 in Prague on the last Sunday of March fires at 03:00 CEST);
- a local time that occurs twice in an autumn fold fires once, at its first occurrence.

Every time a schedule produces lies in [MIN_INSTANT_MS, MAX_INSTANT_MS]: inside that range an
instant can be shown in any zone (offsets are under a day) and stored in a signed 64-bit
column. A schedule is refused when it would leave it, and a time beyond it is "none", so a
far-future schedule can neither be stored nor break a listing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

ScheduleKind = Literal["cron", "every", "at"]

MIN_EVERY_MS = 1000
# Anything rarer than yearly belongs in a cron expression (which follows the calendar) or an
# `at`; 366 days still allows "every 365d" and "every 366d".
MAX_EVERY_MS = 366 * 86_400_000
# Datetime's range (years 1 to 9999) less a day at each end, so an instant in it can be shown
# in any zone: no UTC offset reaches a whole day.
MIN_INSTANT_MS = int(datetime(1, 1, 2, tzinfo=UTC).timestamp() * 1000)
MAX_INSTANT_MS = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp() * 1000)
# How far ahead a cron expression's next tick is looked for; an expression with no tick in
# this time is refused rather than stored as a job that never fires.
CRON_HORIZON = timedelta(days=366 * 5)
# Input sizes: the longest sensible text of each is far shorter (every value of all five cron
# fields listed one by one is 356 characters; the longest IANA zone name is 32).
MAX_CRON_CHARS = 512
MAX_DURATION_CHARS = 64
MAX_INSTANT_CHARS = 64
MAX_ZONE_CHARS = 64
# Longer than any real gap (Samoa skipped a whole calendar day in 2011).
_MAX_GAP = timedelta(days=2)
_MINUTE = timedelta(minutes=1)
_CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# ASCII digits only: `\d` would take "١٠s" or "²s", which int() reads or rejects at will.
_DURATION = re.compile(r"([0-9]+)(ms|d|h|m|s)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says why."""


def shown(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters: error messages echo input, not megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def zone(name: str) -> ZoneInfo:
    if len(name) > MAX_ZONE_CHARS:
        raise ScheduleError(f"unknown IANA time zone: longer than {MAX_ZONE_CHARS} characters")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a key naming something in the zone directory that is not a readable file.
        raise ScheduleError(f"unknown IANA time zone {shown(name)}") from None


def representable(ms: int) -> bool:
    return MIN_INSTANT_MS <= ms <= MAX_INSTANT_MS


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int, tz: ZoneInfo | None = None) -> datetime:
    if not representable(ms):
        raise ScheduleError(f"{ms} ms is outside the times a schedule can hold")
    return datetime.fromtimestamp(ms / 1000, tz or UTC)


def iso(ms: int, tz: ZoneInfo | None = None) -> str:
    return from_ms(ms, tz).isoformat(timespec="seconds")


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `1h30m`, `2d` -> milliseconds (at least one second)."""
    if len(text) > MAX_DURATION_CHARS:
        raise ScheduleError(f"every: longer than {MAX_DURATION_CHARS} characters")
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned:
        raise ScheduleError("every: empty duration; use e.g. 30s, 15m, 2h, 1d or 1h30m")
    if cleaned.isascii() and cleaned.isdigit():
        raise ScheduleError(f"every: {text!r} has no unit; use e.g. {cleaned}s or {cleaned}m")
    pos, total = 0, 0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned):
        raise ScheduleError(
            f"every: cannot read {text!r} as a duration; use e.g. 30s, 15m, 2h, 1d or 1h30m"
        )
    if total < MIN_EVERY_MS:
        raise ScheduleError(f"every: {text!r} is shorter than the minimum of one second")
    if total > MAX_EVERY_MS:
        raise ScheduleError(
            f"every: {text!r} is longer than the maximum of 366 days (366d); "
            "use a cron expression or an `at` for rarer runs"
        )
    return total


def format_duration(ms: int) -> str:
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNIT_MS[unit]
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0s"


def parse_instant(text: str) -> int:
    """An ISO 8601 instant that carries its UTC offset (`Z` or `+01:00`)."""
    if len(text) > MAX_INSTANT_CHARS:
        raise ScheduleError(f"at: longer than {MAX_INSTANT_CHARS} characters")
    cleaned = text.strip()
    try:
        # fromisoformat() takes any character as the date-time separator, a NUL included.
        if not (cleaned.isascii() and cleaned.isprintable()):
            raise ValueError(cleaned)
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ScheduleError(
            f"at: {text!r} is not an ISO 8601 date-time (e.g. 2026-12-01T09:00:00+01:00)"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ScheduleError(f"at: {text!r} has no UTC offset; add one, e.g. Z or +01:00")
    ms = to_ms(moment)
    if not representable(ms):
        # The year alone does not say it: 9999-12-31T23:59:59-12:00 is in year 10000 in UTC.
        raise ScheduleError(
            f"at: {text!r} is outside the supported range "
            f"{iso(MIN_INSTANT_MS)} to {iso(MAX_INSTANT_MS)}"
        )
    return ms


def check_cron(expr: str) -> str:
    """Validate a five-field expression; the normalised (single-spaced) form."""
    if len(expr) > MAX_CRON_CHARS:
        raise ScheduleError(f"cron: longer than {MAX_CRON_CHARS} characters")
    return _parse_cron(expr)


def _parse_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron: {expr!r} has {len(fields)} fields; five are needed "
            "(minute hour day-of-month month day-of-week)"
        )
    normalised = " ".join(fields)
    try:
        CronSim(normalised, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ScheduleError(f"cron: {expr!r}: {_cron_reason(str(exc), fields)}") from None
    return normalised


def _cron_reason(message: str, fields: list[str]) -> str:
    # cronsim says "Bad minute"; name the offending text too, so a user sees what to fix.
    lowered = message.lower()
    for index, name in enumerate(_CRON_FIELDS):
        if lowered == f"bad {name}":
            return f"bad {name} field {fields[index]!r}"
    return lowered


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule. `anchor_ms` anchors `every` (the job's creation)."""

    kind: ScheduleKind
    expr: str = ""  # cron: the expression
    timezone: str = "UTC"  # cron: the IANA zone its fields are read in
    every_ms: int = 0
    at_ms: int = 0
    anchor_ms: int = 0

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def describe(self) -> str:
        if self.kind == "cron":
            return f"cron {self.expr!r} ({self.timezone})"
        if self.kind == "every":
            return f"every {format_duration(self.every_ms)}"
        if not representable(self.at_ms):
            return f"at {self.at_ms} ms (out of range)"
        return f"at {iso(self.at_ms)}"

    def problem(self) -> str | None:
        """Why this schedule cannot be used, or None. New schedules are checked when built;
        this is for one an older version stored before those checks existed."""
        try:
            if self.kind == "cron":
                self.tz  # noqa: B018 - loading the zone is the check
                _parse_cron(self.expr)
            elif self.kind == "every":
                # A longer interval than MAX_EVERY_MS that an older version stored still
                # works as long as its ticks can be represented; only then is it a problem.
                if self.every_ms < MIN_EVERY_MS or not representable(
                    self.anchor_ms + self.every_ms
                ):
                    return (
                        f"every: {format_duration(self.every_ms)} has no tick in the "
                        "supported range; send a new schedule or delete the job"
                    )
            elif self.kind == "at":
                if not representable(self.at_ms):
                    return (
                        f"at: {self.at_ms} ms is outside the supported range; "
                        "send a new schedule or delete the job"
                    )
            else:
                return f"kind: unknown schedule kind {shown(self.kind)}"
        except ScheduleError as exc:
            return f"{exc}; send a new schedule or delete the job"
        return None

    def next_after(self, after_ms: int) -> int | None:
        """The first fire time strictly after `after_ms`; None when there is none, or when it
        would lie beyond MAX_INSTANT_MS. Raises ScheduleError for a stored zone or
        expression that no longer loads."""
        if self.kind == "every":
            if self.every_ms <= 0:
                return None  # never stored by this version; no division by zero either
            if after_ms < self.anchor_ms:
                nxt = self.anchor_ms + self.every_ms
            else:
                # Whole intervals since the anchor: never drifts, whatever the firing lag was.
                steps = (after_ms - self.anchor_ms) // self.every_ms + 1
                nxt = self.anchor_ms + steps * self.every_ms
            return nxt if representable(nxt) else None
        if self.kind == "at":
            return self.at_ms if self.at_ms > after_ms and representable(self.at_ms) else None
        if self.kind == "cron":
            return _next_cron(self.expr, self.tz, after_ms)
        raise ScheduleError(f"kind: unknown schedule kind {shown(self.kind)}")

    def upcoming(self, after_ms: int, count: int) -> list[int]:
        times: list[int] = []
        cursor = after_ms
        while len(times) < count:
            nxt = self.next_after(cursor)
            if nxt is None:
                break
            times.append(nxt)
            cursor = nxt
        return times

    def between(self, after_ms: int, until_ms: int, limit: int) -> Iterator[int]:
        """Fire times in (after_ms, until_ms], at most `limit` of them."""
        cursor = after_ms
        for _ in range(limit):
            nxt = self.next_after(cursor)
            if nxt is None or nxt > until_ms:
                return
            yield nxt
            cursor = nxt


def _next_cron(expr: str, tz: ZoneInfo, after_ms: int) -> int | None:
    if not representable(after_ms):
        return None
    after = from_ms(after_ms, tz)
    # Walk matching wall-clock times from the local time of `after`. In a fold, the local time
    # of `after` may be the second pass over times that already fired: their first occurrence
    # is not after `after`, so they are passed over below, and each repeated time fires once.
    local = after.replace(tzinfo=None)
    try:
        for candidate in CronSim(expr, local):
            instant = _instant(candidate, tz)
            if instant > after_ms:
                return instant if representable(instant) else None
            if candidate - local > CRON_HORIZON:
                break
    except CronSimError as exc:  # a stored expression this cronsim no longer reads
        raise ScheduleError(f"cron: {shown(expr)}: {str(exc).lower()}") from None
    except (OverflowError, ValueError):
        return None  # the walk ran off the end of the calendar (year 9999)
    return None


def _instant(local: datetime, tz: ZoneInfo) -> int:
    """The instant a matched local wall-clock time fires at (see the module docstring)."""
    first = local.replace(tzinfo=tz, fold=0)
    if _exists(local, tz):
        return to_ms(first)
    probe = local.replace(second=0, microsecond=0) + _MINUTE
    limit = local + _MAX_GAP
    while probe < limit:
        if _exists(probe, tz):
            return to_ms(probe.replace(tzinfo=tz, fold=0))
        probe += _MINUTE
    return to_ms(first)  # unreachable for real zones; fall back to the pre-gap offset


def _exists(local: datetime, tz: ZoneInfo) -> bool:
    roundtrip = local.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return roundtrip == local


def build_schedule(
    kind: str,
    *,
    expr: str = "",
    timezone: str = "UTC",
    every: str | int = "",
    at: str = "",
    anchor_ms: int = 0,
) -> Schedule:
    if kind == "cron":
        zone(timezone)
        return Schedule("cron", expr=check_cron(expr), timezone=timezone)
    if kind == "every":
        every_ms = every if isinstance(every, int) else parse_duration(every)
        if every_ms < MIN_EVERY_MS:
            raise ScheduleError("every: shorter than the minimum of one second")
        return Schedule("every", every_ms=every_ms, anchor_ms=anchor_ms)
    if kind == "at":
        return Schedule("at", at_ms=parse_instant(at))
    raise ScheduleError(f"kind: must be one of cron, every, at (got {kind!r})")
