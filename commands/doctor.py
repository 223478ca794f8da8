"""`fased doctor`: check everything fased keeps, and repair what is safe to repair."""

from __future__ import annotations

import click

from fased.commands.output import echo_json, json_option, store
from fased.errors import EXIT_ERROR

_MARK = {"ok": "ok   ", "info": "info ", "warn": "warn ", "error": "ERROR"}


@click.command()
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed without losing events: cut a torn tail into a "
              ".broken file, tighten permissions, rebuild state.db.")
@json_option
def doctor(repair: bool, json_: bool) -> None:
    """Check the log's checksums and seqs, the lock, permissions and projections.

    Exits 1 when an error remains (a warning that --repair fixed does not count).

    \b
    Examples:
      fased doctor
      fased doctor --repair
      fased doctor --json | jq '.[] | select(.level != "ok")'
    """
    from fased.doctor import check

    findings = check(store(), repair=repair)
    if json_:
        echo_json([f.to_dict() for f in findings])
    else:
        for f in findings:
            suffix = " (repaired)" if f.fixed else ""
            click.echo(f"{_MARK[f.level]} {f.check:<12} {f.message}{suffix}")
    if any(f.level == "error" and not f.fixed for f in findings):
        raise click.exceptions.Exit(EXIT_ERROR)
