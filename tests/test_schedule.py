"""Schedules: parsing and errors, next runs for each kind, DST, missed-run catch-up, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fased.errors import UsageError
from fased.schedule import (
    SKIP_CAP,
    Schedule,
    backoff_delay,
    due_occurrences,
    next_run,
    parse_schedule,
    parse_schedule_phrase,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FAST = settings(derandomize=True, database=None, deadline=None, max_examples=100)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def runs(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Every occurrence in (start, end], by chaining next_run."""
    out = []
    t = next_run(schedule, start)
    while t is not None and t <= end:
        out.append(t)
        t = next_run(schedule, t)
    return out


def cron(expr: str, tz: str | None = None, now: datetime = NOW) -> Schedule:
    return parse_schedule(cron=expr, tz=tz, now=now)


# --- parsing ------------------------------------------------------------------------------


def test_parse_each_kind() -> None:
    every = parse_schedule(every="1h 30M", now=NOW)
    assert every == Schedule("every", "1h30m", anchor="2026-03-01T12:00:00Z")
    assert every.describe() == "every 1h30m"
    c = cron(" 0  9 * *   1-5 ", "Europe/Berlin")
    assert (c.expr, c.tz, c.describe()) == (
        "0 9 * * 1-5", "Europe/Berlin", "cron 0 9 * * 1-5 (Europe/Berlin)")
    assert cron("*/5 * * * *").describe() == "cron */5 * * * * (UTC)"
    at = parse_schedule(at="2026-11-21T09:00+01:00", now=NOW)
    assert at.expr == "2026-11-21T08:00:00Z" and at.describe() == "at 2026-11-21T08:00:00Z"
    assert parse_schedule(at="20m", now=NOW).expr == "2026-03-01T12:20:00Z"
    local = parse_schedule(at="2026-11-21 09:00", tz="America/New_York", now=NOW)
    assert (local.expr, local.tz) == ("2026-11-21T14:00:00Z", "America/New_York")


def test_round_trip_through_dict() -> None:
    for s in (cron("0 9 * * *", "Europe/Berlin"), parse_schedule(every="1d", now=NOW),
              parse_schedule(at="1h", now=NOW)):
        assert Schedule.from_dict(s.to_dict()) == s
    assert parse_schedule(every="1d", now=NOW).to_dict() == {
        "kind": "every", "expr": "1d", "anchor": "2026-03-01T12:00:00Z"}


def test_bad_stored_schedules_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown schedule kind 'weekly'"):
        Schedule.from_dict({"kind": "weekly", "expr": "x"})
    with pytest.raises(ValueError, match="needs an anchor"):
        Schedule("every", "1h")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one schedule is needed: --cron, --every or --at"),
        ({"cron": "* * * * *", "every": "1h"}, "exactly one schedule is needed: --cron, --every "
         "or --at, got --cron and --every"),
        ({"every": "1h", "tz": "Europe/Berlin"}, "--tz applies only to --cron and --at"),
        ({"every": "soon"}, "invalid duration 'soon'"),
        ({"cron": "0 9 * *"}, "invalid cron expression '0 9 * *': expected 5 fields (minute "
         "hour day-of-month month day-of-week), got 4"),
        ({"cron": "0 0 9 * * *"}, "expected 5 fields (minute hour day-of-month month "
         "day-of-week), got 6"),
        ({"cron": "@daily"}, "invalid cron expression '@daily': expected 5 fields"),
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *': bad minute field '61'"),
        ({"cron": "0 24 * * *"}, "bad hour field '24'"),
        ({"cron": "0 9 0 * *"}, "bad day-of-month field '0'"),
        ({"cron": "0 9 * 13 *"}, "bad month field '13'"),
        ({"cron": "0 9 * * mon-xyz"}, "bad day-of-week field 'mon-xyz'"),
        ({"cron": "*/0 * * * *"}, "bad minute field '*/0'"),
        ({"cron": "H * * * *"}, "minute field 'H' uses R or H, which are not supported"),
        ({"cron": "0 R * * *"}, "hour field 'R' uses R or H"),
        ({"cron": "0 0 30 2 *"}, "cron expression '0 0 30 2 *' never runs"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"at": "20m", "tz": "Nowhere"}, "unknown time zone 'Nowhere'"),
        ({"at": "2026-02-01T00:00Z"}, "--at '2026-02-01T00:00Z' is in the past "
         "(2026-02-01T00:00:00Z)"),
        ({"at": "2026-03-01T12:00:00Z"}, "is in the past"),
        ({"at": "9"}, "invalid time '9': a bare number is ambiguous"),
        ({"at": "25:00"}, "invalid time '25:00'"),
        ({"at": "13pm"}, "invalid time '13pm': the hour must be 1-12 with am/pm"),
        ({"at": "not a time"}, "invalid time 'not a time'"),
    ],
)
def test_usage_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_schedule(now=NOW, **kwargs)
    assert message in err.value.message
    assert "\n" not in err.value.message


