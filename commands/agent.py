"""`fased agent ...`: create, list, show, select, rename, delete and restore agents."""

from __future__ import annotations

import click

from fased.commands.main import LazyGroup
from fased.commands.output import echo_json, json_option, note, say, shown_time, store, table
from fased.commands.types import LinePath, Name, complete_agents, complete_model_refs
from fased.errors import ConflictError, UsageError

EMOJI = Name("the emoji", limit=32)


@click.group(cls=LazyGroup, lazy={"models": "models:models", "tools": "agent_tools:tools",
                                     "context": "agent_tools:context",
                                     "skills": "skill:agent_skills",
                                     "heartbeat": "heartbeat:heartbeat"})
def agent() -> None:
    """Agents: an identity, a workspace, models, sessions and tasks.

    \b
    Examples:
      fased agent create ops --name "Ops" --emoji 🛠 --model ollama/llama3.2
      fased agent list
      fased agent use ops
      fased agent show ops --json
      fased agent files
      fased agent models set primary openai/gpt-4o-mini
    """


@agent.command("create")
@click.argument("agent_id", metavar="ID")
@click.option("--name", type=Name("the agent name"), help="Display name (default: the id).")
@click.option("--workspace", metavar="DIR", type=LinePath(file_okay=False),
              help="Workspace directory (default: derived from the default workspace).")
@click.option("--model", metavar="REF", help="Primary model ref, e.g. ollama/llama3.2.",
              shell_complete=complete_model_refs)
@click.option("--emoji", type=EMOJI, help="An emoji for the agent's identity.")
@click.option("--use", "use_it", is_flag=True, help="Also make it the selected agent.")
@json_option
def create(agent_id, name, workspace, model, emoji, use_it, json_):
    """Create an agent. IDs: lower-case letters, digits, '-' and '_'.

    --workspace is made before the agent is recorded: a folder that cannot be made (a
    name too long, a file in the way) is refused and changes nothing.

    \b
    Examples:
      fased agent create ops
      fased agent create research --name Research --workspace ~/research --use
    """
    from pathlib import Path

    from fased.agents import check_agent_id, require_new_agent
    from fased.store import Draft

    check_agent_id(agent_id)
    if workspace:
        workspace = str(Path(workspace).expanduser().absolute())
    if model:
        model = _checked_ref(model)

    def decide(con):
        require_new_agent(con, agent_id)
        data = {"agent": agent_id, "name": name or agent_id}
        for key, value in (("emoji", emoji), ("workspace", workspace), ("model", model)):
            if value:
                data[key] = value
        drafts = [Draft("agent.created", f"agent:{agent_id}", data, expect=0)]
        if use_it:
            drafts.append(Draft("agent.selected", "agents", {"agent": agent_id}))
        return drafts

    from fased.agents import workspace_made
    from fased.setup import bootstrap_workspace

    with workspace_made(Path(workspace) if workspace else None):
        outcome = store().transact(decide)
    ws, created = bootstrap_workspace(store(), agent_id)
    _report(outcome, json_, f"Created agent {agent_id} (workspace {ws}"
            + (f"; created {', '.join(created)})." if created else ")."))


def _checked_ref(ref: str) -> str:
    """A model ref checked against the provider registry, in provider/model form (with a
    note when the provider's fetched catalog lacks it)."""
    from fased.models import catalog_note, parse_model_ref

    con = store().db()
    parsed = parse_model_ref(con, ref)
    warning = catalog_note(con, parsed)
    if warning:
        note(warning)
    return str(parsed)


def _report(outcome, json_: bool, message: str) -> None:
    if json_:
        echo_json({"events": [e["seq"] for e in outcome.events], "replayed": outcome.replayed,
                   "message": message})
        return
    say(message + (" (already done: idempotency key)" if outcome.replayed else ""))


