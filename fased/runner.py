"""Running turns: claim under the log lock with a lease, call the model with retries and
fallback, record every attempt, and answer each turn exactly once.

A claim is `turn.started` with a lease; a heartbeat thread extends it while the model works.
A turn whose lease ran out (its runner was killed) is claimable again, and so at once is one
whose runner was a process of this host that has ended (fased.leases). The result is recorded
only if this runner still holds the claim (the fence), so nothing is answered twice.

Whatever goes wrong while answering (a bug, an error nothing below classified) ends that turn
as failed, or gives it back to the queue when the network failed, and the runner goes on: a
turn is left started only when the process itself dies. A result that cannot be recorded is
a StateError (exit 4).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fased.errors import FasedError, ModelsFailedError, StateError
from fased.leases import holders, lapsed
from fased.safetext import describe, scrub
from fased.settings import agent_settings, env_flag, queue_mode
from fased.signals import Stop, held
from fased.store import Draft, Store
from fased.timeparse import format_ts, parse_ts, utc_now

DEFAULT_LEASE = 60.0
COLLECT_DEBOUNCE = 1.0
COLLECT_CAP = 20
MAX_CLAIMS = 3  # a turn given back after a network error is claimed at most this often


class LostClaim(FasedError):
    """Another runner took the turn over (our lease ran out); our result is not recorded."""


@dataclass
class Claim:
    turn: str
    agent: str
    session: str
    claim: int
    merged: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # the refs to try, in order
    cooling: dict[str, str] = field(default_factory=dict)  # refs skipped -> cooling until
    task: str | None = None  # the task that queued the turn


@dataclass
class TurnResult:
    """How a turn ended, for printing (`--json`) and exit codes."""

    turn: str
    agent: str
    session: str
    state: str  # completed | failed | aborted | abandoned | lost
    reply: str = ""
    model: str | None = None
    usage: dict = field(default_factory=dict)
    finish_reason: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 0
    error_class: str | None = None
    error: str | None = None
    hint: str | None = None  # what to do about the error, when the failure says
    context_dropped: int = 0
    merged: list[str] = field(default_factory=list)
    replaced_chars: int = 0
    calls: list[dict] = field(default_factory=list)  # the tool calls this runner finished
    steps: int = 0  # model calls
    approval: str | None = None  # the approval a parked turn waits for

    def to_dict(self) -> dict:
        return {
            "turn": self.turn, "agent": self.agent, "session": self.session,
            "state": self.state, "reply": self.reply, "model": self.model,
            "usage": self.usage, "finish_reason": self.finish_reason,
            "timings": {"latency_ms": self.latency_ms, "ttft_ms": self.ttft_ms},
            "attempts": self.attempts, "error_class": self.error_class, "error": self.error,
            "context_dropped": self.context_dropped, "merged": self.merged,
            "replaced_chars": self.replaced_chars, "steps": self.steps, "calls": self.calls,
            **({"approval": self.approval} if self.approval else {}),
        }


@contextlib.contextmanager
def sigterm_stops():
    """SIGTERM raises Stop in the main thread while the block runs (`fased run`, chat, a
    channel poll): the command records how its turn ends, then exits 143."""
    import signal

    def on_term(signum, frame):
        raise Stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_signal_each():
    """While a turn runs: the first SIGINT raises KeyboardInterrupt and the first SIGTERM
    raises Stop, and any signal after that is dropped until the turn's end is recorded.
    GNU `timeout -s INT` signals the process and then its group, so two SIGINTs arrive
    back to back; the second used to break out of recording the first, and the turn stayed
    started, to be answered later by whoever came next. Only the main thread can have
    signal handlers: elsewhere nothing changes."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def once(signum, frame):
        if fired:
            return  # the turn is already ending because of the first
        fired.append(signum)
        if signum == signal.SIGTERM:
            raise Stop()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def runner_id() -> str:
    """`host:pid:ns-random`: where a runner ran, precisely enough to tell it has ended
    (fased.leases.runner_gone)."""
    from fased.leases import namespace

    return f"{os.uname().nodename}:{os.getpid()}:{namespace()}-{os.urandom(3).hex()}"


