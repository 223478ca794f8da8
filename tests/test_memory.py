"""Memory search (issue 16): the index over notes and session messages, its ranking and
freshness, the memory tools and `fased memory`, and optional embeddings on the fake server."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import error_line, events, fails, run_process
from fakeserver import Reply, Status


def rows(db: Path, sql: str) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


def ws(home: Path) -> Path:
    return home / "workspace"


def note(home: Path, name: str, text: str) -> Path:
    path = ws(home) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def results(ok, *args: str) -> list[dict]:
    return json.loads(ok("memory", "search", *args, "--json"))["results"]


def call(name: str, **args) -> tuple[str, str]:
    return (name, json.dumps(args))


# -- keyword hits ---------------------------------------------------------------------------


def test_a_search_finds_notes_with_their_file_and_lines(set_up, ok, at):
    note(set_up, "MEMORY.md", "# Memory\n\nThe deploy key lives in the team vault.\n")
    body = "".join(f"line {i}: routine work\n" for i in range(1, 200))
    note(set_up, "memory/2026-03-01.md", body + "Met Alice about the postgres migration.\n")
    note(set_up, "memory/projects/infra.md", "Postgres runs on db-2.\n")

    found = results(ok, "postgres")

    assert {(r["path"], r["kind"]) for r in found} == {
        ("memory/2026-03-01.md", "file"), ("memory/projects/infra.md", "file")}
    daily = next(r for r in found if r["path"] == "memory/2026-03-01.md")
    start, end = daily["lines"]
    assert start <= 200 <= end and end == 200  # the chunk holding the line, not line 1
    assert "postgres migration" in daily["snippet"] and daily["date"] == "2026-03-01"
    assert all(r["score"] > 0 for r in found)
    human = ok("memory", "search", "vault")
    assert human.startswith("MEMORY.md:1-3  ") and "deploy key lives in the team vault" in human


def test_session_messages_are_found_with_their_session_and_turn(models, ok, server, at):
    server.script(Reply("Noted: the wombat enclosure code is 4471."))
    ok("chat", "remember that the wombat enclosure code is 4471")

    found = results(ok, "wombat")

    assert sorted((r["kind"], r["session"], r["role"]) for r in found) == [
        ("session", "s-1", "assistant"), ("session", "s-1", "user")]
    turn = next(e["data"]["turn"] for e in events(models) if e["type"] == "turn.queued")
    assert {r["turn"] for r in found} == {turn}
    assert all(r["date"] == "2026-03-02" for r in found)
    assert "session s-1 turn " in ok("memory", "search", "enclosure")


def test_what_others_wrote_reaches_the_terminal_escaped(models, ok, server):
    """Session messages come from chats with strangers, and notes from the agent: terminal
    control sequences in them are shown escaped, never sent to the terminal."""
    hostile = "wombat \x1b]0;owned\x07 \x1b[2J gone\u202e"
    server.script(Reply(f"Noted: {hostile}"))
    ok("chat", f"remember {hostile}")
    note(models, "memory/2026-03-01.md", f"{hostile}\nsecond line\n")
    for out in (ok("memory", "search", "wombat"),
                ok("memory", "get", "memory/2026-03-01.md")):
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\x1b" in out
    assert "second line\n" in ok("memory", "get", "memory/2026-03-01.md")  # lines stay lines


def test_any_query_text_is_searched_never_a_syntax_error(set_up, ok, run):
    note(set_up, "MEMORY.md", "alpha beta NEAR gamma\n")
    for query in ('"unbalanced', "NEAR(alpha", "alpha AND", "col:alpha", "a'b -c ^d",
                  "OR OR", "beta)", "alpha*", "{gamma}"):
        result = run("memory", "search", query)
        assert result.exit_code == 0, (query, result.stderr)
        assert "Traceback" not in result.stderr
    assert results(ok, "NEAR(alpha")[0]["path"] == "MEMORY.md"
    for query in ("?!", "*", "((("):  # no word at all: a usage error, said in one line
        bad = run("memory", "search", query)
        assert bad.exit_code == 2
        assert error_line(bad) == f"Error: {query!r} has no words to search for"


def test_nothing_found_says_what_was_searched(set_up, ok, run):
    ok("config", "set", "memory.roots", '["notes", "/nonexistent/extra.md"]')
    result = run("memory", "search", "zebra")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.strip() == (
        "No memory matches 'zebra' for agent main (searched MEMORY.md, memory.md, memory, "
        "notes, /nonexistent/extra.md; session messages too; backend fts5).")


# -- ranking --------------------------------------------------------------------------------


def test_recent_daily_notes_rank_first_and_memory_md_does_not_decay(set_up, ok, at):
    same = "Standup: the release train leaves on Thursday.\n"
    note(set_up, "memory/2025-12-01.md", same)
    note(set_up, "memory/2026-03-01.md", same)
    note(set_up, "MEMORY.md", same)
    at("2026-03-02T00:00:00Z")

    first = results(ok, "release train")
    assert [r["path"] for r in first] == ["MEMORY.md", "memory/2026-03-01.md",
                                          "memory/2025-12-01.md"]
    score = {r["path"]: r["score"] for r in first}
    # 91 days at a 30-day half-life: about 0.122 of the undecayed score
    assert score["memory/2025-12-01.md"] / score["MEMORY.md"] == pytest.approx(
        0.5 ** (91 / 30), rel=1e-3)
    assert score["memory/2026-03-01.md"] / score["MEMORY.md"] == pytest.approx(
        0.5 ** (1 / 30), rel=1e-3)

    at("2026-04-01T00:00:00Z")  # a month on: the daily notes count half as much again
    later = {r["path"]: r["score"] for r in results(ok, "release train")}
    assert later["MEMORY.md"] == score["MEMORY.md"]
    assert later["memory/2026-03-01.md"] == pytest.approx(
        score["memory/2026-03-01.md"] * 0.5 ** (30 / 30), rel=1e-3)

    ok("config", "set", "memory.search.halfLifeDays", "3650")
    slow = {r["path"]: r["score"] for r in results(ok, "release train")}
    assert slow["memory/2025-12-01.md"] > later["memory/2025-12-01.md"] * 5


def test_more_matching_words_rank_higher_and_min_score_and_n_cut(set_up, ok, run):
    note(set_up, "memory/a.md", "kafka broker restart procedure\n")
    note(set_up, "memory/b.md", "kafka topics\n")
    note(set_up, "memory/c.md", "restart the printer\n")
    found = results(ok, "kafka restart")
    assert found[0]["path"] == "memory/a.md"
    assert [r["path"] for r in results(ok, "kafka restart", "-n", "1")] == ["memory/a.md"]
    bad = run("memory", "search", "kafka", "-n", "0")
    assert bad.exit_code == 2 and "between 1 and 100" in error_line(bad)


def test_scores_are_bm25_with_an_idf_that_stays_positive(set_up, ok):
    """The score of each result is BM25 (k1 1.2, b 0.75) summed over the query's words, with
    Lucene's IDF ln(1 + (N - n + 0.5) / (n + 0.5)): computed here from the chunks' own text,
    so a shortcut in how fased counts cannot go unseen. "cat" is in more than half the
    chunks, where FTS5's own IDF would give it no weight."""
    import math
    import re

    note(set_up, "memory/a.md", "cat dog cat fox\n")
    note(set_up, "memory/b.md", "dog sun cat\n")
    note(set_up, "memory/c.md", "cat map pen sun sun dog fox pen map map\n")
    note(set_up, "memory/d.md", "pen\n")
    found = results(ok, "cat sun", "-n", "10")
    con = sqlite3.connect(set_up / "memory" / "index.db")
    texts = {path: text for path, text in con.execute(
        "SELECT c.path, f.text FROM chunks c JOIN fts f ON f.rowid = c.id")}
    con.close()
    tokens = {path: re.findall(r"\w+", text.lower()) for path, text in texts.items()}
    average = sum(map(len, tokens.values())) / len(tokens)

    def bm25(path: str) -> float:
        score = 0.0
        for word in ("cat", "sun"):
            n = sum(word in t for t in tokens.values())
            idf = math.log(1 + (len(tokens) - n + 0.5) / (n + 0.5))
            tf = tokens[path].count(word)
            score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(tokens[path]) / average))
        return score

    assert {r["path"] for r in found} == {"memory/a.md", "memory/b.md", "memory/c.md"}
    for r in found:
        assert r["score"] == pytest.approx(bm25(r["path"]), rel=1e-5), r["path"]
    assert [r["path"] for r in found] == sorted((p for p in texts if bm25(p) > 0),
                                                key=lambda p: -bm25(p))


