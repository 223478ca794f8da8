"""What is secret, and how to hide it wherever it could be printed or recorded.

One module for every path (the log, state.db, stdout, error text from servers) so that they
cannot disagree. The rules:

- A header value is secret unless the header is known to be harmless (HARMLESS_HEADERS).
- A base URL's userinfo (`user:password@`) is secret, and so is every query value unless its
  name is known to be harmless (HARMLESS_QUERY); a fragment is never sent, and never kept.
  So is a bot token in a path (`/bot<id>:<token>/`, Telegram's Bot API).
- Text a server sends back is masked for every secret the client holds, in every form that
  reveals a useful part of it: plain, URL-encoded (`%2B`, `+` for space, in any mix),
  JSON-escaped, Basic-auth encoded, and elided (`sk-abc...wxyz`, `sk-proj-****abcd`,
  `sk-ab…yz`); in any letter case.

Only `re` at import time: the CLI masks its own command line with this on every start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"

SECRET_NAME = re.compile(
    r"auth|api[-_]?key|token|secret|cookie|passw(?:or)?d|credential|webhook|private[-_]?key"
    r"|(?:^|[-_])(?:pass(?:phrase)?|key|dsn)(?:$|[-_])|[-_]pwd(?:$|[-_])", re.IGNORECASE)
"""Names that hold secrets: NAME=VALUE arguments whose value is masked in the recorded
command line, variables no tool is given, skill variables kept in credentials.json. Whole
words for the short ones (DB_PASS, STRIPE_KEY, SENTRY_DSN, MYSQL_PWD), so that KEYMAP,
COMPASS and PWD are not taken for secrets."""

HARMLESS_HEADERS = frozenset({
    "accept", "accept-encoding", "accept-language", "cache-control", "content-type",
    "user-agent", "referer", "http-referer", "origin", "x-title",
    "anthropic-version", "anthropic-beta", "openai-organization", "openai-project", "openai-beta",
})
"""Headers whose values are recorded in the log and shown; any other value is a secret."""

HARMLESS_QUERY = frozenset({"api-version", "api_version", "version"})
"""Base-URL query parameters whose values are recorded; any other value is a secret."""

# a Telegram Bot API URL carries the bot token in its path: /bot123456:AAH...
_PATH_TOKEN = re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+")
_MIN_SECRET = 4  # shorter values would blank out ordinary words
_MIN_ELIDED = 8  # a secret this long is worth recognising from a prefix or suffix
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]*")
_WEBHOOK = re.compile(r"(?i)\b(webhook:)([a-z][a-z0-9+.-]*://[^\s'\"<>]*)")  # --deliver
_TOKEN = re.compile(r"[^\s&?=;,:\"'<>()\[\]{}|]+")
_ELISION = re.compile(r"\*{2,}|\.{3,}|…+|•{2,}")
# A Basic token is base64 (a digit, '+', '/', '=' or a capital inside): "Basic
# authentication" stays as it is.
_AUTH_SCHEME = re.compile(r"\b([Bb]earer\s+)[A-Za-z0-9+/=._~-]+|\b([Bb]asic\s+)"
                          r"(?=[A-Za-z0-9+/]*(?:[0-9+/=]|[a-z][A-Z]))[A-Za-z0-9+/]{8,}={0,2}")


def header_is_secret(name: str) -> bool:
    """True unless the header is on the list of known harmless ones."""
    return name.strip().lower() not in HARMLESS_HEADERS


def query_is_secret(name: str) -> bool:
    """True unless the base-URL query parameter is on the list of known harmless ones."""
    return name.strip().lower() not in HARMLESS_QUERY


def mask_url(url: str) -> str:
    """The URL with its userinfo, secret query values, a path's bot token and fragment
    replaced by ***.

    Works on malformed URLs too (no parsing that can fail): everything up to the last '@'
    before the path's query counts as userinfo, so a password with an unescaped '/' is
    hidden as well.
    """
    from urllib.parse import unquote_plus

    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    if "@" in rest:
        rest = MASK + "@" + rest.rpartition("@")[2]
    rest = _PATH_TOKEN.sub(r"\1" + MASK, rest)
    items = []
    for item in query.split("&") if qmark else ():
        name, eq, value = item.partition("=")
        if (eq and value and query_is_secret(unquote_plus(name))) or (
                not eq and item and query_is_secret(unquote_plus(item))):
            item = f"{name}={MASK}" if eq else MASK
        items.append(item)
    return (f"{scheme}://{rest}" + (qmark + "&".join(items)) + (hash_ + MASK if fragment
                                                                 else hash_))


def mask_webhook(url: str) -> str:
    """A webhook URL as safe to show: its origin, then `/***` for everything after it. The
    whole URL is a credential: Slack's and Discord's carry their secret in the path, others
    a token in the query or a password before the host."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return MASK
    host = rest.partition("/")[0].partition("?")[0].partition("#")[0].rpartition("@")[2]
    origin = f"{scheme}://{host}"
    return url if url in (origin, origin + "/") else f"{origin}/{MASK}"


