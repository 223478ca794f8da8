"""Projections are pure functions of the log: any history of agent, session and config
commands gives the same rows whether state.db was built event by event as the commands ran,
caught up by a reader after each step, built in one pass, or rebuilt again."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

import fased.projections.turns as turns_module
import fased.store as store_module
from fased import forked
from fased.log import EventLog
from fased.store import Draft, Store, build_projection

AGENTS = ["main", "ops", "dev"]
SESSIONS = ["s-1", "s-2", "s-3", "s-4"]
PATHS = ["agents.defaults.retries", "agents.defaults.contextWindow", "models.aliases.fast",
         "agents.defaults.queue.mode"]
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                max_size=12)
values = st.one_of(st.integers(-5, 5000), st.booleans(), names, st.none(),
                   st.lists(st.integers(0, 3), max_size=2))

commands = st.one_of(
    st.tuples(st.just("agent create"), st.sampled_from(AGENTS), names),
    st.tuples(st.just("agent rename"), st.sampled_from(AGENTS), names),
    st.tuples(st.just("agent emoji"), st.sampled_from(AGENTS), st.one_of(st.none(), names)),
    st.tuples(st.just("agent use"), st.sampled_from(AGENTS)),
    st.tuples(st.just("agent delete"), st.sampled_from(AGENTS)),
    st.tuples(st.just("agent restore"), st.sampled_from(AGENTS)),
    st.tuples(st.just("session new"), st.sampled_from(AGENTS), st.sampled_from(SESSIONS),
              st.one_of(st.none(), names)),
    st.tuples(st.just("session switch"), st.sampled_from(SESSIONS)),
    st.tuples(st.just("session rename"), st.sampled_from(SESSIONS), st.one_of(st.none(), names)),
    st.tuples(st.just("session delete"), st.sampled_from(SESSIONS)),
    st.tuples(st.just("session restore"), st.sampled_from(SESSIONS)),
    st.tuples(st.just("config set"), st.sampled_from(PATHS), values),
    st.tuples(st.just("config unset"), st.sampled_from(PATHS)),
    st.tuples(st.just("config agent"), st.sampled_from(AGENTS),
              st.sampled_from(["identity.emoji", "name", "model.primary", "tools.allow"]),
              names),
    st.tuples(st.just("config edit"), st.lists(st.tuples(st.sampled_from(PATHS), values),
                                               min_size=1, max_size=3)),
)
# turns: queued, started (merging the other queued turns of its session or not), then
# completed, aborted (with or without a partial reply), failed or abandoned
turn_commands = st.one_of(
    st.tuples(st.just("turn ask"), st.sampled_from(SESSIONS), names),
    st.tuples(st.just("turn start"), st.booleans()),
    st.tuples(st.just("turn complete"), names, st.integers(0, 50)),
    st.tuples(st.just("turn abort"), st.one_of(st.just(""), names)),
    st.tuples(st.just("turn fail")),
    st.tuples(st.just("turn abandon")),
)


def decide(command: tuple):
    """The drafts `command` means in the current state (none when it does not apply), with
    the stream versions it was decided on."""

    def drafts(con: sqlite3.Connection) -> list[Draft]:
        def one(sql: str, *args) -> sqlite3.Row | None:
            return con.execute(sql, args).fetchone()

        def version(stream: str) -> int:
            row = one("SELECT version FROM streams WHERE name = ?", stream)
            return row[0] if row else 0

        kind, *args = command
        if kind.startswith("turn "):
            return _turn(con, kind, args)
        agent = one("SELECT * FROM agents WHERE id = ?", args[0]) if kind.startswith(
            ("agent", "config agent")) else None
        live = agent is not None and not agent["deleted"]
        session = one("SELECT * FROM sessions WHERE id = ?", args[0]) if kind in (
            "session switch", "session rename", "session delete", "session restore") else None
        if kind == "agent create" and agent is None:
            return [Draft("agent.created", f"agent:{args[0]}",
                          {"agent": args[0], "name": args[1]}, expect=0)]
        if kind == "agent rename" and live:
            return [Draft("agent.updated", f"agent:{args[0]}", {"agent": args[0], "name": args[1]},
                          expect=version(f"agent:{args[0]}"))]
        if kind == "agent emoji" and live:
            return [Draft("agent.updated", f"agent:{args[0]}",
                          {"agent": args[0], "emoji": args[1]})]
        if kind == "agent use" and live:
            return [Draft("agent.selected", "agents", {"agent": args[0]})]
        if kind == "agent delete" and live:
            return [Draft("agent.deleted", f"agent:{args[0]}",
                          {"agent": args[0], "force": True, "cancelled_tasks": []})]
        if kind == "agent restore" and agent is not None and agent["deleted"]:
            return [Draft("agent.restored", f"agent:{args[0]}", {"agent": args[0]})]
        if kind == "session new":
            owner = one("SELECT deleted FROM agents WHERE id = ?", args[0])
            if owner is None or owner[0] or one("SELECT 1 FROM sessions WHERE id = ?", args[1]):
                return []
            data = {"agent": args[0], "session": args[1], "name": args[2]}
            return [Draft("session.created", f"session:{args[1]}", data, expect=0),
                    Draft("session.switched", f"agent:{args[0]}",
                          {"agent": args[0], "session": args[1]})]
        if session is None:
            return _config(kind, args, agent, live)
        ref = {"agent": session["agent"], "session": session["id"]}
        if kind == "session switch" and not session["deleted"]:
            return [Draft("session.switched", f"agent:{session['agent']}", ref)]
        if kind == "session rename":
            return [Draft("session.renamed", f"session:{session['id']}", {**ref, "name": args[1]},
                          expect=version(f"session:{session['id']}"))]
        if kind == "session delete" and not session["deleted"]:
            return [Draft("session.deleted", f"session:{session['id']}",
                          {**ref, "cancelled_tasks": []})]
        if kind == "session restore" and session["deleted"]:
            return [Draft("session.restored", f"session:{session['id']}", ref)]
        return []

    return drafts


def _turn(con: sqlite3.Connection, kind: str, args: list) -> list[Draft]:
    if kind == "turn ask":
        session = con.execute("SELECT agent, deleted FROM sessions WHERE id = ?",
                              (args[0],)).fetchone()
        if session is None or session["deleted"]:
            return []
        turn = f"t-{con.execute('SELECT COUNT(*) FROM turns').fetchone()[0] + 1:012x}"
        return [Draft("turn.queued", f"session:{args[0]}", {
            "turn": turn, "agent": session["agent"], "session": args[0], "message": args[1],
            "source": "chat"})]
    state = "queued" if kind == "turn start" else "running"
    turn = con.execute("SELECT * FROM turns WHERE state = ? ORDER BY queued_seq LIMIT 1",
                       (state,)).fetchone()
    if turn is None:
        return []
    ref = {"turn": turn["id"], "agent": turn["agent"], "session": turn["session"]}
    stream = f"session:{turn['session']}"
    if kind == "turn start":
        merged = [r[0] for r in con.execute(
            "SELECT id FROM turns WHERE state = 'queued' AND session = ? AND id != ?"
            " ORDER BY queued_seq", (turn["session"], turn["id"]))] if args[0] else []
        return [Draft("turn.started", stream, {**ref, "runner": "r:1", "claim": 1,
                                               "lease_until": "2025-01-01T01:00:00Z",
                                               "merged": merged})]
    if kind == "turn complete":
        return [Draft("turn.completed", stream, {
            **ref, "reply": args[0], "model": "fake/one", "task": None,
            "usage": {"input_tokens": args[1], "output_tokens": args[1] // 2}})]
    if kind == "turn abort":
        return [Draft("turn.aborted", stream, {**ref, "partial_reply": args[0],
                                               "model": "fake/one", "reason": "interrupted"})]
    if kind == "turn fail":
        return [Draft("turn.failed", stream, {**ref, "error_class": "timeout", "message": "slow",
                                              "attempts": 2, "models_tried": ["fake/one"],
                                              "task": None})]
    return [Draft("turn.abandoned", stream, {**ref, "runner": "r:1", "reason": "lease expired"})]


def _config(kind: str, args: list, agent, live: bool) -> list[Draft]:
    if kind == "config set":
        return [Draft("config.set", "config", {"path": args[0], "value": args[1]})]
    if kind == "config unset":
        return [Draft("config.unset", "config", {"path": args[0]})]
    if kind == "config agent" and live:
        return [Draft("config.set", "config", {"path": f"agents.list[{agent['position'] - 1}]."
                                                       f"{args[1]}", "value": args[2],
                                               "agent": args[0]})]
    if kind == "config edit":
        return [Draft("config.edited", "config", {"changes": [
            {"op": "set", "path": path, "value": value} for path, value in args[0]]})]
    return []


def projection(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table; of meta, what says which log state.db is of."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = {t: list(map(tuple, con.execute(f"SELECT * FROM {t} ORDER BY rowid")))
               for t in tables if t != "meta"}
        for (view,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'view'"):
            out[view] = sorted(map(tuple, con.execute(f"SELECT * FROM {view}")), key=repr)
        out["meta"] = list(map(tuple, con.execute(
            "SELECT key, value FROM meta WHERE key IN ('checkpoint', 'head_id', 'version') "
            "ORDER BY key")))
        return out
    finally:
        con.close()


def transcripts(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes()
            for p in sorted((home / "agents").rglob("*.jsonl"))} if (home / "agents").is_dir() \
        else {}


# every agent and two sessions exist early on, so that most later commands apply; half the
# commands are turns
histories = st.builds(lambda first, rest: [*first, *rest],
                      st.tuples(*[st.tuples(st.just("agent create"), st.just(a), names)
                                  for a in AGENTS],
                                *[st.just(("session new", AGENTS[i], SESSIONS[i], None))
                                  for i in range(2)]),
                      st.lists(st.one_of(commands, turn_commands), min_size=10, max_size=60))


MERGED = [*[("agent create", a, a) for a in AGENTS], ("session new", AGENTS[0], "s-1", None),
          ("turn ask", "s-1", "one"), ("turn start", False), ("turn ask", "s-1", "two"),
          ("turn ask", "s-1", "three"), ("turn ask", "s-1", "four"), ("turn abort", "par"),
          ("turn start", True), ("turn complete", "all three", 7), ("turn ask", "s-1", "five"),
          ("turn start", False), ("turn fail",), ("turn ask", "s-1", "six"),
          ("turn start", False), ("turn abandon",), ("turn start", False), ("turn abort", "")]


@settings(max_examples=25, deadline=None, database=None)
@given(histories)
@example(MERGED)  # three turns answered by one reply; aborts with and without a partial reply
def test_one_pass_incremental_and_rebuilt_projections_are_identical(history):
    with tempfile.TemporaryDirectory(prefix="fased-determinism-") as tmp:
        home, reader_home = Path(tmp) / "writer", Path(tmp) / "reader"
        start = datetime(2025, 1, 1, tzinfo=UTC)
        ticks = iter(range(1000))
        writer = Store(home, command="hypothesis",
                       clock=lambda: start + timedelta(seconds=next(ticks)))
        reader = Store(reader_home, command="reader")
        (reader_home / "log").mkdir()
        appended = 0
        for command in history:
            appended += len(writer.transact(decide(command)).events)
            # a reader whose state.db falls behind and catches up from its checkpoint
            for segment in (home / "log").glob("*.jsonl"):
                shutil.copyfile(segment, reader_home / "log" / segment.name)
            reader.db(check_files=False)
        writer.close()
        reader.close()
        assert len(list(EventLog(home).read())) == appended

        as_they_ran = projection(home / "state.db")
        caught_up = projection(reader_home / "state.db")
        build_projection(EventLog(home), Path(tmp) / "one-pass.db")
        one_pass = projection(Path(tmp) / "one-pass.db")
        files = transcripts(home)
        rebuilt_store = Store(home, command="rebuild")
        rebuilt_store.rebuild()
        rebuilt_store.close()
        rebuilt = projection(home / "state.db")
        build_projection(EventLog(home), Path(tmp) / "again.db")
        again = projection(Path(tmp) / "again.db")
        # the two-process build (turns in one process, the rest in another) of a big log
        build_projection(EventLog(home), Path(tmp) / "parallel.db", parallel=True)
        in_parallel = projection(Path(tmp) / "parallel.db")

        assert as_they_ran["meta"][0] == ("checkpoint", str(appended))
        assert caught_up == as_they_ran
        assert one_pass == as_they_ran
        assert rebuilt == as_they_ran
        assert again == one_pass
        assert in_parallel == one_pass
        assert transcripts(home) == files

        for transcript in (home / "agents").rglob("*.jsonl"):
            transcript.unlink()  # each must be written again
        with everything_in_two_processes():
            rebuilt_store = Store(home, command="rebuild")
            rebuilt_store.rebuild()
            rebuilt_store.close()
        assert projection(home / "state.db") == as_they_ran
        assert transcripts(home) == files


@contextmanager
def everything_in_two_processes():
    """A rebuild that forks for the build and for the transcripts, however small the log."""
    assert forked.available()  # else the rebuild would quietly use one process
    saved = store_module.PARALLEL_BUILD_BYTES, turns_module.PARALLEL_RENDER_TURNS
    store_module.PARALLEL_BUILD_BYTES, turns_module.PARALLEL_RENDER_TURNS = 0, 0
    try:
        yield
    finally:
        store_module.PARALLEL_BUILD_BYTES, turns_module.PARALLEL_RENDER_TURNS = saved