def test_sqlite_varints_are_read_as_sqlite_writes_them():
    from fased.memory.rank import _varint

    assert _varint(b"\x00") == (0, 1)
    assert _varint(b"\x7f\x05") == (127, 1)
    assert _varint(b"\x81\x00") == (128, 2)
    assert _varint(b"\x86\xf2\x18", 0) == (112920, 3)
    assert _varint(b"\xff" * 8 + b"\x01") == ((1 << 64) - 255, 9)
    assert _varint(b"\x05\x81\x01", 1) == (129, 3)


# -- freshness ------------------------------------------------------------------------------


def test_an_edited_added_and_deleted_note_is_seen_by_the_next_search(set_up, ok, run):
    daily = note(set_up, "memory/2026-03-01.md", "We chose the blue logo.\n")
    assert [r["path"] for r in results(ok, "logo")] == ["memory/2026-03-01.md"]
    before = len(events(set_up))

    daily.write_text("We chose the green banner.\n")  # same size class, new words
    assert results(ok, "logo") == []
    assert [r["path"] for r in results(ok, "banner")] == ["memory/2026-03-01.md"]

    note(set_up, "memory/2026-03-02.md", "Banner printed.\n")
    assert {r["path"] for r in results(ok, "banner")} == {"memory/2026-03-01.md",
                                                          "memory/2026-03-02.md"}
    daily.unlink()
    assert [r["path"] for r in results(ok, "banner")] == ["memory/2026-03-02.md"]
    status = json.loads(ok("memory", "status", "--json"))
    # the note left, and the MEMORY.md template `fased setup` wrote
    assert status["files"] == 2 and status["note_chunks"] == 2
    assert len(events(set_up)) == before  # the index is derived: no events


def test_an_edit_of_the_same_size_deep_in_a_folder_or_behind_a_link_is_seen(set_up, ok):
    """The quick check of every search (a digest of each note's size and mtime) notices an
    edit that keeps the size, in a nested folder, and one made through a link in a root."""
    deep = note(set_up, "memory/projects/fased/2026-03-01.md", "The kiwi crate shipped.\n")
    assert [r["path"] for r in results(ok, "kiwi")] == ["memory/projects/fased/2026-03-01.md"]
    stamp = deep.stat().st_mtime_ns
    deep.write_text("The lime crate shipped.\n")  # the same number of bytes
    os.utime(deep, ns=(stamp + 1_000_000_000, stamp + 1_000_000_000))
    assert results(ok, "kiwi") == []
    assert [r["path"] for r in results(ok, "lime")] == ["memory/projects/fased/2026-03-01.md"]

    target = note(set_up, "memory/archive/old.md", "A mango tree.\n")
    (ws(set_up) / "memory" / "linked.md").symlink_to(target)
    assert {r["path"] for r in results(ok, "mango")} >= {"memory/archive/old.md"}
    target.write_text("A peach tree.\n")
    assert results(ok, "mango") == []
    assert results(ok, "peach") != []


