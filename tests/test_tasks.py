"""Scheduled tasks through the real CLI: create/list/show/edit, firing from `fased run --once`
under a pinned clock (FASED_NOW), DST, catch-up after downtime, two runners, backoff, delivery
to stdout/file/webhook, and `/task` in the interactive loop."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import T0, error_line, events, fails, rows, run_together, ts

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import DEFAULT_TEXT, Echo, Status

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture
def home(at, models) -> Path:
    """Agent main with primary ollama/fake-model (fallback-free), no retries, no cooldown;
    the clock pinned by `at`."""
    return models


@pytest.fixture
def tick(run, at):
    """`fased run --once` at a given time."""

    def _tick(when: str, *args: str):
        at(when)
        return run("run", "--once", *args)

    return _tick


class Hook:
    """A webhook receiver on 127.0.0.1: answers each POST with the next scripted status."""

    def __init__(self, codes: list[int], default: int = 200, delay: float = 0.0):
        self.codes = deque(codes)
        self.default = default
        self.delay = delay
        self.bodies: list[dict] = []
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization)
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.bodies.append(json.loads(body))
                hook.requests.append((self.path, self.headers.get("Authorization")))
                time.sleep(hook.delay)
                code = hook.codes.popleft() if hook.codes else hook.default
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        if self.httpd.socket.fileno() != -1:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def hook() -> Iterator[Callable[..., Hook]]:
    made: list[Hook] = []

    def _hook(codes: list[int] = (), default: int = 200, delay: float = 0.0) -> Hook:
        made.append(Hook(list(codes), default, delay))
        return made[-1]

    yield _hook
    for h in made:
        h.close()


def of_type(home: Path, *types: str) -> list[dict]:
    return [e for e in events(home) if e["type"] in types]


def fired(home: Path, task: str = "task-1") -> list[dict]:
    return [e["data"] for e in of_type(home, "task.fired") if e["data"]["task"] == task]


def task_row(home: Path, task: str = "task-1") -> dict:
    return rows(home, "SELECT * FROM tasks WHERE id = ?", (task,))[0]


def task_json(ok, task: str = "task-1") -> dict:
    return json.loads(ok("task", "show", task, "--json"))


def new_task(ok, *args: str) -> str:
    """Create a task; returns its id from --json."""
    return json.loads(ok("task", "new", *args, "--json"))["task"]


# -- creating, listing, showing ----------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--message", "m"], "exactly one schedule is needed"),
    (["--every", "1h", "--cron", "0 * * * *", "--message", "m"], "got --cron and --every"),
    (["--every", "1h", "--at", "20m", "--message", "m"], "got --every and --at"),
    (["--every", "1h"], "needs --message"),
    (["--every", "1h", "--message", "   "], "needs a --message"),
    (["--cron", "0 9 * *", "--message", "m"], "expected 5 fields"),
    (["--cron", "61 * * * *", "--message", "m"], "bad minute field"),
    (["--every", "soon", "--message", "m"], "invalid duration"),
    (["--every", "1h", "--tz", "Europe/Berlin", "--message", "m"],
     "--tz applies only to --cron and --at"),
    (["--cron", "0 9 * * *", "--tz", "Mars/Olympus", "--message", "m"], "unknown time zone"),
    (["--at", "2026-03-01T08:00:00Z", "--message", "m"], "is in the past"),
    (["--every", "1h", "--deliver", "email:me", "--message", "m"], "invalid delivery target"),
    (["--every", "1h", "--deliver", "webhook:ftp://x", "--message", "m"],
     "invalid delivery target"),
    (["--every", "1h", "--model", "nosuch/model", "--message", "m"], "nosuch"),
])
def test_new_rejects_bad_input_and_appends_nothing(home, run, args, message):
    before = len(events(home))
    result = run("task", "new", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output
    assert len(events(home)) == before
    assert rows(home, "SELECT * FROM tasks") == []


def test_new_defaults_to_the_selected_agent_and_its_current_session(home, ok):
    out = ok("task", "new", "--every", "1h", "--message", "check the build")
    assert out == ("Created task-1: every 1h in session main/s-1; next run "
                   "2026-03-02 09:00:00 UTC.\n")
    created = of_type(home, "task.created")
    assert [e["data"] for e in created] == [{
        "task": "task-1", "agent": "main", "session": "s-1", "message": "check the build",
        "schedule": {"kind": "every", "expr": "1h", "anchor": T0}, "next_run": ts(
            "2026-03-02T09:00:00Z")}]
    assert created[0]["stream"] == "task:task-1"
    # A session was created for it (there was none), and it is the current one.
    assert [e["data"]["session"] for e in of_type(home, "session.created")] == ["s-1"]
    ok("session", "new")  # now s-2 is current: the next task goes there
    assert new_task(ok, "--cron", "0 9 * * 1-5", "--tz", "Europe/Berlin", "--message",
                    "standup") == "task-2"
    assert task_row(home, "task-2")["session"] == "s-2"


def test_new_with_all_options(home, ok, tmp_path):
    ok("agent", "create", "ops")
    ok("session", "new", "--agent", "ops", "--name", "nightly")
    out = json.loads(ok("task", "new", "--agent", "ops", "--session", "nightly", "--at",
                        "2026-03-02T10:00:00+01:00", "--message", "deploy", "--name", "deploy",
                        "--model", "ollama/fake-small", "--deliver", f"file:{tmp_path}/o.txt",
                        "--keep-after-run", "--json"))
    assert out == {"task": "task-1", "agent": "ops", "session": "s-1",
                   "schedule": "at 2026-03-02T09:00:00Z",
                   "next_run": ts("2026-03-02T09:00:00Z"), "replayed": False}
    d = task_json(ok)
    assert (d["agent"], d["session"], d["name"], d["message"], d["model"], d["deliver"],
            d["keep_after_run"], d["state"], d["enabled"]) == (
        "ops", "s-1", "deploy", "deploy", "ollama/fake-small", f"file:{tmp_path}/o.txt", True,
        "active", True)


def test_list_filters_and_json(home, ok, run):
    ok("agent", "create", "ops")
    new_task(ok, "--every", "1h", "--message", "main hourly")
    ok("session", "new")
    new_task(ok, "--every", "30m", "--message", "main half-hourly")
    new_task(ok, "--agent", "ops", "--every", "1d", "--message", "ops daily")
    ok("task", "cancel", "task-2")

    out = ok("task", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "AGENT", "SESSION", "SCHEDULE", "NEXT", "RUN", "(UTC)",
                                "LAST", "STATE", "TASK"]
    assert [line.split()[:3] for line in lines[1:]] == [["task-1", "main", "s-1"]]
    assert lines[1].split()[5:] == ["2026-03-02", "09:00:00", "-", "active", "main", "hourly"]
    assert [r["id"] for r in json.loads(ok("task", "list", "--agent", "ops", "--json"))] == [
        "task-3"]
    everything = json.loads(ok("task", "list", "--all", "--json"))
    assert [(r["id"], r["agent"], r["state"], r["enabled"]) for r in everything] == [
        ("task-1", "main", "active", True), ("task-2", "main", "cancelled", False),
        ("task-3", "ops", "active", True)]
    assert [r["id"] for r in json.loads(ok("task", "list", "--session", "s-2", "--all",
                                           "--json"))] == ["task-2"]
    assert json.loads(ok("task", "list", "--session", "s-2", "--json")) == []
    result = run("task", "show", "task-9")
    assert result.exit_code == 1 and "no task 'task-9'" in result.stderr


def test_empty_lists_print_a_hint_on_stderr(home, run, ok):
    empty = run("task", "list")
    assert (empty.exit_code, empty.stdout) == (0, "")
    assert empty.stderr == ("No tasks (`--all` shows cancelled and done ones): "
                            '`fased task new --every 1h --message "check the build"`.\n')
    assert json.loads(ok("task", "list", "--json")) == []
    new_task(ok, "--every", "1h", "--message", "hourly")
    runs = run("task", "history", "task-1")
    assert (runs.exit_code, runs.stdout) == (0, "")
    assert runs.stderr == ("No runs of task-1 yet: `fased run` fires it when it is due; "
                           "`fased task run task-1` fires it now.\n")
    assert json.loads(ok("task", "history", "task-1", "--json")) == []


def test_times_are_shown_to_the_second_and_kept_whole_in_json(home, ok, tick, server):
    """One word for one thing: STATE says the task's state, `Runs:` is said once."""
    new_task(ok, "--at", "2026-03-02T09:00:00.250Z", "--message", "once", "--keep-after-run")
    new_task(ok, "--every", "1h", "--message", "hourly")
    ok("task", "pause", "task-2")
    assert tick("2026-03-02T09:00:01Z").exit_code == 0

    listed = ok("task", "list").splitlines()
    assert listed[1].split()[3:] == ["at", "2026-03-02", "09:00:00", "UTC", "-", "completed",
                                     "active", "once"]
    assert listed[2].split()[3:] == ["every", "1h", "2026-03-02", "09:00:00", "-", "paused",
                                     "hourly"]
    shown = ok("task", "show", "task-1")
    assert "  Last run:    2026-03-02 09:00:01 UTC\n" in shown
    assert shown.count("Runs") == 1 and "  Recent runs (UTC):\n    2026-03-02 09:00:01  " in shown
    assert "  Runs:        1\n" in shown
    history = ok("task", "history", "task-1").splitlines()
    assert history[1].startswith("2026-03-02 09:00:01  t-")
    assert json.loads(ok("task", "show", "task-1", "--json"))["last_run"] == (
        "2026-03-02T09:00:01.000000Z")
    assert json.loads(ok("task", "list", "--json"))[0]["schedule"] == (
        "at 2026-03-02T09:00:00.250000Z")


