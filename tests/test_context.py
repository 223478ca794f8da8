"""What the model is told: the system prompt fased assembles from the agent and its workspace,
the budgets, the first-run file, and `fased agent context`, which shows the next request."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import events
from fakeserver import Reply
from hypothesis import given
from hypothesis import strategies as st

from fased.context import share_budget


def system_of(request: dict) -> str:
    messages = request["json"]["messages"]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


def ws(home: Path) -> Path:
    return home / "workspace"


def test_the_prompt_names_the_agent_its_workspace_zone_and_tools(models, ok, server):
    ok("agent", "set-identity", "main", "--emoji", "🦊")
    ok("config", "set", "agents.defaults.userTimezone", "Europe/Berlin")

    ok("chat", "hello")

    system = system_of(server.requests[-1])
    assert system.startswith("You are main 🦊, a personal AI agent")
    assert f"Your workspace is {ws(models)}" in system
    assert "The user's time zone is Europe/Berlin." in system
    assert "- read: " in system and "- exec: " in system
    assert "2026" not in system and ":" not in system.splitlines()[2].split("is", 1)[1][:6]


def test_bootstrap_files_go_in_their_order_blank_and_placeholder_ones_left_out(models, ok,
                                                                               server):
    for name, text in (("MEMORY.md", "memory: the user likes tea"),
                       ("USER.md", "user: Ada"), ("SOUL.md", "soul: calm"),
                       ("AGENTS.md", "agents: be brief"), ("TOOLS.md", "   \n")):
        (ws(models) / name).write_text(text)
    (ws(models) / "BOOTSTRAP.md").unlink()

    ok("chat", "hello")

    system = system_of(server.requests[-1])
    order = [system.index(t) for t in ("agents: be brief", "soul: calm", "user: Ada",
                                       "memory: the user likes tea")]
    assert order == sorted(order)
    assert "## TOOLS.md" not in system  # blank
    assert "## HEARTBEAT.md" not in system  # the placeholder setup wrote
    assert "## IDENTITY.md" in system  # a template that says something (name, emoji)
    view = json.loads(ok("agent", "context", "--json"))
    reasons = {f["name"]: f["reason"] for f in view["files"]}
    assert reasons == {"AGENTS.md": None, "SOUL.md": None, "TOOLS.md": "blank",
                       "IDENTITY.md": None, "USER.md": None, "HEARTBEAT.md": "template",
                       "BOOTSTRAP.md": "missing", "MEMORY.md": None}


def test_a_bootstrap_file_linked_out_of_the_workspace_is_not_sent(models, ok, server,
                                                                   tmp_path):
    """A workspace is often a clone: AGENTS.md -> ~/.ssh/id_rsa sent the key to the model
    in every system prompt. A link inside the workspace still counts."""
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- hunter2\n")
    (ws(models) / "AGENTS.md").unlink()
    (ws(models) / "AGENTS.md").symlink_to(secret)
    (ws(models) / "notes").mkdir()
    (ws(models) / "notes" / "soul.md").write_text("soul: calm")
    (ws(models) / "SOUL.md").unlink()
    (ws(models) / "SOUL.md").symlink_to("notes/soul.md")

    ok("chat", "hello")

    system = system_of(server.requests[-1])
    assert "hunter2" not in system and "soul: calm" in system
    view = json.loads(ok("agent", "context", "--json"))
    reasons = {f["name"]: f["reason"] for f in view["files"]}
    assert reasons["AGENTS.md"] == "a symlink out of the workspace"
    assert reasons["SOUL.md"] is None


def test_memory_md_falls_back_to_lowercase(models, ok, server):
    (ws(models) / "MEMORY.md").unlink()
    (ws(models) / "memory.md").write_text("lowercase memory")
    ok("chat", "hi")
    assert "## memory.md\n\nlowercase memory" in system_of(server.requests[-1])


def test_budgets_are_shared_fairly_and_a_cut_file_says_how_to_read_the_rest(models, ok,
                                                                            server):
    ok("config", "set", "agents.defaults.bootstrapMaxChars", "1000")
    ok("config", "set", "agents.defaults.bootstrapTotalMaxChars", "1500")
    (ws(models) / "AGENTS.md").write_text("".join(f"agents line {i}\n" for i in range(400)))
    (ws(models) / "SOUL.md").write_text("short soul")
    (ws(models) / "USER.md").write_text("u" * 3000)
    for name in ("IDENTITY.md", "BOOTSTRAP.md"):
        (ws(models) / name).unlink()

    view = json.loads(ok("agent", "context", "--json"))

    files = {f["name"]: f for f in view["files"]}
    assert files["SOUL.md"]["injected"] == 10  # a short file is never starved
    assert files["AGENTS.md"]["reason"] == files["USER.md"]["reason"] == "truncated"
    assert files["AGENTS.md"]["injected"] <= 745 and files["USER.md"]["injected"] <= 745
    assert sum(f["injected"] for f in files.values()) <= 1500
    ok("chat", "hi")
    system = system_of(server.requests[-1])
    assert "[... AGENTS.md goes on:" in system
    assert 'read(path="AGENTS.md", offset=' in system
    assert "agents line 399" not in system


@given(sizes=st.lists(st.integers(0, 50_000), max_size=8), per_file=st.integers(0, 30_000),
       total=st.integers(0, 80_000))
def test_share_budget_is_capped_and_fair(sizes, per_file, total):
    given_out = share_budget(sizes, per_file, total)
    assert sum(given_out) <= total
    for size, n in zip(sizes, given_out, strict=True):
        assert 0 <= n <= min(size, per_file)
    # max-min fair: a file cut short got at least as much as any other file
    for size, n in zip(sizes, given_out, strict=True):
        if n < min(size, per_file):
            assert all(n >= m - 1 for m in given_out)


def test_a_model_without_tools_is_not_told_to_do_the_first_run_ritual(models, ok, server):
    """The ritual is filling in files and deleting BOOTSTRAP.md: a model offered no tools
    cannot do it, and a small one told to only talks about it."""
    ref = json.loads(ok("agent", "models", "status", "--json"))["refs"][0]["ref"]
    ok("config", "set", f'models.capabilities["{ref}"].tools', "false")
    ok("chat", "hello")
    system = system_of(server.requests[-1])
    assert "No tools are available" in system
    assert "first-run ritual" not in system and "# BOOTSTRAP.md" not in system
    assert "tool calls" not in system
    assert f"Your workspace is {ws(models)}." in system
    view = json.loads(ok("agent", "context", "--json"))
    assert {f["name"]: f["reason"] for f in view["files"]}["BOOTSTRAP.md"] == "needs tools"
    assert (ws(models) / "BOOTSTRAP.md").exists()


def test_a_model_without_tools_is_not_told_how_to_use_memory_tools(models, ok, server):
    """AGENTS.md as setup wrote it explains write, edit, memory_search and memory_get: a
    model offered none of them gets the rest of the file (its instructions, the heartbeat),
    and every token of context costs a CPU model decode time. A user's own AGENTS.md goes in
    whole, and replay rebuilds the request exactly."""
    ref = json.loads(ok("agent", "models", "status", "--json"))["refs"][0]["ref"]
    ok("config", "set", f'models.capabilities["{ref}"].tools', "false")
    ok("chat", "hello")
    system = system_of(server.requests[-1])
    assert "memory_search" not in system and "`write` and `edit`" not in system
    assert "## Instructions\n- Be direct." in system
    assert "## Heartbeat\nA heartbeat is a periodic check-in" in system
    view = {f["name"]: f for f in json.loads(ok("agent", "context", "--json"))["files"]}
    agents = view["AGENTS.md"]
    assert agents["reason"] == "memory section needs tools"
    assert 0 < agents["injected"] < agents["size"] - 800
    turn = [e for e in events(models) if e["type"] == "turn.completed"][-1]["data"]["turn"]
    assert system in ok("replay", "--turn", turn, "--request")
    ok("config", "set", f'models.capabilities["{ref}"].tools', "true")
    ok("chat", "with tools")
    assert "memory_search(query)" in system_of(server.requests[-1])

    (ws(models) / "AGENTS.md").write_text("# Mine\n\n## Memory\nUse memory_search often.\n")
    ok("chat", "again")
    assert "Use memory_search often." in system_of(server.requests[-1])


def test_the_first_run_file_is_followed_then_its_deletion_is_recorded_for_good(models, ok,
                                                                              server):
    assert (ws(models) / "BOOTSTRAP.md").exists()
    ok("chat", "hello")
    assert "it is your first-run ritual" in system_of(server.requests[-1])

    (ws(models) / "BOOTSTRAP.md").unlink()
    ok("chat", "done with that")

    removed = [e["data"] for e in events(models) if e["type"] == "workspace.file_removed"]
    assert removed == [{"agent": "main", "workspace": str(ws(models)), "file": "BOOTSTRAP.md"}]
    assert "first-run ritual" not in system_of(server.requests[-1])
    (ws(models) / "BOOTSTRAP.md").write_text("a file with the old name")
    ok("chat", "again")
    assert "a file with the old name" not in system_of(server.requests[-1])
    view = json.loads(ok("agent", "context", "--json"))
    assert {f["name"]: f["reason"] for f in view["files"]}["BOOTSTRAP.md"] == "removed"
    ok("agent", "create", "second")  # a new agent's workspace is not this one
    assert len([e for e in events(models) if e["type"] == "workspace.file_removed"]) == 1


def test_a_file_is_recorded_once_per_content_and_turns_refer_to_it(models, ok, server):
    (ws(models) / "AGENTS.md").write_text("version one")
    ok("chat", "one")
    ok("chat", "two")
    (ws(models) / "AGENTS.md").write_text("version two")
    ok("chat", "three")

    files = [e["data"] for e in events(models)
             if e["type"] == "context.recorded" and e["data"]["kind"] == "file"
             and e["data"]["name"] == "AGENTS.md"]
    assert [f["text"] for f in files] == ["version one", "version two"]
    completed = [e["data"] for e in events(models) if e["type"] == "turn.completed"]
    systems = [c["request"]["system"] for c in completed]
    assert systems[0] == systems[1] != systems[2]


def test_agent_context_shows_what_the_next_turn_sends(models, ok, server):
    (ws(models) / "AGENTS.md").write_text("be brief")
    server.script(Reply("an answer"))
    ok("chat", "earlier question")

    view = json.loads(ok("agent", "context", "--json"))
    human = ok("agent", "context")

    assert view["agent"] == "main" and view["session"] == "s-1"
    assert "be brief" in view["system_prompt"]
    assert view["tools"] == ["read", "write", "edit", "exec", "process", "memory_search",
                             "memory_get"]
    assert view["tokens"]["history"] > 0
    assert view["tokens"]["total"] == sum(view["tokens"][k] for k in ("system", "tools",
                                                                     "history"))
    assert "AGENTS.md" in human and ("Tools offered: read, write, edit, exec, process, "
                                     "memory_search, memory_get") in human
    # what it shows is what the next turn sends
    ok("chat", "next")
    assert system_of(server.requests[-1]) == view["system_prompt"]


def test_old_large_results_are_shortened_before_whole_turns_are_dropped(models, ok, server):
    (ws(models) / "big.txt").write_text(("B" * 99 + "\n") * 90)
    server.script(Reply("", tool_calls=[("read", json.dumps({"path": "big.txt"}))]),
                  Reply("it is big"))
    ok("chat", "read the big file")
    fixed = json.loads(ok("agent", "context", "--json"))["tokens"]
    # room for the earlier turn only once its 9000-character result is cut to 2000
    ok("config", "set", "agents.defaults.contextWindow",
       str(fixed["system"] + fixed["tools"] + 1024 + 1200))
    server.script(Reply("fine"))

    ok("chat", "and now?")

    messages = server.requests[-1]["json"]["messages"]
    results = [m for m in messages if m["role"] == "tool"]
    assert len(results) == 1 and results[0]["content"].startswith("B" * 99)
    assert results[0]["content"].count("B") <= 2000
    assert "the result was cut at 2,000" in results[0]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant",
                                             "user"]
    done = [e["data"] for e in events(models) if e["type"] == "turn.completed"][-1]
    assert done["request"]["shortened"] and done["request"]["shorten_to"] == 2000

    ok("config", "set", "agents.defaults.contextWindow",
       str(fixed["system"] + fixed["tools"] + 1024 + 100))
    server.script(Reply("fine again"))
    ok("chat", "and again?")
    # the turn with the call and its result went whole; the short turn after it stayed
    assert [m["role"] for m in server.requests[-1]["json"]["messages"]] == [
        "system", "user", "assistant", "user"]


def test_the_agents_md_setup_writes_tells_the_model_how_memory_is_kept(models, ok, server):
    ok("chat", "hello")

    system = system_of(server.requests[-1])
    memory = system[system.index("## Memory"):]
    for words in ("`MEMORY.md`", "`memory/YYYY-MM-DD.md`", "`memory_search(query)`",
                  "`memory_get(path, from, lines)`", "`write` and `edit`"):
        assert words in memory, words
    assert "reply exactly `HEARTBEAT_OK`" in system
