"""The runtime tools, called as the loop calls them: exec and process over a Host sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for

from fased.schema import first_error
from fased.tools import processes
from fased.tools.base import ToolContext, ToolError
from fased.tools.exec import PROCESS, TOOLS, run_exec, tool_environment
from fased.tools.sandbox import Host, kill_group, proc_stat


def make_ctx(workspace: Path, home: Path, agent: str = "main", **env: str) -> ToolContext:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **env}
    return ToolContext(agent=agent, session="s-1", turn="t-1", call_id="call-1",
                       workspace=workspace, home=home, sandbox=Host(), env=base)


@pytest.fixture
def ctx(tmp_path: Path, fased_home: Path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    yield make_ctx(workspace, fased_home)
    # no test leaves a background process behind
    for meta in (fased_home / "processes").glob("*/meta.json"):
        pgid = json.loads(meta.read_text())["pgid"]
        if pgid in (os.getpgrp(), os.getpid()):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaps has ended too)."""
    stat_ = proc_stat(pid)
    if stat_ is not None:
        return stat_[0] in "ZX"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def process(ctx: ToolContext, action: str, **args):
    return processes.run_action({"action": action, **args}, ctx)


# -- foreground -------------------------------------------------------------------------------

def test_exit_code_stdout_and_stderr(ctx):
    result = run_exec({"command": "echo out; echo err >&2; exit 3"}, ctx)
    assert result.text.startswith("exit code 3 after ")
    assert "--- stdout ---\nout" in result.text and "--- stderr ---\nerr" in result.text
    assert result.data["exit_code"] == 3 and not result.is_error
    assert result.data["stdout_bytes"] == 4 and result.data["stderr_bytes"] == 4
    assert run_exec({"command": "true"}, ctx).text.endswith("(no output)")


def test_ten_megabytes_keep_head_and_tail_with_the_notice_first(ctx):
    command = ("echo FIRST; head -c 10000000 /dev/zero | tr '\\0' x; echo; echo LAST; "
               "head -c 3000000 /dev/zero >&2; exit 4")
    result = run_exec({"command": command}, ctx)
    lines = result.text.splitlines()
    assert lines[0].startswith("exit code 4")
    assert lines[1].startswith("stdout: 10000012 bytes; 9800012 in the middle were dropped")
    assert lines[2].startswith("stderr: 3000000 bytes; 2800000")
    assert "--- stdout ---\nFIRST\nxxx" in result.text
    assert "[... 9800012 bytes dropped ...]" in result.text
    assert "xxx\nLAST\n--- stderr ---" in result.text
    assert len(result.text) < 420_000
    assert result.data["truncated"] and result.data["stdout_bytes"] == 10000012


def test_full_pipes_on_both_streams_do_not_deadlock(ctx):
    command = "for i in 1 2 3; do head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; done"
    result = run_exec({"command": command, "timeoutSeconds": 20}, ctx)
    assert result.data["exit_code"] == 0
    assert result.data["stdout_bytes"] == result.data["stderr_bytes"] == 900000


def test_timeout_kills_the_whole_group(ctx):
    command = "sleep 30 & echo $! > child.pid; echo $$ > shell.pid; sleep 30"
    started = time.monotonic()
    result = run_exec({"command": command, "timeoutSeconds": 1}, ctx)
    assert time.monotonic() - started < 10
    assert result.text.startswith("timed out after 1 s: the command and every process")
    assert result.data["timed_out"] and result.data["exit_code"] is None and result.is_error
    for name in ("child.pid", "shell.pid"):
        pid = int((ctx.workspace / name).read_text())
        wait_for(lambda pid=pid: gone(pid), timeout=5)


def test_cancel_from_another_thread_interrupts_promptly(ctx):
    command = "sleep 30 & echo $! > child.pid; sleep 30"
    timer = threading.Timer(0.3, ctx.cancel.set)
    timer.start()
    started = time.monotonic()
    result = run_exec({"command": command}, ctx)
    assert time.monotonic() - started < 5
    assert result.text.startswith("interrupted after ") and result.data["interrupted"]
    assert result.is_error
    wait_for(lambda: gone(int((ctx.workspace / "child.pid").read_text())), timeout=5)


def test_processes_left_holding_the_output_are_killed_when_the_command_ends(ctx):
    started = time.monotonic()
    result = run_exec({"command": "sleep 30 & echo $! > child.pid; echo started"}, ctx)
    assert time.monotonic() - started < 10
    assert result.data["exit_code"] == 0 and result.data["leftovers_killed"]
    assert "still held its output and were killed" in result.text
    assert "--- stdout ---\nstarted" in result.text
    wait_for(lambda: gone(int((ctx.workspace / "child.pid").read_text())), timeout=5)