def test_agent_show_and_session_show_list_attached_tasks(home, ok):
    new_task(ok, "--every", "1h", "--message", "hourly")
    new_task(ok, "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--message", "nightly")
    agent_out = ok("agent", "show")
    assert "  Tasks:         2\n" in agent_out
    assert "    task-1  every 1h  session s-1  active\n" in agent_out
    assert "    task-2  cron 30 2 * * * (Europe/Berlin)  session s-1  active\n" in agent_out
    session_out = ok("session", "show")
    assert "  Tasks:\n    task-1  every 1h  active\n" in session_out
    ok("task", "pause", "task-2")
    detail = json.loads(ok("session", "show", "--json"))
    assert [(t["id"], t["state"]) for t in detail["task_list"]] == [
        ("task-1", "active"), ("task-2", "paused")]
    ok("task", "cancel", "task-1")
    assert [t["id"] for t in json.loads(ok("agent", "show", "--json"))["task_list"]] == [
        "task-2"]


def test_deleting_a_session_with_active_tasks_needs_force_and_cancels_them(home, ok, run,
                                                                          tick):
    new_task(ok, "--every", "1h", "--message", "hourly")
    new_task(ok, "--every", "1d", "--message", "daily")
    ok("task", "cancel", "task-2")
    result = run("session", "delete", "s-1")
    assert result.exit_code == 3
    assert "session s-1 has 1 active task(s): task-1" in result.stderr
    assert "--force" in result.stderr
    assert of_type(home, "session.deleted") == []
    assert ok("session", "delete", "s-1", "--force") == (
        "Deleted session s-1 and cancelled task(s) task-1 (restore with "
        "`fased session restore s-1`).\n")
    cancelled = [e["data"] for e in of_type(home, "task.cancelled")]
    assert cancelled[-1] == {"task": "task-1", "agent": "main", "reason": "session deleted"}
    assert of_type(home, "session.deleted")[0]["data"]["cancelled_tasks"] == ["task-1"]
    assert task_row(home)["state"] == "cancelled"
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert fired(home) == []


def test_deleting_an_agent_with_active_tasks_needs_force_and_cancels_them(home, ok, run):
    ok("agent", "create", "ops")
    new_task(ok, "--agent", "ops", "--every", "1h", "--message", "hourly")
    result = run("agent", "delete", "ops")
    assert result.exit_code == 3 and "1 active task(s)" in result.stderr
    assert task_row(home)["state"] == "active"
    ok("agent", "delete", "ops", "--force")
    assert [e["data"] for e in of_type(home, "task.cancelled")] == [
        {"task": "task-1", "agent": "ops", "reason": "agent deleted"}]
    assert task_row(home)["state"] == "cancelled"


def test_new_with_an_idempotency_key_creates_one_task(home, ok, monkeypatch):
    monkeypatch.setenv("FASED_IDEMPOTENCY_KEY", "hourly-check")
    args = ("task", "new", "--every", "1h", "--message", "check", "--json")
    first, again = json.loads(ok(*args)), json.loads(ok(*args))
    assert (first["task"], first["replayed"]) == ("task-1", False)
    assert (again["task"], again["replayed"]) == ("task-1", True)
    assert len(of_type(home, "task.created")) == 1


# -- firing ------------------------------------------------------------------------------------

def test_due_task_fires_once_and_its_turn_is_answered_in_its_session(home, ok, tick, server):
    new_task(ok, "--every", "1h", "--message", "check the build")
    early = tick("2026-03-02T08:59:59Z")
    assert early.exit_code == 0 and early.stdout == ""
    assert fired(home) == [] and server.requests == []

    result = tick("2026-03-02T09:00:00Z")
    assert result.exit_code == 0
    assert "fased: task task-1 fired" in result.stderr
    assert result.stdout == ""  # no delivery target: the reply stays in the session
    [f] = fired(home)
    assert f["occurrence"] == ts("2026-03-02T09:00:00Z") and f["skipped"] == 0
    assert f["next_run"] == ts("2026-03-02T10:00:00Z")
    [queued] = [e["data"] for e in of_type(home, "turn.queued")]
    assert (queued["turn"], queued["session"], queued["message"], queued["task"],
            queued["source"]) == (f["turn"], "s-1", "check the build", "task-1", "task")
    assert [e["data"]["turn"] for e in of_type(home, "turn.completed")] == [f["turn"]]
    messages = rows(home, "SELECT role, content FROM messages WHERE session = 's-1' ORDER BY seq")
    assert messages == [{"role": "user", "content": "check the build"},
                        {"role": "assistant", "content": DEFAULT_TEXT}]
    transcript = (home / "agents/main/sessions/s-1.jsonl").read_text()
    assert "check the build" in transcript and DEFAULT_TEXT in transcript

    # The same time again, or later within the hour: nothing more fires.
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert tick("2026-03-02T09:59:59Z").exit_code == 0
    assert len(fired(home)) == 1 and len(server.requests) == 1

    [h] = json.loads(ok("task", "history", "task-1", "--json"))
    assert (h["turn"], h["status"], h["model"], h["reply"], h["skipped"], h["manual"]) == (
        f["turn"], "completed", "ollama/fake-model", DEFAULT_TEXT, 0, False)
    listed = json.loads(ok("task", "list", "--json"))[0]
    assert (listed["last_status"], listed["last_run"], listed["next_run"], listed["runs"]) == (
        "ok", ts("2026-03-02T09:00:00Z"), ts("2026-03-02T10:00:00Z"), 1)


