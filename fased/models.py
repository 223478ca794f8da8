"""Providers, credentials and model refs: the registry behind `fased agent models ...`.

Secrets live only in `credentials.json` (0600, written atomically under the log lock): API
keys, the values of headers not known to be harmless, and the userinfo and secret query
values of base URLs (fased.redact says which). The log records how a provider authenticates,
an 8-hex fingerprint, and the names of the secrets it holds. `--env VAR` and `--command`
credentials are resolved at call time and never stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fased.errors import ConflictError, FasedError, NotFoundError, UsageError
from fased.redact import header_is_secret, literal_secret, mask_url, mask_urls, query_is_secret
from fased.store import Draft, Store

PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
    "lmstudio": "http://localhost:1234/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "litellm": "http://localhost:4000",
    "cloudflare": "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
    # the embedded server listens on a loopback port it picks when it starts
    "local": "http://127.0.0.1",
}
KINDS = ("openai-compatible", "openai", "openrouter", "anthropic", "ollama", "lmstudio", "vllm",
         "litellm", "cloudflare", "local")
HOSTED = ("openai", "openrouter", "anthropic", "cloudflare")
KEY_ENV = {"openai": "OPENAI_API_KEY", "openrouter": "OPENROUTER_API_KEY",
           "anthropic": "ANTHROPIC_API_KEY", "cloudflare": "CLOUDFLARE_API_TOKEN"}
CREDENTIALS = "credentials.json"


# -- providers --------------------------------------------------------------------------------

def check_base_url(kind: str, url: str) -> str:
    """A base URL (fased.bounds.parse_url: http(s), a host, a valid port); Ollama's native
    API must not end in /v1."""
    from fased.bounds import parse_url

    clean = parse_url(url, "base URL").rstrip("/")
    parts = urlsplit(clean)
    if kind == "ollama" and parts.path.rstrip("/").endswith("/v1"):
        raise UsageError(
            f"{url} ends in /v1, but kind ollama speaks Ollama's native API (/api/chat)",
            hint=f"use {clean[:-3]} for kind ollama, or add it with --kind openai-compatible "
            "to use Ollama's OpenAI-compatible /v1 endpoint")
    return clean


def split_url_credentials(url: str) -> tuple[str, dict]:
    """A checked base URL without its credentials, and what was taken out of it for
    credentials.json: {"userinfo": "user:password", "query": {name: value}}, as present.

    Harmless query parameters (api-version) stay in the URL; a fragment is dropped (it is
    never sent to a server).
    """
    from urllib.parse import unquote_plus, urlencode, urlunsplit

    parts = urlsplit(url)
    if "@" in parts.path:
        raise UsageError(f"base URL {mask_url(url)} has an '@' after its host",
                         hint="write a '/' in a user name or password as %2F")
    secrets: dict = {}
    userinfo, at, netloc = parts.netloc.rpartition("@")
    if not at:
        netloc = parts.netloc
    elif userinfo:
        secrets["userinfo"] = userinfo
    kept, query = [], {}
    for item in filter(None, parts.query.split("&")):
        raw_name, eq, raw_value = item.partition("=")
        name, value = unquote_plus(raw_name), unquote_plus(raw_value)
        if not eq:
            raise UsageError(f"the query of base URL {mask_url(url)} is not NAME=VALUE pairs",
                             hint="write the query as NAME=VALUE&NAME=VALUE")
        if not query_is_secret(name):
            kept.append((name, value))
        elif name in query:
            raise UsageError(f"query parameter {name!r} appears twice in base URL "
                             f"{mask_url(url)}")
        else:
            query[name] = value
    if query:
        secrets["query"] = query
    clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), urlencode(kept), ""))
    return clean, secrets


def join_url_credentials(url: str, secrets: dict) -> tuple[str, dict[str, str]]:
    """The URL a client sends to (userinfo put back) and the query parameters it adds to
    every request, from a recorded base URL and its credentials.json entry. URLs that an
    older fased recorded with their credentials still in them work as they are."""
    from urllib.parse import parse_qsl, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if secrets.get("userinfo") and "@" not in netloc:
        netloc = f"{secrets['userinfo']}@{netloc}"
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params.update(secrets.get("query") or {})
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), params


def provider_draft(con: sqlite3.Connection, provider: str, kind: str, base_url: str | None,
                   headers: dict[str, str], account_id: str | None,
                   detected: bool = False, model_path: str | None = None) -> tuple[Draft, dict]:
    """The provider.added draft, and what must go to credentials.json: the secret header
    values and the base URL's credentials (see store_provider_secrets). Kind local runs the
    GGUF file at `model_path` (and only it takes one)."""
    from fased.bounds import check_utf8

    if not PROVIDER_ID.match(check_utf8(provider)):
        raise UsageError(f"invalid provider id {provider!r}",
                         hint="lower-case letters, digits, '-' and '_'")
    check_kind(kind)
    row = con.execute("SELECT removed FROM providers WHERE id = ?", (provider,)).fetchone()
    if row is not None and not row[0]:
        raise ConflictError(f"provider {provider!r} is already registered",
                            hint=f"change it with `fased agent models providers set {provider}`, "
                            f"or remove it first: fased agent models providers remove {provider}")
    if (kind == "local") != (model_path is not None):
        raise UsageError("kind local needs --model-path FILE.gguf" if kind == "local" else
                         "--model-path is for kind local only")
    if kind == "local" and (base_url or headers or account_id):
        raise UsageError("kind local runs its own server: it takes no --base-url, --header "
                         "or --account-id")
    data, secrets = provider_endpoint(kind, base_url, headers, account_id)
    data = {"provider": provider, **data}
    if model_path is not None:
        from fased.local import check_gguf

        data["model_path"] = str(check_gguf(model_path))
        check_local_ref(provider, data["model_path"])
    if detected:
        data["detected"] = True
    return Draft("provider.added", f"provider:{provider}", data), secrets


def check_local_ref(provider: str, model_path: str) -> None:
    """A kind-local provider serves one model, `provider/NAME` (NAME: its file's name): one
    past REF_CHARS could never be set, so the provider is not added at all."""
    ref = f"{provider}/{local_model_name(model_path)}"
    if len(ref) > REF_CHARS:
        raise UsageError(f"its one model ref, {ref}, would be {len(ref):,} characters; the "
                         f"limit is {REF_CHARS}",
                         hint="give the file a shorter name (a link to it will do), or the "
                         "provider a shorter id")


ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_account_id(account_id: str) -> str:
    """A Cloudflare account id (32 hex characters on the dashboard): it goes into the URL's
    path, so a '?', '#' or '/' would change where requests go."""
    from fased.bounds import check_utf8

    if not ACCOUNT_ID.fullmatch(check_utf8(account_id)):
        raise UsageError(f"invalid Cloudflare account id {account_id!r}",
                         hint="letters, digits, '-' and '_' (at most 64): the 32-character "
                         "id on the Cloudflare dashboard")
    return account_id


def check_kind(kind: str) -> None:
    from fased.bounds import check_utf8

    if check_utf8(kind) not in KINDS:
        raise UsageError(f"unknown provider kind {kind!r}", hint="one of: " + ", ".join(KINDS))


def provider_endpoint(kind: str, base_url: str | None, headers: dict[str, str],
                      account_id: str | None) -> tuple[dict, dict]:
    """A provider's kind, checked base URL (the kind's default when None) and headers as
    provider.added records them, and the secrets taken out for credentials.json."""
    if account_id is not None:
        check_account_id(account_id)
    if base_url is None:
        if kind == "openai-compatible":
            raise UsageError("kind openai-compatible needs --base-url",
                             hint="e.g. --base-url http://127.0.0.1:30000/v1 (SGLang)")
        base_url = DEFAULT_URLS[kind]
        if kind == "cloudflare":
            if not account_id:
                raise UsageError("kind cloudflare needs --account-id")
            base_url = base_url.format(account_id=account_id)
    try:
        base_url = check_base_url(kind, base_url)
    except UsageError as exc:
        # Its message and hint quote the URL: never with the credentials in it.
        raise UsageError(mask_urls(exc.message),
                         hint=mask_urls(exc.hint) if exc.hint else None) from None
    base_url, secrets = split_url_credentials(base_url)
    plain = {k: v for k, v in headers.items() if not header_is_secret(k)}
    secret = {k: v for k, v in headers.items() if header_is_secret(k)}
    data: dict = {"kind": kind, "base_url": base_url}
    if plain:
        data["headers"] = plain
    if secret:
        data["secret_headers"] = sorted(secret)
        secrets["headers"] = secret
    if "userinfo" in secrets:
        data["secret_userinfo"] = True
    if "query" in secrets:
        data["secret_query"] = list(secrets["query"])
    if account_id:
        data["account_id"] = account_id
    return data, secrets


def providers(con: sqlite3.Connection) -> list[sqlite3.Row]:
    return list(con.execute("SELECT * FROM providers WHERE removed = 0 ORDER BY created_at, id"))


def get_provider(con: sqlite3.Connection, provider: str) -> sqlite3.Row:
    row = con.execute("SELECT * FROM providers WHERE id = ? AND removed = 0",
                      (provider,)).fetchone()
    if row is None:
        known = [r["id"] for r in providers(con)]
        raise NotFoundError(
            f"no provider {provider!r}",
            hint=("registered providers: " + ", ".join(known)) if known else
            "add one: fased agent models providers add ollama (or run `fased setup`)")
    return row


# -- model refs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRef:
    """A resolved model ref: provider id and the model id the provider knows."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


