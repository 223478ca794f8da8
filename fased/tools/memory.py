"""The memory tools: memory_search and memory_get (group:memory). They call the same
functions as `fased memory search|get` (fased.memory.search), so the agent finds what the
user finds. The agent writes memory with write and edit on the notes themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fased.errors import FasedError
from fased.tools.base import ToolContext, ToolError, ToolResult, ToolSpec, schema
from fased.tools.fileio import checked

if TYPE_CHECKING:
    import sqlite3

SEARCH_PARAMS = schema({
    "query": {"type": "string", "minLength": 1,
              "description": "Words to look for in memory notes and past session messages."},
    "maxResults": {"type": "integer", "minimum": 1, "maximum": 100,
                   "description": "How many results at most (default memory.search.maxResults, "
                                  "6)."},
    "minScore": {"type": "number", "minimum": 0,
                 "description": "Leave out results scoring below this."},
}, ["query"])

GET_PARAMS = schema({
    "path": {"type": "string", "minLength": 1,
             "description": "A memory note, as memory_search shows it (MEMORY.md, "
                            "memory/2026-03-01.md)."},
    "from": {"type": "integer", "minimum": 1, "description": "First line (default 1)."},
    "lines": {"type": "integer", "minimum": 1, "description": "How many lines (most 200)."},
}, ["path"])


@contextlib.contextmanager
def _state(ctx: ToolContext) -> Iterator[sqlite3.Connection]:
    """state.db, up to date, for one call: closed (with the log's files) when it returns, so
    a long `fased run` holds nothing open between calls."""
    from fased.store import Store

    store = Store(ctx.home, command="memory tool")
    try:
        yield store.db(check_files=False)
    finally:
        store.close()


def memory_search(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Search the agent's memory notes and session messages."""
    from fased.memory.search import search

    checked(args, SEARCH_PARAMS)
    try:
        with _state(ctx) as con:
            found = search(con, ctx.home, ctx.agent, args["query"],
                           max_results=args.get("maxResults"), min_score=args.get("minScore"))
    except FasedError as exc:
        raise ToolError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    return ToolResult(found.render(), data=found.to_dict())


def memory_get(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Lines of one memory note."""
    from fased.memory.search import get

    checked(args, GET_PARAMS)
    try:
        with _state(ctx) as con:
            got = get(con, ctx.home, ctx.agent, args["path"], int(args.get("from", 1)),
                      args.get("lines"))
    except FasedError as exc:
        raise ToolError(exc.message) from None
    text = got["text"]
    if got["more"]:
        text += (f"\n[... lines {got['from']}-{got['to']} of {got['lines_total']} shown; use "
                 f"from={got['next']} to continue]")
    if got.get("truncated"):
        text += "\n[only the note's first 8 MiB are read: lines past them are not shown]"
    return ToolResult(text, data={k: v for k, v in got.items() if k != "text"})


TOOLS = (
    ToolSpec("memory_search", "Search your memory: MEMORY.md, the notes in memory/ and what "
             "was said in past sessions. Results name the note and lines (read them whole "
             "with memory_get) or the session and turn, with a date and a score.",
             SEARCH_PARAMS, "group:memory", memory_search, side_effects=False),
    ToolSpec("memory_get", "Read lines of a memory note (MEMORY.md or memory/*.md), e.g. one "
             "that memory_search found.", GET_PARAMS, "group:memory", memory_get,
             side_effects=False),
)
