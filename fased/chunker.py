"""Block streaming: cut a streamed assistant message into complete blocks (pure, no I/O).

A block goes out once it can be at least `min_chars` long and its break is known. Breaks,
best first: a paragraph break (the earliest one at or after `min_chars`, so paragraphs go out
as soon as they end), then the latest newline, sentence end (". ", "! ", "? "), space, and
last a hard cut, all within `max_chars`. A break keeps its separator in the earlier block.
Weaker breaks need the whole window, so without a paragraph break a block goes out once
`max_chars` of text are buffered. A cut inside a line never leaves either part reading as a
fence line. Blocks shorter than `min_chars` come only at the end and around fences.

Fenced code (``` or ~~~, indented up to 3 spaces, with an info string) is never cut while
avoidable: when the window falls inside a fence, the block ends before the fence's opening
line so that the fence starts the next block whole. Only a fence that cannot fit in one block
is cut, preferring line ends: the block is closed with a fence line (the opening run, or the
run plus one more fence character when the cut is inside a line and a newline was added
too) and the next block reopens it with the original opening line, so each part renders.

Guarantees (tests check each):
(a) no block is longer than `max_chars`, counting the fence lines added here, unless an
    opening line alone leaves no room or a code line cannot be cut without making a
    fence line (a run of fence characters); then the block ends at the first safe place;
(b) fences balance in every block, except the last when the input itself ends inside one;
(c) `join_chunks(blocks)` gives back the exact input;
(d) feed() in any pieces followed by flush() gives the same blocks as `chunk_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

from fased.errors import UsageError

PARA, NEWLINE, SENTENCE, SPACE, HARD = range(5)  # break classes, best first
NORMAL, OPENER, CODE, CLOSER = "normal", "opener", "code", "closer"  # line kinds
OUT, LINE, MID, UNDET = "out", "line", "mid", "undet"  # position tags

_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_MAYBE_OPEN = re.compile(r" {0,3}(`{0,2}|~{0,2})")


@dataclass(frozen=True)
class _Fence:
    char: str
    size: int
    opener: str  # the opening line as written, without its newline

    @property
    def close(self) -> str:
        return self.char * self.size


@lru_cache(maxsize=64)
def _closer_res(char: str, size: int) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    c = re.escape(char)
    return (
        re.compile(rf" {{0,3}}{c}{{{size},}}[ \t]*\r?"),  # a closing line
        re.compile(rf" {{0,3}}(?:{c}*|{c}{{{size},}}[ \t]*\r?)"),  # could still become one
        re.compile(rf" {{0,3}}({c}+)[ \t]*"),  # for prefixes of a line that look like one
    )


def _outside_kind(line: str, complete: bool) -> tuple[str | None, _Fence | None]:
    """Kind of a line read outside fences; None while the rest of the line could change it."""
    m = _OPEN.match(line)
    if m is None:
        if not complete and _MAYBE_OPEN.fullmatch(line):
            return None, None
        return NORMAL, None
    run, info = m.groups()
    if run[0] == "`" and "`" in info:  # CommonMark: a backtick fence's info has no backtick
        return NORMAL, None
    if not complete:
        return (OPENER if run[0] == "~" else None), None
    return OPENER, _Fence(run[0], len(run), line)


def _inside_kind(line: str, fence: _Fence, complete: bool) -> str | None:
    """Kind of a line read inside `fence`; None while it could still become the closer."""
    full, maybe, _ = _closer_res(fence.char, fence.size)
    if full.fullmatch(line):
        return CLOSER if complete else None
    if not complete and maybe.fullmatch(line):
        return None
    return CODE


def _rest_ok(s: str, q: int, le: int, complete: bool) -> bool | None:
    """Whether the text after a mid-line cut may start a block's line (no fence line there).

    Conservative: refuse a fence character after at most 3 spaces; None while unknown."""
    k = 0
    while k < 4 and q + k < le and s[q + k] == " ":
        k += 1
    if k == 4:
        return True
    if q + k < le:
        return s[q + k] not in "`~"
    return True if complete else None


def _bad_prefix_span(line: str, fence: _Fence) -> tuple[int, int] | None:
    """Lengths of the prefixes of code `line` that would read as a closing fence line."""
    m = _closer_res(fence.char, fence.size)[2].match(line)
    if m is None or m.end(1) - m.start(1) < fence.size:
        return None
    return m.start(1) + fence.size, m.end()


class BlockChunker:
    """Turn streamed deltas into blocks; see the module docstring for the rules."""

    def __init__(self, min_chars: int = 800, max_chars: int = 1200):
        if min_chars < 1 or max_chars < min_chars:
            raise UsageError(
                f"invalid blockStreamingChunk: minChars {min_chars}, maxChars {max_chars}",
                hint="use 1 <= minChars <= maxChars, e.g. minChars 800 and maxChars 1200",
            )
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._reset()

    def _reset(self) -> None:
        self._buf = ""  # text not yet in a block
        self._head = ""  # the part of the current line already sent (decides its kind)
        self._carry: _Fence | None = None  # a fence the last block cut and this one reopens
        self._para_from = 0  # where a new paragraph break could start (saves rescans)

    def feed(self, text: str) -> list[str]:
        """Accept a streamed delta; return the blocks that are now complete."""
        self._buf += text
        return list(iter(lambda: self._next_block(False), None))

    def flush(self) -> list[str]:
        """End of message: return what remains (the last block may be shorter than min)."""
        blocks = list(iter(lambda: self._next_block(True), None))
        self._reset()
        return blocks

    def _next_block(self, eof: bool) -> str | None:
        """The next block if its end is already certain (at `eof`, whenever text remains).

        A decision only depends on text that later deltas cannot change, which is what
        makes streaming give the same blocks as one call with the whole text."""
        buf = self._buf
        if not buf:
            return None
        prefix = self._carry.opener + "\n" if self._carry else ""
        room = self.max_chars - len(prefix)  # content that fits with nothing added after it
        want = max(1, self.min_chars - len(prefix))
        if eof and len(buf) <= room:
            return self._emit(len(buf), "", None, prefix)
        if not eof and len(buf) < room:
            # Until the window is full only a paragraph break can end a block, so skip the
            # scan unless a new blank line arrived.
            found = buf.find("\n\n", max(self._para_from, want - 2))
            self._para_from = len(buf) - 1
            if found < 0:
                return None
        s, h = self._head + buf, len(self._head)
        known = eof or len(buf) >= room  # every position up to max_chars is in the buffer
        best_in: dict[int, int] = {}
        best_before: dict[int, int] = {}
        splits: list[tuple[str, int, str, _Fence]] = []  # ways to cut a fence that is too big
        positions = self._positions(s, h, eof)
        pending = first = None
        for item in positions:
            q, tag, info = item
            p = q - h
            if tag == UNDET:
                known = known and p > room
                pending = item
                break
            if p > room:
                pending = item
                break
            first = first or item
            if tag == OUT:
                if p >= want:
                    if info == PARA:
                        return self._emit(p, "", None, prefix)
                    best_in[info] = p
                else:
                    best_before[info] = p
            else:
                suffix = info.close if tag == LINE else "\n" + info.close + info.char
                if p + len(suffix) <= room:
                    splits.append((tag, p, suffix, info))
        if not known:
            return None
        for cls in (NEWLINE, SENTENCE, SPACE, HARD):
            if cls in best_in:
                return self._emit(best_in[cls], "", None, prefix)
        for cls in (PARA, NEWLINE, SENTENCE, SPACE, HARD):
            if cls in best_before:
                return self._emit(best_before[cls], "", None, prefix)
        # Cut the fence: rather a part of at least min_chars, then rather at a line end.
        big = [c for c in splits if len(prefix) + c[1] + len(c[2]) >= self.min_chars]
        for group in (big, splits):
            for wanted in (LINE, MID):
                fits = [c for c in group if c[0] == wanted]
                if fits:
                    _, p, suffix, fence = fits[-1]
                    return self._emit(p, suffix, fence, prefix)
        # Nothing fits (see (a) in the module docstring): take the first safe break.
        later = [first] if first else chain([pending] if pending else [], positions)
        for q, tag, info in later:
            if tag == UNDET or q - h >= len(buf):
                break
            if tag == OUT:
                return self._emit(q - h, "", None, prefix)
            suffix = info.close if tag == LINE else "\n" + info.close + info.char
            return self._emit(q - h, suffix, info, prefix)
        return self._emit(len(buf), "", None, prefix) if eof else None

    def _emit(self, p: int, suffix: str, fence: _Fence | None, prefix: str) -> str:
        """Send the first `p` buffered characters; `fence` is reopened next when cut here."""
        piece, self._buf = self._buf[:p], self._buf[p:]
        nl = piece.rfind("\n")
        self._head = piece[nl + 1:] if nl >= 0 else self._head + piece
        self._carry = fence
        self._para_from = 0
        return prefix + piece + suffix

    def _positions(self, s: str, h: int, eof: bool) -> Iterator[tuple[int, str, object]]:
        """Yield each break position q > h in `s` in order as (q, tag, class or fence).

        Stops after yielding UNDET at the first position whose kind needs text not yet seen."""
        fence = self._carry
        ls = 0
        while ls <= len(s):
            nl = s.find("\n", ls)
            le = len(s) if nl < 0 else nl
            complete = nl >= 0 or eof
            line = s[ls:le]
            opened = None
            if ls == 0 and h > 0:
                kind = CODE if fence else NORMAL  # the line a mid-line cut already judged
            elif fence is None:
                kind, opened = _outside_kind(line, complete)
            else:
                kind = _inside_kind(line, fence, complete)
            if kind is None:
                yield max(ls, h) + 1, UNDET, None
                return
            start = max(ls, h) + 1
            if kind in (NORMAL, CODE):
                # cutting this line after a prefix in `bad` would leave that prefix reading as
                # a fence line of its own
                if kind == NORMAL:
                    # an opener only before the backtick that made the whole line normal
                    m = _OPEN.match(line)
                    bad = (m.start(1) + 3, line.find("`", m.end(1))) if m else None
                else:
                    bad = _bad_prefix_span(line, fence)
                for q in range(start, le + 1):
                    if bad and bad[0] <= q - ls <= bad[1]:
                        continue
                    ok = _rest_ok(s, q, le, complete)
                    if ok is None:
                        yield q, UNDET, None
                        return
                    if ok:
                        yield (q, OUT, _break_class(s, q)) if kind == NORMAL else (q, MID, fence)
            if nl < 0:
                return
            if fence is None:
                fence = opened
            elif kind == CLOSER:
                fence = None
            if fence is None:
                para = nl >= 1 and s[nl - 1] == "\n"
                yield nl + 1, OUT, PARA if para else NEWLINE
            elif kind == CODE:
                yield nl + 1, LINE, fence
            ls = nl + 1


def _break_class(s: str, q: int) -> int:
    prev = s[q - 1]
    if prev == " " and q >= 2 and s[q - 2] in ".!?":
        return SENTENCE
    return SPACE if prev in " \t" else HARD


def chunk_text(text: str, min_chars: int = 800, max_chars: int = 1200) -> list[str]:
    """Cut a whole message into blocks: the same blocks streaming it would give."""
    chunker = BlockChunker(min_chars, max_chars)
    return chunker.feed(text) + chunker.flush()


class _FenceState:
    """Fence state over complete lines of a text read in order (for join_chunks)."""

    def __init__(self) -> None:
        self.fence: _Fence | None = None
        self.tail = ""

    def copy(self) -> _FenceState:
        other = _FenceState()
        other.fence, other.tail = self.fence, self.tail
        return other

    def advance(self, text: str) -> None:
        lines = (self.tail + text).split("\n")
        self.tail = lines.pop()
        for line in lines:
            if self.fence is None:
                self.fence = _outside_kind(line, True)[1]
            elif _inside_kind(line, self.fence, True) == CLOSER:
                self.fence = None


def join_chunks(chunks: Iterable[str]) -> str:
    """Undo chunking: drop the fence lines added when a fence was cut, and concatenate."""
    chunks = list(chunks)
    state = _FenceState()
    parts: list[str] = []
    carry: _Fence | None = None
    for i, chunk in enumerate(chunks):
        if carry is not None:
            reopen = carry.opener + "\n"
            if not chunk.startswith(reopen):
                raise ValueError(f"block {i} does not reopen the fence {carry.opener!r}")
            chunk, carry = chunk[len(reopen):], None
        if i < len(chunks) - 1:
            # A block that ends inside a fence was closed by us: its last line is ours.
            cut = chunk.rfind("\n") + 1
            probe = state.copy()
            probe.advance(chunk[:cut])
            fence = probe.fence
            if fence is not None:
                last = chunk[cut:]
                if last == fence.close:
                    chunk = chunk[:cut]
                elif last == fence.close + fence.char and cut:
                    chunk = chunk[:cut - 1]  # the newline before it was added too
                else:
                    raise ValueError(f"block {i} ends inside a fence without the added close")
                carry = fence
        state.advance(chunk)
        parts.append(chunk)
    return "".join(parts)