def test_usage_errors_carry_hints() -> None:
    with pytest.raises(UsageError) as err:
        cron("0 9 * * 8")
    assert err.value.message == "invalid cron expression '0 9 * * 8': bad day-of-week field '8'"
    assert err.value.hint.startswith("day-of-week takes 0-6 or sun-sat")


def test_phrases() -> None:
    berlin = "Europe/Berlin"
    assert parse_schedule_phrase("every 30m", now=NOW).describe() == "every 30m"
    assert parse_schedule_phrase("EVERY 1h", now=NOW).expr == "1h"
    assert parse_schedule_phrase("at 2026-11-21T09:00Z", now=NOW).expr == "2026-11-21T09:00:00Z"
    assert parse_schedule_phrase("in 20m", now=NOW).expr == "2026-03-01T12:20:00Z"
    # NOW is 13:00 in Berlin: 09:00 is tomorrow, 14:30 and 9pm are today.
    assert parse_schedule_phrase("at 09:00", now=NOW, tz=berlin).expr == "2026-03-02T08:00:00Z"
    assert parse_schedule_phrase("at 14:30", now=NOW, tz=berlin).expr == "2026-03-01T13:30:00Z"
    assert parse_schedule_phrase("at 9pm", now=NOW, tz=berlin).expr == "2026-03-01T20:00:00Z"
    assert parse_schedule_phrase("at 12:00", now=NOW, tz="UTC").expr == "2026-03-02T12:00:00Z"
    c = parse_schedule_phrase("cron */5 * * * *", now=NOW, tz=berlin)
    assert (c.kind, c.expr, c.tz) == ("cron", "*/5 * * * *", berlin)
    assert parse_schedule_phrase(" 0 9 * * 1-5 ", now=NOW).describe() == "cron 0 9 * * 1-5 (UTC)"


@pytest.mark.parametrize(
    ("phrase", "message"),
    [
        ("tomorrow-ish", "invalid schedule 'tomorrow-ish'"),
        ("", "invalid schedule ''"),
        ("in tomorrow", "invalid schedule 'in tomorrow': `in` needs a duration"),
        ("in", "`in` needs a duration"),
        ("every", "invalid duration ''"),
        ("every 1h", "--tz applies only to --cron and --at"),
        ("cron 0 9 * *", "expected 5 fields"),
        ("at 2020-01-01T00:00Z", "is in the past"),
    ],
)
def test_phrase_errors(phrase: str, message: str) -> None:
    tz = "UTC" if phrase == "every 1h" else None
    with pytest.raises(UsageError) as err:
        parse_schedule_phrase(phrase, now=NOW, tz=tz)
    assert message in err.value.message


# --- next_run -----------------------------------------------------------------------------


def test_next_run_every_is_anchored() -> None:
    s = parse_schedule(every="1h", now=utc(2026, 3, 1, 12, 10))
    assert next_run(s, utc(2026, 3, 1, 12, 10)) == utc(2026, 3, 1, 13, 10)
    assert next_run(s, utc(2026, 3, 1, 13, 10)) == utc(2026, 3, 1, 14, 10)  # strictly after
    assert next_run(s, utc(2026, 3, 1, 15, 59)) == utc(2026, 3, 1, 16, 10)
    assert next_run(s, utc(2026, 2, 1)) == utc(2026, 3, 1, 13, 10)  # never before the anchor


def test_next_run_every_ignores_dst() -> None:
    s = parse_schedule(every="1d", now=utc(2026, 3, 28, 12))
    assert runs(s, utc(2026, 3, 28, 12), utc(2026, 3, 31, 12)) == [
        utc(2026, 3, 29, 12), utc(2026, 3, 30, 12), utc(2026, 3, 31, 12)]


def test_next_run_at() -> None:
    s = parse_schedule(at="2026-11-21T09:00Z", now=NOW)
    assert next_run(s, NOW) == utc(2026, 11, 21, 9)
    assert next_run(s, utc(2026, 11, 21, 9)) is None
    assert next_run(s, utc(2027, 1, 1)) is None