def test_run_once_fires_every_due_task_and_answers_them_all(home, ok, tick, server):
    server.default = Echo()
    new_task(ok, "--every", "1h", "--message", "one")
    ok("session", "new")
    new_task(ok, "--every", "30m", "--message", "two")
    new_task(ok, "--every", "2h", "--message", "three")  # not due at 09:00
    result = tick("2026-03-02T09:00:00Z")
    assert result.exit_code == 0
    assert "2 turn(s) answered, 0 failed" in result.stderr
    assert [len(fired(home, t)) for t in ("task-1", "task-2", "task-3")] == [1, 1, 0]
    assert {(e["data"]["session"], e["data"]["reply"]) for e in of_type(
        home, "turn.completed")} == {("s-1", "one"), ("s-2", "two")}
    # task-2 (every 30m) missed 08:30 while nothing ran; it fires once for 09:00.
    assert fired(home, "task-2")[0]["skipped"] == 1


def test_run_with_agent_fires_only_that_agents_tasks(home, ok, tick):
    ok("agent", "create", "ops", "--model", "ollama/fake-model")
    new_task(ok, "--every", "1h", "--message", "main's")
    new_task(ok, "--agent", "ops", "--every", "1h", "--message", "ops'")
    assert tick("2026-03-02T09:00:00Z", "--agent", "ops").exit_code == 0
    assert [len(fired(home, t)) for t in ("task-1", "task-2")] == [0, 1]
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert [len(fired(home, t)) for t in ("task-1", "task-2")] == [1, 1]


@pytest.mark.parametrize("schedule", [["--every", "1h"], ["--cron", "0 * * * *"]])
def test_missed_runs_after_downtime_fire_once_and_the_skip_is_in_history(home, ok, tick,
                                                                         server, schedule):
    new_task(ok, *schedule, "--message", "hourly")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    # Down from 09:00 until 13:20: 10:00, 11:00, 12:00 and 13:00 were missed.
    result = tick("2026-03-02T13:20:00Z")
    assert result.exit_code == 0
    assert "fased: task task-1 fired (3 missed run(s) folded into this one)" in result.stderr
    assert [(f["occurrence"], f["skipped"]) for f in fired(home)] == [
        (ts("2026-03-02T09:00:00Z"), 0), (ts("2026-03-02T13:00:00Z"), 3)]
    assert len(server.requests) == 2
    assert task_row(home)["next_run"] == ts("2026-03-02T14:00:00Z")
    hist = json.loads(ok("task", "history", "task-1", "--json"))
    assert [(h["skipped"], h["status"]) for h in hist] == [(0, "completed"), (3, "completed")]
    table = ok("task", "history", "task-1").splitlines()
    assert table[0].split() == ["FIRED", "(UTC)", "TURN", "STATUS", "SKIPPED", "DELIVERY",
                                "ERROR"]
    assert table[2].split()[:5] == ["2026-03-02", "13:20:00", hist[1]["turn"], "completed", "3"]
    assert "[3 missed run(s) skipped]" in ok("task", "show", "task-1")
    # -n: only the latest runs.
    assert [h["turn"] for h in json.loads(ok("task", "history", "task-1", "-n", "1",
                                             "--json"))] == [hist[1]["turn"]]


# -- DST in Europe/Berlin ----------------------------------------------------------------------

def test_cron_0230_berlin_on_the_fall_back_day_fires_once(home, ok, tick, at):
    # 2026-10-25: 03:00 CEST -> 02:00 CET, so 02:30 happens at 00:30Z and again at 01:30Z.
    at("2026-10-24T12:00:00Z")
    new_task(ok, "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--message", "nightly")
    assert task_row(home)["next_run"] == ts("2026-10-25T00:30:00Z")
    for when in ("2026-10-25T00:29:59Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z",
                 "2026-10-25T01:30:00Z", "2026-10-25T01:45:00Z", "2026-10-26T01:29:59Z"):
        assert tick(when).exit_code == 0
    assert [(f["occurrence"], f["skipped"]) for f in fired(home)] == [
        (ts("2026-10-25T00:30:00Z"), 0)]
    assert task_row(home)["next_run"] == ts("2026-10-26T01:30:00Z")  # 02:30 CET
    assert tick("2026-10-26T01:30:00Z").exit_code == 0
    assert [(f["occurrence"], f["skipped"]) for f in fired(home)] == [
        (ts("2026-10-25T00:30:00Z"), 0), (ts("2026-10-26T01:30:00Z"), 0)]


def test_cron_0230_berlin_after_downtime_over_the_fall_back_counts_one_missed(home, ok, tick,
                                                                             at):
    at("2026-10-24T12:00:00Z")
    new_task(ok, "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--message", "nightly")
    assert tick("2026-10-26T02:00:00Z").exit_code == 0  # down over both passes of 02:30
    assert [(f["occurrence"], f["skipped"]) for f in fired(home)] == [
        (ts("2026-10-26T01:30:00Z"), 1)]


def test_cron_0230_berlin_on_the_spring_forward_day_fires_at_the_jump(home, ok, tick, at):
    # 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00Z; 02:30 does not exist that day.
    at("2026-03-28T12:00:00Z")
    new_task(ok, "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--message", "nightly")
    assert task_row(home)["next_run"] == ts("2026-03-29T01:00:00Z")
    for when in ("2026-03-29T00:59:59Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z",
                 "2026-03-30T00:29:59Z", "2026-03-30T00:30:00Z"):
        assert tick(when).exit_code == 0
    assert [f["occurrence"] for f in fired(home)] == [
        ts("2026-03-29T01:00:00Z"), ts("2026-03-30T00:30:00Z")]


def test_at_local_time_with_tz_across_the_fall_back(home, ok, tick, at):
    at("2026-10-24T12:00:00Z")  # 14:00 CEST; tomorrow 09:00 is CET (08:00Z)
    new_task(ok, "--at", "09:00", "--tz", "Europe/Berlin", "--message", "morning")
    new_task(ok, "--at", "2026-10-25 09:00", "--tz", "Europe/Berlin", "--message", "same")
    assert [r["next_run"] for r in rows(home, "SELECT next_run FROM tasks ORDER BY id")] == [
        ts("2026-10-25T08:00:00Z")] * 2
    assert tick("2026-10-25T07:00:00Z").exit_code == 0  # 09:00 at yesterday's offset
    assert fired(home) == []
    assert tick("2026-10-25T08:00:00Z").exit_code == 0
    assert [len(fired(home, t)) for t in ("task-1", "task-2")] == [1, 1]
    assert [r["state"] for r in rows(home, "SELECT state FROM tasks ORDER BY id")] == [
        "done", "done"]


def test_every_is_real_time_across_the_fall_back(home, ok, tick, at):
    at("2026-10-24T23:00:00Z")  # 01:00 CEST
    new_task(ok, "--every", "1h", "--message", "hourly")
    for when in ("2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"):
        assert tick(when).exit_code == 0  # 02:00 CEST, 02:00 CET, 03:00 CET
    assert [(f["occurrence"], f["skipped"]) for f in fired(home)] == [
        (ts("2026-10-25T00:00:00Z"), 0), (ts("2026-10-25T01:00:00Z"), 0),
        (ts("2026-10-25T02:00:00Z"), 0)]


# -- two runners -------------------------------------------------------------------------------

def test_two_runners_started_together_fire_and_deliver_each_occurrence_once(home, ok, server,
                                                                            tmp_path):
    out = tmp_path / "replies.txt"
    for i in range(3):
        new_task(ok, "--every", "1h", "--message", f"task {i}", "--deliver", f"file:{out}")
    for when in ("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"):
        run_together(when)
    everything = of_type(home, "task.fired")
    occurrences = [(e["data"]["task"], e["data"]["occurrence"]) for e in everything]
    assert sorted(occurrences) == sorted(
        (f"task-{i}", ts(when)) for i in (1, 2, 3)
        for when in ("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"))
    turns = [e["data"]["turn"] for e in everything]
    completed = [e["data"]["turn"] for e in of_type(home, "turn.completed")]
    assert sorted(completed) == sorted(turns)  # each answered exactly once
    assert len(server.requests) == 6
    delivered = [e["data"]["turn"] for e in of_type(home, "task.delivered")]
    assert sorted(delivered) == sorted(turns)  # and delivered exactly once
    assert out.read_text() == f"{DEFAULT_TEXT}\n" * 6


