"""`fased setup`: create fased.json, the default agent `main` and its workspace."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fased.commands.output import echo_json, json_option, note, store


@click.command()
@click.option("--workspace", metavar="DIR", type=click.Path(file_okay=False),
              help="Workspace of the default agent (sets agents.defaults.workspace).")
@click.option("--non-interactive", "-y", is_flag=True, help="Ask nothing; use defaults.")
@click.option("--no-detect", is_flag=True, help="Do not probe for local model servers.")
@json_option
def setup(workspace: str | None, non_interactive: bool, no_detect: bool, json_: bool) -> None:
    """Set up fased: config, the default agent `main`, its workspace files.

    Safe to run again: it creates only what is missing and never overwrites your edits.
    Bootstrap files (AGENTS.md, SOUL.md, TOOLS.md, IDENTITY.md, USER.md, HEARTBEAT.md,
    MEMORY.md) are created from templates when missing; BOOTSTRAP.md only in a brand-new
    workspace, and never again once you delete it. Set agents.defaults.skipBootstrap to
    true to create none (for pre-seeded workspaces). Local model servers (Ollama, LM Studio,
    vLLM, LiteLLM) that answer are registered as providers.

    \b
    Examples:
      fased setup
      fased setup --workspace ~/agents/main --non-interactive
      fased --home /tmp/try setup -y
    """
    from fased.setup import run_setup

    st = store()
    interactive = not non_interactive and sys.stdin.isatty() and not json_
    if workspace is None and interactive and not _already_set_up(st):
        default = str(st.home / "workspace")
        answer = click.prompt("Workspace for the default agent", default=default)
        workspace = None if answer == default else answer
    report = run_setup(st, Path(workspace).expanduser().absolute() if workspace else None,
                       detect=not no_detect)
    if json_:
        echo_json(report)
        return
    for line in report["done"]:
        click.echo(line)
    if not report["done"]:
        click.echo(f"Already set up in {st.home}: nothing to do.")
    for line in report.get("notes", []):
        note(line)


def _already_set_up(st) -> bool:
    return (st.home / "fased.json").exists()
