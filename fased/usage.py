"""What model calls used, and wallets: limits an agent's turns must be under to start.

Tokens and cost are summed in SQL over the `usage_buckets` projection (each model call added
to its quarter of an hour, agent, session and model), never by reading the log. A call's
cost is what its server reported (LiteLLM's `x-litellm-response-cost`, `usage.cost`); a call
without one is priced from `models.prices` (US dollars per million input and output
tokens) when the user set a price for its model, else its cost stays unknown and is counted
apart (`calls_without_cost`), never as 0.

Days and months are those of `agents.defaults.userTimezone` (an IANA name), else UTC: one
fixed rule, so cron and a shell agree whatever their TZ. A wallet (`agents.defaults.wallet`,
with an agent's `agents.list[N].wallet` over it key by key) sets `tokensPerDay`,
`tokensPerMonth`, `costPerDay` and `costPerMonth`; a turn that would start with one of them
reached is refused before any model call (the runner records turn.failed, error class
`wallet`). A turn under the limit may go past it: nobody knows a reply's size before it comes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

BY = ("day", "model", "agent", "session")
WALLET_LIMITS = {  # key -> (what it counts, the period)
    "tokensPerDay": ("tokens", "day"),
    "tokensPerMonth": ("tokens", "month"),
    "costPerDay": ("cost", "day"),
    "costPerMonth": ("cost", "month"),
}
PER_TOKENS = 1_000_000  # a price is per million tokens

# per (group, model) of usage_buckets: calls, tokens, the reported cost, and what a price can
# still cover (the calls without a cost whose tokens are both known)
_SUMS = ("SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cost), SUM(costed),"
         " SUM(bare_input), SUM(bare_output), SUM(priceable)")
_KEYS = {None: "NULL", "model": "model", "agent": "agent", "session": "session"}


@dataclass
class Totals:
    """What some model calls used. `cost` sums the calls whose cost is known (reported or
    priced); `uncosted` counts the others."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    uncosted: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_known(self) -> bool:
        """Whether any call's cost is known (else the cost is unknown, not 0)."""
        return self.calls == 0 or self.uncosted < self.calls

    def add(self, other: Totals) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost
        self.uncosted += other.uncosted

    def to_dict(self) -> dict:
        return {"calls": self.calls, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "tokens": self.tokens,
                "cost": round(self.cost, 10) if self.cost_known else None,
                "calls_without_cost": self.uncosted}


def prices(con: sqlite3.Connection) -> dict[str, dict]:
    """models.prices, with each alias's price under the alias too (a turn records the ref
    it was given). The model of a kind-local provider runs in fased, on this machine: it
    costs nothing, unless models.prices says otherwise."""
    from fased.config import config_doc
    from fased.models import local_model_name

    models = config_doc(con).get("models") or {}
    table = dict(models.get("prices") or {})
    for row in con.execute("SELECT id, model_path FROM providers WHERE kind = 'local' AND "
                           "removed = 0 AND model_path IS NOT NULL"):
        table.setdefault(f"{row[0]}/{local_model_name(row[1])}", {"input": 0.0, "output": 0.0})
    for alias, ref in (models.get("aliases") or {}).items():
        if ref in table and alias not in table:
            table[alias] = table[ref]
    return table


def user_zone(con: sqlite3.Connection):
    """The zone days and months are counted in: agents.defaults.userTimezone, else UTC (also
    for a name that is no zone)."""
    from fased.config import config_doc
    from fased.errors import UsageError
    from fased.timeparse import zone_info

    name = ((config_doc(con).get("agents") or {}).get("defaults") or {}).get("userTimezone")
    try:
        return zone_info(name) or UTC
    except UsageError:
        return UTC


def zone_name(zone) -> str:
    return getattr(zone, "key", None) or "UTC"