def test_two_runners_never_deliver_a_reply_twice_while_a_webhook_is_slow(home, ok, server,
                                                                         hook):
    h = hook(delay=0.3)  # one runner is still posting when the other looks for work
    for i in range(3):  # a session each, so both runners answer turns at the same time
        ok("session", "new")
        new_task(ok, "--every", "1h", "--message", f"task {i}", "--deliver", f"webhook:{h.url}")
    run_together("2026-03-02T09:00:00Z")
    turns = sorted(e["data"]["turn"] for e in of_type(home, "task.fired"))
    assert len(turns) == 3
    assert sorted(b["turn"] for b in h.bodies) == turns
    assert sorted(e["data"]["turn"] for e in of_type(home, "task.delivered")) == turns


# -- failure and backoff -----------------------------------------------------------------------

def test_failed_turn_backs_off_30s_1m_5m_15m_60m_and_records_why(home, ok, tick, server):
    new_task(ok, "--every", "1d", "--message", "daily")
    server.script(*[Status(500)] * 6)

    first = tick("2026-03-03T08:00:00Z")
    assert first.exit_code == 5
    row = task_row(home)
    assert (row["last_status"], row["failures"], row["retry_at"]) == (
        "failed", 1, ts("2026-03-03T08:00:30Z"))
    [h] = json.loads(ok("task", "history", "task-1", "--json"))
    assert h["status"] == "failed" and "every model failed" in h["error"]
    shown = ok("task", "show", "task-1")
    assert "  Retry at:    2026-03-03 08:00:30 UTC\n" in shown
    assert "  Failures:    1\n" in shown and "every model failed" in shown

    assert tick("2026-03-03T08:00:29Z").exit_code == 0
    assert len(fired(home)) == 1
    assert tick("2026-03-03T08:00:30Z").exit_code == 5
    assert fired(home)[-1]["retry"] is True
    assert fired(home)[-1]["occurrence"] == ts("2026-03-03T08:00:00Z")
    assert (task_row(home)["failures"], task_row(home)["retry_at"]) == (
        2, ts("2026-03-03T08:01:30Z"))

    assert tick("2026-03-03T08:01:29Z").exit_code == 0
    assert len(fired(home)) == 2
    assert tick("2026-03-03T08:01:30Z").exit_code == 5
    assert (task_row(home)["failures"], task_row(home)["retry_at"]) == (
        3, ts("2026-03-03T08:06:30Z"))

    # Then 15 m, 60 m, and 60 m from there on.
    for failed_at, retry_at, failures in (("08:06:30", "08:21:30", 4),
                                          ("08:21:30", "09:21:30", 5),
                                          ("09:21:30", "10:21:30", 6)):
        assert tick(f"2026-03-03T{failed_at}Z").exit_code == 5
        assert (task_row(home)["failures"], task_row(home)["retry_at"]) == (
            failures, ts(f"2026-03-03T{retry_at}Z"))
    assert tick("2026-03-03T10:21:29Z").exit_code == 0
    assert len(fired(home)) == 6
    assert tick("2026-03-03T10:21:30Z").exit_code == 0  # the server answers now
    row = task_row(home)
    assert (row["last_status"], row["failures"], row["retry_at"], row["next_run"]) == (
        "ok", 0, None, ts("2026-03-04T08:00:00Z"))
    hist = json.loads(ok("task", "history", "task-1", "--json"))
    assert [(h["status"], h["retry"]) for h in hist] == [
        ("failed", False), *[("failed", True)] * 5, ("completed", True)]
    assert [len(fired(home)), len(server.requests)] == [7, 7]


def test_failure_right_before_the_next_run_leaves_the_retry_to_it(home, ok, tick, server):
    new_task(ok, "--every", "1h", "--message", "hourly")
    server.script(Status(500))
    assert tick("2026-03-02T09:59:45Z").exit_code == 5  # 09:00 fires late and fails
    assert task_row(home)["retry_at"] is None  # 10:00 comes before 09:59:45 + 30 s
    assert tick("2026-03-02T10:00:00Z").exit_code == 0
    assert [(f["occurrence"], f.get("retry", False)) for f in fired(home)] == [
        (ts("2026-03-02T09:00:00Z"), False), (ts("2026-03-02T10:00:00Z"), False)]


def test_at_task_is_done_after_success_and_retried_after_failure(home, ok, tick, server):
    new_task(ok, "--at", "20m", "--message", "once")
    new_task(ok, "--at", "20m", "--message", "kept", "--keep-after-run", "--model",
             "ollama/fake-small")
    assert [r["next_run"] for r in rows(home, "SELECT next_run FROM tasks ORDER BY id")] == [
        ts("2026-03-02T08:20:00Z")] * 2
    server.script_for("fake-model", Status(500))  # task-1's turn fails
    assert tick("2026-03-02T08:20:00Z").exit_code == 5
    states = {r["id"]: (r["state"], r["last_status"], r["retry_at"]) for r in rows(
        home, "SELECT * FROM tasks")}
    assert states == {"task-1": ("active", "failed", ts("2026-03-02T08:20:30Z")),
                      "task-2": ("active", "ok", None)}
    assert tick("2026-03-02T08:20:30Z").exit_code == 0
    assert task_row(home)["state"] == "done"
    assert json.loads(ok("task", "list", "--json"))[0]["id"] == "task-2"
    assert [r["id"] for r in json.loads(ok("task", "list", "--all", "--json"))] == [
        "task-1", "task-2"]
    assert tick("2026-03-02T09:20:00Z").exit_code == 0
    assert [len(fired(home, t)) for t in ("task-1", "task-2")] == [2, 1]


# -- models ------------------------------------------------------------------------------------

def test_task_turns_use_the_task_model_else_primary_or_their_own(home, ok, tick, server):
    new_task(ok, "--every", "1h", "--message", "default")
    new_task(ok, "--every", "1h", "--message", "own", "--model", "ollama/fake-model")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    ok("agent", "models", "set", "task", "ollama/fake-small")
    assert tick("2026-03-02T10:00:00Z").exit_code == 0
    used = {(e["data"]["message"], e["data"].get("model")) for e in of_type(home, "turn.queued")}
    assert used == {("default", None), ("own", "ollama/fake-model"),
                    ("default", "ollama/fake-small")}
    hist = json.loads(ok("task", "history", "task-1", "--json"))
    assert [h["model"] for h in hist] == ["ollama/fake-model", "ollama/fake-small"]
    assert [h["model"] for h in json.loads(ok("task", "history", "task-2", "--json"))] == [
        "ollama/fake-model"] * 2
    assert sorted(r["model"] for r in server.requests) == [
        "fake-model", "fake-model", "fake-model", "fake-small"]


# -- run, pause, resume, cancel, edit ----------------------------------------------------------

def test_task_run_fires_now_through_the_scheduled_path(home, ok, run, tick, server):
    server.default = Echo()
    new_task(ok, "--every", "1d", "--message", "status please")
    result = run("task", "run", "task-1")
    assert result.exit_code == 0
    assert result.stdout == "status please\n"
    [f] = fired(home)
    assert f["manual"] is True and f["occurrence"] is None
    assert task_row(home)["next_run"] == ts("2026-03-03T08:00:00Z")  # the schedule is kept
    [h] = json.loads(ok("task", "history", "task-1", "--json"))
    assert (h["manual"], h["status"], h["reply"]) == (True, "completed", "status please")
    assert ok("task", "run", "task-1", "--queue").strip() == fired(home)[-1]["turn"]
    assert len(of_type(home, "turn.completed")) == 1  # --queue: left for `fased run`
    assert tick("2026-03-02T08:01:00Z").exit_code == 0
    assert len(of_type(home, "turn.completed")) == 2 and len(fired(home)) == 2
    ok("task", "pause", "task-1")
    assert run("task", "run", "task-1").exit_code == 0  # a paused task can be run by hand
    ok("task", "cancel", "task-1")
    result = run("task", "run", "task-1")
    assert result.exit_code == 3 and "task task-1 is cancelled" in result.stderr


