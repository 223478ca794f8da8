"""Parse the times and durations users type: `30m`, `1h30m`, `2d`, RFC 3339, `2026-11-21 09:00`.

python-dateutil is imported only when a value is not a plain duration or seq, so the common
cases stay cheap.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta

from fased.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d*)?")
_DURATION_FULL = re.compile(r"^(?:\s*\d+(?:\.\d+)?\s*[smhdw])+\s*$")


def utc_now() -> datetime:
    """The current time in UTC: the one place fased reads the clock. FASED_NOW (RFC 3339)
    pins it, so tests (and what-if runs of schedules) move time without sleeping."""
    pinned = os.environ.get("FASED_NOW")
    if pinned:
        return parse_ts(pinned).astimezone(UTC)
    return datetime.now(UTC)


def is_duration(text: str) -> bool:
    """True when `text` looks like `30m`, `1h30m`, `2d`."""
    return bool(_DURATION_FULL.match(text.strip().lower()))


def parse_duration(text: str) -> timedelta:
    """`30m`, `1h30m`, `1.5h`, `2d`, `1w` -> timedelta. Raises UsageError otherwise."""
    value = text.strip().lower()
    if not _DURATION_FULL.match(value):
        raise UsageError(
            f"invalid duration {text!r}",
            hint="use a number and a unit: 30s, 15m, 1h, 1h30m, 2d, 1w",
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: it must be longer than zero")
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
    relative duration meaning that long ago (or from now when `future`). Returns aware UTC."""
    value = text.strip()
    now = now or utc_now()
    if is_duration(value):
        delta = parse_duration(value)
        return now + delta if future else now - delta
    zone = _zone(tz)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        from dateutil import parser as dateutil_parser

        try:
            if _NUMBER.fullmatch(value):  # dateutil would read "-5" as the 5th, "2025" as a date
                raise ValueError(value)
            local_now = now.astimezone(zone) if zone else now.astimezone()
            parsed = dateutil_parser.parse(value, default=local_now.replace(tzinfo=None))
        except (ValueError, OverflowError):
            raise UsageError(
                f"invalid time {text!r}",
                hint="use RFC 3339 (2026-11-21T09:00:00Z), a local time (2026-11-21 09:00) "
                "or a duration (30m, 2h, 1d)",
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone) if zone else parsed.astimezone()
    return parsed.astimezone(UTC)


def _zone(name: str | None):
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r}",
                         hint="use an IANA name such as Europe/Berlin") from None