class Runner:
    """Claims and runs turns for one process. `clock` and `sleep` are injectable for tests."""

    def __init__(self, store: Store, *, agent: str | None = None, lease: float = DEFAULT_LEASE,
                 clock: Callable[[], datetime] = utc_now,
                 sleep: Callable[[float], None] = time.sleep,
                 note: Callable[[str], None] = lambda s: None, stream: bool = True):
        self.store = store
        self.agent = agent
        self.lease = lease
        self.clock = clock
        self.sleep = sleep
        self.note = note
        self.stream = stream  # False (`chat --no-stream`): ask servers for one document
        self.id = runner_id()
        self.waiting = False  # the last claim found a turn whose collect debounce runs
        self.held_by: tuple[str, str] | None = None  # (turn, state) holding the session
        self.holding: Claim | None = None  # claimed by this runner, its end not yet recorded

    # -- claiming ---------------------------------------------------------------------------

    def claim_next(self, session: str | None = None, upto_seq: int | None = None) -> Claim | None:
        """Claim the oldest turn that may run now (one running turn per session)."""
        claimed: list[Claim] = []
        self.waiting = False
        self.held_by = None

        def decide(con):
            claim = self._pick(con, session, upto_seq)
            if claim is None:
                return []
            claimed.append(claim)
            return [self._started_draft(con, claim)]

        # a signal while the claim is recorded comes once `holding` knows it: whatever then
        # ends the command before the turn's end is recorded gives it back (letting_go)
        with held():
            self.store.append_internal(decide)
            if claimed:
                self.holding = claimed[-1]
        return claimed[-1] if claimed else None

    @contextlib.contextmanager
    def letting_go(self):
        """Whatever ends the block before a claim's end is recorded (Ctrl-C or SIGTERM
        between the claim and its run, an error there) gives the turn back to the queue, as
        an interrupted `fased run` does, rather than leave it started, to be answered by
        the next runner of its session: for a chat, a message its user took back."""
        try:
            yield
        except BaseException as exc:
            claim, self.holding = self.holding, None
            if claim is not None:
                reason = ("interrupted" if isinstance(exc, KeyboardInterrupt) else
                          "terminated" if isinstance(exc, Stop) else "runner failed")
                # nothing more can be done if it cannot be recorded: its lease runs out
                with held(deliver=False), contextlib.suppress(FasedError, OSError,
                                                              sqlite3.Error):
                    self._record(claim, "turn.abandoned", {"runner": self.id,
                                                           "reason": reason}, [])
            raise

    def _pick(self, con, session: str | None, upto_seq: int | None) -> Claim | None:
        from fased.turn import model_chain

        now = format_ts(self.clock())
        lapsed_sql, params = lapsed(con, now)
        where = [f"(state = 'queued' OR (state = 'running' AND {lapsed_sql}))"]
        if self.agent:
            where.append("agent = ?")
            params.append(self.agent)
        if session:
            where.append("session = ?")
            params.append(session)
        if upto_seq is not None:
            where.append("queued_seq <= ?")
            params.append(upto_seq)
        # a parked turn holds its session too: later messages wait for its approval
        busy = holders(con, now)
        seen: set[str] = set()
        for row in con.execute(f"SELECT * FROM turns WHERE {' AND '.join(where)} "
                               "ORDER BY queued_seq", params).fetchall():
            if row["session"] in busy:
                self.held_by = self.held_by or busy[row["session"]]
                continue
            if row["session"] in seen:
                continue
            seen.add(row["session"])
            merged = self._collect(con, row, now)
            if merged is None:
                self.waiting = True
                continue
            return Claim(row["id"], row["agent"], row["session"], row["claims"] + 1, merged,
                         *model_chain(con, row, now), task=row["task"])
        return None

    def _collect(self, con, row: sqlite3.Row, now: str) -> list[str] | None:
        """In collect mode, the queued turns answered together with `row`; None while the
        debounce has not passed since the newest of them."""
        if row["state"] == "running":  # a reclaim keeps what it had merged
            return [r[0] for r in con.execute("SELECT id FROM turns WHERE merged_into = ? "
                                              "ORDER BY queued_seq", (row["id"],))]
        if queue_mode(con, row["session"], row["agent"]) != "collect":
            return []
        queue = agent_settings(con, row["agent"])["queue"]
        debounce = queue.get("debounceMs", COLLECT_DEBOUNCE * 1000) / 1000
        cap = queue.get("cap", COLLECT_CAP)
        pending = con.execute("SELECT id, queued_at FROM turns WHERE session = ? AND state = "
                              "'queued' ORDER BY queued_seq LIMIT ?",
                              (row["session"], cap)).fetchall()
        newest = parse_ts(pending[-1]["queued_at"])
        if (parse_ts(now) - newest).total_seconds() < debounce:
            return None
        return [r["id"] for r in pending[1:]]

    def _started_draft(self, con, claim: Claim) -> Draft:
        lease_until = format_ts(self.clock() + timedelta(seconds=self.lease))
        data = {"turn": claim.turn, "agent": claim.agent, "session": claim.session,
                "runner": self.id, "pid": os.getpid(), "host": os.uname().nodename,
                "lease_until": lease_until, "claim": claim.claim, "models": claim.models}
        if claim.merged:
            data["merged"] = claim.merged
        return Draft("turn.started", f"session:{claim.session}", data)

    # -- running ----------------------------------------------------------------------------

    def run(self, claim: Claim, on_delta: Callable[[str], None] | None = None,
            interrupt: str = "abandon", approver=None, on_tool=None) -> TurnResult:
        """Run a claimed turn to its end (the agent loop) and record the outcome.

        `interrupt` says what Ctrl-C means: "abort" (keep the partial reply, as chat does) or
        "abandon" (give the turn back to the queue, as `fased run` does); SIGTERM does the
        same, with reason "terminated".
        `approver` asks the user about a call that needs it; `on_tool` shows a call starting.
        """
        with _one_signal_each():
            return self._run(claim, on_delta, interrupt, approver, on_tool)

    def _run(self, claim: Claim, on_delta, interrupt: str, approver, on_tool) -> TurnResult:
        from fased.loop import AgentLoop

        keeper = LeaseKeeper(self.store.home, claim, self.id, self.lease, self.clock)
        call = AgentLoop(self, claim, on_delta, approver, on_tool)
        try:
            keeper.start()
            try:
                outcome = call.execute()
            except Exception as exc:
                if not self._recovered_from_damage(exc):
                    raise
                call = AgentLoop(self, claim, on_delta, approver, on_tool)
                outcome = call.execute()
        except KeyboardInterrupt:
            keeper.stop()
            if interrupt == "abort":
                return self._finish(claim, "turn.aborted", {
                    "partial_reply": call.partial, "model": call.current_model,
                    "reason": "interrupted"}, call)
            self._finish(claim, "turn.abandoned", {"runner": self.id, "reason": "interrupted"},
                         call)
            raise
        except Stop as stop:
            keeper.stop()
            if interrupt == "abort":  # `timeout 30 fased chat ...`: ended, not re-answered
                # the aborted turn rides on the Stop: chat prints it as after Ctrl-C
                stop.result = self._finish(claim, "turn.aborted", {
                    "partial_reply": call.partial, "model": call.current_model,
                    "reason": "terminated"}, call)
            else:
                self._finish(claim, "turn.abandoned", {"runner": self.id,
                                                       "reason": "terminated"}, call)
            raise
        except BrokenPipeError:
            # whoever read the streamed reply went away (`| head -1`): end the turn with what
            # was said, or it would hold its session until the lease ran out
            keeper.stop()
            self._finish(claim, "turn.aborted", {
                "partial_reply": call.partial, "model": call.current_model,
                "reason": "output closed"}, call)
            raise
        except StateError:
            raise  # the home is unusable: nothing could record the outcome either
        except Exception as exc:
            keeper.stop()
            outcome = self._unexpected(claim, call, exc)
        finally:
            keeper.stop()
        etype, data = outcome
        if etype == "parked":  # recorded already: the turn waits for an approval
            self.holding = None
            return TurnResult(claim.turn, claim.agent, claim.session, "parked",
                              attempts=call.attempts, approval=data["id"])
        return self._finish(claim, etype, data, call)

    def _recovered_from_damage(self, exc: Exception) -> bool:
        """state.db held bytes it cannot decode while the turn was being answered: rebuild it
        from the log (the claim is in the log, so the turn is still ours) and run it again."""
        from fased.store import damage_note, is_projection_damage

        if not is_projection_damage(exc):
            return False
        self.note(damage_note(exc))
        self.store.recover_damaged()
        return True

    def _unexpected(self, claim: Claim, call, exc: Exception) -> tuple[str, dict]:
        """How a turn ends after an exception nothing below handled."""
        from fased.net import is_network_error

        what = describe(exc)
        if is_network_error(exc) and claim.claim < MAX_CLAIMS:
            self.note(f"fased: turn {claim.turn}: {what}; it goes back to the queue")
            return "turn.abandoned", {"runner": self.id, "reason": f"network error: {what}"}
        if isinstance(exc, FasedError):
            error_class, message = "error", exc.message
        else:
            error_class, message = "internal", f"internal error: {what}"
            if env_flag("FASED_DEBUG", strict=False):
                import traceback

                self.note("".join(traceback.format_exception(exc)).rstrip())
            else:
                self.note(f"fased: turn {claim.turn} hit a bug in fased ({what}); "
                          "FASED_DEBUG=1 shows the traceback")
        return "turn.failed", {"error_class": error_class, "message": message,
                               "attempts": call.attempts, "models_tried": list(call.tried),
                               "runner": self.id}

    def _finish(self, claim: Claim, etype: str, data: dict, call) -> TurnResult:
        """Record the outcome if we still hold the claim; otherwise drop it quietly.

        An outcome the log refuses (a value its schema does not allow) is recorded as a failed
        turn instead; when nothing can be recorded at all, StateError."""
        # nothing a server said may keep the result from being recorded
        data, _ = scrub(data)
        try:
            try:
                self._record(claim, etype, data, list(call.cooldowns))
            except (LostClaim, StateError, OSError, sqlite3.Error):
                raise
            except Exception as exc:
                etype, data = "turn.failed", {
                    "error_class": "internal", "attempts": call.attempts,
                    "models_tried": list(call.tried), "runner": self.id,
                    "message": f"internal error: could not record the {etype}: {describe(exc)}"}
                self._record(claim, etype, data, [])
        except LostClaim as exc:
            self.holding = None
            self.note(f"fased: {exc.message}; this runner's result is dropped")
            return TurnResult(claim.turn, claim.agent, claim.session, "lost")
        except StateError:
            raise
        except Exception as exc:
            raise StateError(
                f"could not record the result of turn {claim.turn}: {describe(exc)}",
                hint="the turn stays claimed until its lease runs out, then another runner "
                "answers it; `fased doctor` checks the home") from None
        from fased.loop import calls_of_turn

        state = etype.split(".")[1]
        calls = calls_of_turn(self.store.db(check_files=False), claim.turn)
        return TurnResult(
            claim.turn, claim.agent, claim.session, state,
            reply=data.get("reply", data.get("partial_reply", "")), model=data.get("model"),
            usage=data.get("usage") or {}, finish_reason=data.get("finish_reason"),
            latency_ms=data.get("latency_ms"), ttft_ms=data.get("ttft_ms"),
            attempts=data.get("attempts", call.attempts), error_class=data.get("error_class"),
            error=data.get("message"), hint=data.get("hint"),
            context_dropped=data.get("context_dropped", 0),
            merged=claim.merged, replaced_chars=data.get("replaced_chars", 0), calls=calls,
            steps=data.get("steps", 1 if state == "completed" else 0))

    def _record(self, claim: Claim, etype: str, data: dict, drafts: list[Draft]) -> None:
        from fased.loop import close_open_calls

        base = {"turn": claim.turn, "agent": claim.agent, "session": claim.session}
        if etype != "turn.abandoned":
            base["task"] = claim.task  # null too: lets the tasks projection skip chat turns
        if claim.merged and etype != "turn.abandoned":
            data = {**data, "merged": claim.merged}

        def decide(con):
            self._fence(con, claim)
            closing = [] if etype == "turn.abandoned" else close_open_calls(
                con, claim.turn, claim.agent, claim.session)
            return [*drafts, *closing, Draft(etype, f"session:{claim.session}",
                                             {**base, **data})]

        self.store.append_internal(decide)
        if self.holding is claim:
            self.holding = None

    def record_fenced(self, claim: Claim, drafts: list[Draft]) -> None:
        """Append events of a turn this runner still holds (LostClaim otherwise)."""

        def decide(con):
            self._fence(con, claim)
            return drafts

        self.store.append_internal(decide)

    def _fence(self, con, claim: Claim) -> None:
        row = con.execute("SELECT state, runner, claims FROM turns WHERE id = ?",
                          (claim.turn,)).fetchone()
        if row["state"] != "running" or row["runner"] != self.id or (
                row["claims"] != claim.claim):
            raise LostClaim(f"turn {claim.turn} was taken over by another runner")

    # -- the loop ---------------------------------------------------------------------------

    def pending(self) -> tuple[int, int]:
        """(queued turns, turns running under a live lease) for this runner's agent filter."""
        con = self.store.db()
        lapsed_sql, lapsed_params = lapsed(con, format_ts(self.clock()))
        agent_clause, params = ("AND agent = ?", [self.agent]) if self.agent else ("", [])
        queued = con.execute(f"SELECT COUNT(*) FROM turns WHERE (state = 'queued' OR (state ="
                             f" 'running' AND {lapsed_sql})) {agent_clause}",
                             [*lapsed_params, *params]).fetchone()[0]
        running = con.execute(f"SELECT COUNT(*) FROM turns WHERE state = 'running' AND NOT "
                              f"{lapsed_sql} {agent_clause}",
                              [*lapsed_params, *params]).fetchone()[0]
        return queued, running