def test_task_run_prints_the_error_and_exits_5_when_every_model_fails(home, ok, run, server):
    new_task(ok, "--every", "1d", "--message", "status")
    server.script(Status(500))
    result = run("task", "run", "task-1")
    assert result.exit_code == 5
    assert result.stdout.startswith("Error: every model failed")
    assert task_row(home)["last_status"] == "failed"


def test_pause_resume_cancel(home, ok, run, tick):
    new_task(ok, "--every", "1h", "--message", "hourly")
    assert ok("task", "pause", "task-1") == "Paused task-1.\n"
    assert "paused" in ok("task", "list").splitlines()[1].split()
    assert tick("2026-03-02T11:30:00Z").exit_code == 0
    assert fired(home) == []
    assert run("task", "pause", "task-1").exit_code == 3
    assert ok("task", "resume", "task-1") == "Resumed task-1.\n"
    assert task_row(home)["next_run"] == ts("2026-03-02T12:00:00Z")
    assert tick("2026-03-02T11:30:00Z").exit_code == 0
    assert fired(home) == []  # what was missed while paused is not replayed at once
    assert tick("2026-03-02T12:00:00Z").exit_code == 0
    assert [f["occurrence"] for f in fired(home)] == [ts("2026-03-02T12:00:00Z")]
    assert ok("task", "cancel", "task-1") == "Cancelled task-1.\n"
    result = run("task", "resume", "task-1")
    assert result.exit_code == 3 and "task task-1 is cancelled" in result.stderr
    assert run("task", "cancel", "task-1").exit_code == 3
    assert tick("2026-03-02T13:00:00Z").exit_code == 0
    assert len(fired(home)) == 1
    assert [e["type"] for e in events(home) if e["stream"] == "task:task-1"] == [
        "task.created", "task.paused", "task.resumed", "task.fired", "task.cancelled"]
    assert "task-1" not in ok("task", "list")
    assert json.loads(ok("task", "show", "task-1", "--json"))["state"] == "cancelled"


def test_edit_changes_settings_and_a_new_schedule_starts_from_now(home, ok, run, tick, server,
                                                                  at, tmp_path):
    new_task(ok, "--every", "1h", "--message", "hourly")
    at("2026-03-02T08:30:00Z")
    assert ok("task", "edit", "task-1", "--every", "2h", "--message", "two-hourly", "--name",
              "n", "--model", "ollama/fake-small", "--deliver", f"file:{tmp_path}/out.txt"
              ) == "Updated task-1.\n"
    d = task_json(ok)
    assert (d["schedule"], d["message"], d["name"], d["model"], d["deliver"], d["next_run"]) == (
        "every 2h", "two-hourly", "n", "ollama/fake-small", f"file:{tmp_path}/out.txt",
        ts("2026-03-02T10:30:00Z"))
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert fired(home) == []
    assert tick("2026-03-02T10:30:00Z").exit_code == 0
    assert [f["skipped"] for f in fired(home)] == [0]
    assert server.requests[-1]["model"] == "fake-small"
    assert (tmp_path / "out.txt").read_text() == DEFAULT_TEXT + "\n"

    ok("session", "new")
    ok("task", "edit", "task-1", "--session", "s-2", "--deliver", "", "--model", "")
    d = task_json(ok)
    assert (d["session"], d["deliver"], d["model"]) == ("s-2", None, None)
    result = run("task", "edit", "task-1")
    assert result.exit_code == 2 and "nothing to change" in result.stderr
    result = run("task", "edit", "task-1", "--every", "1h", "--cron", "0 * * * *")
    assert result.exit_code == 2 and "exactly one schedule" in result.stderr
    ok("task", "cancel", "task-1")
    assert run("task", "edit", "task-1", "--message", "x").exit_code == 3
    assert len(of_type(home, "task.updated")) == 2


# -- delivery ----------------------------------------------------------------------------------

def test_stdout_delivery_is_printed_by_the_runner(home, ok, tick, server):
    server.default = Echo()
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", "stdout")
    result = tick("2026-03-02T09:00:00Z")
    assert result.exit_code == 0
    assert result.stdout == "report\n"
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert (d["target"], d["ok"], d["turn"]) == ("stdout", True, fired(home)[0]["turn"])
    assert tick("2026-03-02T09:30:00Z").stdout == ""  # delivered once


@pytest.mark.parametrize("reply", ["two lines\nend\n", "no newline"])
def test_a_reply_on_stdout_ends_with_one_newline(home, ok, run, tick, server, reply):
    """run, task run and task deliver print a stdout target's reply byte-exact, ending its
    last line once: a reply that ends with a newline gets no second one."""
    server.default = Echo()
    expected = reply if reply.endswith("\n") else reply + "\n"
    new_task(ok, "--every", "1h", "--message", reply, "--deliver", "stdout")
    assert tick("2026-03-02T09:00:00Z").stdout == expected
    assert ok("task", "deliver", "task-1") == expected
    manual = run("task", "run", "task-1")
    assert manual.exit_code == 0, manual.stderr
    assert manual.stdout == expected


def test_task_run_with_a_stdout_target_prints_the_reply_once(home, ok, run, server):
    server.default = Echo()
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", "stdout")

    result = run("task", "run", "task-1")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "report\n"
    assert "report" not in result.stderr
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert (d["target"], d["ok"]) == ("stdout", True)
    as_json = json.loads(ok("task", "run", "task-1", "--json"))
    assert (as_json["reply"], as_json["delivery"]["ok"]) == ("report", True)


def test_file_delivery_appends_each_reply(home, ok, tick, server, tmp_path):
    server.default = Echo()
    out = tmp_path / "replies.txt"
    new_task(ok, "--every", "1h", "--message", "line", "--deliver", f"file:{out}")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert tick("2026-03-02T10:00:00Z").exit_code == 0
    assert out.read_text() == "line\nline\n"
    assert [e["data"]["ok"] for e in of_type(home, "task.delivered")] == [True, True]


def test_failed_file_delivery_keeps_the_reply(home, ok, tick, server, tmp_path):
    target = tmp_path / "missing-dir" / "out.txt"
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"file:{target}")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert d["ok"] is False and str(target) in d["error"]
    [h] = json.loads(ok("task", "history", "task-1", "--json"))
    assert (h["reply"], h["delivery_ok"]) == (DEFAULT_TEXT, False)


def test_webhook_delivery_posts_json(home, ok, tick, server, hook):
    h = hook()
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{h.url}")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    [f] = fired(home)
    assert h.bodies == [{"task": "task-1", "agent": "main", "session": "s-1", "turn": f["turn"],
                         "occurrence": ts("2026-03-02T09:00:00Z"), "model": "ollama/fake-model",
                         "reply": DEFAULT_TEXT}]
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert (d["ok"], d["attempts"], d["error"], d["target"]) == (True, 1, None, shown(h.url))


def shown(url: str) -> str:
    """How a webhook target is recorded and shown: its origin, the rest masked."""
    return "webhook:" + url.rsplit("/", 1)[0] + "/***"


