"""The file tools: read, write and edit. Every path goes through `ToolContext.resolve`.

`read` returns a text file's lines as they are, without line numbers, so that what the model
copies from it is exactly what `edit` matches (a numbered listing invites the numbers into
oldText); the line numbers it needs for `offset` are in the notice that ends a partial read.
Files are changed all at once (fased.tools.fileio.atomic_write).
"""

from __future__ import annotations

import codecs
import os
import stat
from bisect import bisect_left
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

from fased.tools.base import ToolContext, ToolError, ToolResult, ToolSpec, schema, shown
from fased.tools.fileio import (
    BOM,
    TextFile,
    atomic_write,
    checked,
    encoded,
    make_parents,
    os_errors,
    regular_file,
    remove_dirs,
)

MAX_LINES = 2000
MAX_BYTES = 50 * 1024
MAX_LINE_CHARS = 2000
MAX_ENTRIES = 500
SNIFF_BYTES = 8192

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"), (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"), (b"GIF89a", "GIF image"), (b"%PDF-", "PDF document"),
    (b"\x1f\x8b", "gzip data"), (b"PK\x03\x04", "zip archive (or docx, xlsx, jar, ...)"),
    (b"BZh", "bzip2 data"), (b"\xfd7zXZ\x00", "xz data"), (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"7z\xbc\xaf\x27\x1c", "7-zip archive"), (b"\x7fELF", "ELF executable"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"), (b"\x00asm", "WebAssembly module"),
    (b"SQLite format 3\x00", "SQLite database"), (b"OggS", "Ogg media"),
    (b"fLaC", "FLAC audio"), (b"ID3", "MP3 audio"), (b"\x1aE\xdf\xa3", "Matroska/WebM video"),
    (b"wOFF", "WOFF font"), (b"wOF2", "WOFF2 font"),
    (b"\xff\xfe", "UTF-16 text (read shows UTF-8 text only)"),
    (b"\xfe\xff", "UTF-16 text (read shows UTF-8 text only)"),
)


# --- read ---------------------------------------------------------------------------------

READ_PARAMS = schema({
    "path": {"type": "string", "description": "File or directory, relative to the workspace "
             "or absolute."},
    "offset": {"type": "integer", "minimum": 1,
               "description": "First line to show, counting from 1 (default 1)."},
    "limit": {"type": "integer", "minimum": 1,
              "description": f"How many lines to show (default and most: {MAX_LINES})."},
}, ["path"])


def read(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Show a text file's lines, describe a binary file, or list a directory."""
    checked(args, READ_PARAMS)
    path = ctx.resolve(args["path"])
    name = ctx.display(path)
    offset = int(args.get("offset", 1))
    limit = int(args["limit"]) if "limit" in args else None
    with os_errors(f"read {name}"):
        # O_NONBLOCK: opening a named pipe must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                return _listing(path, name)
            raise ToolError(f"{name} is not a regular file (a pipe, socket or device); "
                            "read opens files and directories")
        with open(fd, "rb", closefd=True) as f:
            head = f.read(SNIFF_BYTES)
            kind = binary_kind(head, complete=len(head) == st.st_size)
            if kind:
                return ToolResult(f"{name}: {kind}, {st.st_size:,} bytes (binary: not shown).",
                                  data={"path": name, "bytes": st.st_size, "binary": kind})
            f.seek(0)
            return _lines(f, name, st.st_size, offset, limit)


def binary_kind(head: bytes, *, complete: bool) -> str | None:
    """None when a file's first bytes are UTF-8 text without NUL bytes, else what the file
    seems to be (a text file may well start with "ID3" or "BZh")."""
    if b"\0" not in head:
        try:  # a character cut at the end of the sample is not an error
            codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
            return None
        except UnicodeDecodeError:
            pass
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar":
        return "tar archive"
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return {b"WEBP": "WebP image", b"WAVE": "WAV audio", b"AVI ": "AVI video"}[head[8:12]]
    if head[4:8] == b"ftyp":
        return "MP4/QuickTime media"
    return "binary data"


def _raw_lines(f: BinaryIO):
    """(start of the line, its length in bytes) for each line, without its newline; a long
    line is not held whole in memory."""
    keep = MAX_LINE_CHARS * 4 + 4
    while chunk := f.readline(keep):
        if chunk.endswith(b"\n"):
            yield chunk[:-1], len(chunk) - 1
            continue
        total = len(chunk)
        while more := f.readline(1 << 16):
            if more.endswith(b"\n"):
                total += len(more) - 1
                break
            total += len(more)
        yield chunk, total


def _decode(raw: bytes, size: int) -> tuple[str, bool]:
    """A line as text, cut at MAX_LINE_CHARS; (text, whether bytes had to be replaced)."""
    whole = size == len(raw)
    if whole and raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=whole)
        bad = False
    except UnicodeDecodeError:
        text, bad = raw.decode("utf-8", "replace"), True
    if len(text) > MAX_LINE_CHARS or not whole:
        text = (f"{text[:MAX_LINE_CHARS]} [... line cut: the first {MAX_LINE_CHARS} characters "
                f"of {size:,} bytes shown]")
    return text, bad


