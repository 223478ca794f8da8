"""apply_patch: add, update, move and delete several files in one call, all or nothing.

The format is codex's (`*** Begin Patch` ... `*** End Patch`). Every new file content is
computed in memory before anything is written; if a write then fails, what was already
written is put back. Hunks are found by their context and `-` lines, first exactly, then
ignoring trailing whitespace, then ignoring leading and trailing whitespace; each hunk is
looked for after the previous one, so hunks go in file order. Lines a hunk keeps (context)
stay as they are in the file; added lines take the file's line ending. Whether the file ends
with a newline is kept (the format cannot say), and so is a UTF-8 byte order mark.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fased.tools.base import ToolContext, ToolError, ToolResult, ToolSpec, schema
from fased.tools.fileio import (
    TextFile,
    atomic_write,
    checked,
    encoded,
    make_parents,
    regular_file,
    remove_dirs,
)

BEGIN, END = "*** Begin Patch", "*** End Patch"
ADD, DELETE, UPDATE, MOVE = "*** Add File:", "*** Delete File:", "*** Update File:", "*** Move to:"
END_OF_FILE = "*** End of File"
# a unified diff's "@@ -3,7 +3,8 @@ def f():" header: the numbers mean nothing here
_UNIFIED = re.compile(r"@@ -[0-9]+(?:,[0-9]+)? \+[0-9]+(?:,[0-9]+)? @@ ?")


@dataclass
class Hunk:
    """One `@@` section: an optional line to find first, then (" "|"-"|"+", text) lines."""

    header: str | None
    line: int  # in the patch, for messages
    lines: list[tuple[str, str]] = field(default_factory=list)
    at_end: bool = False

    def old(self) -> list[str]:
        return [text for kind, text in self.lines if kind != "+"]

    def first(self) -> str:
        old = self.old()
        return old[0] if old else self.lines[0][1]


@dataclass
class FileChange:
    kind: str  # "add", "delete" or "update"
    path: str
    move_to: str | None = None
    content: list[str] = field(default_factory=list)  # added file's lines
    hunks: list[Hunk] = field(default_factory=list)


def parse(text: str) -> list[FileChange]:
    """The file changes of a patch, or a ToolError naming the line that is wrong."""
    lines = text.replace("\r\n", "\n").strip().split("\n")
    if lines[0].strip() != BEGIN:
        raise ToolError(f"the patch must start with the line '{BEGIN}'")
    if len(lines) < 2 or lines[-1].strip() != END:
        raise ToolError(f"the patch must end with the line '{END}'")
    body = lines[1:-1]
    changes: list[FileChange] = []
    i = 0
    while i < len(body):
        line = body[i].strip()
        number = i + 2
        i += 1
        if not line:
            continue
        if line.startswith(ADD):
            change = FileChange("add", _path(line, ADD, number))
            while i < len(body) and body[i].startswith("+"):
                change.content.append(body[i][1:])
                i += 1
        elif line.startswith(DELETE):
            change = FileChange("delete", _path(line, DELETE, number))
        elif line.startswith(UPDATE):
            change = FileChange("update", _path(line, UPDATE, number))
            if i < len(body) and body[i].strip().startswith(MOVE):
                change.move_to = _path(body[i].strip(), MOVE, i + 2)
                i += 1
            i = _hunks(body, i, change)
        else:
            hint = (" (every line of an added file starts with '+')"
                    if changes and changes[-1].kind == "add" else "")
            raise ToolError(f"patch line {number}: expected '{ADD} PATH', '{UPDATE} PATH' or "
                            f"'{DELETE} PATH', got {body[i - 1]!r}{hint}")
        changes.append(change)
    if not changes:
        raise ToolError("the patch changes no files")
    return changes


def _path(line: str, marker: str, number: int) -> str:
    path = line[len(marker):].strip()
    if not path:
        raise ToolError(f"patch line {number}: '{marker}' needs a path")
    return path


def _hunks(body: list[str], i: int, change: FileChange) -> int:
    """Read an Update File's hunks from body[i]; the index of the line after them."""
    hunk: Hunk | None = None
    while i < len(body):
        raw = body[i]
        number = i + 2
        if raw.strip() == END_OF_FILE and hunk is not None and hunk.lines:
            hunk.at_end = True
            hunk = None
            i += 1
            continue
        if raw.startswith("***"):
            break
        i += 1
        if raw.startswith("@@"):
            _check_not_empty(hunk, change)
            unified = _UNIFIED.match(raw)
            header = raw[unified.end():] if unified else raw[2:].removeprefix(" ")
            hunk = Hunk(header if header.strip() else None, number)
            change.hunks.append(hunk)
            continue
        if hunk is None:
            if not raw.strip():
                continue  # blank lines between hunks
            if change.hunks:
                raise ToolError(f"patch line {number}: in {change.path}, a hunk after "
                                f"'{END_OF_FILE}' must start with '@@'")
            hunk = Hunk(None, number)
            change.hunks.append(hunk)
        if not raw:
            hunk.lines.append((" ", ""))  # an empty context line, its space lost
        elif raw[0] in " +-":
            hunk.lines.append((raw[0], raw[1:]))
        else:
            raise ToolError(f"patch line {number}: in {change.path}, hunk "
                            f"{len(change.hunks)}: {raw!r} must start with ' ' (context), "
                            "'-' (remove) or '+' (add)")
    _check_not_empty(hunk, change)
    if not change.hunks and not change.move_to:
        raise ToolError(f"{UPDATE} {change.path} has no hunks")
    return i


