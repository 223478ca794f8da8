"""Previews that change nothing: `fased task next [--at TIME]` and `fased run --dry-run`.

Each preview is checked against what a real `fased run --once` then does, and against the
bytes of the log and state.db, which it must leave exactly as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import error_line, events, fails, ts


@pytest.fixture
def home(at, models) -> Path:
    return models


def snapshot(home: Path) -> dict[str, bytes]:
    """The bytes of the log's segments and state.db (its WAL too, when there is one)."""
    files = sorted((home / "log").iterdir()) + [
        p for p in (home / "state.db", home / "state.db-wal") if p.exists()]
    return {p.name: p.read_bytes() for p in files}


def new_task(ok, *args: str) -> str:
    return json.loads(ok("task", "new", *args, "--json"))["task"]


def fired(home: Path) -> list[dict]:
    return [{k: e["data"][k] for k in ("task", "agent", "session", "occurrence", "skipped",
                                       "next_run")} | {"retry": bool(e["data"].get("retry"))}
            for e in events(home) if e["type"] == "task.fired"]


def started(home: Path, before: int) -> list[dict]:
    """The turns a run claimed, in order: (turn id or its task's id for a new turn, session)."""
    tasks = {e["data"]["turn"]: e["data"]["task"] for e in events(home)
             if e["type"] == "turn.queued" and e["seq"] > before and e["data"].get("task")}
    return [(tasks.get(e["data"]["turn"], e["data"]["turn"]), e["data"]["session"])
            for e in events(home) if e["type"] == "turn.started" and e["seq"] > before]


def planned(plan: dict) -> list[tuple[str, str]]:
    return [(t["turn"] or t["task"], t["session"]) for t in plan["turns"]]


def test_dry_run_says_what_run_once_then_does_and_changes_no_byte(home, ok, run, at):
    new_task(ok, "--every", "1h", "--message", "check the build")
    ok("session", "new", "--name", "ops")
    new_task(ok, "--every", "30m", "--message", "two")
    queued = ok("chat", "--queue", "hello there").strip()
    at("2026-03-02T10:10:00Z")
    before = snapshot(home)

    plan = json.loads(ok("run", "--dry-run", "--json"))
    text = run("run", "--dry-run")
    nxt = json.loads(ok("task", "next", "--json"))

    assert snapshot(home) == before  # nothing claimed, nothing appended, state.db untouched
    assert text.exit_code == 0 and text.stderr == ""
    assert text.stdout.splitlines() == [
        "Dry run at 2026-03-02T10:10:00Z: nothing is claimed or recorded. `fased run --once` "
        "would:",
        "  fire for 2026-03-02T10:00:00Z  task-2 (main/s-2), folding 3 missed run(s); next run "
        "2026-03-02T10:30:00Z",
        "  fire for 2026-03-02T10:00:00Z  task-1 (main/s-1), folding 1 missed run(s); next run "
        "2026-03-02T11:00:00Z",
        f"  answer 1.  {queued} (main/s-2) with ollama/fake-model: hello there",
        "  answer 2.  new turn of task-2 (main/s-2) with ollama/fake-model: two",
        "  answer 3.  new turn of task-1 (main/s-1) with ollama/fake-model: check the build"]
    assert [(r["task"], r["due"], r["occurrence"], r["skipped"]) for r in nxt] == [
        ("task-2", True, ts("2026-03-02T10:00:00Z"), 3),
        ("task-1", True, ts("2026-03-02T10:00:00Z"), 1)]

    seq = len(events(home))
    result = run("run", "--once")
    assert result.exit_code == 0, result.stderr
    assert fired(home) == plan["fires"]
    assert [{k: f[k] for k in ("task", "occurrence", "skipped", "next_run")}
            for f in plan["fires"]] == [
        {k: r[k] for k in ("task", "occurrence", "skipped", "next_run")} for r in nxt]
    assert started(home, seq) == planned(plan) == [
        (queued, "s-2"), ("task-2", "s-2"), ("task-1", "s-1")]


def test_task_next_at_a_later_time_is_what_a_run_then_fires(home, ok, run, at):
    new_task(ok, "--every", "1h", "--message", "hourly")
    new_task(ok, "--cron", "30 * * * *", "--message", "half past")
    new_task(ok, "--every", "1d", "--message", "daily")
    before = snapshot(home)

    rows = json.loads(ok("task", "next", "--at", "2026-03-02T13:20:00Z", "--json"))
    table = ok("task", "next", "--at", "2026-03-02T13:20:00Z")

    assert snapshot(home) == before
    assert [(r["task"], r["due"], r["fires_at"], r["occurrence"], r["skipped"]) for r in rows] == [
        ("task-2", True, ts("2026-03-02T13:20:00Z"), ts("2026-03-02T12:30:00Z"), 4),
        ("task-1", True, ts("2026-03-02T13:20:00Z"), ts("2026-03-02T13:00:00Z"), 4),
        ("task-3", False, ts("2026-03-03T08:00:00Z"), ts("2026-03-03T08:00:00Z"), 0)]
    assert table.splitlines()[1].split() == [
        "task-2", "main", "s-1", "cron", "30", "*", "*", "*", "*", "(UTC)",
        "2026-03-02T13:20:00", "for", "2026-03-02T12:30:00,", "folding", "4", "missed",
        "run(s)"]
    assert table.splitlines()[3].split()[-3:] == ["2026-03-03T08:00:00", "for",
                                                   "2026-03-03T08:00:00"]

    at("2026-03-02T13:20:00Z")
    assert run("run", "--once").exit_code == 0
    assert [(f["task"], f["occurrence"], f["skipped"], f["next_run"]) for f in fired(home)] == [
        (r["task"], r["occurrence"], r["skipped"], r["next_run"]) for r in rows if r["due"]]


