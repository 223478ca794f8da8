"""Bounded input: every number, time, URL, name, message and file fased reads has a documented
limit and a one-line error past it; control characters in names are printed escaped.

The CLI tests are the examples of fased issue 10; the property tests feed random text and
extreme values to every parser in fased.bounds, fased.timeparse and fased.schedule, and to
the URL checks, and hold that each returns a bounded value or raises UsageError."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import error_line, events, fails, read_json
from fakeserver import Reply
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fased import bounds
from fased.bounds import EARLIEST, LATEST, MAX_DURATION_SECONDS
from fased.config import parse_file, parse_value
from fased.errors import UsageError
from fased.models import check_base_url
from fased.schedule import due_occurrences, next_run, parse_schedule, parse_schedule_phrase
from fased.tasks import check_target
from fased.timeparse import parse_duration, parse_time, utc_now

PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
EXTREME_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "1e309", "-1e308", "0",
                   "-0", "-1", "99999999999999999999999999", "1" * 5000, "0x10", "1_000", "",
                   " ", "1e15", "²"]


@pytest.fixture
def home(set_up):
    return set_up


def log_text(home) -> str:
    return "".join(json.dumps(e) for e in events(home))


# -- the examples from the issue -----------------------------------------------------------------

def test_a_huge_every_is_a_usage_error(home, run):
    line = fails(run, home, 2, "task", "new", "--every", "99999999999999999d", "--message", "x")
    assert line == "Error: duration '99999999999999999d' must be at most 100 years"
    assert "internal error" not in line


@pytest.mark.parametrize("value", ["1e15", "nan", "inf", "0", "-1", "1e308"])
def test_run_lease_is_bounded(home, run, ok, value):
    ok("chat", "--queue", "waiting")  # a claimed turn is where a huge lease used to overflow

    line = fails(run, home, 2, "run", "--once", "--lease", value)

    assert line.startswith("Error: Invalid value for '--lease': ")
    assert "1<=x<=86400" in line or "is not a number" in line


@pytest.mark.parametrize(("option", "value"), [
    ("--poll", "1e308"), ("--poll", "nan"), ("--max-turns", "1" * 40), ("--max-turns", "0"),
])
def test_other_run_numbers_are_bounded(home, run, option, value):
    assert fails(run, home, 2, "run", "--once", option, value).startswith(
        f"Error: Invalid value for '{option}': ")


@pytest.mark.parametrize(("args", "option"), [
    (("session", "show", "-n"), "-n"),
    (("task", "history", "task-1", "-n"), "-n"),
    (("task", "show", "task-1", "-n"), "-n"),
    (("replay", "-n"), "-n"),
    (("agent", "models", "status", "--probe", "--timeout"), "--timeout"),
    (("agent", "models", "fallback", "add", "x/y", "--position"), "--position"),
])
@pytest.mark.parametrize("value", ["99999999999999999999999", "nan", "1e308", "-1"])
def test_every_numeric_option_refuses_extremes(home, run, args, option, value):
    assert fails(run, home, 2, *args, value).startswith(f"Error: Invalid value for '{option}'")


@pytest.mark.parametrize(("url", "reason"), [
    # fased's own words: urllib's would quote the URL's parts, a password among them
    ("http://[::1", "its [IPv6] host is not closed"),
    ("http://host:99999", "its port is not a number from 1 to 65535"),
    ("http://host:abc", "its port is not a number from 1 to 65535"),
    ("http://host:0", "port 0"),
    ("http://a..b/v1", "bad host name"),
    ("http://host/a b", "spaces or control characters"),
    ("http://" + "h" * 3000, "longer than 2048"),
])
def test_a_bad_base_url_is_a_usage_error(home, run, url, reason):
    line = fails(run, home, 2, "agent", "models", "providers", "add", "x", "--kind",
                 "openai-compatible", "--base-url", url)
    assert line.startswith("Error: invalid base URL") and reason in line


@pytest.mark.parametrize("url", ["http://[::1", "http://host:99999", "http://host:abc"])
def test_a_bad_webhook_url_is_a_usage_error(home, run, url):
    line = fails(run, home, 2, "task", "new", "--every", "1h", "--message", "m", "--deliver",
                 f"webhook:{url}")
    assert line.startswith("Error: invalid delivery target: invalid webhook URL")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"a":' * 100_000 + "1" + "}" * 100_000,
                                  '{"agents":' * 40 + "{}" + "}" * 40])
def test_fased_json_nested_deep_is_a_usage_error(home, run, text):
    (home / "fased.json").write_text(text)

    line = fails(run, home, 2, "agent", "list")

    assert line == "Error: fased.json: nested deeper than 32 levels, the limit" or (
        line.endswith("nested deeper than 32 levels, the limit"))


def test_config_validate_names_a_deep_file(home, run, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)

    line = fails(run, home, 1, "config", "validate", str(deep))

    assert line == f"Error: {deep}: nested deeper than 32 levels, the limit"


def test_fased_json_replaced_by_a_directory_is_a_state_error(home, run):
    (home / "fased.json").unlink()
    (home / "fased.json").mkdir()

    line = fails(run, home, 4, "agent", "list")

    assert line == f"Error: {home / 'fased.json'} is a directory, not a regular file"


def test_fased_json_replaced_by_a_fifo_is_a_state_error(home):
    (home / "fased.json").unlink()
    os.mkfifo(home / "fased.json")

    result = bounded_process("agent", "list")  # reading a FIFO would wait for a writer

    assert (result.returncode, result.stderr.splitlines()[0]) == (
        4, f"Error: {home / 'fased.json'} is a FIFO, not a regular file")


def test_a_huge_string_hand_edited_into_fased_json_is_refused_and_not_logged(home, run, ok):
    doc = read_json(home / "fased.json")
    doc.setdefault("agents", {})["defaults"] = {"systemPrompt": "x" * (2 * bounds.MIB)}
    (home / "fased.json").write_text(json.dumps(doc))

    line = fails(run, home, 2, "agent", "list")

    assert line == f"Error: {home / 'fased.json'} is larger than 1 MiB, the limit"
    assert "x" * 1000 not in log_text(home)


def test_a_long_string_in_a_small_fased_json_is_refused(home, run):
    doc = read_json(home / "fased.json")
    doc.setdefault("agents", {})["defaults"] = {"systemPrompt": "x" * 100_001}
    (home / "fased.json").write_text(json.dumps(doc))

    assert fails(run, home, 2, "agent", "list") == (
        "Error: fased.json line 1: agents.defaults.systemPrompt: longer than 100,000 "
        "characters, the limit")


def test_fased_writes_a_large_fased_json_itself_and_reads_it_back(home, ok, monkeypatch):
    """Many agents can render fased.json past the limit: that is no hand edit."""
    monkeypatch.setattr(bounds, "CONFIG_FILE_BYTES", 400)
    monkeypatch.setattr("fased.config.CONFIG_FILE_BYTES", 400)
    for i in range(6):
        ok("agent", "create", f"a{i}")
    assert (home / "fased.json").stat().st_size > 400

    ok("agent", "list")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_hand_edited_non_finite_number_is_refused(home, run, value):
    text = (home / "fased.json").read_text()
    (home / "fased.json").write_text(text.replace(
        '"agents": {', f'"agents": {{"defaults": {{"timeoutSeconds": {value}}},', 1))

    line = fails(run, home, 2, "agent", "list")

    assert "agents.defaults.timeoutSeconds" in line and "not a finite number" in line


@pytest.mark.parametrize("now", [
    "garbage", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
    "9001-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "\x1b[2J"])
@pytest.mark.parametrize("args", [("agent", "list"), ("chat", "--queue", "hi"),
                                  ("task", "new", "--every", "1h", "--message", "m"),
                                  ("run", "--once"), ("replay", "-n", "1")])
def test_fased_now_outside_the_calendar_is_a_usage_error_for_every_command(
        home, run, monkeypatch, now, args):
    monkeypatch.setenv("FASED_NOW", now)

    line = fails(run, home, 2, *args)

    assert line.startswith("Error: FASED_NOW=")
    assert "\x1b" not in line


@pytest.mark.parametrize("now", ["1970-01-01T00:00:00Z", "9000-12-31T23:59:59.999999Z"])
def test_fased_now_at_the_calendar_ends_works_with_the_longest_durations(
        home, ok, monkeypatch, now):
    monkeypatch.setenv("FASED_NOW", now)
    ok("task", "new", "--every", "5218w", "--message", "m")
    ok("task", "new", "--at", "5218w", "--message", "m")
    ok("chat", "--queue", "hi")
    ok("run", "--once", "--lease", "86400")
    ok("replay", "--since", "5218w")


@pytest.mark.parametrize("value", ["", "   "])
def test_config_set_refuses_a_blank_workspace(home, run, value):
    line = fails(run, home, 2, "config", "set", "agents.defaults.workspace", value)
    assert line.startswith("Error: fased.json: agents.defaults.workspace: ")


def test_a_hand_edited_blank_workspace_is_refused_the_same_way(home, run):
    doc = read_json(home / "fased.json")
    doc["agents"]["defaults"] = {"workspace": ""}
    (home / "fased.json").write_text(json.dumps(doc, indent=2))

    assert fails(run, home, 2, "agent", "list").endswith(
        ": agents.defaults.workspace: must not be empty")


@pytest.mark.parametrize(("key", "value"), [
    ("agents.defaults.timeoutSeconds", "1e308"), ("agents.defaults.timeoutSeconds", "1e999"),
    ("agents.defaults.timeoutSeconds", "NaN"), ("agents.defaults.cooldownSeconds", "1e308"),
    ("agents.defaults.contextWindow", "1e308"), ("agents.defaults.retries", "1e308"),
    ("agents.defaults.queue.debounceMs", "1e308"), ("agents.defaults.queue.cap", "1e308"),
    ("agents.defaults.blockStreamingChunk.maxChars", "1e308"),
    ("tasks.backoffSeconds", "[1e308]"),
])
def test_config_set_refuses_huge_numbers_naming_the_key(home, run, key, value):
    line = fails(run, home, 2, "config", "set", key, value)
    assert line.startswith(f"Error: fased.json: {key}")


@pytest.mark.parametrize(("path", "line"), [
    ("agents[0]", "Error: agents is an object"),
    ("agents.defaults.x", "Error: fased.json: agents.defaults.x: unknown key"),
])
def test_config_set_refuses_paths_it_cannot_follow(home, run, path, line):
    assert fails(run, home, 2, "config", "set", path, "1") == line


def test_config_set_refuses_an_index_far_past_the_end(home):
    # in a bounded process: padding the list with 10**11 nulls would take all memory
    result = bounded_process("config", "set", "tasks.backoffSeconds[99999999999]", "1")

    assert (result.returncode, result.stderr.splitlines()[0]) == (
        2, "Error: tasks.backoffSeconds[99999999999]: the list is new")
    assert events(home)[-1]["type"] != "config.set"


def test_config_set_refuses_a_value_nested_too_deep(home, run):
    assert fails(run, home, 2, "config", "set", "agents.list[0].skills.x",
                 "[" * 5000 + "]" * 5000) == "Error: the value nests deeper than 32 levels"


# -- files that are no files ----------------------------------------------------------------------

MEASURE = ("import resource, sys\nfrom fased.commands.entry import main\ntry:\n    main()\n"
           "finally:\n    sys.stderr.write(f'maxrss={resource.getrusage("
           "resource.RUSAGE_SELF).ru_maxrss}\\n')\n")


def bounded_process(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    """fased in a process that may use 2 GiB of address space and 30 s (an unbounded read
    fails fast instead of eating the machine); its stderr ends with `maxrss=KiB`."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-c", MEASURE, *args], input=input,
                          capture_output=True, timeout=30, preexec_fn=limit, text=input is None)


