"""Talking to an agent: queue a turn, then answer it in the foreground, keeping session order.

Output sinks decide how a reply reaches stdout:
- StreamSink writes pieces as they arrive. When an attempt is retried after a dropped stream
  it does not repeat what was already shown; if the retry says something else, it starts a
  new line and says so on stderr.
- BlockSink sends completed blocks (block streaming) through a StreamSink.
- With no sink the caller prints the final reply once (pipes and files get exactly it).
Either way the reply ends with a newline, unless it is empty or ends with one itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from fased.agents import get_agent
from fased.loop import calls_of_turn
from fased.runner import Runner, TurnResult
from fased.sessions import ensure_session
from fased.store import Draft, Store


@dataclass
class Queued:
    turn: str
    agent: str
    session: str
    seq: int
    replayed: bool
    model_set: bool = False  # this chat set or cleared the session's model override


def new_turn_id() -> str:
    return f"t-{os.urandom(6).hex()}"  # os.urandom: importing secrets costs ~7 ms


def queue_turn(store: Store, message: str, *, agent: str | None = None,
               session: str | None = None, new_session: bool = False,
               override: str | None = None, save: bool = False,
               source: str = "chat", options: dict | None = None) -> Queued:
    """Append `turn.queued` (and, for -m, the session's model override; `clear` clears it)
    in one transaction; `options` are the turn's model parameters (fased.params)."""
    from fased.errors import UsageError
    from fased.models import check_not_a_fallback
    from fased.sessions import model_override_drafts

    turn_id = new_turn_id()

    def decide(con):
        a = get_agent(con, agent)
        sid, drafts = ensure_session(con, a["id"], session, new_session)
        if override is not None:
            ref, model_set = model_override_drafts(con, a["id"], sid, override)
            drafts += model_set
            if save and ref is None:
                raise UsageError("--save needs a model, not clear")
            if save and a["primary_model"] != ref:
                check_not_a_fallback(a["id"], ref, json.loads(a["fallbacks"] or "[]"))
                drafts.append(Draft("agent.models_set", f"agent:{a['id']}",
                                    {"agent": a["id"], "primary": ref}))
        drafts.append(Draft("turn.queued", f"session:{sid}", {
            "turn": turn_id, "agent": a["id"], "session": sid, "message": message,
            "source": source, **({"options": options} if options else {})}))
        return drafts

    outcome = store.transact(decide)
    queued = next(e for e in outcome.events if e["type"] == "turn.queued")
    d = queued["data"]
    return Queued(d["turn"], d["agent"], d["session"], queued["seq"], outcome.replayed,
                  any(e["type"] == "session.model_set" for e in outcome.events))


def result_from_row(con: sqlite3.Connection, turn_id: str) -> TurnResult | None:
    """The outcome of a finished turn, read back from the projection (for re-runs)."""
    row = con.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
    if row is None:
        return None
    if row["state"] == "merged":
        parent = result_from_row(con, row["merged_into"])
        return parent if parent is None or parent.state != "running" else None
    if row["state"] not in ("completed", "failed", "aborted"):
        return None
    return TurnResult(
        row["id"], row["agent"], row["session"], row["state"], reply=row["reply"] or "",
        model=row["model_used"],
        usage={"input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
               **({} if row["cost"] is None else {"cost": row["cost"]})},
        finish_reason=row["finish_reason"], latency_ms=row["latency_ms"], ttft_ms=row["ttft_ms"],
        attempts=row["attempts"], error_class=row["error_class"], error=row["error"],
        context_dropped=row["context_dropped"] or 0, steps=row["steps"] or 0,
        calls=calls_of_turn(con, row["id"]))


def answer(store: Store, queued: Queued, sink=None, note: Callable[[str], None] = lambda s: None,
           poll: float = 0.1, lease: float | None = None, approver=None,
           on_tool=None, stream: bool = True) -> TurnResult:
    """Run `queued` in the foreground. Earlier queued turns of the same session are answered
    first (in order, not printed); a turn another runner holds is waited for. A reply that
    was not streamed here (another runner answered, or a retry with the same idempotency key
    finds it done) goes to `sink` whole. `stream=False` asks the server for one document."""
    kwargs = {"lease": lease} if lease else {}
    runner = Runner(store, note=note, stream=stream, **kwargs)
    waited = None
    with runner.letting_go():  # a claim cut short before its run goes back
        while True:
            done = result_from_row(store.db(check_files=False), queued.turn)
            if done is not None:
                if sink is not None and done.state == "completed":
                    sink.feed(done.reply)
                return done
            claim = runner.claim_next(session=queued.session, upto_seq=queued.seq)
            if claim is None:
                if runner.held_by and runner.held_by != waited:  # once per turn holding it
                    turn, state = runner.held_by
                    note(f"fased: waiting for turn {turn} of session {queued.session}: it awaits "
                         "an approval (`fased approvals`)" if state == "parked" else
                         f"fased: waiting for another runner to finish turn {turn} of session "
                         f"{queued.session}")
                    waited = runner.held_by
                time.sleep(poll)
                continue
            if claim.turn == queued.turn or queued.turn in claim.merged:
                result = runner.run(claim, sink, interrupt="abort", approver=approver,
                                    on_tool=on_tool)
                if result.state == "parked":
                    wait_for_decision(store, result.approval, note, poll)
                    continue  # decided: the turn is queued again, and this chat resumes it
                if result.state != "abandoned":
                    return result
                continue  # given back after a network error: answer it again (a bounded number)
            note(f"fased: answering the earlier queued turn {claim.turn} of session "
                 f"{claim.session} first")
            runner.run(claim, None, interrupt="abandon", approver=approver, on_tool=on_tool)


def wait_for_decision(store: Store, approval: str, note: Callable[[str], None],
                      poll: float = 0.1) -> None:
    """A chat whose turn parked waits (Ctrl-C leaves it parked) until someone approves or
    denies the request from another terminal, or it expires."""
    from fased.approvals import expire_due

    row = store.db(check_files=False).execute(
        "SELECT command, expires_at FROM approvals WHERE id = ?", (approval,)).fetchone()
    note(f"fased: `{row['command']}` needs approval; waiting until {row['expires_at'][:19]} UTC "
         f"(another terminal: fased approvals approve {approval}, or deny {approval})")
    try:
        while store.db(check_files=False).execute(
                "SELECT state FROM approvals WHERE id = ?", (approval,)).fetchone()[0] == "pending":
            expire_due(store)
            time.sleep(max(poll, 0.2))
    except KeyboardInterrupt:
        note(f"fased: the turn stays parked; `fased approvals approve {approval}` and "
             "`fased run` go on with it")
        raise


def withdraw(store: Store, queued: Queued) -> bool:
    """Ctrl-C before the chat's own turn started (while it waited for a runner holding the
    session, or answered an earlier turn first): record the turn aborted with nothing said,
    so that no runner answers it later. False when a runner has taken it already. A second
    signal (`timeout -s INT` sends two) does not cut the record short."""
    from fased.signals import held

    def decide(con):
        row = con.execute("SELECT state, agent, session, task FROM turns WHERE id = ?",
                          (queued.turn,)).fetchone()
        if row is None or row["state"] != "queued":
            return []
        return [Draft("turn.aborted", f"session:{row['session']}", {
            "turn": queued.turn, "agent": row["agent"], "session": row["session"],
            "partial_reply": "", "reason": "interrupted", "task": row["task"]})]

    with held(deliver=False):
        return bool(store.append_internal(decide).events)


def take_back(store: Store, queued: Queued, why: str,
              note: Callable[[str], None]) -> bool:
    """withdraw `queued`, and say so: `why` ended the command before its turn started
    ("interrupted", "terminated"). False, and nothing said, when a runner has taken it."""
    if not withdraw(store, queued):
        return False
    note(f"fased: {why} before turn {queued.turn} started; it will not be answered")
    return True


class StreamSink:
    """Writes a streamed reply as it arrives, without repeating a retried prefix."""

    def __init__(self, write: Callable[[str], None], warn: Callable[[str], None]):
        self.write = write
        self.warn = warn
        self.shown = ""
        self.current: list[str] = []
        self.current_len = 0

    def restart(self) -> None:
        self.current = []
        self.current_len = 0

    def next_message(self) -> None:
        """The model's text so far was a step before tool calls: what follows is new text
        (a later step), not a retry of it."""
        if self.shown and not self.shown.endswith("\n"):
            self.write("\n")
        self.shown = ""
        self.restart()

    def feed(self, piece: str) -> None:
        start = self.current_len
        self.current.append(piece)
        self.current_len += len(piece)
        if self.current_len <= len(self.shown) and self.shown[start:self.current_len] == piece:
            return  # a retry repeating what is already on screen
        text = "".join(self.current)
        self.current = [text]
        if text.startswith(self.shown):
            self.write(text[len(self.shown):])
        else:
            self._show_again(text)
        self.shown = text

    def _show_again(self, text: str) -> None:
        self.warn("\nfased: the retried reply differs from what was shown; it follows in full")
        self.write("\n" + text)

    def finish(self) -> None:
        """Show a retried reply that stopped short of what was shown; end the line, as every
        Unix tool's output does (a reply that ends with a newline gets no second one)."""
        text = "".join(self.current)
        if self.current_len and text != self.shown:
            self._show_again(text)
            self.shown = text
        self.end_line()

    def end_line(self) -> None:
        """End the line a reply left open (one stopped midway, too), so that what follows
        (a note, the shell's prompt) starts a line of its own."""
        if self.shown and not self.shown.endswith("\n"):
            self.write("\n")


class BlockSink:
    """Block streaming: completed blocks (800-1200 characters by default) instead of tokens;
    `message_end` holds them all until the reply is complete."""

    def __init__(self, inner: StreamSink, min_chars: int, max_chars: int, brk: str):
        self.inner = inner
        self.min_chars, self.max_chars, self.brk = min_chars, max_chars, brk
        self.restart()

    def restart(self) -> None:
        from fased.chunker import BlockChunker

        self.chunker = BlockChunker(self.min_chars, self.max_chars)
        self.blocks: list[str] = []
        self.inner.restart()

    def next_message(self) -> None:
        for block in self.chunker.flush():
            self._emit(block)
        self._show()
        self.inner.next_message()
        self.restart()

    def feed(self, piece: str) -> None:
        for block in self.chunker.feed(piece):
            self._emit(block)

    def _emit(self, block: str) -> None:
        self.blocks.append(block)
        if self.brk != "message_end":
            self._show()

    def _show(self) -> None:
        # the chunker may close and reopen a long code fence between blocks; stdout gets the
        # reply's own text, so show the blocks joined back
        from fased.chunker import join_chunks

        self.inner.restart()
        self.inner.feed(join_chunks(self.blocks))

    def finish(self) -> None:
        for block in self.chunker.flush():
            self._emit(block)
        self._show()
        self.inner.finish()

    def end_line(self) -> None:
        self.inner.end_line()


def block_settings(con: sqlite3.Connection) -> tuple[bool, int, int, str]:
    """(on, min, max, break) from agents.defaults.blockStreaming*."""
    from fased.config import config_doc

    d = config_doc(con).get("agents", {}).get("defaults", {})
    chunk = d.get("blockStreamingChunk", {})
    return (d.get("blockStreamingDefault", "off") == "on", chunk.get("minChars", 800),
            chunk.get("maxChars", 1200), d.get("blockStreamingBreak", "text_end"))

