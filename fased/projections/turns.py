"""Turns (queued -> running -> completed | failed | aborted), session messages, model
cooldowns, and the session transcripts (a file projection).

A session's messages are not stored twice: `messages` is a view over `turns` (a turn's user
message, and its reply once there is one). A rebuild of a million events writes each turn's text
once instead of twice, and the turns module touches no other module's tables, so a rebuild can
build it in a process of its own (see fased.projections.GROUPS).

A turn whose runner stops renewing its lease stays `running` in the rows; runners treat an
expired lease as claimable, which keeps this projection free of any clock.

Usage: every model call (each turn.step, and the turn.completed that answered) adds the
tokens and the cost its server reported to `usage_buckets`, sums per quarter of an hour,
agent, session and model, which `fased usage`, the summaries and the wallets add up. A
turn's `input_tokens`, `output_tokens` and `cost` are its last call's (the reply's, as the
transcript shows it); `total_*` are the sums over all its calls, and a call that did not say
makes the sum unknown (NULL), never 0.
"""

from __future__ import annotations

import json
import os
import sqlite3
from json.encoder import encode_basestring as _encode_string
from pathlib import Path

VERSION = 5

TABLES = {
    "turns": {
        "columns": {
            "id": str, "agent": str, "session": str, "state": str, "message": str,
            "model_override": str, "task": str, "source": str, "queued_seq": int,
            "queued_at": str, "started_at": str, "runner": str, "lease_until": str,
            "claims": int, "finished_at": str, "model_used": str, "reply": str,
            "input_tokens": int, "output_tokens": int, "finish_reason": str,
            "latency_ms": float, "ttft_ms": float, "attempts": int, "error_class": str,
            "error": str, "merged_into": str, "context_dropped": int, "reply_seq": int,
            "merged_step": int, "steps": int, "cost": float, "model_calls": int,
            "options": str,
            "total_input_tokens": int, "total_output_tokens": int, "total_cost": float,
        },
        "pk": "id",
        # a turn without a model call used nothing; NULL + a call's NULL stays unknown
        "defaults": {"claims": 0, "attempts": 0, "model_calls": 0, "total_input_tokens": 0,
                     "total_output_tokens": 0, "total_cost": 0.0},
        "indexes": [["state", "queued_seq"], ["session", "queued_seq"]],
    },
    # model calls summed per quarter of an hour (UTC; every zone's days start on one), so a
    # report over a year of calls reads thousands of rows, not millions. Token and cost sums
    # hold the known values; `costed` counts the calls with a cost, and bare_* / `priceable`
    # what a price can cover (calls without a cost whose tokens are both known).
    "usage_buckets": {
        "columns": {"bucket": str, "agent": str, "session": str, "model": str, "calls": int,
                    "input_tokens": int, "output_tokens": int, "cost": float, "costed": int,
                    "bare_input": int, "bare_output": int, "priceable": int},
        "pk": ("bucket", "agent", "session", "model"),
        "indexes": [["agent", "bucket"], ["session", "bucket"]],
    },
    "cooldowns": {"columns": {"model": str, "until": str, "reason": str}, "pk": "model"},
}

# One row per message, in the shape the messages were once stored in: the user message of
# every turn (`<turn>:u`), and the reply of every turn that has one (`<turn>:a`), including the
# partial reply of an aborted turn. `seq` is the seq of the event that produced the message.
VIEWS = [
    """CREATE VIEW IF NOT EXISTS messages AS
    SELECT id || ':u' AS id, session, agent, id AS turn, 'user' AS role, message AS content,
        queued_at AS ts, NULL AS model, NULL AS input_tokens, NULL AS output_tokens,
        queued_seq AS seq, 'sent' AS status
    FROM turns
    UNION ALL
    SELECT id || ':a', session, agent, id, 'assistant', reply, finished_at, model_used,
        input_tokens, output_tokens, reply_seq,
        CASE state WHEN 'aborted' THEN 'aborted' ELSE 'complete' END
    FROM turns WHERE reply_seq IS NOT NULL""",
]