def aliases(con: sqlite3.Connection) -> dict[str, str]:
    from fased.config import config_doc

    return config_doc(con).get("models", {}).get("aliases", {})


def default_provider(con: sqlite3.Connection) -> str | None:
    from fased.config import config_doc

    chosen = config_doc(con).get("models", {}).get("defaultProvider")
    if chosen:
        return chosen
    registered = [r["id"] for r in providers(con)]
    return registered[0] if len(registered) == 1 else None


REF_CHARS = 300  # a model ref: provider id (64) and a model name servers give (~100)


def check_ref_text(ref: str, what: str = "model ref") -> str:
    """A model ref as text, stripped: one line of printable text (it goes into refs, tables
    and every message that names the model), at most REF_CHARS characters."""
    from fased.bounds import has_control

    text = ref.strip()
    if not text:
        raise UsageError(f"empty {what}", hint="use provider/model")
    if has_control(text):
        raise UsageError(f"{what} {text!r} holds a control character",
                         hint="a model ref is provider/model on one line of printable text")
    if len(text) > REF_CHARS:
        raise UsageError(f"{what} {text!r} is {len(text):,} characters; the limit is "
                         f"{REF_CHARS}")
    return text


def parse_model_ref(con: sqlite3.Connection, ref: str) -> ModelRef:
    """`provider/model` split on the first `/`; a bare name is an alias, else a model of the
    default provider. Errors list what is registered."""
    text = check_ref_text(ref)
    registered = [r["id"] for r in providers(con)]
    listing = ", ".join(registered) if registered else "none yet"
    if "/" not in text:
        alias = aliases(con).get(text)
        if alias is not None:
            return parse_model_ref(con, alias) if alias != text else ModelRef("", text)
        provider = default_provider(con)
        if provider is None:
            raise UsageError(
                f"{text!r} is not an alias and there is no default provider",
                hint=f"write provider/model (registered providers: {listing}), or set "
                "models.defaultProvider")
        if provider not in registered:
            raise UsageError(
                f"models.defaultProvider is {provider!r}, which is not a registered provider "
                f"(registered: {listing})",
                hint="write provider/model, or `fased config set models.defaultProvider ID`")
        return _served(con, ModelRef(provider, text), text)
    provider, model = text.split("/", 1)
    if not model:
        raise UsageError(f"model ref {text!r} names no model", hint="use provider/model")
    if provider not in registered:
        raise UsageError(
            f"unknown provider {provider!r} in model ref {text!r} (registered: {listing})",
            hint=_add_provider_hint(provider) if provider in KINDS else
            "if the model id itself contains '/', put its provider first, e.g. "
            f"openrouter/{text}; add providers with `fased agent models providers add`")
    return _served(con, ModelRef(provider, model), text)


