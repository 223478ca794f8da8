"""`fased session ...`: the working contexts under an agent."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import (
    agent_option,
    echo_json,
    json_option,
    say,
    shown_time,
    store,
    table,
)
from fased.commands.types import count
from fased.errors import ConflictError


@click.group(cls=FasedGroup)
def session() -> None:
    """Sessions: the working contexts (conversations) under an agent.

    The current session is kept per agent, across shell invocations; `fased chat`
    talks to it unless told otherwise.

    \b
    Examples:
      fased session new --name ops
      fased session list
      fased session switch ops
      fased session show --json
      fased session rename s-2 release
      fased session delete s-2
    """


def _checked_name(name: str) -> str:
    """A session name: 1-100 characters on one line, without control characters."""
    from fased.bounds import check_name as printable_name
    from fased.sessions import check_name

    return printable_name(check_name(name), "a session name")


def _agent_id(con, agent: str | None) -> str:
    from fased.agents import get_agent

    return get_agent(con, agent)["id"]


@session.command("new")
@agent_option
@click.option("--name", "-n", help="A name to switch to it by.")
@json_option
def new(agent, name, json_):
    """Create a session and switch to it."""
    from fased.sessions import new_session

    name = _checked_name(name) if name is not None else None
    created = []

    def decide(con):
        sid, drafts = new_session(con, _agent_id(con, agent), name)
        created.append(sid)
        return drafts

    outcome = store().transact(decide)
    sid = outcome.events[0]["data"]["session"] if outcome.replayed else created[-1]
    if json_:
        echo_json({"session": sid, "agent": outcome.events[0]["data"]["agent"], "name": name})
    else:
        say(f"Created session {sid}{f' ({name})' if name else ''} and switched to it.")


@session.command("list")
@agent_option
@click.option("--all", "all_", is_flag=True, help="Every agent's sessions, deleted ones too.")
@json_option
def list_(agent, all_, json_):
    """List sessions: created/updated, messages, tokens, attached tasks; * is current."""
    from fased.views import session_rows

    con = store().db()
    agent_id = None if all_ and agent is None else _agent_id(con, agent)
    rows = session_rows(con, agent_id, include_deleted=all_)
    if json_:
        echo_json(rows)
        return
    table(
        [("*" if r["current"] else " ", r["id"], r["name"] or "", r["agent"],
          shown_time(r["created_at"]), shown_time(r["updated_at"]),
          r["messages"], f"{r['tokens']['input']}/{r['tokens']['output']}", r["tasks"],
          "deleted" if r["deleted"] else "") for r in rows],
        (" ", "ID", "NAME", "AGENT", "CREATED (UTC)", "UPDATED (UTC)", "MESSAGES", "TOKENS IN/OUT",
         "TASKS", "STATE"),
    )


@session.command("switch")
@click.argument("ref", metavar="ID|NAME")
@agent_option
def switch(ref, agent):
    """Make a session the agent's current one."""
    from fased.sessions import current_session, get_session
    from fased.store import Draft

    switched = []

    def decide(con):
        agent_id = _agent_id(con, agent)
        row = get_session(con, agent_id, ref)
        switched.append(row["id"])
        if current_session(con, agent_id) == row["id"]:
            return []
        return [Draft("session.switched", f"agent:{agent_id}",
                      {"agent": agent_id, "session": row["id"]})]

    outcome = store().transact(decide)
    sid = outcome.events[0]["data"]["session"] if outcome.replayed else switched[-1]
    say(f"Switched to session {sid}." if outcome.events
        else f"Session {sid} is already current.")


@session.command("show")
@click.argument("ref", metavar="[ID|NAME]", required=False)
@agent_option
@click.option("-n", "last", type=count(), default=10, show_default=True,
              help="How many of the last messages to show.")
