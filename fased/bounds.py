"""The documented limits on everything fased reads, and the validators that enforce them.

Every number, duration, time, URL, name, message and file a user hands to fased passes
through here (times and durations through fased.timeparse, which uses these bounds), so a
value past a limit is one clear UsageError and never an OverflowError three calls later.
The limits are far above what real use needs; README "Configuration" lists them.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

from fased.errors import StateError, UsageError

KIB = 1024
MIB = 1024 * KIB

MESSAGE_BYTES = 8 * MIB  # one chat or task message (UTF-8)
CONFIG_FILE_BYTES = 1 * MIB  # fased.json, `config validate FILE`, credentials.json
CONFIG_DEPTH = 32  # nesting of objects and arrays in fased.json (it needs about 7)
CONFIG_STRING_CHARS = 100_000  # any one string (or key) in fased.json
SECRET_BYTES = 64 * KIB  # an API key read by `auth --stdin`
NAME_CHARS = 100  # agent, session and task names, aliases
TYPED_CHARS = 200  # a typed number, duration or time
URL_CHARS = 2048
HEADER_NAME_CHARS = 256
HEADER_VALUE_CHARS = 8 * KIB
ENV_NAME_CHARS = 255  # an environment variable name (`--env VAR`, `--token-env VAR`)

MIN_DURATION_SECONDS = 1
MAX_DURATION_SECONDS = 100 * 366 * 86400  # 100 years
# Any typed time and FASED_NOW lie in these years, so that now +- any allowed duration stays
# far inside datetime's range (years 1..9999).
MIN_YEAR, MAX_YEAR = 1970, 9000
EARLIEST = datetime(MIN_YEAR, 1, 1, tzinfo=UTC)
LATEST = datetime(MAX_YEAR, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

LEASE_SECONDS = (1, 86_400)  # `run --lease`
POLL_SECONDS = (0.05, 3_600)  # `run --poll`
LONG_POLL_SECONDS = (0, 50)  # `channel poll --timeout` (Telegram holds a getUpdates <= 50 s)
TIMEOUT_SECONDS = (0.01, 3_600)  # `models status --timeout`
MAX_COUNT = 1_000_000  # `-n`, `--max-turns`, `--position`
MAX_SEQ = 2**63 - 1  # what SQLite stores

# Terminal control characters: C0 (tab and newline are kept in multi-line text), DEL, C1,
# the bidi embeddings, overrides and isolates, and lone surrogates (undecodable argv bytes).
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# Pattern texts, not compiled objects: re compiles (and caches) each on first use, so
# importing this module, which every command does, costs no regex compilation.
# U+2028 and U+2029 are escaped in multi-line text too: no terminal breaks a line there, and
# a line-based reader (JSON in JavaScript, a log viewer) may.
_CONTROL_LINE = f"[\x00-\x1f\x7f-\x9f{_BIDI}\u2028\u2029\ud800-\udfff]"
_CONTROL_TEXT = f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}\u2028\u2029\ud800-\udfff]"
_FLOAT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_INTEGER = r"[+-]?[0-9]+"
_HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# what an HTTP header value cannot carry: past Latin-1, and C0 (tab and newline too), DEL, C1
_NOT_IN_HEADER = "[^\x20-\x7e\xa0-\xff]"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ZONE = r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*"


class TooLargeError(UsageError):
    """Input past its size limit (a file, a message, a string)."""


def storable(text: str) -> str:
    """`text` as UTF-8 stores (SQLite, JSON) can hold it: a file name that is not UTF-8
    (its bytes arrive as lone surrogates) with those bytes escaped (`caf\\xe9`)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_within(path: str, root: str) -> bool:
    """Whether the path `path` is `root` or under it (both as text, resolved already)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


INT64_MAX = 2**63 - 1


def int64(n: int) -> int:
    """`n` held to 64 bits, what SQLite, orjson and array("q") take: a file's mtime in ns
    past 2262 (a bad clock, a hostile tar) must not break what stores it."""
    return max(-INT64_MAX - 1, min(n, INT64_MAX))


# -- printing ---------------------------------------------------------------------------------

def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, multiline: bool = False) -> str:
    """`text` with terminal control characters escaped (`\\x1b`, `\\u202e`), for people;
    `multiline` keeps newlines and tabs."""
    return re.sub(_CONTROL_TEXT if multiline else _CONTROL_LINE, _escape, text)


def shown_on_stdout(text: str) -> str:
    """A reply as stdout gets it: its own bytes for a pipe or a file (data), and with
    control characters escaped on a terminal, where a model's reply (fed a hostile page or
    message) could set the title, clear the screen or write the clipboard (OSC 52)."""
    stream = sys.stdout
    try:
        tty = stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        tty = False
    return printable(text, multiline=True) if tty else text


LINE_MAX = 1000  # characters of a line fased prints for people about an error


def clip_line(line: str, limit: int = LINE_MAX) -> str:
    """A line for people at most `limit` characters long: a longer one (an error quoting
    100,000 characters someone typed) keeps its start and its end, and says how much of
    the middle it left out."""
    if len(line) <= limit:
        return line
    room = limit - 60  # for the marker
    head, tail = room * 2 // 3, room - room * 2 // 3
    return (f"{line[:head]} … ({len(line) - head - tail:,} characters left out) … "
            f"{line[-tail:]}")


def clip_lines(text: str, limit: int = LINE_MAX) -> str:
    """clip_line for every line of `text`."""
    return "\n".join(clip_line(line, limit) for line in text.split("\n"))


def has_control(text: str) -> bool:
    """True when `text` holds a character printable() would escape (newlines included)."""
    return re.search(_CONTROL_LINE, text) is not None


# -- numbers ----------------------------------------------------------------------------------

def _limit(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_number(text: str, *, low: float, high: float, integer: bool = False,
                 what: str | None = None, unit: str = "") -> int | float:
    """A decimal number typed by a user, within [low, high]; NaN, infinities, hex and
    underscores are refused. `what` prefixes the message (click adds the option itself)."""
    value = str(text).strip()
    shown = value[:40] + ("…" if len(value) > 40 else "")
    prefix = f"{what}: " if what else ""
    units = f" {unit}" if unit else ""
    pattern = _INTEGER if integer else _FLOAT
    if len(value) > TYPED_CHARS or not re.fullmatch(pattern, value):
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"{prefix}{shown!r} is not {kind}",
                         hint=f"give {kind} from {_limit(low)} to {_limit(high)}{units}")
    number: int | float = int(value) if integer else float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise UsageError(f"{prefix}{shown} is not in the range "
                         f"{_limit(low)}<=x<={_limit(high)}" + (f" ({unit})" if unit else ""))
    return number


def parse_count(text: str, *, low: int = 0, high: int = MAX_COUNT,
                what: str | None = None) -> int:
    """A whole number of things, within [low, high]."""
    return int(parse_number(text, low=low, high=high, integer=True, what=what))


def parse_seq(text: str) -> int:
    """An event seq (what `replay --since 120` takes)."""
    return parse_count(text, low=0, high=MAX_SEQ, what="a seq")


def check_seconds(seconds: float, what: str = "the duration") -> float:
    """A duration in seconds within MIN_DURATION_SECONDS..MAX_DURATION_SECONDS."""
    if not math.isfinite(seconds) or seconds < MIN_DURATION_SECONDS:
        raise UsageError(f"{what} must be at least {MIN_DURATION_SECONDS} second",
                         hint="for example 30s, 15m, 1h, 2d")
    if seconds > MAX_DURATION_SECONDS:
        raise UsageError(f"{what} must be at most 100 years",
                         hint="for example 30s, 15m, 1h, 2d, 52w")
    return seconds


def check_time(when: datetime, what: str = "the time") -> datetime:
    """An aware time within the years MIN_YEAR..MAX_YEAR, as UTC."""
    try:
        utc = when.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise UsageError(f"{what} must lie in the years {MIN_YEAR} to {MAX_YEAR}")
    return utc


# -- text -------------------------------------------------------------------------------------

def check_message(text: str, what: str = "the message") -> str:
    """A chat or task message: at most MESSAGE_BYTES of UTF-8 (control characters are fine:
    a piped file may hold colour codes; they are escaped when shown)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MESSAGE_BYTES:
        raise TooLargeError(f"{what} is {size:,} bytes; the limit is {MESSAGE_BYTES // MIB} MiB",
                            hint="send a smaller part, or point the agent at a file")
    return text