def max_rss_kib(result: subprocess.CompletedProcess) -> int:
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    return int(stderr.rsplit("maxrss=", 1)[1])


def test_config_validate_dev_zero_is_quick_and_bounded(home):
    result = bounded_process("config", "validate", "/dev/zero")

    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "Error: /dev/zero is a character device, not a regular file")
    assert max_rss_kib(result) < 150_000


def test_config_validate_a_fifo_does_not_wait_for_a_writer(home, tmp_path):
    os.mkfifo(tmp_path / "pipe")

    result = bounded_process("config", "validate", str(tmp_path / "pipe"))

    assert (result.returncode, result.stderr.splitlines()[0]) == (
        1, f"Error: {tmp_path / 'pipe'} is a FIFO, not a regular file")


def test_a_credentials_file_replaced_by_dev_zero_is_an_error(home, ok):
    ok("agent", "models", "providers", "add", "openai")
    (home / "credentials.json").symlink_to("/dev/zero")
    before = len(events(home))

    result = bounded_process("agent", "models", "auth", "openai", "--stdin", input=b"sk-test\n")

    assert result.returncode == 4
    assert result.stderr.decode().splitlines()[0] == (
        f"Error: {home / 'credentials.json'} is a character device, not a regular file")
    assert len(events(home)) == before