def _queued(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO turns(id, agent, session, state, message, model_override, task, source,"
        " queued_seq, queued_at, claims, attempts, options)"
        " VALUES (?,?,?,'queued',?,?,?,?,?,?,0,0,?)",
        (d["turn"], d["agent"], d["session"], d["message"], d.get("model"), d.get("task"),
         d.get("source"), e["seq"], e["ts"],
         json.dumps(d["options"], sort_keys=True) if d.get("options") else None),
    )


def _started(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'running', started_at = ?, runner = ?, lease_until = ?,"
                " claims = ? WHERE id = ?",
                (e["ts"], d["runner"], d["lease_until"], d["claim"], d["turn"]))
    for merged in d.get("merged") or ():
        con.execute("UPDATE turns SET state = 'merged', merged_into = ? WHERE id = ?",
                    (d["turn"], merged))


def _lease_extended(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET lease_until = ? WHERE id = ? AND runner = ?",
                (d["lease_until"], d["turn"], d["runner"]))


def _attempt_failed(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE turns SET attempts = attempts + 1 WHERE id = ?", (e["data"]["turn"],))


def _completed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    usage = d.get("usage") or {}
    # a loop that fased stopped made no last call: nothing to add to the totals
    called = "usage" in d
    con.execute(
        "UPDATE turns SET state = 'completed', finished_at = ?, model_used = ?, reply = ?,"
        " input_tokens = ?, output_tokens = ?, cost = ?, finish_reason = ?, latency_ms = ?,"
        " ttft_ms = ?, attempts = ?, context_dropped = ?, lease_until = NULL, reply_seq = ?,"
        " steps = ?" + (_ADD_CALL if called else "") + " WHERE id = ?",
        (e["ts"], d["model"], d["reply"], usage.get("input_tokens"), usage.get("output_tokens"),
         usage.get("cost"), d.get("finish_reason"), d.get("latency_ms"), d.get("ttft_ms"),
         d.get("attempts", 1), d.get("context_dropped", 0), e["seq"], d.get("steps", 1),
         *(_call_values(usage) if called else ()), d["turn"]),
    )
    if called:
        _add_to_bucket(con, e, usage)


def _step(con: sqlite3.Connection, e: dict) -> None:
    usage = e["data"].get("usage") or {}
    con.execute(f"UPDATE turns SET {_ADD_CALL[2:]} WHERE id = ?",
                (*_call_values(usage), e["data"]["turn"]))
    _add_to_bucket(con, e, usage)


# a model call's part of its turn's totals (SQL's NULL + n is NULL: one call that did not say
# keeps the turn's sum unknown)
_ADD_CALL = (", model_calls = model_calls + 1, total_input_tokens = total_input_tokens + ?,"
             " total_output_tokens = total_output_tokens + ?, total_cost = total_cost + ?")


def _call_values(usage: dict) -> tuple:
    return usage.get("input_tokens"), usage.get("output_tokens"), usage.get("cost")


def _add_to_bucket(con: sqlite3.Connection, e: dict, usage: dict) -> None:
    d = e["data"]
    tokens_in, tokens_out, cost = _call_values(usage)
    bare = cost is None and tokens_in is not None and tokens_out is not None
    con.execute(_BUCKET, (bucket_of(e["ts"]), d["agent"], d["session"], d["model"],
                          tokens_in or 0, tokens_out or 0, cost or 0.0, int(cost is not None),
                          tokens_in if bare else 0, tokens_out if bare else 0, int(bare)))


_BUCKET = ("INSERT INTO usage_buckets(bucket, agent, session, model, calls, input_tokens,"
           " output_tokens, cost, costed, bare_input, bare_output, priceable)"
           " VALUES (?,?,?,?,1,?,?,?,?,?,?,?) ON CONFLICT(bucket, agent, session, model)"
           " DO UPDATE SET calls = calls + 1, input_tokens = input_tokens + excluded.input_tokens,"
           " output_tokens = output_tokens + excluded.output_tokens,"
           " cost = cost + excluded.cost, costed = costed + excluded.costed,"
           " bare_input = bare_input + excluded.bare_input,"
           " bare_output = bare_output + excluded.bare_output,"
           " priceable = priceable + excluded.priceable")


def bucket_of(ts: str) -> str:
    """The quarter of an hour a `ts` falls in: `2026-11-20T18:52:...Z` -> `2026-11-20T18:45`."""
    try:
        return f"{ts[:14]}{int(ts[14:16]) // 15 * 15:02d}"
    except ValueError:  # not format_ts's form (no writer of fased's makes one)
        return ts[:16]


def _failed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'failed', finished_at = ?, error_class = ?, error = ?,"
                " attempts = ?, lease_until = NULL WHERE id = ?",
                (e["ts"], d["error_class"], d["message"], d["attempts"], d["turn"]))


def _aborted(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'aborted', finished_at = ?, reply = ?, model_used = ?,"
                " lease_until = NULL, reply_seq = ? WHERE id = ?",
                (e["ts"], d["partial_reply"], d.get("model"),
                 e["seq"] if d["partial_reply"] else None, d["turn"]))


def _abandoned(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE turns SET state = 'queued', runner = NULL, lease_until = NULL"
                " WHERE id = ?", (e["data"]["turn"],))
    # a turn merged by collect goes back with it; one steered in was already shown to the
    # model inside this turn's steps, which the next runner continues
    con.execute("UPDATE turns SET state = 'queued', merged_into = NULL WHERE merged_into = ?"
                " AND state = 'merged' AND merged_step IS NULL", (e["data"]["turn"],))


def _steered(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.executemany("UPDATE turns SET state = 'merged', merged_into = ?, merged_step = ?"
                    " WHERE id = ?", [(d["turn"], d["step"], t) for t in d["turns"]])


def _cooldown(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("INSERT INTO cooldowns(model, until, reason) VALUES (?,?,?) ON CONFLICT(model)"
                " DO UPDATE SET until = excluded.until, reason = excluded.reason",
                (d["model"], d["until"], d["reason"]))


HANDLERS = {
    "turn.queued": _queued,
    "turn.started": _started,
    "turn.lease_extended": _lease_extended,
    "turn.attempt_failed": _attempt_failed,
    "turn.completed": _completed,
    "turn.failed": _failed,
    "turn.aborted": _aborted,
    "turn.abandoned": _abandoned,
    "turn.steered": _steered,
    "turn.step": _step,
    "model.cooldown": _cooldown,
}

# -- transcripts ------------------------------------------------------------------------------

_TRANSCRIPT_TYPES = ("turn.queued", "turn.completed", "turn.aborted", "session.created",
                     "session.renamed", "turn.step", "tool.finished")


def write_transcript(con: sqlite3.Connection, home: Path, session: str) -> None:
    """Render one session's transcript: a header line, then one line per message (the rows of
    the messages view, in seq order). A user message's parent is the message before it; a
    reply's parent is the (last) question it answers, which for merged turns is the last one
    merged in.

    It reads the turns once, in queue order, rather than the view, and puts lines together
    from encoded strings rather than json.dumps of a dict: a rebuild renders every message
    ever sent, and this is several times faster for the same bytes.
    """
    from fased.home import require_inside, write_private

    cur = con.cursor()
    cur.row_factory = None
    row = cur.execute("SELECT agent, name, created_at FROM sessions WHERE id = ?",
                      (session,)).fetchone()
    if row is None:
        return
    agent, name, created_at = row
    s = _json_text
    asked_last: dict[str, str] = {}
    lines: list[tuple[int, str, bool, str]] = []  # (seq, turn, is reply, line after "parent")
    for (turn, message, queued_at, queued_seq, reply, finished_at, model, tokens_in, tokens_out,
         cost, state, reply_seq, merged_into) in cur.execute(
            "SELECT id, message, queued_at, queued_seq, reply, finished_at, model_used,"
            " input_tokens, output_tokens, cost, state, reply_seq, merged_into FROM turns"
            " WHERE session = ? ORDER BY queued_seq", (session,)):
        if merged_into is not None:
            asked_last[merged_into] = turn
        turn_json = s(turn)
        lines.append((queued_seq, turn, False, f'"role": "user", "content": {s(message)}, '
                                     f'"ts": {s(queued_at)}, "turn": {turn_json}}}\n'))
        if reply_seq is not None:
            lines.append((reply_seq, turn, True, f'"role": "assistant", "content": {s(reply)}, '
                                        f'"ts": {s(finished_at)}, "turn": {turn_json}, '
                                        f'"model": {s(model)}, "usage": {{"input_tokens": '
                                        f'{_json_int(tokens_in)}, "output_tokens": '
                                        f'{_json_int(tokens_out)}'
                                        + ("}" if cost is None else f', "cost": {cost!r}}}')
                                        + (', "aborted": true}\n' if state == "aborted"
                                           else '}\n')))
    lines += _tool_lines(cur, session)
    lines.sort(key=_first)  # every message has its own seq: the seq of its event
    out = [f'{{"type": "session", "version": 1, "id": {s(session)}, "agent": {s(agent)}, '
           f'"name": {s(name)}, "created_at": {s(created_at)}}}\n']
    previous = "null"
    for _, turn, is_reply, rest in lines:
        if is_reply is None:  # a tool step or result: `turn` is the line's own id
            msg_id = s(turn)
            parent = previous
        else:
            msg_id = s(f"{turn}:a" if is_reply else f"{turn}:u")
            parent = s(f"{asked_last.get(turn, turn)}:u") if is_reply else previous
        out.append(f'{{"type": "message", "id": {msg_id}, "parent": {parent}, {rest}')
        previous = msg_id
    path = home / "agents" / agent / "sessions" / f"{session}.jsonl"
    require_inside(home, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "".join(out).encode(), durable=False)


def _tool_lines(cur, session: str, seqs: set[int] | None = None) -> list[tuple]:
    """The assistant's tool steps and the tool results of a session (or only the lines of
    the events `seqs`), as transcript lines: (seq, line id, None, the line after "parent")."""
    if seqs is None:
        where, params = "session = ?", [session]
        steps_where = where
    else:
        marks = ",".join("?" * len(seqs))
        where, params = f"finished_seq IN ({marks}) OR step_seq IN ({marks})", [*seqs, *seqs]
        steps_where = f"seq IN ({marks})"
    out = []
    calls: dict[tuple[str, int], list] = {}
    for (call_id, turn_id, step, name, arguments, state, result, finished_seq,
         finished_at) in cur.execute(
            "SELECT id, turn, step, name, arguments, state, result, finished_seq, finished_at"
            f" FROM tool_calls WHERE {where} ORDER BY turn, step, idx", params):
        calls.setdefault((turn_id, step), []).append(
            f'{{"id": {_encode_string(call_id)}, "name": {_encode_string(name)}, '
            f'"arguments": {_encode_string(arguments)}}}')
        if finished_seq is not None and (seqs is None or finished_seq in seqs):
            out.append((finished_seq, call_id, None,
                        f'"role": "tool", "tool_call_id": {_encode_string(call_id)}, "name": '
                        f'{_encode_string(name)}, "status": {_encode_string(state)}, '
                        f'"content": {_json_text(result)}, "ts": {_json_text(finished_at)}, '
                        f'"turn": {_encode_string(turn_id)}}}\n'))
    for turn_id, step, seq, ts, model, text in cur.execute(
            f"SELECT turn, step, seq, ts, model, text FROM steps WHERE {steps_where}",
            params[:len(seqs)] if seqs is not None else params):
        out.append((seq, f"{turn_id}:s{step}", None,
                    f'"role": "assistant", "content": {_json_text(text)}, "ts": '
                    f'{_json_text(ts)}, "turn": {_encode_string(turn_id)}, "model": '
                    f'{_json_text(model)}, "tool_calls": '
                    f'[{", ".join(calls.get((turn_id, step), []))}]' + "}\n"))
    return out


# events whose transcript lines only ever go at the end: appended, not the file rewritten
_APPENDED = ("turn.step", "tool.finished")


def append_transcript(con: sqlite3.Connection, home: Path, session: str,
                      seqs: set[int]) -> bool:
    """Append the lines of the tool events `seqs` to a session's transcript: the same bytes
    a full render writes (they are the newest lines). False when the file must be rendered
    whole instead (missing, or its last line unreadable after a crash)."""
    import json

    row = con.execute("SELECT agent FROM sessions WHERE id = ?", (session,)).fetchone()
    if row is None:
        return False
    path = home / "agents" / row[0] / "sessions" / f"{session}.jsonl"
    last = _last_line(path)
    try:
        previous = _encode_string(json.loads(last)["id"])
    except (ValueError, KeyError, TypeError):
        return False
    cur = con.cursor()
    cur.row_factory = None
    lines = sorted(_tool_lines(cur, session, seqs), key=_first)
    if len(lines) != len(seqs):
        return False
    out = []
    for _, msg_id, _, rest in lines:
        out.append(f'{{"type": "message", "id": {_encode_string(msg_id)}, "parent": {previous}, '
                   f"{rest}")
        previous = _encode_string(msg_id)
    from fased.home import require_inside

    require_inside(home, path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        os.write(fd, "".join(out).encode())
    finally:
        os.close(fd)
    return True


def _last_line(path: Path) -> bytes:
    """The last complete line of a file (b"" when there is none)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            block = 4096
            while True:
                start = max(0, size - block)
                f.seek(start)
                data = f.read(size - start)
                if not data.endswith(b"\n"):
                    return b""  # a write cut short: render the whole file
                cut = data.rfind(b"\n", 0, len(data) - 1)
                if cut >= 0 or start == 0:
                    return data[cut + 1:-1]
                block *= 4
    except FileNotFoundError:
        return b""


def _first(item: tuple):
    return item[0]


def _json_text(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def _json_int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def sync_files(con: sqlite3.Connection, home: Path, events: list[dict]) -> None:
    whole: set[str] = set()
    appended: dict[str, set[int]] = {}
    for e in events:
        if e["type"] in _APPENDED:
            appended.setdefault(e["data"]["session"], set()).add(e["seq"])
        elif e["type"] in _TRANSCRIPT_TYPES:
            whole.add(e["data"]["session"])
    for session, seqs in appended.items():
        if session not in whole and not append_transcript(con, home, session, seqs):
            whole.add(session)
    for session in sorted(whole):
        write_transcript(con, home, session)


# Below this many turns one process renders every transcript faster than two can start.
PARALLEL_RENDER_TURNS = 20_000


def rebuild_files(con: sqlite3.Connection, home: Path) -> None:
    """Render every session's transcript. Many turns are split over two processes: sessions
    are dealt to the two by size, largest first, and the child opens its own connection."""
    from fased import forked

    sizes = con.execute("SELECT s.id, COUNT(t.id) FROM sessions s LEFT JOIN turns t"
                        " ON t.session = s.id GROUP BY s.id ORDER BY s.created_seq").fetchall()
    total = sum(n for _, n in sizes)
    if total < PARALLEL_RENDER_TURNS or len(sizes) < 2 or not forked.available():
        for session, _ in sizes:
            write_transcript(con, home, session)
        return
    mine: list[str] = []
    theirs: list[str] = []
    load = [0, 0]
    for session, n in sorted(sizes, key=lambda item: -item[1]):
        side = 0 if load[0] <= load[1] else 1
        (mine if side == 0 else theirs).append(session)
        load[side] += n
    db_path = con.execute("PRAGMA database_list").fetchone()[2]
    with forked.Forked(_write_transcripts, db_path, str(home), theirs) as child:
        for session in mine:
            write_transcript(con, home, session)
        child.wait()


def _write_transcripts(db_path: str, home: str, sessions: list[str]) -> None:
    """In a forked child: render `sessions` from a connection of its own."""
    con = sqlite3.connect(db_path)
    try:
        for session in sessions:
            write_transcript(con, Path(home), session)
    finally:
        con.close()
