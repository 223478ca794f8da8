"""apply_patch: the codex patch format, applied all or nothing inside the workspace."""

from __future__ import annotations

import difflib
import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_tools_files import snapshot as tree

from fased.tools import patch
from fased.tools.base import ToolContext, ToolError


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = Path(os.environ["HOME"]) / ".fased" / "workspace"
    ws.mkdir(parents=True)
    (ws.parent / "credentials.json").write_text("{}")
    return ws


@pytest.fixture
def ctx(ws) -> ToolContext:
    return ToolContext(agent="main", session="s1", turn="t1", call_id="c1", workspace=ws,
                       home=ws.parent)


def apply(ctx: ToolContext, *body: str):
    return patch.apply_patch({"input": "\n".join(["*** Begin Patch", *body,
                                                  "*** End Patch"])}, ctx)


def refused(ctx: ToolContext, *body: str) -> str:
    with pytest.raises(ToolError) as info:
        apply(ctx, *body)
    return str(info.value)


def test_add_update_move_delete_in_one_patch(ctx, ws):
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("import os\n\ndef main():\n    print('hi')\n"
                                       "    return 0\n")
    (ws / "old.txt").write_text("rename me\n")
    (ws / "gone.txt").write_text("bye\n")
    result = apply(
        ctx,
        "*** Add File: docs/new.md",
        "+# New",
        "+",
        "+text",
        "*** Update File: src/app.py",
        "@@ def main():",
        "-    print('hi')",
        "+    print('hello')",
        "     return 0",
        "*** Update File: old.txt",
        "*** Move to: moved/renamed.txt",
        "@@",
        "-rename me",
        "+renamed",
        "*** Delete File: gone.txt",
    )
    assert (ws / "docs" / "new.md").read_text() == "# New\n\ntext\n"
    assert (ws / "src" / "app.py").read_text() == ("import os\n\ndef main():\n"
                                                   "    print('hello')\n    return 0\n")
    assert not (ws / "old.txt").exists()
    assert (ws / "moved" / "renamed.txt").read_text() == "renamed\n"
    assert not (ws / "gone.txt").exists()
    assert result.text == ("Patch applied:\nA docs/new.md\nM src/app.py (1 hunk)\n"
                           "M old.txt -> moved/renamed.txt (1 hunk)\nD gone.txt")
    assert result.data["hunks"] == 2
    assert result.data["changes"] == 4
    assert {f["path"]: f["deleted"] for f in result.data["files"]} == {
        "docs/new.md": False, "src/app.py": False, "old.txt": True,
        "moved/renamed.txt": False, "gone.txt": True}


def test_a_pure_rename_needs_no_hunk_and_keeps_the_mode(ctx, ws):
    (ws / "a.sh").write_text("echo\n")
    (ws / "a.sh").chmod(0o755)
    apply(ctx, "*** Update File: a.sh", "*** Move to: b.sh")
    assert not (ws / "a.sh").exists()
    assert (ws / "b.sh").read_text() == "echo\n"
    assert stat.S_IMODE((ws / "b.sh").stat().st_mode) == 0o755


def test_several_hunks_in_order_with_anchors_and_end_of_file(ctx, ws):
    (ws / "f.txt").write_text("a\nb\nc\nd\ne\nf\n")
    apply(ctx, "*** Update File: f.txt",
          "@@", " a", "-b", "+B",
          "@@", " c", " d", "-e", "+E",
          "@@", " f", "+g", "*** End of File")
    assert (ws / "f.txt").read_text() == "a\nB\nc\nd\nE\nf\ng\n"


def test_hunk_without_at_at_and_with_a_unified_diff_header(ctx, ws):
    (ws / "f.txt").write_text("one\ntwo\nthree\n")
    apply(ctx, "*** Update File: f.txt", " one", "-two", "+2")
    apply(ctx, "*** Update File: f.txt", "@@ -1,3 +1,3 @@", " 2", "-three", "+3")
    assert (ws / "f.txt").read_text() == "one\n2\n3\n"