# -- messages -------------------------------------------------------------------------------------

def test_a_50_mb_piped_message_is_refused_without_reading_it_all(home):
    result = bounded_process("chat", "--queue", input=b"a" * (50 * bounds.MIB))

    assert result.returncode == 2
    assert result.stderr.decode().splitlines()[0] == (
        "Error: the piped message is larger than 8 MiB, the limit")
    assert max_rss_kib(result) < 150_000  # KiB: never the whole 50 MB (twice, as text)
    assert not [e for e in events(home) if e["type"] == "turn.queued"]


def test_a_message_of_several_mb_is_fine(home, run):
    result = run("chat", "--queue", input="a" * (5 * bounds.MIB))
    assert result.exit_code == 0


def test_an_argument_message_past_the_limit_is_refused(home, run):
    line = fails(run, home, 2, "chat", "--queue", "a" * (bounds.MESSAGE_BYTES + 1))
    assert line == "Error: the message is 8,388,609 bytes; the limit is 8 MiB"


def test_piped_text_and_argument_together_are_bounded(home, run):
    result = run("chat", "--queue", "b" * 10, input="a" * bounds.MESSAGE_BYTES)
    assert result.exit_code == 2
    assert error_line(result).startswith("Error: the message is 8,388,620 bytes")


@pytest.mark.parametrize("args", [("task", "new", "--every", "1h", "--message"),
                                  ("chat", "--schedule", "every 1h")])