def test_workdir_is_resolved_in_the_workspace(ctx, fased_home):
    (ctx.workspace / "sub").mkdir()
    (ctx.workspace / "file").write_text("x")
    result = run_exec({"command": "pwd", "workdir": "sub"}, ctx)
    assert f"{os.path.realpath(ctx.workspace)}/sub" in result.text
    for workdir in ("..", "/", "sub/../../"):
        with pytest.raises(ToolError, match="outside the workspace"):
            run_exec({"command": "pwd", "workdir": workdir}, ctx)
    ctx.workspace_only = False
    assert run_exec({"command": "pwd", "workdir": ".."}, ctx).data["exit_code"] == 0
    for workdir in (str(fased_home), str(fased_home / "processes")):
        with pytest.raises(ToolError, match="off limits"):
            run_exec({"command": "pwd", "workdir": workdir}, ctx)
    ctx.workspace_only = True
    (ctx.workspace / "link").symlink_to(ctx.workspace.parent)
    with pytest.raises(ToolError, match="a symlink leads"):
        run_exec({"command": "pwd", "workdir": "link"}, ctx)
    with pytest.raises(ToolError, match="not a directory"):
        run_exec({"command": "pwd", "workdir": "file"}, ctx)
    with pytest.raises(ToolError, match="not a directory"):
        run_exec({"command": "pwd", "workdir": "missing"}, ctx)


def test_bad_arguments_are_tool_errors(ctx):
    for args, message in (({"command": ""}, "non-empty"), ({"command": "echo \0"}, "NUL"),
                          ({"command": "true", "timeoutSeconds": 0}, "from 1 to 3600"),
                          ({"command": "true", "timeoutSeconds": 3601}, "from 1 to 3600"),
                          ({"command": "true", "env": {"A B": "x"}}, "not a variable name"),
                          ({"command": "true", "env": {"A": "\0"}}, "without NUL"),
                          ({"command": "true", "background": "yes"}, "true or false"),
                          ({"command": "true", "env": ["A=b"]}, "an object")):
        with pytest.raises(ToolError, match=message):
            run_exec(args, ctx)


# -- environment ------------------------------------------------------------------------------

def test_credentials_and_fased_internals_never_reach_the_command(tmp_path, fased_home):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    ctx = make_ctx(workspace, fased_home, OPENAI_API_KEY="sk-live-key-0123456789",
                   MY_SECRET_TOKEN="hunter2", FASED_HOME=str(fased_home), FASED_DEBUG="1",
                   ANTHROPIC_API_KEY="x", GITHUB_PASSWORD="p", SESSION_COOKIE="c",
                   DATABASE_URL="postgres://me:pw0rd@db.example/app",
                   LEAKY="sk-ant-0123456789abcdef", ORDINARY_VAR="visible")
    text = run_exec({"command": "env"}, ctx).text
    for leaked in ("OPENAI_API_KEY", "sk-live", "MY_SECRET_TOKEN", "hunter2", "FASED_",
                   str(fased_home), "ANTHROPIC", "GITHUB_PASSWORD", "SESSION_COOKIE",
                   "pw0rd", "sk-ant"):
        assert leaked not in text
    assert "ORDINARY_VAR=visible" in text and "PATH=" in text


def test_tool_environment_drops_named_variables_too():
    env = tool_environment({"MYKEYVAR": "k", "PATH": "/bin", "NIX": "/nix/store/"
                            "0123456789abcdefghijklmnopqrstuv-x/bin"}, drop=["MYKEYVAR"])
    assert env == {"PATH": "/bin", "NIX": "/nix/store/0123456789abcdefghijklmnopqrstuv-x/bin"}


def test_env_adds_variables_but_not_path_or_loader_ones(ctx):
    result = run_exec({"command": "echo $GREETING", "env": {"GREETING": "hello"}}, ctx)
    assert "--- stdout ---\nhello" in result.text
    for name in ("PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "BASH_ENV",
                 "IFS"):
        with pytest.raises(ToolError, match=f"env: {name} cannot be set"):
            run_exec({"command": "true", "env": {name: "/tmp/x"}}, ctx)


# -- background -------------------------------------------------------------------------------

def start(ctx: ToolContext, command: str) -> str:
    result = run_exec({"command": command, "background": True}, ctx)
    assert result.data["background"] and result.text.startswith("started p-")
    return result.data["process_id"]


