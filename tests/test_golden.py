"""The golden event log of every release must replay, forever, to the state it recorded.

tests/fixtures/golden-<release>.jsonl was written by real fased commands at that release
(tests/fixtures/make_golden.py); golden-<release>.expected.json holds the state those commands
built. When a test here fails, fased broke old logs: add an upcaster or an alias, never
regenerate the fixture.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import events

from fased.schema import validate_event_data
from fased.store import Store
from fased.upcast import upcast

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = sorted(FIXTURES.glob("golden-*.jsonl"))
SEGMENT = "00000000000000000001.jsonl"

sys.path.insert(0, str(FIXTURES))
from make_golden import expected_state  # noqa: E402


def golden_ids(path: Path) -> str:
    return path.name.removesuffix(".jsonl")


def as_recorded(state: dict, recorded: dict) -> dict:
    """`state` with only the columns the golden release recorded: a later release may add a
    column to a projection, but every recorded column must keep its recorded value."""
    shaped = dict(state)
    for table, rows in recorded.items():
        if table in ("transcripts", "fased.json") or not rows:
            continue
        columns = rows[0].keys()
        shaped[table] = [{c: row[c] for c in columns} for row in state[table]]
    return shaped


def expected(log: Path) -> dict:
    return json.loads(log.with_name(log.name.removesuffix(".jsonl") + ".expected.json")
                      .read_text())


def home_with(log: Path, home: Path) -> Path:
    (home / "log").mkdir(parents=True)
    shutil.copyfile(log, home / "log" / SEGMENT)
    return home


def test_every_golden_log_has_its_expected_state():
    assert "golden-0.1.0.jsonl" in [p.name for p in GOLDEN]
    for log in GOLDEN:
        assert set(expected(log)) == {"agents", "sessions", "tasks", "providers", "turns",
                                      "task_runs", "cooldowns", "kv", "config", "transcripts",
                                      "fased.json"}
        assert all(expected(log).values()), log.name  # a golden state with no rows proves little


@pytest.mark.parametrize("log", GOLDEN, ids=golden_ids)
def test_every_golden_event_reads_as_a_valid_current_event(log, fased_home):
    home = home_with(log, fased_home)
    read = events(home)

    assert [e["seq"] for e in read] == list(range(1, len(log.read_text().splitlines()) + 1))
    for record in read:
        current = upcast(record)
        validate_event_data(current["type"], current["v"], current["data"])


@pytest.mark.parametrize("log", GOLDEN, ids=golden_ids)
def test_golden_log_rebuilds_to_the_expected_state(log, fased_home):
    home = home_with(log, fased_home)
    store = Store(home)
    try:
        assert store.rebuild() == len(events(home))
    finally:
        store.close()

    assert as_recorded(expected_state(home), expected(log)) == expected(log)


@pytest.mark.parametrize("log", GOLDEN, ids=golden_ids)
def test_golden_log_caught_up_incrementally_reaches_the_expected_state(log, fased_home):
    """Commands catch up from the checkpoint: an empty projection fed the whole log."""
    (fased_home / "log").mkdir(parents=True)
    (fased_home / "log" / SEGMENT).touch()
    store = Store(fased_home)
    try:
        assert store.db(check_files=False).execute(
            "SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()[0] == "0"
        shutil.copyfile(log, fased_home / "log" / SEGMENT)
        con = store.db(check_files=False)
        assert con.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()[0] == \
            str(len(events(fased_home)))
    finally:
        store.close()

    # no fased.json: a home without one gets it from `fased setup` (or a rebuild)
    assert as_recorded(expected_state(fased_home), expected(log)) == {
        **expected(log), "fased.json": None}


@pytest.mark.parametrize("log", GOLDEN, ids=golden_ids)
def test_replay_verify_passes_on_the_golden_log(log, fased_home, run):
    home_with(log, fased_home)

    result = run("replay", "--verify")

    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "Projections match the log.\n", "")
    assert as_recorded(expected_state(fased_home), expected(log)) == expected(log)


@pytest.mark.parametrize("log", GOLDEN, ids=golden_ids)
def test_replay_json_prints_the_golden_records_unchanged(log, fased_home, run):
    home_with(log, fased_home)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for r in records:
        del r["crc"]

    result = run("replay", "--json")

    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == records
    assert log.read_bytes() == (fased_home / "log" / SEGMENT).read_bytes()


def test_the_newest_golden_log_holds_every_event_type():
    """A release's golden log covers every event type it can write, so each one replays
    forever (tests/fixtures/make_golden.py scripts them)."""
    from fased.schema import current_versions

    newest = max(GOLDEN, key=lambda p: tuple(int(n) for n in golden_ids(p)[7:].split(".")))
    types = {json.loads(line)["type"] for line in newest.read_text().splitlines()}
    assert set(current_versions()) - types == set()