def test_task_messages_are_bounded(home, run, args):
    assert fails(run, home, 2, *args, "a" * (bounds.MESSAGE_BYTES + 1)).startswith("Error: ")


# -- names and escaping ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("session", "new", "--name", "a\x1b[31mred"),
    ("session", "rename", "s-1", "x\u202eevil"),
    ("agent", "create", "ops", "--name", "x\u202eevil"),
    ("agent", "set-identity", "--name", "bell\x07"),
    ("agent", "set-identity", "--emoji", "\x9b"),
    ("task", "new", "--every", "1h", "--message", "m", "--name", "t\x1b]0;x\x07"),
    ("agent", "models", "alias", "add", "f\x1bx", "ollama/x"),
    ("agent", "models", "providers", "add", "openai", "-H", "X-A=b\r\nEvil: 1"),
    ("agent", "models", "providers", "add", "openai", "-H", "X A=b"),
])
def test_names_with_control_characters_are_refused_at_creation(home, run, ok, args):
    ok("session", "new")
    ok("agent", "models", "providers", "add", "ollama")  # so that only the name is wrong

    line = fails(run, home, 2, *args)

    assert "\x1b" not in line and "\u202e" not in line and "\x07" not in line


def legacy(home, drafts) -> None:
    """Append events the CLI would now refuse, as an older fased may have written them."""
    from fased.store import Store

    store = Store(home)
    try:
        store.transact(lambda con: drafts)
    finally:
        store.close()


EVIL = "e\x1b[2J\u202ev\x9bl\x7f"
SHOWN = "e\\x1b[2J\\u202ev\\x9bl\\x7f"


def test_control_characters_in_names_and_messages_are_printed_escaped(home, ok, run):
    from fased.store import Draft

    ok("task", "new", "--every", "1h", "--message", f"check {EVIL}")
    legacy(home, [Draft("agent.updated", "agent:main", {"agent": "main", "name": EVIL}),
                  Draft("session.renamed", "session:s-1",
                        {"agent": "main", "session": "s-1", "name": EVIL})])
    ok("chat", "--queue", f"hello {EVIL}\nsecond line")

    outputs = {
        "agent list": ok("agent", "list"), "agent show": ok("agent", "show"),
        "session list": ok("session", "list"), "session show": ok("session", "show"),
        "task list": ok("task", "list"), "task show": ok("task", "show", "task-1"),
        "replay": ok("replay"), "error": run("session", "show", EVIL + "x").stderr,
    }
    for name, text in outputs.items():
        assert not bounds.has_control(text.replace("\n", "")), name
        assert SHOWN in text, name