def _check_not_empty(hunk: Hunk | None, change: FileChange) -> None:
    if hunk is not None and not hunk.lines:
        raise ToolError(f"patch line {hunk.line}: in {change.path}, hunk "
                        f"{len(change.hunks)} has no lines")


# --- applying hunks to a text -------------------------------------------------------------

def apply_hunks(doc: TextFile, hunks: list[Hunk], name: str) -> str:
    """The new text of `doc` (without BOM) after `hunks`, or a ToolError naming the hunk."""
    text = doc.text
    ends_with_newline = text == "" or text.endswith("\n")
    lines = [(ln[:-1], "\r\n") if ln.endswith("\r") else (ln, "\n")
             for ln in text.split("\n")]
    if ends_with_newline:
        lines.pop()
    else:  # the last line has no newline of its own: if lines follow it, it gets the file's
        lines[-1] = (lines[-1][0], doc.newline)
    contents = [content for content, _ in lines]
    edits: list[tuple[int, int, Hunk]] = []  # (start, lines replaced, hunk)
    at = 0
    for number, hunk in enumerate(hunks, 1):
        start, hunk_lines = _locate(contents, hunk, at, name, number)
        used = sum(kind != "+" for kind, _ in hunk_lines)
        edits.append((start, used, Hunk(hunk.header, hunk.line, hunk_lines)))
        if used or hunk.header is not None:  # an addition at the end does not move on
            at = start + used
    out: list[tuple[str, str]] = []
    done = 0
    for start, used, hunk in sorted(edits, key=lambda e: e[0]):
        out.extend(lines[done:start])
        k = start
        for kind, added in hunk.lines:
            if kind == "+":
                out.append((added, doc.newline))
            else:
                if kind == " ":
                    out.append(lines[k])  # the file's own line: its whitespace, its ending
                k += 1
        done = start + used
    out.extend(lines[done:])
    new = "".join(content + end for content, end in out)
    if not ends_with_newline and out:
        new = new.removesuffix(out[-1][1])
    return new