def test_a_webhook_url_is_a_credential_kept_out_of_the_log(home, ok, tick, server, hook):
    """Slack's and Discord's webhook URLs carry their secret in the path, others a token in
    the query or a password before the host: the whole URL went into task.created, every
    task.delivered, `task show` and the projection. The log holds its origin now, and
    credentials.json (0600) the URL, which the reply is posted to."""
    h = hook()
    port = h.url.split(":")[2].split("/")[0]
    url = f"http://bot:pa55word@127.0.0.1:{port}/services/T01/B02/s3cretPathT0ken?token=abc123q"
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{url}")
    origin = f"http://127.0.0.1:{port}"
    assert f"Deliver:     webhook:{origin}/***" in ok("task", "show", "task-1")
    assert task_json(ok)["deliver"] == f"webhook:{origin}/***"
    creds = home / "credentials.json"
    assert json.loads(creds.read_text())["tasks"] == {"task-1": {"webhook": url}}
    assert creds.stat().st_mode & 0o777 == 0o600

    assert tick("2026-03-02T09:00:00Z").exit_code == 0

    assert h.requests == [("/services/T01/B02/s3cretPathT0ken?token=abc123q",
                           "Basic " + base64.b64encode(b"bot:pa55word").decode())]
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert (d["ok"], d["target"]) == (True, f"webhook:{origin}/***")
    recorded = b"".join(p.read_bytes() for p in (home / "log").rglob("*") if p.is_file())
    recorded += (home / "state.db").read_bytes()
    for secret in (b"pa55word", b"s3cretPathT0ken", b"abc123q"):
        assert secret not in recorded


def test_a_webhook_changed_or_dropped_by_task_edit_changes_its_credential(home, ok, tick,
                                                                          server, hook):
    first, second = hook(), hook()
    new_task(ok, "--every", "1h", "--message", "report", "--deliver",
             f"webhook:{first.url}?key=one")
    ok("task", "edit", "task-1", f"--deliver=webhook:{second.url}?key=two")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert (first.requests, [p for p, _ in second.requests]) == ([], ["/hook?key=two"])
    ok("task", "edit", "task-1", "--deliver", "stdout")
    assert json.loads((home / "credentials.json").read_text()).get("tasks", {}) == {}
    assert b"key=two" not in b"".join(p.read_bytes() for p in (home / "log").rglob("*")
                                       if p.is_file())


def test_a_webhook_url_missing_from_credentials_fails_its_delivery_clearly(home, ok, tick,
                                                                          server, hook):
    h = hook()
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{h.url}")
    (home / "credentials.json").unlink()
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert h.requests == []
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert (d["ok"], d["attempts"]) == (False, 1)
    assert d["error"] == "the webhook URL of task-1 is missing from credentials.json"


def test_a_webhook_an_older_fased_recorded_whole_is_still_delivered(home, ok, tick, server,
                                                                   hook):
    """fased 0.4.0 recorded the whole URL in task.created: it is posted to as it is."""
    from fased.store import Draft, Store

    h = hook()
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", "stdout")
    Store(home).append_internal([Draft("task.updated", "task:task-1", {
        "task": "task-1", "agent": "main", "deliver": f"webhook:{h.url}?token=old"})])
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert [p for p, _ in h.requests] == ["/hook?token=old"]
    # what is printed of that log masks it as a newer fased records it
    shown_log = ok("replay", "--json", "-t", "task.*")
    assert "token=old" not in shown_log and shown_log.count(f'"{shown(h.url)}"') == 2


def test_webhook_500_is_retried_within_one_delivery(home, ok, tick, server, hook):
    h = hook([500])
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{h.url}")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert len(h.bodies) == 2 and h.bodies[0] == h.bodies[1]
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert (d["ok"], d["attempts"]) == (True, 2)


def test_a_bad_webhook_attempts_setting_is_one_clear_error(home, ok, tick, server, hook,
                                                          monkeypatch):
    monkeypatch.setenv("FASED_WEBHOOK_ATTEMPTS", "lots")
    h = hook([200])
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{h.url}")
    result = tick("2026-03-02T09:00:00Z")
    assert "Traceback" not in result.stderr
    assert "FASED_WEBHOOK_ATTEMPTS must be a whole number from 1 to 100, not 'lots'" in (
        result.stderr)


def test_webhook_failing_now_is_delivered_on_a_later_tick(home, ok, tick, server, hook,
                                                          monkeypatch):
    monkeypatch.setenv("FASED_WEBHOOK_ATTEMPTS", "2")
    h = hook([500, 503])
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{h.url}")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    [d] = [e["data"] for e in of_type(home, "task.delivered")]
    assert (d["ok"], d["attempts"], d["error"]) == (False, 2, "HTTP 503")
    [run_] = json.loads(ok("task", "history", "task-1", "--json"))
    assert (run_["delivery_ok"], run_["delivery_error"]) == (False, "HTTP 503")
    assert f"[delivery failed ({shown(h.url)}): HTTP 503]" in ok("task", "show", "task-1")

    assert tick("2026-03-02T09:10:00Z").exit_code == 0
    assert [(e["data"]["ok"], e["data"]["turn"]) for e in of_type(home, "task.delivered")] == [
        (False, fired(home)[0]["turn"]), (True, fired(home)[0]["turn"])]
    assert len(h.bodies) == 3 and len(fired(home)) == 1
    [run_] = json.loads(ok("task", "history", "task-1", "--json"))
    assert run_["delivery_ok"] is True
    assert tick("2026-03-02T09:20:00Z").exit_code == 0
    assert len(h.bodies) == 3  # delivered: not sent again


@pytest.mark.parametrize("unreachable", [False, True])
def test_webhook_failing_for_good_keeps_the_reply_and_gives_up(home, ok, tick, server, hook,
                                                               monkeypatch, unreachable):
    monkeypatch.setenv("FASED_WEBHOOK_ATTEMPTS", "2")
    h = hook(default=500)
    url = h.url
    if unreachable:
        h.close()  # nothing listens there any more
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{url}")
    for minute in range(0, 40, 10):
        assert tick(f"2026-03-02T09:{minute:02d}:00Z").exit_code == 0
    delivered = [e["data"] for e in of_type(home, "task.delivered")]
    # 2 attempts per tick: 2, 4, 6 >= 5 (MAX_DELIVERY_ATTEMPTS), then no more.
    assert [(d["ok"], d["attempts"]) for d in delivered] == [(False, 2)] * 3
    assert {d["error"] for d in delivered} == (
        {"connection refused"} if unreachable else {"HTTP 500"})  # words, not a class
    assert len(h.bodies) == (0 if unreachable else 6)
    [turn] = [f["turn"] for f in fired(home)]
    assert rows(home, "SELECT role, content FROM messages WHERE turn = ? ORDER BY seq",
                (turn,))[-1] == {"role": "assistant", "content": DEFAULT_TEXT}
    assert DEFAULT_TEXT in (home / "agents/main/sessions/s-1.jsonl").read_text()
    [run_] = json.loads(ok("task", "history", "task-1", "--json"))
    assert (run_["status"], run_["reply"], run_["delivery_ok"]) == (
        "completed", DEFAULT_TEXT, False)


def test_task_deliver_sends_a_reply_fased_run_gave_up_on(home, ok, run, tick, server, hook,
                                                        monkeypatch):
    monkeypatch.setenv("FASED_WEBHOOK_ATTEMPTS", "2")
    h = hook([500] * 6)
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", f"webhook:{h.url}")
    for minute in range(0, 40, 10):
        assert tick(f"2026-03-02T09:{minute:02d}:00Z").exit_code == 0
    [turn] = [f["turn"] for f in fired(home)]
    assert len(of_type(home, "task.delivered")) == 3  # given up: 6 tries >= 5

    result = run("task", "deliver", "task-1")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Delivered turn {turn} of task-1 to {shown(h.url)}.\n"
    assert len(h.bodies) == 7 and h.bodies[-1]["reply"] == DEFAULT_TEXT
    last = of_type(home, "task.delivered")[-1]["data"]
    assert (last["ok"], last["turn"], last["attempts"]) == (True, turn, 1)
    [run_] = json.loads(ok("task", "history", "task-1", "--json"))
    assert run_["delivery_ok"] is True
    assert tick("2026-03-02T09:50:00Z").exit_code == 0
    assert len(h.bodies) == 7  # delivered now: fased run does not send it again