def test_json_output_stays_valid_and_safe_on_a_terminal(home, ok):
    from fased.store import Draft

    legacy(home, [Draft("agent.updated", "agent:main", {"agent": "main", "name": EVIL})])

    for text in (ok("agent", "list", "--json"), ok("replay", "--json")):
        assert not bounds.has_control(text.replace("\n", ""))
    assert json.loads(ok("agent", "show", "--json"))["name"] == EVIL
    assert [e for e in map(json.loads, ok("replay", "--json").splitlines())
            if e["data"].get("name") == EVIL]


def test_a_reply_on_stdout_stays_byte_exact(models, ok, server):
    reply = f"colour \x1b[31mred\x1b[0m {EVIL}"
    server.default = Reply(reply)

    assert ok("chat", "hi") == reply + "\n"


# -- properties: every parser returns a bounded value or raises UsageError ----------------------

def typed_text():
    """Random text, plus texts near the grammar of numbers, durations and times."""
    return st.one_of(
        st.text(max_size=60),
        st.sampled_from(EXTREME_NUMBERS),
        st.from_regex(r"\A\s*[0-9]{1,30}(\.[0-9]{0,20})?\s*[smhdw]\s*\Z"),
        st.from_regex(r"\A[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}([T ][0-9]{1,3}:[0-9]{1,3}"
                      r"(:[0-9]{1,3})?)?(Z|[+-][0-9]{2}:[0-9]{2})?\Z"),
        st.builds(lambda x: repr(x), st.floats()),
        st.builds(str, st.integers(min_value=-10**40, max_value=10**40)),
    )


aware_now = st.datetimes(min_value=EARLIEST.replace(tzinfo=None),
                         max_value=LATEST.replace(tzinfo=None)).map(
                             lambda d: d.replace(tzinfo=UTC))
zones = st.one_of(st.none(), st.sampled_from(["UTC", "Europe/Berlin", "Pacific/Kiritimati",
                                              "America/St_Johns", "Etc/GMT+12"]),
                  st.text(max_size=20))


def usage_or(fn, *args, **kwargs):
    """fn's result, or None when it raised UsageError (anything else fails the test)."""
    try:
        return fn(*args, **kwargs)
    except UsageError as exc:
        assert exc.message and "\n" not in exc.message
        return None


@PROPERTY
@given(typed_text(), st.floats(-1e6, 1e6), st.floats(0, 1e9), st.booleans())
@example("1e308", 0.0, 10.0, False)
@example("nan", 0.0, 10.0, False)
def test_parse_number_is_bounded(text, low, span, integer):
    value = usage_or(bounds.parse_number, text, low=low, high=low + span, integer=integer)
    if value is not None:
        assert math.isfinite(value) and low <= value <= low + span
        assert isinstance(value, int) == integer


@PROPERTY
@given(typed_text())
def test_parse_count_and_seq_are_bounded(text):
    for fn, high in ((bounds.parse_count, bounds.MAX_COUNT), (bounds.parse_seq, bounds.MAX_SEQ)):
        value = usage_or(fn, text)
        assert value is None or (isinstance(value, int) and 0 <= value <= high)


@PROPERTY
@given(typed_text())
@example("99999999999999999d")
@example("0.0000001s")
@example("9" * 400 + "w")
def test_parse_duration_is_bounded(text):
    value = usage_or(parse_duration, text)
    if value is not None:
        assert timedelta(seconds=1) <= value <= timedelta(seconds=MAX_DURATION_SECONDS)


@PROPERTY
@given(typed_text(), aware_now, zones, st.booleans())
@example("9999-12-31T23:59:59-05:00", LATEST, None, False)
@example("0001-01-01T00:00:00+14:00", EARLIEST, None, False)
@example("2020-01-01T00:00:00+99:00", EARLIEST, None, False)
@example("jan 9999999999", EARLIEST, None, False)
@example("5218w", LATEST, None, True)
@example("5218w", EARLIEST, None, False)
def test_parse_time_is_bounded(text, now, tz, future):
    value = usage_or(parse_time, text, now=now, tz=tz, future=future)
    if value is not None:
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        limit = timedelta(seconds=MAX_DURATION_SECONDS)
        assert EARLIEST - limit <= value <= LATEST + limit