def test_next_run_cron_in_zone() -> None:
    s = cron("0 9 * * 1-5", "Europe/Berlin")
    # Friday 2026-03-27 09:00 CET, then Monday 2026-03-30 09:00 CEST (after the switch).
    assert next_run(s, utc(2026, 3, 27, 7)) == utc(2026, 3, 27, 8)
    assert next_run(s, utc(2026, 3, 27, 8)) == utc(2026, 3, 30, 7)
    assert next_run(cron("*/15 * * * *"), utc(2026, 3, 1, 12, 7, 30)) == utc(2026, 3, 1, 12, 15)


def test_aware_times_required() -> None:
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        next_run(cron("* * * * *"), datetime(2026, 3, 1))
    out = next_run(cron("* * * * *"), datetime(2026, 3, 1, 13, tzinfo=BERLIN))
    assert out == utc(2026, 3, 1, 12, 1) and out.tzinfo == UTC


# --- DST ----------------------------------------------------------------------------------


def test_berlin_spring_forward_runs_skipped_time_once_at_the_jump() -> None:
    s = cron("30 2 * * *", "Europe/Berlin")
    assert runs(s, utc(2026, 3, 27), utc(2026, 3, 31)) == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, the moment of the jump
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_berlin_fall_back_runs_repeated_time_once() -> None:
    s = cron("30 2 * * *", "Europe/Berlin")
    assert runs(s, utc(2026, 10, 24), utc(2026, 10, 27)) == [
        utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_new_york_both_transitions() -> None:
    spring = cron("30 2 * * *", "America/New_York")
    assert runs(spring, utc(2026, 3, 7, 12), utc(2026, 3, 9, 12)) == [
        utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]  # 03:00 EDT, then 02:30 EDT
    fall = cron("30 1 * * *", "America/New_York")
    assert runs(fall, utc(2026, 10, 31, 12), utc(2026, 11, 2, 12)) == [
        utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]  # 01:30 EDT only, not 01:30 EST


def test_hourly_jobs_follow_real_time_across_dst() -> None:
    s = cron("0 * * * *", "America/New_York")
    fall = runs(s, utc(2026, 11, 1, 3), utc(2026, 11, 1, 8))
    assert fall == [utc(2026, 11, 1, h) for h in range(4, 9)]  # 01:00 EDT and 01:00 EST
    spring = runs(s, utc(2026, 3, 8, 5), utc(2026, 3, 8, 8))
    assert spring == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]  # no 02:00


@pytest.mark.parametrize(("expr", "tz"), [("30 2 * * *", "Europe/Berlin"),
                                          ("30 1 * * *", "America/New_York"),
                                          ("0 2 * * *", "America/New_York")])
def test_daily_job_runs_once_every_local_day_for_a_year(expr: str, tz: str) -> None:
    zone = ZoneInfo(tz)
    found = runs(cron(expr, tz, now=utc(2025, 12, 31)), utc(2026, 1, 1, 12), utc(2027, 1, 1, 12))
    days = [t.astimezone(zone).date() for t in found]
    assert len(days) == len(set(days)) == 365


def test_every_minute_job_keeps_real_time_through_fall_back() -> None:
    s = cron("* * * * *", "Europe/Berlin")
    found = runs(s, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30))
    assert found == [utc(2026, 10, 24, 23, 31) + timedelta(minutes=i) for i in range(180)]


# --- due occurrences and catch-up -----------------------------------------------------------


def test_every_after_a_year_of_downtime_fires_once() -> None:
    s = parse_schedule(every="1h", now=utc(2026, 1, 1))
    assert due_occurrences(s, utc(2026, 1, 1, 5), utc(2027, 1, 1, 0, 30)) == (
        utc(2027, 1, 1), 365 * 24 - 6)
    # Arithmetic, not iteration: a century is as quick as an hour.
    assert due_occurrences(s, None, utc(2126, 1, 1, 0, 1))[1] == 876_575


def test_every_due_and_not_due() -> None:
    s = parse_schedule(every="30m", now=utc(2026, 1, 1))
    assert due_occurrences(s, None, utc(2026, 1, 1, 0, 29)) == (None, 0)
    assert due_occurrences(s, None, utc(2026, 1, 1, 0, 30)) == (utc(2026, 1, 1, 0, 30), 0)
    assert due_occurrences(s, None, utc(2026, 1, 1, 1, 40)) == (utc(2026, 1, 1, 1, 30), 2)
    assert due_occurrences(s, utc(2026, 1, 1, 1, 30), utc(2026, 1, 1, 1, 59)) == (None, 0)
    late = utc(2026, 1, 1, 1, 31, 5)  # the 01:30 run started late; 02:00 is still due
    assert due_occurrences(s, late, utc(2026, 1, 1, 2)) == (utc(2026, 1, 1, 2), 0)