@agent.command("list")
@click.option("--all", "all_", is_flag=True, help="Include deleted agents.")
@json_option
def list_(all_: bool, json_: bool):
    """List agents; * marks the selected one."""
    from fased.agents import selected_agent
    from fased.views import agent_rows

    con = store().db()
    rows = agent_rows(con, store().home, include_deleted=all_)
    if json_:
        echo_json(rows)
        return
    sel = selected_agent(con)
    table(
        [("*" if r["id"] == sel else " ", r["id"], r["name"], r["emoji"] or "",
          r["model"]["primary"] or "-", r["sessions"], r["tasks"],
          "deleted" if r["deleted"] else "", r["workspace"]) for r in rows],
        (" ", "ID", "NAME", "EMOJI", "PRIMARY MODEL", "SESSIONS", "TASKS", "STATE", "WORKSPACE"),
    )


@agent.command("show")
@click.argument("agent_id", metavar="[ID]", required=False, shell_complete=complete_agents)
@json_option
def show(agent_id, json_):
    """Show an agent: workspace, models, identity, policies, sandbox, sessions, tasks, its
    usage today and this month, and what its wallet has left."""
    from fased.agents import get_agent
    from fased.settings import agent_settings
    from fased.setup import next_step
    from fased.tools.confine import sandbox_report
    from fased.views import agent_detail

    con = store().db()
    row = get_agent(con, agent_id, include_deleted=True)
    detail = agent_detail(con, store().home, row)
    detail["sandbox"] = sandbox_report(con, store().home, row, agent_settings(con, row["id"]))
    from fased.tools.report import tools_report

    report = tools_report(con, store().home, row["id"])
    offered = [t["name"] for t in report["tools"] if t["offered"]]
    detail["tools"] = (f"{', '.join(offered) or 'none'} (profile {report['profile']}"
                       + (f"; allow {', '.join(report['allow'])}" if report["allow"] else "")
                       + (f"; deny {', '.join(report['deny'])}" if report["deny"] else "") + ")")
    detail["exec_approval"] = report["exec"]
    from fased.timeparse import utc_now
    from fased.usage import agent_usage, wallet_report

    now = utc_now()
    used = agent_usage(con, row["id"], now)
    detail["usage"] = {k: v if k == "zone" else v.to_dict() for k, v in used.items()}
    detail["wallet"] = wallet_report(con, row["id"], now)
    if json_:
        echo_json(detail)
        return
    say(f"{detail['emoji'] + ' ' if detail['emoji'] else ''}{detail['name']} "
        f"({detail['id']}){' [selected]' if detail['selected'] else ''}"
        f"{' [deleted]' if detail['deleted'] else ''}")
    m = detail["model"]
    lines = [
        ("Workspace", detail["workspace"]),
        ("Primary model", m["primary"] or f"(none; next: {next_step(con, row['id'])})"),
        ("Fallbacks", ", ".join(m["fallbacks"]) or "(none)"),
        ("Task model", m["task"] or "(primary)"),
        ("Skills", detail["skills"]),
        ("Tools", detail["tools"]),
        ("Exec approval", _approval_line(detail["exec_approval"])),
        ("Sandbox", detail["sandbox"]["summary"]),
        ("Sessions", f"{detail['sessions']} (current: {detail['current_session'] or '-'})"),
        ("Tasks", str(detail["tasks"])),
        ("Usage", _usage_line(used)),
        ("Wallet", _wallet_line(detail["wallet"], con)),
        ("Created", f"{shown_time(detail['created_at'])} UTC"),
    ]
    for label, value in lines:
        say(f"  {label + ':':<15}{value}")
    if detail.get("task_list"):
        say("  Task list:")
        for t in detail["task_list"]:
            say(f"    {t['id']}  {t['schedule']}  session {t['session']}  {t['state']}")


def _usage_line(used: dict) -> str:
    from fased.usage import cost_text

    return "; ".join(f"{label} {used[key].tokens:,} tokens, {cost_text(used[key])}"
                     for label, key in (("today", "today"), ("this month", "month"))
                     ) + f" (days in {used['zone']})"


def _wallet_line(limits: list[dict], con) -> str:
    from fased.usage import amount, local_time

    if not limits:
        return "no limits (agents.defaults.wallet)"
    return "; ".join(
        f"{w['limit']} {amount(w['max'], w['counts'])}: "
        + ("reached" if w["reached"] else f"{amount(w['left'], w['counts'])} left")
        + f" (resets {local_time(w['resets'], con)})" for w in limits)