@PROPERTY
@given(typed_text())
@example("9999-12-31T23:59:59Z")
@example("0001-01-01T00:00:00+14:00")
def test_fased_now_is_bounded(text):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASED_NOW", text.replace("\x00", ""))
        value = usage_or(utc_now)
    assert value is None or EARLIEST <= value <= LATEST


@PROPERTY
@given(st.sampled_from(["cron", "every", "at"]), typed_text(), zones, aware_now)
@example("every", "5218w", None, LATEST)
@example("at", "5218w", None, LATEST)
@example("cron", "0 0 29 2 *", "Pacific/Kiritimati", LATEST)
@example("cron", "0 0 30 2 *", None, LATEST)
@example("at", "11:59pm", "Pacific/Kiritimati", LATEST)
def test_parse_schedule_is_bounded_and_its_schedule_runs(kind, text, tz, now):
    if kind == "every":
        tz = None
    schedule = usage_or(parse_schedule, **{kind: text}, tz=tz, now=now)
    if schedule is not None:
        when = next_run(schedule, now)
        assert when is None or when > now
        due_occurrences(schedule, None, now + timedelta(days=1))


cron_text = st.lists(st.sampled_from(["*", "*/5", "0", "59", "1-5", "L", "jan", "mon", "7",
                                      "29", "30", "31", "2", "0,30", "99", "-1", "?"]),
                     min_size=0, max_size=6).map(" ".join)


@PROPERTY
@given(st.one_of(typed_text(), cron_text,
                 st.tuples(st.sampled_from(["every", "at", "in", "cron"]),
                           st.one_of(typed_text(), cron_text)).map(" ".join)),
       aware_now, zones)
def test_parse_schedule_phrase_is_bounded(text, now, tz):
    schedule = usage_or(parse_schedule_phrase, text, now=now, tz=tz)
    if schedule is not None:
        next_run(schedule, now)


def urls():
    hosts = st.one_of(st.text(max_size=12), st.sampled_from(
        ["[::1", "[::1]", "[zz]", "a..b", "x" * 70, "127.0.0.1", "h@", "🛠"]))
    ports = st.one_of(st.just(""), st.builds(lambda n: f":{n}", st.one_of(
        st.integers(-10, 10**6), st.text(max_size=5))))
    schemes = st.sampled_from(["http", "https", "ftp", "HTTP", ""])
    return st.one_of(st.text(max_size=60), st.builds(
        lambda s, h, p, rest: f"{s}://{h}{p}{rest}", schemes, hosts, ports, st.text(max_size=12)))


@PROPERTY
@given(urls(), st.sampled_from(["openai-compatible", "ollama"]))
@example("http://[::1", "ollama")
@example("http://host:99999", "openai-compatible")
def test_url_checks_are_bounded(text, kind):
    from urllib.parse import urlsplit

    for value in (usage_or(bounds.parse_url, text), usage_or(check_base_url, kind, text)):
        if value is not None:
            parts = urlsplit(value)
            assert parts.scheme in ("http", "https") and parts.hostname
            assert parts.port is None or 0 < parts.port < 65536
    target = usage_or(check_target, f"webhook:{text}")
    assert target is None or target.lower().startswith("webhook:http")


@PROPERTY
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.sampled_from([b"[" * 5000, b'{"a":' * 2000, b"NaN", b"[1e999]",
                                  b"1" * 5000, b'{"agents": {"defaults": {"retries": 1e308}}}'])))
def test_config_parsers_are_bounded(data):
    doc = usage_or(parse_file, data)
    assert doc is None or isinstance(doc, dict)
    usage_or(parse_value, data.decode("utf-8", "replace"))


@PROPERTY
@given(st.text(max_size=200), st.text(max_size=50))
def test_name_and_header_checks_are_bounded(text, value):
    name = usage_or(bounds.check_name, text)
    assert name is None or (0 < len(name) <= bounds.NAME_CHARS and not bounds.has_control(name))
    header = usage_or(bounds.check_header, text, value)
    assert header is None or not bounds.has_control(header[0] + header[1].replace("\t", " "))
    assert usage_or(bounds.check_zone_name, text) in (None, text)


@PROPERTY
@given(st.text(), st.booleans())
@example("reply\u2028line", True)  # a line separator: no terminal breaks the line there
def test_printable_leaves_no_control_character(text, multiline):
    shown = bounds.printable(text, multiline)
    kept = shown.replace("\n", "").replace("\t", "") if multiline else shown
    assert not bounds.has_control(kept)
    shown.encode("utf-8")  # no lone surrogate is left to fail the terminal's encoder