def _lines(f: BinaryIO, name: str, size: int, offset: int, limit: int | None) -> ToolResult:
    cap = min(limit or MAX_LINES, MAX_LINES)
    shown_lines: list[str] = []
    used = 0
    count = 0
    bad = False
    by_bytes = False
    for raw, length in _raw_lines(f):
        count += 1
        if count < offset:
            continue
        text, replaced = _decode(raw, length)
        if count == 1:
            text = text.removeprefix(BOM)
        cost = len(text.encode("utf-8")) + 1
        if used + cost > MAX_BYTES:
            by_bytes = True
            break
        shown_lines.append(text)
        used += cost
        bad = bad or replaced
        if len(shown_lines) == cap:
            break
    last = offset + len(shown_lines) - 1
    total = count + _count_lines(f)
    data = {"path": name, "bytes": size, "lines": total}
    if not shown_lines:
        if total == 0:
            return ToolResult(f"{name} is empty (0 bytes).", data=data)
        raise ToolError(f"offset {offset} is past the end of {name}, which has {total} lines")
    text = "\n".join(shown_lines)
    data.update({"from": offset, "to": last})
    if bad:
        text += ("\n\n[Some bytes are not UTF-8 and are shown as \ufffd: edit cannot match "
                 "those lines.]")
    if last < total:
        if by_bytes:
            why = f" ({MAX_BYTES // 1024} KB per call)"
        elif cap == MAX_LINES:
            why = f" ({MAX_LINES} lines per call)"
        else:
            why = ""
        text += (f"\n\n[Lines {offset}-{last} of {total} shown{why}. "
                 f"Use offset={last + 1} to continue.]")
        data["truncated"] = True
    return ToolResult(text, data=data)


def _count_lines(f: BinaryIO) -> int:
    """How many lines are left from the current position (a last line may lack its newline)."""
    count = 0
    last = b"\n"
    while block := f.read(1 << 20):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def _listing(path: Path, name: str) -> ToolResult:
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    names = []
    for entry in entries[:MAX_ENTRIES]:
        is_dir = False
        with suppress(OSError):
            is_dir = entry.is_dir()
        names.append(shown(entry.name) + ("/" if is_dir else ""))
    text = "\n".join(names) if names else "(empty directory)"
    if len(entries) > MAX_ENTRIES:
        text += f"\n\n[{MAX_ENTRIES} of {len(entries)} entries shown, sorted by name.]"
    return ToolResult(f"{name.rstrip('/')}/ ({_n(len(entries), 'entry', 'entries')}):\n{text}",
                      data={"path": name, "directory": True, "entries": len(entries)})


# --- write --------------------------------------------------------------------------------

WRITE_PARAMS = schema({
    "path": {"type": "string", "description": "File to create or replace, relative to the "
             "workspace or absolute. Missing parent directories are created."},
    "content": {"type": "string", "description": "The whole new content of the file."},
}, ["path", "content"])


