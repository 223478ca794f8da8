"""`fased memory`: search what an agent wrote and what was said, offline (an FTS5 index kept
fresh on every search; optional embeddings)."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import agent_option, echo_json, json_option, note, say, store, table


@click.group(cls=FasedGroup)
def memory():
    """Search an agent's memory notes and session messages.

    Memory is MEMORY.md (or memory.md), the notes in memory/ (daily notes are
    memory/YYYY-MM-DD.md) and any memory.roots, plus the agent's session messages while
    memory.sessions.enabled is on (the default). The index (~/.fased/memory/index.db) is
    derived and disposable: every search brings it up to date first.

    \b
    Examples:
      fased memory search "deploy checklist"
      fased memory get memory/2026-03-01.md:12
      fased memory status
      fased config set memory.search.halfLifeDays 14
    """


@memory.command("search")
@click.argument("query")
@agent_option
@click.option("--sessions/--no-sessions", "sessions", default=None,
              help="Search session messages too (default: memory.sessions.enabled).")
@click.option("-n", "limit", type=int, metavar="N",
              help="How many results (default memory.search.maxResults, 6; at most 100).")
@json_option
def search(query, agent, sessions, limit, json_):
    """Notes and session messages matching QUERY, best first: BM25, with daily notes and
    messages counting less as they age (half-life memory.search.halfLifeDays, 30 days).

    Any text is a valid QUERY: quotes, operators and punctuation are not syntax. The agent's
    memory_search tool gets exactly these results.

    \b
    Examples:
      fased memory search "release notes"
      fased memory search postgres --agent ops -n 3 --json
      fased memory search "what did we decide" --no-sessions
    """
    from fased.commands.quick import SearchArgs, search_command

    search_command(store, SearchArgs(query, agent, sessions, limit, json_))


@memory.command("get")
@click.argument("target", metavar="PATH[:LINE]")
@agent_option
@click.option("--lines", "-l", type=int, metavar="N", help="How many lines (default and most "
              "200).")
@json_option
def get(target, agent, lines, json_):
    """Show a memory note (from LINE), as memory_get shows it to the agent. Only notes under
    the agent's memory roots can be shown.

    \b
    Examples:
      fased memory get MEMORY.md
      fased memory get memory/2026-03-01.md:40 --lines 20
    """
    from fased.memory.search import get as run_get

    path, start = _split_line(target)
    st = store()
    got = run_get(st.db(), st.home, _agent(st, agent), path, start, lines)
    if json_:
        echo_json(got)
        return
    if got["text"]:
        say(got["text"])
    if got["more"]:
        note(f"lines {got['from']}-{got['to']} of {got['lines_total']}; more: fased memory get "
             f"{got['path']}:{got['next']}")
    if got.get("truncated"):
        note("only the note's first 8 MiB are read (as search indexes it): lines past them "
             "are not shown")


@memory.command("status")
@agent_option
@json_option
def status(agent, json_):
    """What memory search covers: roots, notes and chunks indexed, when, and the backend.

    \b
    Examples:
      fased memory status
      fased memory status --agent ops --json
    """
    from fased.memory.search import status as run_status

    st = store()
    report = run_status(st.db(), st.home, _agent(st, agent))
    if json_:
        echo_json(report)
        return
    table([(r["path"], "yes" if r["exists"] else "no") for r in report["roots"]],
          ("ROOT", "EXISTS"))
    say(f"\nAgent {report['agent']}; backend {report['backend']}; session messages "
               f"{'on' if report['sessions'] else 'off'}; half-life "
               f"{report['half_life_days']:g} days")
    say(f"Indexed: {report['files']:,} notes, {report['chunks']:,} chunks "
               f"({report['note_chunks']:,} of notes, {report['session_chunks']:,} of "
               f"messages); last indexed {report['last_indexed'] or 'never'}")
    say(f"Index: {report['index']}")


@memory.command("index")
@agent_option
@click.option("--force", is_flag=True, help="Chunk every note and message again.")
@json_option
def index(agent, force, json_):
    """Bring the memory index up to date now (a search does this itself), after checking
    every page of it (SQLite's quick_check): an index damaged anywhere is built again, where a
    search notices damage only in what it reads.

    \b
    Examples:
      fased memory index
      fased memory index --force
    """
    from fased.memory.search import reindex

    st = store()
    done = reindex(st.db(), st.home, _agent(st, agent), force=force)
    if json_:
        echo_json(done)
        return
    say(f"Indexed agent {done['agent']}: {done['notes']:,} notes and {done['messages']:,} "
               f"messages (re)indexed; {done['files']:,} notes, {done['chunks']:,} chunks in all.")


def _agent(st, agent: str | None) -> str:
    from fased.agents import get_agent

    return get_agent(st.db(), agent)["id"]


def _split_line(target: str) -> tuple[str, int]:
    """PATH[:LINE]: a trailing :N is a line number."""
    path, sep, line = target.rpartition(":")
    number = line[1:] if line.startswith("-") else line
    if sep and path and number and number.isdigit():  # Unicode digits too ("²"): refused here
        from fased.bounds import parse_count

        if line.isascii() and int(line) < 1:
            raise click.BadParameter("the first line is 1", param_hint="'PATH[:LINE]'")
        # the index numbers the lines of a note's first 8 MiB: at most 8,388,608 of them
        return path, parse_count(line, low=1, high=2**31 - 1, what="LINE")
    return target, 1
