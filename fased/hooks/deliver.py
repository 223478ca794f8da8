"""Delivering events to hooks: one at a time per hook, in log order, across runners.

A delivery is claimed under the log lock by appending `hook.started` (with a lease: the
hook's timeout and a margin); only then does the command run. Its end is `hook.finished`,
recorded only if this runner still holds the claim. What the claim takes, in order:

1. a started delivery whose lease ran out (its runner died): recorded as interrupted, and
   run again as the next attempt (or marked failed if that was the last one);
2. a failed run whose retry time has come (hook.finished outcome retry, retry_at);
3. the first matching event after the hook's cursor.

A hook with a delivery in flight under a live lease, or a retry still waiting, is left alone:
that is what keeps its events in order. The log is scanned for the next matching event
outside the lock; the claim checks the cursor did not move meanwhile.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fased.hooks.command import RunOutcome, hook_environment, run_command, workspace_of
from fased.hooks.spec import HookSpec, matches
from fased.store import Draft, Store
from fased.timeparse import format_ts, utc_now

LEASE_MARGIN = 5.0  # seconds past a hook's timeout before its delivery counts as abandoned
DIED = "its runner died during the run (the lease ran out); it runs again"


@dataclass
class Delivery:
    """A claimed run of a hook for one event."""

    spec: HookSpec
    event_seq: int
    event_type: str
    attempt: int
    runner: str
    replay: bool = False


def hook_rows(con: sqlite3.Connection, active_only: bool = True) -> list[sqlite3.Row]:
    where = "WHERE active = 1 " if active_only else ""
    return con.execute(f"SELECT * FROM hooks {where}ORDER BY added_seq, name").fetchall()


def hook_row(con: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    return con.execute("SELECT * FROM hooks WHERE name = ?", (name,)).fetchone()


def read_event(store: Store, seq: int) -> dict | None:
    from fased.upcast import upcast

    for event in store.log.read(seq, seq):
        return upcast(event)
    return None


class Scanner:
    """Finds the next event a hook takes after its cursor, remembering how far it read, so a
    hook that matches nothing does not read the same events again on every tick."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, int, int | None, int]] = {}

    def next_match(self, store: Store, spec: HookSpec, after: int) -> int | None:
        from fased.upcast import upcast

        key = spec.dumps()
        seen = self._seen.get(spec.name)
        start = after + 1
        if seen is not None and seen[0] == key and seen[1] == after:
            if seen[2] is not None:
                return seen[2]
            start = seen[3] + 1
        head = store.log.head().seq
        scanned = start - 1
        if start <= head:
            for event in store.log.read(start, head):
                scanned = event["seq"]
                if matches(spec, upcast(event)):
                    self._seen[spec.name] = (key, after, scanned, scanned)
                    return scanned
        self._seen[spec.name] = (key, after, None, max(scanned, after))
        return None

    def may_have_work(self, spec: HookSpec, after: int, head: int) -> bool:
        """False only when this scanner read up to `head` since `after` and found nothing."""
        seen = self._seen.get(spec.name)
        return not (seen is not None and seen[0] == spec.dumps() and seen[1] == after
                    and seen[2] is None and seen[3] >= head)


def _started(d: Delivery, lease_until: str) -> Draft:
    import os

    data = {"hook": d.spec.name, "event_seq": d.event_seq, "event_type": d.event_type,
            "attempt": d.attempt, "runner": d.runner, "pid": os.getpid(),
            "host": os.uname().nodename, "lease_until": lease_until}
    if d.replay:
        data["replay"] = True
    return Draft("hook.started", f"hook:{d.spec.name}", data)


