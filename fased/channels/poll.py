"""One poll of a channel account: receive, record, admit, queue, answer, send.

Exactly once, inbound: each update is recorded (`channel.received`, with its update_id) before
anything acts on it, and the next poll asks the channel only for updates after the last one
in the log; that request is also what confirms the earlier ones to Telegram. An update fetched
but not recorded (a crash) is fetched again; one recorded is never recorded twice (the decide
step skips known ids). What routing decided is `channel.admitted`, appended in one batch with
the turn it queues; a recorded update that has no admission yet (a crash in between) is
admitted by the next poll. Outbound, see fased.channels.outbox.

Only one poller per account runs at a time: `channel-<channel>-<account>.lock` is taken
without waiting, and a second poller stops with PollerBusy (exit 3). Two getUpdates at once
is what makes Telegram answer 409.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fased.channels.accounts import client as account_client
from fased.channels.accounts import get_account, stream_of
from fased.channels.base import ChannelError, Inbound
from fased.errors import ConflictError, FasedError, NotFoundError
from fased.store import Draft, Store

TYPING_EVERY = 4.0  # Telegram shows "typing" for 5 seconds


class PollerBusy(ConflictError):
    """Another process polls this account right now."""


@dataclass
class PollResult:
    """What one poll did, for printing."""

    account: str
    received: int = 0
    admitted: dict = field(default_factory=dict)  # action -> count
    answered: list = field(default_factory=list)  # TurnResults
    sent: int = 0
    error: ChannelError | None = None

    def to_dict(self) -> dict:
        return {"account": self.account, "received": self.received, "admitted": self.admitted,
                "turns": [{"turn": r.turn, "session": r.session, "state": r.state}
                          for r in self.answered],
                "sent": self.sent, "error": self.error.message if self.error else None}


@contextmanager
def poll_lock(home, channel: str, account: str) -> Iterator[None]:
    import fcntl

    fd = os.open(home / f"channel-{channel}-{account}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PollerBusy(
                f"another poller is reading {channel}/{account} right now (`fased channel "
                "poll` or `fased run --channels`)",
                hint="only one poller per bot may run; this one stopped and changed "
                "nothing") from None
        yield
    finally:
        os.close(fd)


def offset(con: sqlite3.Connection, channel: str, account: str) -> int | None:
    """The id of the update recorded last for the account (None: nothing yet). The last, not
    the highest: Telegram may number updates anew after a week without any."""
    row = con.execute("SELECT update_id FROM channel_inbound WHERE channel = ? AND account = ?"
                      " ORDER BY received_seq DESC LIMIT 1", (channel, account)).fetchone()
    return row[0] if row else None


def fetch(store: Store, client, timeout: float) -> int:
    """One getUpdates after the recorded offset; records the new updates. Returns how many."""
    updates = client.receive(offset(store.db(check_files=False), client.name, client.account),
                             timeout)
    if not updates:
        return 0
    stream = stream_of(client.name, client.account)

    def decide(con):
        drafts = []
        for u in updates:  # in the channel's order
            if con.execute("SELECT 1 FROM channel_inbound WHERE channel = ? AND account = ? AND"
                           " update_id = ?", (client.name, client.account, u.update_id)
                           ).fetchone() or any(d.data["update_id"] == u.update_id
                                               for d in drafts):
                continue  # recorded by another poll already
            data = {"channel": client.name, "account": client.account,
                    "update_id": u.update_id, "kind": "other"}
            m = u.inbound
            if m is not None:
                data.update(kind="message", peer_kind=m.peer_kind, peer_id=m.peer_id,
                            sender_id=m.sender_id, sender_name=m.sender_name[:256],
                            text=m.text, mentioned=m.mentioned, message_id=m.message_id)
            drafts.append(Draft("channel.received", stream, data))
        return drafts

    return len(store.append_internal(decide).events)


def inbound_of(row: sqlite3.Row) -> Inbound:
    return Inbound(row["channel"], row["account"], row["peer_kind"], row["peer_id"],
                   row["sender_id"], row["sender_name"] or "", row["text"] or "",
                   bool(row["mentioned"]), row["message_id"] or "", str(row["update_id"]))


def admit_pending(store: Store, channel: str, account: str) -> dict:
    """Route every recorded message not admitted yet; returns {action: count}."""
    from fased.channels.routing import admit

    counts: dict = {}
    rows = store.db(check_files=False).execute(
        "SELECT * FROM channel_inbound WHERE channel = ? AND account = ? AND kind = 'message'"
        " AND action IS NULL ORDER BY received_seq", (channel, account)).fetchall()
    for row in rows:
        admission = admit(store, inbound_of(row))
        if record_admission(store, row, admission):
            counts[admission.action] = counts.get(admission.action, 0) + 1
    return counts


def record_admission(store: Store, row: sqlite3.Row, admission) -> bool:
    """channel.admitted, and for a turn its session (with its origin) and turn.queued, in one
    batch. False when another poll admitted the message first."""
    from fased.agents import get_agent
    from fased.chat import new_turn_id

    turn = new_turn_id()
    key = (row["channel"], row["account"], row["update_id"])

    def decide(con):
        now = con.execute("SELECT action FROM channel_inbound WHERE channel = ? AND account = ?"
                          " AND update_id = ?", key).fetchone()
        if now is None or now["action"] is not None:
            return []
        data = {"channel": key[0], "account": key[1], "update_id": key[2],
                "action": admission.action}
        drafts: list[Draft] = []
        agent = None
        if admission.action == "turn":
            try:
                agent = get_agent(con, admission.agent)["id"]
            except NotFoundError as exc:  # routed to an agent deleted meanwhile: recorded
                data.update(action="ignore", reason=exc.message[:1000])
        if agent is not None:
            sid, drafts = _session(con, agent, admission.session
                                   or f"{row['channel']}-{row['peer_id']}", row)
            drafts.append(Draft("turn.queued", f"session:{sid}", {
                "turn": turn, "agent": agent, "session": sid, "message": row["text"] or "",
                "source": "queue"}))
            data.update(agent=agent, session=sid, turn=turn)
        elif admission.action != "turn":
            if admission.reply:
                data["reply"] = admission.reply
            if admission.reason:
                data["reason"] = admission.reason[:1000]
        drafts.append(Draft("channel.admitted", stream_of(key[0], key[1]), data))
        return drafts

    return bool(store.append_internal(decide).events)


def _session(con: sqlite3.Connection, agent: str, ref: str,
             row: sqlite3.Row) -> tuple[str, list[Draft]]:
    """The session a channel message goes to (by id or name; created when missing), and the
    drafts that create it and record where it talks to."""
    from fased.sessions import SESSION_ID, new_session

    found = con.execute(
        "SELECT id FROM sessions WHERE deleted = 0 AND agent = ? AND (id = ? OR name = ?)"
        " ORDER BY id = ? DESC, created_seq LIMIT 1", (agent, ref, ref, ref)).fetchone()
    drafts: list[Draft] = []
    if found is not None:
        sid = found[0]
    else:
        sid, drafts = new_session(con, agent, None if SESSION_ID.match(ref) else ref,
                                  switch=False)
    origin = {"agent": agent, "session": sid, "channel": row["channel"],
              "account": row["account"], "peer_kind": row["peer_kind"],
              "peer_id": row["peer_id"]}
    have = con.execute("SELECT agent, session, channel, account, peer_kind, peer_id FROM "
                       "session_origins WHERE session = ?", (sid,)).fetchone()
    if have is None or dict(have) != origin:
        drafts.append(Draft("session.origin_set", f"session:{sid}", origin))
    return sid, drafts


class Typing(threading.Thread):
    """Shows "typing" in a chat until stopped (its own client calls; errors ignored)."""

    def __init__(self, client, peer_id: str):
        super().__init__(daemon=True, name=f"typing-{peer_id}")
        self.client, self.peer_id = client, peer_id
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            self.client.typing(self.peer_id)
            if self._stop_event.wait(TYPING_EVERY):
                return

    def stop(self) -> None:
        self._stop_event.set()


@contextmanager
def typing_for(store: Store, session: str, clients: dict) -> Iterator[None]:
    """While a turn of `session` runs: "typing" in its chat, if it has one among `clients`
    ({(channel, account): client})."""
    origin = store.db(check_files=False).execute(
        "SELECT channel, account, peer_id FROM session_origins WHERE session = ?",
        (session,)).fetchone()
    client = clients.get((origin["channel"], origin["account"])) if origin else None
    if client is None:
        yield
        return
    typing = Typing(client, origin["peer_id"])
    typing.start()
    try:
        yield
    finally:
        typing.stop()


def ready_sessions(store: Store, runner, channel: str, account: str) -> list[str]:
    """This account's sessions with a turn a runner may take now: queued, or running under a
    lease that lapsed (fased.leases: ran out, or its runner on this host is gone)."""
    from fased.leases import lapsed
    from fased.timeparse import format_ts

    con = store.db(check_files=False)
    lapsed_sql, params = lapsed(con, format_ts(runner.clock()))
    return [r[0] for r in con.execute(
        "SELECT DISTINCT t.session FROM turns t JOIN session_origins o ON o.session = t.session"
        " WHERE o.channel = ? AND o.account = ? AND (t.state = 'queued' OR (t.state = 'running'"
        f" AND t.id IN (SELECT id FROM turns WHERE {lapsed_sql}))) ORDER BY t.queued_seq",
        (channel, account, *params))]


def answer_ready(store: Store, runner, client, on_result: Callable) -> list:
    """Run the account's turns that are ready, one session at a time, "typing" meanwhile;
    each reply goes out as soon as its turn ends."""
    results = []
    clients = {(client.name, client.account): client}
    with runner.letting_go():
        for session in ready_sessions(store, runner, client.name, client.account):
            while True:
                claim = runner.claim_next(session=session)
                if claim is None:
                    break
                with typing_for(store, claim.session, clients):
                    result = runner.run(claim, None, interrupt="abandon")
                results.append(result)
                on_result(result)
    return results


def poll_once(store: Store, channel: str, account: str, *, runner=None, timeout: float = 0,
              note: Callable[[str], None] = lambda s: None,
              on_result: Callable = lambda r: None, sleep=None, client=None) -> PollResult:
    """One poll of an account under its lock (PollerBusy when another holds it): sends left
    over, receive, admit, answer what is ready (with a runner), send. A channel error while
    receiving is kept in the result; what was already recorded is still answered."""
    from fased.channels import outbox

    with poll_lock(store.home, channel, account):
        if client is None:
            client = account_client(store, get_account(store.db(check_files=False), channel,
                                                       account), sleep=sleep)
        result = PollResult(f"{channel}/{account}")
        outbox.recover(store, note)
        try:
            result.received = fetch(store, client, timeout)
        except ChannelError as exc:
            result.error = exc
        result.admitted = admit_pending(store, channel, account)
        result.sent += outbox.send_pending(store, client, note)
        if runner is not None:
            def answered(r):
                on_result(r)
                result.sent += outbox.send_pending(store, client, note)

            result.answered = answer_ready(store, runner, client, answered)
        return result


def poll_accounts(store: Store) -> list[tuple[str, str]]:
    """(channel, account) of every account."""
    return [(r["channel"], r["account"]) for r in store.db(check_files=False).execute(
        "SELECT channel, account FROM channel_accounts WHERE removed = 0 ORDER BY key")]


class Ticker:
    """`fased run --channels`: between turns, poll every account (the first one long-polls
    for the whole seconds of `timeout`, the others do not wait), and hold the loop no longer
    than `timeout` (plus the time the requests take): a due task waits at most one tick. An
    account another process polls is skipped (said once); turns are left to the loop."""

    def __init__(self, store: Store, note: Callable[[str], None],
                 clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None
                 = None):
        import time

        self.store, self.note = store, note
        self.clock, self.sleep = clock or time.monotonic, sleep or time.sleep
        self.clients: dict = {}
        self._said: set = set()

    def _once(self, key, message: str) -> None:
        if (key, message) not in self._said:
            self._said.add((key, message))
            self.note(message)

    def tick(self, timeout: float) -> int:
        """Poll every account once; returns the number of updates received."""
        start = self.clock()
        received = 0
        keys = poll_accounts(self.store)
        first = keys[0] if keys else None
        for channel, account in keys:
            key = (channel, account)
            left = timeout if key == first else 0.0  # whole seconds: Telegram's unit
            try:
                if key not in self.clients:
                    row = get_account(self.store.db(check_files=False), channel, account)
                    self.clients[key] = account_client(self.store, row)
                result = poll_once(self.store, channel, account, timeout=left, note=self.note,
                                   client=self.clients[key])
            except FasedError as exc:  # busy, no token, removed meanwhile: the loop goes on
                self._once(key, f"fased: {channel}/{account}: {exc.message}")
                continue
            received += result.received
            if result.error is not None:
                self._once(key, f"fased: {channel}/{account}: {result.error.message}")
        left = timeout - (self.clock() - start)
        if left > 0 and not received:
            self.sleep(left)
        return received
