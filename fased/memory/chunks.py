"""Cutting text into the pieces the index holds (pure, no I/O).

A chunk is a few hundred tokens (CHUNK_TOKENS, by fased.tokens' estimate) of whole lines,
and the next chunk starts OVERLAP_TOKENS of lines before the end of the one before, so a
passage that straddles a cut is still found whole in one of them. Each chunk knows its
first and last line (from 1). A line longer than a chunk is cut into pieces that share its
line number.

In tokens, not characters: an embedder takes a text of so many tokens, and 1,600 characters
of Chinese are ~2,000 tokens for a large model's tokenizer and ~3,100 for the embedded
one's, which refused them (its limit is 2,048).
"""

from __future__ import annotations

from dataclasses import dataclass

from fased.tokens import estimate

CHUNK_TOKENS = 400
OVERLAP_TOKENS = 80


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    text: str


def chunk_text(text: str, size: int = CHUNK_TOKENS, overlap: int = OVERLAP_TOKENS
               ) -> list[Chunk]:
    """The chunks of `text`; blank text gives none."""
    lines: list[tuple[int, str, int]] = []  # (number, text, estimated tokens with its newline)
    for number, line in enumerate(note_lines(text), 1):
        cost = _cost(line)
        if cost <= size:
            lines.append((number, line, cost))
        else:
            lines += [(number, piece, _cost(piece)) for piece in _pieces(line, size)]
    out: list[Chunk] = []
    i = 0
    while i < len(lines):
        j, used = i, 0
        while j < len(lines) and (j == i or used + lines[j][2] <= size):
            used += lines[j][2]
            j += 1
        body = "\n".join(line for _, line, _ in lines[i:j])
        if body.strip():
            out.append(Chunk(lines[i][0], lines[j - 1][0], body))
        if j >= len(lines):
            break
        back, k = 0, j
        while k - 1 > i and back + lines[k - 1][2] <= overlap:
            k -= 1
            back += lines[k][2]
        i = k
    return out


def note_lines(text: str) -> list[str]:
    """A note's lines as search numbers them and memory_get shows them: split at "\n" only
    (a "\r" before it dropped). str.splitlines() also splits at form feeds, U+2028 and
    the like, and numbered lines that `memory get` could not find."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _cost(line: str) -> int:
    """A line's estimated tokens in a chunk (the estimate's 4 a message are not paid)."""
    return estimate(line) - 4 + 1


def _pieces(line: str, size: int) -> list[str]:
    """A line longer than `size` estimated tokens cut into pieces that are not."""
    out: list[str] = []
    at = 0
    while at < len(line):
        # the longest piece that fits (the estimate grows with every character, and none
        # costs less than a quarter of a token), and at least one character
        low, high = at + 1, min(len(line), at + 4 * size)
        while low < high:
            mid = (low + high + 1) // 2
            if _cost(line[at:mid]) <= size:
                low = mid
            else:
                high = mid - 1
        out.append(line[at:low])
        at = low
    return out