def test_task_deliver_sends_again_and_reports_a_failure(home, ok, run, tick, server,
                                                        tmp_path):
    server.default = Echo()
    out = tmp_path / "replies.txt"
    new_task(ok, "--every", "1h", "--message", "one", "--deliver", f"file:{out}")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    ok("task", "edit", "task-1", "--message", "two")
    assert tick("2026-03-02T10:00:00Z").exit_code == 0
    first, second = [f["turn"] for f in fired(home)]

    assert run("task", "deliver", "task-1", "--turn", first).exit_code == 0
    report = json.loads(ok("task", "deliver", "task-1", "--json"))
    assert out.read_text() == "one\ntwo\none\ntwo\n"
    assert report == {"task": "task-1", "agent": "main", "turn": second,
                      "target": f"file:{out}", "ok": True, "error": None, "attempts": 1}

    out.unlink()
    out.mkdir()  # a directory now: the file cannot be appended to
    before = len(of_type(home, "task.delivered"))
    failed = run("task", "deliver", "task-1")
    assert failed.exit_code == 1
    assert error_line(failed).startswith(f"Error: delivery to file:{out} failed: {out}: ")
    [d] = [e["data"] for e in of_type(home, "task.delivered")[before:]]
    assert (d["ok"], d["turn"]) == (False, second)


def test_task_deliver_to_stdout_prints_the_reply(home, ok, run, tick, server):
    server.default = Echo()
    new_task(ok, "--every", "1h", "--message", "report", "--deliver", "stdout")
    assert tick("2026-03-02T09:00:00Z").stdout == "report\n"

    assert ok("task", "deliver", "task-1") == "report\n"
    assert json.loads(ok("task", "deliver", "task-1", "--json"))["reply"] == "report"


def test_task_deliver_refuses_what_it_cannot_deliver(home, ok, run, tick, server):
    new_task(ok, "--every", "1h", "--message", "report")
    assert fails(run, home, 2, "task", "deliver", "task-1") == (
        "Error: task task-1 has no delivery target")
    ok("task", "edit", "task-1", "--deliver", "stdout")
    assert fails(run, home, 1, "task", "deliver", "task-1") == (
        "Error: task task-1 has no completed run")
    assert fails(run, home, 1, "task", "deliver", "task-1", "--turn", "t-000000000000") == (
        "Error: task task-1 has no completed run t-000000000000")
    assert fails(run, home, 1, "task", "deliver", "task-9") == "Error: no task 'task-9'"


# -- projections -------------------------------------------------------------------------------

def test_task_views_rebuild_from_the_log_when_state_db_is_gone(home, ok, tick, server,
                                                              tmp_path):
    new_task(ok, "--every", "1h", "--message", "hourly", "--deliver", f"file:{tmp_path}/o")
    new_task(ok, "--at", "90m", "--message", "once")
    server.script(Status(500))
    assert tick("2026-03-02T09:00:00Z").exit_code == 5  # task-1 fails, backs off
    assert tick("2026-03-02T09:30:00Z").exit_code == 0  # retried: ok, delivered; task-2 done
    views = [ok("task", "list", "--all", "--json"),
             *(ok("task", "history", t, "--json") for t in ("task-1", "task-2")),
             ok("task", "show", "task-1")]
    assert json.loads(views[0])[1]["state"] == "done"
    for path in home.glob("state.db*"):
        path.unlink()
    assert [ok("task", "list", "--all", "--json"),
            *(ok("task", "history", t, "--json") for t in ("task-1", "task-2")),
            ok("task", "show", "task-1")] == views


# -- chat --schedule and /task -----------------------------------------------------------------

def test_chat_schedule_creates_a_task_for_the_current_session(home, ok, tick, server):
    server.default = Echo()
    out = ok("chat", "--schedule", "every 1h", "check the build")
    assert out == ("Created task-1: every 1h in session s-1; next run "
                   "2026-03-02 09:00:00 UTC.\n")
    assert of_type(home, "turn.queued") == []  # nothing sent now
    out = json.loads(ok("chat", "--schedule", "cron 30 2 * * *", "--tz", "Europe/Berlin",
                        "--json", "nightly"))
    assert out == {"task": "task-2", "schedule": "cron 30 2 * * * (Europe/Berlin)",
                   "next_run": ts("2026-03-03T01:30:00Z"), "session": "s-1"}
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert [e["data"]["reply"] for e in of_type(home, "turn.completed")] == ["check the build"]


def test_repl_task_commands(home, ok, tick, server):
    from fased.repl import Repl
    from fased.store import Store

    server.default = Echo()
    repl = Repl(Store(home), write=lambda s: None, warn=lambda s: None)
    assert repl.session == "s-1"  # the agent had no session: the loop made one
    assert repl.handle("/task new 'every 1h' check the build") == (
        "Task task-1: every 1h in session s-1.")
    assert repl.handle("/task new 'in 20m' stretch") == (
        "Task task-2: at 2026-03-02T08:20:00Z in session s-1.")
    created = {e["data"]["task"]: e["data"] for e in of_type(home, "task.created")}
    assert (created["task-1"]["message"], created["task-1"]["agent"],
            created["task-1"]["session"]) == ("check the build", "main", "s-1")
    listed = repl.handle("/task list").splitlines()
    assert [line.split()[:3] for line in listed] == [["task-1", "every", "1h"],
                                                     ["task-2", "at", "2026-03-02T08:20:00Z"]]
    assert "next 2026-03-02T09:00:00.000000Z  active  check the build" in listed[0]

    assert repl.handle("/task run task-1") == (
        "Task task-1 queued; its reply arrives with the next `fased run`.")
    assert tick("2026-03-02T08:05:00Z").exit_code == 0
    assert [e["data"]["reply"] for e in of_type(home, "turn.completed")] == ["check the build"]
    shown = repl.handle("/task show task-1").splitlines()
    assert shown[0] == "task-1: every 1h, active, next 2026-03-02T09:00:00.000000Z"
    assert shown[1] == "  message: check the build"
    assert shown[2] == "  2026-03-02T08:00 completed"

    assert repl.handle("/task cancel task-2") == "Cancelled task task-2."
    assert [line.split()[0] for line in repl.handle("/task list").splitlines()] == ["task-1"]
    assert task_row(home, "task-2")["state"] == "cancelled"
    # As `fased task cancel|run` do, a cancelled task is neither cancelled again nor run.
    assert repl.handle("/task cancel task-2") == "Error: task task-2 is cancelled"
    assert repl.handle("/task run task-2") == "Error: task task-2 is cancelled"
    assert len(of_type(home, "task.cancelled")) == 1 and fired(home, "task-2") == []

    assert repl.handle("/task show task-9").startswith("Error: no task 'task-9'")
    assert repl.handle("/task new 'every 1h'").startswith("Error: usage: /task new WHEN")
    assert repl.handle("/task new 'every soon' x").startswith("Error: invalid")
    assert repl.handle("/task frobnicate").startswith("Error: usage: /task new")
    assert len(of_type(home, "task.created")) == 2


