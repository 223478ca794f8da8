"""A turn's model calls: the fallback chain, retries with tenacity, an event per attempt.

Retries: exponential backoff with jitter, never shorter than the server's Retry-After, only
for retryable errors (connection, timeout, 408/409/429/5xx, a stream dropped mid-way). After
a model's retries, the next ref in the chain is tried; auth and "model not found" fall back
at once, a bad request fails the turn. A model that failed gets a cooldown, recorded in the
log, so the next turns skip it until it expires.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

from fased.agents import get_agent
from fased.errors import FasedError
from fased.net import MODEL_DEADLINE
from fased.safetext import scrub
from fased.store import Draft
from fased.timeparse import format_ts

NO_FALLBACK = ("bad_request", "context_length")


class TurnFailed(Exception):
    """No model of the chain could answer: the turn fails with `data` (turn.failed)."""

    def __init__(self, data: dict):
        super().__init__(data.get("message"))
        self.data = data


class ModelChain:
    """A turn's models in fallback order, with retries: `call` makes one model call of the
    turn (a step) and returns its result; a model that failed during the turn is not tried
    again for the turn's later steps (the next in the chain gets the same history)."""

    def __init__(self, runner, claim, sink=None):
        self.runner = runner
        self.claim = claim
        self.sink = sink
        self.attempts = 0
        self.current_model: str | None = None
        self.cooldowns: list[Draft] = []
        self.tried: list[str] = []
        self.index = 0  # the chain position the next step starts at
        self._pieces: list[str] = []
        self._clients: dict[str, tuple] = {}
        self.toolless: set[str] = set()  # models that refused tools this turn
        #: the model parameters the last call sent, as its turn.step/turn.completed records
        self.sent: dict = {}
        self._narrowed: set[str] = set()  # refs whose range a parameter was put in, said once
        self.started = time.monotonic()

    @property
    def partial(self) -> str:
        return "".join(self._pieces)

    def configure(self, settings: dict) -> None:
        from fased.settings import DEFAULT_COOLDOWN, DEFAULT_RETRIES

        self.retries = int(settings.get("retries", DEFAULT_RETRIES))
        self.cooldown = float(settings.get("cooldownSeconds", DEFAULT_COOLDOWN))
        self.timeouts = {"read_timeout": float(settings.get("timeoutSeconds", 120)),
                         "deadline": float(settings.get("deadlineSeconds", MODEL_DEADLINE))}
        for ref, until in self.claim.cooling.items():
            self.runner.note(f"fased: skipping {ref} (cooling down until {until})")

    def call(self, con, messages: list[dict], tools: list[dict] | None):
        """One model call along the chain; raises TurnFailed when no model answers."""
        chain = self.claim.models
        if not chain:
            from fased.setup import next_step

            step = next_step(con, self.claim.agent) or "`fased agent models set primary REF`"
            raise TurnFailed({
                "error_class": "no_model", "attempts": 0, "models_tried": [],
                "message": f"agent {self.claim.agent} has no model; next: {step}",
                "runner": self.runner.id})
        last: FasedError | None = None
        while self.index < len(chain):
            ref = chain[self.index]
            if ref not in self.tried:
                self.tried.append(ref)
            try:
                return self._call_model(con, ref, messages, tools)
            except FasedError as exc:
                last = exc
                kind = getattr(exc, "kind", "config")
                if kind in NO_FALLBACK:
                    raise TurnFailed({
                        "error_class": kind, "message": exc.message, "attempts": self.attempts,
                        "models_tried": list(self.tried), "runner": self.runner.id,
                        **({"hint": exc.hint} if exc.hint else {})}) from None
                until = format_ts(self.runner.clock() + timedelta(seconds=self.cooldown))
                # a configuration error (an unset key variable) is the user's to fix, and
                # sent nothing: the next turn after the fix must not skip the model
                if self.cooldown > 0 and kind != "config":
                    self.cooldowns.append(Draft("model.cooldown", f"model:{ref}", {
                        "model": ref, "until": until, "reason": kind}))
                self.index += 1
                more = self.index < len(chain)
                # a configuration error is the user's to fix: say what it is
                what = f"cannot be used: {exc.message}" if kind == "config" else (
                    f"failed ({kind})")
                self.runner.note(f"fased: {ref} {what}"
                                 + (f"; falling back to {chain[self.index]}" if more else ""))
        raise TurnFailed({
            "error_class": "models_failed", "attempts": self.attempts,
            "models_tried": list(self.tried),
            "message": f"every model failed ({', '.join(self.tried)}); last: "
            f"{last.message if last else 'unknown error'}", "runner": self.runner.id})

    def _client(self, con, ref: str):
        """(parsed ref, client) of a model, made once a turn: its connection, and a
        credential command run once, serve every step."""
        if ref not in self._clients:
            from fased.models import get_provider, make_client, parse_model_ref

            parsed = parse_model_ref(con, ref)
            self._clients[ref] = (parsed, make_client(
                self.runner.store.home, get_provider(con, parsed.provider), **self.timeouts))
        return self._clients[ref]

    def _call_model(self, con, ref: str, messages: list[dict], tools: list[dict] | None):
        """One model with retries; raises the last error when it gives up."""
        retries = self.retries
        from fased.settings import MAX_WAIT

        self.current_model = ref
        try:
            parsed, client = self._client(con, ref)
        except FasedError as exc:
            self._record_attempt(ref, 1, exc)
            raise
        from fased.params import model_params, model_tools

        if not model_tools(con, ref):
            self.toolless.add(ref)  # its capabilities say it cannot use them: not offered
        wanted = model_params(con, self.claim.agent, ref, self._turn_options(con))
        options = self.sent = client.sent_options(wanted)
        for name, (low, high) in client.OPTION_RANGE.items():
            if name in wanted and options.get(name) != wanted[name] and ref not in self._narrowed:
                self._narrowed.add(ref)
                self.runner.note(f"fased: {ref} takes {name} {low:g} to {high:g}; sent "
                                 f"{options[name]}")
        model_attempt = 0

        def attempt():
            nonlocal model_attempt
            model_attempt += 1
            self.attempts += 1
            self._pieces.clear()
            if self.sink is not None:
                self.sink.restart()
            offered = None if ref in self.toolless else tools or None
            try:
                return client.chat(parsed.model, messages, stream=self.runner.stream,
                                   on_delta=self._delta, tools=offered, options=options)
            except FasedError as exc:
                if getattr(exc, "kind", None) == "no_tools" and offered:
                    # the model cannot take tools: the same step again, as plain chat
                    self.toolless.add(ref)
                    self.runner.note(f"fased: {ref} does not accept tools; this turn asks it "
                                     "without them")
                    return client.chat(parsed.model, messages, stream=self.runner.stream,
                                       on_delta=self._delta, options=options)
                self._record_attempt(ref, model_attempt, exc)
                raise

        def retryable(exc: BaseException) -> bool:
            after = getattr(exc, "retry_after", None)
            return bool(getattr(exc, "retryable", False)) and (after is None or after <= MAX_WAIT)

        def pause(exc: BaseException, failed: int) -> float:
            """Exponential backoff with full jitter after `failed` attempts, never shorter than
            the server's Retry-After."""
            import random

            backoff = random.uniform(0, min(MAX_WAIT, 0.25 * 2 ** failed))
            return min(MAX_WAIT, max(backoff, getattr(exc, "retry_after", None) or 0))

        def announce(exc: BaseException, delay: float, next_attempt: int) -> None:
            self.runner.note(f"fased: {ref}: {getattr(exc, 'kind', 'error')}; retrying in "
                             f"{delay:.1f}s (attempt {next_attempt} of {retries + 1})")

        try:
            try:
                return attempt()
            except FasedError as exc:
                if retries == 0 or not retryable(exc):
                    raise
                failure = exc
            # tenacity costs ~10 ms to import, so a call that works the first time (nearly
            # all of them) never loads it; it drives the remaining attempts
            import tenacity

            delay = pause(failure, 1)
            announce(failure, delay, 2)
            self.runner.sleep(delay)
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(retries),
                wait=lambda state: pause(state.outcome.exception(), state.attempt_number + 1),
                retry=tenacity.retry_if_exception(retryable), sleep=self.runner.sleep,
                before_sleep=lambda state: announce(state.outcome.exception(),
                                                    state.next_action.sleep,
                                                    state.attempt_number + 2),
                reraise=True)
            return retrying(attempt)
        except FasedError:
            self._clients.pop(ref)[1].close()  # a failed model is not asked again this turn
            raise

    def _turn_options(self, con) -> dict | None:
        """The model parameters the turn was queued with (`chat -o`)."""
        row = con.execute("SELECT options FROM turns WHERE id = ?", (self.claim.turn,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def close(self) -> None:
        """Close the turn's clients (their pooled connections)."""
        for _, client in self._clients.values():
            client.close()
        self._clients.clear()

    def _delta(self, piece: str) -> None:
        self._pieces.append(piece)
        if self.sink is not None:
            self.sink.feed(piece)

    def _record_attempt(self, ref: str, attempt: int, exc: FasedError) -> None:
        c = self.claim
        data = {"turn": c.turn, "agent": c.agent, "session": c.session, "model": ref,
                "attempt": attempt, "kind": getattr(exc, "kind", "config"),
                "message": exc.message, "retryable": bool(getattr(exc, "retryable", False))}
        for key in ("status", "retry_after"):
            if getattr(exc, key, None) is not None:
                data[key] = getattr(exc, key)
        if self._pieces:
            data["partial_chars"] = len(self.partial)
        data, _ = scrub(data)
        self.runner.store.append_internal(
            [Draft("turn.attempt_failed", f"session:{c.session}", data)])


def model_chain(con, turn, now: str) -> tuple[list[str], dict[str, str]]:
    """The refs a turn tries, in order: its override (else, for a chat turn, the session's)
    or the agent's primary, then the fallbacks, without models cooling down at `now` (unless
    every one of them is); and the ones left out (ref -> cooling down until). The session's
    override is the model the user named: it is tried even while it cools down. A task's turn
    carries the task's model (or the agent's task model) as its override: the session's chat
    override (`chat -m`, `/model`) is not for it."""
    agent = get_agent(con, turn["agent"], include_deleted=True)
    session = None if turn["task"] else con.execute(
        "SELECT model_override FROM sessions WHERE id = ?", (turn["session"],)).fetchone()
    first = turn["model_override"] or (session[0] if session else None) or agent[
        "primary_model"]
    named = first if session and first == session[0] else None
    chain: list[str] = []
    for ref in [first, *json.loads(agent["fallbacks"] or "[]")]:
        if ref and ref not in chain:
            chain.append(ref)
    cooling = {r[0]: r[1] for r in con.execute(
        "SELECT model, until FROM cooldowns WHERE until > ?", (now,))}
    if all(ref in cooling for ref in chain):
        return chain, {}
    usable = [ref for ref in chain if ref not in cooling or ref == named]
    return usable, {ref: cooling[ref] for ref in chain if ref in cooling and ref != named}
