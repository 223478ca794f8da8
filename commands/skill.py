"""`fased skill ...`: the skills fased finds, what each agent is offered and why, and
installing, writing and removing them; `fased agent skills` changes an agent's list."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import agent_option, echo_json, json_option, note, say, store, table
from fased.errors import UsageError


@click.group(cls=FasedGroup)
def skill() -> None:
    """Skills: folders of know-how (a SKILL.md) the agent reads when one applies.

    fased looks in <workspace>/skills, ~/.fased/skills, the bundled skills and
    skills.load.extraDirs, in that order: the first one that holds a name wins.

    \b
    Examples:
      fased skill list
      fased skill check --agent ops
      fased skill new release-notes
      fased skill install https://github.com/me/skills.git --name pdf --global
      fased skill remove pdf
    """


def _context(agent_id: str | None):
    from fased.agents import get_agent, workspace_for

    st = store()
    con = st.db()
    agent = get_agent(con, agent_id)
    return st, con, agent, workspace_for(con, st.home, agent)


def _rows(agent_id: str | None):
    from fased.skills.gating import find, statuses

    st, con, agent, workspace = _context(agent_id)
    found = find(con, st.home, workspace)
    for warning in found.warnings:
        note(warning)
    changed = _changed(con)
    rows = []
    for s in statuses(con, st.home, agent["id"], workspace, found):
        row = {"name": s.skill.name, "source": s.skill.source, "status": s.status,
               "description": s.skill.description, "path": str(s.skill.file),
               "sha256": s.skill.sha256}
        recorded = changed.get(str(s.skill.path))
        if recorded is not None and recorded != s.skill.sha256:
            row["changed_since_install"] = True
        rows.append(row)
    return agent, rows, found


def _changed(con) -> dict[str, str]:
    return dict(con.execute("SELECT path, sha256 FROM skill_installs WHERE removed_seq IS NULL"))


@skill.command("list")
@agent_option
@json_option
def list_(agent, json_):
    """Every skill found, where from, and its status for the agent: ready, missing: bins=jq,
    disabled, not allowed, shadowed by workspace. A skill whose files changed since
    `fased skill install` is marked (changed).

    \b
    Examples:
      fased skill list
      fased skill list --agent ops --json
    """
    row, rows, _ = _rows(agent)
    if json_:
        echo_json({"agent": row["id"], "skills": rows})
        return
    if not rows:
        say("No skills found.")
        return
    table([(r["name"], r["source"], r["status"] + (" (changed)" if r.get(
        "changed_since_install") else ""), r["description"][:60]) for r in rows],
          ("NAME", "SOURCE", "STATUS", "DESCRIPTION"))


@skill.command("check")
@agent_option
@json_option
def check(agent, json_):
    """Exactly the skills the agent's next turn is offered, and why each other one is not.

    \b
    Examples:
      fased skill check --agent ops
    """
    row, rows, _ = _rows(agent)
    offered = [r for r in rows if r["status"] == "ready"]
    others = [r for r in rows if r["status"] != "ready"]
    if json_:
        echo_json({"agent": row["id"], "offered": [r["name"] for r in offered],
                   "not_offered": [{"name": r["name"], "source": r["source"],
                                    "why": r["status"]} for r in others]})
        return
    say(f"Agent {row['id']} is offered {len(offered)} skill(s)"
        + (": " + ", ".join(r["name"] for r in offered) if offered else "."))
    for r in others:
        say(f"  {r['name']} ({r['source']}): {r['status']}")


@skill.command("show")
@click.argument("name")
@agent_option
@json_option
def show(name, agent, json_):
    """Print a skill's SKILL.md (the winner of its name), with where it is.

    \b
    Examples:
      fased skill show skill-writing
      fased skill show pdf --json
    """
    from fased.skills.loader import check_skill_name

    check_skill_name(name)
    _, rows, _ = _rows(agent)
    match = next((r for r in rows if r["name"] == name and not r["status"].startswith(
        "shadowed")), None)
    if match is None:
        raise UsageError(f"no skill {name!r}", hint="`fased skill list` shows them")
    from fased.bounds import read_head
    from fased.errors import FasedError
    from fased.skills.loader import SKILL_FILE_MAX

    try:  # a FIFO there since the scan waited for a writer, forever
        text = read_head(match["path"], SKILL_FILE_MAX).decode("utf-8", "replace")
    except OSError as exc:
        raise FasedError(f"cannot read {match['path']}: {exc.strerror or exc}",
                         hint=None) from None
    if json_:
        echo_json({**match, "text": text})
        return
    note(f"{match['path']} ({match['source']}; {match['status']})")
    click.echo(text, nl=not text.endswith("\n"))


TEMPLATE = """---
name: {name}
description: {description}
---