def test_a_link_to_a_note_or_folder_already_in_the_root_is_not_a_second_copy(set_up, ok):
    """A folder link back up the tree (`memory/a/loop -> ..`) walked the root twice and a
    link to a note beside it (`latest.md -> 2026-12-01.md`) indexed it twice: every result
    came twice. A link to what the walk finds anyway is left out; one that leads to a note
    the walk does not reach (in a hidden folder) still counts."""
    note(set_up, "memory/a/2026-12-01.md", "The quokka smiles.\n")
    memory = ws(set_up) / "memory"
    (memory / "a" / "loop").symlink_to("..")
    (memory / "latest.md").symlink_to("a/2026-12-01.md")
    hidden = note(set_up, "memory/.archive/old", "A quokka of old.\n")
    (memory / "old.md").symlink_to(hidden)

    found = [r["path"] for r in results(ok, "quokka")]

    assert sorted(found) == ["memory/a/2026-12-01.md", "memory/old.md"]
    status = json.loads(ok("memory", "status", "--json"))
    assert status["files"] == 3  # MEMORY.md, and the two


def test_a_search_that_finds_nothing_new_writes_nothing(set_up, ok):
    note(set_up, "MEMORY.md", "orchid watering every sunday\n")
    ok("memory", "search", "orchid")
    index = set_up / "memory" / "index.db"
    stamp = [os.stat(f"{index}{s}").st_mtime_ns for s in ("", "-wal") if
             os.path.exists(f"{index}{s}")]
    path = ws(set_up) / "MEMORY.md"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))  # unchanged stat
    ok("memory", "search", "orchid")
    assert [os.stat(f"{index}{s}").st_mtime_ns for s in ("", "-wal")
            if os.path.exists(f"{index}{s}")] == stamp


def test_a_touched_note_with_the_same_bytes_is_not_chunked_again(set_up, ok):
    path = note(set_up, "MEMORY.md", "heron\n")
    ok("memory", "search", "heron")
    index = set_up / "memory" / "index.db"
    first = rows(index, "SELECT id FROM chunks")
    os.utime(path, ns=(1, 1))
    assert results(ok, "heron")[0]["path"] == "MEMORY.md"
    assert rows(index, "SELECT id FROM chunks") == first
    assert rows(index, "SELECT mtime_ns FROM files") == [{"mtime_ns": 1}]


def test_new_session_messages_are_indexed_as_projections_catch_up(models, ok, server, at):
    server.script(Reply("First answer about llamas."), Reply("Second answer about alpacas."))
    ok("chat", "tell me about llamas")
    assert {r["role"] for r in results(ok, "llamas")} == {"user", "assistant"}
    assert results(ok, "alpacas") == []
    ok("chat", "and alpacas")
    assert {r["role"] for r in results(ok, "alpacas")} == {"user", "assistant"}
    # a deleted session is not searched; restored, it is again
    ok("session", "new")
    ok("session", "delete", "s-1")
    assert results(ok, "llamas") == []
    ok("session", "restore", "s-1")
    assert len(results(ok, "llamas")) == 2


def test_the_index_is_disposable(set_up, ok):
    note(set_up, "MEMORY.md", "pelican\n")
    ok("memory", "search", "pelican")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{set_up / 'memory' / 'index.db'}{suffix}").unlink(missing_ok=True)
    assert results(ok, "pelican")[0]["path"] == "MEMORY.md"
    (set_up / "memory" / "index.db").write_bytes(b"not a database at all" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{set_up / 'memory' / 'index.db'}{suffix}").unlink(missing_ok=True)
    assert results(ok, "pelican")[0]["path"] == "MEMORY.md"
    forced = json.loads(ok("memory", "index", "--force", "--json"))
    assert forced["notes"] == 1 and forced["chunks"] == 1


def test_a_damaged_page_that_the_search_reads_is_mended_every_time(set_up, ok, run):
    """The keyword query runs ahead on a thread of its own while the notes are checked, and
    drops what it cannot read: damage in a page every query reads must still mend the
    index, every time, whichever thread meets it first."""
    import shutil

    note(set_up, "MEMORY.md", "# Memory\n\nThe deploy checklist: run postgres migrations.\n")
    for day in range(1, 9):
        note(set_up, f"memory/2026-01-0{day}.md", f"# 2026-01-0{day}\n\npostgres note number "
             f"0{day} about deploy and tokens.\nSecond line with postgres again.\n")
    ok("memory", "search", "postgres")
    index = set_up / "memory" / "index.db"
    con = sqlite3.connect(index)
    try:  # a page of the full-text index, which every query reads
        page, = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'fts_data'"
                            ).fetchone()
        size = con.execute("PRAGMA page_size").fetchone()[0]
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    data = bytearray(index.read_bytes())
    at = (page - 1) * size + 10
    data[at:at + 300] = b"\xff" * 300
    index.write_bytes(bytes(data))
    pristine = set_up.parent / "damaged"
    shutil.copytree(set_up, pristine)
    for _ in range(5):
        shutil.rmtree(set_up)
        shutil.copytree(pristine, set_up)
        done = run("memory", "search", "postgres", "--json")
        assert done.exit_code == 0, done.stderr
        assert "is damaged" in done.stderr and "building it again" in done.stderr
        assert len(json.loads(done.stdout)["results"]) == 6
        con = sqlite3.connect(index)
        try:
            assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            con.close()