def check_name(text: str, what: str = "the name", limit: int = NAME_CHARS) -> str:
    """A name shown in tables: 1..limit characters with no control characters (stripped)."""
    value = text.strip()
    if not value or len(value) > limit:
        raise UsageError(f"{what} needs 1-{limit} characters, got {len(value)}")
    if has_control(value):
        raise UsageError(f"{what} {value!r} holds a control character",
                         hint="names are one line of printable text")
    return value


def check_path_text(text: str, what: str = "the path",
                    hint: str = "rename it, or give a link to it with a plain name") -> str:
    """A path fased keeps and prints (a workspace, a model file): one line of printable
    text. A newline in it would print as a line fased never wrote."""
    if has_control(text):
        raise UsageError(f"{what} {text!r} holds a control character", hint=hint)
    return text


def check_kept_path(text: str, what: str = "the path",
                    hint: str = "rename it, or give a link to it with a plain name") -> str:
    """A path fased keeps: not blank, and one line of printable text both as typed and as
    kept (absolute: the working directory's name is in it then). Returns `text`."""
    if not text.strip():
        raise UsageError(f"{what} is empty" if not text else f"{what} {text!r} is only spaces",
                         hint="give a folder or file name")
    check_path_text(text, what, hint)
    check_path_text(os.path.abspath(os.path.expanduser(text)), what, hint)
    return text