def _locate(contents: list[str], hunk: Hunk, at: int, name: str,
            number: int) -> tuple[int, list[tuple[str, str]]]:
    """Where `hunk` applies (at or after line index `at`), and its lines as applied."""
    where = f"{name}, hunk {number} (patch line {hunk.line})"
    if hunk.header is not None:
        found = _seek(contents, [hunk.header], at, at_end=False)
        if found is None:
            raise ToolError(f"{where}: its '@@ {hunk.header.strip()}' line was not found"
                            + _order_hint(contents, [hunk.header], at))
        at = found + 1
    lines = hunk.lines
    old = [text for kind, text in lines if kind != "+"]
    if not old:  # only additions: after the @@ line, or at the end of the file
        return (at if hunk.header is not None and not hunk.at_end else len(contents)), lines
    found = _seek(contents, old, at, hunk.at_end)
    while found is None and lines and lines[-1] == (" ", "") and len(old) > 1:
        # a trailing empty context line often stands for the file's last newline
        lines, old = lines[:-1], old[:-1]
        found = _seek(contents, old, at, hunk.at_end)
    if found is None:
        end = " at the end of the file" if hunk.at_end else ""
        raise ToolError(f"{where}, starting {hunk.first()!r}: its context and '-' lines were "
                        f"not found{end}" + _order_hint(contents, old, at)
                        + ". Read the file and copy those lines exactly.")
    return found, lines


def _seek(contents: list[str], pattern: list[str], at: int, at_end: bool) -> int | None:
    """The first index from `at` where `pattern` matches: exactly, else ignoring trailing
    whitespace, else ignoring whitespace at both ends. `at_end`: only at the end."""
    last = len(contents) - len(pattern)
    if last < at:
        return None
    starts = [last] if at_end else range(at, last + 1)
    for norm in (lambda s: s, str.rstrip, str.strip):
        wanted = [norm(p) for p in pattern]
        for i in starts:
            if all(norm(contents[i + k]) == w for k, w in enumerate(wanted)):
                return i
    return None


def _order_hint(contents: list[str], pattern: list[str], at: int) -> str:
    if at and _seek(contents, pattern, 0, at_end=False) is not None:
        return " after the previous hunk (hunks must be in file order)"
    return ""


# --- planning and committing --------------------------------------------------------------

@dataclass
class Before:
    """A path as it was, to put back: its bytes and mode, a symlink's target, or absent."""

    data: bytes | None = None
    mode: int | None = None
    link: str | None = None


class Plan:
    """The content every touched path will have (None: deleted), in the order to write."""

    def __init__(self) -> None:
        self.after: dict[Path, tuple[bytes | None, int | None]] = {}
        self.before: dict[Path, Before] = {}

    def current(self, path: Path, name: str) -> tuple[bytes, int | None] | None:
        """The bytes and mode `path` has at this point of the patch; None if absent."""
        if path in self.after:
            data, mode = self.after[path]
            return None if data is None else (data, mode)
        if path in self.before:
            b = self.before[path]
            return None if b.data is None and b.link is None else (b.data or b"", b.mode)
        if os.path.islink(path):  # a Delete entry: the link itself goes
            self.before[path] = Before(link=os.readlink(path))
            return b"", None
        if not os.path.lexists(path):
            self.before[path] = Before()
            return None
        data, mode = regular_file(path, name)
        self.before[path] = Before(data, mode)
        return data, mode

    def set(self, path: Path, data: bytes | None, mode: int | None) -> None:
        self.after.pop(path, None)  # keep the order of the last change
        self.after[path] = (data, mode)


def _entry(ctx: ToolContext, path: str) -> Path:
    """What deleting `path` removes: a symlink itself, else the file it is."""
    real = ctx.resolve(path, write=True)
    parent, base = os.path.split(path)
    if base in ("", ".", ".."):
        return real
    entry = ctx.resolve(parent or ".", write=True) / base
    return entry if os.path.islink(entry) else real


