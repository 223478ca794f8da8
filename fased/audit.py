"""The audit trail's logic: filtering events, state at a point in time, verifying projections."""

from __future__ import annotations

import fnmatch
import os
import sqlite3
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fased.bounds import parse_seq
from fased.errors import UsageError
from fased.log import EventLog
from fased.timeparse import format_ts, parse_time, parse_ts

SNAPSHOT_TABLES = ("agents", "sessions", "tasks")


def parse_bound(text: str, *, now: datetime | None = None) -> int | datetime:
    """A `--since`/`--until`/`--at` value: a seq (digits), an RFC 3339 time or `2h` ago."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        return parse_seq(value)
    return parse_time(value, now=now)


@dataclass
class EventFilter:
    """Which events `fased replay` shows."""

    since: int | datetime | None = None
    until: int | datetime | None = None
    types: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    agent: str | None = None
    session: str | None = None
    turn: str | None = None

    @property
    def from_seq(self) -> int:
        return self.since if isinstance(self.since, int) else 1

    @property
    def to_seq(self) -> int | None:
        return self.until if isinstance(self.until, int) else None

    @property
    def selects_everything(self) -> bool:
        return not (self.since or self.until or self.types or self.streams or self.agent
                    or self.session or self.turn)

    def matches(self, e: dict) -> bool:
        if self.types and not any(fnmatch.fnmatchcase(e["type"], t) for t in self.types):
            return False
        if self.streams and not any(fnmatch.fnmatchcase(e["stream"], s) for s in self.streams):
            return False
        data = e["data"]
        if self.agent and e["stream"] != f"agent:{self.agent}" and data.get("agent") != self.agent:
            return False
        if self.session and e["stream"] != f"session:{self.session}" and (
                data.get("session") != self.session):
            return False
        if self.turn and data.get("turn") != self.turn and self.turn not in (
                data.get("turns") or ()):
            return False
        if isinstance(self.since, datetime) and parse_ts(e["ts"]) < self.since:
            return False
        if isinstance(self.until, datetime) and parse_ts(e["ts"]) > self.until:
            return False
        if isinstance(self.since, int) and e["seq"] < self.since:
            return False
        return not (isinstance(self.until, int) and e["seq"] > self.until)


def select_events(log: EventLog, flt: EventFilter, last: int | None = None,
                  start: int = 1) -> Iterator[dict]:
    """Events matching `flt`, oldest first; with `last`, only the last N of them. Reading
    starts at seq `start` at the earliest (see first_seq_since).

    The last N are found by reading the log backwards, so `replay -n 1` costs the same on a
    log of a million events as on an empty one.
    """
    if last is not None:
        found: list[dict] = []
        if last > 0:
            for e in log.read_reverse():
                if flt.to_seq is not None and e["seq"] > flt.to_seq:
                    continue
                if isinstance(flt.since, int) and e["seq"] < flt.since:
                    break
                if flt.matches(e):
                    found.append(e)
                    if len(found) == last:
                        break
        yield from reversed(found)
        return
    for e in log.read(max(flt.from_seq, start), flt.to_seq):
        if flt.matches(e):
            yield e


def first_seq_since(con: sqlite3.Connection, when: datetime) -> int:
    """The first seq an event at or after `when` can have: the start of the first block of
    seqs whose latest `ts` is that late (core.time_blocks), or just after the checkpoint.
    `con` must be caught up."""
    from fased.projections.core import BLOCK_BITS

    block = con.execute("SELECT MIN(block) FROM time_blocks WHERE max_ts >= ?",
                        (format_ts(when),)).fetchone()[0]
    if block is not None:
        return max(1, block << BLOCK_BITS)
    row = con.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
    return int(row[0]) + 1 if row else 1


def last_seq_at(log: EventLog, point: int | datetime,
                con: sqlite3.Connection | None = None) -> int:
    """Where the log stood at `point`, a seq or a time: for a time, the seq of the last event
    stamped at or before it. Everything up to that seq belongs to the point, whatever its
    own stamp (a writer whose clock stepped back), so `replay --at` and `--until` both show
    a prefix of the log in seq order, as it was written.

    With `con` (state.db, caught up) only the last block of seqs that has an event stamped
    that early is read (core.time_blocks), and what came after the checkpoint."""
    if isinstance(point, int):
        return min(point, log.head().seq)
    ranges: list[tuple[int, int | None]] = [(1, None)]
    if con is not None:
        from fased.projections.core import BLOCK_BITS

        block = con.execute("SELECT MAX(block) FROM time_blocks WHERE min_ts <= ?",
                            (format_ts(point),)).fetchone()[0]
        row = con.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
        checkpoint = int(row[0]) if row else 0
        ranges = [] if block is None else [
            (max(1, block << BLOCK_BITS), min(((block + 1) << BLOCK_BITS) - 1, checkpoint))]
        ranges.append((checkpoint + 1, None))
    seq = 0
    for start, end in ranges:
        if end is not None and end < start:
            continue
        for e in log.read(start, end):
            if parse_ts(e["ts"]) <= point:
                seq = max(seq, e["seq"])
    return seq


def snapshot(con: sqlite3.Connection) -> dict[str, list[dict]]:
    """Agents, sessions and tasks as rows (what `replay --at` shows)."""
    have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {
        table: [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY rowid")]
        for table in SNAPSHOT_TABLES if table in have
    }


def build_at(log: EventLog, upto: int | None) -> tuple[sqlite3.Connection, Path]:
    """A throw-away projection database built from the log up to seq `upto`."""
    from fased.store import build_projection

    fd, name = tempfile.mkstemp(prefix="fased-replay-", suffix=".db")
    os.close(fd)
    path = Path(name)
    build_projection(log, path, upto)
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    return con, path


def differences_from_log(live: sqlite3.Connection, log: EventLog) -> list[str]:
    """compare_databases of state.db (`live`) and a build from the log up to the seq state.db
    has applied, both read in one snapshot of state.db: a command that appends and applies
    events while the build runs makes no difference (taking each table in a snapshot of its
    own after an unlocked build of the whole log reported one about one time in ten)."""
    began = not live.in_transaction
    if began:
        live.execute("BEGIN")  # deferred: the snapshot is taken by the first read, here
    try:
        try:
            row = live.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
            upto = int(row[0]) if row is not None else None
        except (sqlite3.DatabaseError, TypeError, ValueError):
            upto = None  # compare_databases names what is wrong with it
        fresh, path = build_at(log, upto)
        try:
            return compare_databases(live, fresh)
        finally:
            fresh.close()
            path.unlink(missing_ok=True)
    finally:
        if began and live.in_transaction:
            live.execute("COMMIT")


def compare_databases(live: sqlite3.Connection, fresh: sqlite3.Connection) -> list[str]:
    """Differences between two projection databases, one line each (empty when equal)."""
    differences = []
    tables = [r[0] for r in fresh.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    for table in tables:
        query = f"SELECT * FROM {table} ORDER BY 1, 2" if table != "meta" else (
            "SELECT * FROM meta WHERE key IN ('checkpoint', 'head_id', 'version') ORDER BY 1")
        try:
            live_rows = [tuple(r) for r in live.execute(query)]
        except sqlite3.DatabaseError as exc:
            differences.append(f"{table}: missing or unreadable in state.db ({exc})")
            continue
        fresh_rows = [tuple(r) for r in fresh.execute(query)]
        if live_rows != fresh_rows:
            extra = deque(sorted(set(live_rows) - set(fresh_rows), key=repr), maxlen=3)
            missing = deque(sorted(set(fresh_rows) - set(live_rows), key=repr), maxlen=3)
            differences.append(
                f"{table}: {len(live_rows)} rows live, {len(fresh_rows)} from the log"
                + (f"; only live: {list(extra)}" if extra else "")
                + (f"; only in rebuild: {list(missing)}" if missing else "")
            )
    return differences


def require_point(text: str) -> int | datetime:
    """Parse `--at`, with the error naming the option."""
    try:
        return parse_bound(text)
    except UsageError as exc:
        raise UsageError(f"--at: {exc.message}", exc.hint) from None


def turn_requests(con: sqlite3.Connection, log: EventLog, turn_id: str) -> list[dict]:
    """Every model call a turn made, each as it was sent (messages, tools, options), rebuilt
    from what the log recorded (`replay --turn ID --request`)."""
    import json

    from fased.context import render_recorded
    from fased.errors import NotFoundError

    turn = con.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
    if turn is None:
        raise NotFoundError(f"no turn {turn_id!r}", hint="`fased replay --type turn.queued` "
                            "lists turns")
    calls = []
    for row in con.execute("SELECT step, model, request, seq FROM steps WHERE turn = ?"
                           " ORDER BY step", (turn_id,)):
        calls.append((row["step"], row["model"], json.loads(row["request"]), row["seq"]))
    if turn["reply_seq"] is not None:
        final = next(log.read(turn["reply_seq"], turn["reply_seq"]), None)
        if final is not None and final["type"] == "turn.completed" and final["data"].get(
                "request"):
            calls.append((None, final["data"]["model"], final["data"]["request"],
                          final["seq"]))
    if not calls:
        raise NotFoundError(f"turn {turn_id} has no recorded request",
                            hint="turns answered before fased recorded requests, and turns "
                            "that never reached a model, have none")
    out = []
    for number, (step, model, refs, seq) in enumerate(calls, 1):
        try:
            body = render_recorded(con, turn, refs, step)
        except KeyError as exc:
            raise NotFoundError(f"the content {exc.args[0][:12]}... this request refers to is "
                                "not in the log") from None
        out.append({"call": number, "of": len(calls), "step": step, "model": model,
                    "seq": seq, **body})
    return out