def _approval_line(ex: dict) -> str:
    allow = len(ex["allowlist"])
    return (f"{ex['mode']}" + (f", {allow} allowlist pattern(s)" if allow else "")
            + (", apply_patch on" if ex["applyPatch"] else ""))


@agent.command("use")
@click.argument("agent_id", metavar="ID", shell_complete=complete_agents)
def use(agent_id):
    """Make ID the selected agent (the one commands act on by default)."""
    from fased.agents import get_agent, selected_agent
    from fased.store import Draft

    def decide(con):
        get_agent(con, agent_id)
        if selected_agent(con) == agent_id:
            return []
        return [Draft("agent.selected", "agents", {"agent": agent_id})]

    outcome = store().transact(decide)
    say(f"Selected agent {agent_id}." if outcome.events or outcome.replayed
        else f"Agent {agent_id} is already selected.")


@agent.command("set-identity")
@click.argument("agent_id", metavar="[ID]", required=False, shell_complete=complete_agents)
@click.option("--name", type=Name("the agent name"), help="New display name.")
@click.option("--emoji", type=EMOJI, help="New emoji ('' clears it).")
def set_identity(agent_id, name, emoji):
    """Change an agent's name or emoji."""
    from fased.agents import get_agent
    from fased.store import Draft

    if name is None and emoji is None:
        raise UsageError("nothing to change", hint="give --name and/or --emoji")
    if name is not None and not name.strip():
        raise UsageError("--name must not be empty")

    def decide(con):
        row = get_agent(con, agent_id)
        data = {"agent": row["id"]}
        if name is not None and name != row["name"]:
            data["name"] = name
        if emoji is not None and (emoji or None) != row["emoji"]:
            data["emoji"] = emoji or None
        return [Draft("agent.updated", f"agent:{row['id']}", data)] if len(data) > 1 else []

    outcome = store().transact(decide)
    say("Identity updated." if outcome.events else "Nothing changed.")


@agent.command("delete")
@click.argument("agent_id", metavar="ID", shell_complete=complete_agents)
@click.option("--force", is_flag=True, help="Delete even with sessions or active tasks "
              "(its active tasks are cancelled, its unanswered messages withdrawn, its channel "
              "bindings removed).")
def delete(agent_id, force):
    """Delete an agent (soft: `fased agent restore` brings it back with its sessions)."""
    from fased.agents import get_agent
    from fased.channels.routing import unbind_agent_drafts
    from fased.sessions import waiting_turns, withdraw_drafts
    from fased.store import Draft
    from fased.timeparse import format_ts
    from fased.views import active_task_ids

    st = store()
    now = format_ts(st.clock())

    def decide(con):
        row = get_agent(con, agent_id)
        active = con.execute("SELECT COUNT(*) FROM agents WHERE deleted = 0").fetchone()[0]
        if active == 1:
            raise ConflictError(f"agent {agent_id!r} is the only agent left",
                                hint="create another agent first")
        sessions = con.execute("SELECT COUNT(*) FROM sessions WHERE agent = ? AND deleted = 0",
                               (agent_id,)).fetchone()[0]
        tasks = active_task_ids(con, agent=agent_id)
        if (sessions or tasks) and not force:
            raise ConflictError(
                f"agent {agent_id!r} has {sessions} session(s) and {len(tasks)} active task(s)",
                hint="add --force to delete it anyway (tasks are cancelled, sessions kept)")
        drafts = [Draft("task.cancelled", f"task:{t}", {"task": t, "agent": row["id"],
                                                         "reason": "agent deleted"})
                  for t in tasks]
        drafts += unbind_agent_drafts(con, agent_id, force)
        # nothing is answered for a deleted agent: its unanswered messages are withdrawn
        drafts += withdraw_drafts(con, waiting_turns(con, now, agent=row["id"]),
                                  "agent deleted")
        drafts.append(Draft("agent.deleted", f"agent:{agent_id}",
                            {"agent": agent_id, "force": force, "cancelled_tasks": tasks}))
        return drafts

    outcome = st.transact(decide)
    withdrawn = sum(e["type"] == "turn.aborted" for e in outcome.events)
    say(f"Deleted agent {agent_id}"
        + (f" and withdrew {withdrawn} unanswered turn(s)" if withdrawn else "")
        + f" (restore with `fased agent restore {agent_id}`).")


