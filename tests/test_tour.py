"""The README's tour, line by line, in order, on a fresh home with one provider.

The lines are read from the README itself (the ```sh blocks of "## A tour"), so the test
breaks when the README drifts. One substitution makes them runnable here: the test server
stands in for the hosted API, so `providers add PROVIDER` gets `--base-url` (nothing may
leave this machine). Everything else runs exactly as a user would type it, in one bash.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import events
from fakeserver import DEFAULT_TEXT, FakeModelServer

README = Path(__file__).resolve().parent.parent / "README.md"
KEY = "sk-tour-0123456789"


def tour_lines() -> list[str]:
    """The commands of the tour's shell blocks, without their comments."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's tour has no ```sh block"
    lines = []
    for block in blocks:
        for raw in block.splitlines():
            line = without_comment(raw).strip()
            if line:
                lines.append(line)
    return lines


def without_comment(line: str) -> str:
    """The line up to a `#` that starts a shell comment (outside quotes, after a blank)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def runnable(line: str, url: str) -> str:
    """The line as run here: a provider added at the test server instead of the internet."""
    return re.sub(r"(providers add \S+)", rf"\1 --base-url {url}/v1", line)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """`fased` (this venv's) and, on a machine without it, a `jq -r .KEY` stand-in."""
    where = tmp_path / "bin"
    where.mkdir()
    (where / "fased").symlink_to(Path(sys.executable).parent / "fased")
    if shutil.which("jq") is None:
        (where / "jq").write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            "print(json.load(sys.stdin)[sys.argv[-1].lstrip('.')])\n")
        (where / "jq").chmod(0o755)
    return where


def test_the_readme_tour_runs_in_order_on_a_fresh_home(tmp_path, fased_home, bin_dir,
                                                       monkeypatch):
    lines = tour_lines()
    # what the tour promises to show, so a rewrite that drops it fails here
    assert lines[0] == "fased setup -y"
    assert 'fased chat "run the tests and fix what fails"' in lines  # its comment cut off
    assert any(line.startswith("fased session new --name ops") for line in lines)
    assert lines.index("fased session new --name ops") < min(
        i for i, line in enumerate(lines) if "--session ops" in line)

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "app.py").write_text("print('hi')\n")
    subprocess.run(["git", "-C", str(repo), "add", "app.py"], check=True)
    (repo / "app.py").write_text("print('hello')\n")

    with FakeModelServer(api_key=KEY, models=["gpt-4o-mini", "gpt-4o"]) as server:
        script = ["set -u"]
        for i, line in enumerate(lines):
            script.append(f"echo {shlex.quote(f'>>> {i} {line}')}")
            script.append(f"{runnable(line, server.url)} || "
                          f"{{ echo {shlex.quote(f'tour line {i} failed: {line}')} >&2; exit 1; }}")
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FASED_HOME": str(fased_home),
               "HOME": str(tmp_path / "user-home"), "OPENAI_API_KEY": KEY,
               "FASED_DETECT_ENDPOINTS": "", "FASED_NO_TTY": "1", "PYTHONSAFEPATH": "1",
               "FASED_HTTP_DEADLINE": "20", "GIT_CONFIG_NOSYSTEM": "1", "FASED_EMBEDDED": "0"}
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=240,
                              stdin=subprocess.DEVNULL)
        requests = list(server.requests)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert (repo / "review.md").read_text().strip() == DEFAULT_TEXT
    chats = [r for r in requests if r["path"] == "/v1/chat/completions"]
    assert chats and all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in chats)
    assert {r["model"] for r in chats} == {"gpt-4o-mini", "gpt-4o"}
    assert any("print('hello')" in json.dumps(r["json"]) for r in chats)  # the piped diff
    # the last line but one showed the request of the turn the line before it started
    shown = done.stdout.split(">>> ")[-2]
    assert "what changed?" in shown
    types = {e["type"] for e in events(fased_home)}
    assert {"provider.added", "credential.set", "session.created", "task.created",
            "turn.completed"} <= types