def test_the_at_at_line_picks_which_of_two_equal_places(ctx, ws):
    (ws / "f.py").write_text("def a():\n    return 1\n\ndef b():\n    return 1\n")
    apply(ctx, "*** Update File: f.py", "@@ def b():", "-    return 1", "+    return 2")
    assert (ws / "f.py").read_text() == ("def a():\n    return 1\n\ndef b():\n"
                                         "    return 2\n")
    apply(ctx, "*** Update File: f.py", "@@ def a():", "+    # first")
    assert (ws / "f.py").read_text().startswith("def a():\n    # first\n    return 1\n")


def test_matching_tolerates_whitespace_but_keeps_the_files_own_context(ctx, ws):
    (ws / "f.txt").write_text("keep   \n    indented\nchange\n")
    apply(ctx, "*** Update File: f.txt", " keep", " indented", "-change", "+changed")
    assert (ws / "f.txt").read_text() == "keep   \n    indented\nchanged\n"


def test_crlf_bom_and_a_missing_final_newline_are_kept(ctx, ws):
    (ws / "w.txt").write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\nlast")
    apply(ctx, "*** Update File: w.txt", " one", "-two", "+2", "+2b", " last")
    assert (ws / "w.txt").read_bytes() == b"\xef\xbb\xbfone\r\n2\r\n2b\r\nlast"
    apply(ctx, "*** Update File: w.txt", " last", "+after")  # the last line gets its CRLF
    assert (ws / "w.txt").read_bytes() == b"\xef\xbb\xbfone\r\n2\r\n2b\r\nlast\r\nafter"


def test_a_patch_sent_with_crlf_applies(ctx, ws):
    (ws / "f.txt").write_text("x\ny\n")
    text = "*** Begin Patch\r\n*** Update File: f.txt\r\n x\r\n-y\r\n+z\r\n*** End Patch\r\n"
    patch.apply_patch({"input": text}, ctx)
    assert (ws / "f.txt").read_text() == "x\nz\n"


def test_a_hunk_that_does_not_match_names_file_hunk_and_first_line(ctx, ws):
    (ws / "f.txt").write_text("alpha\nbeta\ngamma\n")
    message = refused(ctx, "*** Update File: f.txt", "@@", " alpha", "-beta", "+B",
                      "@@", " delta", "-gamma", "+G")
    assert message == ("apply_patch changed nothing: f.txt, hunk 2 (patch line 7), starting "
                       "'delta': its context and '-' lines were not found. Read the file and "
                       "copy those lines exactly.")
    assert (ws / "f.txt").read_text() == "alpha\nbeta\ngamma\n"
    assert "its '@@ nowhere()' line was not found" in refused(
        ctx, "*** Update File: f.txt", "@@ nowhere()", "-beta", "+b")
    assert "at the end of the file" in refused(
        ctx, "*** Update File: f.txt", "-alpha", "+a", "*** End of File")


def test_hunks_out_of_file_order_say_so(ctx, ws):
    (ws / "f.txt").write_text("a\nb\nc\n")
    assert "after the previous hunk (hunks must be in file order)" in refused(
        ctx, "*** Update File: f.txt", "@@", "-c", "+C", "@@", "-a", "+A")


def test_all_or_nothing_when_a_later_file_does_not_match(ctx, ws):
    (ws / "one.txt").write_text("1\n")
    (ws / "two.txt").write_text("2\n")
    (ws / "three.txt").write_text("3\n")
    before = tree(ws)
    message = refused(ctx,
                      "*** Add File: brand/new.txt", "+new",
                      "*** Update File: one.txt", "-1", "+one",
                      "*** Delete File: three.txt",
                      "*** Update File: two.txt", "-nope", "+two")
    assert message.startswith("apply_patch changed nothing: two.txt, hunk 1")
    assert tree(ws) == before


