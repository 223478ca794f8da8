"""`fased doctor`: check the home, the log and the projections; repair what is safe to repair.

Safe repairs never lose an event: cutting a torn tail (kept in a `.broken` file), tightening
permissions, rebuilding state.db. Damage before the tail is reported with what to restore,
not "fixed". When the log lost events that state.db had applied (a cut or emptied tail, a
removed last segment), only `--repair --accept-loss` goes on without them, and records that.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from fased.errors import FasedError, LogGapError, StateAheadError, StateError
from fased.log import EventLog, LogState, segment_name
from fased.store import same_log
from fased.upcast import upcast

# how long doctor waits for the log lock to see whether a tail is torn or being written
TAIL_LOCK_SECONDS = 2.0


@dataclass
class Finding:
    """One result: `level` is ok, info, warn or error; `fixed` when --repair mended it."""

    check: str
    level: str
    message: str
    fixed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def check(store, repair: bool = False, accept_loss: bool = False) -> list[Finding]:
    """Run every check, in order; with `repair`, fix what can be fixed without losing events
    (and with `accept_loss`, also go on without events the log lost, recording it)."""
    findings: list[Finding] = []
    findings += _permissions(store.home, repair)
    findings += _links(store.home)
    findings += _lock(store.log)
    seen = _evidence(store.db_path)
    log_findings, state = _log(store.log, repair, seen)
    findings += log_findings
    if state is None:  # a rebuild reads the whole log: it would stop at the same error
        findings.append(Finding("projections", "info",
                                "not checked: the log cannot be read to its end"))
    else:
        findings += _projections(store, state, seen, repair, accept_loss)
    return findings


# -- the home ---------------------------------------------------------------------------------

def _permissions(home: Path, repair: bool) -> list[Finding]:
    out = []
    wrong = []
    for path in [home, *sorted(_private_paths(home))]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # reported by _links; chmod would follow it
        mode = stat.S_IMODE(st.st_mode)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if mode & 0o077:
            wrong.append((path, mode, want))
    for path, mode, want in wrong:
        fixed = False
        if repair:
            os.chmod(path, want, follow_symlinks=False)
            fixed = True
        out.append(Finding("permissions", "warn",
                           f"{path} is {oct(mode)}, should be {oct(want)}", fixed))
    if not wrong:
        out.append(Finding("permissions", "ok", f"{home} and its files are private to the user"))
    return out


def _private_paths(home: Path):
    """Everything fased creates in the home that must be private: its files, and its
    directories (the transcripts hold the conversations themselves)."""
    for name in ("log.lock", "state.db", "state.db-wal", "state.db-shm", "fased.json",
                 "credentials.json", "delivery.lock"):
        yield home / name
    yield from sorted(home.glob("channel-*.lock"))  # fased.channels: pollers, the outbox
    for name in ("agents", "log", "memory"):  # memory/index.db holds the messages too
        top = home / name
        if top.is_dir() and not top.is_symlink():
            yield top
            yield from _walk(top)
    for name in ("workspace", "skills", "models"):  # the directories, not what users keep
        yield home / name


def _walk(top: Path):
    """Every path under `top`, not following symlinks."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _links(home: Path) -> list[Finding]:
    """Symlinks where fased writes: the log, the transcripts, its own files. fased never
    writes through one (a link could point anywhere, outside the home too)."""
    out = []
    places = [home / n for n in ("log", "agents", "log.lock", "state.db", "state.db-wal",
                                 "state.db-shm", "memory")]
    for top in places:
        candidates = [top]
        if top.is_dir() and not top.is_symlink():
            candidates += list(_walk(top))
        for path in candidates:
            if path.is_symlink():
                target = os.readlink(path)
                outside = not _inside(home, path.parent / target)
                out.append(Finding("links", "error", f"{path} is a symlink to {target}"
                                   + (" (outside the home)" if outside else "")
                                   + ": fased never reads or writes its files through one; "
                                   "put the file itself in its place"))
    return out


def _inside(home: Path, path: Path) -> bool:
    real_home = os.path.realpath(home)
    return os.path.realpath(path).startswith(real_home + os.sep)


