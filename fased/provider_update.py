"""`providers set`: change a registered provider's kind, base URL, headers or account id.

Validated exactly as `providers add` validates (models.provider_endpoint), with the same
split of secrets: what is secret goes to credentials.json, the log names it. The event,
provider.updated, holds only what changed; a change that changes nothing writes nothing.
"""

from __future__ import annotations

import json
import sqlite3

from fased.errors import UsageError
from fased.models import (
    DEFAULT_URLS,
    check_kind,
    get_provider,
    load_credentials,
    provider_endpoint,
)
from fased.redact import header_is_secret, mask_url
from fased.store import Draft, Store

NONE, REMOVED, SECRET = "(none)", "(removed)", "(secret)"
STORED = "(secret, in credentials.json)"


def update_draft(con: sqlite3.Connection, home, provider: str, *, kind: str | None = None,
                 base_url: str | None = None, headers: dict[str, str] | None = None,
                 remove_headers: tuple[str, ...] = (), account_id: str | None = None,
                 ) -> tuple[Draft | None, dict, list[str]]:
    """The provider.updated draft (None when nothing would change), the credentials.json
    parts to replace (as store_provider_secrets takes them), and one line per change."""
    headers = headers or {}
    row = get_provider(con, provider)
    stored = load_credentials(home)["providers"].get(provider, {})
    old_kind, old_account = row["kind"], row["account_id"]
    new_kind = kind or old_kind
    check_kind(new_kind)
    if ("local" in (new_kind, old_kind) and new_kind != old_kind) or (
            old_kind == "local" and (base_url is not None or headers or remove_headers)):
        raise UsageError(f"provider {provider}: kind local runs a GGUF file in fased's own "
                         "server, not an endpoint to change",
                         hint=f"remove it and add it again: fased agent models providers "
                         f"remove {provider}")
    new_account = account_id if account_id is not None else old_account
    changes: list[str] = []
    data: dict = {"provider": provider}
    secrets: dict = {}

    url = base_url
    if url is None and new_kind == "cloudflare" and new_account != old_account:
        url = DEFAULT_URLS["cloudflare"].format(account_id=new_account)
    if url is not None or new_kind != old_kind:
        # an unchanged URL is checked again against a new kind (Ollama's native API, no /v1)
        checked, taken = provider_endpoint(
            new_kind, url if url is not None else row["base_url"], {}, new_account)
        if url is not None:
            _url_changes(row, stored, checked, taken, data, secrets, changes)
    if new_kind != old_kind:
        data["kind"] = new_kind
        changes.insert(0, f"kind: {old_kind} -> {new_kind}")
    if new_account != old_account:
        data["account_id"] = new_account
        changes.append(f"account id: {old_account or NONE} -> {new_account or NONE}")
    _header_changes(row, stored, headers, remove_headers, data, secrets, changes)
    if not changes:
        return None, {}, []
    return Draft("provider.updated", f"provider:{provider}", data), secrets, changes


def _url_changes(row, stored: dict, checked: dict, taken: dict, data: dict, secrets: dict,
                 changes: list[str]) -> None:
    old_query = json.loads(row["secret_query"] or "[]")
    new_query = list(taken.get("query") or {})
    old_userinfo, new_userinfo = stored.get("userinfo"), taken.get("userinfo")
    if checked["base_url"] != row["base_url"]:
        data["base_url"] = checked["base_url"]
        changes.append(f"base URL: {mask_url(row['base_url'])} -> "
                       f"{mask_url(checked['base_url'])}")
    if new_userinfo != old_userinfo or bool(new_userinfo) != bool(row["secret_userinfo"]):
        data["secret_userinfo"] = bool(new_userinfo)
        changes.append(f"base URL userinfo: {SECRET if row['secret_userinfo'] else NONE} -> "
                       f"{STORED if new_userinfo else REMOVED}")
    old_values = stored.get("query") or {}
    if new_query != old_query or (taken.get("query") or {}) != old_values:
        data["secret_query"] = new_query
        for name in [*new_query, *(n for n in old_query if n not in new_query)]:
            if name not in new_query:
                changes.append(f"base URL query {name}: {SECRET} -> {REMOVED}")
            elif name not in old_query or taken["query"][name] != old_values.get(name):
                changes.append(f"base URL query {name}: "
                               f"{SECRET if name in old_query else NONE} -> {STORED}")
    secrets["userinfo"] = new_userinfo
    secrets["query"] = taken.get("query")


def _header_changes(row, stored: dict, headers: dict[str, str], remove: tuple[str, ...],
                    data: dict, secrets: dict, changes: list[str]) -> None:
    plain = dict(json.loads(row["headers"] or "{}"))
    secret_names = list(json.loads(row["secret_headers"] or "[]"))
    values = dict(stored.get("headers") or {})
    known = {name.lower(): name for name in [*plain, *secret_names]}
    given = {name.lower(): name for name in headers}
    for name in remove:
        if name.lower() in given:
            raise UsageError(f"--header {given[name.lower()]} and --remove-header {name} name "
                             "the same header")
        if name.lower() not in known:
            raise UsageError(f"provider {row['id']} has no header {name}",
                             hint="headers: " + (", ".join(known.values()) or "none"))

    def shown(old: str | None) -> str:
        # an older fased logged values that are secret by today's rules: never printed
        if old is None:
            return NONE
        return SECRET if old in secret_names or header_is_secret(old) else plain[old]

    lines: list[str] = []
    set_anew: list[str] = []
    for name, value in headers.items():
        old, secret = known.get(name.lower()), header_is_secret(name)
        if old == name and (values.get(name) == value if name in secret_names else
                            not secret and plain.get(name) == value):
            continue
        lines.append(f"header {name}: {shown(old)} -> {STORED if secret else value}")
        if old == name and name in plain and not secret:
            plain[name] = value  # keeps its place
            continue
        _drop(old, plain, secret_names, values)
        if secret:
            secret_names.append(name)
            values[name] = value
            set_anew.append(name)
        else:
            plain[name] = value
    for name in remove:
        old = known[name.lower()]
        lines.append(f"header {old}: {shown(old)} -> {REMOVED}")
        _drop(old, plain, secret_names, values)
    if not lines:
        return
    changes.extend(lines)
    data["headers"] = plain
    data["secret_headers"] = sorted(secret_names)
    if set_anew:
        data["secret_headers_set"] = set_anew
    secrets["headers"] = values


def _drop(name: str | None, plain: dict, secret_names: list[str], values: dict) -> None:
    if name is None:
        return
    plain.pop(name, None)
    if name in secret_names:
        secret_names.remove(name)
    values.pop(name, None)


def update_provider(store: Store, provider: str, **changes) -> list[str]:
    """Apply `providers set`: append provider.updated and keep its secrets; returns the
    lines that say what changed (none: nothing was written)."""
    from fased.models import store_provider_secrets

    found: list[tuple[dict, list[str]]] = []

    def decide(con):
        draft, secrets, lines = update_draft(con, store.home, provider, **changes)
        found.append((secrets, lines))
        return [draft] if draft is not None else []

    store.transact(decide)
    if not found:  # an idempotent replay of a command that already ran
        return []
    secrets, lines = found[-1]
    if secrets:
        store_provider_secrets(store, provider, secrets, parts=tuple(secrets))
    return lines