def test_a_write_that_fails_midway_puts_back_what_was_written(ctx, ws, monkeypatch):
    (ws / "one.txt").write_text("1\n")
    (ws / "one.txt").chmod(0o640)
    (ws / "gone.txt").write_text("keep me\n")
    (ws / "two.txt").write_text("2\n")
    before = tree(ws)
    real_replace = os.replace

    def failing(src, dst):
        if Path(dst).name == "two.txt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(ToolError) as info:
        apply(ctx,
              "*** Update File: one.txt", "-1", "+one",
              "*** Add File: new/dir/added.txt", "+added",
              "*** Delete File: gone.txt",
              "*** Update File: two.txt", "-2", "+two")
    assert str(info.value) == ("apply_patch changed nothing: cannot write two.txt: "
                               "No space left on device")
    assert tree(ws) == before
    assert stat.S_IMODE((ws / "one.txt").stat().st_mode) == 0o640


def test_add_over_an_existing_file_and_move_onto_one_are_refused(ctx, ws):
    (ws / "a.txt").write_text("a\n")
    (ws / "b.txt").write_text("b\n")
    assert refused(ctx, "*** Add File: a.txt", "+x") == (
        "apply_patch changed nothing: *** Add File: a.txt: the file already exists; use "
        "'*** Update File:' to change it")
    assert refused(ctx, "*** Update File: a.txt", "*** Move to: b.txt", "-a", "+A") == (
        "apply_patch changed nothing: *** Move to: b.txt: the file already exists")
    assert (ws / "a.txt").read_text() == "a\n"
    assert (ws / "b.txt").read_text() == "b\n"


def test_update_and_delete_of_missing_files_are_refused(ctx, ws):
    assert refused(ctx, "*** Update File: no.txt", "-a", "+b") == (
        "apply_patch changed nothing: Update File: no.txt does not exist")
    assert refused(ctx, "*** Delete File: no.txt") == (
        "apply_patch changed nothing: Delete File: no.txt does not exist")
    (ws / "d").mkdir()
    assert refused(ctx, "*** Delete File: d") == "apply_patch changed nothing: d is a directory"


def test_changes_to_one_file_chain_within_a_patch(ctx, ws):
    apply(ctx, "*** Add File: n.txt", "+first",
          "*** Update File: n.txt", "-first", "+second",
          "*** Delete File: n.txt",
          "*** Add File: n.txt", "+third")
    assert (ws / "n.txt").read_text() == "third\n"


def test_deleting_a_symlink_removes_the_link_not_its_target(ctx, ws):
    (ws / "target.txt").write_text("stays\n")
    (ws / "alias.txt").symlink_to("target.txt")
    apply(ctx, "*** Delete File: alias.txt")
    assert not os.path.lexists(ws / "alias.txt")
    assert (ws / "target.txt").read_text() == "stays\n"


def test_updating_through_symlinks_changes_the_target(ctx, ws):
    (ws / "target.txt").write_text("old\n")
    (ws / "alias.txt").symlink_to("target.txt")
    (ws / "dangling.txt").symlink_to("missing.txt")
    apply(ctx, "*** Update File: alias.txt", "-old", "+new")
    assert (ws / "alias.txt").is_symlink()
    assert (ws / "target.txt").read_text() == "new\n"
    assert refused(ctx, "*** Update File: dangling.txt", "-a", "+b") == (
        "apply_patch changed nothing: Update File: dangling.txt does not exist")


def test_a_failed_patch_puts_a_deleted_symlink_back(ctx, ws, monkeypatch):
    (ws / "target.txt").write_text("stays\n")
    (ws / "alias.txt").symlink_to("target.txt")
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(
        OSError(errno.EIO, os.strerror(errno.EIO))))
    before = tree(ws)
    with pytest.raises(ToolError):
        apply(ctx, "*** Delete File: alias.txt", "*** Add File: x.txt", "+x")
    assert tree(ws) == before


