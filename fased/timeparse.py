"""Parse the times and durations users type: `30m`, `1h30m`, `2d`, RFC 3339, `2026-11-21 09:00`.

Every value is bounded (fased.bounds): a duration lies between 1 second and 100 years, a
typed time and FASED_NOW in the years 1970 to 9000, so arithmetic on them never overflows.
python-dateutil is imported only when a value is not a plain duration or seq, so the common
cases stay cheap.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta

from fased.bounds import TYPED_CHARS, check_seconds, check_time, check_zone_name
from fased.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d|w)")
_NUMBER = re.compile(r"[-+]?[0-9]+(?:[.,][0-9]*)?")
_DURATION_FULL = re.compile(r"^(?:\s*[0-9]+(?:\.[0-9]+)?\s*[smhdw])+\s*$")
_TIME_HINT = ("use RFC 3339 (2026-11-21T09:00:00Z), a local time (2026-11-21 09:00) "
              "or a duration (30m, 2h, 1d)")


def utc_now() -> datetime:
    """The current time in UTC: the one place fased reads the clock. FASED_NOW (RFC 3339)
    pins it, so tests move time without sleeping (what-if questions are fased.preview's: it
    changes nothing); a value that is no time, or outside the years 1970-9000, is a
    UsageError naming it."""
    pinned = os.environ.get("FASED_NOW")
    if pinned:
        return pinned_now(pinned)
    return datetime.now(UTC)


def pinned_now(text: str) -> datetime:
    """FASED_NOW's value as aware UTC (a time without an offset is local time)."""
    shown = f"FASED_NOW={text[:60]!r}"
    hint = "unset it (it pins the clock for tests), or give an RFC 3339 time such as " \
        "FASED_NOW=2026-11-21T09:00:00Z"
    try:
        when = parse_ts(text.strip())
        if when.tzinfo is None:
            when = when.astimezone()
    except (ValueError, OverflowError):
        raise UsageError(f"{shown} is not an RFC 3339 time", hint=hint) from None
    try:
        return check_time(when, shown)
    except UsageError as exc:
        raise UsageError(exc.message, hint=hint) from None


def is_duration(text: str) -> bool:
    """True when `text` looks like `30m`, `1h30m`, `2d`."""
    return len(text) <= TYPED_CHARS and bool(_DURATION_FULL.match(text.strip().lower()))


def parse_duration(text: str) -> timedelta:
    """`30m`, `1h30m`, `1.5h`, `2d`, `1w` -> timedelta, from 1 second to 100 years.
    Raises UsageError otherwise."""
    value = text.strip().lower()
    shown = text[:TYPED_CHARS]
    if not is_duration(value):
        raise UsageError(
            f"invalid duration {shown!r}",
            hint="use a number and a unit: 30s, 15m, 1h, 1h30m, 2d, 1w",
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))
    if seconds <= 0:
        raise UsageError(f"invalid duration {shown!r}: it must be longer than zero")
    check_seconds(seconds, f"duration {shown!r}")
    return timedelta(seconds=seconds)


def format_ts(when: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`: the form every event's `ts` uses."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    """Read back a `ts` written by format_ts (fast path), or any ISO 8601 time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_time(text: str, *, now: datetime | None = None, tz: str | None = None,
               future: bool = False) -> datetime:
    """A point in time: RFC 3339, a local date/time (in `tz`, else the local zone), or a
    relative duration meaning that long ago (or from now when `future`). Returns aware UTC;
    an absolute time must lie in the years 1970 to 9000."""
    value = text.strip()
    now = now or utc_now()
    if is_duration(value):
        delta = parse_duration(value)
        return now + delta if future else now - delta
    shown = text[:TYPED_CHARS]
    zone = zone_info(tz)
    try:
        if len(value) > TYPED_CHARS:
            raise ValueError(value)
        parsed = _parse_absolute(value, now, zone)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone) if zone else parsed.astimezone()
        parsed.utcoffset()  # dateutil may build an offset datetime itself refuses
    except (ValueError, OverflowError):
        raise UsageError(f"invalid time {shown!r}", hint=_TIME_HINT) from None
    return check_time(parsed, f"time {shown!r}")


def _parse_absolute(value: str, now: datetime, zone) -> datetime:
    """RFC 3339 / ISO 8601 first, then the forms dateutil reads; ValueError otherwise."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        pass
    from dateutil import parser as dateutil_parser

    if _NUMBER.fullmatch(value):  # dateutil would read "-5" as the 5th, "2025" as a date
        raise ValueError(value)
    if any(c.isdigit() and not c.isascii() for c in value):  # dateutil reads "٥" as 5
        raise ValueError(value)
    local_now = now.astimezone(zone) if zone else now.astimezone()
    # what the text does not say comes from this default: today, at its start (as `date
    # -d` reads "dec 5"); now's own seconds made "dec 5 10:30" 10:30:46.086839
    today = local_now.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return dateutil_parser.parse(value, default=today)


def zone_info(name: str | None):
    """The ZoneInfo for an IANA name (None for None or ''); UsageError when unknown."""
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    check_zone_name(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UsageError(f"unknown time zone {name!r}",
                         hint="use an IANA name such as Europe/Berlin") from None