@agent.command("restore")
@click.argument("agent_id", metavar="ID", shell_complete=complete_agents)
def restore(agent_id):
    """Bring back a deleted agent with its sessions."""
    from fased.agents import get_agent
    from fased.store import Draft

    def decide(con):
        row = get_agent(con, agent_id, include_deleted=True)
        if not row["deleted"]:
            raise ConflictError(f"agent {agent_id!r} is not deleted")
        return [Draft("agent.restored", f"agent:{agent_id}", {"agent": agent_id})]

    store().transact(decide)
    say(f"Restored agent {agent_id}.")


@agent.command("files", context_settings={"ignore_unknown_options": False})
@click.argument("args", nargs=-1, metavar="[ID] | show NAME")
@click.option("--agent", "-a", "agent_opt", metavar="ID", help="Agent (for `show`).",
              shell_complete=complete_agents)
@json_option
def files(args, agent_opt, json_):
    """List an agent's workspace bootstrap files, or print one.

    States: present, missing (never created), deleted-by-user (fased created it and you
    removed it; BOOTSTRAP.md stays gone).

    \b
    Examples:
      fased agent files
      fased agent files ops --json
      fased agent files show SOUL.md
      fased agent files show USER.md --agent ops
    """
    from fased.agents import BOOTSTRAP_FILES, bootstrap_files, get_agent, workspace_for

    args = list(args)
    show_name = None
    if args and args[0] == "show":
        if len(args) != 2:
            raise UsageError("usage: fased agent files show NAME [--agent ID]")
        show_name = args[1]
    elif len(args) > 1:
        raise UsageError("usage: fased agent files [ID]")
    con = store().db()
    row = get_agent(con, agent_opt or (None if show_name or not args else args[0]))
    ws = workspace_for(con, store().home, row)
    states = bootstrap_files(con, ws)
    if show_name is not None:
        match = next((s for s in states if s.name.lower() == show_name.lower()), None)
        if match is None:
            raise UsageError(f"{show_name!r} is not a bootstrap file",
                             hint="one of: " + ", ".join(BOOTSTRAP_FILES))
        if match.state != "present":
            raise UsageError(f"{match.name} is {match.state} in {ws}")
        click.echo(_file_text(match.path), nl=False,
                   color=True)  # the file as it is: click would strip its ANSI codes
        return
    if json_:
        echo_json({"agent": row["id"], "workspace": str(ws),
                   "files": [{"name": s.name, "path": str(s.path), "state": s.state,
                              "size": s.size} for s in states]})
        return
    say(f"Workspace: {ws}")
    table([(s.name, s.state, "" if s.size is None else s.size) for s in states],
          ("FILE", "STATE", "BYTES"))


SHOW_MAX = 64 << 20  # bytes of a bootstrap file `agent files show` prints


def _file_text(path) -> str:
    """A bootstrap file's text for `agent files show`: a FIFO (which waited for a writer,
    forever) or a device is an error saying so; past SHOW_MAX it is cut, with a note."""
    from fased.bounds import NotRegularFile, read_head
    from fased.errors import FasedError

    try:
        data = read_head(path, SHOW_MAX + 1)
    except NotRegularFile as exc:
        raise FasedError(f"{path.name} is {exc.kind}, not a regular file ({path})",
                         hint=None) from None
    except OSError as exc:
        raise FasedError(f"cannot read {path}: {exc.strerror or exc}", hint=None) from None
    if len(data) > SHOW_MAX:
        note(f"fased: {path.name} is larger than {SHOW_MAX >> 20} MiB; its start is shown")
        data = data[:SHOW_MAX]
    return data.decode("utf-8", "replace")
