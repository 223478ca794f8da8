"""Cutting text into the pieces the index holds (pure, no I/O).

A chunk is a few hundred tokens (CHUNK_CHARS, at ~4 characters a token) of whole lines, and
the next chunk starts OVERLAP_CHARS of lines before the end of the one before, so a passage
that straddles a cut is still found whole in one of them. Each chunk knows its first and last
line (from 1). A line longer than a chunk is cut into pieces that share its line number.
"""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_CHARS = 1600
OVERLAP_CHARS = 320


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    text: str


def chunk_text(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """The chunks of `text`; blank text gives none."""
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        while len(line) > size:
            lines.append((number, line[:size]))
            line = line[size:]
        lines.append((number, line))
    out: list[Chunk] = []
    i = 0
    while i < len(lines):
        j, used = i, 0
        while j < len(lines) and (j == i or used + len(lines[j][1]) + 1 <= size):
            used += len(lines[j][1]) + 1
            j += 1
        body = "\n".join(line for _, line in lines[i:j])
        if body.strip():
            out.append(Chunk(lines[i][0], lines[j - 1][0], body))
        if j >= len(lines):
            break
        back, k = 0, j
        while k - 1 > i and back + len(lines[k - 1][1]) + 1 <= overlap:
            k -= 1
            back += len(lines[k][1]) + 1
        i = k
    return out