def test_the_query_that_runs_ahead_reads_one_snapshot_and_ends_it_cleanly(set_up, ok, run,
                                                                          monkeypatch):
    """Its rescoring used executescript, which commits first: the query's snapshot ended
    halfway, its COMMIT failed, and (taken for damage) every search with hits checked the
    whole index, ~90 ms of 10,000 notes, then ran the query again."""
    from fased.memory import index as index_module
    from fased.memory.index import generation, index_path
    from fased.memory.rank import keyword
    from fased.memory.roots import memory_settings
    from fased.store import Store

    for day in range(1, 6):
        note(set_up, f"memory/2026-01-0{day}.md", f"pelican sighting number {day}\n")
    ok("memory", "search", "pelican")
    st = Store(set_up)
    try:
        settings = memory_settings(st.db(), set_up, "main")
        con = sqlite3.connect(index_path(set_up), isolation_level=None)
        con.execute("BEGIN")
        generation(con)
        hits = keyword(con, settings, "pelican sighting", sessions=True, now_jd=2461000.5,
                       limit=6, hidden=[])
        assert len(hits) == 5 and con.in_transaction
        con.execute("COMMIT")
        con.close()
    finally:
        st.close()

    def no_check(self):
        raise AssertionError("a healthy index was checked for damage")

    monkeypatch.setattr(index_module.MemoryIndex, "damaged", no_check)
    assert len(results(ok, "pelican sighting")) == 5


def test_memory_index_checks_the_whole_index_and_mends_damage_no_search_reads(set_up, ok,
                                                                            run):
    """A search notices only damage in what it reads; `fased memory index` checks every
    page first (SQLite's quick_check) and builds a damaged index again."""
    note(set_up, "MEMORY.md", "# Memory\n\npelican facts\n")
    ok("memory", "index")
    index = set_up / "memory" / "index.db"
    con = sqlite3.connect(index)
    try:  # the table of notes indexed: a search that finds nothing changed reads none
        page, = con.execute("SELECT rootpage FROM sqlite_master WHERE name = "
                            "'files'").fetchone()
        size, = con.execute("PRAGMA page_size").fetchone()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    data = bytearray(index.read_bytes())
    at = (page - 1) * size + 8  # its first cell's offset (the page holds one row)
    data[at:at + 2] = b"\xff\xff"
    index.write_bytes(bytes(data))

    done = run("memory", "index", "--json")

    assert done.exit_code == 0, done.stderr
    assert "is damaged" in done.stderr and "building it again" in done.stderr
    assert json.loads(done.stdout)["chunks"] == 1
    con = sqlite3.connect(index)
    try:
        assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        con.close()


# -- sessions off ---------------------------------------------------------------------------


def test_with_the_session_archive_off_messages_are_not_searched(models, ok, run, server):
    note(models, "MEMORY.md", "capybara facts\n")
    server.script(Reply("Capybaras are large rodents."))
    ok("chat", "capybara?")
    assert {r["kind"] for r in results(ok, "capybara")} == {"file", "session"}
    assert {r["kind"] for r in results(ok, "capybara", "--no-sessions")} == {"file"}

    ok("config", "set", "memory.sessions.enabled", "false")
    assert {r["kind"] for r in results(ok, "capybara")} == {"file"}
    assert json.loads(ok("memory", "status", "--json"))["session_chunks"] == 0
    nothing = run("memory", "search", "rodents")
    assert "session messages off" in nothing.stderr
    refused = run("memory", "search", "rodents", "--sessions")
    assert refused.exit_code == 2
    assert "memory.sessions.enabled is false" in error_line(refused)

    ok("config", "set", "agents.list[0].memory", '{"sessions": {"enabled": true}}')
    assert {r["kind"] for r in results(ok, "capybara")} == {"file", "session"}


# -- roots, get, confinement ----------------------------------------------------------------


def test_memory_roots_add_folders_and_files(set_up, ok, tmp_path):
    outside = tmp_path / "vault"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "ideas.md").write_text("an idea about gliders\n")
    (outside / "skip.txt").write_text("gliders in a text file\n")
    note(set_up, "docs/runbook.md", "glider maintenance runbook\n")
    ok("config", "set", "agents.list[0].memory", json.dumps(
        {"roots": [str(outside), "docs/runbook.md"]}))
    assert sorted(r["path"] for r in results(ok, "gliders glider")) == sorted([
        "docs/runbook.md", str(outside / "deep" / "ideas.md")])
    roots = [r["path"] for r in json.loads(ok("memory", "status", "--json"))["roots"]]
    assert roots == ["MEMORY.md", "memory.md", "memory", str(outside), "docs/runbook.md"]