def _served(con: sqlite3.Connection, ref: ModelRef, text: str) -> ModelRef:
    """`ref`, unless its provider is a GGUF file (kind local) that holds another model: the
    file answers whatever name a request gives, so a typo would be answered and recorded
    under a model that never ran."""
    row = con.execute("SELECT kind, model_path FROM providers WHERE id = ? AND removed = 0",
                      (ref.provider,)).fetchone()
    if row is None or row["kind"] != "local" or not row["model_path"]:
        return ref
    served = local_model_name(row["model_path"])
    if ref.model != served:
        raise UsageError(
            f"provider {ref.provider} runs one model, {served} (its file "
            f"{Path(row['model_path']).name}); {text!r} names another",
            hint=f"use {ref.provider}/{served}; another GGUF file is another provider: "
            "`fased agent models providers add NAME --kind local --model-path FILE`")
    return ref


def _add_provider_hint(kind: str) -> str:
    """The whole step that registers a provider of a known kind."""
    steps = f"`fased agent models providers add {kind}`"
    if kind in HOSTED:
        steps += f", then `fased agent models auth {kind}` (paste the key)"
    elif kind != "openai-compatible":
        steps += " (or `fased agent models providers detect`)"
    return f"add it first: {steps}, and run this again"


def check_ref_for_agent(con: sqlite3.Connection, ref: str) -> str:
    """Validate a ref now and return it in `provider/model` form (what the agent stores)."""
    return str(parse_model_ref(con, ref))


