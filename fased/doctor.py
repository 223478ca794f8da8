"""`fased doctor`: check the home, the log and the projections; repair what is safe to repair.

Safe repairs never lose an event: cutting a torn tail (kept in a `.broken` file), tightening
permissions, rebuilding state.db. A corrupt record before the tail is reported, not "fixed".
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from fased.errors import CorruptLogError, FasedError
from fased.log import BadRecord, EventLog, _scan_back_for_batch_end, decode_record
from fased.upcast import upcast


@dataclass
class Finding:
    """One result: `level` is ok, info, warn or error; `fixed` when --repair mended it."""

    check: str
    level: str
    message: str
    fixed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def check(store, repair: bool = False) -> list[Finding]:
    """Run every check, in order; with `repair`, fix what can be fixed without losing events."""
    findings: list[Finding] = []
    findings += _permissions(store.home, repair)
    findings += _lock(store.log)
    log_findings, head_seq = _log(store.log, repair)
    findings += log_findings
    if head_seq is None:  # a rebuild reads the whole log: it would stop at the same error
        findings.append(Finding("projections", "info",
                                "not checked: the log cannot be read to its end"))
    else:
        findings += _projections(store, head_seq, repair)
    return findings


def _permissions(home: Path, repair: bool) -> list[Finding]:
    out = []
    wrong = []
    for path in [home, *sorted(_private_files(home))]:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        want = 0o700 if path.is_dir() else 0o600
        if mode & 0o077:
            wrong.append((path, mode, want))
    for path, mode, want in wrong:
        fixed = False
        if repair:
            os.chmod(path, want)
            fixed = True
        out.append(Finding("permissions", "warn",
                           f"{path} is {oct(mode)}, should be {oct(want)}", fixed))
    if not wrong:
        out.append(Finding("permissions", "ok", f"{home} and its files are private to the user"))
    return out


def _private_files(home: Path):
    for name in ("log.lock", "state.db", "state.db-wal", "state.db-shm", "fased.json",
                 "credentials.json", "delivery.lock"):
        yield home / name
    agents = home / "agents"
    if agents.is_dir():  # transcripts hold the conversations themselves
        yield from agents.rglob("*")
    log_dir = home / "log"
    if log_dir.is_dir():
        yield log_dir
        yield from log_dir.iterdir()


def _lock(log: EventLog) -> list[Finding]:
    try:
        fd = os.open(log.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        return [Finding("lock", "error", f"cannot open {log.lock_path}: {exc.strerror}")]
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return [Finding("lock", "info", "the log lock is held by another fased command right now")]
    finally:
        os.close(fd)
    return [Finding("lock", "ok", f"{log.lock_path} can be locked")]


def _log(log: EventLog, repair: bool) -> tuple[list[Finding], int | None]:
    """Every record's checksum, seq continuity, segment names, batches, known types.
    Returns the findings and the last seq (None when the log cannot be read to its end)."""
    out: list[Finding] = []
    segments = log.segments()
    expected = 1
    count = 0
    corrupt = False
    for i, (first, path) in enumerate(segments):
        is_last = i == len(segments) - 1
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                end = _scan_back_for_batch_end(f, size)[0] if is_last else size
            except CorruptLogError as exc:  # two records merged: not a torn write
                out.append(Finding("log", "error", exc.message))
                corrupt = True
                break
            if is_last and end < size:
                fixed = False
                if repair:
                    log.repair_tail()
                    fixed = True
                out.append(Finding(
                    "log", "warn", f"torn tail: {size - end} bytes at byte {end} of {path.name} "
                    "(an interrupted write; the next append moves them to a .broken file)", fixed))
            if first != expected:
                out.append(Finding("log", "error",
                                   f"{path.name} starts at seq {first}, expected {expected}"))
                corrupt = True
            f.seek(0)
            offset = 0
            for line in f.read(end).split(b"\n")[:-1] if end else []:
                try:
                    record = decode_record(line)
                    upcast(record)
                except BadRecord as exc:
                    out.append(Finding("log", "error",
                                       f"corrupt record in {path} at byte {offset}: {exc}"))
                    corrupt = True
                    break
                except FasedError as exc:
                    out.append(Finding("log", "error", exc.message))
                    corrupt = True
                    break
                if record["seq"] != expected:
                    out.append(Finding("log", "error", f"seq gap in {path.name} at byte {offset}: "
                                       f"found {record['seq']}, expected {expected}"))
                    corrupt = True
                    break
                expected += 1
                count += 1
                offset += len(line) + 1
    broken = sorted(p.name for p in log.dir.glob("*.broken")) if log.dir.is_dir() else []
    if broken:
        out.append(Finding("log", "info", f"{len(broken)} .broken file(s) hold bytes cut from "
                           f"torn tails: {', '.join(broken[:5])}"))
    if not corrupt:
        span = f"seq 1..{count} gapless" if count else "no events yet"
        out.append(Finding("log", "ok", f"{count} events in {len(segments)} segment(s), "
                           f"checksums valid, {span}"))
    else:
        out.append(Finding("log", "error", "the log cannot be read past the error above; "
                           "events before it are intact. Keep a copy of the home before editing "
                           "anything by hand."))
    return out, None if corrupt else count


def _projections(store, head_seq: int, repair: bool) -> list[Finding]:
    from fased.projections import projector

    path = store.db_path
    problem = None
    checkpoint = None
    if not path.exists():
        problem = "state.db is missing (any command rebuilds it)"
    else:
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    problem = "state.db fails SQLite's integrity check"
                else:
                    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
                    checkpoint = int(meta.get("checkpoint", -1))
                    if meta.get("version") != projector().version:
                        problem = "state.db was built by another projection version"
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            problem = f"state.db is unreadable ({exc})"
    if problem is None and checkpoint is not None and checkpoint != head_seq:
        level = "info" if checkpoint < head_seq else "warn"
        if checkpoint > head_seq:
            problem = f"state.db is ahead of the log (seq {checkpoint} > {head_seq})"
        else:
            return [Finding("projections", level, f"state.db is {head_seq - checkpoint} events "
                            "behind the log (the next command catches up)")]
    if problem is None:
        return [Finding("projections", "ok", f"state.db is current at seq {head_seq}")]
    fixed = False
    if repair:
        store.rebuild()
        fixed = True
    return [Finding("projections", "warn", problem, fixed)]
