"""Skills installed with `fased skill install` (and removed with `fased skill remove`): where
each came from and the content hash of what was copied in, so `fased skill list` can tell a
later change to the files."""

from __future__ import annotations

import sqlite3

VERSION = 2  # 2: a git source is kept without its credentials

TABLES = {
    "skill_installs": {
        "columns": {"path": str, "name": str, "scope": str, "source": str, "kind": str,
                    "commit_id": str, "sha256": str, "installed_seq": int, "removed_seq": int},
        "pk": "path",
    },
    "skill_env": {  # names and fingerprints only: the values are in credentials.json
        "columns": {"skill": str, "variable": str, "fingerprint": str, "seq": int},
        "pk": ("skill", "variable"),
    },
}


def _installed(con: sqlite3.Connection, e: dict) -> None:
    from fased.redact import mask_url

    d = e["data"]  # fased 0.4.0 recorded a git URL with its credentials: not kept here
    con.execute("INSERT OR REPLACE INTO skill_installs(path, name, scope, source, kind,"
                " commit_id, sha256, installed_seq, removed_seq) VALUES (?,?,?,?,?,?,?,?,NULL)",
                (d["path"], d["name"], d["scope"], mask_url(d["source"]), d["kind"],
                 d.get("commit"), d["sha256"], e["seq"]))


def _removed(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE skill_installs SET removed_seq = ? WHERE path = ?",
                (e["seq"], e["data"]["path"]))


def _env_set(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    if d.get("fingerprint") is None:
        con.execute("DELETE FROM skill_env WHERE skill = ? AND variable = ?",
                    (d["skill"], d["variable"]))
        return
    con.execute("INSERT OR REPLACE INTO skill_env(skill, variable, fingerprint, seq)"
                " VALUES (?,?,?,?)", (d["skill"], d["variable"], d["fingerprint"], e["seq"]))


HANDLERS = {"skill.installed": _installed, "skill.removed": _removed,
            "skill.env_set": _env_set}
