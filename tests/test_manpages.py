"""The committed man pages are what the code generates: `--help` and `man` never drift."""

from pathlib import Path

from fased.commands.manpage import render_all

MAN = Path(__file__).resolve().parent.parent / "man"


def test_man_pages_are_current():
    pages = render_all()
    committed = {p.name: p.read_text(encoding="utf-8") for p in MAN.glob("*.1")}
    stale = sorted(name for name in pages if committed.get(name) != pages[name])
    extra = sorted(set(committed) - set(pages))
    assert not stale and not extra, (
        f"man pages out of date: {stale + extra}; run `python -m fased.commands.manpage man/`")


def test_every_command_has_a_page_with_examples_for_each_noun():
    pages = render_all()
    for noun in ("agent", "session", "config", "chat", "run", "task", "replay", "doctor", "setup"):
        assert f"fased-{noun}.1" in pages
        assert "Example" in pages[f"fased-{noun}.1"], noun
    root = pages["fased.1"]
    for code in ("0", "1", "2", "3", "4", "5"):
        assert f".B {code}\n" in root