def _finished(d: Delivery, outcome: str, run: RunOutcome | None, *, error: str | None = None,
              retry_at: str | None = None, runner: str | None = None) -> Draft:
    from fased.safetext import scrub

    data: dict = {"hook": d.spec.name, "event_seq": d.event_seq, "event_type": d.event_type,
                  "attempt": d.attempt, "runner": runner or d.runner, "outcome": outcome,
                  "exit_code": run.exit_code if run else None}
    if run is not None:
        data.update(timed_out=run.timed_out, duration_ms=run.duration_ms, output=run.output,
                    output_bytes=run.output_bytes)
        if run.signal:
            data["signal"] = run.signal
        if not run.ok:
            error = error or run.describe()
    else:
        data["interrupted"] = True
    if error:
        data["error"] = error[:1000]
    if retry_at:
        data["retry_at"] = retry_at
    if d.replay:
        data["replay"] = True
    data, _ = scrub(data)
    return Draft("hook.finished", f"hook:{d.spec.name}", data)


def lease_until(spec: HookSpec, now: datetime) -> str:
    return format_ts(now + timedelta(seconds=spec.timeout + LEASE_MARGIN))


def claim_next(store: Store, name: str, runner: str, scanner: Scanner,
               clock: Callable[[], datetime] = utc_now) -> Delivery | None:
    """Claim the hook's next delivery (recording hook.started), or None when it has nothing
    to do now or another runner holds it."""
    for _ in range(10):  # a lost race or a settled dead delivery: look again
        con = store.db(check_files=False)
        row = hook_row(con, name)
        if row is None or not row["active"]:
            return None
        spec = HookSpec.loads(row["spec"])
        found = None
        if row["inflight_seq"] is None and row["retry_seq"] is None:
            found = scanner.next_match(store, spec, row["cursor"])
            if found is None:
                return None
        result: list = []

        def decide(con, row=row, found=found, result=result):
            now = clock()
            stamp = format_ts(now)
            r = hook_row(con, name)
            if r is None or not r["active"] or r["spec"] != row["spec"]:
                result.append("again")
                return []
            spec = HookSpec.loads(r["spec"])
            if r["inflight_seq"] is not None:
                if r["inflight_lease"] >= stamp:
                    return []  # another runner is on it
                dead = Delivery(spec, r["inflight_seq"], r["inflight_type"],
                                r["inflight_attempt"], runner)
                if dead.attempt >= spec.attempts:
                    result.append("again")
                    return [_finished(dead, "failed", None, runner=r["inflight_runner"],
                                      error="its runner died during the last attempt")]
                d = Delivery(spec, dead.event_seq, dead.event_type, dead.attempt + 1, runner)
                result.append(d)
                return [_finished(dead, "retry", None, error=DIED, retry_at=stamp,
                                  runner=r["inflight_runner"]),
                        _started(d, lease_until(spec, now))]
            if r["retry_seq"] is not None:
                if r["retry_at"] > stamp:
                    return []
                d = Delivery(spec, r["retry_seq"], r["retry_type"], r["retry_attempt"] + 1,
                             runner)
            else:
                if found is None or r["cursor"] != row["cursor"]:
                    result.append("again")
                    return []
                event = read_event(store, found)
                d = Delivery(spec, found, event["type"], 1, runner)
            result.append(d)
            return [_started(d, lease_until(spec, now))]

        store.append_internal(decide)
        if not result:
            return None
        if isinstance(result[0], Delivery):
            return result[0]
    return None


def run_delivery(store: Store, d: Delivery) -> RunOutcome:
    """Run a claimed delivery's command (nothing recorded here)."""
    con = store.db(check_files=False)
    event = read_event(store, d.event_seq)
    env = hook_environment(con, store.home, d.spec, event)
    return run_command(d.spec, event, cwd=workspace_of(con, store.home, d.spec, event), env=env)