def check_not_the_primary(agent: str, fallback: str, primary: str | None) -> None:
    """A fallback is tried after the primary failed: the same model again would be no
    fallback at all."""
    if fallback == primary:
        raise UsageError(f"{fallback} is agent {agent}'s primary model; a fallback must be "
                         "another model")


def check_not_a_fallback(agent: str, primary: str, fallbacks: list[str]) -> None:
    """A new primary that is already one of the agent's fallbacks would be its own fallback."""
    if primary in fallbacks:
        raise UsageError(f"{primary} is a fallback of agent {agent}; the primary must be "
                         "another model",
                         hint=f"`fased agent models fallback remove {primary}` first")


def catalog_note(con: sqlite3.Connection, ref: ModelRef) -> str | None:
    """A warning when the provider's fetched catalog does not list the model."""
    row = get_provider(con, ref.provider)
    if row["models"] is None:
        return None
    if ref.model not in json.loads(row["models"]):
        return (f"note: {ref.provider} did not list {ref.model!r} when its models were last "
                f"fetched ({row['models_fetched_at'][:16]}); `fased agent models list --refresh`")
    return None


# -- credentials ------------------------------------------------------------------------------

def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def load_credentials(home: Path) -> dict:
    from fased.bounds import CONFIG_FILE_BYTES, read_bounded

    try:
        data = json.loads(read_bounded(home / CREDENTIALS, CONFIG_FILE_BYTES))
    except FileNotFoundError:
        return {"version": 1, "providers": {}}
    except (ValueError, RecursionError):
        raise FasedError(f"{home / CREDENTIALS} is not valid JSON",
                         hint="fix or remove it, then sign in again") from None
    data.setdefault("providers", {})
    return data