def mask_urls(text: str) -> str:
    """Every URL in free text masked with mask_url."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text)


def mask_args(args: list[str]) -> list[str]:
    """Command-line arguments as safe to record: the values of headers not known to be
    harmless (`-H X-Access-Key=...`), URL credentials, and secret-looking NAME=VALUEs."""
    out: list[str] = []
    for arg in args:
        header = _header_argument(out[-1] if out else None, arg)
        if header is not None:
            prefix, name = header
            out.append(f"{prefix}{name}={MASK}" if header_is_secret(name) else arg)
        else:
            out.append(mask_argument(arg))
    return out


def _header_argument(previous: str | None, arg: str) -> tuple[str, str] | None:
    """(prefix, NAME) when `arg` is a header option's NAME=VALUE (`-H N=V`,
    `--header N=V`, `--header=N=V`, `-HN=V`), else None."""
    if previous in ("-H", "--header"):
        prefix, rest = "", arg
    elif arg.startswith("--header="):
        prefix, rest = "--header=", arg[len("--header="):]
    elif arg.startswith("-H") and len(arg) > 2:
        prefix, rest = "-H", arg[2:]
    else:
        return None
    name, sep, _ = rest.partition("=")
    return (prefix, name) if sep else None


def mask_argument(arg: str) -> str:
    """One argument with URL credentials masked, and everything after the first
    secret-looking NAME= (`api_key=...`, `--option=TOKEN=...`) outside a URL."""
    if "=" not in arg and "://" not in arg:
        return arg
    arg = _WEBHOOK.sub(lambda m: m.group(1) + mask_webhook(m.group(2)), arg)
    arg = mask_urls(arg)
    urls = [m.span() for m in _URL.finditer(arg)]
    start = 0
    for match in re.finditer("=", arg):
        at = match.start()
        if any(a <= at < b for a, b in urls):
            continue
        if SECRET_NAME.search(arg[start:at].lstrip("-")):
            return arg[: at + 1] + MASK
        start = at + 1
    return arg


def url_userinfo(url: str) -> str | None:
    """The userinfo of a URL as written (percent-encoded), or None."""
    _, sep, rest = url.partition("://")
    authority = rest.partition("#")[0].partition("?")[0]
    if not sep or "@" not in authority:
        return None
    return authority.rpartition("@")[0] or None


def client_secrets(api_key: str | None, headers: Mapping[str, str], url: str,
                   params: Mapping[str, str]) -> list[str]:
    """Every secret an HTTP client holds: key, secret header values, URL credentials."""
    from urllib.parse import unquote

    out = [api_key or ""]
    for name, value in headers.items():
        if header_is_secret(name):
            out += [value, *value.split()[-1:]]  # "Bearer xyz": the token alone too
    userinfo = url_userinfo(url)
    if userinfo:
        import base64

        user, _, password = userinfo.partition(":")
        out += [userinfo, user, password,
                base64.b64encode(unquote(userinfo).encode()).decode()]
    out += [value for name, value in params.items() if query_is_secret(name)]
    return out


def secret_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as servers write it back: plain, decoded, URL-encoded, JSON-escaped;
    longest first so that a longer form is masked before a shorter one inside it."""
    import json
    from urllib.parse import quote, quote_plus, unquote

    forms: set[str] = set()
    for secret in secrets:
        for value in {secret, unquote(secret)}:
            if len(value) < _MIN_SECRET:
                continue
            forms.update((value, quote(value, safe=""), quote(value), quote_plus(value),
                          quote_plus(value, safe="/"), json.dumps(value)[1:-1]))
    return sorted(forms, key=len, reverse=True)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every secret replaced by ***."""
    from urllib.parse import unquote

    secrets = [s for s in secrets if s]
    forms = secret_forms(secrets)
    if forms:
        text = re.sub("|".join(map(re.escape, forms)), MASK, text, flags=re.IGNORECASE)
    plain = {v.lower() for s in secrets for v in (s, unquote(s)) if len(v) >= _MIN_SECRET}
    long_ = [s for s in plain if len(s) >= _MIN_ELIDED]

    def token(match: re.Match) -> str:
        word = match.group(0)
        # A sentence's full stop is not part of the token (but an elision's dots are).
        core = re.sub(r"(?<=[A-Za-z0-9])[.!]$", "", word)
        return MASK + word[len(core):] if _reveals(core, plain, long_) else word

    text = _TOKEN.sub(token, text)
    return _AUTH_SCHEME.sub(lambda m: (m.group(1) or m.group(2)) + MASK, text)


def _reveals(word: str, plain: set[str], long_: list[str]) -> bool:
    """Whether a word carries a secret: encoded in some other mix, or elided to a prefix
    and/or suffix of one."""
    from urllib.parse import unquote, unquote_plus

    if "%" in word or "+" in word:
        decoded = {unquote(word).lower(), unquote_plus(word).lower()}
        if any(s in d for s in plain for d in decoded):
            return True
    pieces = _ELISION.split(word.lower())
    if len(pieces) < 2:
        return False
    head, tail = pieces[0], pieces[-1]
    return any((len(head) >= 2 and s.startswith(head)) or (len(tail) >= 2 and s.endswith(tail))
               for s in long_)


def mask_event(event: dict) -> dict:
    """An event as safe to print. An older fased recorded what is secret by today's rules
    (header values, URL credentials, the command line that carried them, a credential
    command holding a key): masked here. A newer event comes back unchanged."""
    data, meta = event.get("data") or {}, event.get("meta") or {}
    masked_data = data
    if event.get("type") == "provider.added":
        masked_data = {**data, "base_url": mask_url(str(data.get("base_url", "")))}
        if isinstance(data.get("headers"), dict):
            masked_data["headers"] = {k: MASK if header_is_secret(k) else v
                                      for k, v in data["headers"].items()}
    elif event.get("type") == "credential.set" and isinstance(data.get("command"), str) and \
            literal_secret(data["command"]):
        masked_data = {**data, "command": MASK}
    elif event.get("type") == "skill.installed" and isinstance(data.get("source"), str):
        masked_data = {**data, "source": mask_url(data["source"])}  # 0.4.0 kept a git URL's
    else:  # a task's webhook, which fased 0.4.0 recorded whole (fased.tasks.recorded_target)
        key = "target" if event.get("type") == "task.delivered" else "deliver"
        target = data.get(key) if str(event.get("type", "")).startswith("task.") else None
        if isinstance(target, str) and target.startswith("webhook:"):
            shown = "webhook:" + mask_webhook(target.partition(":")[2])
            if shown != target:
                masked_data = {**data, key: shown}
    command = meta.get("command")
    # Every secret this masks sits in a NAME=VALUE or a URL: most commands have neither.
    if isinstance(command, str) and ("=" in command or "://" in command):
        masked = " ".join(mask_args(command.split(" ")))
        if masked != command:
            meta = {**meta, "command": masked}
    if masked_data == data and meta is event.get("meta"):
        return event
    return {**event, "data": masked_data, "meta": meta}


# -- literal secrets in a credential command ---------------------------------------------------

_KEY_PREFIX = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-|sk_live_|sk_test_|rk_live_|gsk_|xai-|hf_|gh[pousr]_|github_pat_|"
    r"glpat-|xox[abposr]-|pplx-|r8_|nvapi-|AIza)[A-Za-z0-9_-]{8,}|"
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_RUN = re.compile(r"[A-Za-z0-9_-]{32,}")
_BOT_TOKEN = re.compile(r"(?<![A-Za-z0-9])\d{5,20}:[A-Za-z0-9_-]{30,}")  # Telegram's
_SCHEME_TOKEN = re.compile(r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9+/=._~-]{8,}")
_USER_OPTION = re.compile(r"(?:^|\s)(?:-u|--user)[\s=]+['\"]?[^\s:'\"]+:(?!\$)[^\s'\"]+")


def literal_secret(command: str) -> str | None:
    """Why a shell command seems to hold a secret itself rather than read one, or None.

    A key with a known prefix (sk-, sk-ant-, gsk_, xai-, hf_, ghp_, github_pat_, glpat-,
    xoxb-, AKIA..., AIza...), a Telegram bot token (`123456:AA...`), a random-looking run
    of 32 or more letters, digits, '-' and '_' (with a digit, and a stretch of 16 or more
    without '-' or '_', which UUIDs and hyphenated names do not have), a password in a URL or
    in `-u user:password`, or a Bearer/Basic token.
    """
    if _KEY_PREFIX.search(command):
        return "a known API key prefix"
    if _BOT_TOKEN.search(command):
        return "a bot token"
    for run in _RUN.findall(command):
        if re.search(r"\d", run) and re.search(r"[A-Za-z]", run) and max(
                len(p) for p in re.split(r"[-_]", run)) >= 16:
            return "a long random token"
    if any(":" in (url_userinfo(m.group(0)) or "") for m in _URL.finditer(command)):
        return "a password in a URL"
    if _USER_OPTION.search(command):
        return "a user:password"
    if _SCHEME_TOKEN.search(command):
        return "an authorization token"
    return None