def finish(store: Store, d: Delivery, run: RunOutcome,
           clock: Callable[[], datetime] = utc_now) -> str | None:
    """Record how a delivery went, if this runner still holds it. Returns the outcome
    (delivered, retry, failed), or None when the delivery was taken over meanwhile."""
    outcome: list[str] = []

    def decide(con):
        if not d.replay:
            r = hook_row(con, d.spec.name)
            if r is None or (r["inflight_seq"], r["inflight_runner"], r["inflight_attempt"]) \
                    != (d.event_seq, d.runner, d.attempt):
                return []
        retry_at = None
        if run.ok:
            what = "delivered"
        elif d.replay or d.attempt >= d.spec.attempts:
            what = "failed"
        else:
            what = "retry"
            wait = d.spec.backoff[d.attempt - 1]
            retry_at = format_ts(clock() + timedelta(seconds=wait))
        outcome.append(what)
        return [_finished(d, what, run, retry_at=retry_at)]

    store.append_internal(decide)
    return outcome[0] if outcome else None


class Dispatcher:
    """Runs hooks for one runner process: a worker thread per hook with work, each
    delivering that hook's events one after the other until it has nothing left to do now.
    `report` is told of every delivery that ended (from the worker thread)."""

    def __init__(self, home, *, command: str | None = None,
                 report: Callable[[Delivery, RunOutcome, str | None], None] | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        from fased.runner import runner_id

        self.home = home
        self.command = command
        self.report = report
        self.clock = clock
        self.runner = runner_id()
        self.scanner = Scanner()
        self.workers: dict[str, threading.Thread] = {}
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []

    def tick(self, con: sqlite3.Connection, head: int) -> int:
        """Start a worker for each hook that may have work and has none running here.
        Returns how many were started."""
        stamp = format_ts(self.clock())
        started = 0
        for row in hook_rows(con):
            worker = self.workers.get(row["name"])
            if worker is not None and worker.is_alive():
                continue
            if row["inflight_seq"] is not None:
                busy = row["inflight_lease"] >= stamp
            elif row["retry_seq"] is not None:
                busy = row["retry_at"] > stamp
            else:
                busy = not self.scanner.may_have_work(HookSpec.loads(row["spec"]),
                                                      row["cursor"], head)
            if busy:
                continue
            worker = threading.Thread(target=self._work, args=(row["name"],), daemon=True,
                                      name=f"hook-{row['name']}")
            self.workers[row["name"]] = worker
            worker.start()
            started += 1
        return started

    def _work(self, name: str) -> None:
        store = Store(self.home, command=self.command, clock=self.clock)
        try:
            while not self.stopping.is_set():
                d = claim_next(store, name, self.runner, self.scanner, self.clock)
                if d is None:
                    return
                run = run_delivery(store, d)
                outcome = finish(store, d, run, self.clock)
                if self.report is not None:
                    self.report(d, run, outcome)
        except Exception as exc:  # recorded for the caller; the hook's lease covers the rest
            self.errors.append(exc)
        finally:
            store.close()

    def busy(self) -> bool:
        return any(w.is_alive() for w in self.workers.values())

    def drain(self, con_of: Callable[[], sqlite3.Connection], head_of: Callable[[], int]) -> None:
        """Deliver everything that can be delivered now, then return (`--once`)."""
        while True:
            for worker in list(self.workers.values()):
                worker.join()
            if not self.tick(con_of(), head_of()):
                return

    def stop(self) -> None:
        """Let the workers finish the runs they are in, and start no new one."""
        self.stopping.set()


def replay(store: Store, spec: HookSpec, events: list[dict], runner: str,
           report: Callable[[Delivery, RunOutcome, str | None], None] | None = None,
           clock: Callable[[], datetime] = utc_now) -> list[tuple[Delivery, RunOutcome, str]]:
    """Deliver `events` to the hook again, each once, recorded with replay: true (the
    hook's cursor does not move and a failure is not retried)."""
    done = []
    for event in events:
        d = Delivery(spec, event["seq"], event["type"], 1, runner, replay=True)
        store.append_internal([_started(d, lease_until(spec, clock()))])
        run = run_delivery(store, d)
        outcome = finish(store, d, run, clock) or "failed"
        if report is not None:
            report(d, run, outcome)
        done.append((d, run, outcome))
    return done