def _lock(log: EventLog) -> list[Finding]:
    try:
        fd = os.open(log.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return [Finding("lock", "error", f"cannot open {log.lock_path}: {exc.strerror}")]
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return [Finding("lock", "info", "the log lock is held by another fased command right now")]
    finally:
        os.close(fd)
    return [Finding("lock", "ok", f"{log.lock_path} can be locked")]


# -- the log ----------------------------------------------------------------------------------

@dataclass
class _Seen:
    """What state.db says it applied (read without changing or rebuilding anything)."""

    problem: str | None = None
    version: str | None = None
    checkpoint: int = -1
    head_id: str | None = None
    log_id: str | None = None
    stuck: bool = False  # SQLite cannot open it (a full disk, an I/O error): no rebuild helps


def _evidence(path: Path) -> _Seen:
    if not path.exists():
        return _Seen("state.db is missing (any command rebuilds it)")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return _Seen("state.db fails SQLite's integrity check")
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        from fased.store import disk_full, is_projection_damage

        if is_projection_damage(exc):
            return _Seen(f"state.db is unreadable ({exc})")
        full = f"; the disk holding {path.parent} is full" if disk_full(path.parent) else ""
        return _Seen(f"state.db cannot be opened ({exc}{full}): it may be fine, so it is not "
                     "rebuilt over", stuck=True)
    try:
        checkpoint = int(meta.get("checkpoint", -1))
    except ValueError:
        return _Seen("state.db's checkpoint is damaged")
    return _Seen(None, meta.get("version"), checkpoint, meta.get("head_id") or None,
                 meta.get("log_id") or None)


def _log(log: EventLog, repair: bool, seen: _Seen) -> tuple[list[Finding], LogState | None]:
    """Every record's checksum, the seq chain within and across segments, batches, known
    types; a torn tail. Returns the findings and what was verified (None when the log
    cannot be read to its end)."""
    out: list[Finding] = []
    track: list = []
    count = 0
    try:
        for record in log.read(bulk=True, track=track):
            upcast(record)
            count += 1
        state, torn = _tail(log, LogState(track), repair, seen)
    except LogGapError as exc:
        return out + _unreadable(exc.message, f"restore the segment holding seq {exc.first} "
                                 f"({log.dir / segment_name(exc.first)}) from a backup; "
                                 f"seqs {exc.first}..{exc.last} are missing"), None
    except FasedError as exc:
        return out + _unreadable(exc.message), None
    if torn is not None:
        out.append(torn)
    broken = sorted(p.name for p in log.dir.glob("*.broken")) if log.dir.is_dir() else []
    if broken:
        out.append(Finding("log", "info", f"{len(broken)} .broken file(s) hold bytes cut from "
                           f"torn tails: {', '.join(broken[:5])}"))
    span = f"seq 1..{count} gapless" if count else "no events yet"
    out.append(Finding("log", "ok", f"{count} events in {len(track)} segment(s), "
                       f"checksums valid, {span}"))
    return out, state


def _unreadable(message: str, what_to_do: str | None = None) -> list[Finding]:
    out = [Finding("log", "error", message)]
    if what_to_do:
        out.append(Finding("log", "error", what_to_do[0].upper() + what_to_do[1:]))
    out.append(Finding("log", "error", "the log cannot be read past the error above; "
                       "events before it are intact. Keep a copy of the home before editing "
                       "anything by hand."))
    return out


def _tail(log: EventLog, state: LogState, repair: bool,
          seen: _Seen) -> tuple[LogState, Finding | None]:
    """The log's end, and a finding when a torn tail is there. A batch a command is still
    writing looks just like one a crash cut short, so what the read found is looked at
    again under the lock (writers hold it only to append), and cut there with --repair."""
    state, torn = log.survey(state)  # its own listing and stat of the last segment
    if torn is None:
        return state, None
    if not log.try_lock(TAIL_LOCK_SECONDS):
        return state, Finding("log", "info", f"{torn.size - torn.offset} bytes at byte "
                              f"{torn.offset} of {torn.path.name} are no whole batch yet: "
                              "the command holding the lock may be writing them")
    try:
        state, torn = log.survey(state)  # at rest: nothing is being written now
        if torn is None:
            return state, None
        message = (f"torn tail: {torn.size - torn.offset} bytes at byte {torn.offset} of "
                   f"{torn.path.name} (an interrupted write; the next append moves them to a "
                   ".broken file)")
        if not repair:
            return state, Finding("log", "warn", message)
        log.floor = seen.checkpoint if same_log(seen, state) else 0
        try:
            cut = log.repair_tail()
        except StateAheadError:
            return state, Finding("log", "warn", message + "; not cut: state.db applied "
                                  "events in it (see below)")
        finally:
            log.floor = 0
        state.segments[-1].size = torn.offset
        return state, Finding("log", "warn", message, bool(cut))
    finally:
        log.unlock()


# -- the projections --------------------------------------------------------------------------

def _projections(store, state: LogState, seen: _Seen, repair: bool,
                 accept_loss: bool) -> list[Finding]:
    head = state.head.seq
    if seen.stuck:
        return [Finding("projections", "error", seen.problem or "state.db cannot be opened")]
    ours = same_log(seen, state)
    if seen.problem is None and seen.version == _version() and ours:
        lost = _lost(store.log, state, seen)
        if lost is not None:
            if not (repair and accept_loss):
                return [Finding("projections", "error", lost + ". Restore the log from a "
                                "backup, or go on without those events: `fased doctor "
                                "--repair --accept-loss` (recorded in the log)")]
            _accept_loss(store, seen, head, lost)
            return [Finding("projections", "error", lost, True)]
    problem = seen.problem
    if problem is None and seen.version != _version():
        problem = "state.db was built by another projection version"
    if problem is None and not ours and seen.checkpoint > 0:
        problem = "state.db was built from another log"
    if problem is None and seen.checkpoint < head:
        return [Finding("projections", "info", f"state.db is {head - seen.checkpoint} events "
                        "behind the log (the next command catches up)")]
    if problem is None:
        problem = _differences(store)
    if problem is None:
        return [Finding("projections", "ok", f"state.db is current at seq {head}")]
    fixed = False
    if repair:
        store.rebuild()
        fixed = True
    return [Finding("projections", "warn", problem, fixed)]


def _version() -> str:
    from fased.projections import projector

    return projector().version


def _lost(log: EventLog, state: LogState, seen: _Seen) -> str | None:
    """What the log lost that state.db applied, in words; None when it lost nothing."""
    head = state.head.seq
    if seen.checkpoint > head:
        return (f"state.db has applied events up to seq {seen.checkpoint}, but the log ends "
                f"at seq {head}: seqs {head + 1}..{seen.checkpoint} are missing from the log")
    at = next(log.read(seen.checkpoint, seen.checkpoint), None)
    if seen.head_id is not None and at is not None and at["id"] != seen.head_id:
        return (f"the log's event at seq {seen.checkpoint} is not the one state.db applied: "
                "events were lost and their seqs used again")
    return None


def _accept_loss(store, seen: _Seen, head: int, lost: str) -> None:
    """Cut a torn tail, rebuild state.db from what the log holds, and record the loss."""
    from fased.store import Draft

    log = store.log
    broken_before = set(log.dir.glob("*.broken"))
    with log.locked():
        state, torn = log.survey(None)
        log.state, log.floor = state, 0
        if torn is not None:
            log.repair_torn(torn)
        log.adopt(state)
        store._rebuild_locked()
        kept = sorted(p.name for p in set(log.dir.glob("*.broken")) - broken_before)
        data = {"checkpoint": seen.checkpoint, "head": head, "reason": lost}
        if seen.checkpoint > head:
            data["missing"] = [head + 1, seen.checkpoint]
        if kept:
            data["broken"] = kept
        store.append_internal([Draft("log.loss_accepted", "log", data)])


def _differences(store) -> str | None:
    """Compare state.db with a fresh build from the log: flipped bytes in a row that SQLite's
    own check cannot see still show here. None when they match."""
    from fased.audit import differences_from_log

    try:
        live = sqlite3.connect(f"file:{store.db_path}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        return f"state.db is unreadable ({exc})"
    try:
        differences = differences_from_log(live, store.log)
    except StateError:
        return None  # the log's own findings say why
    finally:
        live.close()
    if not differences:
        return None
    return "state.db differs from the log: " + "; ".join(differences[:3])
