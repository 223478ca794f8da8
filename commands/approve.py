"""Asking the user on the terminal whether a tool call may run, and showing calls as they
start. The decision itself is fased's (fased.tools.policy); only the prompt lives here."""

from __future__ import annotations

import os

import click


def show_tool(name: str, summary: str) -> None:
    """`-> exec  npm test` on stderr as a call starts (stdout keeps only the reply)."""
    from fased.commands.output import note

    note(f"-> {name}  {summary}" if summary else f"-> {name}")


def terminal_approver():
    """A function that asks on the controlling terminal (/dev/tty, as sudo does, so that
    pipes on stdin and stdout do not matter), or None when there is no terminal to ask:
    then a call that needs asking is refused (cron, CI, `fased run`)."""
    if os.environ.get("FASED_NO_TTY"):
        return None
    try:
        tty = open("/dev/tty", "r+", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError:
        return None

    def ask(call, reason: str) -> bool:
        import json

        try:
            args = json.loads(call["arguments"] or "{}")
        except ValueError:
            args = {}
        command = args.get("command", call["arguments"]) if isinstance(args, dict) else ""
        where = f" in {args['workdir']}" if isinstance(args, dict) and args.get("workdir") else ""
        tty.write(f"\nfased: the agent wants to run{where}:\n    {command}\n"
                  f"  ({reason}; tools.exec.mode is ask)\nRun it? [y/N] ")
        tty.flush()
        try:
            answer = tty.readline()
        except (OSError, KeyboardInterrupt):
            answer = ""
        return answer.strip().lower() in ("y", "yes")

    click.get_current_context().call_on_close(tty.close)
    return ask