def test_get_shows_lines_of_a_note_and_refuses_everything_else(set_up, ok, run, tmp_path):
    note(set_up, "memory/2026-03-01.md", "".join(f"row {i}\n" for i in range(1, 301)))
    note(set_up, "AGENTS.md", "not memory\n")
    secret = tmp_path / "secret.md"
    secret.write_text("password\n")
    os.symlink(secret, ws(set_up) / "memory" / "link.md")
    os.symlink(tmp_path, ws(set_up) / "memory" / "linkdir")

    assert ok("memory", "get", "memory/2026-03-01.md:5", "--lines", "2") == "row 5\nrow 6\n"
    got = run("memory", "get", "memory/2026-03-01.md")
    assert got.stdout.count("\n") == 200 and "memory/2026-03-01.md:201" in got.stderr
    assert fails(run, set_up, 2, "memory", "get", "../fased.json") == (
        "Error: ../fased.json: `..` is not allowed in a memory path")
    assert "not under a memory root" in fails(run, set_up, 2, "memory", "get", "AGENTS.md")
    assert "symlink leads out" in fails(run, set_up, 2, "memory", "get", "memory/link.md")
    assert "symlink leads out" in fails(run, set_up, 2, "memory", "get",
                                        "memory/linkdir/secret.md")
    assert "not under a memory root" in fails(run, set_up, 2, "memory", "get",
                                              str(set_up / "credentials.json"))
    assert results(ok, "password") == []  # a link out of its root is not indexed either


@pytest.mark.parametrize(("line", "error"), [
    ("²", "not a whole number"),  # str.isdigit() says yes, int() raised: an internal error
    ("٣", "not a whole number"),
    ("99999999999999999999999", "is not in the range 1<=x<=2147483647"),
    ("0", "the first line is 1"),
])
def test_a_line_number_is_ascii_digits_within_bounds(set_up, run, line, error):
    note(set_up, "MEMORY.md", "one\ntwo\n")
    result = run("memory", "get", f"MEMORY.md:{line}")
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert error in result.stderr


def test_a_line_past_the_end_says_how_long_the_note_is(models, ok, run, server):
    """It printed nothing and exited 0, and the tool gave the model an empty text."""
    note(models, "MEMORY.md", "one\ntwo\nthree\n")
    assert fails(run, models, 2, "memory", "get", "MEMORY.md:9") == (
        "Error: MEMORY.md has 3 lines: line 9 is past its end")
    assert ok("memory", "get", "MEMORY.md:3") == "three\n"
    server.script(Reply("", tool_calls=[call("memory_get", path="MEMORY.md", **{"from": 7})]),
                  Reply("ok"))
    ok("chat", "read it")
    [finished] = [e["data"] for e in events(models) if e["type"] == "tool.finished"]
    assert finished["status"] == "error"
    assert finished["result"] == "MEMORY.md has 3 lines: line 7 is past its end"


def test_config_keys_are_validated(set_up, run):
    assert "must be at least" in fails(run, set_up, 2, "config", "set",
                                       "memory.search.halfLifeDays", "0")
    assert "unknown key" in fails(run, set_up, 2, "config", "set", "memory.bogus", "1")
    assert "expected boolean" in fails(run, set_up, 2, "config", "set",
                                       "agents.list[0].memory.sessions.enabled", '"yes"')


def test_status_shows_roots_counts_and_backend(set_up, ok):
    note(set_up, "MEMORY.md", "x marks\n")
    human = ok("memory", "status")
    assert "backend fts5" in human and "last indexed never" in human
    ok("memory", "index")
    status = json.loads(ok("memory", "status", "--json"))
    assert status["backend"] == "fts5" and status["files"] == 1 and status["chunks"] == 1
    assert status["last_indexed"] is not None and status["sessions"] is True
    assert {r["path"]: r["exists"] for r in status["roots"]} == {
        "MEMORY.md": True, "memory.md": False, "memory": False}


# -- the tools ------------------------------------------------------------------------------


def test_memory_tools_are_offered_by_default(models, ok):
    report = json.loads(ok("agent", "tools", "--json"))
    offered = {t["name"]: (t["offered"], t["why"]) for t in report["tools"]}
    assert offered["memory_search"] == (True, "in profile coding")
    assert offered["memory_get"] == (True, "in profile coding")
    ok("agent", "tools", "deny", "main", "group:memory")
    offered = {t["name"]: t["offered"] for t in json.loads(
        ok("agent", "tools", "--json"))["tools"]}
    assert not offered["memory_search"] and not offered["memory_get"]


def test_the_tool_and_the_command_agree(models, ok, server, at):
    note(models, "MEMORY.md", "The staging database is called tern.\n")
    note(models, "memory/2026-03-01.md", "Renamed the staging database to tern.\n")
    server.script(Reply("", tool_calls=[call("memory_search", query="staging tern")]),
                  Reply("", tool_calls=[call("memory_get", path="MEMORY.md"),
                                        call("memory_get", path="../credentials.json")]),
                  Reply("ok"))
    ok("chat", "what is it called?")
    finished = [e["data"] for e in events(models) if e["type"] == "tool.finished"]
    searched, got, refused = finished

    command = json.loads(ok("memory", "search", "staging tern", "--json"))
    assert searched["status"] == "ok"
    # the same hits in the same order; only scores moved, as the chat's own messages were
    # indexed since (more chunks weigh each word a little differently)
    unscored = [{k: v for k, v in r.items() if k != "score"} for r in command["results"]]
    assert [{k: v for k, v in r.items() if k != "score"}
            for r in searched["data"]["results"]] == unscored
    assert [r["path"] for r in unscored] == ["MEMORY.md", "memory/2026-03-01.md"]
    assert searched["result"].startswith("MEMORY.md:1-1  ")
    assert got["result"] == "The staging database is called tern."
    assert refused["status"] == "error" and "`..` is not allowed" in refused["result"]
    sent = next(r["json"] for r in server.requests if r["path"] == "/api/chat")
    assert {"memory_search", "memory_get"} <= {t["function"]["name"] for t in sent["tools"]}


