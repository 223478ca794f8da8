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
    from fased.settings import env_flag

    if env_flag("FASED_NO_TTY", strict=False):  # mid-turn: an unreadable value never asks
        return None
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
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
        from fased.bounds import printable

        os.write(fd, (f"\nfased: the agent wants to run{where}:\n    {printable(command)}\n"
                      f"  ({reason}; tools.exec.mode is ask)\nRun it? [y/N] ").encode())
        answer = b""
        try:
            while not answer.endswith((b"\n", b"\r")) and len(answer) < 1024:
                chunk = os.read(fd, 1024)
                if not chunk:
                    break
                answer += chunk
        except (OSError, KeyboardInterrupt):
            answer = b""
        return answer.strip().lower() in (b"y", b"yes")

    click.get_current_context().call_on_close(lambda: os.close(fd))
    return ask
