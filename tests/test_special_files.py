"""A named pipe (or a device) where fased expects a regular file: opening a FIFO for reading
waits for a writer, forever, and reading /dev/zero never ends. An agent can make one with
one `exec` (`mkfifo skills/x/SKILL.md`), and every later turn hung. Each place fased reads
a file someone else controls (bootstrap files, skills, notes, HEARTBEAT.md, a model file, a
task's output file) says what it found instead, and goes on.

Every command runs as its own process with a timeout: a hang fails the test."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_process
from fakeserver import Reply

LIMIT = 30  # seconds: a hang is a failure, not a slow test


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def fased(*args: str, env: dict | None = None):
    return run_process(*args, env=env, timeout=LIMIT)


@pytest.fixture
def home(models, fased_home) -> Path:
    return fased_home


@pytest.fixture
def workspace(home) -> Path:
    return home / "workspace"


def test_a_fifo_as_a_bootstrap_file_is_left_out_and_the_turn_answered(home, workspace,
                                                                       server):
    (workspace / "AGENTS.md").unlink()
    fifo(workspace / "AGENTS.md")
    server.default = Reply("fine")

    done = fased("chat", "hi")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "fine\n"
    context = json.loads(fased("agent", "context", "--json").stdout)
    [agents] = [f for f in context["files"] if f["name"] == "AGENTS.md"]
    assert agents["reason"] == "unreadable (a FIFO, not a regular file)"
    shown = fased("agent", "files", "show", "AGENTS.md")
    assert shown.returncode == 1
    assert "AGENTS.md is a FIFO, not a regular file" in shown.stderr


def test_a_fifo_in_a_skill_folder_leaves_that_skill_out(home, workspace, server):
    skill = workspace / "skills" / "piper"
    skill.mkdir(parents=True)
    fifo(skill / "SKILL.md")
    good = workspace / "skills" / "good"
    good.mkdir(parents=True)
    (good / "SKILL.md").write_text("---\nname: good\ndescription: A good skill.\n---\nBody\n")
    fifo(good / "data.pipe")  # beside a readable SKILL.md: hashed as what it is
    server.default = Reply("fine")

    done = fased("chat", "hi")

    assert done.returncode == 0, done.stderr
    listing = fased("skill", "list", "--json")
    by_name = {s["name"]: s for s in json.loads(listing.stdout)["skills"]}
    assert by_name["good"]["status"] == "ready" and "piper" not in by_name
    assert (f"skill skipped: {skill / 'SKILL.md'}: unreadable (a FIFO, not a regular file)"
            in listing.stderr)
    sent = server.requests[-1]["json"]["messages"][0]["content"]
    assert "A good skill." in sent
    shown = fased("skill", "show", "good")
    assert shown.returncode == 0, shown.stderr


def test_installing_a_skill_folder_with_a_fifo_is_refused(home, tmp_path):
    folder = tmp_path / "piper"
    fifo(folder / "SKILL.md")
    done = fased("skill", "install", str(folder))
    assert done.returncode == 2
    assert f"Error: {folder / 'SKILL.md'} is a FIFO, not a regular file" in done.stderr

    other = tmp_path / "good"  # a readable SKILL.md and a FIFO beside it: copying it waits
    other.mkdir()
    (other / "SKILL.md").write_text("---\nname: good\ndescription: A good skill.\n---\n")
    fifo(other / "data" / "in.pipe")
    again = fased("skill", "install", str(other))
    assert again.returncode == 2, again.stderr
    assert "Error: data/in.pipe is a FIFO: a skill folder holds files, folders and links" in (
        again.stderr)
    assert not (home / "workspace" / "skills" / "good").exists()


def test_a_fifo_as_a_memory_note_is_skipped_and_get_says_what_it_is(home, workspace):
    (workspace / "memory").mkdir(exist_ok=True)
    (workspace / "memory" / "2026-12-01.md").write_text("The quokka lives on an island.\n")
    fifo(workspace / "memory" / "2026-12-02.md")

    found = fased("memory", "search", "--json", "quokka")
    assert found.returncode == 0, found.stderr
    assert [r["path"] for r in json.loads(found.stdout)["results"]] == ["memory/2026-12-01.md"]
    got = fased("memory", "get", "memory/2026-12-02.md")
    assert got.returncode == 2
    assert "Error: memory/2026-12-02.md: a FIFO, not a memory note" in got.stderr


def test_a_fifo_as_heartbeat_md_is_a_skipped_heartbeat_not_a_stopped_runner(home, workspace,
                                                                          server):
    (workspace / "HEARTBEAT.md").unlink()
    fifo(workspace / "HEARTBEAT.md")
    assert fased("config", "set", "agents.list[0].heartbeat", '{"every": "30m"}').returncode == 0
    env = {"FASED_NOW": "2026-03-02T08:00:00Z"}
    assert fased("run", "--once", env=env).returncode == 0

    done = fased("run", "--once", env={"FASED_NOW": "2026-03-02T08:30:00Z"})

    assert done.returncode == 0, done.stderr
    assert ("HEARTBEAT.md is unreadable (a FIFO, not a regular file)" in done.stderr)
    assert not [r for r in server.requests if r["path"].endswith("/chat")]


@pytest.mark.parametrize("make", ["fifo", "dev"])
def test_a_fifo_or_device_as_a_model_file_is_one_clear_error(home, tmp_path, make):
    path = fifo(tmp_path / "model.gguf") if make == "fifo" else Path("/dev/zero")

    done = fased("agent", "models", "providers", "add", "loc", "--kind", "local",
                 "--model-path", str(path))

    assert done.returncode == 2
    kind = "a FIFO" if make == "fifo" else "a character device"
    assert f"{path} is {kind}, not a GGUF file" in done.stderr


def test_a_task_writing_to_a_fifo_nobody_reads_fails_that_delivery(home, tmp_path, server):
    out = fifo(tmp_path / "out.pipe")
    server.default = Reply("report")
    made = fased("task", "new", "--every", "1h", "--message", "go", "--deliver",
                 f"file:{out}")
    assert made.returncode == 0, made.stderr

    done = fased("task", "run", "task-1")

    assert done.returncode == 1
    assert done.stdout == "report\n"  # the reply, and its delivery's failure on stderr
    assert f"{out}: a FIFO nobody reads" in done.stderr
    # one that is read gets the reply, as a pipe to another program should
    reader = subprocess.Popen(["cat", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + LIMIT
        while True:  # until cat has the FIFO open
            again = fased("task", "deliver", "task-1")
            if again.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert again.returncode == 0, again.stderr
    finally:
        got, _ = reader.communicate(timeout=LIMIT)
    assert got == "report\n"
