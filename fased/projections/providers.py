"""The provider registry, how each authenticates (never the secret: only the names of the
headers, query parameters and userinfo kept in credentials.json), its model catalog, and
agents' model refs."""

from __future__ import annotations

import json
import sqlite3

from fased.projections.agents import set_agent_models

VERSION = 3

TABLES = {
    "providers": {
        "columns": {
            "id": str, "kind": str, "base_url": str, "headers": str, "secret_headers": str,
            "secret_query": str, "secret_userinfo": int, "account_id": str, "detected": int,
            "created_at": str, "removed": int,
            "credential_kind": str, "credential_fingerprint": str, "credential_env": str,
            "credential_command": str, "credential_set_at": str,
            "models": str, "models_fetched_at": str, "models_error": str,
            "model_path": str,
        },
        "pk": "id",
        "defaults": {"removed": 0, "detected": 0, "headers": "{}", "secret_headers": "[]",
                     "secret_query": "[]", "secret_userinfo": 0},
    },
}


def _added(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO providers(id, kind, base_url, headers, secret_headers, secret_query,"
        " secret_userinfo, account_id, detected, created_at, model_path, removed)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,0) ON CONFLICT(id) DO UPDATE SET"
        " kind = excluded.kind, base_url = excluded.base_url, headers = excluded.headers,"
        " secret_headers = excluded.secret_headers, secret_query = excluded.secret_query,"
        " secret_userinfo = excluded.secret_userinfo, account_id = excluded.account_id,"
        " detected = excluded.detected, created_at = excluded.created_at,"
        " model_path = excluded.model_path, removed = 0,"
        " models = NULL, models_fetched_at = NULL, models_error = NULL",
        (d["provider"], d["kind"], d["base_url"], json.dumps(d.get("headers") or {}),
         json.dumps(d.get("secret_headers") or []), json.dumps(d.get("secret_query") or []),
         int(bool(d.get("secret_userinfo"))), d.get("account_id"),
         int(bool(d.get("detected"))), e["ts"], d.get("model_path")),
    )


def _updated(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    changed = {"kind": d.get("kind"), "base_url": d.get("base_url"),
               "account_id": d.get("account_id")}
    columns = {k: v for k, v in changed.items() if k in d}
    for key in ("headers", "secret_headers", "secret_query"):
        if key in d:
            columns[key] = json.dumps(d[key])
    if "secret_userinfo" in d:
        columns["secret_userinfo"] = int(bool(d["secret_userinfo"]))
    if "kind" in d or "base_url" in d:
        # another server (or another API to it): its catalog is not known yet
        columns.update(models=None, models_fetched_at=None, models_error=None)
    if not columns:
        return
    con.execute(f"UPDATE providers SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?",
                (*columns.values(), d["provider"]))


def _removed(con: sqlite3.Connection, e: dict) -> None:
    # Removing a provider deletes its stored secrets, so a re-added one starts unauthenticated.
    con.execute(
        "UPDATE providers SET removed = 1, credential_kind = NULL, credential_fingerprint = NULL,"
        " credential_env = NULL, credential_command = NULL WHERE id = ?",
        (e["data"]["provider"],))


def _credential_set(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "UPDATE providers SET credential_kind = ?, credential_fingerprint = ?, credential_env = ?,"
        " credential_command = ?, credential_set_at = ? WHERE id = ?",
        (d["kind"], d.get("fingerprint"), d.get("env"), d.get("command"), e["ts"], d["provider"]),
    )


def _credential_removed(con: sqlite3.Connection, e: dict) -> None:
    con.execute(
        "UPDATE providers SET credential_kind = NULL, credential_fingerprint = NULL,"
        " credential_env = NULL, credential_command = NULL, credential_set_at = ? WHERE id = ?",
        (e["ts"], e["data"]["provider"]),
    )


def _catalog(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    if d.get("error"):
        # A failed fetch keeps the last good catalog (and its time); only the error is new.
        con.execute("UPDATE providers SET models_error = ? WHERE id = ?",
                    (d["error"], d["provider"]))
        return
    con.execute("UPDATE providers SET models = ?, models_fetched_at = ?, models_error = NULL"
                " WHERE id = ?", (json.dumps(d["models"]), e["ts"], d["provider"]))


def _models_set(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    set_agent_models(con, d["agent"], e["ts"], primary=d.get("primary", ...),
                     fallbacks=d.get("fallbacks", ...), task=d.get("task", ...))


HANDLERS = {
    "provider.added": _added,
    "provider.updated": _updated,
    "provider.removed": _removed,
    "credential.set": _credential_set,
    "credential.removed": _credential_removed,
    "models.catalog_fetched": _catalog,
    "agent.models_set": _models_set,
}
