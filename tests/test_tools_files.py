"""The file tools read, write and edit, called as the loop calls them: `run(args, ctx)` over a
workspace inside a fake fased home inside a fake user home (the real default layout)."""

from __future__ import annotations

import errno
import gzip
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fased.tools import fileio, files, patch
from fased.tools.base import ToolContext, ToolError, ToolResult


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """~/.fased/workspace with credentials and a log beside it, and a directory outside."""
    user = Path(os.environ["HOME"])  # conftest points HOME at a temp dir
    home = user / ".fased"
    ws = home / "workspace"
    ws.mkdir(parents=True)
    (home / "credentials.json").write_text('{"openai": "sk-secret"}')
    (home / "log").mkdir()
    (home / "log" / "00000000000000000001.jsonl").write_text('{"seq": 1}\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside\n")
    (ws / "link_out").symlink_to(outside)  # a symlinked directory leading out
    (ws / "file_out").symlink_to(outside / "secret.txt")
    (ws / "dangling_out").symlink_to(outside / "nothing-yet.txt")
    return {"user": user, "home": home, "ws": ws, "outside": outside}


@pytest.fixture
def ctx(layout) -> ToolContext:
    return ToolContext(agent="main", session="s1", turn="t1", call_id="c1",
                       workspace=layout["ws"], home=layout["home"])


@pytest.fixture
def ws(layout) -> Path:
    return layout["ws"]


def run(tool, ctx: ToolContext, **args) -> ToolResult:
    result = tool(args, ctx)
    assert not result.is_error
    return result


def fails(tool, ctx: ToolContext, **args) -> str:
    with pytest.raises(ToolError) as info:
        tool(args, ctx)
    return str(info.value)


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under root (links not followed) with its content, to compare before/after."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


# --- read ---------------------------------------------------------------------------------

def test_read_shows_lines_exactly_without_numbers(ctx, ws):
    (ws / "a.py").write_text("def f():\n\treturn  1   \n\n# é ✓\n")
    result = run(files.read, ctx, path="a.py")
    assert result.text == "def f():\n\treturn  1   \n\n# é ✓"
    assert result.data == {"path": "a.py", "bytes": 33, "lines": 4, "from": 1, "to": 4}


def test_read_offset_and_limit_window_with_notice(ctx, ws):
    (ws / "ten.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    result = run(files.read, ctx, path="ten.txt", offset=3, limit=4)
    assert result.text == ("line 3\nline 4\nline 5\nline 6\n\n"
                           "[Lines 3-6 of 10 shown. Use offset=7 to continue.]")
    assert result.data["truncated"] is True
    tail = run(files.read, ctx, path="ten.txt", offset=9)
    assert tail.text == "line 9\nline 10"
    assert run(files.read, ctx, path="ten.txt", offset=10, limit=1).text == "line 10"


def test_read_stops_at_2000_lines_and_says_how_to_continue(ctx, ws):
    (ws / "big.txt").write_text("".join(f"{i}\n" for i in range(1, 2501)))
    first = run(files.read, ctx, path="big.txt")
    body, notice = first.text.split("\n\n")
    assert body.split("\n") == [str(i) for i in range(1, 2001)]
    assert notice == ("[Lines 1-2000 of 2500 shown (2000 lines per call). "
                      "Use offset=2001 to continue.]")
    assert run(files.read, ctx, path="big.txt", limit=5000).text == first.text
    rest = run(files.read, ctx, path="big.txt", offset=2001)
    assert rest.text.split("\n") == [str(i) for i in range(2001, 2501)]


def test_read_stops_at_50_kb(ctx, ws):
    lines = [f"{i:05d} " + "x" * 94 for i in range(1, 1001)]  # 101 bytes a line with \n
    (ws / "wide.txt").write_text("\n".join(lines) + "\n")
    result = run(files.read, ctx, path="wide.txt")
    body, notice = result.text.split("\n\n")
    shown = body.split("\n")
    assert shown == lines[:len(shown)]
    assert len(body.encode()) <= 50 * 1024 < len(body.encode()) + 2 * 101
    n = len(shown)
    assert notice == (f"[Lines 1-{n} of 1000 shown (50 KB per call). "
                      f"Use offset={n + 1} to continue.]")
    assert run(files.read, ctx, path="wide.txt", offset=n + 1).text.startswith(lines[n])


def test_read_cuts_long_lines_with_a_marker_and_keeps_the_rest(ctx, ws):
    (ws / "long.txt").write_text("short\n" + "é" * 5000 + "\nafter\n" + "z" * 3_000_000)
    result = run(files.read, ctx, path="long.txt")
    shown = result.text.split("\n")
    assert shown[0] == "short"
    assert shown[1] == "é" * 2000 + (" [... line cut: the first 2000 characters of "
                                     "10,000 bytes shown]")
    assert shown[2] == "after"
    assert shown[3].startswith("z" * 2000 + " [... line cut")
    assert result.data["lines"] == 4


@pytest.mark.parametrize(("args", "message"), [
    ({"offset": 0}, "arguments.offset: must be at least 1"),
    ({"limit": 0}, "arguments.limit: must be at least 1"),
    ({"limit": "5"}, "arguments.limit: expected integer, got string"),
    ({"offset": 12}, "offset 12 is past the end of t.txt, which has 3 lines"),
    ({"lines": 3}, "arguments.lines: unknown key"),
])
def test_read_bad_arguments(ctx, ws, args, message):
    (ws / "t.txt").write_text("a\nb\nc")
    assert fails(files.read, ctx, path="t.txt", **args) == message


def test_read_missing_file_and_empty_file(ctx, ws):
    assert fails(files.read, ctx, path="nope.txt") == (
        "cannot read nope.txt: No such file or directory")
    (ws / "empty").write_bytes(b"")
    assert run(files.read, ctx, path="empty").text == "empty is empty (0 bytes)."


def test_read_crlf_and_bom_show_as_plain_lines(ctx, ws):
    (ws / "w.txt").write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert run(files.read, ctx, path="w.txt").text == "one\ntwo"


@pytest.mark.parametrize(("content", "kind"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
    (gzip.compress(b"hello"), "gzip data"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG image"),
    (b"PK\x03\x04\x14\x00\x00\x00", "zip archive (or docx, xlsx, jar, ...)"),
    (b"text\x00with a NUL", "binary data"),
    (b"caf\xe9 latin-1", "binary data"),
    ("UTF-16 text".encode("utf-16"), "UTF-16 text (read shows UTF-8 text only)"),
])
def test_read_describes_binary_files(ctx, ws, content, kind):
    (ws / "blob").write_bytes(content)
    result = run(files.read, ctx, path="blob")
    assert result.text == f"blob: {kind}, {len(content):,} bytes (binary: not shown)."
    assert result.data == {"path": "blob", "bytes": len(content), "binary": kind}


def test_read_text_that_looks_like_magic_or_is_cut_mid_character_is_text(ctx, ws):
    (ws / "id3.txt").write_text("ID3 tags are at the start of MP3 files\n")
    assert run(files.read, ctx, path="id3.txt").text.startswith("ID3 tags")
    (ws / "cut.txt").write_text(("a" * 63 + "\n") * 127 + "b" * 63 + "é\nend\n")
    assert (ws / "cut.txt").read_bytes()[8191:8193] == "é".encode()  # straddles the sample
    assert run(files.read, ctx, path="cut.txt").text.endswith("é\nend")


def test_read_marks_bytes_that_are_not_utf8_beyond_the_sample(ctx, ws):
    (ws / "late.txt").write_bytes(b"ok\n" * 4000 + b"bad \xff byte\n")
    result = run(files.read, ctx, path="late.txt", offset=4001)
    assert result.text == ("bad \ufffd byte\n\n[Some bytes are not UTF-8 and are shown as "
                           "\ufffd: edit cannot match those lines.]")


def test_read_lists_a_directory_capped(ctx, ws):
    (ws / "d" / "sub").mkdir(parents=True)
    (ws / "d" / "b.txt").write_text("")
    (ws / "d" / ".hidden").write_text("")
    assert run(files.read, ctx, path="d").text == "d/ (3 entries):\n.hidden\nb.txt\nsub/"
    assert run(files.read, ctx, path="d/sub").text == "d/sub/ (0 entries):\n(empty directory)"
    many = ws / "many"
    many.mkdir()
    for i in range(510):
        (many / f"f{i:03d}").write_text("")
    result = run(files.read, ctx, path="many")
    lines = result.text.split("\n")
    assert lines[0] == "many/ (510 entries):"
    assert lines[1:501] == [f"f{i:03d}" for i in range(500)]
    assert lines[-1] == "[500 of 510 entries shown, sorted by name.]"
    assert result.data == {"path": "many", "directory": True, "entries": 510}


def test_read_lists_names_that_are_not_utf8_escaped(ctx, ws):
    (ws / "odd").mkdir()
    open(os.fsencode(ws / "odd") + b"/caf\xe9", "w").close()
    assert run(files.read, ctx, path="odd").text == "odd/ (1 entry):\ncaf\\xe9"


def test_read_refuses_a_named_pipe_without_hanging(ctx, ws):
    os.mkfifo(ws / "pipe")
    assert fails(files.read, ctx, path="pipe") == (
        "pipe is not a regular file (a pipe, socket or device); read opens files and "
        "directories")


def test_read_may_open_readable_roots_but_write_may_not(layout, ws):
    skills = layout["outside"] / "skills"
    skills.mkdir()
    (skills / "SKILL.md").write_text("# skill\n")
    ctx = ToolContext(agent="main", session="s", turn="t", call_id="c", workspace=ws,
                      home=layout["home"], readable=(skills,))
    assert run(files.read, ctx, path=str(skills / "SKILL.md")).text == "# skill"
    assert "outside the workspace" in fails(files.write, ctx, path=str(skills / "SKILL.md"),
                                            content="x")
    assert (skills / "SKILL.md").read_text() == "# skill\n"


# --- write --------------------------------------------------------------------------------

def test_write_creates_parents_and_says_so(ctx, ws):
    result = run(files.write, ctx, path="notes/2026/a.txt", content="héllo\r\n")
    assert result.text == "Created notes/2026/a.txt (8 bytes)."
    assert result.data == {"path": "notes/2026/a.txt", "bytes": 8, "created": True}
    assert (ws / "notes" / "2026" / "a.txt").read_bytes() == "héllo\r\n".encode()


def test_write_replaces_and_keeps_the_mode(ctx, ws):
    script = ws / "run.sh"
    script.write_text("old\n")
    script.chmod(0o751)
    result = run(files.write, ctx, path="run.sh", content="#!/bin/sh\necho new\n")
    assert result.text == "Replaced run.sh (19 bytes)."
    assert result.data["created"] is False
    assert script.read_text() == "#!/bin/sh\necho new\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o751


def test_write_new_file_gets_the_umask_mode(ctx, ws):
    old = os.umask(0o022)
    try:
        run(files.write, ctx, path="new.txt", content="x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((ws / "new.txt").stat().st_mode) == 0o644


def test_write_through_a_symlink_inside_the_workspace_writes_its_target(ctx, ws):
    (ws / "real.txt").write_text("old")
    (ws / "alias.txt").symlink_to("real.txt")
    run(files.write, ctx, path="alias.txt", content="new")
    assert (ws / "alias.txt").is_symlink()
    assert (ws / "real.txt").read_text() == "new"


def test_a_failing_write_leaves_the_old_file_and_no_debris(ctx, ws, monkeypatch):
    (ws / "keep.txt").write_text("precious\n")
    before = snapshot(ws)

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    assert fails(files.write, ctx, path="keep.txt", content="new") == (
        "cannot write keep.txt: No space left on device")
    assert fails(files.write, ctx, path="deep/er/new.txt", content="new") == (
        "cannot write deep/er/new.txt: No space left on device")
    assert snapshot(ws) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_write_into_a_read_only_directory_fails_cleanly(ctx, ws):
    (ws / "ro").mkdir()
    (ws / "ro" / "f.txt").write_text("old")
    (ws / "ro").chmod(0o500)
    try:
        assert fails(files.write, ctx, path="ro/f.txt", content="new") == (
            "cannot write ro/f.txt: Permission denied")
    finally:
        (ws / "ro").chmod(0o700)
    assert (ws / "ro" / "f.txt").read_text() == "old"


def test_write_refuses_directories_pipes_and_lone_surrogates(ctx, ws):
    (ws / "d").mkdir()
    assert fails(files.write, ctx, path="d", content="x") == "d is a directory"
    os.mkfifo(ws / "pipe")
    assert fails(files.write, ctx, path="pipe", content="x") == "pipe is not a regular file"
    assert fails(files.write, ctx, path="s.txt", content="half \ud800") == (
        "content must be valid Unicode (it has a lone surrogate)")
    assert not (ws / "s.txt").exists()
    assert fails(files.write, ctx, path="x.txt") == "arguments: missing required key 'content'"


# --- edit ---------------------------------------------------------------------------------

def test_edit_replaces_the_one_occurrence(ctx, ws):
    (ws / "m.py").write_text("a = 1\nb = 2\nc = 3\n")
    result = run(files.edit, ctx, path="m.py", oldText="b = 2\n", newText="b = 20\nbb = 4\n")
    assert (ws / "m.py").read_text() == "a = 1\nb = 20\nbb = 4\nc = 3\n"
    assert result.text == "Edited m.py: 1 line at line 2 replaced by 2 lines."
    assert result.data == {"path": "m.py", "bytes": 26, "line": 2, "removedLines": 1,
                           "addedLines": 2}


def test_edit_text_not_found_changes_nothing_and_suggests_reading(ctx, ws):
    (ws / "m.py").write_text("def f():\n    return 1\n")
    message = fails(files.edit, ctx, path="m.py", oldText="def f():\n  return 1",
                    newText="x")
    assert message == ("oldText was not found in m.py. It must match the file exactly, "
                       "whitespace and indentation included: read the file again and copy "
                       "the text from it.")
    assert (ws / "m.py").read_text() == "def f():\n    return 1\n"


@pytest.mark.parametrize(("content", "old", "times"), [
    ("x = 1\ny = 2\nx = 1\n", "x = 1", "2"),
    ("aaa", "aa", "2"),  # overlapping: which one is meant is just as unclear
    ("ab" * 300, "ab", "more than 100"),
])
def test_edit_ambiguous_text_says_how_often_it_occurs(ctx, ws, content, old, times):
    (ws / "m.txt").write_text(content)
    assert fails(files.edit, ctx, path="m.txt", oldText=old, newText="z") == (
        f"oldText occurs {times} times in m.txt; it must occur exactly once. Add "
        "surrounding lines to oldText (and newText) so that it matches one place only.")
    assert (ws / "m.txt").read_text() == content


def test_edit_refuses_empty_and_unchanged_text(ctx, ws):
    (ws / "m.txt").write_text("abc")
    assert fails(files.edit, ctx, path="m.txt", oldText="", newText="x") == (
        "oldText is empty: give the exact text to replace (to write a whole file, use write)")
    assert fails(files.edit, ctx, path="m.txt", oldText="b", newText="b") == (
        "oldText and newText are the same: nothing to change")


def test_edit_keeps_crlf_when_given_lf_text(ctx, ws):
    (ws / "w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    run(files.edit, ctx, path="w.txt", oldText="two\nthree", newText="2\n3\n4")
    assert (ws / "w.txt").read_bytes() == b"one\r\n2\r\n3\r\n4\r\n"
    run(files.edit, ctx, path="w.txt", oldText="2\r\n3", newText="II\r\nIII")  # CRLF too
    assert (ws / "w.txt").read_bytes() == b"one\r\nII\r\nIII\r\n4\r\n"


def test_edit_leaves_other_line_endings_of_a_mixed_file_alone(ctx, ws):
    (ws / "mixed.txt").write_bytes(b"a\r\nb\nc\r\nd\n")
    run(files.edit, ctx, path="mixed.txt", oldText="c\nd", newText="C\nD")
    assert (ws / "mixed.txt").read_bytes() == b"a\r\nb\nC\nD\n"  # half LF: new lines get LF


def test_edit_lf_text_in_an_lf_file_stays_lf(ctx, ws):
    (ws / "u.txt").write_bytes(b"x\ny\n")
    run(files.edit, ctx, path="u.txt", oldText="x\r\ny", newText="1\r\n2")
    assert (ws / "u.txt").read_bytes() == b"1\n2\n"


def test_edit_keeps_the_bom_and_the_mode(ctx, ws):
    f = ws / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbfhello\r\nworld\r\n")
    f.chmod(0o640)
    run(files.edit, ctx, path="bom.txt", oldText="hello", newText="bye")
    assert f.read_bytes() == b"\xef\xbb\xbfbye\r\nworld\r\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o640


def test_edit_refuses_files_that_are_not_utf8_text(ctx, ws):
    (ws / "l1.txt").write_bytes(b"caf\xe9\n")
    assert fails(files.edit, ctx, path="l1.txt", oldText="caf", newText="x") == (
        "l1.txt is not UTF-8 text; edit and apply_patch change text files only")
    assert fails(files.edit, ctx, path="none.txt", oldText="a", newText="b") == (
        "cannot read none.txt: No such file or directory")
    (ws / "d").mkdir()
    assert fails(files.edit, ctx, path="d", oldText="a", newText="b") == "d is a directory"


def test_edit_refuses_files_too_large_to_hold(ctx, ws):
    with open(ws / "huge.log", "wb") as f:
        f.truncate(fileio.MAX_EDIT_BYTES + 1)
    assert fails(files.edit, ctx, path="huge.log", oldText="a", newText="b") == (
        "huge.log is 16,777,217 bytes; edit and apply_patch change files up to 16 MB")


def test_a_failing_edit_leaves_the_old_content(ctx, ws, monkeypatch):
    (ws / "m.txt").write_text("old text\n")
    before = snapshot(ws)
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(
        OSError(errno.EIO, os.strerror(errno.EIO))))
    assert fails(files.edit, ctx, path="m.txt", oldText="old", newText="new") == (
        "cannot write m.txt: Input/output error")
    assert snapshot(ws) == before


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_edit_equals_str_replace_when_the_match_is_unique(ctx, ws, data):
    alphabet = st.sampled_from(["a", "b", "\n", " ", "é", "\t", "✓"])
    content = data.draw(st.text(alphabet, max_size=40))
    i = data.draw(st.integers(0, len(content)))
    j = data.draw(st.integers(i, len(content)))
    old = content[i:j]
    new = data.draw(st.text(alphabet, max_size=10))
    target = ws / "prop.txt"
    target.write_text(content)
    unique = bool(old) and sum(content.startswith(old, k) for k in range(len(content))) == 1
    if unique and old != new:
        run(files.edit, ctx, path="prop.txt", oldText=old, newText=new)
        assert target.read_text() == content.replace(old, new)
    else:
        with pytest.raises(ToolError):
            files.edit({"path": "prop.txt", "oldText": old, "newText": new}, ctx)
        assert target.read_text() == content


# --- confinement, for every tool ----------------------------------------------------------

ESCAPES = [
    "../credentials.json",
    "../log/00000000000000000001.jsonl",
    "~/.fased/credentials.json",
    "../../../outside/secret.txt",
    "link_out/secret.txt",     # a symlinked parent directory leading out
    "link_out/new.txt",        # ... for a file that does not exist yet
    "file_out",                # a symlink to a file outside
    "dangling_out",            # a dangling symlink to a path outside
    "{outside}/secret.txt",    # absolute
]


def _attempts(path: str):
    yield files.read, {"path": path}
    yield files.write, {"path": path, "content": "pwned\n"}
    yield files.edit, {"path": path, "oldText": "outside", "newText": "pwned"}
    yield patch.apply_patch, {"input": f"*** Begin Patch\n*** Add File: {path}\n+pwned\n"
                                       "*** End Patch"}
    yield patch.apply_patch, {"input": f"*** Begin Patch\n*** Update File: {path}\n"
                                       "-outside\n+pwned\n*** End Patch"}
    yield patch.apply_patch, {"input": f"*** Begin Patch\n*** Delete File: {path}\n"
                                       "*** End Patch"}
    yield patch.apply_patch, {"input": "*** Begin Patch\n*** Add File: fine.txt\n+x\n"
                                       f"*** Update File: fine.txt\n*** Move to: {path}\n"
                                       "*** End Patch"}


@pytest.mark.parametrize("template", ESCAPES)
def test_no_tool_reaches_outside_the_workspace_or_into_the_home(layout, ctx, template):
    path = template.format(outside=layout["outside"])
    before = snapshot(layout["user"].parent)
    for tool, args in _attempts(path):
        message = fails(tool, ctx, **args)
        assert "off limits" in message or "outside the workspace" in message, (tool, message)
    assert snapshot(layout["user"].parent) == before


def test_with_workspace_only_off_the_home_stays_off_limits(layout, ws):
    ctx = ToolContext(agent="main", session="s", turn="t", call_id="c", workspace=ws,
                      home=layout["home"], workspace_only=False)
    outside = layout["outside"] / "secret.txt"
    assert run(files.read, ctx, path=str(outside)).text == "outside"
    run(files.edit, ctx, path="link_out/secret.txt", oldText="outside", newText="changed")
    assert outside.read_text() == "changed\n"
    for path in ("../credentials.json", "~/.fased/log/00000000000000000001.jsonl"):
        assert "the fased home" in fails(files.read, ctx, path=path)
        assert "the fased home" in fails(files.write, ctx, path=path, content="x")


def test_a_workspace_holding_the_home_does_not_open_it(layout):
    """A workspace set to ~ contains ~/.fased: the credentials and log stay off limits."""
    ctx = ToolContext(agent="main", session="s", turn="t", call_id="c",
                      workspace=layout["user"], home=layout["home"])
    for path in (".fased/credentials.json", ".fased/log/00000000000000000001.jsonl",
                 ".fased/workspace/x.txt"):
        assert "the fased home" in fails(files.read, ctx, path=path)
        assert "the fased home" in fails(files.write, ctx, path=path, content="x")
    assert (layout["home"] / "credentials.json").read_text() == '{"openai": "sk-secret"}'
    run(files.write, ctx, path="notes.txt", content="fine")


def test_a_path_with_a_lone_surrogate_is_refused_not_a_crash(ctx):
    for tool, args in _attempts("bad\ud800name"):
        assert fails(tool, ctx, **args).endswith(
            "path must be valid Unicode (it has a lone surrogate)")


def test_every_spec_is_in_group_fs_and_only_read_is_free_of_side_effects():
    specs = {spec.name: spec for spec in files.TOOLS + patch.TOOLS}
    assert set(specs) == {"read", "write", "edit", "apply_patch"}
    assert {spec.group for spec in specs.values()} == {"fs"}
    assert [name for name, spec in specs.items() if not spec.side_effects] == ["read"]
    for spec in specs.values():
        assert spec.wire()["parameters"]["additionalProperties"] is False