# -- embeddings -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai-compatible", "ollama"])
def test_embeddings_find_by_meaning_beside_keywords(set_up, ok, server, kind):
    url = server.url + "/v1" if kind != "ollama" else server.url
    ok("agent", "models", "providers", "add", "emb", "--kind", kind, "--base-url", url)
    ok("config", "set", "memory.search.embeddings", "emb/fake-model")
    server.synonyms = {"automobile": "car", "vehicle": "car"}
    note(set_up, "memory/garage.md", "The car is parked in the garage.\n")
    note(set_up, "memory/kitchen.md", "The kettle is in the kitchen.\n")

    found = results(ok, "automobile")

    assert [r["path"] for r in found][:1] == ["memory/garage.md"]
    assert 0 < found[0]["score"] <= 1
    path = "/api/embed" if kind == "ollama" else "/v1/embeddings"
    sent = [r for r in server.requests if r["path"] == path]
    embedded = [t for r in sent[:-1] for t in r["json"]["input"]]
    assert {"The car is parked in the garage.", "The kettle is in the kitchen."} <= set(
        embedded) and len(embedded) == 3  # and the MEMORY.md template
    assert sent[-1]["json"] == {"model": "fake-model", "input": ["automobile"]}
    status = json.loads(ok("memory", "status", "--json"))
    assert status["backend"] == "fts5+embeddings:emb/fake-model"
    assert status["embedded_chunks"] == 3
    before = len([r for r in server.requests if r["path"] == path])
    results(ok, "kettle")
    assert len([r for r in server.requests if r["path"] == path]) == before + 1  # query only


def test_a_failing_embedder_is_an_error_not_a_silent_fallback(set_up, ok, run, server):
    ok("agent", "models", "providers", "add", "emb", "--kind", "openai-compatible",
       "--base-url", server.url + "/v1")
    note(set_up, "MEMORY.md", "The car is parked.\n")
    ok("config", "set", "memory.search.embeddings", "emb/fake-model")
    server.script_embed(Status(500))
    failed = run("memory", "search", "car")
    assert failed.exit_code == 1 and failed.stdout == ""
    line = error_line(failed)
    assert line.startswith("Error: memory.search.embeddings (emb/fake-model) failed: ")
    assert "500" in line

    ok("config", "set", "memory.search.embeddings", "emb/no-such-model")
    missing = run("memory", "search", "car")
    assert missing.exit_code == 1 and "emb/no-such-model" in error_line(missing)
    ok("config", "set", "memory.search.embeddings", "nosuch/model")
    unknown = run("memory", "search", "car")
    assert "memory.search.embeddings is 'nosuch/model'" in error_line(unknown)
    ok("config", "unset", "memory.search.embeddings")
    assert results(ok, "car")[0]["path"] == "MEMORY.md"


def test_a_failing_embedder_is_an_error_result_for_the_tool(models, ok, server):
    ok("agent", "models", "providers", "add", "emb", "--kind", "openai-compatible",
       "--base-url", server.url + "/v1")
    ok("config", "set", "memory.search.embeddings", "emb/fake-model")
    note(models, "MEMORY.md", "anything\n")
    server.script_embed(Status(503), Status(503))
    server.script(Reply("", tool_calls=[call("memory_search", query="anything")]), Reply("ok"))
    ok("chat", "look")
    [finished] = [e["data"] for e in events(models) if e["type"] == "tool.finished"]
    assert finished["status"] == "error"
    assert "memory.search.embeddings (emb/fake-model) failed" in finished["result"]


def _vectors(*vectors: str) -> Status:
    """An OpenAI-style embeddings answer whose vectors are JSON text as given."""
    data = ", ".join(f'{{"object": "embedding", "index": {i}, "embedding": {v}}}'
                     for i, v in enumerate(vectors))
    return Status(200, body=f'{{"object": "list", "data": [{data}]}}'.encode())


@pytest.mark.parametrize(("answer", "why"), [
    (_vectors("[NaN, 1.0]", "[1.0, 0.0]"), "not a finite number"),
    (_vectors("[1e999, 1.0]", "[1.0, 0.0]"), "not a finite number"),
    (_vectors("[true, 1.0]", "[1.0, 0.0]"), "not a finite number"),
    (_vectors("[1.0, 0.0]", "[1.0, 0.0, 0.0]"), "vectors of different lengths"),
    (_vectors("[]", "[]"), "an empty vector"),
])
def test_an_embedder_sending_vectors_that_cannot_be_compared_is_an_error(set_up, ok, run,
                                                                       server, answer, why):
    """A vector of NaN scored every result NaN (and `--json` printed NaN, which is not
    JSON); vectors of different lengths were skipped, so the search found by meaning
    nothing, and said nothing."""
    ok("agent", "models", "providers", "add", "emb", "--kind", "openai-compatible",
       "--base-url", server.url + "/v1")
    note(set_up, "memory/garage.md", "The car is parked in the garage.\n")
    ok("config", "set", "memory.search.embeddings", "emb/fake-model")
    server.script_embed(answer)

    failed = run("memory", "search", "--json", "car")

    assert failed.exit_code == 1 and failed.stdout == ""
    line = error_line(failed)
    assert line.startswith("Error: memory.search.embeddings (emb/fake-model) failed: ")
    assert why in line