def check_utf8(text: str) -> str:
    """`text`, when UTF-8 can hold it. Argument bytes that are not UTF-8 arrive as lone
    surrogates; encoding them raises the UnicodeEncodeError that commands/failures words as
    `'a\\x85b' is not UTF-8 text` (exit 2). A validator calls this first, so that its own
    vaguer message ("invalid provider id 'a\\udc85b'") never hides the real cause."""
    text.encode("utf-8")
    return text


def header_unsafe(value: str) -> str | None:
    """Why `value` cannot go into an HTTP header ("U+2019 at position 7"), or None. Header
    values travel as Latin-1, and a control character (tab and newline too) would end or
    split the header; the reason names the character, never the value (it may be a key)."""
    found = re.search(_NOT_IN_HEADER, value)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} at position {found.start() + 1}"


def check_header(name: str, value: str) -> tuple[str, str]:
    """An HTTP header a provider sends: a token name and a value an HTTP header can carry
    (header_unsafe), not empty."""
    name = check_utf8(name).strip()
    if len(name) > HEADER_NAME_CHARS or not re.fullmatch(_HEADER_NAME, name):
        raise UsageError(f"invalid header name {name[:60]!r}",
                         hint="letters, digits and - (e.g. X-Title)")
    check_utf8(value)
    if not value:
        raise UsageError(f"header {name} has no value",
                         hint=f"give one (-H {name}=VALUE), or stop sending it: "
                         f"--remove-header {name}")
    if len(value) > HEADER_VALUE_CHARS:
        raise UsageError(f"invalid value for header {name}: longer than {HEADER_VALUE_CHARS} "
                         "characters")
    why = header_unsafe(value)
    if why is not None:
        raise UsageError(f"invalid value for header {name}: it holds a character an HTTP "
                         f"header cannot carry ({why})",
                         hint="one line of Latin-1 text: no tabs or other control characters")
    return name, value


def check_env_name(name: str, what: str = "environment variable name") -> str:
    """An environment variable name fased records and reads later (`--env VAR`):
    [A-Za-z_][A-Za-z0-9_]*, at most ENV_NAME_CHARS."""
    check_utf8(name)
    if len(name) > ENV_NAME_CHARS:
        raise UsageError(f"the {what} is {len(name):,} characters; the limit is "
                         f"{ENV_NAME_CHARS}")
    if not re.fullmatch(_ENV_NAME, name):
        raise UsageError(f"invalid {what} {name!r}",
                         hint="letters, digits and _, not starting with a digit")
    return name


def check_zone_name(name: str) -> str:
    """The shape of an IANA zone name, before zoneinfo looks it up on disk."""
    if len(name) > 64 or not re.fullmatch(_ZONE, name):
        raise UsageError(f"unknown time zone {name[:64]!r}",
                         hint="use an IANA name such as Europe/Berlin")
    return name


# -- URLs -------------------------------------------------------------------------------------

def parse_plain_url(text: str, what: str = "URL") -> str:
    """parse_url, for a URL fased records as it is (the Bot API base): one with credentials
    (a user:password@, a query, a fragment) is refused, as they would be in the log."""
    from urllib.parse import urlsplit

    value = parse_url(text, what)
    if "@" in urlsplit(value).netloc or "?" in value or "#" in value:
        raise UsageError(f"{what} must not carry credentials (a user:password@, a query or a "
                         "fragment): they would be recorded in the log",
                         hint="give the URL alone; a bot's token goes in with fased channel add")
    return value