def known_secrets(con: sqlite3.Connection, home: Path,
                  environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret fased knows of: each string credentials.json holds (keys, secret
    headers, URL credentials, skill secrets, channel tokens), and the values of the
    variables providers read keys from (a provider's `auth --env` variable, a kind's
    default like OPENAI_API_KEY). No tool is given one, and a tool's output that carries
    one is masked before it is recorded or sent."""
    environ = os.environ if environ is None else environ
    try:
        data: object = load_credentials(home)
    except FasedError:
        data = {}
    found: set[str] = set()
    stack: list[object] = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and value:
            found.add(value)
    names = {r[0] for r in con.execute(
        "SELECT credential_env FROM providers WHERE credential_env IS NOT NULL")}
    names |= set(KEY_ENV.values())
    found |= {environ[n] for n in names if environ.get(n)}
    return found


def save_credentials(home: Path, data: dict) -> None:
    from fased.home import write_private

    write_private(home / CREDENTIALS, (json.dumps(data, indent=2) + "\n").encode())


def set_credentials_entry(home: Path, section: str, key: str, entry: dict | None) -> None:
    """Put `entry` at credentials.json[section][key], or (None, or empty) remove it; an empty
    section goes too. The caller holds the log lock, so the secret and the event that refers
    to it land together. Nothing to change: nothing is written."""
    data = load_credentials(home)
    held = data.get(section) if isinstance(data.get(section), dict) else {}
    if entry:
        if held.get(key) == entry:
            return
        held[key] = entry
    elif held.pop(key, None) is None:
        return
    if held or section == "providers":
        data[section] = held
    else:
        data.pop(section, None)
    save_credentials(home, data)


def store_secret(store: Store, provider: str, *, api_key: str | None = None) -> None:
    """Keep a provider's API key in credentials.json, or forget it (under the log lock)."""
    _update_entry(store, provider, {"api_key": api_key})


def store_provider_secrets(store: Store, provider: str, secrets: dict,
                           parts: tuple[str, ...] = ("headers", "userinfo", "query")) -> None:
    """Keep what provider_draft took out of a new provider (secret headers, URL userinfo and
    query values) in credentials.json, replacing what an earlier registration left (or only
    the `parts` a change replaces)."""
    _update_entry(store, provider, {part: secrets.get(part) for part in parts})


def _update_entry(store: Store, provider: str, parts: dict) -> None:
    with store.log.locked():
        entry = dict(load_credentials(store.home)["providers"].get(provider) or {})
        for name, value in parts.items():
            if value:
                entry[name] = value
            else:
                entry.pop(name, None)
        set_credentials_entry(store.home, "providers", provider, entry)


def forget_secrets(store: Store, provider: str) -> None:
    """Delete everything credentials.json holds for a provider (key and secret headers)."""
    with store.log.locked():
        set_credentials_entry(store.home, "providers", provider, None)


@dataclass
class CredentialStatus:
    """Whether a provider can authenticate right now (never carries the secret out)."""

    needed: bool
    source: str  # api_key, env:VAR, command, env:DEFAULT_VAR, none
    ready: bool
    problem: str | None = None

    def to_dict(self) -> dict:
        return {"needed": self.needed, "source": self.source, "ready": self.ready,
                "problem": self.problem}


def resolve_secret(home: Path, row: sqlite3.Row) -> tuple[str | None, CredentialStatus]:
    """The secret to send (or None) and the status to show. A key an HTTP header cannot
    carry (a pasted curly quote, a newline) is a credential that cannot be had, as an unset
    variable is: it is never sent, so it never fails as a connection or an internal error."""
    from fased.bounds import header_unsafe

    secret, status, where = _find_secret(home, row)
    why = header_unsafe(secret) if secret else None
    if why is not None:
        return None, CredentialStatus(status.needed, status.source, False,
                                      f"{where} holds a character an HTTP header cannot carry "
                                      f"({why})")
    return secret, status


def _find_secret(home: Path, row: sqlite3.Row) -> tuple[str | None, CredentialStatus, str]:
    """resolve_secret's secret and status, and where the secret came from, for people."""
    needed = row["kind"] in HOSTED
    kind = row["credential_kind"]
    if row["kind"] == "local":  # run in this process: a credential an older fased let in
        return None, CredentialStatus(False, "none", True), ""
    if kind == "api_key":
        key = load_credentials(home)["providers"].get(row["id"], {}).get("api_key")
        if key is None or fingerprint(key) != row["credential_fingerprint"]:
            return None, CredentialStatus(needed, "api_key", False,
                                          "the stored key is missing from credentials.json"), ""
        return key, CredentialStatus(needed, "api_key", True), "the stored key"
    if kind == "env":
        name = row["credential_env"]
        value = os.environ.get(name)
        if not value:
            return None, CredentialStatus(needed, f"env:{name}", False, f"${name} is not set"), ""
        return value, CredentialStatus(needed, f"env:{name}", True), f"${name}"
    if kind == "command":
        secret, status = _from_command(row["credential_command"], needed)
        return secret, status, "the key the credential command printed"
    default_env = KEY_ENV.get(row["kind"])
    if default_env and os.environ.get(default_env):
        return (os.environ[default_env], CredentialStatus(needed, f"env:{default_env}", True),
                f"${default_env}")
    if needed:
        return None, CredentialStatus(True, "none", False,
                                      f"no credential: `fased agent models auth {row['id']}`"), ""
    return None, CredentialStatus(False, "none", True), ""


def _from_command(command: str, needed: bool) -> tuple[str | None, CredentialStatus]:
    import subprocess

    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None, CredentialStatus(needed, "command", False, "the credential command timed out")
    secret = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    if done.returncode != 0 or not secret:
        return None, CredentialStatus(needed, "command", False,
                                      f"the credential command failed (exit {done.returncode})")
    return secret, CredentialStatus(needed, "command", True)


def make_client(home: Path, row: sqlite3.Row, **timeouts):
    """An HTTP client for a registered provider, with its credential resolved now."""
    from fased.bounds import header_unsafe
    from fased.providers import client_for

    secret, status = resolve_secret(home, row)
    # A credential that was configured but cannot be had now (an unset variable, a failing
    # command) is a mistake to report, even where the server might take requests without one.
    if not status.ready:
        auth = f"fased agent models auth {row['id']}"
        raise FasedError(f"provider {row['id']}: {status.problem}",
                         hint=None if auth in status.problem else f"or change the credential: "
                         f"`{auth}`")
    stored = load_credentials(home)["providers"].get(row["id"], {})
    missing = missing_secrets(row, stored)
    if missing:
        raise FasedError(f"provider {row['id']}: {missing} missing from credentials.json",
                         hint=f"give it again: fased agent models providers set {row['id']} "
                         "--header NAME=VALUE (or --base-url URL)")
    headers = {**json.loads(row["headers"] or "{}"), **(stored.get("headers") or {})}
    for name, value in headers.items():
        why = header_unsafe(str(value))  # one an older fased, or a hand edit, let in
        if why is not None:
            raise FasedError(f"provider {row['id']}: the value of header {name} holds a "
                             f"character an HTTP header cannot carry ({why})",
                             hint=f"give it again: fased agent models providers set {row['id']} "
                             f"--header {name}=VALUE")
    url, params = join_url_credentials(row["base_url"], stored)
    client = client_for(row["kind"], url, secret, headers, params=params, **timeouts)
    if row["kind"] == "local":
        client.model_path = row["model_path"]
        client.model_name = local_model_name(row["model_path"])
        client.home = home
    return client


def local_model_name(model_path: str) -> str:
    """The one model a kind-local provider serves: its file's name without `.gguf`."""
    name = Path(model_path).name
    return name[:-5] if name.lower().endswith(".gguf") else name


def provider_models(row: sqlite3.Row) -> list[str] | None:
    """The models a provider serves as fased knows them: its fetched catalog, a kind-local
    provider's one (its file needs no fetching); None when not fetched yet."""
    if row["kind"] == "local" and row["model_path"]:
        return [local_model_name(row["model_path"])]
    return json.loads(row["models"]) if row["models"] else None


def provider_url(row: sqlite3.Row) -> str | None:
    """Where a provider is reached, secrets masked; None for kind local, which runs in
    fased from its file (its recorded URL is only a placeholder)."""
    from fased.redact import mask_url

    return None if row["kind"] == "local" else mask_url(row["base_url"])


def missing_secrets(row: sqlite3.Row, stored: dict) -> str | None:
    """What the provider was registered with but credentials.json no longer holds, as
    `the secret header X is`, or None."""
    what = [f"the secret header {n}" for n in json.loads(row["secret_headers"] or "[]")
            if n not in (stored.get("headers") or {})]
    what += [f"the secret query parameter {n}" for n in json.loads(row["secret_query"] or "[]")
             if n not in (stored.get("query") or {})]
    if row["secret_userinfo"] and not stored.get("userinfo"):
        what.append("the userinfo of the base URL")
    if not what:
        return None
    return ", ".join(what) + (" is" if len(what) == 1 else " are")


def check_credential_command(provider: str, command: str) -> None:
    """Refuse a credential command that holds the secret itself: it would go to the log."""
    why = literal_secret(command)
    if why is not None:
        raise UsageError(
            f"the credential command holds what looks like a literal secret ({why}); "
            "nothing was changed",
            hint="use --stdin or --env VAR for the key itself, or a command that reads it, "
            f"e.g. --command 'pass show {provider}'")


# -- catalog and detection --------------------------------------------------------------------

def fetch_catalogs(store: Store, provider_ids: list[str], timeout: float = 10.0) -> list[dict]:
    """Ask providers for their models and record each answer (or failure) that is news
    (record_catalogs)."""
    con = store.db()
    results = []
    for pid in provider_ids:
        row = get_provider(con, pid)
        try:
            with make_client(store.home, row, connect_timeout=min(timeout, 5.0),
                             read_timeout=timeout) as client:
                models = sorted(client.list_models())
            results.append({"provider": pid, "models": models, "error": None})
        except FasedError as exc:
            results.append({"provider": pid, "models": [], "error": exc.message})

    record_catalogs(store, results)
    return results


def record_catalogs(store: Store, results: list[dict]) -> None:
    """Append models.catalog_fetched for each {provider, models, error} that is news: the
    same models (in any order) or the same failure as last recorded writes nothing."""

    def news(con: sqlite3.Connection) -> list[Draft]:
        drafts = []
        for r in results:
            known = con.execute("SELECT models, models_error FROM providers WHERE id = ?",
                                (r["provider"],)).fetchone()
            if known is not None and (known["models_error"] == r["error"] if r["error"] else (
                    known["models_error"] is None and known["models"] is not None
                    and sorted(json.loads(known["models"])) == sorted(r["models"]))):
                continue
            drafts.append(Draft("models.catalog_fetched", f"provider:{r['provider']}",
                                {"provider": r["provider"], "models": r["models"],
                                 **({"error": r["error"]} if r["error"] else {})}))
        return drafts

    store.append_internal(news)
