"""The bubblewrap sandbox, with the real bwrap and real processes: through the tool handlers as
the loop calls them, and end to end through `fased chat`. What is asserted is what a command
inside can and cannot do: read the credentials or the log, write outside the sandbox
workspace, reach a server on 127.0.0.1, see the agent's workspace; and that without a working
bwrap nothing runs at all.

These tests need bwrap (Debian package bubblewrap; .ci/run installs it). They fail without
it, they never skip: a sandbox that is not tested is not there."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from conftest import events, wait_for
from fakeserver import Reply

from fased.tools import processes
from fased.tools.base import ToolContext, ToolError
from fased.tools.confine import SandboxSettings, sandbox_for
from fased.tools.exec import run_exec
from fased.tools.files import TOOLS as FILE_TOOLS
from fased.tools.sandbox import Bwrap, Host

SECRET = "sk-test-sandbox-0123456789abcdef"
MARK = "fased-sandbox-was-here"
FILES = {t.name: t for t in FILE_TOOLS}


@pytest.fixture(autouse=True)
def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        pytest.fail("bwrap is not installed: these tests need it (apt install bubblewrap; "
                    ".ci/run installs it)")
    return path


@pytest.fixture(autouse=True)
def no_marks_left():
    """A sandbox that fails to confine must not leave its marks for the next run to trip on."""
    yield
    for d in ("/etc", "/usr", "/tmp"):
        with contextlib.suppress(OSError):
            os.unlink(f"{d}/{MARK}")


@pytest.fixture
def home(fased_home: Path) -> Path:
    """A fased home with credentials, a log and the default workspace inside it."""
    (fased_home / "log").mkdir(parents=True)
    (fased_home / "log" / "00000000000000000001.jsonl").write_text('{"seq": 1}\n')
    (fased_home / "credentials.json").write_text(json.dumps({"p": {"key": SECRET}}))
    (fased_home / "workspace").mkdir()
    (fased_home / "workspace" / "AGENTS.md").write_text("agent notes\n")
    yield fased_home
    for meta in (fased_home / "processes").glob("*/meta.json"):  # leave nothing running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(json.loads(meta.read_text())["pgid"], signal.SIGKILL)


def boxed(home: Path, access: str = "rw", network: bool = False,
          workspace: Path | None = None) -> ToolContext:
    """A tool context as the loop builds it for a sandboxed turn of agent main."""
    agent = {"id": "main", "workspace": str(workspace or home / "workspace")}
    settings = {"sandbox": {"mode": "all", "workspaceAccess": access, "network": network}}
    sandbox, ws, readable = sandbox_for(None, home, agent, {"source": "chat"}, settings)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "OPENAI_API_KEY": SECRET,
           "FASED_HOME": str(home)}
    return ToolContext(agent="main", session="s-1", turn="t-1", call_id="c-1", workspace=ws,
                       home=home, readable=readable, sandbox=sandbox, env=env)


def sh(ctx: ToolContext, command: str, **args):
    return run_exec({"command": command, **args}, ctx)


def file_tool(ctx: ToolContext, name: str, **args):
    return FILES[name].run(args, ctx)


# -- what is visible inside -------------------------------------------------------------------

def test_the_credentials_and_the_log_are_invisible_inside(home):
    ctx = boxed(home)
    assert isinstance(ctx.sandbox, Bwrap)

    result = sh(ctx, f"cat {home}/credentials.json; ls -A {home}; ls {home}/log; env")

    assert SECRET not in result.text
    assert "No such file" in result.text and "00000000000000000001" not in result.text
    # the home is an empty tmpfs with the workspace bound back: nothing else of it is there
    assert "--- stdout ---\nworkspace\n" in result.text
    assert "FASED_HOME" not in result.text
    # the same commands on the host read them: it is the sandbox that hides them
    host = sh(ToolContext(**{**ctx.__dict__, "sandbox": Host()}), f"ls {home}")
    assert "credentials.json" in host.text


@pytest.fixture
def outside():
    """A writable directory outside /tmp (which is private inside the sandbox)."""
    path = Path(tempfile.mkdtemp(prefix="fased-sandbox-test-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


def test_the_workspace_is_writable_and_everything_else_is_not(home, outside):
    ctx = boxed(home)
    user_home = Path(os.environ["HOME"])  # under /tmp in tests: not there at all inside
    user_home.mkdir(exist_ok=True)

    result = sh(ctx, f"echo made > made.txt; pwd; for d in /etc /usr {outside} {user_home}; do"
                     f" touch $d/{MARK} 2>&1; done; echo private > /tmp/{MARK}; cat /tmp/{MARK}")

    assert result.data["exit_code"] == 0, result.text
    assert (home / "workspace" / "made.txt").read_text() == "made\n"
    assert f"{os.path.realpath(home / 'workspace')}\n" in result.text
    assert result.text.count("Read-only file system") == 3, result.text
    assert result.text.count("cannot touch") == 4, result.text
    for d in (Path("/etc"), Path("/usr"), outside, user_home):
        assert not (d / MARK).exists()
    assert "private" in result.text and not Path("/tmp", MARK).exists()


def test_root_inside_cannot_lift_the_confinement(home):
    ctx = boxed(home)

    result = sh(ctx, f"mount -o remount,rw / 2>&1; umount {home} 2>&1; umount -l {home} 2>&1;"
                     f" touch /etc/{MARK} 2>&1; cat {home}/credentials.json 2>&1;"
                     " grep CapEff /proc/self/status")

    assert "CapEff:\t0000000000000000" in result.text
    assert SECRET not in result.text and not Path("/etc", MARK).exists()


def test_a_workspace_that_holds_the_home_does_not_show_it(home, tmp_path):
    # a workspace set to the user's home, with the fased home inside it
    ctx = boxed(home, workspace=home.parent)

    result = sh(ctx, f"ls -A {home}; cat {home}/credentials.json; echo ok > {home}/x; ls")

    assert result.text.split("--- stderr ---")[0].endswith(f"--- stdout ---\n{home.name}\n")
    assert SECRET not in result.text and "x: Read-only file system" in result.text
    assert not (home / "x").exists()


# -- the network ------------------------------------------------------------------------------

@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                accepted.append(conn)
                conn.sendall(b"hello from the host\n")
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


# the interpreter itself, not the venv's link to it: a venv under /tmp (a clone CI made there)
# is hidden by the sandbox's own /tmp, and only the standard library is needed inside
PYTHON = os.path.realpath(sys.executable)
CONNECT = (f"{PYTHON} -c \"import socket,sys; s=socket.create_connection(('127.0.0.1',"
           " int(sys.argv[1])), timeout=5); print(s.recv(100).decode())\" {port}")


def test_no_network_inside_not_even_the_hosts_loopback(home, listener):
    port, accepted = listener

    result = sh(boxed(home), CONNECT.format(port=port))

    assert result.data["exit_code"] != 0
    assert "hello from the host" not in result.text and accepted == []
    assert "ConnectionRefused" in result.text or "unreachable" in result.text


def test_network_true_reaches_the_host(home, listener):
    port, accepted = listener

    result = sh(boxed(home, network=True), CONNECT.format(port=port))

    assert result.data["exit_code"] == 0, result.text
    assert "hello from the host" in result.text and len(accepted) == 1


# -- workspace access -------------------------------------------------------------------------

def test_ro_writes_land_in_the_sandbox_workspace_and_the_agent_workspace_reads(home):
    ctx = boxed(home, "ro")
    box = home / "sandboxes" / "main"
    agent_ws = home / "workspace"
    assert ctx.workspace == box and ctx.readable == (agent_ws,)
    assert oct(box.stat().st_mode & 0o777) == "0o700"

    file_tool(ctx, "write", path="out.txt", content="written")
    assert (box / "out.txt").read_text() == "written"
    assert not (agent_ws / "out.txt").exists()
    assert file_tool(ctx, "read", path=str(agent_ws / "AGENTS.md")).text == "agent notes"
    with pytest.raises(ToolError):
        file_tool(ctx, "write", path=str(agent_ws / "AGENTS.md"), content="changed")
    with pytest.raises(ToolError):
        file_tool(ctx, "edit", path=str(agent_ws / "AGENTS.md"), oldText="agent",
                  newText="changed")

    result = sh(ctx, f"pwd; cat out.txt; cat {agent_ws}/AGENTS.md; echo x >> {agent_ws}/AGENTS.md")

    assert f"{os.path.realpath(box)}\nwritten" in result.text and "agent notes" in result.text
    assert "Read-only file system" in result.text
    assert (agent_ws / "AGENTS.md").read_text() == "agent notes\n"


def test_none_hides_the_agent_workspace_from_file_tools_and_commands(home):
    ctx = boxed(home, "none")
    agent_ws = home / "workspace"
    assert ctx.workspace == home / "sandboxes" / "main" and ctx.readable == ()

    with pytest.raises(ToolError):
        file_tool(ctx, "read", path=str(agent_ws / "AGENTS.md"))
    result = sh(ctx, f"cat {agent_ws}/AGENTS.md; ls -A {home}")

    assert "agent notes" not in result.text and "No such file" in result.text
    assert "--- stdout ---\nsandboxes\n" in result.text


def test_file_tools_never_reach_the_home_with_or_without_a_sandbox(home):
    for ctx in (boxed(home, "ro"), boxed(home, "none"),
                ToolContext(agent="main", session="s", turn="t", call_id="c",
                            workspace=home / "workspace", home=home, workspace_only=False,
                            sandbox=Host())):
        for path in (home / "credentials.json", home / "log" / "00000000000000000001.jsonl"):
            with pytest.raises(ToolError, match="off limits"):
                file_tool(ctx, "read", path=str(path))
            with pytest.raises(ToolError):
                file_tool(ctx, "write", path=str(path), content="x")
        assert SECRET in (home / "credentials.json").read_text()


# -- no bwrap, no command ---------------------------------------------------------------------

def test_without_bwrap_exec_refuses_and_runs_nothing(home, tmp_path, monkeypatch):
    ctx = boxed(home)
    empty = tmp_path / "no-bwrap-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    for background in (False, True):
        with pytest.raises(ToolError) as refused:
            sh(ctx, "touch ran.txt", background=background)
        assert "bwrap is not installed" in str(refused.value)
        assert "apt install bubblewrap" in str(refused.value)
        assert "did not run" in str(refused.value)
    assert not (home / "workspace" / "ran.txt").exists()
    assert not list((home / "processes").glob("p-*")) if (home / "processes").exists() else True


def test_a_bwrap_that_cannot_start_refuses_and_runs_nothing(home, tmp_path, monkeypatch):
    ctx = boxed(home)
    fake = tmp_path / "broken-bin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: "
                                "Operation not permitted' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")

    with pytest.raises(ToolError) as refused:
        sh(ctx, "touch ran.txt")

    text = str(refused.value)
    assert "cannot start the sandbox" in text and "Creating new namespace failed" in text
    assert "bubblewrap" in text and "did not run" in text
    assert not (home / "workspace" / "ran.txt").exists()


def test_a_command_exit_1_is_the_commands_not_a_sandbox_failure(home):
    result = sh(boxed(home), "echo 'bwrap: lookalike' >&2; exit 1")
    assert result.data["exit_code"] == 1 and "bwrap: lookalike" in result.text


# -- processes in the sandbox -----------------------------------------------------------------

def sleeping(*seconds: int) -> list[int]:
    """Host pids of live `sleep N` processes for these N."""
    wanted = {f"sleep\0{n}\0".encode() for n in seconds}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmdline in wanted and state not in "ZX":
            found.append(int(entry))
    return found


def test_a_background_command_in_the_sandbox_records_its_exit_code(home):
    ctx = boxed(home)

    started = sh(ctx, f"echo from-inside; ls {home}/processes 2>&1; exit 3", background=True)
    pid_id = started.data["process_id"]
    seen: list[str] = []  # a poll shows only what is new since the last one

    def poll():
        result = processes.run_action({"action": "poll", "id": pid_id}, ctx)
        seen.append(result.text)
        return result.data["state"] == "exited" and result

    done = wait_for(poll)

    assert done.data["exit_code"] == 3
    said = "\n".join(seen)
    assert "from-inside" in said and "No such file" in said
    assert (home / "processes" / pid_id / "exit").read_text() == "3\n"


def test_kill_and_timeout_end_everything_inside_bwrap(home):
    ctx = boxed(home)
    a, b, c, d = (random.randrange(10_000, 99_999) for _ in range(4))  # no one else's sleep

    try:
        started = sh(ctx, f"sleep {a} & sleep {b}", background=True)
        wait_for(lambda: len(sleeping(a, b)) == 2)
        killed = processes.run_action({"action": "kill", "id": started.data["process_id"]}, ctx)
        assert "killed" in killed.text
        wait_for(lambda: sleeping(a, b) == [])

        result = sh(ctx, f"sleep {c} & sleep {d}", timeoutSeconds=1)
        assert result.data["timed_out"] and result.text.startswith("timed out after 1 s")
        wait_for(lambda: sleeping(c, d) == [])
    finally:  # a sandbox that let them escape must not leave them running
        for pid in sleeping(a, b, c, d):
            os.kill(pid, signal.SIGKILL)


# -- choosing the sandbox ---------------------------------------------------------------------

def test_which_turns_run_in_the_sandbox(home):
    def sandbox(mode: str, source: str):
        settings = {"sandbox": {"mode": mode}}
        agent = {"id": "main", "workspace": str(home / "workspace")}
        return sandbox_for(None, home, agent, {"source": source}, settings)[0].mode

    assert [sandbox("off", s) for s in ("chat", "telegram")] == ["host", "host"]
    assert [sandbox("all", s) for s in ("chat", "task", "telegram")] == ["bwrap"] * 3
    assert [sandbox("non-main", s) for s in ("chat", "task")] == ["host", "host"]
    assert sandbox("non-main", "telegram") == "bwrap"
    assert SandboxSettings.of({}, home) == SandboxSettings("off", "rw", home / "sandboxes",
                                                           False)


@pytest.fixture
def agent(models, ok):
    ok("config", "set", "tools", '{"exec": {"mode": "full"}}')
    return models


def test_settings_merge_key_by_key_and_show_and_tools_report_them(agent, ok, monkeypatch,
                                                                  tmp_path):
    ok("config", "set", "agents.defaults.sandbox", '{"mode": "all", "network": true}')
    ok("config", "set", "agents.list[0].sandbox", '{"workspaceAccess": "ro", '
                                                  f'"workspaceRoot": "{tmp_path}/boxes"}}')

    report = json.loads(ok("agent", "tools", "--json"))["sandbox"]
    assert {k: report[k] for k in ("mode", "workspaceAccess", "network", "workspace")} == {
        "mode": "all", "workspaceAccess": "ro", "network": True,
        "workspace": str(tmp_path / "boxes" / "main")}
    assert report["available"] is True and report["bwrap"] == shutil.which("bwrap")
    line = [ln for ln in ok("agent", "show").splitlines() if "Sandbox:" in ln]
    assert line == [f"  Sandbox:       bubblewrap for every turn; writes in {tmp_path}/boxes/main,"
                    " the agent's workspace read-only; network on; file tools held to it"]
    assert json.loads(ok("agent", "show", "--json"))["sandbox"]["mode"] == "all"

    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert "UNAVAILABLE, commands will not run: bwrap is not installed" in ok("agent", "tools")


def test_default_is_no_sandbox_and_bad_settings_change_nothing(agent, ok, run):
    assert "sandbox: host (no sandbox: sandbox.mode is off)" in ok("agent", "tools")
    for path, value in (("agents.defaults.sandbox.mode", "sometimes"),
                        ("agents.defaults.sandbox.workspaceAccess", "write"),
                        ("agents.defaults.sandbox.workspaceRoot", "relative/dir"),
                        ("agents.list[0].sandbox.network", "yes")):
        result = run("config", "set", path, value)
        assert result.exit_code != 0 and "Traceback" not in result.stderr
        assert result.stderr.startswith("Error: ")
    assert "sandbox" not in json.loads((agent / "fased.json").read_text())["agents"]["defaults"]


# -- end to end -------------------------------------------------------------------------------

def test_chat_runs_exec_in_the_sandbox(agent, ok, run, server, listener):
    port, accepted = listener
    ok("agent", "models", "providers", "add", "p2", "--kind", "openai-compatible",
       "--base-url", server.url + "/v1")
    ok("agent", "models", "auth", "p2", "--stdin", input=f"{SECRET}\n")
    ok("agent", "models", "set", "primary", "p2/fake-model")
    ok("config", "set", "agents.defaults.sandbox.mode", "all")
    assert SECRET in (agent / "credentials.json").read_text()
    command = (f"cat {agent}/credentials.json; ls {agent}/log; touch /etc/{MARK}; "
               f"echo w > {agent}/w; {CONNECT.format(port=port)}; echo made > here.txt")
    server.script(Reply("", tool_calls=[("exec", json.dumps({"command": command}))]),
                  Reply("done"))

    result = run("chat", "--no-stream", "try to escape")

    assert result.exit_code == 0, result.stderr
    [finished] = [e["data"] for e in events(agent) if e["type"] == "tool.finished"]
    assert finished["status"] == "ok"
    out = finished["result"]
    assert SECRET not in out and SECRET not in json.dumps(server.requests[-1]["json"])
    assert "credentials.json: No such file" in out and "log': No such file" in out
    assert out.count("Read-only file system") == 2 and not (agent / "w").exists()
    assert accepted == [] and "hello from the host" not in out
    assert (agent / "workspace" / "here.txt").read_text() == "made\n"


def test_chat_with_ro_writes_in_the_sandbox_workspace(agent, ok, run, server, outside):
    ok("config", "set", "agents.defaults.sandbox", '{"mode": "all", "workspaceAccess": "ro"}')
    # in a sandbox the file tools are held to it even when workspaceOnly is off
    ok("config", "set", "tools", '{"exec": {"mode": "full"}, "fs": {"workspaceOnly": false}}')
    (agent / "workspace" / "notes.txt").write_text("keep me\n")
    ws = agent / "workspace"
    server.script(Reply("", tool_calls=[
        ("write", json.dumps({"path": "new.txt", "content": "boxed"})),
        ("exec", json.dumps({"command": f"cat {ws}/notes.txt; echo gone > {ws}/notes.txt; pwd"})),
        ("write", json.dumps({"path": str(outside / "escaped.txt"), "content": "out"})),
        ("read", json.dumps({"path": str(ws / "notes.txt")})),
    ]), Reply("done"))

    result = run("chat", "--no-stream", "work")

    assert result.exit_code == 0, result.stderr
    box = agent / "sandboxes" / "main"
    assert (box / "new.txt").read_text() == "boxed" and not (ws / "new.txt").exists()
    assert (ws / "notes.txt").read_text() == "keep me\n"
    assert not (outside / "escaped.txt").exists()
    finished = [e["data"] for e in events(agent) if e["type"] == "tool.finished"]
    assert [f["status"] for f in finished] == ["ok", "ok", "error", "ok"]
    assert "keep me" in finished[1]["result"] and "Read-only file system" in finished[1]["result"]
    assert os.path.realpath(box) in finished[1]["result"]
    assert "outside the workspace" in finished[2]["result"]
    assert "keep me" in finished[3]["result"]
    assert "workspace read-only" in ok("agent", "show")
