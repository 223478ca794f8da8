"""What `pip install .` (not the editable install the developers use) puts on a user's
machine: every package of fased/ must be listed in setup.cfg, or a fresh install imports
fine here and fails there (fased.channels once did, in CI's clean clone)."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def listed_packages() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}


def test_every_package_of_fased_is_installed():
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "fased").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    missing = sorted(found - listed_packages())
    assert missing == [], f"add to setup.cfg [options] packages: {missing}"


def test_every_listed_package_exists():
    mapped = {"fased.commands": ROOT / "commands", "fased.schemas": ROOT / "schemas"}
    for name in listed_packages():
        where = mapped.get(name, ROOT.joinpath(*name.split(".")))
        assert (where / "__init__.py").is_file(), name