def test_a_model_that_changed_its_vectors_length_embeds_everything_again(set_up, ok, server):
    """The same ref, another model behind it (a new Ollama tag): the query's vector had
    another length than the stored ones, every chunk was skipped, and by meaning nothing
    was found, silently."""
    ok("agent", "models", "providers", "add", "emb", "--kind", "openai-compatible",
       "--base-url", server.url + "/v1")
    ok("config", "set", "memory.search.embeddings", "emb/fake-model")
    server.synonyms = {"automobile": "car"}
    note(set_up, "memory/garage.md", "The car is parked in the garage.\n")
    note(set_up, "memory/kitchen.md", "The kettle is in the kitchen.\n")
    first = results(ok, "automobile")[0]
    assert first["path"] == "memory/garage.md" and first["score"] > 0

    server.embedding_dims = server.embedding_dims * 2
    before = len(server.requests)
    found = results(ok, "automobile")

    assert found[0]["path"] == "memory/garage.md"
    assert found[0]["score"] == pytest.approx(first["score"], rel=0.2)
    again = [t for r in server.requests[before:] if r["path"] == "/v1/embeddings"
             for t in r["json"]["input"]]
    assert "The car is parked in the garage." in again


# -- a whole process ------------------------------------------------------------------------


def test_memory_search_as_a_process(set_up):
    note(set_up, "MEMORY.md", "quokka island\n")
    out = run_process("memory", "search", "quokka", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["path"] == "MEMORY.md"


def test_the_index_is_private_and_never_written_through_a_link(set_up, ok, run, tmp_path):
    note(set_up, "MEMORY.md", "gecko\n")
    ok("memory", "search", "gecko")
    assert (set_up / "memory").stat().st_mode & 0o777 == 0o700
    assert (set_up / "memory" / "index.db").stat().st_mode & 0o777 == 0o600
    for path in (set_up / "memory").iterdir():
        path.unlink()
    (set_up / "memory").rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, set_up / "memory")
    refused = run("memory", "search", "gecko")
    assert refused.exit_code == 4 and "outside the fased home" in error_line(refused)
    assert list(elsewhere.iterdir()) == []
    assert "memory is a symlink" in run("doctor").stdout


def test_each_agent_searches_its_own_memory(set_up, ok, run):
    note(set_up, "MEMORY.md", "main knows about otters\n")
    ok("agent", "create", "ops")
    ops = set_up / "workspace-ops"
    (ops / "memory").mkdir(parents=True, exist_ok=True)
    (ops / "memory" / "2026-03-01.md").write_text("ops knows about otters too\n")
    assert [r["path"] for r in results(ok, "otters")] == ["MEMORY.md"]
    assert [r["path"] for r in results(ok, "otters", "--agent", "ops")] == [
        "memory/2026-03-01.md"]
    assert ok("memory", "get", "memory/2026-03-01.md", "--agent", "ops") == (
        "ops knows about otters too\n")
    assert "not under a memory root" in fails(run, set_up, 2, "memory", "get",
                                              str(ops / "memory" / "2026-03-01.md"))
    assert "no agent 'nosuch'" in fails(run, set_up, 1, "memory", "search", "x", "-a", "nosuch")


def test_a_note_named_with_other_digits_is_an_undated_note_not_an_internal_error(set_up, ok):
    """`٢٠٢٦-١٢-٠١.md` matched the daily-note pattern (\\d takes any decimal digit) and its
    date did not parse: every search of the agent was an internal error."""
    note(set_up, "memory/\u0662\u0660\u0662\u0666-\u0661\u0662-\u0660\u0661.md", "quokka\n")
    [found] = results(ok, "quokka")
    assert found["path"] == "memory/\u0662\u0660\u0662\u0666-\u0661\u0662-\u0660\u0661.md"


