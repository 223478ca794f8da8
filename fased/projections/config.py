"""The config document behind fased.json, and the file itself.

Changes to `agents.list[N]....` are routed to the agent they name (by id, recorded in the
event), so `fased config set agents.list[0].workspace X`, a hand edit of the same key and
`fased agent ...` commands all change the same state.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from fased.bounds import TooLargeError
from fased.config import (
    config_path,
    dump,
    file_fingerprint,
    fingerprint,
    parse_path,
    read_config,
    render,
    set_path,
    sha256,
    unset_path,
)
from fased.errors import StateError
from fased.projections.agents import set_agent_models, set_kv

VERSION = 1

TABLES = {"config": {"columns": {"id": int, "doc": str}, "pk": "id"}}

# events whose effects show in fased.json
FILE_PREFIXES = ("agent.", "config.", "models.")


def _load(con: sqlite3.Connection) -> dict:
    row = con.execute("SELECT doc FROM config WHERE id = 1").fetchone()
    return json.loads(row[0]) if row else {}


def _store(con: sqlite3.Connection, doc: dict) -> None:
    con.execute("INSERT INTO config(id, doc) VALUES (1, ?) "
                "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc", (json.dumps(doc),))


def apply_change(con: sqlite3.Connection, change: dict, ts: str) -> None:
    """Apply one set/unset change to the config document or to the agent it names."""
    parts = parse_path(change["path"])
    value = change.get("value")
    unset = change["op"] == "unset"
    if parts[:2] == ["agents", "list"] and len(parts) > 3 and change.get("agent"):
        _apply_agent(con, change["agent"], parts[3:], None if unset else value, unset, ts)
        return
    doc = _load(con)
    if unset:
        unset_path(doc, parts)
    else:
        set_path(doc, parts, value)
    _store(con, doc)


def _apply_agent(con, agent: str, sub: list, value, unset: bool, ts: str) -> None:
    key = ".".join(str(p) for p in sub)
    if key in ("name", "identity.name"):
        if not unset:
            con.execute("UPDATE agents SET name = ?, updated_at = ? WHERE id = ?",
                        (value, ts, agent))
    elif key == "workspace":
        con.execute("UPDATE agents SET workspace = ?, updated_at = ? WHERE id = ?",
                    (value, ts, agent))
    elif key == "identity.emoji":
        con.execute("UPDATE agents SET emoji = ?, updated_at = ? WHERE id = ?", (value, ts, agent))
    elif key == "identity":
        value = value or {}
        if value.get("name"):
            con.execute("UPDATE agents SET name = ? WHERE id = ?", (value["name"], agent))
        con.execute("UPDATE agents SET emoji = ?, updated_at = ? WHERE id = ?",
                    (value.get("emoji"), ts, agent))
    elif key == "default":
        if value is True:
            set_kv(con, "selected_agent", agent)
    elif key == "model":
        if isinstance(value, str):
            set_agent_models(con, agent, ts, primary=value)
        else:
            value = value or {}
            set_agent_models(con, agent, ts, primary=value.get("primary"),
                             fallbacks=value.get("fallbacks") or [], task=value.get("task"))
    elif key == "model.primary":
        set_agent_models(con, agent, ts, primary=value)
    elif key == "model.fallbacks":
        set_agent_models(con, agent, ts, fallbacks=value or [])
    elif key == "model.task":
        set_agent_models(con, agent, ts, task=value)
    else:
        row = con.execute("SELECT config FROM agents WHERE id = ?", (agent,)).fetchone()
        doc = json.loads(row[0] or "{}") if row else {}
        if unset:
            unset_path(doc, sub)
        else:
            set_path(doc, sub, value)
        con.execute("UPDATE agents SET config = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(doc), ts, agent))


def _set(con: sqlite3.Connection, e: dict) -> None:
    apply_change(con, {"op": "set", **e["data"]}, e["ts"])


def _unset(con: sqlite3.Connection, e: dict) -> None:
    apply_change(con, {"op": "unset", **e["data"]}, e["ts"])


def _edited(con: sqlite3.Connection, e: dict) -> None:
    for change in e["data"]["changes"]:
        apply_change(con, change, e["ts"])


HANDLERS = {"config.set": _set, "config.unset": _unset, "config.edited": _edited}


# -- the file ---------------------------------------------------------------------------------

def write_file(con: sqlite3.Connection, home: Path, force: bool = False) -> bool:
    """Render fased.json and write it when it differs (or is missing). Returns True if written."""
    data = dump(render(con))
    path = config_path(home)
    if not force and not path.exists() and _stored_sha(con) is None:
        return False  # no fased.json yet: `fased setup` creates it
    if _read_upto(path, len(data)) == data:
        _remember(con, data)
        return False
    from fased.home import write_private

    write_private(path, data)
    _remember(con, data)
    return True


def _read(path: Path, limit: int | None = None) -> bytes | None:
    """fased.json's bytes (None when missing); a clear StateError when it is no file."""
    try:
        return read_config(path, limit)
    except StateError as exc:
        raise StateError(exc.message, hint="move it away: the next command writes fased.json "
                         "again from the log") from None


