"""`fased agent heartbeat`: an agent's periodic check-in, when it is due and what it did last."""

from __future__ import annotations

import click

from fased.commands.output import echo_json, json_option, say, shown_time, store
from fased.commands.types import complete_agents


@click.command("heartbeat")
@click.argument("agent_id", metavar="[ID]", required=False, shell_complete=complete_agents)
@json_option
def heartbeat(agent_id, json_):
    """An agent's heartbeat: its settings, when it is due next and what its last one did.

    A heartbeat is a turn `fased run` sends on a schedule, in the agent's main session (the
    one named `main`, made when missing), asking it to read HEARTBEAT.md and reply
    HEARTBEAT_OK when nothing needs attention; that reply is recorded and never delivered,
    any other is printed like a task's reply. It is off unless agents.list[N].heartbeat.every
    (or agents.defaults.heartbeat.every) is set; activeHours limits when it fires. A
    HEARTBEAT.md that is empty, only headings and comments, or the untouched template skips
    it without calling a model.

    \b
    Examples:
      fased config set 'agents.list[0].heartbeat' '{"every": "30m"}'
      fased config set 'agents.list[0].heartbeat.activeHours' \\
          '{"start": "08:00", "end": "22:00", "timezone": "Europe/Berlin"}'
      fased agent heartbeat
      fased agent heartbeat ops --json
      fased task history TASK        # every heartbeat run (the task is in `fased task list`)
    """
    from fased.agents import get_agent
    from fased.heartbeat import status

    st = store()
    con = st.db()
    info = status(con, st.home, get_agent(con, agent_id), st.clock())
    if json_:
        echo_json(info)
        return
    if not info["enabled"]:
        say(f"Heartbeat of agent {info['agent']}: off (set agents.list[N].heartbeat.every, "
            "e.g. 30m)")
        if info["task"]:
            say(f"  Task:      {info['task']} is cancelled by the next `fased run`")
        return
    say(f"Heartbeat of agent {info['agent']}: every {info['every']}"
        + (f", {info['active_hours']}" if info["active_hours"] else ""))
    if info["task"] is None:
        say("  Task:      made by the next `fased run` tick")
    else:
        paused = " (paused: `fased task resume`)" if info["state"] == "paused" else ""
        say(f"  Task:      {info['task']} in session {info['session']}{paused}")
        due = f"{shown_time(info['next_due'])} UTC" if info["next_due"] else "-"
        outside = "" if info["active_now"] else " (outside active hours now)"
        say(f"  Next due:  {due}{outside}")
    if info["file"]:
        say(f"  Skips:     {info['file']}: no model is called")
    last = info["last"]
    if last:
        why = f": {last['reason']}" if last["reason"] else ""
        turn = f" (turn {last['turn']})" if last["turn"] else ""
        say(f"  Last:      {shown_time(last['at'])} UTC {last['result']}{turn}{why}")
    else:
        say("  Last:      never ran")