def test_background_poll_shows_only_new_output_and_write_feeds_stdin(ctx, fased_home):
    pid_id = start(ctx, 'echo ready; while read line; do echo "got $line"; done')
    assert processes.ID.fullmatch(pid_id)
    first = wait_for(lambda: (r := process(ctx, "poll", id=pid_id)).text.count("---\nready")
                     and r)
    assert first.text.startswith(f"{pid_id} running, started ")
    assert process(ctx, "poll", id=pid_id).text.endswith("(no new output)")
    assert process(ctx, "write", id=pid_id, input="one\n").text == f"sent 4 bytes to {pid_id}"
    second = wait_for(lambda: (r := process(ctx, "poll", id=pid_id)).text.count("---\ngot")
                      and r)
    assert second.text.endswith("---\ngot one") and "\nready" not in second.text
    assert "--- stdout (bytes 6-14 of 14) ---" in second.text
    log = process(ctx, "log", id=pid_id)
    assert "ready\ngot one" in log.text
    part = process(ctx, "log", id=pid_id, offset=6, limit=3)
    assert "--- stdout (bytes 6-9 of 14) ---\ngot" in part.text
    directory = fased_home / "processes" / pid_id
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    meta = json.loads((directory / "meta.json").read_text())
    assert {k: meta[k] for k in ("id", "command", "agent", "session", "turn", "call_id")} == {
        "id": pid_id, "command": 'echo ready; while read line; do echo "got $line"; done',
        "agent": "main", "session": "s-1", "turn": "t-1", "call_id": "call-1"}
    assert meta["pgid"] == meta["pid"] and meta["cwd"] == str(os.path.realpath(ctx.workspace))
    with pytest.raises(ToolError, match="off limits"):
        ctx.resolve(str(directory / "stdout"))


