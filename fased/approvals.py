"""Approvals that survive the terminal going away.

A call that needs the user's approval where nobody can be asked (cron, CI, `fased run`, a
pipe with no /dev/tty) does not fail its turn: the turn parks (`approval.requested`) and the
runner moves on. `fased approvals approve|deny ID` is an event (`approval.decided`) that puts
the turn back in the queue; the next runner (or the `fased chat` that waits for it) resumes
it: an approved call runs, a denied one gets an error result saying so. A request nobody
decides within `tools.exec.approvalTimeout` is denied as expired. `--always` and `--for`
also grant an exec allowlist entry for exactly that command (`exec.granted`).
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timedelta

from fased.errors import ConflictError, NotFoundError, UsageError
from fased.store import Draft, Store
from fased.timeparse import format_ts

DEFAULT_TIMEOUT = 3600.0  # seconds a request waits for a decision


def new_id(prefix: str = "a") -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def timeout_of(tools: dict) -> float:
    return float((tools.get("exec") or {}).get("approvalTimeout", DEFAULT_TIMEOUT))


def for_call(con: sqlite3.Connection, call: str) -> sqlite3.Row | None:
    """The latest approval request of a tool call, if any."""
    return con.execute("SELECT * FROM approvals WHERE call = ? ORDER BY requested_seq DESC"
                       " LIMIT 1", (call,)).fetchone()


def granted_entries(con: sqlite3.Connection, agent: str, now: datetime) -> list[str]:
    """The exec allowlist entries granted from approvals that still hold for `agent`."""
    import json

    return [e for (text,) in con.execute(
        "SELECT entry FROM exec_grants WHERE agent = ? AND removed_seq IS NULL AND"
        " (expires_at IS NULL OR expires_at > ?) ORDER BY created_seq",
        (agent, format_ts(now))) for e in json.loads(text)]


def exact_entries(command: str) -> list[str]:
    """One exact allowlist entry per simple command of a line (what `--always` grants);
    UsageError for a line that cannot be allowed exactly (it expands, or is too complex)."""
    from fased.tools.allowlist import argv_entry, check_entry
    from fased.tools.shellsplit import Unsure, split

    try:
        script = split(command)
    except Unsure as exc:
        raise UsageError(f"cannot allow {command!r} for good: {exc}") from None
    entries = []
    for part in script.commands:
        words = [*part.assigns, *part.words]
        if not part.words or any(w.value is None for w in words):
            raise UsageError(f"cannot allow {command!r} for good: `{part.text.strip()}` "
                             "expands to what only the shell knows")
        entry = argv_entry([w.value for w in words])
        problem = check_entry(entry)
        if problem:
            raise UsageError(f"cannot allow {command!r} for good: {problem}")
        if entry not in entries:
            entries.append(entry)
    if not entries:
        raise UsageError(f"cannot allow {command!r} for good: it runs no command")
    # an entry the checker would never apply (inline code is asked about even when allowed)
    from fased.tools.allowlist import check

    verdict = check(command, entries, cwd=None, path=os.environ.get("PATH", ""))
    if not verdict.allowed and "inline" in verdict.reason:
        raise UsageError(f"cannot allow {command!r} for good: {verdict.reason}")
    return entries


def request_draft(claim, call_id: str, tool: str, command: str, cwd: str, reason: str,
                  now: datetime, timeout: float, runner: str) -> Draft:
    data = {"id": new_id(), "turn": claim.turn, "agent": claim.agent, "session": claim.session,
            "call": call_id, "tool": tool, "command": command, "cwd": cwd, "reason": reason,
            "expires_at": format_ts(now + timedelta(seconds=timeout)), "runner": runner,
            "task": claim.task}
    return Draft("approval.requested", f"session:{claim.session}", data)


def _row(con: sqlite3.Connection, approval_id: str) -> sqlite3.Row:
    row = con.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no approval {approval_id!r}",
                            hint="`fased approvals list` shows the pending ones")
    return row


def _decided(row: sqlite3.Row, decision: str, **extra) -> Draft:
    data = {"id": row["id"], "turn": row["turn"], "agent": row["agent"],
            "session": row["session"], "call": row["call"], "decision": decision, **extra}
    return Draft("approval.decided", f"session:{row['session']}", data)


def decide(store: Store, approval_id: str, decision: str, *, reason: str | None = None,
           always: bool = False, for_seconds: float | None = None) -> dict:
    """Approve or deny a pending request (and grant its command with `always`/`for`).
    Returns the approval as `fased approvals list` shows it, decided."""
    now = store.clock()
    grant_entries = None
    if decision == "approved" and (always or for_seconds):
        row = _row(store.db(), approval_id)
        try:
            grant_entries = exact_entries(row["command"])
        except UsageError as exc:
            raise UsageError(exc.message, hint=f"approve it once: fased approvals approve "
                             f"{approval_id}") from None

    def decide_drafts(con):
        row = _row(con, approval_id)
        if row["state"] != "pending":
            raise ConflictError(f"approval {approval_id} is already {row['state']}")
        if row["expires_at"] <= format_ts(now):
            return [_decided(row, "expired", reason="nobody decided in time")]
        extra: dict = {"reason": reason} if reason else {}
        drafts = []
        if grant_entries is not None:
            gid = new_id("g")
            grant = {"id": gid, "agent": row["agent"], "entries": grant_entries,
                     "command": row["command"], "cwd": row["cwd"], "approval": row["id"]}
            if for_seconds:
                grant["expires_at"] = format_ts(now + timedelta(seconds=for_seconds))
            drafts.append(Draft("exec.granted", f"agent:{row['agent']}", grant))
            extra["grant"] = gid
        drafts.append(_decided(row, decision, **extra))
        return drafts

    outcome = store.transact(decide_drafts)
    if outcome.events and outcome.events[-1]["data"]["decision"] == "expired":
        raise ConflictError(f"approval {approval_id} expired before it was decided; its call "
                            "was not run", hint="the agent gets an error result saying so")
    return listing(store.db(), now, ids=[approval_id])[0]


def expire_due(store: Store) -> int:
    """Record every pending request past its time as expired (denied); returns how many."""
    now = format_ts(store.clock())
    con = store.db(check_files=False)
    if con.execute("SELECT 1 FROM approvals WHERE state = 'pending' AND expires_at <= ?",
                   (now,)).fetchone() is None:
        return 0

    return len(store.append_internal(lambda con: expired_drafts(con, now)).events)


def expired_drafts(con: sqlite3.Connection, now: str) -> list[Draft]:
    """approval.decided (expired) for every pending request past its time at `now`."""
    return [_decided(r, "expired", reason="nobody decided in time") for r in con.execute(
        "SELECT * FROM approvals WHERE state = 'pending' AND expires_at <= ?"
        " ORDER BY requested_seq", (now,))]


def listing(con: sqlite3.Connection, now: datetime, *, all_: bool = False,
            ids: list[str] | None = None) -> list[dict]:
    """Approval requests as `fased approvals list` shows them (pending ones by default)."""
    query = "SELECT * FROM approvals"
    params: list = []
    if ids:
        query += f" WHERE id IN ({','.join('?' * len(ids))})"
        params = list(ids)
    elif not all_:
        query += " WHERE state = 'pending'"
    out = []
    for r in con.execute(query + " ORDER BY requested_seq", params):
        state = r["state"]
        if state == "pending" and r["expires_at"] <= format_ts(now):
            state = "expired"  # recorded by the next runner
        out.append({"id": r["id"], "state": state, "agent": r["agent"], "session": r["session"],
                    "turn": r["turn"], "call": r["call"], "tool": r["tool"],
                    "command": r["command"], "cwd": r["cwd"], "reason": r["reason"],
                    "requested_at": r["requested_at"], "expires_at": r["expires_at"],
                    "decided_at": r["decided_at"], "decided_by": r["decided_by"],
                    "note": r["note"], "grant": r["grant"]})
    return out


def grants(con: sqlite3.Connection, now: datetime) -> list[dict]:
    """Exec allowlist entries granted from approvals that still hold."""
    import json

    return [{**dict(r), "entry": " ; ".join(json.loads(r["entry"])),
             "entries": json.loads(r["entry"])} for r in con.execute(
        "SELECT id, agent, entry, command, cwd, expires_at, approval, created_at, created_by"
        " FROM exec_grants WHERE removed_seq IS NULL AND (expires_at IS NULL OR"
        " expires_at > ?) ORDER BY created_seq", (format_ts(now),))]


def remove_grant(store: Store, grant_id: str) -> None:
    def drafts(con):
        row = con.execute("SELECT agent, removed_seq FROM exec_grants WHERE id = ?",
                          (grant_id,)).fetchone()
        if row is None or row["removed_seq"] is not None:
            raise NotFoundError(f"no allowlist entry {grant_id!r}",
                                hint="`fased approvals allowlist` lists them")
        return [Draft("exec.grant_removed", f"agent:{row['agent']}",
                      {"id": grant_id, "agent": row["agent"]})]

    store.transact(drafts)