def test_several_processes_searching_a_new_index_at_once_all_get_the_results(set_up):
    """The first search builds the index; others that start meanwhile wait for it (one
    writer at a time) and find the same, none fails on a locked database."""
    import subprocess
    import sys

    for i in range(300):
        note(set_up, f"memory/2026-01-{i % 28 + 1:02d}-{i}.md",
             f"Note {i}: the quokka count was {i}.\n" + "filler line\n" * 40)
    procs = [subprocess.Popen([sys.executable, "-c", "from fased.commands.entry import main; "
                               "main()", "memory", "search", "--json", "-n", "100", "quokka"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in outs]
    found = [sorted(r["path"] for r in json.loads(out)["results"]) for out, _ in outs]
    assert all(f == found[0] for f in found) and len(found[0]) == 100


@pytest.mark.parametrize("mode", ["DELETE", "WAL"])
def test_an_index_another_process_holds_is_busy_never_deleted(set_up, ok, run, monkeypatch,
                                                              mode):
    """A "database is locked" while opening the index was taken for damage (it is a
    sqlite3.DatabaseError) and the index deleted under the process writing it; one while
    writing was an internal error. Both are now one line saying the index is busy."""
    from fased.memory import index as memory_index

    note(set_up, "MEMORY.md", "The quokka smiles.\n")
    ok("memory", "index")
    path = set_up / "memory" / "index.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute(f"PRAGMA journal_mode = {mode}")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO meta VALUES ('held', '1')")
    note(set_up, "MEMORY.md", "The quokka smiles again.\n")  # so the search must write
    monkeypatch.setattr(memory_index, "BUSY_SECONDS", 0.2)
    try:
        result = run("memory", "search", "quokka")
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert result.exit_code == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert ("Error: the memory index (" in result.stderr
            and "is busy: another fased process is writing it" in result.stderr)
    assert rows(path, "SELECT value FROM meta WHERE key = 'held'") == [{"value": "1"}]
    assert results(ok, "quokka")[0]["snippet"] == "The quokka smiles again."


@pytest.mark.parametrize("batch", [5000, 1])
def test_two_searches_indexing_the_same_new_messages_index_them_once(models, ok, server,
                                                                     monkeypatch, batch):
    """Each search read how far the index had got before it took the write lock: one that
    waited for another to index the same messages indexed them again, and every later
    search found each message twice."""
    from fased.memory import index as memory_index
    from fased.memory.roots import memory_settings
    from fased.store import Store

    server.script(Reply("The capybara answer."))
    ok("chat", "tell me about the capybara")
    st = Store(models)
    state = st.db()
    settings = memory_settings(state, models, "main")
    first, second = memory_index.MemoryIndex(models), memory_index.MemoryIndex(models)
    writing = memory_index.MemoryIndex.writing

    def late(self):
        if self is second:  # the other search takes the lock first and indexes them
            first.refresh_sessions(settings, state, "2026-01-01T00:00:00Z")
        return writing(self)

    with monkeypatch.context() as patch:
        patch.setattr(memory_index, "MESSAGES_PER_BATCH", batch)
        patch.setattr(memory_index.MemoryIndex, "writing", late)
        second.refresh_sessions(settings, state, "2026-01-01T00:00:00Z")
    first.close(), second.close()

    found = results(ok, "capybara")
    assert sorted(r["role"] for r in found) == ["assistant", "user"]


def test_a_first_build_killed_midway_keeps_what_it_indexed(set_up):
    """The first index of thousands of notes was one transaction: `kill -9` during it (or
    a search given up on) lost all of it, and the next search started over."""
    import signal
    import subprocess
    import sys
    import time

    for i in range(3000):
        note(set_up, f"memory/2026-01-{i % 28 + 1:02d}-{i}.md",
             f"Note {i}: the numbat count was {i}.\n" + "filler words here\n" * 60)
    index = set_up / "memory" / "index.db"
    proc = subprocess.Popen([sys.executable, "-c", "from fased.commands.entry import main; "
                             "main()", "memory", "index"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kept = 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if index.exists():
            try:
                kept = rows(index, "SELECT count(*) AS n FROM files")[0]["n"]
            except sqlite3.Error:
                kept = 0
            if kept:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before a batch was seen: make it larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = rows(index, "SELECT count(*) AS n FROM files")[0]["n"]
    assert 0 < kept < 3000
    total = 3000 + len([n for n in ("MEMORY.md", "memory.md") if (ws(set_up) / n).exists()])

    done = run_process("memory", "index", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["notes"] == total - kept
    found = json.loads(run_process("memory", "search", "numbat", "--json", "-n", "5").stdout)
    assert len(found["results"]) == 5
    assert rows(index, "SELECT count(*) AS n FROM files")[0]["n"] == total
    assert rows(index, "SELECT count(DISTINCT path) AS n FROM chunks")[0]["n"] == total


def test_a_note_changed_while_its_old_text_is_embedded_gets_its_new_text_embedded(
        set_up, ok, server, monkeypatch):
    """Vectors are asked for outside the write lock (an embedder may take seconds); a note
    edited and indexed again meanwhile got new chunks with the ids of the old ones, and the
    old text's vector landed on the new text: a search by meaning found the note for what
    it no longer says."""
    from fased.memory import embed as memory_embed
    from fased.memory import index as memory_index
    from fased.memory.roots import memory_settings
    from fased.store import Store

    ok("agent", "models", "providers", "add", "emb", "--kind", "openai-compatible",
       "--base-url", server.url + "/v1")
    server.synonyms = {"automobile": "car"}
    server.embedding_dims = 4096  # no word shares a bucket with "car"
    (ws(set_up) / "MEMORY.md").unlink()  # z.md's chunk is the only one
    note(set_up, "memory/z.md", "The car is parked in the garage.\n")
    ok("memory", "index")  # keywords only: no vectors yet
    ok("config", "set", "memory.search.embeddings", "emb/fake-model")
    real = memory_embed.embedder
    edited = []

    def embedder(*args):
        embed = real(*args)

        def slow(texts):
            if not edited and "The car is parked in the garage." in texts:
                # another search indexes the note, edited, meanwhile
                edited.append(note(set_up, "memory/z.md", "The violin is in the hall.\n"))
                other = memory_index.MemoryIndex(set_up)
                other.refresh_notes(memory_settings(Store(set_up).db(), set_up, "main"),
                                    "2026-01-01T00:00:00Z")
                other.close()
            return embed(texts)
        return slow

    with monkeypatch.context() as patch:
        patch.setattr(memory_embed, "embedder", embedder)
        results(ok, "garage")
    assert edited

    by_path = {r["path"]: r["score"] for r in results(ok, "automobile")}
    assert by_path.get("memory/z.md", 0) < 0.1, by_path
    assert results(ok, "violin")[0]["path"] == "memory/z.md"


def test_the_memory_tools_let_go_of_state_db_after_each_call(set_up, ok):
    """A long `fased run` calls them turn after turn: each call's connection to state.db and
    its log files are closed when the call returns, not whenever the collector runs."""
    import gc

    from fased.tools.base import ToolContext
    from fased.tools.memory import memory_get, memory_search

    note(set_up, "MEMORY.md", "# Memory\n\nThe deploy key lives in the team vault.\n")
    ok("memory", "search", "vault")
    ctx = ToolContext(agent="main", session="s-1", turn="t-1", call_id="c-1",
                      workspace=ws(set_up), home=set_up)
    gc.collect()
    gc.disable()  # what is closed must be closed by the call itself
    try:
        for _ in range(3):
            assert "team vault" in memory_search({"query": "vault"}, ctx).text
            assert "team vault" in memory_get({"path": "MEMORY.md"}, ctx).text
        held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")]
    finally:
        gc.enable()
    assert [h for h in held if h.startswith(f"{set_up}/")] == []