def plan(changes: list[FileChange], ctx: ToolContext) -> tuple[Plan, list[str], int]:
    """Every path's new content, the summary lines, and the number of hunks."""
    p = Plan()
    summary = []
    hunks = 0
    for change in changes:
        real = ctx.resolve(change.path, write=True)
        name = ctx.display(real)
        if change.kind == "add":
            if p.current(real, name) is not None:
                raise ToolError(f"{ADD} {change.path}: the file already exists; use "
                                f"'{UPDATE}' to change it")
            body = "".join(line + "\n" for line in change.content)
            p.set(real, encoded(body, f"the content of {change.path}"), None)
            summary.append(f"A {name}")
            continue
        entry = _entry(ctx, change.path)
        state = p.current(entry, name)
        if state is not None and change.kind == "delete":
            p.set(entry, None, None)
            summary.append(f"D {name}")
            continue
        if entry != real and state is not None:  # a symlink: its target is what changes
            state = p.current(real, name)
        if state is None:
            raise ToolError(f"{change.kind.capitalize()} File: {change.path} does not exist")
        data, mode = state
        doc = TextFile.parse(data, name)
        new = doc.encode(apply_hunks(doc, change.hunks, name))
        hunks += len(change.hunks)
        target = real
        if change.move_to:
            target = ctx.resolve(change.move_to, write=True)
            if target != real and p.current(target, ctx.display(target)) is not None:
                raise ToolError(f"{MOVE} {change.move_to}: the file already exists")
            if target != real:
                p.set(entry, None, None)
        p.set(target, new, mode)
        moved = f" -> {ctx.display(target)}" if target != real else ""
        count = len(change.hunks)
        summary.append(f"M {name}{moved} ({count} hunk{'' if count == 1 else 's'})")
    return p, summary, hunks


def commit(p: Plan, ctx: ToolContext) -> None:
    """Write the plan; on a failure put back what was written, then raise a ToolError."""
    done: list[Path] = []
    dirs: list[Path] = []
    for path, (data, mode) in p.after.items():
        try:
            if data is None:
                os.unlink(path)
            else:
                dirs.extend(make_parents(path))
                atomic_write(path, data, mode)
        except OSError as exc:
            left = _restore(p, done, dirs, ctx)
            why = f"cannot write {ctx.display(path)}: {exc.strerror or exc}"
            if left:
                raise ToolError(f"apply_patch failed ({why}) and could not put back "
                                f"{', '.join(left)}: check them") from None
            raise ToolError(f"apply_patch changed nothing: {why}") from None
        done.append(path)


def _restore(p: Plan, done: list[Path], dirs: list[Path], ctx: ToolContext) -> list[str]:
    """Undo the writes in `done`; the paths that could not be put back."""
    left = []
    for path in reversed(done):
        before = p.before[path]
        try:
            if (before.link is not None or before.data is None) and os.path.lexists(path):
                os.unlink(path)
            if before.link is not None:
                os.symlink(before.link, path)
            elif before.data is not None:
                atomic_write(path, before.data, before.mode)
        except OSError:
            left.append(ctx.display(path))
    remove_dirs(dirs)
    return left


PATCH_PARAMS = schema({
    "input": {"type": "string", "description": "The whole patch, from '*** Begin Patch' to "
              "'*** End Patch'."},
}, ["input"])


def apply_patch(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Apply a patch to the workspace: every change or none."""
    checked(args, PATCH_PARAMS)
    try:
        changes = parse(args["input"])
        p, summary, hunks = plan(changes, ctx)
    except ToolError as exc:
        raise ToolError(f"apply_patch changed nothing: {exc}") from None
    commit(p, ctx)
    files = [{"path": ctx.display(path), "bytes": None if data is None else len(data),
              "deleted": data is None} for path, (data, _) in p.after.items()]
    return ToolResult("Patch applied:\n" + "\n".join(summary),
                      data={"files": files, "hunks": hunks, "changes": len(changes)})


TOOLS = (
    ToolSpec(
        name="apply_patch",
        description=(
            "Change several files in one call, all or nothing. Format:\n"
            f"{BEGIN}\n{ADD} path/new.txt\n+its first line\n"
            f"{UPDATE} path/old.txt\n{MOVE} path/renamed.txt   (optional: rename too)\n"
            "@@ a line just above the change, e.g. def f():   (optional)\n"
            " context line (unchanged, starts with a space)\n-removed line\n+added line\n"
            f"{DELETE} path/gone.txt\n{END}\n"
            "Give about 3 context lines before and after each change; hunks of a file go in "
            f"file order; end a hunk that must match the end of the file with '{END_OF_FILE}'."
            " Add File fails if the file exists. If any hunk does not match, nothing is "
            "changed and the error names the hunk."),
        parameters=PATCH_PARAMS, group="fs", run=apply_patch),
)