def parse_url(text: str, what: str = "URL") -> str:
    """An http(s) URL with a host and a valid port, stripped; one line, no spaces."""
    from urllib.parse import urlsplit

    from fased.redact import mask_url

    value = text.strip()
    hint = "use http:// or https:// with a host, e.g. http://127.0.0.1:8000/v1"
    # never print a URL's credentials, not even in an error about the URL
    masked = mask_url(value)
    shown = masked[:200] + ("…" if len(masked) > 200 else "")
    if len(value) > URL_CHARS:
        raise UsageError(f"invalid {what}: longer than {URL_CHARS} characters", hint=hint)
    if has_control(value) or any(c.isspace() for c in value):
        raise UsageError(f"invalid {what} {shown!r}: it holds spaces or control characters",
                         hint=hint)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise UsageError(f"invalid {what} {shown!r}", hint=hint)
    authority = rest.partition("?")[0].partition("#")[0]
    if "@" in authority.partition("/")[2] and ":" in authority.partition("/")[0]:
        raise UsageError(f"{what} {shown} has an '@' after its host",
                         hint="write a '/' in a user name or password as %2F")
    try:
        parts = urlsplit(value)
        port = parts.port
        host = parts.hostname
    except ValueError:  # `http://[::1`, `http://h:99999`, `http://h:abc`
        why = ("its [IPv6] host is not closed" if "[" in parts_or_none(value) else
               "its port is not a number from 1 to 65535")
        raise UsageError(f"invalid {what} {shown!r}: {why}", hint=hint) from None
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"invalid {what} {shown!r}", hint=hint)
    if port == 0:
        raise UsageError(f"invalid {what} {shown!r}: port 0", hint=hint)
    if not parts.netloc.split("@")[-1].startswith("["):
        try:
            host.encode("idna")
        except UnicodeError:
            raise UsageError(f"invalid {what} {shown!r}: bad host name {host!r}",
                             hint=hint) from None
    return value


def parts_or_none(value: str) -> str:
    """The authority part of a URL, as text, without parsing that can fail."""
    return value.partition("://")[2].partition("/")[0]


# -- files ------------------------------------------------------------------------------------

class NotRegularFile(OSError):
    """A FIFO, device or socket where a regular file was expected: `strerror` says which
    ("a FIFO, not a regular file"), `kind` is "a FIFO". A directory stays
    IsADirectoryError."""

    def __init__(self, path: object, kind: str):
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", str(path))
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a stat mode is, for people: "a FIFO", "a character device", ..."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def open_regular(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """A descriptor of the regular file at `path`, opened without waiting: O_NONBLOCK, as
    opening a FIFO for reading waits for a writer (and for writing, for a reader), forever.
    NotRegularFile for a FIFO, device or socket; IsADirectoryError for a directory; the
    OSError of the open otherwise."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:  # ENXIO: a FIFO opened to write that nobody reads
        if exc.errno != errno.ENXIO:
            raise
        raise NotRegularFile(path, file_kind(os.stat(path).st_mode)) from None
    try:
        kind = file_kind(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if kind != "a regular file":
        os.close(fd)
        if kind == "a directory":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        raise NotRegularFile(path, kind)
    return fd


def read_head(path: str | os.PathLike, limit: int) -> bytes:
    """The first `limit` bytes of a regular file (open_regular's errors), so a huge file
    or a link to /dev/zero costs one bounded read."""
    fd = open_regular(path)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(limit - size, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_bounded(path: Path, limit: int, what: str | None = None) -> bytes:
    """A regular file's bytes, reading at most limit+1 of them (read_head). FileNotFoundError
    when it is missing; StateError when it is a directory, FIFO, device or unreadable;
    TooLargeError past `limit` (so /dev/zero or a 200 MB edit costs one bounded read, never
    memory)."""
    name = what or str(path)
    try:
        data = read_head(path, limit + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise StateError(f"{name} is a directory, not a regular file") from None
    except NotRegularFile as exc:
        raise StateError(f"{name} is {exc.kind}, not a regular file") from None
    except OSError as exc:
        raise StateError(f"cannot read {name}: {exc.strerror}") from None
    if len(data) > limit:
        raise TooLargeError(f"{name} is larger than {format_bytes(limit)}, the limit")
    return data


def read_stream(stream, limit: int, what: str) -> bytes:
    """At most `limit` bytes from a binary stream (stdin); TooLargeError past it, having read
    only limit+1 bytes."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(limit + 1 - size, MIB))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise TooLargeError(f"{what} is larger than {format_bytes(limit)}, the limit",
                            hint="send a smaller part, or point the agent at a file")
    return b"".join(chunks)


def format_bytes(size: int) -> str:
    """`8 MiB`, `64 KiB`, `512 bytes`."""
    for unit, factor in (("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