def test_cron_missed_runs_fire_once_with_skip_count() -> None:
    s = cron("0 9 * * *", "Europe/Berlin", now=utc(2026, 3, 1))
    monday = utc(2026, 3, 2, 8)
    assert due_occurrences(s, monday, utc(2026, 3, 5, 9)) == (utc(2026, 3, 5, 8), 2)
    assert due_occurrences(s, utc(2026, 3, 5, 8), utc(2026, 3, 5, 9)) == (None, 0)
    assert due_occurrences(s, monday, utc(2026, 3, 2, 9)) == (None, 0)


def test_cron_never_fired_counts_from_creation() -> None:
    s = cron("0 9 * * *", now=utc(2026, 3, 1, 8))
    assert due_occurrences(s, None, utc(2026, 3, 1, 9, 30)) == (utc(2026, 3, 1, 9), 0)
    assert due_occurrences(s, None, utc(2026, 3, 3, 9, 30)) == (utc(2026, 3, 3, 9), 2)
    late = cron("0 9 * * *", now=utc(2026, 3, 1, 9, 30))
    assert due_occurrences(late, None, utc(2026, 3, 1, 9, 45)) == (None, 0)
    bare = Schedule("cron", "0 9 * * *")  # no anchor and no run: nothing counts as missed
    assert due_occurrences(bare, None, utc(2026, 3, 3, 9, 30)) == (utc(2026, 3, 3, 9), 0)


def test_cron_skip_count_is_capped() -> None:
    s = cron("* * * * *", now=utc(2025, 1, 1))
    assert due_occurrences(s, utc(2025, 1, 1), utc(2026, 1, 1)) == (utc(2026, 1, 1), SKIP_CAP)


def test_cron_catch_up_across_fall_back_fires_once() -> None:
    s = cron("30 2 * * *", "Europe/Berlin", now=utc(2026, 10, 1))
    assert due_occurrences(s, utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 3)) == (
        utc(2026, 10, 25, 0, 30), 0)
    assert due_occurrences(s, utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2)) == (None, 0)
    # Down from before the spring jump until after it: the jumped-over run is the one due.
    assert due_occurrences(s, utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 5)) == (
        utc(2026, 3, 29, 1, 0), 0)


def test_at_is_due_once() -> None:
    s = parse_schedule(at="2026-03-02T00:00Z", now=NOW)
    assert due_occurrences(s, None, utc(2026, 3, 1, 23)) == (None, 0)
    assert due_occurrences(s, None, utc(2026, 3, 5)) == (utc(2026, 3, 2), 0)
    assert due_occurrences(s, utc(2026, 3, 2), utc(2026, 3, 5)) == (None, 0)


instants = st.integers(0, 3 * 24 * 60).map(lambda m: utc(2026, 10, 24) + timedelta(minutes=m))
exprs = st.sampled_from(["30 2 * * *", "0 * * * *", "*/20 1-3 * * *", "15 */2 * * *",
                         "0 9 * * 1-5", "* 2 * * *"])


@FAST
@given(exprs, st.sampled_from(["Europe/Berlin", "America/New_York", "UTC"]), instants, instants)
def test_due_agrees_with_chaining_next_run(expr, tz, a, b) -> None:
    since, now = min(a, b), max(a, b)
    s = cron(expr, tz, now=utc(2026, 10, 1))
    # Across both fall-back days (Berlin 25 Oct, New York 1 Nov) and the spring ones below.
    for shift in (timedelta(0), timedelta(days=8), timedelta(days=-231)):
        seen = runs(s, since + shift, now + shift)
        expected = (seen[-1], len(seen) - 1) if seen else (None, 0)
        assert due_occurrences(s, since + shift, now + shift) == expected


@FAST
@given(st.sampled_from(["7m", "1h", "90m", "1d", "1w"]), instants, instants)
def test_every_due_agrees_with_chaining_next_run(period, a, b) -> None:
    since, now = min(a, b), max(a, b)
    s = parse_schedule(every=period, now=utc(2026, 10, 24))
    seen = runs(s, since, now)
    assert due_occurrences(s, since, now) == ((seen[-1], len(seen) - 1) if seen else (None, 0))


# --- backoff ------------------------------------------------------------------------------


def test_backoff_delays() -> None:
    assert [backoff_delay(n).total_seconds() for n in range(0, 8)] == [
        0, 30, 60, 300, 900, 3600, 3600, 3600]
