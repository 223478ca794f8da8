"""Agents that act: the tool loop end to end, through the real CLI against the fake server in
all three wire formats. What a user notices: the reply on stdout, `-> tool  args` on stderr,
the events (a step before any call runs, started before it executes, one terminal event),
what the next request carried, and that nothing runs twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import events, rows, run_process, wait_for
from fakeserver import Reply

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
KINDS = ["ollama", "openai-compatible", "anthropic"]


def of_type(home: Path, *types: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] in types]


def call(name: str, **args) -> tuple[str, str]:
    return (name, json.dumps(args))


def use(ok, server, kind: str) -> None:
    """Answer through a provider of `kind` on the fake server."""
    if kind == "ollama":
        return
    url = server.url if kind == "anthropic" else server.url + "/v1"
    ok("agent", "models", "providers", "add", "p2", "--kind", kind, "--base-url", url)
    if kind == "anthropic":  # a hosted kind: it needs a key
        ok("agent", "models", "auth", "p2", "--stdin", input="sk-ant-test-key\n")
    ok("agent", "models", "set", "primary", "p2/fake-model")


def workspace(home: Path) -> Path:
    return home / "workspace"


def request_text(request: dict) -> str:
    return json.dumps(request["json"], ensure_ascii=False)


def tool_names(request: dict) -> list[str]:
    out = []
    for tool in request["json"].get("tools") or []:
        out.append(tool.get("name") or tool.get("function", {}).get("name"))
    return out


@pytest.fixture
def agent(models, ok):
    """The models fixture, with exec allowed to run without asking."""
    ok("config", "set", "tools", '{"exec": {"mode": "full"}}')
    return models


# -- the loop ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_a_tool_call_runs_and_its_result_goes_back_to_the_model(agent, ok, run, server, kind,
                                                                 stream):
    use(ok, server, kind)
    (workspace(agent) / "notes.txt").write_text("the answer is 42\n")
    server.script(Reply("Let me look.", tool_calls=[call("read", path="notes.txt")]),
                  Reply("The notes say 42."))

    result = run("chat", "--stream" if stream else "--no-stream", "what do my notes say?")

    assert result.exit_code == 0, result.stderr
    if stream:
        assert result.stdout == "Let me look.\nThe notes say 42.\n"
    else:
        assert result.stdout == "The notes say 42.\n"
    assert "-> read  notes.txt" in result.stderr.splitlines()
    [step] = of_type(agent, "turn.step")
    [started] = of_type(agent, "tool.started")
    [finished] = of_type(agent, "tool.finished")
    [done] = of_type(agent, "turn.completed")
    assert [c["name"] for c in step["calls"]] == ["read"]
    assert json.loads(step["calls"][0]["arguments"]) == {"path": "notes.txt"}
    assert started["call"] == finished["call"] == step["calls"][0]["id"]
    assert finished["status"] == "ok" and "the answer is 42" in finished["result"]
    assert (done["reply"], done["steps"]) == ("The notes say 42.", 2)
    types = [e["type"] for e in events(agent)]
    assert types.index("turn.step") < types.index("tool.started") < types.index(
        "tool.finished") < types.index("turn.completed")
    first, second = server.requests[-2:]
    assert "read" in tool_names(first)
    assert "the answer is 42" in request_text(second)
    assert "the answer is 42" not in request_text(first)


def test_the_calls_of_one_reply_run_in_order_and_json_lists_them(agent, ok, run, server):
    server.script(Reply("", tool_calls=[call("write", path="a.txt", content="one"),
                                        call("exec", command="cat a.txt > b.txt")]),
                  Reply("done"))

    result = run("chat", "--json", "make the files")

    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert [(c["name"], c["status"]) for c in out["calls"]] == [("write", "ok"), ("exec", "ok")]
    assert out["reply"] == "done" and out["steps"] == 2
    assert (workspace(agent) / "b.txt").read_text() == "one"


def test_later_turns_see_earlier_calls_and_results(agent, ok, run, server):
    (workspace(agent) / "notes.txt").write_text("remember: blue\n")
    server.script(Reply("", tool_calls=[call("read", path="notes.txt")]), Reply("noted"))
    ok("chat", "read my notes")
    server.script(Reply("It was blue."))

    ok("chat", "what colour was it?")

    later = server.requests[-1]
    assert "remember: blue" in request_text(later)


# -- policy -----------------------------------------------------------------------------------

def test_a_denied_tool_is_never_offered_and_a_call_to_it_runs_nothing(agent, ok, run, server):
    ok("agent", "tools", "deny", "main", "exec")
    server.script(Reply("", tool_calls=[call("exec", command="touch ran")]), Reply("ok"))

    result = run("chat", "run it")

    assert result.exit_code == 0, result.stderr
    assert "exec" not in tool_names(server.requests[0])
    assert not (workspace(agent) / "ran").exists()
    assert of_type(agent, "tool.started") == []
    [finished] = of_type(agent, "tool.finished")
    assert finished["status"] == "denied"
    assert "not allowed" in finished["result"]


def test_an_allowlisted_command_runs_without_asking(models, ok, run, server):
    ok("config", "set", "tools", '{"exec": {"mode": "ask", "allowlist": ["touch *"]}}')
    server.script(Reply("", tool_calls=[call("exec", command="touch ran")]), Reply("ok"))

    assert run("chat", "run it", env={"FASED_NO_TTY": "1"}).exit_code == 0

    assert (workspace(models) / "ran").exists()
    [started] = of_type(models, "tool.started")
    assert "allowlist" in started["approval"]


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/hostname", "../credentials.json",
                                  "link/secret.txt"])
def test_a_path_outside_the_workspace_gets_an_error_result(agent, ok, run, server, tmp_path,
                                                           path):
    secret = tmp_path / "secret-dir"
    secret.mkdir()
    (secret / "secret.txt").write_text("TOPSECRET")
    (workspace(agent) / "link").symlink_to(secret)
    (agent / "credentials.json").write_text('{"providers": {"x": {"api_key": "TOPSECRET"}}}')
    server.script(Reply("", tool_calls=[call("read", path=path)]), Reply("ok"))

    assert run("chat", "read it").exit_code == 0

    [finished] = of_type(agent, "tool.finished")
    assert finished["status"] == "error"
    assert "TOPSECRET" not in request_text(server.requests[-1])


def test_unknown_tools_and_bad_arguments_are_results_for_the_model(agent, ok, run, server):
    use(ok, server, "openai-compatible")  # arguments travel as text there, broken JSON too
    server.script(Reply("", tool_calls=[("nosuch", "{}"), ("read", "{not json"),
                                        ("read", '{"path": 5}')]),
                  Reply("sorry"))

    result = run("chat", "go")
    assert result.exit_code == 0, result.stderr

    results = [(f["status"], f["result"]) for f in of_type(agent, "tool.finished")]
    assert [s for s, _ in results] == ["error", "error", "error"]
    assert results[0][1].startswith("Unknown tool 'nosuch'. Available: read")
    assert "not valid JSON" in results[1][1]
    assert "Invalid arguments" in results[2][1]
    assert of_type(agent, "tool.started") == []


# -- limits ------------------------------------------------------------------------------------

def test_the_same_call_with_the_same_result_three_times_ends_the_loop(agent, ok, run, server):
    (workspace(agent) / "a.txt").write_text("same")
    server.default = Reply("", tool_calls=[call("read", path="a.txt")])

    result = run("chat", "loop")

    assert result.exit_code == 0, result.stderr
    assert len(of_type(agent, "tool.finished")) == 3
    [done] = of_type(agent, "turn.completed")
    assert "same result 3 times" in done["stopped"]
    assert "fased stopped this turn" in result.stdout


def test_max_iterations_ends_the_loop_with_a_note(agent, ok, run, server):
    ok("config", "set", "tools", '{"exec": {"mode": "full"}, "maxIterations": 2}')
    server.script(*[Reply("", tool_calls=[call("exec", command=f"echo {i}")])
                    for i in range(5)])

    result = run("chat", "go")

    assert result.exit_code == 0, result.stderr
    assert len(server.requests) == 2
    [done] = of_type(agent, "turn.completed")
    assert "tools.maxIterations (2" in done["stopped"]


def test_a_big_result_is_cut_for_the_model_and_kept_in_the_log(agent, ok, run, server):
    (workspace(agent) / "big.txt").write_text("x" * 30_000)
    ok("config", "set", "tools", '{"exec": {"mode": "full"}, "maxResultChars": 1000}')
    server.script(Reply("", tool_calls=[call("exec", command="cat big.txt")]), Reply("ok"))

    assert run("chat", "go").exit_code == 0

    [finished] = of_type(agent, "tool.finished")
    assert finished["result"].count("x") >= 30_000
    sent = request_text(server.requests[-1])
    assert "x" * 950 in sent and "x" * 1001 not in sent
    assert "the result was cut at 1,000" in sent


def test_a_reply_that_is_a_json_tool_call_is_taken_as_one(agent, ok, run, server):
    (workspace(agent) / "notes.txt").write_text("from text")
    server.script(Reply('{"name": "read", "arguments": {"path": "notes.txt"}}'), Reply("ok"))

    assert run("chat", "go").exit_code == 0

    [step] = of_type(agent, "turn.step")
    assert step["calls"][0]["source"] == "text"
    assert "from text" in request_text(server.requests[-1])


# -- at most once, with real processes ---------------------------------------------------------

def test_a_runner_killed_while_exec_runs_is_taken_over_and_the_call_never_runs_twice(
        agent, ok, server):
    count = workspace(agent) / "count"
    server.script(Reply("", tool_calls=[call("exec", command="echo x >> count; sleep 5")]),
                  Reply("finished"))
    ok("chat", "--queue", "count once")
    runner = subprocess.Popen([*FASED, "run", "--lease", "2", "--poll", "0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: count.exists() and count.read_text())
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
    finally:
        runner.kill()
        runner.communicate()

    time.sleep(2.2)  # the dead runner's lease runs out
    again = run_process("run", "--until-idle", "--poll", "0.1")

    assert again.returncode == 0, again.stderr
    assert count.read_text() == "x\n"
    [finished] = of_type(agent, "tool.finished")
    assert finished["status"] == "interrupted"
    assert "may or may not have taken effect" in finished["result"]
    [done] = of_type(agent, "turn.completed")
    assert done["reply"] == "finished"
    assert "may or may not have taken effect" in request_text(server.requests[-1])


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped is not: PID 1 here may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_during_a_tool_stops_its_process_group(agent, ok, server):
    pidfile = workspace(agent) / "pid"
    server.script(Reply("", tool_calls=[call("exec", command="sleep 30 & echo $! > pid; wait")]))
    chat = subprocess.Popen([*FASED, "chat", "wait"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip()))
    chat.send_signal(signal.SIGINT)
    _, err = chat.communicate(timeout=20)

    assert chat.returncode == 130, err
    wait_for(lambda: not alive(pid), timeout=5)
    [finished] = of_type(agent, "tool.finished")
    assert finished["status"] == "interrupted"
    assert rows(agent, "SELECT state FROM turns") == [{"state": "aborted"}]


def test_steering_skips_the_rest_of_the_calls_and_the_message_joins_the_turn(agent, ok, server):
    ok("config", "set", "agents.defaults.queue", '{"mode": "steer"}')
    server.script(Reply("", tool_calls=[call("exec", command="sleep 1.5"),
                                        call("exec", command="touch second")]),
                  Reply("changed course"))
    chat = subprocess.Popen([*FASED, "chat", "do two things"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: of_type(agent, "tool.started"))
    ok("chat", "--queue", "stop, do something else")
    out, err = chat.communicate(timeout=30)

    assert chat.returncode == 0, err
    assert out.strip() == "changed course"
    assert not (workspace(agent) / "second").exists()
    statuses = [(f["status"], f["result"]) for f in of_type(agent, "tool.finished")]
    assert statuses[0][0] == "ok"
    assert statuses[1] == ("skipped", "Skipped due to queued user message.")
    [steered] = of_type(agent, "turn.steered")
    assert steered["step"] == 1
    last = server.requests[-1]["json"]["messages"]
    users = [m for m in last if m["role"] == "user"]
    assert users[-1]["content"] == "stop, do something else"
    assert len(server.requests) == 2  # the steered message was not answered on its own
    assert [r["state"] for r in rows(agent, "SELECT state FROM turns ORDER BY queued_seq")] == [
        "completed", "merged"]


# -- what the user can see of it -------------------------------------------------------------

def test_the_transcript_and_replay_show_calls_and_results(agent, ok, run, server):
    (workspace(agent) / "notes.txt").write_text("hello notes")
    server.script(Reply("Reading.", tool_calls=[call("read", path="notes.txt")]),
                  Reply("Done."))
    ok("chat", "read")

    transcript = agent / "agents" / "main" / "sessions" / "s-1.jsonl"
    lines = [json.loads(x) for x in transcript.read_text().splitlines()][1:]
    assert [(m["role"], m.get("status")) for m in lines] == [
        ("user", None), ("assistant", None), ("tool", "ok"), ("assistant", None)]
    assert lines[1]["tool_calls"][0]["name"] == "read"
    assert "hello notes" in lines[2]["content"]
    shown = ok("replay", "--type", "tool.*")
    assert "tool.started" in shown and "tool.finished" in shown
    assert ok("replay", "--verify") == "Projections match the log.\n"


def test_replay_shows_each_model_call_of_a_turn_exactly_as_sent(agent, ok, run, server):
    (workspace(agent) / "notes.txt").write_text("file body")
    server.script(Reply("", tool_calls=[call("read", path="notes.txt")]), Reply("Done."))
    ok("chat", "read")
    turn = of_type(agent, "turn.queued")[0]["turn"]

    calls = json.loads(ok("replay", "--turn", turn, "--request", "--json"))

    assert [c["step"] for c in calls] == [1, None]
    for c, sent in zip(calls, server.requests, strict=True):
        assert [(m["role"], m["content"]) for m in c["messages"]][:2] == [
            (m["role"], m["content"]) for m in sent["json"]["messages"]][:2]
        assert [t["name"] for t in c["tools"]] == tool_names(sent)
    assert calls[1]["messages"][-1]["role"] == "tool"
    assert "file body" in calls[1]["messages"][-1]["content"]
    human = ok("replay", "--turn", turn, "--request")
    assert "== model call 1 of 2 (step 1)" in human
    assert "== model call 2 of 2 (final answer)" in human


def test_agent_tools_lists_the_effective_set_and_why(models, ok, run):
    ok("agent", "tools", "deny", "main", "group:runtime")
    report = json.loads(ok("agent", "tools", "--json"))
    why = {t["name"]: (t["offered"], t["why"]) for t in report["tools"]}
    assert why["read"] == (True, "in profile coding")
    assert why["exec"] == (False, "denied by tools.deny (group:runtime)")
    assert why["apply_patch"] == (False, "off unless tools.exec.applyPatch is true")
    assert report["exec"]["mode"] == "ask"
    ok("agent", "tools", "reset", "main", "group:runtime")
    assert json.loads(ok("agent", "tools", "--json"))["deny"] == []
    bad = run("agent", "tools", "allow", "main", "nosuch")
    assert bad.exit_code == 2 and "unknown tool 'nosuch'" in bad.stderr


def test_tool_lines_appended_to_a_transcript_equal_a_full_render(agent, ok, run, server):
    from fakeserver import Status

    (workspace(agent) / "notes.txt").write_text("appended")
    server.script(Reply("One.", tool_calls=[call("read", path="notes.txt")]),
                  Reply("Two.", tool_calls=[call("read", path="missing.txt"),
                                            call("read", path="notes.txt")]),
                  Status(400))  # the turn fails: its last transcript writes were appends
    run("chat", "go")
    transcript = agent / "agents" / "main" / "sessions" / "s-1.jsonl"
    appended = transcript.read_bytes()
    assert appended.count(b'"role": "tool"') == 3

    ok("replay", "--rebuild")

    assert transcript.read_bytes() == appended


def test_a_model_that_refuses_tools_is_asked_again_without_them(agent, ok, run, server):
    from fakeserver import Status

    refusal = {"error": "registry.ollama.ai/library/gemma does not support tools"}
    server.script(Status(400, body=refusal),
                  Reply("plain answer"))

    result = run("chat", "hi")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "plain answer\n"
    assert "does not accept tools" in result.stderr
    assert tool_names(server.requests[0]) and not tool_names(server.requests[1])