def test_repl_task_list_shows_only_this_sessions_tasks(home, ok):
    from fased.repl import Repl
    from fased.store import Store

    new_task(ok, "--every", "1h", "--message", "first session")
    ok("session", "new")
    repl = Repl(Store(home), write=lambda s: None, warn=lambda s: None)
    assert repl.session == "s-2"
    assert repl.handle("/task list") == "No tasks."
    repl.handle("/task new 'every 2h' second session")
    assert [line.split()[0] for line in repl.handle("/task list").splitlines()] == ["task-2"]
    assert task_row(home, "task-2")["session"] == "s-2"


# -- what the help promises (issue 13) ---------------------------------------------------------

def test_a_failed_manual_run_of_a_future_at_task_never_completes_it(home, ok, run, tick,
                                                                    server):
    new_task(ok, "--at", "2026-03-02T12:00:00Z", "--message", "at noon")
    server.script(Status(500))
    assert run("task", "run", "task-1").exit_code == 5  # by hand, hours early: it fails

    # No automatic retry of what was run by hand: whoever ran it saw it fail.
    assert task_row(home)["retry_at"] is None
    assert tick("2026-03-02T08:00:30Z").exit_code == 0
    assert tick("2026-03-02T08:30:00Z").exit_code == 0
    assert len(fired(home)) == 1
    d = task_json(ok)
    assert (d["state"], d["next_run"]) == ("active", ts("2026-03-02T12:00:00Z"))

    # A manual run that succeeds leaves it scheduled too; the scheduled run completes it.
    assert run("task", "run", "task-1").exit_code == 0
    assert task_json(ok)["state"] == "active"
    assert tick("2026-03-02T12:00:00Z").exit_code == 0
    d = task_json(ok)
    assert (d["state"], d["next_run"]) == ("done", None)
    assert [(f.get("manual", False), f["occurrence"]) for f in fired(home)] == [
        (True, None), (True, None), (False, ts("2026-03-02T12:00:00Z"))]


def test_a_manual_run_leaves_a_scheduled_runs_retry_alone(home, ok, run, tick, server):
    new_task(ok, "--at", "20m", "--message", "once")
    server.script(Status(500))
    assert tick("2026-03-02T08:20:00Z").exit_code == 5  # the scheduled run fails
    assert task_row(home)["retry_at"] == ts("2026-03-02T08:20:30Z")
    assert run("task", "run", "task-1").exit_code == 0  # by hand, in between: ok
    row = task_row(home)
    assert (row["state"], row["retry_at"], row["failures"]) == (
        "active", ts("2026-03-02T08:20:30Z"), 1)
    assert tick("2026-03-02T08:20:30Z").exit_code == 0  # the retry of the scheduled run
    assert fired(home)[-1]["retry"] is True
    assert task_row(home)["state"] == "done"


def test_a_task_without_model_ignores_the_session_chat_override(home, ok, run, tick, server):
    ok("chat", "-m", "ollama/fake-small", "hi")  # the session's chat override
    new_task(ok, "--every", "1h", "--message", "scheduled")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    assert run("task", "run", "task-1").exit_code == 0
    assert [r["model"] for r in server.requests] == ["fake-small", "fake-model", "fake-model"]
    ok("chat", "still small")  # the chat keeps its override
    assert server.requests[-1]["model"] == "fake-small"


@pytest.mark.parametrize("schedule", [["--every", "1h"], ["--cron", "0 * * * *"]])
def test_after_pause_and_resume_no_run_is_reported_missed(home, ok, run, tick, at, server,
                                                          schedule):
    new_task(ok, *schedule, "--message", "hourly")
    assert tick("2026-03-02T09:00:00Z").exit_code == 0
    at("2026-03-02T09:10:00Z")
    ok("task", "pause", "task-1")
    at("2026-03-02T12:30:00Z")
    ok("task", "resume", "task-1")
    result = tick("2026-03-02T13:00:00Z")
    assert result.exit_code == 0
    assert "fased: task task-1 fired\n" in result.stderr
    assert "missed" not in result.stderr
    assert [(f["occurrence"], f["skipped"]) for f in fired(home)] == [
        (ts("2026-03-02T09:00:00Z"), 0), (ts("2026-03-02T13:00:00Z"), 0)]
    assert "missed" not in ok("task", "show", "task-1")
    # downtime after the resume is still missed runs
    result = tick("2026-03-02T15:10:00Z")
    assert "(1 missed run(s) folded into this one)" in result.stderr
    assert run("replay", "--rebuild").exit_code == 0
    assert [h["skipped"] for h in json.loads(ok("task", "history", "task-1", "--json"))] == [
        0, 0, 1]


@pytest.mark.parametrize(("line", "when"), [
    ("/task new every 1h check the build", "every 1h"),
    ("/task new in 20m check the build", "in 20m"),
    ("/task new at 2026-03-02T09:30Z check the build", "at 2026-03-02T09:30Z"),
    ("/task new at 2026-03-02 09:30 check the build", "at 2026-03-02 09:30"),
    ("/task new at 09:00 check the build", "at 09:00"),
    ("/task new at 9:30pm check the build", "at 9:30pm"),
    ("/task new cron */5 * * * * check the build", "cron */5 * * * *"),
    ("/task new CRON 0 9 * * 1-5 check the build", "cron 0 9 * * 1-5"),
    ("/task new */5 * * * * check the build", "*/5 * * * *"),
    ("/task new 'every 2h' check the build", "every 2h"),
])
def test_repl_task_new_takes_when_unquoted_as_help_shows(home, ok, line, when):
    from datetime import UTC, datetime

    from fased.repl import HELP, Repl
    from fased.schedule import parse_schedule_phrase
    from fased.store import Store

    expected = parse_schedule_phrase(when, now=datetime(2026, 3, 2, 8, tzinfo=UTC)).describe()
    repl = Repl(Store(home), write=lambda s: None, warn=lambda s: None)
    assert repl.handle(line) == f"Task task-1: {expected} in session s-1."
    [created] = [e["data"] for e in of_type(home, "task.created")]
    assert created["message"] == "check the build"
    for shown in ("every 1h", "in 20m", "at 09:00", "cron */5 * * * *"):
        assert shown in HELP


def test_repl_task_new_keeps_the_message_as_typed(home, ok):
    from fased.repl import Repl
    from fased.store import Store

    repl = Repl(Store(home), write=lambda s: None, warn=lambda s: None)
    assert repl.handle("/task new every 1h don't  forget \"the\" build").startswith("Task task-1")
    [created] = [e["data"] for e in of_type(home, "task.created")]
    assert created["message"] == "don't  forget \"the\" build"
    assert repl.handle("/task new every").startswith("Error: usage: /task new WHEN MESSAGE")
    assert repl.handle("/task new in soon x").startswith("Error: invalid schedule 'in soon'")
    assert len(of_type(home, "task.created")) == 1


def test_ctrl_c_while_task_run_waits_for_an_earlier_turn_withdraws_its_run(models, ok, run,
                                                                           server):
    import signal

    from conftest import wait_for
    from fakeserver import Reply

    server.script(Reply("slow " * 40, delay=0.1))  # the earlier chat turn: four seconds
    ok("chat", "--queue", "earlier")
    new_task(ok, "--every", "1d", "--message", "by hand")
    proc = subprocess.Popen([*FASED, "task", "run", "task-1"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: server.requests)  # task run answers the earlier turn first
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert (proc.returncode, out) == (130, ""), err
    [f] = fired(models)
    assert f"fased: interrupted before turn {f['turn']} started; it will not be answered" in err
    assert "Traceback" not in err
    [h] = json.loads(ok("task", "history", "task-1", "--json"))
    assert h["status"] == "aborted"
    assert run("run", "--until-idle").exit_code == 0
    assert [e["data"]["reply"] for e in of_type(models, "turn.completed")] == [DEFAULT_TEXT]
    assert len(server.requests) == 2  # the earlier turn again; the task's run never
