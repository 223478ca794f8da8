"""A file a user names for a command's output (`session export -o FILE`) is replaced all at
once: a full disk leaves the previous file as it was, a pipe or device is refused at once
(nothing waits for a reader), and a new file is private to the user (0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import error_line, events, fails, run_process, tmpfs
from fakeserver import Reply


def made_beside(folder: Path) -> list[str]:
    """The files in a test's folder, but the fased home: no temp file may be left there."""
    return sorted(set(os.listdir(folder)) - {"fased-home", "user-home"})


@pytest.fixture
def chatted(models, ok, server):
    """Session s-1 with one turn: a 200,000-character message, too big for a 64 KiB disk."""
    server.script(Reply("noted"))
    ok("chat", "--no-stream", "A" * 200_000)
    return models


def test_a_full_disk_leaves_the_previous_export_and_no_temp_file(chatted, run, tmp_path):
    with tmpfs(tmp_path / "disk", "64k") as disk:
        target = disk / "exp.md"
        target.write_text("old precious export\n")
        before = len(events(chatted))

        result = run("session", "export", "--max-chars", "0", "-o", target)

        assert result.exit_code == 1, result.stderr
        line = error_line(result)
        assert line == f"Error: cannot write {target}: No space left on device", line
        assert f"{target} is as it was" in result.stderr
        assert result.stdout == ""
        assert target.read_text() == "old precious export\n"
        assert os.listdir(disk) == ["exp.md"]
        assert len(events(chatted)) == before


def test_a_full_disk_leaves_no_partial_new_file(chatted, run, tmp_path):
    with tmpfs(tmp_path / "disk", "64k") as disk:
        result = run("session", "export", "--max-chars", "0", "-o", disk / "new.md")

        assert result.exit_code == 1
        assert "No space left on device" in error_line(result)
        assert os.listdir(disk) == []


def test_a_fifo_is_refused_at_once_and_stays_a_fifo(chatted, tmp_path):
    fifo = tmp_path / "fifo1"
    os.mkfifo(fifo)

    done = run_process("session", "export", "-o", str(fifo), timeout=30)  # no reader, ever

    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")]
    assert lines == [f"Error: {fifo} is a FIFO, not a regular file: an export replaces "
                     "the file it is written to"], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_device_is_refused_and_left_alone(chatted, run, tmp_path):
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot make a device node here")

    line = fails(run, chatted, 2, "session", "export", "-o", device)

    assert line.startswith(f"Error: {device} is a character device, not a regular file")
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert made_beside(tmp_path) == ["null"]


def test_a_directory_is_refused(chatted, run, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()

    line = fails(run, chatted, 2, "session", "export", "-o", folder)

    assert "is a directory" in line
    assert os.listdir(folder) == []


def test_a_new_file_is_private_even_under_a_loose_umask(chatted, ok, tmp_path):
    target = tmp_path / "new.md"
    old = os.umask(0o022)
    try:
        done = run_process("session", "export", "-o", str(target))
    finally:
        os.umask(old)

    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert target.read_text() == ok("session", "export")


def test_an_existing_file_is_replaced_and_keeps_its_mode(chatted, ok, run, tmp_path):
    target = tmp_path / "shared.md"
    target.write_text("old\n")
    target.chmod(0o644)

    result = run("session", "export", "-o", target)

    assert result.exit_code == 0, result.stderr
    assert target.read_text() == ok("session", "export")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert made_beside(tmp_path) == ["shared.md"]


def test_a_symlink_is_followed_and_stays_a_link(chatted, ok, run, tmp_path):
    real = tmp_path / "real.md"
    real.write_text("old\n")
    link = tmp_path / "link.md"
    link.symlink_to(real)

    result = run("session", "export", "-o", link)

    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and Path(os.readlink(link)) == real
    assert real.read_text() == ok("session", "export")