# {title}

Use this skill when ... (say when it applies: the model reads the description above to
decide, and this file only when it does).

## Steps

1. ...
2. ...

Files beside this one are resources: refer to them by relative path (scripts/run.sh).
"""


def _with_event(st, placement, decide):
    """Append what `decide` returns (it moves the skill folder, under the log's lock); the
    move is undone unless the event made it into the log."""
    before = st.appended
    try:
        return st.transact(decide)
    finally:
        placement.finish(recorded=st.appended > before)


def _root(global_: bool, agent_id: str | None):
    st, con, agent, workspace = _context(agent_id)
    if global_:
        return st, con, agent, st.home / "skills", "managed"
    return st, con, agent, workspace / "skills", "workspace"


@skill.command("new")
@click.argument("name")
@click.option("--description", "-d", metavar="TEXT",
              help="What it does and when to use it: one line of 1-1024 characters.")
@click.option("global_", "--global", is_flag=True,
              help="In ~/.fased/skills (every agent) instead of the agent's workspace.")
@agent_option
def new(name, description, global_, agent):
    """Write a new skill from a valid template, in <workspace>/skills/NAME (or --global).

    \b
    Examples:
      fased skill new release-notes -d "Write release notes from git log"
      fased skill new deploy --global
    """
    import json

    from fased.bounds import has_control
    from fased.skills.loader import DESCRIPTION_MAX, check_skill_name, parse_skill_file

    check_skill_name(name)
    if description is None:
        description = f"TODO: what {name} does and when to use it."
    description = description.strip()  # as the loader keeps it
    if not description or len(description) > DESCRIPTION_MAX or has_control(description):
        raise UsageError(f"--description must be one line of 1-{DESCRIPTION_MAX} printable "
                         f"characters, got {len(description):,}", hint="nothing was written")
    text = TEMPLATE.format(name=name, description=json.dumps(description, ensure_ascii=False),
                           title=name.replace("-", " ").capitalize())
    # the file must load: a skill its own loader skips is worse than none
    front, problem = parse_skill_file(text)
    if front is None:
        raise UsageError(f"--description cannot be written as a SKILL.md: {problem}",
                         hint="nothing was written")
    _, _, _, root, _ = _root(global_, agent)
    folder = root / name
    if folder.exists():
        from fased.errors import ConflictError

        raise ConflictError(f"{folder} already exists")
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(text, encoding="utf-8")
    say(f"Created {folder / 'SKILL.md'}")


@skill.command("install")
@click.argument("source", metavar="PATH|GIT-URL|TARBALL")
@click.option("global_", "--global", is_flag=True,
              help="Into ~/.fased/skills (every agent) instead of the agent's workspace.")
@click.option("--name", metavar="NAME", help="The skill to take from a source with several.")
@click.option("--force", is_flag=True, help="Replace a skill of the same name there.")
@agent_option
@json_option
def install(source, global_, name, force, agent, json_):
    """Copy a skill in from a folder, a git repository or a tarball, and record where it came
    from and its content hash (an event). A symlink that points out of the skill folder is
    refused. The skill lands with its event: a copy that fails or an event that cannot be
    recorded leaves the skills as they were.

    \b
    Examples:
      fased skill install ./my-skill
      fased skill install https://github.com/me/skills.git --name pdf --global
      fased skill install pdf-skill.tar.gz
    """
    from fased.skills.install import install as do_install
    from fased.skills.loader import check_skill_name
    from fased.store import Draft

    if name is not None:
        check_skill_name(name)
    st, _, row, root, scope = _root(global_, agent)
    data, placement = do_install(source, root, scope, name, row["id"], force)
    dest = placement.dest

    def decide(con):
        if placement.put(force):
            data["replaced"] = True
        return [Draft("skill.installed", "skills", data)]

    outcome = _with_event(st, placement, decide)
    if json_:
        echo_json({**data, "events": [e["seq"] for e in outcome.events]})
        return
    say(f"Installed skill {data['name']} in {dest} ({data['kind']}"
        + (f" {data['commit'][:12]}" if data.get("commit") else "")
        + f"; sha256 {data['sha256'][:12]}).")


@skill.command("remove")
@click.argument("name")
@click.option("global_", "--global", is_flag=True, help="From ~/.fased/skills.")
@agent_option
def remove(name, global_, agent):
    """Delete a skill folder from the agent's workspace skills (or --global: ~/.fased/skills),
    recorded as an event with the hash of what it held. Bundled skills cannot be removed
    (disable one with `fased config set skills.entries.NAME.enabled false`).

    \b
    Examples:
      fased skill remove pdf
      fased skill remove deploy --global
    """
    from fased.skills.install import Placement
    from fased.skills.loader import SKILL_FILE, check_skill_name, content_hash
    from fased.store import Draft

    check_skill_name(name)
    st, _, _, root, scope = _root(global_, agent)
    folder = root / name
    if folder.is_symlink() or not (folder / SKILL_FILE).is_file():
        raise UsageError(f"no skill {name!r} in {root}",
                         hint="`fased skill list` shows where each skill is")
    data = {"name": name, "path": str(folder), "scope": scope, "sha256": content_hash(folder)}
    placement = Placement(folder)

    def decide(con):
        placement.take()
        return [Draft("skill.removed", "skills", data)]

    _with_event(st, placement, decide)
    say(f"Removed skill {name} ({folder}).")


@skill.command("env")
@click.argument("name")
@click.argument("variable")
@click.option("--unset", is_flag=True, help="Forget the variable.")
def env(name, variable, unset):
    """Set an environment variable for the commands the agent runs while skill NAME is
    offered. The value is read from stdin (or asked for, hidden, on a terminal), never from
    the command line, and kept in credentials.json (0600): the log records only the
    variable name and a fingerprint.

    \b
    Examples:
      fased skill env weather WEATHER_API_KEY
      pass weather/key | fased skill env weather WEATHER_API_KEY
      fased skill env weather WEATHER_API_KEY --unset
    """
    import sys

    from fased.bounds import check_env_name
    from fased.models import fingerprint
    from fased.skills.loader import check_skill_name
    from fased.skills.secrets import store_skill_secret
    from fased.store import Draft

    check_skill_name(name)
    check_env_name(variable, "variable name")
    value = None
    if not unset:
        if sys.stdin.isatty():
            value = click.prompt(f"{variable}", hide_input=True)
        else:
            value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise UsageError("no value on stdin", hint="use --unset to forget a variable")
    st = store()
    store_skill_secret(st, name, variable, value)
    data = {"skill": name, "variable": variable}
    if value:
        data["fingerprint"] = fingerprint(value)
    st.transact(lambda con: [Draft("skill.env_set", "skills", data)])
    say(f"Forgot {variable} for skill {name}." if unset else
        f"Stored {variable} for skill {name} in credentials.json.")


@click.command("skills")
@click.argument("args", nargs=-1, metavar="[ID] | allow|deny|reset ID NAME...")
@json_option
def agent_skills(args, json_):
    """The skills an agent may be offered; change its own list.

    An agent's list (agents.list[].skills) replaces agents.defaults.skills; without either
    every skill may be offered. Changes are events (config.set on agents.list[N].skills).

    \b
    Examples:
      fased agent skills ops
      fased agent skills deny ops github
      fased agent skills allow ops github
      fased agent skills reset ops          # back to agents.defaults.skills
    """
    from fased.agents import get_agent, workspace_for
    from fased.skills.allow import skills_change

    st = store()
    if args and args[0] in ("allow", "deny", "reset"):
        if (len(args) < 3 and args[0] != "reset") or len(args) < 2:
            raise UsageError(f"{args[0]} needs an agent and skill names",
                             hint=f"fased agent skills {args[0]} main github")
        action, agent_id, names = args[0], args[1], list(args[2:])

        def decide(con):
            row = get_agent(con, agent_id)
            return skills_change(con, st.home, row["id"], action, names,
                                 workspace_for(con, st.home, row))

        outcome = st.transact(decide)
        done = {"allow": "Allowed", "deny": "Denied", "reset": "Reset"}[action]
        say(f"{done} {', '.join(names) or 'the skills list'} for {agent_id}."
            if outcome.events else f"Nothing changed for {agent_id}.")
        return
    if len(args) > 1:
        raise UsageError("give one agent id", hint="fased agent skills [ID]")
    row, rows, _ = _rows(args[0] if args else None)
    if json_:
        echo_json({"agent": row["id"], "skills": rows})
        return
    table([(r["name"], r["source"], r["status"]) for r in rows], ("NAME", "SOURCE", "STATUS"))
