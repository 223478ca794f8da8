"""The `fased` console script: standard streams made safe, the quick path for the one
command that must start faster than click allows (fased.commands.quick), else the click
root (fased.commands.main). Imports neither click nor any command until it knows which."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    run(argv, quick=True)


def run(argv: list[str] | None, quick: bool) -> None:
    """Run one command line (None: sys.argv) and exit with its code. Ctrl-C outside a
    command (which says "Interrupted.") ends as click ends it: "Aborted!", exit 1."""
    _open_streams()
    try:
        try:
            args = sys.argv[1:] if argv is None else list(argv)
            if quick and args[:2] == ["memory", "search"]:
                from fased.commands.quick import run_quick

                code = run_quick(args)
                if code is not None:
                    sys.exit(code)
            from fased.commands.main import cli

            cli.main(args=argv, prog_name="fased")
        except KeyboardInterrupt:
            sys.stderr.write("\nAborted!\n")
            sys.exit(1)
    except SystemExit as done:
        local = sys.modules.get("fased.local")  # loaded only where a server may run
        if local is not None:
            local.exit_now(done.code)
        raise


class _Closed:
    """stdout when the shell closed it (`fased chat hi >&-`): Python gives None, and
    every write fails as a pipe whose reader left does, which fased already handles (a
    streamed turn ends "output closed"; a command exits 0 quietly)."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("stdout is closed")

    def write(self, text: str) -> int:
        raise BrokenPipeError("stdout is closed")

    def flush(self) -> None:
        pass


def _open_streams() -> None:
    if sys.stdout is None:
        sys.stdout = _Closed()
    elif getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        # a character the output's encoding has no bytes for (an ASCII or Latin-1 terminal,
        # a lone surrogate in a server's JSON) is shown as \uXXXX, never a crash mid-output;
        # under the C locale Python writes such bytes back as they came (surrogateescape)
        sys.stdout.reconfigure(errors="backslashreplace")
    if sys.stderr is None:  # diagnostics go nowhere, quietly
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