def write(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Create or replace a file with the given content, all at once."""
    checked(args, WRITE_PARAMS)
    path = ctx.resolve(args["path"], write=True)
    name = ctx.display(path)
    data = encoded(args["content"], "content")
    mode = None
    with os_errors(f"write {name}"):
        if os.path.lexists(path):
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{name} is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise ToolError(f"{name} is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
        created = make_parents(path)
        try:
            atomic_write(path, data, mode)
        except BaseException:
            remove_dirs(created)
            raise
    how = "Created" if mode is None else "Replaced"
    return ToolResult(f"{how} {name} ({len(data):,} bytes).",
                      data={"path": name, "bytes": len(data), "created": mode is None})


# --- edit ---------------------------------------------------------------------------------

EDIT_PARAMS = schema({
    "path": {"type": "string", "description": "Existing text file, relative to the workspace "
             "or absolute."},
    "oldText": {"type": "string", "description": "Text to replace, copied exactly from the "
                "file (as read shows it, whitespace included); must occur exactly once."},
    "newText": {"type": "string", "description": "What replaces oldText."},
}, ["path", "oldText", "newText"])


def edit(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Replace the one occurrence of oldText in a file with newText."""
    checked(args, EDIT_PARAMS)
    old = args["oldText"].replace("\r\n", "\n")
    new = args["newText"].replace("\r\n", "\n")
    if not old:
        raise ToolError("oldText is empty: give the exact text to replace "
                        "(to write a whole file, use write)")
    if old == new:
        raise ToolError("oldText and newText are the same: nothing to change")
    path = ctx.resolve(args["path"], write=True)
    name = ctx.display(path)
    raw, mode = regular_file(path, name)
    doc = TextFile.parse(raw, name)
    # Match with LF endings (what read shows), then change only the matched span of the
    # original, so every other byte stays as it was, CRLF or not.
    lf = doc.text.replace("\r\n", "\n")
    start = lf.find(old)
    if start < 0:
        raise ToolError(f"oldText was not found in {name}. It must match the file exactly, "
                        "whitespace and indentation included: read the file again and copy "
                        "the text from it.")
    times = _occurrences(lf, old, start)
    if times > 1:
        more = "more than " if times > _CAP else ""
        raise ToolError(f"oldText occurs {more}{min(times, _CAP)} times in {name}; it must "
                        "occur exactly once. Add surrounding lines to oldText (and newText) "
                        "so that it matches one place only.")
    crlf = _crlf_positions(doc.text)
    begin = start + bisect_left(crlf, start)
    end = start + len(old) + bisect_left(crlf, start + len(old))
    text = doc.text[:begin] + new.replace("\n", doc.newline) + doc.text[end:]
    data = doc.encode(text)
    with os_errors(f"write {name}"):
        atomic_write(path, data, mode)
    line = lf.count("\n", 0, start) + 1
    removed, added = _line_count(old), _line_count(new)
    return ToolResult(
        f"Edited {name}: {_n(removed, 'line')} at line {line} replaced by {_n(added, 'line')}.",
        data={"path": name, "bytes": len(data), "line": line, "removedLines": removed,
              "addedLines": added})


_CAP = 100


def _occurrences(text: str, sub: str, first: int) -> int:
    """How many times `sub` occurs in `text`, overlaps included (counting stops past _CAP)."""
    count, at = 1, first
    while count <= _CAP and (at := text.find(sub, at + 1)) >= 0:
        count += 1
    return count


def _crlf_positions(text: str) -> list[int]:
    """Where each CRLF's newline falls in the text with CRLF turned into LF."""
    positions, at = [], text.find("\r\n")
    while at >= 0:
        positions.append(at - len(positions))
        at = text.find("\r\n", at + 2)
    return positions


def _line_count(text: str) -> int:
    return text.count("\n") + (not text.endswith("\n")) if text else 0


def _n(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


TOOLS = (
    ToolSpec(
        name="read",
        description=(
            "Read a text file: its lines exactly as they are, without line numbers, so text "
            "copied from it is what edit's oldText must match. At most "
            f"{MAX_LINES} lines or {MAX_BYTES // 1024} KB per call; a longer file ends with a "
            "notice giving the total line count and the offset to continue from. Lines longer "
            f"than {MAX_LINE_CHARS} characters are cut (marked). A binary file is described, "
            f"not shown; a directory is listed (up to {MAX_ENTRIES} entries, '/' after "
            "subdirectories)."),
        parameters=READ_PARAMS, group="fs", run=read, side_effects=False),
    ToolSpec(
        name="write",
        description=(
            "Create a file or replace its whole content (use edit to change part of it). "
            "Creates missing parent directories; a replaced file keeps its permissions."),
        parameters=WRITE_PARAMS, group="fs", run=write),
    ToolSpec(
        name="edit",
        description=(
            "Replace one exact piece of a text file: oldText must occur exactly once (else "
            "nothing changes and you are told how often it occurs; add context lines to make "
            "it unique). Copy oldText from read's output. The file's line endings (LF or "
            "CRLF) and byte order mark are kept."),
        parameters=EDIT_PARAMS, group="fs", run=edit),
)
