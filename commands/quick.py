"""`fased memory search` without click: the one command with a speed target as a whole
process (<= 150 ms over 10,000 notes), of which importing click and building its command
tree is ~20 ms.

parse_search() takes only command lines it reads exactly as click does: `memory search`,
one QUERY, and --agent/-a ID, --sessions/--no-sessions, -n N, --json, each at most once.
Anything else (--help, `--`, an option it does not know, a value that starts with "-", a
global option, an idempotency key) returns None and click parses it, so click's definition
in fased.commands.memory stays the one source of the command's syntax and help. Both run
search_command() and report failures through fased.commands.failures;
tests/test_memory_quick.py runs each command line both ways and compares every byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class SearchArgs:
    query: str
    agent: str | None = None
    sessions: bool | None = None
    limit: int | None = None
    json_: bool = False


def run_quick(args: list[str]) -> int | None:
    """The exit code of `args` run here, or None when click must parse them."""
    parsed = parse_search(args)
    if parsed is None:
        return None
    from fased.commands.failures import RUN_AGAIN, App, failure_exit

    app = App(os.environ.get("FASED_HOME") or None, None, args)  # click ignores it empty
    try:
        for attempt in (1, 2):
            try:
                search_command(lambda: _store(app), parsed)
                return 0
            except (KeyboardInterrupt, Exception) as exc:
                code = failure_exit(exc, app, attempt)
                if code != RUN_AGAIN:
                    return code
        return None  # not reached: a second attempt never runs again
    finally:
        app.close()


def parse_search(args: list[str]) -> SearchArgs | None:
    """`memory search ...` as click would read it, or None (click parses it)."""
    if args[:2] != ["memory", "search"] or os.environ.get("FASED_IDEMPOTENCY_KEY") or (
            os.environ.get("_FASED_COMPLETE")):  # a shell asking click to complete a word
        return None
    found: dict[str, object] = {}
    rest = iter(args[2:])
    for arg in rest:
        if arg.startswith("--agent="):
            key, value = "agent", arg[len("--agent="):]
        elif arg in ("--agent", "-a"):
            key, value = "agent", next(rest, None)
        elif arg == "-n" or (arg.startswith("-n") and _digits(arg[2:])):
            key, value = "limit", arg[2:] or next(rest, None)
            if not _digits(value) or len(value) > 4000:
                return None  # click says what is wrong with it (past 4,300 digits int fails)
            value = int(value)
        elif arg in ("--sessions", "--no-sessions"):
            key, value = "sessions", arg == "--sessions"
        elif arg == "--json":
            key, value = "json_", True
        elif arg.startswith("-"):
            return None  # --help, `--`, `-`, and anything click alone knows
        else:
            key, value = "query", arg
        if key in found or value is None or (key == "agent" and value[:1] in ("", "-")):
            return None  # twice, missing, or a value click may read another way
        found[key] = value
    if "query" not in found:
        return None
    return SearchArgs(**found)


def _digits(text: str | None) -> bool:
    return text is not None and text.isascii() and text.isdigit()


def _store(app):
    """The store, as fased.commands.output.store() opens it for a click command: a bad
    FASED_NOW fails first, before any work."""
    from fased.timeparse import utc_now

    utc_now()
    return app.store


def search_command(open_store, args: SearchArgs) -> None:
    """Run the search and print it, the way `fased memory search` prints it."""
    from fased.agents import get_agent
    from fased.commands.output import echo_json, note, say
    from fased.memory.search import search

    st = open_store()
    con = st.db()
    agent = get_agent(con, args.agent)["id"]
    found = search(con, st.home, agent, args.query, max_results=args.limit,
                   sessions=args.sessions)
    if args.json_:
        echo_json(found.to_dict())
    elif found.hits:
        say(found.render())  # snippets of chats and notes: control sequences escaped
    else:
        note(found.nothing_found())
