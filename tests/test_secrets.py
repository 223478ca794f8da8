"""Secrets a provider is registered with (URL userinfo, query keys, header values, API keys)
reach the server and credentials.json, and nothing else: not the log, not state.db, not the
transcripts, not what any command prints, not the error text of a server that echoes them."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from conftest import error_line, events, read_json

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import Status

MODELS = ["agent", "models"]
PROVIDERS = [*MODELS, "providers"]

PASSWORD = "hunter2-Pw/9x7Qz"
QUERY_KEY = "qk-Q8v2LmN4pR6sT0wY"
QUERY_SIG = "Zx9+Ab/Cd=Ef7Gh1"
ACCESS_KEY = "ak-7Hj2Kl9Mn4PqRs"
APIM_KEY = "4f8e2a9c1b7d3e6f0a5c8b2d9e1f4a7c"
SIGNATURE = "sg-Vb3Nm8Qw5Er1Ty"


def forms(secret: str) -> set[str]:
    """The ways a secret can be written down: plain and URL-encoded (either hex case)."""
    out = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    return out | {f.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
                  for f in out}


def basic(userinfo: str) -> str:
    return base64.b64encode(userinfo.encode()).decode()


class Recorder:
    """Runs commands in-process and keeps everything they printed."""

    def __init__(self, run):
        self.run = run
        self.printed: list[str] = []

    def __call__(self, *args: str, code: int = 0, input: str | None = None,
                 env: dict | None = None):
        result = self.run(*args, input=input, env=env)
        self.printed += [result.stdout, result.stderr]
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result


def assert_not_printed(printed: list[str], leaks: set[str]) -> None:
    for text in printed:
        found = [s for s in leaks if s in text]
        assert not found, (found, text)


def assert_nowhere(home: Path, printed: list[str], leaks: set[str]) -> None:
    """No leak in any file of the home but credentials.json, nor in anything printed."""
    for path in home.rglob("*"):
        if path.is_file() and path.name != "credentials.json":
            data = path.read_bytes()
            found = [s for s in leaks if s.encode() in data]
            assert not found, (path, found)
    assert_not_printed(printed, leaks)


def provider_events(home: Path) -> list[tuple[dict, str]]:
    return [(e["data"], e["meta"]["command"]) for e in events(home)
            if e["type"] == "provider.added"]


# -- registering providers with every kind of secret -----------------------------------------

def test_url_and_header_secrets_reach_the_server_and_only_credentials_json(set_up, run, server):
    fased = Recorder(run)
    host = server.url.removeprefix("http://")
    query = f"api-version=2024-06-01&api_key={QUERY_KEY}&sig={quote(QUERY_SIG, safe='')}"
    added = fased(*PROVIDERS, "add", "ui", "--kind", "openai-compatible",
                  "--base-url", f"http://alice:{quote(PASSWORD, safe='')}@{host}/v1")
    assert added.stdout == f"Added provider ui (openai-compatible, {server.url}/v1).\n"
    added = fased(*PROVIDERS, "add", "qk", "--kind", "openai-compatible",
                  f"--base-url={server.url}/v1/?{query}")
    assert added.stdout == (
        f"Added provider qk (openai-compatible, {server.url}/v1?api-version=2024-06-01).\n")
    fased(*PROVIDERS, "add", "hd", "--kind", "openai-compatible", "--base-url",
          f"{server.url}/v1", "-H", f"X-Access-Key={ACCESS_KEY}",
          "--header", f"Ocp-Apim-Subscription-Key={APIM_KEY}", f"--header=X-Signature={SIGNATURE}",
          "-H", "X-Title=fased tests", "-H", "HTTP-Referer=https://example.test/app")

    # The log holds the URLs without their credentials, the names of what was taken out,
    # the harmless headers, and a masked command line.
    assert provider_events(set_up) == [
        ({"provider": "ui", "kind": "openai-compatible", "base_url": f"{server.url}/v1",
          "secret_userinfo": True},
         "fased agent models providers add ui --kind openai-compatible --base-url "
         f"http://***@{host}/v1"),
        ({"provider": "qk", "kind": "openai-compatible",
          "base_url": f"{server.url}/v1?api-version=2024-06-01",
          "secret_query": ["api_key", "sig"]},
         "fased agent models providers add qk --kind openai-compatible "
         f"--base-url={server.url}/v1/?api-version=2024-06-01&api_key=***&sig=***"),
        ({"provider": "hd", "kind": "openai-compatible", "base_url": f"{server.url}/v1",
          "headers": {"X-Title": "fased tests", "HTTP-Referer": "https://example.test/app"},
          "secret_headers": ["Ocp-Apim-Subscription-Key", "X-Access-Key", "X-Signature"]},
         "fased agent models providers add hd --kind openai-compatible --base-url "
         f"{server.url}/v1 -H X-Access-Key=*** --header Ocp-Apim-Subscription-Key=*** "
         "--header=X-Signature=*** -H X-Title=fased tests "
         "-H HTTP-Referer=https://example.test/app"),
    ]
    assert read_json(set_up / "credentials.json") == {"version": 1, "providers": {
        "ui": {"userinfo": f"alice:{quote(PASSWORD, safe='')}"},
        "qk": {"query": {"api_key": QUERY_KEY, "sig": QUERY_SIG}},
        "hd": {"headers": {"X-Access-Key": ACCESS_KEY, "Ocp-Apim-Subscription-Key": APIM_KEY,
                           "X-Signature": SIGNATURE}}}}

    fased(*MODELS, "set", "primary", "ui/fake-model")
    fased(*MODELS, "fallback", "add", "qk/fake-model")
    fased(*MODELS, "fallback", "add", "hd/fake-model")
    probed = json.loads(fased(*MODELS, "status", "--probe", "--json").stdout)
    assert [r["probe"] for r in probed["refs"]] == ["ok", "ok", "ok"]
    assert fased("chat", "hello").stdout.strip() == "Hello from the fake model."
    fased("chat", "-m", "qk/fake-model", "again")
    fased("chat", "-m", "hd/fake-model", "and again")

    # The server got every credential: userinfo as Basic auth, the query, the headers.
    def sent(pred) -> int:
        return sum(1 for r in server.requests if pred(r))

    assert len(server.requests) == 6
    assert sent(lambda r: r["headers"].get("authorization") ==
                f"Basic {basic('alice:' + PASSWORD)}" and r["query"] == {}) == 2
    assert sent(lambda r: r["query"] == {"api-version": "2024-06-01", "api_key": QUERY_KEY,
                                         "sig": QUERY_SIG}) == 2
    assert sent(lambda r: r["path"] == "/v1/chat/completions" and r["headers"].get(
        "x-access-key") == ACCESS_KEY and r["headers"].get("ocp-apim-subscription-key") ==
        APIM_KEY and r["headers"].get("x-signature") == SIGNATURE and
        r["headers"].get("x-title") == "fased tests" and r["query"] == {}) == 2

    # Every view of the providers says where the secrets are, never what they are.
    assert fased(*PROVIDERS, "show", "ui").stdout.splitlines()[:3] == [
        "ui (openai-compatible)",
        f"  Base URL:   {server.url}/v1",
        "  URL secret: userinfo (in credentials.json)",
    ]
    assert fased(*PROVIDERS, "show", "qk").stdout.splitlines()[:4] == [
        "qk (openai-compatible)",
        f"  Base URL:   {server.url}/v1?api-version=2024-06-01",
        "  URL secret: query api_key (in credentials.json)",
        "  URL secret: query sig (in credentials.json)",
    ]
    assert fased(*PROVIDERS, "show", "hd").stdout.splitlines()[:7] == [
        "hd (openai-compatible)",
        f"  Base URL:   {server.url}/v1",
        "  Header:     X-Title: fased tests",
        "  Header:     HTTP-Referer: https://example.test/app",
        "  Header:     Ocp-Apim-Subscription-Key: (secret, in credentials.json)",
        "  Header:     X-Access-Key: (secret, in credentials.json)",
        "  Header:     X-Signature: (secret, in credentials.json)",
    ]
    shown = json.loads(fased(*PROVIDERS, "show", "qk", "--json").stdout)
    assert (shown["base_url"], shown["secret_query"], shown["secret_userinfo"]) == (
        f"{server.url}/v1?api-version=2024-06-01", ["api_key", "sig"], False)
    assert json.loads(fased(*PROVIDERS, "show", "ui", "--json").stdout)["secret_userinfo"]
    for command in (["list"], ["list", "--json"], ["show", "ui", "--json"],
                    ["show", "hd", "--json"]):
        fased(*PROVIDERS, *command)
    fased(*MODELS, "list", "--refresh")
    fased(*MODELS, "list", "--json")
    fased(*MODELS, "status")
    fased("replay")
    fased("replay", "--json")
    fased("replay", "--verify")
    fased("doctor")

    leaks = set().union(*map(forms, (PASSWORD, QUERY_KEY, QUERY_SIG, ACCESS_KEY, APIM_KEY,
                                     SIGNATURE)))
    leaks.add(basic("alice:" + PASSWORD))
    assert_nowhere(set_up, fased.printed, leaks)


def test_a_provider_found_by_detect_keeps_its_url_credentials_out_of_the_log(set_up, run,
                                                                             server):
    fased = Recorder(run)
    host = server.url.removeprefix("http://")
    env = {"FASED_DETECT_ENDPOINTS": f"ollama=http://dave:{quote(PASSWORD, safe='')}@{host}"}
    found = fased(*PROVIDERS, "detect", env=env)
    assert found.stdout.splitlines()[0] == f"Found ollama at {server.url} with 2 model(s)"
    assert provider_events(set_up)[0][0] == {"provider": "ollama", "kind": "ollama",
                                             "base_url": server.url, "detected": True,
                                             "secret_userinfo": True}
    assert read_json(set_up / "credentials.json")["providers"] == {
        "ollama": {"userinfo": f"dave:{quote(PASSWORD, safe='')}"}}
    assert fased("chat", "hi").stdout.strip() == "Hello from the fake model."
    assert server.requests[-1]["path"] == "/api/chat"
    assert server.requests[-1]["headers"]["authorization"] == f"Basic {basic('dave:' + PASSWORD)}"
    fased(*PROVIDERS, "show", "ollama")
    fased("replay", "--json")
    assert_nowhere(set_up, fased.printed, forms(PASSWORD) | {basic("dave:" + PASSWORD)})


@pytest.mark.parametrize(("kind", "url", "error"), [
    ("vllm", f"ftp://alice:{PASSWORD}@127.0.0.1/v1", "Error: invalid base URL 'ftp://***@"),
    ("ollama", f"http://127.0.0.1:11434/v1?key={QUERY_KEY}",
     "Error: http://127.0.0.1:11434/v1?key=*** ends in /v1"),
    ("vllm", f"http://alice:{PASSWORD}@127.0.0.1:8000/v1",
     "Error: base URL http://***@127.0.0.1:8000/v1 has an '@' after its host"),
    ("vllm", f"http://127.0.0.1:8000/v1?{QUERY_KEY}",
     "Error: the query of base URL http://127.0.0.1:8000/v1?*** is not NAME=VALUE pairs"),
    ("vllm", f"http://127.0.0.1:8000/v1?key={QUERY_KEY}&key=2",
     "Error: query parameter 'key' appears twice in base URL"),
    # a URL the parser refuses is still shown masked: urllib's own error would quote it
    ("vllm", f"http://alice:{QUERY_KEY}@127.0.0.1:99999/v1",
     "Error: invalid base URL 'http://***@127.0.0.1:99999/v1': its port"),
    ("vllm", f"http://alice:{QUERY_KEY}@[::1/v1?key={QUERY_KEY}",
     "Error: invalid base URL 'http://***@[::1/v1?key=***': its [IPv6] host"),
])
def test_a_refused_base_url_is_not_printed_with_its_secrets(set_up, run, kind, url, error):
    before = len(events(set_up))
    result = run(*PROVIDERS, "add", "x", "--kind", kind, "--base-url", url)
    assert result.exit_code == 2
    assert error_line(result).startswith(error)
    assert len(events(set_up)) == before
    assert not (set_up / "credentials.json").exists()
    for secret in (PASSWORD, QUERY_KEY):
        assert secret not in result.stdout + result.stderr


def test_a_secret_missing_from_credentials_json_is_an_error_not_an_unauthenticated_call(
        set_up, run, ok, server):
    ok(*PROVIDERS, "add", "hd", "--kind", "openai-compatible", "--base-url", f"{server.url}/v1",
       "-H", f"X-Access-Key={ACCESS_KEY}")
    ok(*MODELS, "set", "primary", "hd/fake-model")
    (set_up / "credentials.json").unlink()
    result = run("chat", "hi")
    assert result.exit_code == 5
    assert "provider hd: the secret header X-Access-Key is missing from credentials.json" in (
        result.stderr)
    assert server.requests == []


# -- a server that echoes the secret back ------------------------------------------------------

API_KEY = "sk-proj-Ab3+dE/fG7hI9jK1lM3nO5pQrSt"


def echoes() -> list[str]:
    """What servers put in their error text: whole secrets in several encodings, and the
    elided prefix...suffix forms that still reveal parts of them."""
    k = API_KEY
    return [
        k, quote(k, safe=""), quote(k, safe="").lower(), quote_plus(k), quote(k),
        f"{k[:6]}...{k[-4:]}", f"{k[:8]}{'*' * 28}{k[-4:]}", f"{k[:5]}…{k[-4:]}",
        f"{k[:3]}****{k[-6:]}",
        QUERY_KEY, quote_plus(QUERY_SIG), f"{QUERY_KEY[:4]}...{QUERY_KEY[-4:]}",
        ACCESS_KEY, f"{ACCESS_KEY[:5]}***{ACCESS_KEY[-3:]}",
        PASSWORD, quote(PASSWORD, safe=""), basic(f"bob:{PASSWORD}"),
    ]


def test_a_server_echoing_secrets_back_is_masked_before_anything_records_or_prints(
        set_up, run, server):
    fased = Recorder(run)
    host = server.url.removeprefix("http://")
    fased(*PROVIDERS, "add", "ek", "--kind", "openai-compatible", "--base-url",
          f"http://bob:{quote(PASSWORD, safe='')}@{host}/v1?key={QUERY_KEY}"
          f"&sig={quote(QUERY_SIG, safe='')}", "-H", f"X-Access-Key={ACCESS_KEY}")
    fased(*MODELS, "auth", "ek", "--stdin", input=API_KEY + "\n")
    fased(*MODELS, "set", "primary", "ek/fake-model")
    fased("config", "set", "agents.defaults.retries", "0")
    fased("config", "set", "agents.defaults.cooldownSeconds", "0")
    fased("task", "new", "--every", "1d", "--message", "status")

    def body(echo: str) -> dict:
        return {"error": {"message": f"Incorrect API key provided: {echo}. See the docs.",
                          "type": "invalid_request_error", "code": "invalid_api_key"}}

    for echo in echoes():
        server.script(Status(401, body=body(echo)))
        failed = fased("chat", "hi", code=5)
        assert "Incorrect API key provided: ***" in failed.stderr, failed.stderr
        server.script_models(Status(401, body=body(echo)))
        refused = fased(*MODELS, "list", "--refresh", code=1)  # the provider could not be asked
        assert "Incorrect API key provided: ***" in refused.stderr, refused.stderr
    server.script(Status(401, body=f"denied: {API_KEY[:7]}...{API_KEY[-4:]} is not valid"))
    assert fased("task", "run", "task-1", code=5).stdout.startswith("Error: every model failed")
    fased(*MODELS, "status", "--probe")
    fased(*PROVIDERS, "show", "ek")
    fased("replay")
    fased("replay", "--json")

    attempts = [e["data"] for e in events(set_up) if e["type"] == "turn.attempt_failed"]
    fetches = [e["data"] for e in events(set_up) if e["type"] == "models.catalog_fetched"]
    assert len(attempts) == len(echoes()) + 1
    # masked, every echo is the same failure: a fetch that learns nothing new writes nothing
    assert len(fetches) == 1
    assert all("Incorrect API key provided: ***" in (d.get("message") or d.get("error") or "")
               for d in attempts[:-1] + fetches)
    assert_nowhere(set_up, fased.printed, set(echoes()) | {f"{API_KEY[:7]}...{API_KEY[-4:]}"})


@pytest.mark.parametrize("echo", [
    f"{API_KEY[:6]}...{API_KEY[-4:]}", f"{API_KEY[:8]}{'*' * 28}{API_KEY[-4:]}",
    quote(API_KEY, safe=""), quote(API_KEY), API_KEY.upper(),
])
def test_an_echoed_api_key_is_masked_in_the_turn_the_catalog_and_the_output(set_up, run, server,
                                                                            echo):
    fased = Recorder(run)
    fased(*PROVIDERS, "add", "ek", "--kind", "openai-compatible", "--base-url",
          f"{server.url}/v1")
    fased(*MODELS, "auth", "ek", "--stdin", input=API_KEY + "\n")
    fased(*MODELS, "set", "primary", "ek/fake-model")
    body = {"error": {"message": f"Incorrect API key provided: {echo}", "type": "auth"}}
    server.script(Status(401, body=body))
    server.script_models(Status(401, body=body))
    fased("chat", "hi", code=5)
    refused = fased(*MODELS, "list", "--refresh", code=1)  # the provider could not be asked
    assert "Incorrect API key provided: ***" in refused.stderr, refused.stderr
    (failed,) = [e["data"] for e in events(set_up) if e["type"] == "turn.attempt_failed"]
    assert failed["message"].endswith("server says: Incorrect API key provided: ***")
    assert_nowhere(set_up, fased.printed, {echo})


# -- credential commands ---------------------------------------------------------------------

@pytest.mark.parametrize(("command", "secret"), [
    ("echo sk-cmd-SECRET-0123456789", "SECRET-0123456789"),
    ("printf %s sk-ant-api03-Xy7Zq2Wv", "api03-Xy7Zq2Wv"),
    ("echo 'gsk_8f3kL0pQ2mN7vX1c'", "8f3kL0pQ2mN7vX1c"),
    ("echo xai-Q1w2E3r4T5y6U7i8", "Q1w2E3r4T5y6U7i8"),
    ("echo hf_AbCdEfGhIjKlMnOp", "AbCdEfGhIjKlMnOp"),
    ("GITHUB_TOKEN=ghp_aB3dE5gH7jK9mN1pQ3sT cat", "aB3dE5gH7jK9mN1pQ3sT"),
    ("echo AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    ("echo 3f9a0c4e8b7d6a5f4e3d2c1b0a9f8e7d", "3f9a0c4e8b7d6a5f4e3d2c1b0a9f8e7d"),
    ("echo Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg"),
    ("curl -s https://bob:hunter2secret@vault.example/key", "hunter2secret"),
    ("curl -s -H 'Authorization: Bearer abcdefgh12345678' https://vault.example/key",
     "abcdefgh12345678"),
])
def test_auth_command_holding_a_literal_secret_is_refused(set_up, ok, run, command, secret):
    ok(*PROVIDERS, "add", "anthropic")
    ok(*MODELS, "auth", "anthropic", "--stdin", input="sk-ant-stored-key-123\n")
    before = len(events(set_up))
    creds = (set_up / "credentials.json").read_bytes()
    result = run(*MODELS, "auth", "anthropic", "--command", command)
    assert result.exit_code == 2
    error = error_line(result)
    assert error.startswith("Error: the credential command holds what looks like a literal "
                            "secret (")
    assert error.endswith("); nothing was changed")
    assert "Hint: use --stdin or --env VAR for the key itself, or a command that reads it, " \
        "e.g. --command 'pass show anthropic'" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert len(events(set_up)) == before
    assert (set_up / "credentials.json").read_bytes() == creds


@pytest.mark.parametrize("command", [
    "pass show openai",
    "cat /tmp/pytest-of-root/pytest-0/test_auth_command_runs_at_cal0/key.txt",
    "op read op://Private/OpenAI API/credential",
    "bw get password 3f2a1b4c-5d6e-7f80-9a1b-2c3d4e5f6a7b",
    "security find-generic-password -s openai-api-key -w",
    "secret-tool lookup service openai account default",
    'sh -c "echo $OPENAI_API_KEY"',
    "vault kv get -field=api_key secret/providers/openai",
])
def test_auth_command_that_reads_the_key_is_accepted(set_up, ok, command):
    ok(*PROVIDERS, "add", "openai")
    assert ok(*MODELS, "auth", "openai", "--command", command) == (
        "openai will read its key from the command at call time.\n")
    assert events(set_up)[-1]["data"] == {"provider": "openai", "kind": "command",
                                          "command": command}


# -- old logs ------------------------------------------------------------------------------------

def test_secrets_an_older_fased_logged_still_work_and_are_not_shown(set_up, run, server):
    """Before header values were secret by default, X-Access-Key stayed in the log; before URL
    credentials were split out, so did the base URL's userinfo and query, and the command
    line that carried them; a credential command could hold the key itself."""
    from fased.store import Draft, Store

    host = server.url.removeprefix("http://")
    url = f"http://carol:{quote(PASSWORD, safe='')}@{host}/v1?token={QUERY_KEY}"
    legacy_key = "sk-legacy-0123456789abcdef"
    store = Store(str(set_up), command=(
        f"fased agent models providers add old --kind openai-compatible --base-url {url} "
        f"-H X-Access-Key={ACCESS_KEY} -H X-Title=legacy"))
    store.append_internal([
        Draft("provider.added", "provider:old", {
            "provider": "old", "kind": "openai-compatible", "base_url": url,
            "headers": {"X-Access-Key": ACCESS_KEY, "X-Title": "legacy"}}),
        Draft("credential.set", "provider:old", {
            "provider": "old", "kind": "command", "command": f"echo {legacy_key}"})])
    store.close()
    fased = Recorder(run)
    fased(*MODELS, "set", "primary", "old/fake-model")
    assert fased("chat", "hi").stdout.strip() == "Hello from the fake model."
    request = server.requests[-1]
    assert request["headers"]["authorization"] == f"Basic {basic('carol:' + PASSWORD)}"
    assert request["headers"]["x-access-key"] == ACCESS_KEY
    assert request["query"] == {"token": QUERY_KEY}

    assert fased(*PROVIDERS, "show", "old").stdout.splitlines()[:4] == [
        "old (openai-compatible)",
        f"  Base URL:   http://***@{host}/v1?token=***",
        "  Header:     X-Title: legacy",
        "  Header:     X-Access-Key: (secret, but an older fased recorded it in the log: "
        "give it again: fased agent models providers set old -H X-Access-Key=VALUE)",
    ]
    shown = json.loads(fased(*PROVIDERS, "show", "old", "--json").stdout)
    assert (shown["headers"], shown["secret_headers"]) == ({"X-Title": "legacy"},
                                                           ["X-Access-Key"])
    assert fased(*PROVIDERS, "list").stdout.splitlines()[1].endswith(
        f"http://***@{host}/v1?token=***")
    fased(*PROVIDERS, "list", "--json")
    fased(*MODELS, "status", "--probe")
    fased("replay")
    replayed = [json.loads(line) for line in fased("replay", "--json").stdout.splitlines()]
    (added,) = [e for e in replayed if e["type"] == "provider.added"]
    assert added["data"]["base_url"] == f"http://***@{host}/v1?token=***"
    assert added["data"]["headers"] == {"X-Access-Key": "***", "X-Title": "legacy"}
    assert added["meta"]["command"] == (
        "fased agent models providers add old --kind openai-compatible --base-url "
        f"http://***@{host}/v1?token=*** -H X-Access-Key=*** -H X-Title=legacy")

    # given again, they move to credentials.json; the requests stay the same
    before = len(events(set_up))
    fased(*PROVIDERS, "set", "old", "--base-url", url, "-H", f"X-Access-Key={ACCESS_KEY}")
    (updated,) = events(set_up)[before:]
    assert updated["data"] == {
        "provider": "old", "base_url": f"http://{host}/v1", "secret_userinfo": True,
        "secret_query": ["token"], "headers": {"X-Title": "legacy"},
        "secret_headers": ["X-Access-Key"], "secret_headers_set": ["X-Access-Key"]}
    assert not any(f in json.dumps(updated) for f in forms(PASSWORD) | forms(QUERY_KEY)
                   | forms(ACCESS_KEY))
    assert fased(*PROVIDERS, "show", "old").stdout.splitlines()[:5] == [
        "old (openai-compatible)",
        f"  Base URL:   http://{host}/v1",
        "  URL secret: userinfo (in credentials.json)",
        "  URL secret: query token (in credentials.json)",
        "  Header:     X-Title: legacy",
    ]
    assert fased("chat", "hi again").stdout.strip() == "Hello from the fake model."
    request = server.requests[-1]
    assert request["headers"]["authorization"] == f"Basic {basic('carol:' + PASSWORD)}"
    assert request["headers"]["x-access-key"] == ACCESS_KEY
    assert request["query"] == {"token": QUERY_KEY}
    assert_not_printed(fased.printed, forms(PASSWORD) | forms(QUERY_KEY) | forms(ACCESS_KEY)
                       | {legacy_key})


@pytest.mark.parametrize(("argv", "recorded"), [
    (["chat", "see https://h.example/?a=b then api_key=zzz"],
     "fased chat see https://h.example/?a=*** then api_key=***"),
    (["config", "set", "x.token=abc"], "fased config set x.token=***"),
    (["agent", "models", "providers", "add", "g", "-HX-Signature=abc", "-HAccept=text/plain"],
     "fased agent models providers add g -HX-Signature=*** -HAccept=text/plain"),
    (["--home", "/h", "agent", "models", "providers", "add", "g", "--base-url",
      "https://u@h.example/v1?api-version=1&code=c0de#frag"],
     "fased agent models providers add g --base-url "
     "https://***@h.example/v1?api-version=1&code=***#***"),
])
def test_the_recorded_command_line_masks_every_secret(argv, recorded):
    from fased.commands.failures import command_line

    assert command_line(argv) == recorded


def test_a_fake_server_sees_no_credential_the_provider_was_not_given(set_up, ok, server):
    """The control: without credentials nothing of the kind is sent."""
    ok(*PROVIDERS, "add", "plain", "--kind", "openai-compatible", "--base-url",
       f"{server.url}/v1")
    ok(*MODELS, "set", "primary", "plain/fake-model")
    ok("chat", "hi")
    assert "authorization" not in server.requests[-1]["headers"]
    assert server.requests[-1]["query"] == {}
    assert not (set_up / "credentials.json").exists()



@pytest.mark.parametrize("text", [
    "HTTP Basic authentication required",
    "Loading... done",
    "model gpt-4o... not found (see https://example.test/docs?page=2)",
    "rate limited: 3 of 3 requests used",
])
def test_masking_leaves_ordinary_error_text_alone(text):
    from fased.redact import mask_secrets

    assert mask_secrets(text, [API_KEY, ACCESS_KEY, f"alice:{PASSWORD}", QUERY_KEY]) == text
