"""Task schedules: `cron` (5 fields, in an IANA zone), `every` (a fixed period), `at` (once).

Pure: the current time is always passed in, never read. Times go in and come out aware UTC.

Cron is matched on the wall clock of the task's zone, then converted to UTC. Across DST:
- a job whose hour field is `*` follows real time: it has no runs in the hour the clock skips
  and runs in both passes of the hour the clock repeats;
- any other job follows the wall clock and runs once per matching wall-clock time: a time the
  clock skips (02:30 in Europe/Berlin on the spring-forward day) runs once, at the instant of
  the jump (03:00 CEST), and a time the clock repeats (02:30 on the fall-back day) runs once,
  at its first pass (02:30 CEST). croniter alone would run it twice, so we map times ourselves.

`every` is a fixed period of real time from its anchor (creation time), whatever the zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from fased.bounds import check_zone_name
from fased.errors import UsageError
from fased.timeparse import is_duration, parse_duration, parse_time, parse_ts, zone_info

KINDS = ("cron", "every", "at")
BACKOFF_SECONDS = (30, 60, 300, 900, 3600)
SKIP_CAP = 10_000  # missed cron runs are counted up to this many, then the count stops
CRON_CHARS = 1000  # every minute listed one by one is under 200
CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_HINTS = (
    "0-59", "0-23", "1-31 or L", "1-12 or jan-dec", "0-6 or sun-sat (0 and 7 are Sunday)"
)
_TIME_OF_DAY = re.compile(r"([0-9]{1,2})(?::([0-9]{2}))?(?::([0-9]{2}))?\s*([ap]m)?", re.I)
_PHRASE_HINT = (
    "use one of: every 30m | at 2026-11-21T09:00Z | at 09:00 | in 20m | cron */5 * * * * "
    "| a 5-field cron expression"
)


@dataclass(frozen=True)
class Schedule:
    """One schedule of a task; build it with parse_schedule or parse_schedule_phrase."""

    kind: str  # "cron" | "every" | "at"
    expr: str  # cron expression, duration text, or RFC 3339 UTC time (for at, normalised)
    tz: str | None = None  # IANA zone for cron (UTC when None); as given for at
    anchor: str | None = None  # RFC 3339 UTC creation time; `every` runs at anchor + k*period

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "every" and not self.anchor:
            raise ValueError("an `every` schedule needs an anchor (the time it started)")

    def to_dict(self) -> dict[str, str]:
        """The stored form: kind and expr, plus tz and anchor when set."""
        d = {"kind": self.kind, "expr": self.expr}
        if self.tz is not None:
            d["tz"] = self.tz
        if self.anchor is not None:
            d["anchor"] = self.anchor
        return d

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Schedule:
        """Read back what to_dict wrote."""
        return cls(kind=d["kind"], expr=d["expr"], tz=d.get("tz"), anchor=d.get("anchor"))

    def describe(self) -> str:
        """One line for people: `every 1h`, `cron 0 9 * * 1-5 (Europe/Berlin)`, `at ...Z`."""
        if self.kind == "cron":
            return f"cron {self.expr} ({self.tz or 'UTC'})"
        return f"{self.kind} {self.expr}"


def parse_schedule(*, cron: str | None = None, every: str | None = None, at: str | None = None,
                   tz: str | None = None, now: datetime) -> Schedule:
    """Validate what the user typed (--cron/--every/--at, --tz) into a Schedule."""
    now = _utc(now, "now")
    given = [f"--{name}" for name, value in (("cron", cron), ("every", every), ("at", at))
             if value is not None]
    if len(given) != 1:
        got = f", got {' and '.join(given)}" if given else ""
        raise UsageError(f"exactly one schedule is needed: --cron, --every or --at{got}",
                         hint="for example --every 1h, --cron '0 9 * * 1-5' or --at 09:00")
    anchor = _fmt(now)
    if every is not None:
        if tz is not None:
            raise UsageError("--tz applies only to --cron and --at",
                             hint="an --every period is the same length in every zone")
        parse_duration(every)
        return Schedule("every", "".join(every.split()).lower(), anchor=anchor)
    if cron is not None:
        zone_name = tz or "UTC"
        _zone(zone_name)
        schedule = Schedule("cron", " ".join(_check_cron(cron)), tz=zone_name, anchor=anchor)
        if next_run(schedule, now) is None:
            raise UsageError(f"cron expression {schedule.expr!r} never runs",
                             hint="check the day of month against the month (30 2 is Feb 30)")
        return schedule
    if tz is not None:
        _zone(tz)  # parse_time skips the zone for a relative time; check it anyway
    when = _parse_at(at, tz, now)
    if when <= now:
        raise UsageError(f"--at {at!r} is in the past ({_fmt(when)})",
                         hint="give a future time: 2026-11-21T09:00Z, 09:00 or 20m")
    return Schedule("at", _fmt(when), tz=tz, anchor=anchor)


def parse_schedule_phrase(text: str, *, now: datetime, tz: str | None = None) -> Schedule:
    """`every 30m`, `at 2026-11-21T09:00Z`, `at 09:00`, `in 20m`, `cron */5 * * * *` or a bare
    5-field cron expression (for `fased chat --schedule`)."""
    words = text.split(None, 1)
    head = words[0].lower() if words else ""
    rest = words[1] if len(words) > 1 else ""
    if head == "every":
        return parse_schedule(every=rest, tz=tz, now=now)
    if head == "at":
        return parse_schedule(at=rest, tz=tz, now=now)
    if head == "in":
        if not is_duration(rest):
            raise UsageError(f"invalid schedule {text!r}: `in` needs a duration",
                             hint="for example: in 20m, in 2h, in 1d")
        return parse_schedule(at=rest, tz=tz, now=now)
    if head == "cron":
        return parse_schedule(cron=rest, tz=tz, now=now)
    if len(text.split()) == 5:
        return parse_schedule(cron=text, tz=tz, now=now)
    raise UsageError(f"invalid schedule {text!r}", hint=_PHRASE_HINT)


def next_run(schedule: Schedule, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after`; None when there is none (a past `at`)."""
    after = _utc(after, "after")
    if schedule.kind == "at":
        when = _parse_utc(schedule.expr)
        return when if when > after else None
    if schedule.kind == "every":
        anchor, period = _parse_utc(schedule.anchor), parse_duration(schedule.expr)
        k = max((after - anchor) // period + 1, 1)
        return anchor + k * period
    return next((u for u in _cron_times(schedule, after, False) if u > after), None)


def due_occurrences(schedule: Schedule, last_fired: datetime | None,
                    now: datetime) -> tuple[datetime | None, int]:
    """The latest occurrence <= now not yet fired, and how many earlier ones were missed.

    "Not yet fired" means strictly after `last_fired` (pass the occurrence returned here when
    it ran), or after the anchor when it never ran; so after downtime a task runs once and the
    rest are reported as skipped. (None, 0) when nothing is due. `every` is pure arithmetic;
    cron counts missed runs one by one up to SKIP_CAP (10000), so the count saturates there.
    A cron or at schedule with neither anchor nor last run counts nothing as missed."""
    now = _utc(now, "now")
    since = _utc(last_fired, "last_fired") if last_fired is not None else (
        _parse_utc(schedule.anchor) if schedule.anchor else None)
    if schedule.kind == "at":
        when = _parse_utc(schedule.expr)
        fired = last_fired is not None and when <= since
        return (when, 0) if when <= now and not fired else (None, 0)
    if schedule.kind == "every":
        anchor, period = _parse_utc(schedule.anchor), parse_duration(schedule.expr)
        k_now = (now - anchor) // period
        latest = anchor + k_now * period
        if k_now < 1 or latest <= since:
            return None, 0
        k_done = max((since - anchor) // period, 0)
        return latest, k_now - k_done - 1
    latest = next((u for u in _cron_times(schedule, now, True) if u <= now), None)
    if latest is None or (since is not None and latest <= since):
        return None, 0
    skipped = 0
    if since is not None:
        for u in _cron_times(schedule, since, False):
            if u >= latest or skipped >= SKIP_CAP:
                break
            skipped += u > since
    return latest, skipped


def backoff_delay(consecutive_failures: int) -> timedelta:
    """How long to wait after failures: 1 -> 30 s, 2 -> 1 m, 3 -> 5 m, 4 -> 15 m, 5+ -> 1 h."""
    if consecutive_failures < 1:
        return timedelta(0)
    return timedelta(seconds=BACKOFF_SECONDS[min(consecutive_failures, len(BACKOFF_SECONDS)) - 1])


# --- helpers ---------------------------------------------------------------------------------


def _utc(when: datetime, name: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return when.astimezone(UTC)


def _fmt(when: datetime) -> str:
    """RFC 3339 UTC, with microseconds only when there are some."""
    when = when.astimezone(UTC)
    frac = f".{when.microsecond:06d}" if when.microsecond else ""
    return when.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _parse_utc(text: str) -> datetime:
    return parse_ts(text).astimezone(UTC)


def _zone(name: str):
    check_zone_name(name)  # zone_info takes '' for "no zone"; here a zone is required
    return zone_info(name)


def _check_cron(expr: str) -> list[str]:
    """Split a 5-field cron expression, naming the first field croniter rejects."""
    from croniter import croniter

    if len(expr) > CRON_CHARS:
        raise UsageError(f"invalid cron expression: longer than {CRON_CHARS} characters",
                         hint="for example '0 9 * * 1-5' is 09:00 on weekdays")
    fields = expr.split()
    if len(fields) != 5:
        raise UsageError(
            f"invalid cron expression {expr!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}",
            hint="for example '0 9 * * 1-5' is 09:00 on weekdays; seconds, years and @daily "
            "style names are not supported",
        )
    for i, field in enumerate(fields):
        name = CRON_FIELDS[i]
        if re.search(r"(?<![a-z])[rh](?![a-z])", field, re.I):
            # croniter would pick a random or hashed value: the task would drift between runs.
            raise UsageError(f"invalid cron expression {expr!r}: {name} field {field!r} uses "
                             "R or H, which are not supported", hint="give explicit values")
        probe = ["*"] * 5
        probe[i] = field
        if not croniter.is_valid(" ".join(probe)):
            raise UsageError(f"invalid cron expression {expr!r}: bad {name} field {field!r}",
                             hint=f"{name} takes {_FIELD_HINTS[i]}, as numbers, ranges (1-5), "
                             "lists (1,3) or steps (*/15)")
    if not croniter.is_valid(" ".join(fields)):
        raise UsageError(f"invalid cron expression {expr!r}",
                         hint="for example '0 9 * * 1-5' is 09:00 on weekdays")
    return fields


def parse_future_time(text: str, *, now: datetime, tz: str | None = None) -> datetime:
    """A time as `--at` takes it: RFC 3339, a local date and time, a time of day (its next
    occurrence after `now`) or a duration from now (`20m`); aware UTC."""
    return _parse_at(text, tz, now)


def _parse_at(text: str, tz: str | None, now: datetime) -> datetime:
    """An `at` value as aware UTC; a bare time of day means its next occurrence after now."""
    m = _TIME_OF_DAY.fullmatch(text.strip())
    if m is not None and m[2] is None and m[4] is None:
        raise UsageError(f"invalid time {text!r}: a bare number is ambiguous",
                         hint=f"write a time of day ({text.strip()}:00) or a duration "
                         f"({text.strip()}m)")
    if m is None:
        return parse_time(text, now=now, tz=tz, future=True)
    hour, minute, second = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    if m[4]:
        if not 1 <= hour <= 12:
            raise UsageError(f"invalid time {text!r}: the hour must be 1-12 with am/pm")
        hour = hour % 12 + (12 if m[4].lower() == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise UsageError(f"invalid time {text!r}", hint="use 24-hour HH:MM such as 09:00")
    clock = time(hour, minute, second)
    zone = _zone(tz) if tz else None
    # Without --tz a time of day means the machine's local zone, as in fased.timeparse.
    day = now.astimezone(zone).date() if zone else now.astimezone().date()
    for offset in range(3):  # today, tomorrow, or (past a skipped hour) the day after
        local = datetime.combine(day + timedelta(days=offset), clock)
        when = (local.replace(tzinfo=zone) if zone else local.astimezone()).astimezone(UTC)
        if when > now:
            return when
    raise AssertionError("unreachable: a time of day recurs within three days")


def _cron_times(schedule: Schedule, start: datetime, backwards: bool) -> Iterator[datetime]:
    """Cron occurrences in UTC, sorted and distinct, from about `start` on (or back); may
    include a few on the other side of `start`, so callers filter. Ends if croniter finds none."""
    last = None
    for when in _cron_instants(schedule, start, backwards):
        if when != last:  # a jumped-over time lands on the jump, which may match as well
            yield when
        last = when


def _cron_instants(schedule: Schedule, start: datetime, backwards: bool) -> Iterator[datetime]:
    from croniter import CroniterBadDateError, croniter

    zone = _zone(schedule.tz or "UTC")
    wildcard_hour = schedule.expr.split()[1] == "*"
    local = start.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    # A time in a repeated hour has later walls mapping before it (and earlier after it):
    # start that far away, plus a minute because croniter excludes its start.
    spread = abs(wall.replace(tzinfo=zone, fold=0).utcoffset()
                 - wall.replace(tzinfo=zone, fold=1).utcoffset())
    step = timedelta(minutes=1) + spread
    it = croniter(schedule.expr, wall + step if backwards else wall - step)
    run: list[datetime] = []  # instants of consecutive walls in a DST transition
    while True:
        try:
            wall = it.get_prev(datetime) if backwards else it.get_next(datetime)
        except CroniterBadDateError:
            break
        kind, instants = _wall_instants(wall, zone, wildcard_hour)
        if kind == "normal":
            yield from sorted(set(run), reverse=backwards)
            run = []
            yield instants[0]
        else:
            run.extend(instants)
    yield from sorted(set(run), reverse=backwards)


def _wall_instants(wall: datetime, zone, wildcard_hour: bool) -> tuple[str, list[datetime]]:
    """The UTC instants a matching wall-clock time stands for (see the module docstring)."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return "normal", [first.astimezone(UTC)]
    a, b = first.astimezone(UTC), second.astimezone(UTC)
    if a.astimezone(zone).replace(tzinfo=None) == wall:  # the wall time happens twice
        return "repeated", [a, b] if wildcard_hour else [a]
    if wildcard_hour:
        return "skipped", []
    # Skipped: find the jump. fold=1 maps before it and fold=0 after it (PEP 495).
    low, high = b, a
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zone).utcoffset() == second.utcoffset():
            high = mid
        else:
            low = mid
    return "skipped", [high]
