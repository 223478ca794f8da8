"""`fased agent tools` and `fased agent context`: what an agent may use, and exactly what its
next turn would send."""

from __future__ import annotations

import click

from fased.commands.output import echo_json, json_option, note, say, store, table
from fased.commands.types import complete_agents, complete_sessions


@click.command("tools")
@click.argument("args", nargs=-1, metavar="[ID] | allow|deny|reset ID NAME...")
@json_option
def tools(args, json_):
    """The tools an agent is offered, and why; change its allow and deny lists.

    NAME is a tool (read, write, edit, apply_patch, exec, process, memory_search, memory_get),
    a group (group:fs, group:runtime, group:memory) or a glob (`*`). Deny wins over allow and
    over the profile. Changes are events (config.set on agents.list[N].tools), so fased.json
    and `fased replay` show them.

    \b
    Examples:
      fased agent tools                 # the selected agent
      fased agent tools ops --json
      fased agent tools deny ops exec   # ops may not run commands
      fased agent tools allow ops apply_patch
      fased agent tools reset ops exec
    """
    from fased.agents import get_agent
    from fased.errors import UsageError
    from fased.tools.report import tools_change, tools_report

    st = store()
    if args and args[0] in ("allow", "deny", "reset"):
        if len(args) < 3:
            raise UsageError(f"{args[0]} needs an agent and at least one tool name",
                             hint=f"fased agent tools {args[0]} main exec")
        action, agent_id, names = args[0], args[1], list(args[2:])
        outcome = st.transact(lambda con: tools_change(con, get_agent(con, agent_id)["id"],
                                                       action, names))
        done = {"allow": "Allowed", "deny": "Denied", "reset": "Reset"}[action]
        say(f"{done} {', '.join(names)} for {agent_id}." if outcome.events else
                   f"Nothing changed for {agent_id}.")
        return
    if len(args) > 1:
        raise UsageError("give one agent id", hint="fased agent tools [ID]")
    con = st.db()
    agent = get_agent(con, args[0] if args else None)
    report = tools_report(con, st.home, agent["id"])
    if json_:
        echo_json(report)
        return
    table([(t["name"], "yes" if t["offered"] else "no", t["why"]) for t in report["tools"]],
          ("TOOL", "OFFERED", "WHY"))
    ex = report["exec"]
    say(f"\nProfile: {report['profile']}; exec approval: {ex['mode']}"
               + (f" (allowlist: {', '.join(ex['allowlist'])})" if ex["allowlist"] else "")
               + f"; files: {'workspace only' if report['workspace_only'] else 'anywhere'}"
               + f"; sandbox: {report['sandbox']['summary']}")


@click.command("context")
@click.argument("agent_id", metavar="[ID]", required=False, shell_complete=complete_agents)
@click.option("--session", "-s", metavar="ID|NAME",
              help="Session (default: the agent's current).", shell_complete=complete_sessions)
@json_option
def context(agent_id, session, json_):
    """What the agent's next turn would send: each bootstrap file (its size, what is injected
    and why it is cut or left out), the tools and skills offered (and what of the skills
    block was dropped to fit skills.limits.maxSkillsPromptChars), and a token estimate.

    \b
    Examples:
      fased agent context
      fased agent context ops --session s-4 --json
    """
    from fased.context import preview
    from fased.local import check_settings

    check_settings()  # the window is the embedded server's, as the next turn would find
    st = store()
    con = st.db()
    view = preview(con, st.home, agent_id, session)
    if json_:
        echo_json(view)
        return
    say(f"Agent {view['agent']}, session {view['session'] or '(a new one)'}; "
               f"workspace {view['workspace']}")
    table([(f["name"], f["size"], f["injected"], f["reason"] or "") for f in view["files"]],
          ("FILE", "CHARS", "INJECTED", "NOTE"))
    tools_line = ", ".join(view["tools"]) or "none"
    say(f"\nTools offered: {tools_line}")
    skills = [s["name"] + ("" if s["described"] else " (no description)")
              for s in view["skills"]]
    say(f"Skills offered: {', '.join(skills) or 'none'}")
    if view["skills_note"]:
        note(f"skills: {view['skills_note']}")
    t = view["tokens"]
    say(f"Tokens (estimated): system {t['system']}, tools {t['tools']}, history "
               f"{t['history']} = {t['total']} of a {view['window']}-token window, "
               f"{t['reply']} kept for the reply")
    if view["dropped"]:
        note(f"the next turn would drop the {view['dropped']} oldest message(s)")