@json_option
def show(ref, agent, last, json_):
    """Show a session: metadata, model override, attached tasks and the last messages."""
    from fased.sessions import current_session, get_session
    from fased.views import session_detail

    con = store().db()
    agent_id = _agent_id(con, agent)
    ref = ref or current_session(con, agent_id)
    if ref is None:
        raise click.ClickException(f"agent {agent_id} has no session yet "
                                   "(`fased session new` or `fased chat` creates one)")
    row = get_session(con, agent_id, ref, include_deleted=True)
    detail = session_detail(con, store().home, row, last)
    if json_:
        echo_json(detail)
        return
    named = f" ({detail['name']})" if detail["name"] else ""
    say(f"Session {detail['id']}{named} "
        f"of agent {detail['agent']}{' [current]' if detail['current'] else ''}"
        f"{' [deleted]' if detail['deleted'] else ''}")
    for label, value in (
        ("Created", f"{shown_time(detail['created_at'])} UTC"),
        ("Updated", f"{shown_time(detail['updated_at'])} UTC"),
        ("Messages", detail["messages"]),
        ("Tokens", f"{detail['tokens']['input']} in, {detail['tokens']['output']} out"),
        ("Model", detail["model_override"] or "agent default"
         + (" (override: `fased session model --clear`)" if detail["model_override"] else "")),
        ("Queue mode", detail["queue_mode"] or "followup (default)"),
        ("Transcript", detail["transcript"]),
    ):
        say(f"  {label + ':':<12}{value}")
    if detail["task_list"]:
        say("  Tasks:")
        for t in detail["task_list"]:
            say(f"    {t['id']}  {t['schedule']}  {t['state']}")
    if detail["last_messages"]:
        say("")
        for m in detail["last_messages"]:
            text = m["content"] if len(m["content"]) <= 400 else m["content"][:400] + "…"
            say(f"[{shown_time(m['ts'])}] {m['role']}: {text}")


@session.command("rename")
@click.argument("ref", metavar="ID|NAME")
@click.argument("name")
@agent_option
def rename(ref, name, agent):
    """Give a session a new name."""
    from fased.sessions import get_session, require_free_name
    from fased.store import Draft

    name = _checked_name(name)

    def decide(con):
        agent_id = _agent_id(con, agent)
        row = get_session(con, agent_id, ref)
        if row["name"] == name:
            return []
        require_free_name(con, agent_id, name, except_id=row["id"])
        return [Draft("session.renamed", f"session:{row['id']}",
                      {"agent": agent_id, "session": row["id"], "name": name})]

    store().transact(decide)
    say(f"Renamed session {ref} to {name}.")


@session.command("delete")
@click.argument("ref", metavar="ID|NAME")
@agent_option
@click.option("--force", is_flag=True, help="Delete even with active tasks (they are cancelled).")
def delete(ref, agent, force):
    """Delete a session (soft: the transcript is kept; `restore` brings it back)."""
    from fased.sessions import get_session
    from fased.store import Draft
    from fased.views import active_task_ids

    deleted = []

    def decide(con):
        agent_id = _agent_id(con, agent)
        row = get_session(con, agent_id, ref)
        tasks = active_task_ids(con, session=row["id"])
        if tasks and not force:
            raise ConflictError(
                f"session {row['id']} has {len(tasks)} active task(s): {', '.join(tasks)}",
                hint="add --force to cancel them and delete the session")
        deleted.append(row["id"])
        drafts = [Draft("task.cancelled", f"task:{t}", {"task": t, "agent": agent_id,
                                                         "reason": "session deleted"})
                  for t in tasks]
        drafts.append(Draft("session.deleted", f"session:{row['id']}", {
            "agent": agent_id, "session": row["id"], "cancelled_tasks": tasks}))
        return drafts

    outcome = store().transact(decide)
    sid = deleted[-1] if deleted else outcome.events[-1]["data"]["session"]
    cancelled = outcome.events[-1]["data"].get("cancelled_tasks") or []
    say(f"Deleted session {sid}"
        + (f" and cancelled task(s) {', '.join(cancelled)}" if cancelled else "")
        + f" (restore with `fased session restore {sid}`).")


@session.command("restore")
@click.argument("ref", metavar="ID")
@agent_option
def restore(ref, agent):
    """Bring back a deleted session."""
    from fased.sessions import get_session, require_free_name
    from fased.store import Draft

    def decide(con):
        agent_id = _agent_id(con, agent)
        row = get_session(con, agent_id, ref, include_deleted=True)
        if not row["deleted"]:
            raise ConflictError(f"session {row['id']} is not deleted")
        require_free_name(con, agent_id, row["name"], except_id=row["id"])
        return [Draft("session.restored", f"session:{row['id']}",
                      {"agent": agent_id, "session": row["id"]})]

    store().transact(decide)
    say(f"Restored session {ref}.")