@PROPERTY
@given(st.recursive(st.one_of(st.text(), st.integers(), st.booleans(), st.none()),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=10))
def test_json_output_is_the_same_data_and_terminal_safe(value):
    from fased.commands.output import _json_text

    text = _json_text(json.dumps(value, ensure_ascii=False))
    assert json.loads(text) == value
    assert not bounds.has_control(text)
    text.encode("utf-8")


LONG = "x" * 100_000


@pytest.mark.parametrize("args", [
    [LONG],  # click: no such command
    ["agent", "show", LONG],
    ["session", "show", LONG],
    ["task", "show", LONG],
    ["agent", "models", "set", "primary", LONG],
    ["config", "get", LONG],
    ["memory", "get", LONG],
    ["chat", "--session", LONG, "hi"],
    ["chat", "-o", LONG, "1", "hi"],
    ["memory", "search", "-n", LONG, "q"],  # click: not a valid integer
    ["--home", "/nonexistent/" + LONG, "agent", "list"],
])
def test_a_huge_value_is_not_printed_back_whole(home, run, args):
    """An error quoted what it refused in full: 100,000 characters of one line on stderr.
    Every line fased prints for people (errors, hints, diagnostics) keeps the start and
    the end of a long one and says how much it left out."""
    before = len(events(home))
    result = run(*args)
    assert result.exit_code != 0
    assert len(events(home)) == before
    assert "Traceback" not in result.stdout + result.stderr
    assert all(len(line) <= bounds.LINE_MAX for line in result.stderr.splitlines()), args
    assert "characters left out" in result.stderr


def test_a_long_memory_query_that_finds_nothing_is_said_in_one_short_line(home, run):
    query = " ".join(f"word{i}" for i in range(12_000))
    result = run("memory", "search", query)
    assert result.exit_code == 0
    [line] = result.stderr.splitlines()
    assert line.startswith("No memory matches 'word0 word1 ")
    assert line.endswith("backend fts5).") and len(line) <= bounds.LINE_MAX


ARABIC_FIVE = "\u0665"  # ٥: a decimal digit to str.isdigit() and to re's \d, not to a shell


@pytest.mark.parametrize("args", [
    ["task", "new", "--every", f"{ARABIC_FIVE}m", "--message", "x"],
    ["task", "new", "--at", f"{ARABIC_FIVE}:00", "--message", "x"],
    ["config", "set", f"agents.list[{ARABIC_FIVE}].name", "x"],
    ["chat", "--queue", "-o", "max_tokens", ARABIC_FIVE, "hi"],
    ["replay", "-n", ARABIC_FIVE],
    ["memory", "get", f"MEMORY.md:{ARABIC_FIVE}"],
])
def test_digits_are_ascii_digits(home, run, args):
    """Python's \\d and int() take any decimal digit: `--every ٥m` made a task recorded as
    "every ٥m", and agents.list[٠] a config key. A number fased reads is ASCII digits."""
    before = len(events(home))
    result = run(*args)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert len(events(home)) == before
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("dec 5 10:30", "2026-12-05T10:30:00+00:00"),  # was 10:30:46.086839: now's seconds
    ("dec 5", "2026-12-05T00:00:00+00:00"),  # a day with no time: its start, as date -d says
    ("10:30", "2026-12-02T10:30:00+00:00"),
    ("Dec 5 2026 10:30:15", "2026-12-05T10:30:15+00:00"),
])
def test_a_time_leaves_out_nothing_it_did_not_say(text, expected):
    """dateutil fills what a time does not say from its default, which was now: a task
    `--at "dec 5 10:30"` ran at 10:30:46.086839."""
    now = datetime(2026, 12, 2, 1, 52, 46, 86839, tzinfo=UTC)
    assert parse_time(text, now=now, tz="UTC", future=True).isoformat() == expected


def test_a_time_in_other_digits_is_invalid():
    now = datetime(2026, 12, 2, 1, 52, 46, tzinfo=UTC)
    with pytest.raises(UsageError, match="invalid time"):
        parse_time(f"{ARABIC_FIVE}:00", now=now, tz="UTC")
