"""What a provider is given to send or to name: API keys (stored, from $VAR, from a command),
header values, environment variable names, Cloudflare account ids, kind-local model refs and
arguments that are not UTF-8. Each is refused where it is given, or, resolved at call time, is
that model's credential error: never an internal error, never a connection retried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import error_line, events, key_gateway_with_fallback

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeModelServer

MODELS = ["agent", "models"]
PROVIDERS = [*MODELS, "providers"]
CANNOT_CARRY = "holds a character an HTTP header cannot carry"


@pytest.fixture(autouse=True)
def _no_real_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASED_DETECT_ENDPOINTS", "")
    for name in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY",
                 "CLOUDFLARE_API_TOKEN", "GW_KEY"):
        monkeypatch.delenv(name, raising=False)


def refused(run, home: Path, *args: str, input: str | None = None) -> str:
    """The Error line of a command that must exit 2 and record nothing."""
    before = len(events(home))
    result = run(*args, input=input)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert len(events(home)) == before
    return error_line(result)


def turn_attempts(home: Path) -> list[tuple]:
    return [(e["data"]["model"], e["data"]["kind"], e["data"].get("status"),
             e["data"]["message"]) for e in events(home) if e["type"] == "turn.attempt_failed"]


# -- API keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "why"), [
    ("sk-abc\u2019def", "U+2019 at position 7"),  # a curly quote pasted with the key
    ("sk-a\tb", "U+0009 at position 5"),
    ("sk-\x1b[31mred", "U+001B at position 4"),
    ("sk-\x85x", "U+0085 at position 4"),
    ("sk-\u65e5\u672c", "U+65E5 at position 4"),
])
def test_auth_stdin_refuses_a_key_a_header_cannot_carry(set_up, ok, run, key, why):
    ok(*PROVIDERS, "add", "openai")
    line = refused(run, set_up, *MODELS, "auth", "openai", "--stdin", input=key + "\n")
    assert line == f"Error: the key {CANNOT_CARRY} ({why}); nothing was stored"
    assert key not in line
    assert not (set_up / "credentials.json").exists()


def test_auth_stdin_takes_a_latin1_key(set_up, ok):
    ok(*PROVIDERS, "add", "openai")
    ok(*MODELS, "auth", "openai", "--stdin", input="sk-caf\u00e9-key\n")
    creds = json.loads((set_up / "credentials.json").read_text())
    assert creds["providers"]["openai"]["api_key"] == "sk-caf\u00e9-key"


@pytest.mark.parametrize(("how", "value", "named"), [
    ("env", "sk-abc\u2019def", f"$GW_KEY {CANNOT_CARRY} (U+2019 at position 7)"),
    ("env", "sk-a\nX-Injected: y", f"$GW_KEY {CANNOT_CARRY} (U+000A at position 5)"),
    ("command", "sk-abc\u2019def",
     f"the key the credential command printed {CANNOT_CARRY} (U+2019 at position 7)"),
])
def test_a_bad_key_resolved_at_call_time_sends_nothing_and_falls_back(
        set_up, ok, run, monkeypatch, tmp_path, how, value, named):
    keyfile = tmp_path / "key.txt"
    keyfile.write_text(value + "\n", encoding="utf-8")
    monkeypatch.setenv("GW_KEY", value)
    with FakeModelServer(api_key="sk-gw-SECRET") as keyed, FakeModelServer() as spare:
        key_gateway_with_fallback(ok, keyed.url, spare.url + "/v1",
                                  ["--env", "GW_KEY"] if how == "env" else
                                  ["--command", f"cat {keyfile}"])

        result = run("chat", "hi")

        assert result.exit_code == 0, result.stderr
        assert result.stdout.rstrip("\n") == "Hello from the fake model."
        assert keyed.requests == []
        assert [r["model"] for r in spare.requests] == ["fake-model"]
        assert "retrying" not in result.stderr and "internal error" not in result.stderr
        assert (f"fased: gw/fake-model cannot be used: provider gw: {named}; falling back to "
                "spare/fake-model") in result.stderr.splitlines()
        assert turn_attempts(set_up) == [("gw/fake-model", "config", None, f"provider gw: {named}")]

        report = json.loads(run(*MODELS, "status", "--probe", "--timeout", "2", "--json").stdout)
        assert [(r["probe"], r["probe_message"]) for r in report["refs"]] == [
            ("auth", f"provider gw: {named}"), ("ok", None)]
        assert keyed.requests == []


def test_a_default_key_variable_a_header_cannot_carry_is_named(set_up, ok, monkeypatch):
    ok(*PROVIDERS, "add", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-\u2019")
    credential = json.loads(ok(*PROVIDERS, "show", "openai", "--json"))["credential"]
    assert (credential["source"], credential["ready"], credential["problem"]) == (
        "env:OPENAI_API_KEY", False, f"$OPENAI_API_KEY {CANNOT_CARRY} (U+2019 at position 4)")


# -- header values ----------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "error"), [
    ("X-Title=a\tb", f"invalid value for header X-Title: it {CANNOT_CARRY} (U+0009 at position 2)"),
    ("X-Title=caf\u2019", f"invalid value for header X-Title: it {CANNOT_CARRY} "
                          "(U+2019 at position 4)"),
    ("X-Api-Key=k\x7fey", f"invalid value for header X-Api-Key: it {CANNOT_CARRY} "
                          "(U+007F at position 2)"),
    ("X-Title:", "header X-Title has no value"),
    ("X-Title=", "header X-Title has no value"),
])
@pytest.mark.parametrize("verb", ["add", "set"])
def test_a_header_value_a_header_cannot_carry_is_refused(set_up, ok, run, verb, given, error):
    args = ["--kind", "openai-compatible", "--base-url", "http://127.0.0.1:9/v1"]
    if verb == "set":
        ok(*PROVIDERS, "add", "gw", *args)
        args = []
    line = refused(run, set_up, *PROVIDERS, verb, "gw", *args, "-H", given)
    assert line == f"Error: {error}"
    assert not (set_up / "credentials.json").exists()


def test_a_latin1_header_value_is_kept(set_up, ok):
    ok(*PROVIDERS, "add", "gw", "--kind", "openai-compatible", "--base-url",
       "http://127.0.0.1:9/v1", "-H", "X-Title=caf\u00e9 bar")
    assert "  Header:     X-Title: caf\u00e9 bar" in ok(*PROVIDERS, "show", "gw").splitlines()


def test_a_stored_header_value_a_header_cannot_carry_is_that_providers_error(set_up, ok, run):
    """credentials.json edited by hand (or written by an older fased): the provider cannot be
    used, said as such; nothing is sent and nothing fails as a bug."""
    with FakeModelServer() as srv:
        ok(*PROVIDERS, "add", "gw", "--kind", "openai-compatible", "--base-url", srv.url + "/v1",
           "-H", "X-Api-Key=secret")
        path = set_up / "credentials.json"
        creds = json.loads(path.read_text())
        creds["providers"]["gw"]["headers"]["X-Api-Key"] = "sec\u2019ret"
        path.write_text(json.dumps(creds))
        result = run(*MODELS, "list", "--provider", "gw", "--refresh")
        assert "internal error" not in result.stderr
        assert (f"gw: provider gw: the value of header X-Api-Key {CANNOT_CARRY} "
                "(U+2019 at position 4)") in result.stderr
        assert srv.requests == []


# -- environment variable names ---------------------------------------------------------------

def test_an_env_name_past_255_characters_is_refused_and_not_printed_whole(set_up, ok, run):
    ok(*PROVIDERS, "add", "openai")
    line = refused(run, set_up, *MODELS, "auth", "openai", "--env", "A" * 100_000)
    assert line == ("Error: the environment variable name is 100,000 characters; the limit "
                    "is 255")
    line = refused(run, set_up, *MODELS, "auth", "openai", "--env", "A" * 256)
    assert line.endswith("is 256 characters; the limit is 255")
    assert ok(*MODELS, "auth", "openai", "--env", "A" * 255) == (
        f"openai will read its key from ${'A' * 255} at call time.\n")


@pytest.mark.parametrize("name", ["1A", "A-B", "A B", "A\nB", "", "\u00c4"])
def test_an_env_name_not_shaped_like_one_is_refused(set_up, ok, run, name):
    ok(*PROVIDERS, "add", "openai")
    line = refused(run, set_up, *MODELS, "auth", "openai", "--env", name)
    assert line.startswith("Error: invalid environment variable name "), line
    assert "\n" not in line


# -- kind local: the one ref ------------------------------------------------------------------

def gguf(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


def test_a_local_provider_whose_one_ref_is_past_the_limit_is_refused(set_up, ok, run, tmp_path):
    model = gguf(tmp_path, "m" * 250)
    line = refused(run, set_up, *PROVIDERS, "add", "p" * 64, "--kind", "local",
                   "--model-path", str(model))
    assert line.startswith("Error: its one model ref, ")
    assert line.endswith(", would be 315 characters; the limit is 300")
    assert rows_of_providers(set_up) == []

    ok(*PROVIDERS, "add", "p" * 49, "--kind", "local", "--model-path", str(model))
    ok(*MODELS, "set", "primary", f"{'p' * 49}/{'m' * 250}")  # exactly 300: usable


def rows_of_providers(home: Path) -> list[str]:
    return [e["data"]["provider"] for e in events(home) if e["type"] == "provider.added"]


# -- Cloudflare account ids -------------------------------------------------------------------

@pytest.mark.parametrize("account", ["a?x=1", "../../evil#", "a/b", "a b", "a" * 65, "a%2F"])
def test_a_cloudflare_account_id_is_an_id(set_up, ok, run, account):
    before = rows_of_providers(set_up)
    line = refused(run, set_up, *PROVIDERS, "add", "cf", "--kind", "cloudflare",
                   "--account-id", account)
    assert line == f"Error: invalid Cloudflare account id {account!r}"
    assert rows_of_providers(set_up) == before
    assert not (set_up / "credentials.json").exists()

    ok(*PROVIDERS, "add", "cf", "--kind", "cloudflare", "--account-id", "0123456789abcdef" * 2)
    line = refused(run, set_up, *PROVIDERS, "set", "cf", "--account-id", account)
    assert line == f"Error: invalid Cloudflare account id {account!r}"
    ok(*PROVIDERS, "remove", "cf")


def test_an_account_id_is_checked_on_any_kind(set_up, ok, run):
    ok(*PROVIDERS, "add", "openai")
    line = refused(run, set_up, *PROVIDERS, "set", "openai", "--account-id", "a\nb")
    assert line == "Error: invalid Cloudflare account id 'a\\nb'"


# -- arguments that are not UTF-8 -------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [b"add", b"a\x85b", b"--kind", b"ollama"],
    [b"add", b"gw", b"--kind", b"oll\x85ama"],
    [b"add", b"gw", b"--kind", b"ollama", b"-H", b"X-T\x85itle=a"],
    [b"add", b"cf", b"--kind", b"cloudflare", b"--account-id", b"a\x85b"],
], ids=["id", "kind", "header", "account"])
def test_an_argument_that_is_not_utf8_says_so(set_up, args):
    done = subprocess.run([sys.executable.encode(), b"-c",
                           b"from fased.commands.entry import main; main()",
                           b"agent", b"models", b"providers", *args],
                          capture_output=True, env=os.environ, timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    first = err.splitlines()[0]
    assert first.startswith("Error: '") and "\\x85" in first, err
    assert first.endswith("' is not UTF-8 text: fased looks up and records names, ids and "
                          "messages as UTF-8"), err


def test_an_env_name_that_is_not_utf8_says_so(set_up, ok):
    ok(*PROVIDERS, "add", "openai")
    done = subprocess.run([sys.executable.encode(), b"-c",
                           b"from fased.commands.entry import main; main()",
                           b"agent", b"models", b"auth", b"openai", b"--env", b"K\x85"],
                          capture_output=True, env=os.environ, timeout=60)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines()[0] == (
        "Error: 'K\\x85' is not UTF-8 text: fased looks up and records names, ids and "
        "messages as UTF-8")


@pytest.mark.parametrize("args", [
    ("channel", "add", "telegram", "--token-env", "V" * 100000),
    ("skill", "env", "weather", "V" * 100000),
])
def test_every_variable_name_option_has_the_same_limit(set_up, run, args):
    """`channel add --token-env` and `skill env` had a regex of their own, without the
    255-character limit `auth --env` has: a 100,000-character name was printed whole."""
    before = len(events(set_up))
    result = run(*args, input="value\n")
    assert result.exit_code == 2, result.stderr
    assert "is 100,000 characters; the limit is 255" in result.stderr
    assert all(len(line) < 1000 for line in result.stderr.splitlines())
    assert len(events(set_up)) == before
