"""Block streaming: break preference, fences kept whole or cut cleanly, and streaming = batch."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fased.chunker import BlockChunker, chunk_text, join_chunks
from fased.errors import UsageError

FAST = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)


def open_fence(text: str) -> tuple[str, int] | None:
    """The fence still open at the end of `text` (CommonMark rules, written independently)."""
    fence = None
    for line in text.split("\n"):
        if fence is None:
            m = re.match(r" {0,3}(`{3,}|~{3,})(.*)$", line)
            if m and not (m[1][0] == "`" and "`" in m[2]):
                fence = (m[1][0], len(m[1]))
        elif re.fullmatch(f" {{0,3}}{re.escape(fence[0])}{{{fence[1]},}}[ \t]*\r?", line):
            fence = None
    return fence


# --- random markdown-ish text -------------------------------------------------------------

WORDS = ["alpha", "beta", "gamma", "end.", "why?", "wow!", "`x`", "a```b", "~~", "x.y", "é"]
words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
separators = st.sampled_from([" ", "  ", "\n", "\n\n", ". ", "\t", "\n\n\n", " \n"])
long_token = st.integers(1, 300).map(lambda n: "x" * n)
odd_lines = st.sampled_from(["```js `x` y\n", "    ```\n", "``\n", " ~~ \n", "```a`\n"])


@st.composite
def fenced(draw) -> str:
    indent = " " * draw(st.integers(0, 3))
    char = draw(st.sampled_from("`~"))
    size = draw(st.integers(3, 5))
    info = draw(st.sampled_from(["", "py", "js x", " sh"]))
    body = draw(
        st.lists(
            st.one_of(
                words,
                st.integers(1, 400).map(lambda n: "y" * n),
                st.just(""),
                st.just("```py"),
                st.just("    " + char * size),
                st.just("~~~ inner" if char == "`" else "``` inner"),
            ),
            max_size=25,
        )
    )
    text = indent + char * size + info + "\n" + "".join(line + "\n" for line in body)
    closing = draw(st.sampled_from(["same", "longer", "spaces", "none"]))
    if closing == "same":
        text += " " * draw(st.integers(0, 3)) + char * size + "\n"
    elif closing == "longer":
        text += char * (size + 1) + "\n"
    elif closing == "spaces":
        text += char * size + "  "  # a closing line that may end the text without a newline
    return text


texts = st.lists(
    st.one_of(words, separators, long_token, odd_lines, fenced()), max_size=30
).map("".join)
sizes = st.integers(10, 150).flatmap(
    lambda lo: st.tuples(st.just(lo), st.integers(max(lo, 40), lo + 200))
)


def too_long_opener(chunk: str, hi: int) -> bool:
    """The documented exception to (a): an opening line that leaves no room for a cut."""
    for line in chunk.split("\n"):
        m = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if m and len(line) + len(m[1]) + 4 > hi:
            return True
    return False


def check_properties(text: str, lo: int, hi: int) -> list[str]:
    chunks = chunk_text(text, lo, hi)
    assert all(chunks), "no empty block"
    for chunk in chunks:
        assert len(chunk) <= hi or too_long_opener(chunk, hi), (len(chunk), chunk)  # (a)
    for chunk in chunks[:-1]:
        assert open_fence(chunk) is None, chunk  # (b)
    if chunks:
        assert open_fence(chunks[-1]) is None or open_fence(text) is not None
    assert join_chunks(chunks) == text  # (c)
    return chunks


@FAST
@given(texts, sizes)
def test_blocks_are_bounded_balanced_and_lossless(text: str, size: tuple[int, int]) -> None:
    check_properties(text, *size)


@FAST
@given(texts, sizes, st.data())
def test_streaming_in_any_pieces_matches_whole_text(text, size, data) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=40)))
    chunker = BlockChunker(*size)
    streamed: list[str] = []
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        streamed += chunker.feed(text[start:end])
    streamed += chunker.flush()
    assert streamed == chunk_text(text, *size)  # (d)


@FAST
@given(texts, sizes)
def test_token_by_token_streaming_matches(text: str, size: tuple[int, int]) -> None:
    chunker = BlockChunker(*size)
    streamed = [block for ch in text for block in chunker.feed(ch)] + chunker.flush()
    assert streamed == chunk_text(text, *size)


# --- examples -------------------------------------------------------------------------------


def test_paragraph_break_beats_newline_and_sentence() -> None:
    text = "a" * 55 + ". " + "b" * 10 + "\n\n" + "c" * 10 + "\n" + "d" * 10 + ". " + "e" * 40
    first = chunk_text(text, 50, 100)[0]
    assert first.endswith("b\n\n")


def test_newline_beats_sentence_and_sentence_beats_space() -> None:
    text = "a" * 55 + "\n" + "b" * 10 + ". " + "c" * 10 + " " + "d" * 60
    assert chunk_text(text, 50, 100)[0] == "a" * 55 + "\n"
    text = "a" * 55 + ". " + "b" * 10 + " " + "c" * 60
    assert chunk_text(text, 50, 100)[0] == "a" * 55 + ". "


def test_space_then_hard_cut_at_max() -> None:
    assert chunk_text("word " * 40, 50, 100)[0] == "word " * 20
    assert [len(c) for c in chunk_text("x" * 250, 50, 100)] == [100, 100, 50]


def test_first_paragraph_after_min_goes_out_at_once() -> None:
    chunker = BlockChunker(50, 100)
    assert chunker.feed("a" * 60 + "\n\n") == ["a" * 60 + "\n\n"]
    assert chunker.feed("b" * 20) == []
    assert chunker.flush() == ["b" * 20]


def test_short_text_is_one_block_on_flush() -> None:
    chunker = BlockChunker()
    assert chunker.feed("Hello there.\n\nShort answer.") == []
    assert chunker.flush() == ["Hello there.\n\nShort answer."]
    assert chunker.flush() == []
    assert chunk_text("") == []


def test_code_fence_is_not_split_when_it_fits() -> None:
    fence = "```python\n" + "".join(f"print({i})\n" for i in range(8)) + "```\n"
    text = "Intro line here.\n" + fence + "After the code.\n"
    chunks = chunk_text(text, 40, 100)
    assert chunks[1] == fence
    assert chunks[0] == "Intro line here.\n"  # ends before the fence rather than inside it


def test_fence_ending_inside_window_is_kept_with_prose() -> None:
    text = "p" * 20 + "\n```\n" + "code\n" * 6 + "```\n" + "tail " * 30
    first = chunk_text(text, 40, 100)[0]
    assert first.startswith("p" * 20) and first.endswith("```\n")


def test_long_fence_is_closed_and_reopened_at_line_ends() -> None:
    text = "~~~~ sh\n" + "".join(f"echo line {i}\n" for i in range(60)) + "~~~~\nDone.\n"
    chunks = chunk_text(text, 100, 200)
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk) <= 200
        assert open_fence(chunk) is None
    for chunk in chunks[1:-1]:
        assert chunk.startswith("~~~~ sh\n") and chunk.endswith("\n~~~~")
    assert join_chunks(chunks) == text


def test_long_code_line_is_cut_with_a_marked_close() -> None:
    text = "```\n" + "y" * 500 + "\n```\n"
    chunks = chunk_text(text, 100, 200)
    assert chunks[0].endswith("y\n````")  # one fence char longer: a newline was added too
    assert chunks[1].startswith("```\ny")
    assert join_chunks(chunks) == text


def test_unclosed_fence_at_end_stays_open_in_last_block() -> None:
    text = "Look:\n```py\nx = 1\n"
    assert chunk_text(text, 50, 100) == [text]
    assert join_chunks([text]) == text


def test_cut_inside_a_line_never_starts_a_fence() -> None:
    text = "z" * 95 + "```js and more words here " * 10
    for chunk in chunk_text(text, 50, 100):
        assert open_fence(chunk) is None


def test_invalid_sizes_are_usage_errors() -> None:
    message = "invalid blockStreamingChunk: minChars 900, maxChars 800$"
    with pytest.raises(UsageError, match=message) as err:
        BlockChunker(900, 800)
    assert err.value.hint == "use 1 <= minChars <= maxChars, e.g. minChars 800 and maxChars 1200"
    with pytest.raises(UsageError, match="minChars 0"):
        BlockChunker(0, 10)


def test_join_rejects_blocks_it_did_not_make() -> None:
    with pytest.raises(ValueError, match="does not reopen"):
        join_chunks(["```\nab\n```", "no reopen"])
    with pytest.raises(ValueError, match="without the added close"):
        join_chunks(["```\nab\n", "more"])