def summarize(con: sqlite3.Connection, *, agent: str | None = None, session: str | None = None,
              since: datetime | None = None, by: str | None = None, zone=UTC,
              price_table: dict | None = None) -> list[tuple[str | None, Totals]]:
    """[(group, Totals)] of the model calls that match, groups in order (`by`: one of BY, or
    None for one total). Calls are counted by the quarter of an hour they were made in, so
    `since` counts from the start of its quarter (see quarter_start)."""
    from fased.projections.turns import bucket_of
    from fased.timeparse import format_ts

    if by is not None and by not in BY:
        raise ValueError(by)
    clauses, params = [], []
    for column, value in (("agent", agent), ("session", session)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("bucket >= ?")
        params.append(bucket_of(format_ts(since)))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    key = _day_sql(con, zone).replace("{b}", "bucket") if by == "day" else _KEYS[by]
    table = prices(con) if price_table is None else price_table
    groups: dict[str | None, Totals] = {}
    for row in con.execute(f"SELECT {key}, model, {_SUMS} FROM usage_buckets{where}"
                           " GROUP BY 1, 2", params):
        groups.setdefault(row[0], Totals()).add(_priced(row[1], row[2:], table))
    return sorted(groups.items(), key=lambda item: (item[0] is None, item[0] or ""))


def quarter_start(when: datetime) -> datetime:
    """The start of the quarter of an hour `when` is in (UTC): where a report from `when` on
    starts counting."""
    when = when.astimezone(UTC)
    return when.replace(minute=when.minute // 15 * 15, second=0, microsecond=0)


def _day_sql(con: sqlite3.Connection, zone) -> str:
    """SQL for the local date of a bucket `{b}`: its UTC date shifted by the zone's offset,
    which changes only at the zone's transitions (found between the first and last bucket),
    so SQLite groups by day itself instead of fased by each quarter of an hour."""
    if zone_name(zone) == "UTC":
        return "substr({b}, 1, 10)"
    first, last = con.execute("SELECT MIN(bucket), MAX(bucket) FROM usage_buckets").fetchone()
    if first is None:
        return "NULL"
    when = datetime.fromisoformat(f"{first}:00+00:00") - timedelta(days=1)
    end = datetime.fromisoformat(f"{last}:00+00:00") + timedelta(days=1)
    offset = _minutes(when, zone)
    cases = []
    while when < end:
        later = when + timedelta(days=1)
        if _minutes(later, zone) != offset:
            while when < later:  # the quarter of an hour the offset changes in
                when += timedelta(minutes=15)
                if _minutes(when, zone) != offset:
                    break
            cases.append(f"WHEN {{b}} < '{when:%Y-%m-%dT%H:%M}' THEN date({{b}} || ':00', "
                         f"'{offset:+d} minutes')")
            offset = _minutes(when, zone)
        else:
            when = later
    tail = f"date({{b}} || ':00', '{offset:+d} minutes')"
    return f"CASE {' '.join(cases)} ELSE {tail} END" if cases else tail


def _minutes(when: datetime, zone) -> int:
    return int(when.astimezone(zone).utcoffset().total_seconds() // 60)


def total(con: sqlite3.Connection, **filters) -> Totals:
    """Every matching call, summed (see summarize)."""
    out = Totals()
    for _, totals in summarize(con, **filters):
        out.add(totals)
    return out


def _priced(model: str, sums: tuple, table: dict) -> Totals:
    calls, tokens_in, tokens_out, cost, costed, bare_in, bare_out, priceable = sums
    totals = Totals(calls, tokens_in or 0, tokens_out or 0, cost or 0.0, calls - costed)
    price = table.get(model)
    if price and priceable:
        totals.cost += ((bare_in or 0) * price["input"]
                        + (bare_out or 0) * price["output"]) / PER_TOKENS
        totals.uncosted -= priceable
    return totals




# -- wallets --------------------------------------------------------------------------------

def wallet_of(con: sqlite3.Connection, agent: str) -> dict:
    """The agent's wallet: agents.defaults.wallet with its own keys over it."""
    from fased.config import config_doc

    defaults = ((config_doc(con).get("agents") or {}).get("defaults") or {}).get("wallet")
    row = con.execute("SELECT config FROM agents WHERE id = ?", (agent,)).fetchone()
    own = json.loads(row[0] or "{}").get("wallet") if row else None
    return {**(defaults or {}), **(own or {})}


def period(now: datetime, zone, kind: str) -> tuple[datetime, datetime]:
    """The day or month (in `zone`) that `now` is in, as aware UTC [start, end)."""
    local = now.astimezone(zone)
    if kind == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        end = start + timedelta(days=1)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        end = (start + timedelta(days=32)).replace(day=1)
    # midnight exists in nearly every zone; where a DST jump skips it, fold picks the instant
    return (start.replace(tzinfo=zone).astimezone(UTC), end.replace(tzinfo=zone).astimezone(UTC))


def wallet_report(con: sqlite3.Connection, agent: str, now: datetime) -> list[dict]:
    """Each limit the agent's wallet sets: what it allows, what is used in its period, what
    is left, when it resets, and whether it is reached."""
    from fased.timeparse import format_ts

    limits = wallet_of(con, agent)
    if not limits:
        return []
    zone = user_zone(con)
    table = prices(con)
    used: dict[str, Totals] = {}
    out = []
    for key, (counts, kind) in WALLET_LIMITS.items():
        if key not in limits:
            continue
        start, end = period(now, zone, kind)
        if kind not in used:
            used[kind] = total(con, agent=agent, since=start, price_table=table)
        spent = used[kind].tokens if counts == "tokens" else round(used[kind].cost, 10)
        allowed = limits[key]
        out.append({"limit": key, "counts": counts, "period": kind, "max": allowed,
                    "used": spent, "left": max(0, allowed - spent), "reached": spent >= allowed,
                    "resets": format_ts(end), "zone": zone_name(zone),
                    "calls_without_cost": used[kind].uncosted if counts == "cost" else 0})
    return out


def wallet_refusal(con: sqlite3.Connection, agent: str, now: datetime) -> str | None:
    """Why a turn of `agent` may not start at `now` (the first limit reached), else None."""
    for limit in wallet_report(con, agent, now):
        if limit["reached"]:
            return (f"wallet limit {limit['limit']} ({amount(limit['max'], limit['counts'])})"
                    f" reached: {amount(limit['used'], limit['counts'])} used; resets "
                    f"{local_time(limit['resets'], con)}")
    return None


def amount(value: float, counts: str) -> str:
    """Tokens as 12,345; dollars as $0.0123 (four places below a dollar, else two)."""
    if counts == "tokens":
        return f"{int(value):,}"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def local_time(ts: str, con: sqlite3.Connection) -> str:
    """A `ts` in the user's zone, to the minute, with the zone's name."""
    from fased.timeparse import parse_ts

    zone = user_zone(con)
    return f"{parse_ts(ts).astimezone(zone):%Y-%m-%d %H:%M} {zone_name(zone)}"


def cost_text(totals: Totals) -> str:
    """`$0.0123`, with how many calls have no cost; `cost unknown` when none has one."""
    if not totals.cost_known:
        return "cost unknown"
    text = amount(totals.cost, "cost")
    if totals.uncosted:
        text += f" (+ {totals.uncosted} call(s) without a cost)"
    return text


def describe(totals: Totals) -> str:
    """One line for people: calls, tokens in and out, cost."""
    return (f"{totals.calls:,} model call(s), {totals.input_tokens:,} in / "
            f"{totals.output_tokens:,} out tokens, {cost_text(totals)}")


def agent_usage(con: sqlite3.Connection, agent: str, now: datetime) -> dict:
    """An agent's Totals today, this month (the user's) and in all, for `agent show`."""
    zone = user_zone(con)
    table = prices(con)
    out: dict = {"zone": zone_name(zone)}
    for name, kind in (("today", "day"), ("month", "month"), ("all", None)):
        since = period(now, zone, kind)[0] if kind else None
        out[name] = total(con, agent=agent, since=since, price_table=table)
    return out
