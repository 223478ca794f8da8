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


def test_no_name_line_repeats_the_command_name():
    # `man fased` once read "fased - fased: AI agents ..."
    for name, page in render_all().items():
        title = page.split(".SH NAME\n", 1)[1].split("\n", 1)[0]
        command, _, summary = title.partition(" \\- ")
        words = command.replace("\\-", " ")
        assert not summary.lower().startswith((f"{words}:", f"{command}:")), (name, title)
    assert render_all()["fased.1"].split("\n")[2] == (
        "fased \\- AI agents in your shell, every action kept as an event.")
