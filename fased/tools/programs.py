"""How the exec allowlist reads a program's words: the names it goes by, its options as
getopt reads them (a long one also abbreviated), and where its input comes from when that is
not a file (stdin, another descriptor). Shared by launchers.py and inline.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fased.tools.shellsplit import Word


def option_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


MULTICALL = frozenset({"busybox", "toybox", "coreutils"})
# Options whose whole name abbreviates a longer option above (`tar --checkpoint=10`).
_WHOLE_NAMES = frozenset({"--checkpoint"})
_VERSION = re.compile(r"[0-9.]+\Z")
# where a program comes from when it is not a file: stdin, or another file descriptor
STDIN, FD = "<stdin", "<fd"
_DESCRIPTOR = re.compile(r"(?:.*/)?(?:dev/(?:stdin|fd/([0-9]+))|proc/[^/]+/(?:task/[^/]+/)?fd/"
                         r"([0-9]+))")


@dataclass(frozen=True)
class Stdin:
    """What a command reads on stdin, as far as the line says: a file it names (`< prog.py`),
    a here-string's text, or neither (a pipe, a here-document, or what exec gives it: a
    background process's stdin is a pipe the model writes to)."""

    file: bool = False
    text: str | None = None


NO_STDIN = Stdin()  # a pipe, a here-document or nothing: no file, no text


def reads_descriptor(path: str) -> bool:
    """Whether `path` names an open file descriptor (`/dev/stdin`, `/dev/fd/3`,
    `/proc/self/fd/0`), which may be a pipe, rather than a file."""
    return descriptor(path) is not None


def descriptor(path: str) -> str | None:
    """STDIN for `-` and the names of descriptor 0, FD for another descriptor, else None."""
    if path == "-":
        return STDIN
    found = _DESCRIPTOR.fullmatch(os.path.normpath(path))
    if found is None:
        return None
    return STDIN if (found.group(1) or found.group(2) or "0") == "0" else FD


def names_of(name: str, program: str) -> frozenset[str]:
    """The names a program goes by (typed, found, real file), without version suffixes."""
    names = {os.path.basename(name)}
    if program.startswith("/"):
        names.add(os.path.basename(program))
        real = os.path.basename(os.path.realpath(program))
        if _VERSION.sub("", real) not in MULTICALL:
            names.add(real)
    return frozenset({_VERSION.sub("", n) or n for n in names})


def matched_option(value: str, options: tuple[str, ...]) -> str | None:
    """Which of `options` the word `value` gives: a `--long` one also abbreviated, a short
    one also in a cluster (`-xI`), any other (`-exec`) as written."""
    for option in options:
        if option.startswith("--"):
            given = long_option(value, (option,)) is not None
        else:
            given = value == option or value.startswith(option + "=") or (
                len(option) == 2
                and re.fullmatch(rf"-[A-Za-z0-9]*{re.escape(option[1])}.*", value) is not None)
        if given:
            return option
    return None


def long_option(value: str, options: Iterable[str]) -> str | None:
    """The long option of `options` that the word `value` (`--name`, `--name=...`) gives: its
    name, or any abbreviation of it, the way getopt_long reads one. An abbreviation of two
    options is refused there (nothing runs), so the first one listed is as good as any; a word
    that is the whole name of another option of the program (`--checkpoint`) is that one."""
    key = value.partition("=")[0]
    if len(key) < 3 or not key.startswith("--"):
        return None
    if key in options:
        return key
    if key in _WHOLE_NAMES:
        return None
    return next((option for option in options if option.startswith(key)), None)


def option_value(words: Iterator[Word], tail: str) -> str | None:
    """An option's value: the rest of its word, else the next word (None if it expands)."""
    if tail:
        return tail
    word = next(words, None)
    return None if word is None else word.value
