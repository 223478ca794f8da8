"""Secret values of skills.entries.<name>.env: kept in credentials.json (under "skills"),
never in the log; the log records the variable's name and an 8-hex fingerprint."""

from __future__ import annotations

from pathlib import Path


def skill_secrets(home: Path) -> dict[str, dict[str, str]]:
    """{skill: {VARIABLE: value}} from credentials.json."""
    from fased.models import load_credentials

    try:
        data = load_credentials(Path(home))
    except Exception:  # an unreadable credentials file: `fased doctor` says so, turns go on
        return {}
    skills = data.get("skills")
    return skills if isinstance(skills, dict) else {}


def store_skill_secret(store, skill: str, variable: str, value: str | None) -> None:
    """Keep (or, with None, forget) one secret variable of a skill, under the log lock."""
    from fased.models import set_credentials_entry

    with store.log.locked():
        entry = dict(skill_secrets(store.home).get(skill) or {})
        if value is None:
            entry.pop(variable, None)
        else:
            entry[variable] = value
        set_credentials_entry(store.home, "skills", skill, entry)


def refuse_secret_env(path: str, value: object) -> None:
    """UsageError when fased.json's `path` set to `value` (config.validate passes the whole
    `skills`, for `config set` and hand edits alike) holds a secret-looking variable of
    skills.entries.<name>.env, which the log would keep: its name looks secret (API_KEY,
    TOKEN, ...) or its value is a literal secret."""
    from fased.config import parse_path
    from fased.errors import UsageError
    from fased.redact import SECRET_NAME, literal_secret

    parts = parse_path(path)
    if not parts or parts[0] != "skills":
        return
    tree = value
    for key in reversed(parts):
        tree = {key: tree}
    entries = ((tree.get("skills") or {}) if isinstance(tree.get("skills"), dict) else {}
               ).get("entries")
    for skill, entry in (entries.items() if isinstance(entries, dict) else ()):
        env = entry.get("env") if isinstance(entry, dict) else None
        for name, text in (env.items() if isinstance(env, dict) else ()):
            if SECRET_NAME.search(str(name)) or (isinstance(text, str) and literal_secret(text)):
                raise UsageError(f"skills.entries.{skill}.env.{name} looks secret: the log "
                                 "would keep it", hint=f"`fased skill env {skill} {name}` keeps "
                                 "it in credentials.json instead; nothing was changed")
