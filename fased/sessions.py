"""Sessions: the working contexts under an agent (no click here)."""

from __future__ import annotations

import re
import sqlite3

from fased.errors import ConflictError, NotFoundError, UsageError
from fased.store import Draft

SESSION_ID = re.compile(r"^s-[0-9]+\Z")


def next_session_id(con: sqlite3.Connection, taken: int = 0) -> str:
    """`s-N`: short, typeable, a safe file name; unique because it is decided under the lock."""
    count = con.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    return f"s-{count + 1 + taken}"


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100 or "\n" in name:
        raise UsageError("a session name needs 1-100 characters on one line")
    if SESSION_ID.match(name):
        raise UsageError(f"{name!r} looks like a session id; pick another name")
    return name


def require_free_name(con: sqlite3.Connection, agent: str, name: str | None,
                      except_id: str | None = None) -> None:
    if name is None:
        return
    row = con.execute(
        "SELECT id FROM sessions WHERE agent = ? AND name = ? AND deleted = 0 AND id IS NOT ?",
        (agent, name, except_id)).fetchone()
    if row is not None:
        raise ConflictError(f"agent {agent} already has a session named {name!r} ({row[0]})")


def get_session(con: sqlite3.Connection, agent: str, ref: str, *,
                include_deleted: bool = False) -> sqlite3.Row:
    """A session of `agent` by id or name."""
    row = con.execute("SELECT * FROM sessions WHERE id = ?", (ref,)).fetchone()
    if row is None:
        row = con.execute(
            "SELECT * FROM sessions WHERE agent = ? AND name = ? ORDER BY deleted, created_seq "
            "LIMIT 1", (agent, ref)).fetchone()
    if row is None:
        raise NotFoundError(f"no session {ref!r} for agent {agent}",
                            hint=f"`fased session list --agent {agent}` shows them")
    if row["agent"] != agent:
        raise UsageError(f"session {ref} belongs to agent {row['agent']}",
                         hint=f"add --agent {row['agent']}")
    if row["deleted"] and not include_deleted:
        raise NotFoundError(f"session {ref} is deleted",
                            hint=f"`fased session restore {row['id']}` brings it back")
    return row


def current_session(con: sqlite3.Connection, agent: str) -> str | None:
    row = con.execute("SELECT current_session FROM agents WHERE id = ?", (agent,)).fetchone()
    return row[0] if row else None


def new_session(con: sqlite3.Connection, agent: str, name: str | None,
                switch: bool = True) -> tuple[str, list[Draft]]:
    """Drafts that create a session (and make it the agent's current one)."""
    require_free_name(con, agent, name)
    sid = next_session_id(con)
    drafts = [Draft("session.created", f"session:{sid}",
                    {"agent": agent, "session": sid, "name": name}, expect=0)]
    if switch:
        drafts.append(Draft("session.switched", f"agent:{agent}", {"agent": agent,
                                                                    "session": sid}))
    return sid, drafts


def ensure_session(con: sqlite3.Connection, agent: str, ref: str | None,
                   new: bool = False) -> tuple[str, list[Draft]]:
    """The session a chat goes to: `ref`, else the current one, else a new one."""
    if new:
        return new_session(con, agent, None)
    if ref is not None:
        row = get_session(con, agent, ref)
        return row["id"], []
    sid = current_session(con, agent)
    if sid is not None:
        return sid, []
    return new_session(con, agent, None)


# -- the session's model override -------------------------------------------------------------

CLEAR_WORDS = ("clear", "default")  # say "back to the agent default" wherever a REF is taken


def model_override(con: sqlite3.Connection, session: str) -> str | None:
    row = con.execute("SELECT model_override FROM sessions WHERE id = ?", (session,)).fetchone()
    return row[0] if row else None


def model_override_drafts(con: sqlite3.Connection, agent: str, session: str,
                          ref: str | None) -> tuple[str | None, list[Draft]]:
    """The session's override resolved from `ref` (None or a clear word: none) and the
    `session.model_set` that makes it so (none when it already is)."""
    from fased.models import check_ref_for_agent

    wanted = None if ref is None or ref.strip().lower() in CLEAR_WORDS else (
        check_ref_for_agent(con, ref))
    if model_override(con, session) == wanted:
        return wanted, []
    return wanted, [Draft("session.model_set", f"session:{session}",
                          {"agent": agent, "session": session, "model": wanted})]


def session_label(row: sqlite3.Row) -> str:
    """How to name a session in a command line: its name when it is one safe word."""
    import re

    name = row["name"]
    if name and re.fullmatch(r"[\w.-]+", name) and name not in ("set", *CLEAR_WORDS):
        return name
    return row["id"]


def clear_command(con: sqlite3.Connection, row: sqlite3.Row) -> str:
    """The command that clears `row`'s override (with --agent unless it is the selected
    agent's session)."""
    from fased.agents import selected_agent

    agent = "" if row["agent"] == selected_agent(con) else f" --agent {row['agent']}"
    return f"fased session model {session_label(row)} clear{agent}"


def override_notice(con: sqlite3.Connection, session: str, changed: bool) -> str | None:
    """The line a chat prints when its session answers with an override (`changed`: the
    chat set or cleared it); None when the session simply follows the agent."""
    row = con.execute("SELECT * FROM sessions WHERE id = ?", (session,)).fetchone()
    override, label = row["model_override"], session_label(row)
    if override and changed:
        return (f"fased: session {label} now answers with {override} "
                f"({clear_command(con, row)} to undo)")
    if override:
        return f"fased: session {label} answers with its override {override}"
    if changed:
        primary = con.execute("SELECT primary_model FROM agents WHERE id = ?",
                              (row["agent"],)).fetchone()[0]
        return f"fased: session {label} answers with the agent default {primary} again"
    return None


def waiting_turns(con: sqlite3.Connection, now: str, *, session: str | None = None,
                  agent: str | None = None) -> list[sqlite3.Row]:
    """Turns of a session (or an agent) that a runner would still answer: queued, parked for
    an approval, or claimed by a runner whose lease ran out or that is gone
    (fased.leases.lapsed). One being answered is not."""
    from fased.leases import lapsed

    column, value = ("session", session) if session is not None else ("agent", agent)
    lapsed_sql, params = lapsed(con, now)
    return con.execute(
        f"SELECT * FROM turns WHERE {column} = ? AND (state IN ('queued', 'parked') OR"
        f" (state = 'running' AND {lapsed_sql})) ORDER BY queued_seq",
        (value, *params)).fetchall()


def withdraw_drafts(con: sqlite3.Connection, turns: list[sqlite3.Row],
                    reason: str) -> list[Draft]:
    """Drafts that withdraw `turns` (waiting_turns) so that no runner answers them: each is
    recorded aborted with nothing said; a parked one has its request denied first, and
    its open calls are closed (never run)."""
    if not turns:
        return []
    from fased.loop import close_open_calls

    drafts = []
    for turn in turns:
        stream = f"session:{turn['session']}"
        base = {"turn": turn["id"], "agent": turn["agent"], "session": turn["session"]}
        for approval in con.execute("SELECT id, call FROM approvals WHERE turn = ? AND"
                                    " state = 'pending'", (turn["id"],)):
            drafts.append(Draft("approval.decided", stream, {
                "id": approval["id"], **base, "call": approval["call"], "decision": "denied",
                "reason": reason}))
        drafts.extend(close_open_calls(con, turn["id"], turn["agent"], turn["session"]))
        drafts.append(Draft("turn.aborted", stream, {
            **base, "partial_reply": "", "reason": reason,
            "task": turn["task"]}))
    return drafts
