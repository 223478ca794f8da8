"""Man pages generated from the click commands (`python -m fased.commands.manpage man/`).

The pages are committed; tests/test_manpages.py fails when they differ from what the code
says, so `--help` and `man` never drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from fased import __version__

EXIT_STATUS = """\
.TP
.B 0
Success.
.TP
.B 1
Error: something failed or was not found (a doctor error, a verify difference, an agent
not ready).
.TP
.B 2
Usage: a bad option, argument or value. Nothing was written.
.TP
.B 3
Conflict: it already exists, is protected, or another command changed it first; or an
idempotency key was used by another command.
.TP
.B 4
State: the home or the log cannot be used (unreadable, corrupt before the tail, written by a
newer fased). See \\fBfased doctor\\fR.
.TP
.B 5
Every model a turn could use failed.
"""

ENVIRONMENT = """\
.TP
.B FASED_HOME
State directory (default ~/.fased); \\fB\\-\\-home\\fR overrides it.
.TP
.B FASED_IDEMPOTENCY_KEY
Same as \\fB\\-\\-idempotency\\-key\\fR.
.TP
.B FASED_NOW
For tests only: pin the clock to an RFC 3339 time in the years 1970-9000. Commands run
under it for real (a run fires tasks and records events stamped with that time); to ask
what would fire when, use \\fBfased task next\\fR [\\fB\\-\\-at\\fR \\fITIME\\fR] or
\\fBfased run \\-\\-dry\\-run\\fR, which change nothing. Any other value fails every command
with a usage error (exit 2).
.TP
.B FASED_DETECT_ENDPOINTS
Where \\fBproviders detect\\fR looks: kind=url,kind=url.
.TP
.B FASED_DEBUG
Show the traceback of an internal error.
.TP
.B FASED_NO_TTY
Never ask on the terminal (approvals park; \\fBsetup\\fR asks nothing).
.TP
.B FASED_ASSUME_TTY
1: \\fBsetup\\fR asks as if standard input were a terminal (tests).
"""


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def _help_body(text: str) -> str:
    """Click help text (with \\b blocks kept verbatim) as roff paragraphs."""
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = para.split("\n")
        if lines[0].strip() == "\b":
            out.append(".PP\n.nf\n" + _escape("\n".join(lines[1:])) + "\n.fi")
        else:
            out.append(".PP\n" + _escape(" ".join(line.strip() for line in lines)))
    return "\n".join(out)


def _summary(cmd: click.Command, name: str) -> str:
    """The one-line summary for NAME, without a leading "NAME: " that would read
    "fased - fased: ..." there."""
    text = cmd.get_short_help_str(200)
    head, sep, rest = text.partition(": ")
    return rest[:1].upper() + rest[1:] if sep and head.lower() == name.lower() else text


def _pages(cmd: click.Command, path: list[str], ctx: click.Context) -> dict[str, str]:
    name = " ".join(path)
    file_name = "-".join(path) + ".1"
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines = [
        f'.TH "{"-".join(path).upper()}" "1" "" "fased {__version__}" "fased manual"',
        ".SH NAME", f"{_escape('-'.join(path))} \\- {_escape(_summary(cmd, name))}",
        ".SH SYNOPSIS", f".B {_escape(name)}", _escape(usage),
        ".SH DESCRIPTION", _help_body(cmd.help or ""),
    ]
    params = [p for p in cmd.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]
    if params:
        lines.append(".SH OPTIONS")
        for p in params:
            record = p.get_help_record(ctx)
            if record:
                lines += [".TP", f"\\fB{_escape(record[0])}\\fR", _escape(record[1])]
    pages: dict[str, str] = {}
    if isinstance(cmd, click.Group):
        subs = cmd.list_commands(ctx)
        lines.append(".SH COMMANDS")
        for sub_name in subs:
            sub = cmd.get_command(ctx, sub_name)
            lines += [".TP", f"\\fB{_escape(sub_name)}\\fR",
                      _escape(sub.get_short_help_str(200)) + f" See \\fB{'-'.join(path)}-"
                      f"{_escape(sub_name)}\\fR(1)."]
            sub_ctx = click.Context(sub, info_name=sub_name, parent=ctx)
            pages.update(_pages(sub, [*path, sub_name], sub_ctx))
    if len(path) == 1:
        lines += [".SH EXIT STATUS", EXIT_STATUS.rstrip(), ".SH ENVIRONMENT",
                  ENVIRONMENT.rstrip(), ".SH FILES",
                  ".TP\n.B ~/.fased/log/\nThe event log: append-only JSONL segments.",
                  ".TP\n.B ~/.fased/state.db\nProjections (disposable: rebuilt from the log).",
                  ".TP\n.B ~/.fased/fased.json\nConfiguration (a projection you may edit).",
                  ".TP\n.B ~/.fased/credentials.json\nSecrets (0600), never in the log."]
    else:
        lines += [".SH EXIT STATUS", f"See \\fB{path[0]}\\fR(1)."]
    lines += [".SH SEE ALSO", f"\\fB{path[0]}\\fR(1)"]
    pages[file_name] = "\n".join(lines) + "\n"
    return pages


def render_all() -> dict[str, str]:
    """{file name: roff text} for the root command and every sub-command."""
    from fased.commands.main import cli

    # the root's context settings (-h as well as --help) reach every sub-command, as they do
    # when the CLI runs
    return _pages(cli, ["fased"], click.Context(cli, info_name="fased", **cli.context_settings))


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "man")
    target.mkdir(parents=True, exist_ok=True)
    pages = render_all()
    for stale in target.glob("*.1"):
        if stale.name not in pages:
            stale.unlink()
    for name, text in pages.items():
        (target / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(pages)} man pages to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
