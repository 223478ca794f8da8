"""`fased session ...`: the working contexts under an agent."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import (
    agent_option,
    echo_json,
    json_option,
    note,
    say,
    shown_time,
    store,
    table,
)
from fased.commands.types import LinePath, complete_sessions, count
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
      fased session model ops set openai/gpt-4o-mini
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
@click.argument("ref", metavar="ID|NAME", shell_complete=complete_sessions)
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
@click.argument("ref", metavar="[ID|NAME]", required=False, shell_complete=complete_sessions)
@agent_option
@click.option("-n", "last", type=count(), default=10, show_default=True,
              help="How many of the last messages to show.")
@json_option
def show(ref, agent, last, json_):
    """Show a session: metadata, model override, usage, attached tasks and the last messages."""
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
    from fased.usage import describe, total

    used = total(con, session=row["id"])
    detail["usage"] = used.to_dict()
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
        *([("Usage", describe(used))] if used.calls else []),
        ("Model", _model_line(con, row, detail)),
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


@session.command("export")
@click.argument("ref", metavar="[ID|NAME]", required=False, shell_complete=complete_sessions)
@agent_option
@click.option("--format", "-f", "fmt", type=click.Choice(["md", "jsonl", "json"]), default="md",
              show_default=True, help="md: a transcript to read; jsonl: the session's event "
              "lines from the log; json: one document (turns, steps, calls).")
@click.option("--output", "-o", "output", type=LinePath(dir_okay=False, writable=True),
              metavar="FILE", help="Write to FILE instead of stdout, all at once (a failed "
              "write leaves the old FILE as it was); a new FILE is 0600, an existing one "
              "keeps its mode.")
@click.option("--max-chars", type=count(), default=2000, show_default=True, metavar="N",
              help="md: cut each tool call's arguments and result to N characters (0: whole).")
def export(ref, agent, fmt, output, max_chars):
    """Export a session: a Markdown transcript, its raw event lines, or one JSON document.

    The current session unless ID|NAME says which. A deleted session is exported too: the
    log still has it. The Markdown shows each message with its time (UTC) and model, and
    every tool call with its arguments and result; --format jsonl is exactly what
    `fased replay --session ID --json` shows for it. Nothing is recorded.

    \b
    Examples:
      fased session export ops > ops.md
      fased session export s-2 --format jsonl | jq -r .type
      fased session export --format json -o session.json
      fased session export ops --max-chars 0      # tool results whole
    """
    from fased.agents import get_agent
    from fased.export import markdown, session_document, session_events, write_output
    from fased.sessions import current_session, get_session

    st = store()
    con = st.db()
    agent_id = get_agent(con, agent, include_deleted=True)["id"]  # its sessions are kept too
    ref = ref or current_session(con, agent_id)
    if ref is None:
        raise click.ClickException(f"agent {agent_id} has no session yet "
                                   "(`fased session new` or `fased chat` creates one)")
    row = get_session(con, agent_id, ref, include_deleted=True)
    if fmt == "jsonl":
        from fased.commands.output import json_line

        text = "".join(json_line(e) + "\n" for e in session_events(st.log, row))
    elif fmt == "json":
        from fased.commands.output import json_document

        text = json_document(session_document(con, row)) + "\n"
    else:
        from fased.bounds import printable

        text = printable(markdown(session_document(con, row), max_chars), multiline=True)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text)
    note(f"fased: wrote session {row['id']} to {output}")


MODEL_USAGE = "fased session model [ID] set REF|clear"


def _model_words(words: tuple[str, ...]) -> tuple[str | None, bool, str | None]:
    """`[ID] [set REF|clear]` -> (session ref, whether to change it, the new REF or None)."""
    from fased.errors import UsageError

    rest = list(words)
    ref = rest.pop(0) if rest and rest[0] not in ("set", "clear") else None
    if not rest:
        return ref, False, None
    action = rest.pop(0)
    if action == "set":
        if not rest:
            raise UsageError(f"set needs a model ref: {MODEL_USAGE}")
        target: str | None = rest.pop(0)
    elif action == "clear":
        target = None
    else:
        raise UsageError(f"unknown action {action!r}: {MODEL_USAGE}")
    if rest:
        raise UsageError(f"too many arguments: {MODEL_USAGE}")
    return ref, True, target


@session.command("model")
@click.argument("words", nargs=-1, metavar="[ID|NAME] [set REF|clear]")
@agent_option
@json_option
def model(words, agent, json_):
    """Show, set or clear a session's model override (what `chat -m REF` sets).

    A session with an override answers with that model instead of the agent's primary
    (the agent's fallbacks still follow it); `clear` (or `set clear`) goes back to the agent
    default. Without ID|NAME: the current session. A model the provider did not list when
    its models were last fetched is set, with a note on stderr.

    \b
    Examples:
      fased session model                    # what the current session answers with
      fased session model ops set openai/gpt-4o-mini
      fased session model ops clear
      fased session model ops --json
    """
    from fased.models import catalog_note, parse_model_ref
    from fased.sessions import (
        clear_command,
        current_session,
        get_session,
        model_override_drafts,
        session_label,
    )
    from fased.setup import next_step

    ref, change, target = _model_words(words)
    notes: list[str] = []
    found: list[str] = []

    def session_row(con, agent_id, include_deleted=False):
        sid = ref or current_session(con, agent_id)
        if sid is None:
            raise click.ClickException(f"agent {agent_id} has no session yet "
                                       "(`fased session new` or `fased chat` creates one)")
        return get_session(con, agent_id, sid, include_deleted=include_deleted)

    def decide(con):
        row = session_row(con, _agent_id(con, agent))
        found.append(row["id"])
        wanted, drafts = model_override_drafts(con, row["agent"], row["id"], target)
        warning = catalog_note(con, parse_model_ref(con, wanted)) if wanted else None
        notes[:] = [warning] if warning else []
        return drafts

    st = store()
    outcome = st.transact(decide) if change else None
    con = st.db()
    if outcome is not None and not found:  # replayed: the session it changed then
        found.append(outcome.events[0]["data"]["session"])
    row = (get_session(con, _agent_id(con, agent), found[-1], include_deleted=True) if found
           else session_row(con, _agent_id(con, agent), include_deleted=True))
    primary = con.execute("SELECT primary_model FROM agents WHERE id = ?",
                          (row["agent"],)).fetchone()[0]
    override = row["model_override"]
    for line in notes:
        note(line)
    if json_:
        echo_json({"agent": row["agent"], "session": row["id"], "name": row["name"],
                   "override": override, "model": override or primary,
                   **({"changed": bool(outcome.events)} if outcome is not None else {})})
        return
    default = primary or f"(none; next: {next_step(con, row['agent'])})"
    label = session_label(row)
    if outcome is None:
        named = f" ({row['name']})" if row["name"] else ""
        say(f"Session {row['id']}{named} answers with "
            + (f"its override {override} (the agent default is {default})." if override
               else f"the agent default {default} (no override)."))
    elif override and outcome.events:
        say(f"Session {label} now answers with {override} (`{clear_command(con, row)}` "
            "to undo).")
    elif override:
        say(f"Session {label} already answers with {override}.")
    elif outcome.events:
        say(f"Session {label}: override cleared; it answers with the agent default {default}.")
    else:
        say(f"Session {label} has no override.")


def _model_line(con, row, detail: dict) -> str:
    from fased.sessions import clear_command

    if detail["model_override"]:
        return f"{detail['model_override']} (override: `{clear_command(con, row)}`)"
    primary = con.execute("SELECT primary_model FROM agents WHERE id = ?",
                          (row["agent"],)).fetchone()[0]
    return f"agent default ({primary})" if primary else "agent default"


@session.command("rename")
@click.argument("ref", metavar="ID|NAME", shell_complete=complete_sessions)
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
@click.argument("ref", metavar="ID|NAME", shell_complete=complete_sessions)
@agent_option
@click.option("--force", is_flag=True, help="Delete even with active tasks (they are cancelled) "
              "or turns waiting to be answered (they are withdrawn).")
def delete(ref, agent, force):
    """Delete a session (soft: the transcript is kept; `restore` brings it back).

    A session with active tasks, or with messages no runner has answered yet (queued, or
    parked for an approval), is deleted only with --force: the tasks are cancelled and the
    messages withdrawn (recorded aborted; a parked call's request is denied), so nothing is
    answered in a deleted session. A turn being answered right now is left to its runner.

    \b
    Examples:
      fased session delete ops
      fased session delete s-3 --force
    """
    from fased.sessions import get_session, waiting_turns, withdraw_drafts
    from fased.store import Draft
    from fased.timeparse import format_ts
    from fased.views import active_task_ids

    st = store()
    now = format_ts(st.clock())
    deleted = []

    def decide(con):
        agent_id = _agent_id(con, agent)
        row = get_session(con, agent_id, ref)
        tasks = active_task_ids(con, session=row["id"])
        turns = waiting_turns(con, now, session=row["id"])
        if (tasks or turns) and not force:
            what = []
            if tasks:
                what.append(f"{len(tasks)} active task(s): {', '.join(tasks)}")
            if turns:
                what.append(f"{len(turns)} turn(s) waiting to be answered")
            todo = ("cancel the tasks, withdraw the turns" if tasks and turns else
                    "cancel them" if tasks else "withdraw them")
            raise ConflictError(f"session {row['id']} has {' and '.join(what)}",
                                hint=f"add --force to {todo} and delete the session")
        deleted.append(row["id"])
        drafts = [Draft("task.cancelled", f"task:{t}", {"task": t, "agent": agent_id,
                                                         "reason": "session deleted"})
                  for t in tasks]
        drafts += withdraw_drafts(con, turns, "session deleted")
        drafts.append(Draft("session.deleted", f"session:{row['id']}", {
            "agent": agent_id, "session": row["id"], "cancelled_tasks": tasks}))
        return drafts

    outcome = st.transact(decide)
    sid = deleted[-1] if deleted else outcome.events[-1]["data"]["session"]
    cancelled = outcome.events[-1]["data"].get("cancelled_tasks") or []
    withdrawn = sum(e["type"] == "turn.aborted" for e in outcome.events)
    say(f"Deleted session {sid}"
        + (f" and cancelled task(s) {', '.join(cancelled)}" if cancelled else "")
        + (f" and withdrew {withdrawn} unanswered turn(s)" if withdrawn else "")
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