def require_success(result: TurnResult) -> TurnResult:
    """Raise the error a failed turn means for `fased chat`'s exit code."""
    if result.state == "failed":
        if result.error_class == "models_failed":
            raise ModelsFailedError(result.error or "every model failed",
                                    hint="`fased agent models status --probe` shows why")
        raise FasedError(result.error or "the turn failed", hint=result.hint)
    return result


class LeaseKeeper(threading.Thread):
    """Extends a claimed turn's lease while the model works (its own store and connection)."""

    def __init__(self, home, claim: Claim, runner: str, lease: float, clock):
        super().__init__(daemon=True, name=f"lease-{claim.turn}")
        self.home = home
        self.claim = claim
        self.runner = runner
        self.lease = lease
        self.clock = clock
        self._stop_event = threading.Event()

    def run(self) -> None:
        store = Store(self.home)
        try:
            while not self._stop_event.wait(self.lease / 3):
                until = format_ts(self.clock() + timedelta(seconds=self.lease))
                c = self.claim

                def decide(con, until=until, c=c):
                    row = con.execute("SELECT state, runner FROM turns WHERE id = ?",
                                      (c.turn,)).fetchone()
                    if row["state"] != "running" or row["runner"] != self.runner:
                        return []
                    return [Draft("turn.lease_extended", f"session:{c.session}", {
                        "turn": c.turn, "agent": c.agent, "session": c.session,
                        "runner": self.runner, "lease_until": until})]

                store.append_internal(decide)
        except Exception:
            # the result's fence still holds: at worst another runner takes the turn over
            return
        finally:
            store.close()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