@pytest.mark.parametrize(("text", "message"), [
    ("*** Add File: a\n+a\n*** End Patch", "the patch must start with the line "
     "'*** Begin Patch'"),
    ("*** Begin Patch\n*** Add File: a\n+a", "the patch must end with the line "
     "'*** End Patch'"),
    ("*** Begin Patch\n*** End Patch", "the patch changes no files"),
    ("*** Begin Patch\n*** Rename File: a\n*** End Patch", "patch line 2: expected "
     "'*** Add File: PATH', '*** Update File: PATH' or '*** Delete File: PATH', got "
     "'*** Rename File: a'"),
    ("*** Begin Patch\n*** Add File: a\n+one\ntwo\n*** End Patch", "patch line 4: expected "
     "'*** Add File: PATH', '*** Update File: PATH' or '*** Delete File: PATH', got 'two' "
     "(every line of an added file starts with '+')"),
    ("*** Begin Patch\n*** Update File: a\n@@\n x\n?y\n*** End Patch", "patch line 5: in a, "
     "hunk 1: '?y' must start with ' ' (context), '-' (remove) or '+' (add)"),
    ("*** Begin Patch\n*** Update File: a\n*** End Patch", "*** Update File: a has no hunks"),
    ("*** Begin Patch\n*** Update File: a\n@@\n@@\n-x\n*** End Patch", "patch line 3: in a, "
     "hunk 1 has no lines"),
    ("*** Begin Patch\n*** Delete File:  \n*** End Patch", "patch line 2: "
     "'*** Delete File:' needs a path"),
])
def test_malformed_patches_say_what_is_wrong(ctx, text, message):
    with pytest.raises(ToolError) as info:
        patch.apply_patch({"input": text}, ctx)
    assert str(info.value) == f"apply_patch changed nothing: {message}"


def test_apply_patch_refuses_text_that_is_not_utf8(ctx, ws):
    (ws / "l1.txt").write_bytes(b"caf\xe9\n")
    assert refused(ctx, "*** Update File: l1.txt", "-x", "+y") == (
        "apply_patch changed nothing: l1.txt is not UTF-8 text; edit and apply_patch change "
        "text files only")


def test_the_spec_is_in_group_fs_with_side_effects():
    (spec,) = patch.TOOLS
    assert (spec.name, spec.group, spec.side_effects) == ("apply_patch", "fs", True)
    assert spec.parameters["required"] == ["input"]


def _patch_from(old: list[str], new: list[str]) -> str:
    """A patch for old -> new in apply_patch's format, from difflib's grouped opcodes."""
    body = ["*** Begin Patch", "*** Update File: p.txt"]
    for group in difflib.SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(3):
        body.append("@@")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                body += [" " + line for line in old[i1:i2]]
                continue
            body += ["-" + line for line in old[i1:i2]]
            body += ["+" + line for line in new[j1:j2]]
        if group[-1][2] == len(old) and old:
            body.append("*** End of File")
    body.append("*** End Patch")
    return "\n".join(body)


_LINE = st.text(st.sampled_from("ab é\t*@+-"), max_size=6)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.lists(_LINE, unique=True, max_size=12), new=st.lists(_LINE, max_size=12),
       final_newline=st.booleans(), crlf=st.booleans())
def test_difflib_patches_apply_back_to_new(ctx, ws, old, new, final_newline, crlf):
    if old == new:
        return
    final_newline = final_newline or not old  # an empty file has no "missing" newline
    # added lines take the file's line ending: only a file with a newline has one
    end = "\r\n" if crlf and (len(old) > 1 or (final_newline and old)) else "\n"
    # without a final newline, a last line "" would be no line at all
    assume(final_newline or (old[-1] != "" and (not new or new[-1] != "")))

    def text(lines: list[str]) -> str:
        return end.join(lines) + (end if final_newline and lines else "")

    (ws / "p.txt").write_bytes(text(old).encode())
    patch.apply_patch({"input": _patch_from(old, new)}, ctx)
    assert (ws / "p.txt").read_bytes() == text(new).encode()
