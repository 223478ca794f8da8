"""What a tool can reach of the user's credentials: nothing that reaches the log or the model.

A command the agent runs (exec, without a kernel sandbox) can read files fased cannot hide
from it: credentials.json beside a workspace inside the home, a hard link to it, the
variable a provider reads its key from. Whatever a tool's output carries of a stored or
configured secret is masked before it is recorded or sent; the environment a tool gets
holds none of them; the file tools refuse a hard link to the home's own files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import events
from fakeserver import Reply

from fased.tools.base import ToolContext, ToolError
from fased.tools.exec import tool_environment

KEY = "sk-proj-TOPSECRETKEY0123456789abcd"


@pytest.fixture
def keyed(set_up, ok, server) -> Path:
    """Agent main on an OpenAI-compatible provider with a stored key; exec runs unasked."""
    ok("agent", "models", "providers", "add", "o", "--kind", "vllm", "--base-url",
       f"{server.url}/v1")
    ok("agent", "models", "auth", "o", "--stdin", input=KEY)
    ok("agent", "models", "set", "primary", "o/fake-model")
    ok("config", "set", "agents.defaults.retries", "0")
    ok("config", "set", "tools.exec.mode", "full")
    return set_up


def everything_recorded(home: Path) -> bytes:
    """The bytes of every file fased wrote under the home, but credentials.json."""
    return b"".join(p.read_bytes() for p in home.rglob("*")
                    if p.is_file() and p.name != "credentials.json")


def tool_messages(server) -> list[str]:
    return [m["content"] for m in server.requests[-1]["json"]["messages"] if m["role"] == "tool"]


def test_a_stored_key_that_exec_reads_is_masked_in_the_log_the_export_and_the_request(
        keyed, ok, server):
    server.script(Reply("", tool_calls=[("exec", json.dumps(
        {"command": "cat ../credentials.json; grep -h api_key ../credentials.json"}))]),
        Reply("done"))
    ok("chat", "go")

    sent = tool_messages(server)
    assert len(sent) == 1 and "api_key" in sent[0] and "***" in sent[0]
    assert KEY not in json.dumps(server.requests[-1]["json"])
    assert KEY.encode() not in everything_recorded(keyed)
    assert KEY not in ok("session", "export")
    assert KEY not in ok("replay", "--json")


@pytest.fixture
def env_keyed(set_up, ok, server, monkeypatch) -> Path:
    """Agent main on a provider that reads its key from $LLM_CRED; exec runs unasked."""
    ok("agent", "models", "providers", "add", "o", "--kind", "vllm", "--base-url",
       f"{server.url}/v1")
    ok("agent", "models", "auth", "o", "--env", "LLM_CRED")
    ok("agent", "models", "set", "primary", "o/fake-model")
    ok("config", "set", "tools.exec.mode", "full")
    monkeypatch.setenv("LLM_CRED", "supersecretvalue42")
    return set_up


def test_the_variable_a_provider_reads_its_key_from_never_reaches_a_tool(env_keyed, ok, server):
    server.script(Reply("", tool_calls=[("exec", json.dumps(
        {"command": "env; echo; cat $HOME/.profile-holding-it 2>/dev/null; echo seen"}))]),
        Reply("done"))
    ok("chat", "go")

    sent = tool_messages(server)
    assert "seen" in sent[0]
    assert "LLM_CRED" not in sent[0] and "supersecretvalue42" not in sent[0]
    assert b"supersecretvalue42" not in everything_recorded(env_keyed)
    headers = {k.lower(): v for k, v in server.requests[-1]["headers"].items()}
    assert headers["authorization"] == "Bearer supersecretvalue42"  # the provider had it


def test_a_key_taken_from_the_environment_is_masked_when_a_tool_finds_it_elsewhere(
        env_keyed, ok, server, tmp_path):
    """The variable is dropped, but the same value in a file the command reads is the key
    all the same."""
    rc = tmp_path / "rc"
    rc.write_text("export LLM_CRED=supersecretvalue42\n")
    server.script(Reply("", tool_calls=[("exec", json.dumps({"command": f"cat {rc}"}))]),
                  Reply("done"))
    ok("chat", "go")

    assert tool_messages(server)[0].strip().endswith("LLM_CRED=***")
    assert b"supersecretvalue42" not in everything_recorded(env_keyed)


@pytest.mark.parametrize("name", [
    "DB_PASS", "MY_PASSWD", "PGPASSWORD", "PRIVATE_KEY", "SSH_PRIVATE_KEY", "CREDENTIALS",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON", "OPENAI_KEY", "STRIPE_KEY", "SENTRY_DSN",
    "SLACK_WEBHOOK_URL", "SIGNING_KEY", "SESSION_KEY", "PASSPHRASE", "MYSQL_PWD"])
def test_secret_looking_variables_are_dropped_from_a_tools_environment(name):
    assert name not in tool_environment({name: "v", "PATH": "/usr/bin"})


@pytest.mark.parametrize("name", ["HOME", "PATH", "LANG", "KEYBOARD", "MONKEY", "TERM", "PWD",
                                  "OLDPWD", "PASSAGE", "KEYMAP", "COMPASS", "DISPLAY"])
def test_ordinary_variables_stay_in_a_tools_environment(name):
    assert name in tool_environment({name: "v"})


@pytest.mark.parametrize("target", ["credentials.json", "state.db", "fased.json", "log"])
def test_a_hard_link_to_one_of_the_homes_files_is_refused_by_the_file_tools(keyed, target):
    home = keyed
    source = next((home / "log").glob("*.jsonl")) if target == "log" else home / target
    workspace = home / "workspace"
    workspace.mkdir(exist_ok=True)
    os.link(source, workspace / "linked.txt")
    ctx = ToolContext(agent="main", session="s", turn="t", call_id="c", workspace=workspace,
                      home=home)
    with pytest.raises(ToolError, match="hard link to one of the fased home's own files"):
        ctx.resolve("linked.txt")
    (workspace / "other.txt").write_text("x")
    os.link(workspace / "other.txt", workspace / "other-link.txt")
    assert ctx.resolve("other-link.txt") == workspace / "other-link.txt"  # links of its own


def test_a_masked_tool_result_is_still_recorded_once(keyed, ok, server):
    server.script(Reply("", tool_calls=[("exec", json.dumps(
        {"command": "cat ../credentials.json"}))]), Reply("done"))
    ok("chat", "go")
    finished = [e for e in events(keyed) if e["type"] == "tool.finished"]
    assert len(finished) == 1 and finished[0]["data"]["status"] == "ok"