def _read_upto(path: Path, size: int) -> bytes | None:
    """The file when it is at most `size` bytes (None when missing or larger)."""
    try:
        return _read(path, size)
    except TooLargeError:
        return None


def _stored_sha(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key = 'config_sha'").fetchone()
    return row[0] if row else None


def _remember(con: sqlite3.Connection, data: bytes) -> None:
    con.execute("INSERT INTO meta(key, value) VALUES ('config_sha', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (fingerprint(data),))


def sync_files(con: sqlite3.Connection, home: Path, events: list[dict]) -> None:
    if any(e["type"].startswith(FILE_PREFIXES) for e in events):
        write_file(con, home)


def rebuild_files(con: sqlite3.Connection, home: Path) -> None:
    """Regenerate fased.json, unless it holds a hand edit the log does not have yet (a rebuild
    forgets which file fased wrote): the next command records that edit or names its error."""
    path = config_path(home)
    rendered = render(con)
    expected = dump(rendered)
    try:
        data = _read(path, len(expected))
    except TooLargeError:
        return  # larger than fased would write it: a hand edit
    if data is not None and data != expected:
        return
    write_file(con, home, force=data is not None or bool(rendered))


def pending_edit(con: sqlite3.Connection, home: Path) -> tuple[list[dict], str] | None:
    """A hand edit of fased.json not yet in the log: (changes, sha), or None.

    Raises UsageError (naming the line) when the edited file is invalid.
    """
    from fased.config import diff, parse_file

    path = config_path(home)
    stored = _stored_sha(con)
    try:
        data = _read(path)
    except TooLargeError as exc:
        if stored is not None and file_fingerprint(path, stored) == stored:
            return None  # fased wrote it this large itself (many agents)
        raise TooLargeError(exc.message, hint="fix the file (nothing was recorded)") from None
    if data is None:
        if stored is not None:
            write_file(con, home, force=True)  # deleted by hand: a projection comes back
        return None
    if fingerprint(data) == stored:
        return None
    changes = diff(render(con), parse_file(data))
    if not changes:
        _remember(con, data)  # only formatting changed: nothing to record
        return None
    return changes, sha256(data)


def check_files(store, con: sqlite3.Connection) -> None:
    """Record a hand edit of fased.json as a config.edited event, once, under the lock."""
    if pending_edit(con, store.home) is None:
        return
    from fased.store import Draft

    with store.log.locked():
        con = store.db(check_files=False)
        found = pending_edit(con, store.home)  # another command may have recorded it meanwhile
        if found is not None:
            changes, digest = found
            store.append_internal(
                [Draft("config.edited", "config", {"changes": changes, "sha256": digest})])