def test_exit_code_is_recorded_after_the_starter_has_exited(ctx, fased_home):
    starter = (
        "import sys\nfrom pathlib import Path\n"
        "from fased.tools.base import ToolContext\nfrom fased.tools.sandbox import Host\n"
        "from fased.tools.exec import run_exec\n"
        "ctx = ToolContext(agent='main', session='s', turn='t', call_id='c',"
        " workspace=Path(sys.argv[1]), home=Path(sys.argv[2]), sandbox=Host(),"
        " env={'PATH': '/usr/bin:/bin'})\n"
        "print(run_exec({'command': 'sleep 2; echo done; exit 7', 'background': True},"
        " ctx).data['process_id'])\n")
    done = subprocess.run([sys.executable, "-c", starter, str(ctx.workspace), str(fased_home)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    pid_id = done.stdout.strip()
    # The starter did not wait for the command: it is still running once the starter is gone.
    assert process(ctx, "poll", id=pid_id).text.startswith(f"{pid_id} running")
    seen: list[str] = []  # a poll shows only what is new since the last one

    def poll():
        result = process(ctx, "poll", id=pid_id)
        seen.append(result.text)
        return result.data["state"] != "running" and result

    final = wait_for(poll)
    assert final.data == {"process_id": pid_id, "state": "exited", "exit_code": 7}
    assert final.text.startswith(f"{pid_id} exited(7)") and "done" in "\n".join(seen)


def test_kill_ends_the_group_and_is_idempotent(ctx, fased_home):
    pid_id = start(ctx, "sleep 30 & echo $! > child.pid; sleep 30")
    child = wait_for(lambda: (ctx.workspace / "child.pid").exists()
                     and (ctx.workspace / "child.pid").read_text().strip())
    meta = json.loads((fased_home / "processes" / pid_id / "meta.json").read_text())
    started = time.monotonic()
    assert process(ctx, "kill", id=pid_id).text == f"killed {pid_id} and every process it started"
    assert time.monotonic() - started < 5
    assert gone(int(child)) and gone(meta["pid"])
    assert process(ctx, "kill", id=pid_id).text == f"{pid_id} is already killed"
    assert process(ctx, "poll", id=pid_id).data["state"] == "killed"
    with pytest.raises(ToolError, match="killed: it takes no more input"):
        process(ctx, "write", id=pid_id, input="x")


def test_list_shows_only_this_agents_processes(ctx, fased_home):
    other = make_ctx(ctx.workspace, fased_home, agent="other")
    mine = start(ctx, "exit 2")
    theirs = start(other, "sleep 30")
    wait_for(lambda: process(ctx, "poll", id=mine).data["state"] == "exited")
    listing = process(ctx, "list")
    assert [row["id"] for row in listing.data["processes"]] == [mine]
    assert listing.text.startswith(f"{mine}  exited(2)") and listing.text.endswith("exit 2")
    assert theirs not in listing.text
    for action in ("poll", "log", "kill", "write"):
        with pytest.raises(ToolError, match=f"no process '{theirs}' of this agent"):
            process(ctx, action, id=theirs, input="x")
    assert process(other, "poll", id=theirs).data["state"] == "running"
    for bad in ("p-000000", "../processes", "p-../../x", ""):
        with pytest.raises(ToolError):
            process(ctx, "poll", id=bad)
    with pytest.raises(ToolError, match="action must be one of"):
        process(ctx, "restart", id=mine)
    assert process(make_ctx(ctx.workspace, fased_home, agent="third"), "list").text == \
        "no background processes"


def test_a_process_gone_without_an_exit_code_is_lost(ctx, fased_home):
    pid_id = start(ctx, "sleep 30")
    meta = json.loads((fased_home / "processes" / pid_id / "meta.json").read_text())
    os.killpg(meta["pgid"], signal.SIGKILL)  # from outside: the wrapper cannot record a code
    result = wait_for(lambda: (r := process(ctx, "poll", id=pid_id)).data["state"] == "lost"
                      and r)
    assert "left no exit code" in result.text
    assert process(ctx, "kill", id=pid_id).text == f"{pid_id} is already lost"
    # a record from before a reboot: its pid may now be someone else's (here: the test's)
    fake = fased_home / "processes" / "p-abcdef"
    fake.mkdir(mode=0o700)
    (fake / "meta.json").write_text(json.dumps({**meta, "id": "p-abcdef", "pid": os.getpid(),
                                                "boot_id": "old-boot"}))
    if meta["boot_id"]:
        assert process(ctx, "poll", id="p-abcdef").data["state"] == "lost"


def test_log_of_long_output_names_the_bytes_left_out(ctx):
    pid_id = start(ctx, "echo BEGIN; head -c 50000 /dev/zero | tr '\\0' y; echo; echo END")
    wait_for(lambda: process(ctx, "poll", id=pid_id).data["state"] == "exited")
    log = process(ctx, "log", id=pid_id, stream="stdout")
    assert "--- stdout (bytes 0-50011 of 50011) ---\nBEGIN" in log.text
    assert "[... bytes 3000-47011 not shown: process log with offset 3000 reads them ...]" \
        in log.text and log.text.endswith("yyy\nEND")
    page = process(ctx, "log", id=pid_id, offset=3000, limit=16000)
    assert "--- stdout (bytes 3000-19000 of 50011) ---" in page.text
    with pytest.raises(ToolError, match="at most 16000"):
        process(ctx, "log", id=pid_id, limit=16001)


def test_write_to_a_process_that_ended_is_refused(ctx):
    pid_id = start(ctx, "true")
    wait_for(lambda: process(ctx, "poll", id=pid_id).data["state"] == "exited")
    with pytest.raises(ToolError, match=r"exited\(0\): it takes no more input"):
        process(ctx, "write", id=pid_id, input="hello\n")


def test_background_gets_the_scrubbed_environment_and_the_workdir(ctx):
    (ctx.workspace / "sub").mkdir()
    ctx.env["SOME_API_KEY"] = "secret-value"
    result = run_exec({"command": "pwd; env", "background": True, "workdir": "sub",
                       "timeoutSeconds": 5, "env": {"EXTRA": "1"}}, ctx)
    assert "timeoutSeconds does not apply to background processes" in result.text
    pid_id = result.data["process_id"]
    wait_for(lambda: process(ctx, "poll", id=pid_id).data["state"] == "exited")
    log = process(ctx, "log", id=pid_id, stream="stdout", offset=0, limit=16000).text
    assert f"{os.path.realpath(ctx.workspace)}/sub\n" in log and "EXTRA=1" in log
    assert "secret-value" not in log and "FASED" not in log


# -- sandbox and specs ------------------------------------------------------------------------

def test_kill_group_is_safe_when_gone_and_refuses_our_own_group():
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    assert kill_group(proc.pid, 0.1) is False
    for pgid in (0, 1, os.getpgrp()):
        with pytest.raises(ValueError):
            kill_group(pgid)
    assert Host().describe() == "host"


def test_tool_specs_are_valid_and_in_the_runtime_group():
    assert [t.name for t in TOOLS] == ["exec", "process"]
    for tool in TOOLS:
        assert tool.group == "runtime" and tool.side_effects
        assert tool.parameters["additionalProperties"] is False
    exec_params = TOOLS[0].parameters
    assert first_error({"command": "ls", "timeoutSeconds": 5, "background": False,
                        "env": {"A": "b"}}, exec_params, exec_params, "args") is None
    assert first_error({"command": "ls", "timeoutSeconds": 9999}, exec_params, exec_params,
                       "args") == "args.timeoutSeconds: must be at most 3600"
    assert first_error({"action": "poll", "id": "p-1a2b3c"}, PROCESS.parameters,
                       PROCESS.parameters, "args") is None
