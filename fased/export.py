"""`fased session export`: one session as a document, a Markdown transcript, or its event lines.

The document and the Markdown are built from the projections (turns, steps, tool calls), which
keep a deleted session's turns: a delete is an event, nothing is forgotten. The event lines
are the log's own records of the session, masked as `fased replay` masks them. The only
file written is the one a user names (write_output), replaced all at once.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterator

from fased.errors import FasedError, UsageError
from fased.log import EventLog

FORMATS = ("md", "jsonl", "json")
MAX_CHARS = 2000  # of a tool call's arguments or result in Markdown; 0: everything


def session_document(con: sqlite3.Connection, session: sqlite3.Row) -> dict:
    """The session and every turn of it, oldest first, each with its steps and their calls."""
    calls: dict[tuple[str, int], list[dict]] = {}
    for c in con.execute("SELECT * FROM tool_calls WHERE session = ? ORDER BY turn, step, idx",
                         (session["id"],)):
        calls.setdefault((c["turn"], c["step"]), []).append({
            "id": c["id"], "name": c["name"], "arguments": _arguments(c["arguments"]),
            "status": c["state"], "result": c["result"], "finished_at": c["finished_at"],
            "duration_ms": c["duration_ms"]})
    steps: dict[str, list[dict]] = {}
    for s in con.execute("SELECT turn, step, ts, model, text FROM steps WHERE session = ?"
                         " ORDER BY turn, step", (session["id"],)):
        steps.setdefault(s["turn"], []).append({
            "step": s["step"], "ts": s["ts"], "model": s["model"], "text": s["text"],
            "calls": calls.get((s["turn"], s["step"]), [])})
    turns = [{
        "turn": t["id"], "state": t["state"], "source": t["source"], "task": t["task"],
        "message": t["message"], "queued_at": t["queued_at"], "started_at": t["started_at"],
        "finished_at": t["finished_at"], "model": t["model_used"], "reply": t["reply"],
        "error_class": t["error_class"], "error": t["error"], "merged_into": t["merged_into"],
        "usage": {"input_tokens": t["total_input_tokens"],
                  "output_tokens": t["total_output_tokens"], "cost": t["total_cost"]},
        "steps": steps.get(t["id"], [])}
        for t in con.execute("SELECT * FROM turns WHERE session = ? ORDER BY queued_seq",
                             (session["id"],))]
    return {"session": {"id": session["id"], "name": session["name"],
                        "agent": session["agent"], "created_at": session["created_at"],
                        "updated_at": session["updated_at"],
                        "deleted": bool(session["deleted"])},
            "turns": turns}


def session_events(log: EventLog, session: sqlite3.Row) -> Iterator[dict]:
    """The session's events from the log (as `fased replay --session ID` selects them),
    read from the session's creation on."""
    from fased.audit import EventFilter, select_events
    from fased.redact import mask_event

    flt = EventFilter(session=session["id"])
    for e in select_events(log, flt, start=session["created_seq"] or 1):
        yield mask_event(e)


def markdown(doc: dict, max_chars: int = MAX_CHARS) -> str:
    """The document as a transcript people read: each message under a heading with its time
    (UTC, to the second) and model, each tool call with its arguments and result (cut to
    `max_chars`, 0: whole)."""
    s = doc["session"]
    named = f" ({s['name']})" if s["name"] else ""
    out = [f"# Session {s['id']}{named}, agent {s['agent']}"
           f"{' [deleted]' if s['deleted'] else ''}", "",
           f"Created {_time(s['created_at'])} UTC, {len(doc['turns'])} turn(s).", ""]
    for t in doc["turns"]:
        origin = f" · task {t['task']}" if t["task"] else ""
        out += [f"## User · {_time(t['queued_at'])} UTC{origin}", "", t["message"], ""]
        if t["state"] == "merged":
            out += [f"_Answered together with {t['merged_into']}._", ""]
            continue
        for step in t["steps"]:
            out += [f"## Assistant · {_time(step['ts'])} UTC · {step['model']}", ""]
            if step["text"]:
                out += [step["text"], ""]
            for c in step["calls"]:
                out += _call(c, max_chars)
        out += _ending(t)
    return "\n".join(out).rstrip("\n") + "\n"


def write_output(name: str, text: str) -> None:
    """Replace (or create) the file a user named with `text`, all at once: a temp file beside
    it, fsync, rename (fased.tools.fileio.atomic_write), so a full disk or a kill leaves the
    previous file as it was. A new file is 0600 (it holds a whole conversation); a replaced
    one keeps its mode, as an editor keeps it. A symlink stays a link: its target is
    replaced. Anything but a regular file (a FIFO, a device, a directory) is refused before
    it is opened: renaming over it would replace it, and opening a FIFO waits for a reader."""
    from pathlib import Path

    from fased.tools.fileio import atomic_write

    path = Path(os.path.realpath(name))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise FasedError(f"cannot write {name}: {exc.strerror}") from None
    else:
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{name} is {_kind(st.st_mode)}, not a regular file: an export "
                             "replaces the file it is written to",
                             hint="leave out -o to write to stdout, and send that on")
        mode = stat.S_IMODE(st.st_mode)
    try:
        atomic_write(path, text.encode("utf-8"), 0o600 if mode is None else mode)
    except OSError as exc:
        raise FasedError(f"cannot write {name}: {exc.strerror}",
                         hint="nothing was written" if mode is None else
                         f"{name} is as it was") from None


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def _ending(t: dict) -> list[str]:
    if t["state"] in ("completed", "aborted") and t["reply"] is not None:
        head = [f"## Assistant · {_time(t['finished_at'])} UTC · {t['model'] or '-'}", ""]
        note = ["_Stopped before the reply was finished._", ""] if t["state"] == "aborted" else []
        return [*head, *([t["reply"], ""] if t["reply"] else []), *note]
    if t["state"] == "failed":
        return [f"**Failed** at {_time(t['finished_at'])} UTC ({t['error_class'] or 'error'}): "
                f"{t['error'] or ''}", ""]
    return [f"_{t['state'].capitalize()}: no reply yet._", ""]


def _call(c: dict, max_chars: int) -> list[str]:
    args = json.dumps(c["arguments"], ensure_ascii=False) if not isinstance(
        c["arguments"], str) else c["arguments"]
    lines = [f"**Tool call** `{c['name']}` ({c['status']})", "", *_fenced(args, "json",
                                                                          max_chars), ""]
    if c["result"] is not None:
        lines += ["Result:", "", *_fenced(c["result"], "", max_chars), ""]
    return lines


def _fenced(text: str, lang: str, max_chars: int) -> list[str]:
    """`text` in a code fence longer than any run of backticks in it, cut to max_chars."""
    shown = text
    if max_chars and len(text) > max_chars:
        shown = (f"{text[:max_chars]}\n[... {len(text) - max_chars} more characters; "
                 "--max-chars 0 shows all]")
    runs = re.findall(r"`{3,}", shown)
    fence = "`" * max(3, *(len(r) + 1 for r in runs)) if runs else "```"
    return [f"{fence}{lang}", shown.rstrip("\n"), fence]


def _arguments(text: str | None):
    """A call's arguments as the model sent them: a JSON value, or the text when it is not
    JSON (the model sees that as an error, and so does the reader)."""
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


def _time(ts: str | None) -> str:
    return ts[:19].replace("T", " ") if ts else "-"