def test_task_next_without_tasks_and_with_a_past_or_bad_time(home, ok, run):
    result = run("task", "next")
    assert result.exit_code == 0 and result.stdout == ""
    assert "No active tasks" in result.stderr
    assert json.loads(ok("task", "next", "--json")) == []
    assert "is in the past" in fails(run, home, 2, "task", "next", "--at",
                                     "2026-03-01T00:00:00Z")
    assert "invalid time" in fails(run, home, 2, "task", "next", "--at", "whenever")


def test_task_next_at_a_time_of_day_means_its_next_occurrence(home, ok, at):
    new_task(ok, "--every", "1h", "--message", "hourly")
    at("2026-03-02T10:30:00Z")
    [row] = json.loads(ok("task", "next", "--at", "5h", "--json"))
    assert (row["fires_at"], row["occurrence"], row["skipped"]) == (
        ts("2026-03-02T15:30:00Z"), ts("2026-03-02T15:00:00Z"), 6)


def test_dry_run_sees_a_task_fire_after_its_pending_turn_is_answered(home, ok, run, at):
    """The loop fires, answers a turn, and fires again: a task held by its queued turn fires
    in the same run once that turn is answered, and the preview says so in that order."""
    new_task(ok, "--every", "1h", "--message", "hourly")
    manual = ok("task", "run", "task-1", "--queue").strip()
    at("2026-03-02T09:05:00Z")
    nxt = json.loads(ok("task", "next", "--json"))
    assert nxt[0]["waits_for"] == manual and not nxt[0]["due"]
    assert "when " + manual + " is answered" in ok("task", "next")

    plan = json.loads(ok("run", "--dry-run", "--json"))
    assert planned(plan) == [(manual, "s-1"), ("task-1", "s-1")]
    assert [(f["task"], f["occurrence"]) for f in plan["fires"]] == [
        ("task-1", ts("2026-03-02T09:00:00Z"))]
    held = json.loads(ok("run", "--dry-run", "--json", "--max-turns", "1"))
    assert planned(held) == [(manual, "s-1")] and held["fires"] == []
    assert held["held"] == [{"task": "task-1", "waits_for": manual}]

    seq = len(events(home))
    assert run("run", "--once").exit_code == 0
    assert started(home, seq) == planned(plan)
    assert [f for f in fired(home) if f["occurrence"]] == plan["fires"]


def test_dry_run_honours_agent_and_lists_deliveries_and_expiring_approvals(home, ok, run, at):
    ok("agent", "create", "ops", "--model", "ollama/fake-model")
    new_task(ok, "--every", "1h", "--message", "main's", "--deliver", "stdout")
    new_task(ok, "--agent", "ops", "--every", "1h", "--message", "ops'")
    at("2026-03-02T09:00:00Z")
    plan = json.loads(ok("run", "--dry-run", "--agent", "ops", "--json"))
    assert [f["task"] for f in plan["fires"]] == ["task-2"]
    assert [(t["agent"], t["task"]) for t in plan["turns"]] == [("ops", "task-2")]

    plan = json.loads(ok("run", "--dry-run", "--json"))
    assert [(d["task"], d["turn"], d["target"]) for d in plan["deliveries"]] == [
        ("task-1", None, "stdout")]  # the reply of the turn this run answers
    result = run("run", "--once")
    assert result.exit_code == 0
    assert [e["data"]["task"] for e in events(home) if e["type"] == "task.delivered"] == [
        "task-1"]
    at("2026-03-02T09:30:00Z")
    assert json.loads(ok("run", "--dry-run", "--json"))["deliveries"] == []
    assert "nothing: no reply to deliver" in ok("run", "--dry-run")
    result = run("run", "--dry-run", "--agent", "nobody")
    assert result.exit_code == 1 and "nobody" in error_line(result)


@pytest.mark.parametrize("args", [
    ("task", "next"), ("task", "next", "--at", "1h"), ("run", "--dry-run"),
    ("run", "--dry-run", "--json"), ("session", "list"), ("approvals", "list"),
    ("replay", "--since", "1h"), ("replay", "--until", "2h"), ("replay", "--at", "1h"),
    ("config", "get", "agents"), ("doctor",)])
def test_a_bad_fased_now_is_a_usage_error_for_every_command_that_reads_state(
        home, run, monkeypatch, args):
    monkeypatch.setenv("FASED_NOW", "tomorrow-ish")
    line = fails(run, home, 2, *args)
    assert line.startswith("Error: FASED_NOW='tomorrow-ish' is not an RFC 3339 time")


def test_the_preview_never_writes_state_db_even_if_a_handler_tried(home, ok, at):
    """The scratch copy's guard: a write to state.db's own tables is refused."""
    import sqlite3

    from fased.preview import _scratch
    from fased.store import Store
    from fased.timeparse import utc_now

    store = Store(home)
    con = store.db()
    with _scratch(con, utc_now()), pytest.raises(sqlite3.DatabaseError):
        con.execute("UPDATE main.agents SET name = 'x'")
    with _scratch(con, utc_now()):
        con.execute("UPDATE turns SET state = 'completed'")  # the scratch copy: allowed
    assert con.execute("SELECT COUNT(*) FROM sqlite_temp_master").fetchone()[0] == 0
    store.close()

