"""`fased doctor`: check everything fased keeps, and repair what is safe to repair."""

from __future__ import annotations

import click

from fased.commands.output import echo_json, json_option, say, store
from fased.errors import EXIT_ERROR

_MARK = {"ok": "ok   ", "info": "info ", "warn": "warn ", "error": "ERROR"}


@click.command()
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed without losing events: cut a torn tail into a "
              ".broken file, tighten permissions, rebuild state.db.")
@click.option("accept_loss", "--accept-loss", is_flag=True,
              help="With --repair: when the log lost events that state.db had applied, go on "
              "without them (state.db is rebuilt from the log; the loss is recorded).")
@json_option
def doctor(repair: bool, accept_loss: bool, json_: bool) -> None:
    """Check the log's checksums and seq chain, the lock, permissions, links and projections.

    The log must be a gapless chain of checksummed records: a missing segment, a deleted,
    duplicated or swapped line or a flipped bit is an error naming the file and byte (and
    what to restore), and every other command refuses to go on (exit 4) until it is mended.
    state.db is compared with a fresh build from the log.

    Exits 1 when an error remains (a warning that --repair fixed does not count).

    \b
    Examples:
      fased doctor
      fased doctor --repair
      fased doctor --repair --accept-loss   # the log lost its last events: go on
      fased doctor --json | jq '.[] | select(.level != "ok")'
    """
    from fased.doctor import check
    from fased.errors import UsageError

    if accept_loss and not repair:
        raise UsageError("--accept-loss goes with --repair",
                         hint="fased doctor --repair --accept-loss")
    findings = check(store(), repair=repair, accept_loss=accept_loss)
    if json_:
        echo_json([f.to_dict() for f in findings])
    else:
        for f in findings:
            suffix = " (repaired)" if f.fixed else ""
            say(f"{_MARK[f.level]} {f.check:<12} {f.message}{suffix}")
    if any(f.level == "error" and not f.fixed for f in findings):
        raise click.exceptions.Exit(EXIT_ERROR)
