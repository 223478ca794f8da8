"""The one token estimate (fased.tokens) and what is sized by it: memory chunks and the
index that holds them."""

from __future__ import annotations

import json
import sqlite3

import pytest

from fased.memory.chunks import CHUNK_TOKENS, chunk_text
from fased.tokens import estimate


@pytest.mark.parametrize(("text", "tokens"), [
    ("", 4),
    ("a" * 400, 104),  # English and code: four characters a token
    ("我" * 400, 504),  # Chinese: three UTF-8 bytes, 1.25 tokens a character
    ("я" * 400, 304),  # Cyrillic: two bytes, 0.75
    ("😀" * 400, 704),  # an emoji: four bytes, 1.75
    ("\udcff", 5),  # a lone surrogate (a file name's byte that is not UTF-8) is counted
])
def test_a_character_outside_ascii_counts_more(text, tokens):
    assert estimate(text) == tokens


@pytest.mark.parametrize("text", [
    "我们今天去公园散步，天气很好。" * 300,  # one long line of Chinese
    "x" * 9000,
    ("я" * 7 + "abc\n") * 900,
    "😀" * 1001 + "\n" + "short\n" * 50,
])
def test_no_memory_chunk_is_over_its_size_in_tokens_and_none_loses_text(text):
    """Chunks were 1,600 characters: ~3,100 tokens of Chinese for the embedded model's
    tokenizer, more than its embeddings server takes in one text."""
    chunks = chunk_text(text)
    assert chunks
    assert all(estimate(c.text) - 4 <= CHUNK_TOKENS + c.text.count("\n") for c in chunks)
    lines = text.splitlines()
    for c in chunks:  # every chunk is the text of its lines, cut only inside a long line
        assert c.text.replace("\n", "") in "".join(lines[c.start - 1:c.end])
    covered = {n for c in chunks for n in range(c.start, c.end + 1)}
    assert covered == set(range(1, len(lines) + 1))
    if len(lines) == 1:  # a long line's pieces, in order, are the line
        assert "".join(c.text for c in chunks) == text


def test_an_index_of_the_earlier_chunks_is_built_again(ok, fased_home):
    """An index version fased no longer writes is dropped and built again from the notes:
    its chunks were cut by characters."""
    ok("setup", "-y", "--no-detect")
    notes = fased_home / "workspace" / "memory"
    notes.mkdir(parents=True, exist_ok=True)
    (notes / "2026-11-30.md").write_text("天气很好。" * 400 + "\n")
    ok("memory", "index")
    index = fased_home / "memory" / "index.db"
    with sqlite3.connect(index) as con:
        con.execute("UPDATE meta SET value = '1' WHERE key = 'version'")
        con.execute("DELETE FROM chunks")
    found = json.loads(ok("memory", "search", "--json", "天气很好"))
    assert found["results"] and found["results"][0]["path"] == "memory/2026-11-30.md"
    with sqlite3.connect(index) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0] != "1"
