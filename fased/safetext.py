"""Text a server sent, made safe to show and to log.

JSON lets a server send `\\ud83d` escapes, which decode to lone surrogate code points: an
emoji may arrive as its two halves in two stream pieces, or a half may pair with nothing.
Such a string can be neither written to a terminal nor encoded as UTF-8 (so neither logged:
the log refuses it, rightly, for user input). Halves that meet are joined into their
character; anything left becomes U+FFFD, and the caller counts how many, to say so.
"""

from __future__ import annotations

import json
import re
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
_PAIR_OR_LONE = re.compile("([\ud800-\udbff][\udc00-\udfff])|[\ud800-\udfff]")
_HIGH = re.compile("[\ud800-\udbff]$")
# a \u escape of a surrogate inside JSON text (tool-call arguments as the server sent them)
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def repair(text: str) -> tuple[str, int]:
    """`text` with surrogate pairs joined and lone surrogates replaced; (text, replaced)."""
    if not _SURROGATE.search(text):
        return text, 0
    replaced = 0

    def fix(match: re.Match) -> str:
        nonlocal replaced
        pair = match.group(1)
        if pair:
            high, low = ord(pair[0]) - 0xD800, ord(pair[1]) - 0xDC00
            return chr(0x10000 + (high << 10) + low)
        replaced += 1
        return REPLACEMENT

    return _PAIR_OR_LONE.sub(fix, text), replaced


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Bytes as text, what is not UTF-8 replaced; (text, replaced)."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        return text, text.count(REPLACEMENT) - raw.count(REPLACEMENT.encode())


def repair_json_text(text: str) -> tuple[str, int]:
    """JSON text (tool-call arguments) whose strings decode without lone surrogates."""
    text, replaced = repair(text)
    if not _ESCAPED_SURROGATE.search(text):
        return text, replaced
    try:
        value = json.loads(text)
    except ValueError:
        return text, replaced  # not JSON (yet): left as the model wrote it
    value, inner = scrub(value)
    if not inner:
        return text, replaced  # escapes of whole pairs: valid as they are
    return json.dumps(value, ensure_ascii=False), replaced + inner


def scrub(value: Any) -> tuple[Any, int]:
    """`value` (a JSON-like structure) with every string repaired; (value, replaced)."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, dict):
        out, total = {}, 0
        for key, item in value.items():
            key, n = scrub(key) if isinstance(key, str) else (key, 0)
            out[key], m = scrub(item)
            total += n + m
        return out, total
    if isinstance(value, (list, tuple)):
        items = [scrub(item) for item in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def one_line(text: str, limit: int = 200) -> str:
    """A server's words for an error message: repaired, on one line, no control characters
    (a terminal would act on them), at most `limit` characters."""
    text = _CONTROL.sub(REPLACEMENT, " ".join(repair(str(text))[0].split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SurrogateJoiner:
    """Repairs a text that arrives in pieces: a high surrogate that ends one piece waits for
    the low half that may start the next."""

    def __init__(self) -> None:
        self.held = ""
        self.replaced = 0

    def feed(self, piece: str) -> str:
        """What of `held + piece` can be shown now."""
        text = self.held + piece
        self.held = ""
        if _HIGH.search(text):
            text, self.held = text[:-1], text[-1]
        text, replaced = repair(text)
        self.replaced += replaced
        return text

    def flush(self) -> str:
        """The end of the text: a half still waiting pairs with nothing."""
        if not self.held:
            return ""
        self.held = ""
        self.replaced += 1
        return REPLACEMENT


_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(bearer\s+)\S+"), r"\1***"),
    (re.compile(r"://([^/\s:@]*):[^/\s@]*@"), r"://\1:***@"),
    (re.compile(r"""(?i)((?:api[-_]?key|token|secret|password|authorization)["']?\s*[=:]\s*"""
                r"""["']?)[^\s"',;}]+"""), r"\1***"),
)


def describe(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` of an unexpected exception, fit for the log: one line, repaired,
    without what looks like a key."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return one_line(text, limit)
