"""Skills: where fased finds them and which one wins, the gates, per-agent lists, what the
model is offered (the available_skills block, its budget, `$name`), reading skill folders,
and installing from a folder, a git repository and a tarball."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import events
from fakeserver import Reply

from fased.skills.loader import BUNDLED


def system_of(request: dict) -> str:
    return request["json"]["messages"][0]["content"]


def ws(home: Path) -> Path:
    return home / "workspace"


def make_skill(root: Path, name: str, description: str = "Does a thing. Use when asked.",
               metadata: dict | None = None, body: str = "Step one.\n",
               front: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if front is None:
        front = f"name: {name}\ndescription: {json.dumps(description)}\n"
        if metadata is not None:
            front += f"metadata: {json.dumps(metadata)}\n"
    (folder / "SKILL.md").write_text(f"---\n{front}---\n\n# {name}\n\n{body}")
    return folder


def listing(ok, *args) -> dict[str, dict]:
    data = json.loads(ok("skill", "list", "--json", *args))
    return {(s["name"], s["source"]): s for s in data["skills"]}


def statuses(ok, *args) -> dict[str, str]:
    return {name: s["status"] for (name, _), s in listing(ok, *args).items()
            if not s["status"].startswith("shadowed")}


# -- loading -----------------------------------------------------------------------------------

def test_the_workspace_wins_over_managed_over_bundled_over_extra_dirs(set_up, ok, tmp_path):
    extra = tmp_path / "extra"
    make_skill(extra, "skill-writing", "extra copy")
    make_skill(extra, "only-extra")
    make_skill(set_up / "skills", "shared", "managed copy")
    make_skill(ws(set_up) / "skills", "shared", "workspace copy")
    ok("config", "set", "skills.load.extraDirs", json.dumps([str(extra)]))

    found = listing(ok)

    assert found[("shared", "workspace")]["status"] == "ready"
    assert found[("shared", "workspace")]["description"] == "workspace copy"
    assert found[("shared", "managed")]["status"] == "shadowed by workspace"
    assert found[("skill-writing", "bundled")]["status"] == "ready"
    assert found[("skill-writing", "extra")]["status"] == "shadowed by bundled"
    assert found[("only-extra", "extra")]["status"] == "ready"
    table = ok("skill", "list")
    assert "shadowed by workspace" in table and table.startswith("NAME")


def test_a_broken_skill_is_skipped_with_a_warning_naming_file_and_problem(models, ok, run,
                                                                          server):
    root = ws(models) / "skills"
    make_skill(root, "bad-yaml", front="name: bad-yaml\ndescription: [unclosed\n")
    make_skill(root, "no-name", front="description: x\n")
    make_skill(root, "no-description", front="name: no-description\n")
    make_skill(root, "too-long", description="x" * 1025)
    make_skill(root, "Upper", front="name: Upper\ndescription: x\n")
    make_skill(root, "elsewhere", front="name: other-name\ndescription: x\n")
    (root / "no-front").mkdir()
    (root / "no-front" / "SKILL.md").write_text("# just markdown\n")
    make_skill(root, "fine")

    result = run("skill", "list")

    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if "skill skipped" in line]
    assert len(warnings) == 7
    by = {Path(w.split(": ", 2)[1]).parent.name: w for w in warnings}
    assert str(root / "bad-yaml" / "SKILL.md") in by["bad-yaml"] and "bad YAML" in by["bad-yaml"]
    assert by["no-name"].endswith("missing name")
    assert by["no-description"].endswith("missing description")
    assert by["too-long"].endswith("description is longer than 1024 characters")
    assert "lowercase" in by["Upper"]
    assert by["elsewhere"].endswith("name 'other-name' does not match its folder 'elsewhere'")
    assert "no YAML front matter" in by["no-front"]
    assert "fine" in result.stdout and "bad-yaml" not in result.stdout
    ok("chat", "hello")  # a broken skill never breaks a turn
    assert "<name>fine</name>" in system_of(server.requests[-1])


# -- gates ---------------------------------------------------------------------------------------

def test_every_gate_decides_and_says_why(set_up, ok, monkeypatch):
    root = ws(set_up) / "skills"
    here = sys.platform
    other = "darwin" if here != "darwin" else "linux"
    make_skill(root, "needs-bins", metadata={"fased": {"requires": {"bins": ["sh", "no-such-jq"]}}})
    make_skill(root, "any-bin", metadata={"openclaw": {"requires": {"anyBins": ["no-a", "sh"]}}})
    make_skill(root, "no-any-bin", metadata={"fased": {"requires": {"anyBins": ["no-a", "no-b"]}}})
    make_skill(root, "needs-env", metadata={"fased": {"requires": {"env": ["SKILL_REGION"]}}})
    make_skill(root, "needs-config", metadata={"fased": {"requires": {
        "config": ["agents.defaults.userTimezone"]}}})
    make_skill(root, "own-config", metadata={"fased": {"requires": {"config": ["apiBase"]}}})
    make_skill(root, "other-os", metadata={"fased": {"os": [other]}})
    make_skill(root, "this-os", metadata={"fased": {"os": [here]}})
    make_skill(root, "always", metadata={"fased": {"always": True,
                                                   "requires": {"bins": ["no-such"]}}})
    monkeypatch.delenv("SKILL_REGION", raising=False)

    got = statuses(ok)

    assert got["needs-bins"] == "missing: bins=no-such-jq"
    assert got["any-bin"] == "ready"
    assert got["no-any-bin"] == "missing: anyBins=no-a|no-b"
    assert got["needs-env"] == "missing: env=SKILL_REGION"
    assert got["needs-config"] == "missing: config=agents.defaults.userTimezone"
    assert got["own-config"] == "missing: config=apiBase"
    assert got["other-os"] == f"os: {other} only"
    assert got["this-os"] == got["always"] == "ready"

    ok("config", "set", "agents.defaults.userTimezone", "Europe/Berlin")
    ok("config", "set", "skills.entries.needs-env.env", '{"SKILL_REGION": "plain"}')
    ok("config", "set", "skills.entries.this-os.enabled", "false")
    # a skill's own settings (skills.entries.<name>.config) meet its requires.config
    ok("config", "set", "skills.entries.own-config.config", '{"apiBase": "https://x.example"}')
    got = statuses(ok)
    assert got["needs-config"] == got["needs-env"] == got["own-config"] == "ready"
    assert got["this-os"] == "disabled"
    check = ok("skill", "check")
    assert "needs-bins (workspace): missing: bins=no-such-jq" in check
    assert "this-os (workspace): disabled" in check
    offered = json.loads(ok("skill", "check", "--json"))["offered"]
    assert "needs-env" in offered and "needs-bins" not in offered


def test_a_secret_skill_env_goes_to_credentials_not_the_log_and_reaches_exec(
        models, ok, server):
    ok("config", "set", "tools", '{"exec": {"mode": "full"}}')
    make_skill(ws(models) / "skills", "weather",
               metadata={"fased": {"requires": {"env": ["WEATHER_KEY"]}}})
    assert statuses(ok)["weather"] == "missing: env=WEATHER_KEY"

    ok("skill", "env", "weather", "WEATHER_KEY", input="sk-very-secret-42\n")

    assert statuses(ok)["weather"] == "ready"
    creds = json.loads((models / "credentials.json").read_text())
    assert creds["skills"] == {"weather": {"WEATHER_KEY": "sk-very-secret-42"}}
    server.script(Reply("", tool_calls=[("exec", json.dumps(
        {"command": "echo key=$WEATHER_KEY"}))]), Reply("done"))
    ok("chat", "what is the key")
    results = [m for m in server.requests[-1]["json"]["messages"] if m["role"] == "tool"]
    assert results[0]["content"].endswith("key=***")  # the command had it; the model not
    log = b"".join(p.read_bytes() for p in (models / "log").iterdir())
    assert b"very-secret" not in log
    recorded = [e["data"] for e in events(models) if e["type"] == "skill.env_set"]
    assert recorded == [{"skill": "weather", "variable": "WEATHER_KEY",
                         "fingerprint": recorded[0]["fingerprint"]}]
    ok("skill", "env", "weather", "WEATHER_KEY", "--unset")
    assert statuses(ok)["weather"] == "missing: env=WEATHER_KEY"
    assert "skills" not in json.loads((models / "credentials.json").read_text())


# -- per agent -------------------------------------------------------------------------------------

def test_defaults_and_agent_lists_and_allow_deny_reset_as_events(set_up, ok):
    root = set_up / "skills"
    for name in ("alpha", "beta", "gamma"):
        make_skill(root, name)
    ok("agent", "create", "ops")
    assert statuses(ok, "--agent", "ops")["beta"] == "ready"  # no list: every skill

    ok("config", "set", "agents.defaults.skills", '["alpha", "beta"]')
    assert statuses(ok, "--agent", "ops")["gamma"] == "not allowed"

    assert ok("agent", "skills", "deny", "ops", "beta") == "Denied beta for ops.\n"
    got = statuses(ok, "--agent", "ops")
    assert (got["alpha"], got["beta"]) == ("ready", "not allowed")
    assert statuses(ok, "--agent", "main")["beta"] == "ready"  # only ops changed
    ok("agent", "skills", "allow", "ops", "gamma")
    assert statuses(ok, "--agent", "ops")["gamma"] == "ready"
    changes = [e["data"] for e in events(set_up) if e["type"] == "config.set"
               and e["data"]["path"].endswith(".skills")]
    assert changes[-1]["value"] == ["alpha", "gamma"] and changes[-1]["agent"] == "ops"

    ok("agent", "skills", "reset", "ops")
    assert statuses(ok, "--agent", "ops")["beta"] == "ready"
    assert events(set_up)[-1]["type"] == "config.unset"
    ok("config", "set", "agents.list[1].skills", "[]")
    assert set(statuses(ok, "--agent", "ops").values()) == {"not allowed"}
    assert ok("agent", "skills", "reset", "main") == "Nothing changed for main.\n"


def test_agent_skills_refuses_bad_input_and_changes_nothing(set_up, run):
    before = len(events(set_up))
    for args in (("deny", "main"), ("deny", "main", "Not_A_Name"), ("deny", "nobody", "x")):
        result = run("agent", "skills", *args)
        assert result.exit_code in (1, 2) and result.stderr.startswith("Error: ")
    assert len(events(set_up)) == before


# -- what the model sees ---------------------------------------------------------------------------

def test_the_prompt_lists_offered_skills_and_the_log_records_names_and_hashes(models, ok,
                                                                              server):
    folder = make_skill(models / "skills", "deploy", "Ship the app. Use for <deploys>.")
    make_skill(models / "skills", "hidden",
               metadata={"fased": {"requires": {"bins": ["no-such-bin"]}}})

    ok("chat", "hello")

    system = system_of(server.requests[-1])
    assert "<available_skills>" in system
    assert (f"<skill>\n<name>deploy</name>\n<description>Ship the app. Use for &lt;deploys&gt;."
            f"</description>\n<location>{folder / 'SKILL.md'}</location>\n</skill>") in system
    assert "<name>skill-writing</name>" in system and "hidden" not in system
    recorded = [e["data"] for e in events(models) if e["type"] == "context.recorded"]
    files = {r["name"]: r for r in recorded if r["kind"] == "file"}
    assert files["skills/deploy/SKILL.md"]["text"] == (folder / "SKILL.md").read_text()
    prompt = next(r for r in recorded if r["kind"] == "prompt")
    marks = {p["skill"]: p["sha256"] for p in prompt["parts"] if isinstance(p, dict)
             and "skill" in p}
    listed = listing(ok)
    assert marks["deploy"] == listed[("deploy", "managed")]["sha256"]
    turn = next(e["data"]["turn"] for e in events(models) if e["type"] == "turn.queued")
    replayed = json.loads(ok("replay", "--turn", turn, "--request", "--json"))
    assert replayed[-1]["messages"][0]["content"] == system
    context = ok("agent", "context")
    assert "Skills offered: deploy, skill-writing" in context


def test_the_block_drops_descriptions_before_skills_and_agent_context_says_so(models, ok,
                                                                             run):
    for i in range(6):
        make_skill(models / "skills", f"skill-{i}", "d" * 200)
    ok("config", "set", "skills.entries.fased-cli.enabled", "false")
    full = json.loads(ok("agent", "context", "--json"))
    assert all(s["described"] for s in full["skills"]) and full["skills_note"] is None

    ok("config", "set", "skills.limits.maxSkillsPromptChars", "1500")
    view = json.loads(ok("agent", "context", "--json"))
    described = [s["described"] for s in view["skills"]]
    assert len(view["skills"]) == 7 and described[0] and not described[-1]
    assert view["skills_note"].endswith("to fit skills.limits.maxSkillsPromptChars (1,500)")
    block = view["system_prompt"].split("<available_skills>")[1].split("</available_skills>")[0]
    assert len(block) <= 1500

    ok("config", "set", "skills.limits.maxSkillsPromptChars", "300")
    view = json.loads(ok("agent", "context", "--json"))
    assert not any(s["described"] for s in view["skills"])
    assert view["skills_left_out"] and "skill(s) left out" in view["skills_note"]
    result = run("agent", "context")
    assert "skills:" in result.stderr and "left out" in result.stderr


def test_dollar_name_puts_the_skills_instructions_into_the_turn(models, ok, server):
    make_skill(models / "skills", "haiku", body="Answer in exactly three lines.\n")

    ok("chat", "write about rain $haiku please")
    system = system_of(server.requests[-1])
    assert "Answer in exactly three lines." in system
    assert "(the user asked for it with $haiku)" in system

    ok("chat", "and now plain, costs $5 not $nosuch")
    assert "Answer in exactly three lines." not in system_of(server.requests[-1])


def test_read_opens_offered_skill_folders_only(models, ok, server):
    folder = make_skill(models / "skills", "notes")
    (folder / "reference.md").write_text("the reference text")
    make_skill(models / "skills", "gated",
               metadata={"fased": {"requires": {"bins": ["no-such-bin"]}}})
    (models / "skills" / "gated" / "secret.md").write_text("gated text")
    server.script(Reply("", tool_calls=[
        ("read", json.dumps({"path": str(folder / "reference.md")})),
        ("read", json.dumps({"path": str(models / "skills" / "gated" / "secret.md")})),
        ("read", json.dumps({"path": str(models / "credentials.json")}))]), Reply("ok"))

    ok("chat", "look")

    results = [m for m in server.requests[-1]["json"]["messages"] if m["role"] == "tool"]
    assert "the reference text" in results[0]["content"]
    assert "gated text" not in results[1]["content"] and "off limits" in results[1]["content"]
    assert "off limits" in results[2]["content"]


# -- commands -----------------------------------------------------------------------------------

def test_skill_new_writes_a_valid_template_and_show_prints_it(set_up, ok, run):
    out = ok("skill", "new", "release-notes", "-d", "Draft release notes: use when asked")
    assert out == f"Created {ws(set_up) / 'skills' / 'release-notes' / 'SKILL.md'}\n"
    ok("skill", "new", "everywhere", "--global")
    assert (set_up / "skills" / "everywhere" / "SKILL.md").is_file()
    got = listing(ok)
    assert got[("release-notes", "workspace")]["status"] == "ready"
    assert got[("release-notes", "workspace")]["description"] == \
        "Draft release notes: use when asked"
    assert got[("everywhere", "managed")]["status"] == "ready"
    shown = run("skill", "show", "release-notes")
    assert shown.stdout.startswith("---\nname: release-notes\n")
    assert "(workspace; ready)" in shown.stderr
    assert run("skill", "new", "Bad_Name").exit_code == 2
    assert run("skill", "new", "release-notes").exit_code == 3
    assert run("skill", "show", "nope").stderr.startswith("Error: no skill 'nope'")


def test_bundled_skills_are_valid_and_teach_skills_and_fased(set_up, ok):
    names = sorted(p.name for p in BUNDLED.iterdir() if (p / "SKILL.md").is_file())
    assert names == ["fased-cli", "skill-writing"]
    found = listing(ok)
    assert {n for n, src in found if src == "bundled"} == set(names)
    assert "fased task new" in (BUNDLED / "fased-cli" / "SKILL.md").read_text()
    assert "description" in (BUNDLED / "skill-writing" / "SKILL.md").read_text()


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def test_install_from_a_local_git_repository_records_provenance_and_later_changes(
        set_up, ok, run, tmp_path):
    repo = tmp_path / "repo"
    make_skill(repo / "skills", "pdf", "Read PDFs. Use for .pdf files.")
    make_skill(repo / "skills", "csv")
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "skills", cwd=repo)
    url = f"file://{repo}"

    assert "several skills" in run("skill", "install", url).stderr
    out = ok("skill", "install", url, "--name", "pdf", "--global")

    dest = set_up / "skills" / "pdf"
    assert out.startswith(f"Installed skill pdf in {dest} (git ")
    assert not (dest / ".git").exists() and (dest / "SKILL.md").is_file()
    installed = [e["data"] for e in events(set_up) if e["type"] == "skill.installed"]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert installed == [{"name": "pdf", "path": str(dest), "scope": "managed",
                          "source": url, "kind": "git", "commit": head,
                          "sha256": listing(ok)[("pdf", "managed")]["sha256"]}]
    assert "(changed)" not in ok("skill", "list")
    (dest / "SKILL.md").write_text((dest / "SKILL.md").read_text() + "more\n")
    assert "ready (changed)" in ok("skill", "list")
    assert run("skill", "install", url, "--name", "pdf", "--global").exit_code == 3

    assert ok("skill", "remove", "pdf", "--global") == f"Removed skill pdf ({dest}).\n"
    assert not dest.exists()
    assert events(set_up)[-1]["type"] == "skill.removed"
    assert run("skill", "remove", "skill-writing").exit_code == 2  # bundled: not removable


def test_a_git_url_with_credentials_is_recorded_without_them(set_up, ok, tmp_path,
                                                             monkeypatch):
    """A private repository's URL often carries a token (https://user:TOKEN@host/...): the
    clone gets it, the log (skill.installed's source), `skill list` and replay do not."""
    from fased.skills import install

    cloned: list[str] = []

    def fetch(source, into):  # the clone, without a git server: what it was asked for
        cloned.append(source.text)
        source.commit = "0" * 40
        return make_skill(tmp_path / "clone", "pdf", "Read PDFs. Use for .pdf files.")

    monkeypatch.setattr(install, "fetch", fetch)
    url = "https://bot:ghp_s3cretT0ken@git.example/org/skills.git?private_token=s3cretQ"
    ok("skill", "install", url, "--global")
    assert cloned == [url]
    [installed] = [e["data"] for e in events(set_up) if e["type"] == "skill.installed"]
    assert installed["source"] == "https://***@git.example/org/skills.git?private_token=***"
    shown = ok("skill", "list") + ok("replay", "--json")
    recorded = b"".join(p.read_bytes() for p in (set_up / "log").rglob("*") if p.is_file())
    recorded += (set_up / "state.db").read_bytes()
    for secret in ("s3cretT0ken", "s3cretQ"):
        assert secret not in shown and secret.encode() not in recorded


def test_a_git_url_an_older_fased_recorded_with_its_token_is_shown_masked(set_up, ok):
    """fased 0.4.0 recorded the URL whole: replay prints it masked, and state.db (rebuilt
    for the skills projection's version 2) does not keep it."""
    from fased.store import Draft, Store

    Store(set_up).append_internal([Draft("skill.installed", "skills", {
        "name": "pdf", "path": str(set_up / "skills" / "pdf"), "scope": "managed",
        "source": "https://bot:ghp_0ldT0ken@git.example/skills.git", "kind": "git",
        "sha256": "0" * 64})])
    shown = ok("replay", "--json", "-t", "skill.installed")
    assert '"source":"https://***@git.example/skills.git"' in shown.replace(" ", "")
    ok("replay", "--rebuild")
    assert b"0ldT0ken" not in (set_up / "state.db").read_bytes()


def test_install_from_a_tarball_into_the_workspace(set_up, ok, tmp_path):
    src = make_skill(tmp_path / "src", "tidy", "Tidy a folder. Use when asked to clean up.")
    (src / "scripts").mkdir()
    (src / "scripts" / "run.sh").write_text("echo tidy\n")
    os.symlink("scripts/run.sh", src / "link.sh")  # inside the folder: fine
    tarball = tmp_path / "tidy.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src, arcname="tidy")

    ok("skill", "install", str(tarball))

    dest = ws(set_up) / "skills" / "tidy"
    assert (dest / "scripts" / "run.sh").read_text() == "echo tidy\n"
    assert os.readlink(dest / "link.sh") == "scripts/run.sh"
    data = next(e["data"] for e in events(set_up) if e["type"] == "skill.installed")
    assert (data["kind"], data["scope"], data["agent"]) == ("tarball", "workspace", "main")
    assert listing(ok)[("tidy", "workspace")]["status"] == "ready"


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.txt"])
def test_a_symlink_pointing_out_of_the_skill_folder_is_refused(set_up, run, tmp_path,
                                                                target):
    src = make_skill(tmp_path / "src", "sneaky")
    (tmp_path / "src" / "outside.txt").write_text("outside")
    os.symlink(target, src / "data.txt")
    before = len(events(set_up))

    result = run("skill", "install", str(src))

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: data.txt is a symlink that points out of the "
                                    "skill folder")
    assert not (ws(set_up) / "skills" / "sneaky").exists()
    assert len(events(set_up)) == before


def test_install_refuses_a_broken_skill_and_a_missing_source(set_up, run, tmp_path):
    make_skill(tmp_path, "broken", front="name: broken\n")
    result = run("skill", "install", str(tmp_path / "broken"))
    assert result.exit_code == 2 and "missing description" in result.stderr
    result = run("skill", "install", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and result.stderr.startswith("Error: ")


def test_config_set_refuses_a_secret_looking_skill_env_and_logs_nothing(set_up, run):
    before = len(events(set_up))
    for args in (("skills.entries.gh.env.GITHUB_TOKEN", "abc"),
                 ("skills.entries.gh.env", '{"PLAIN": "sk-abcdefghijklmnop1234"}'),
                 ("skills", '{"entries": {"gh": {"env": {"API_KEY": "x"}}}}')):
        result = run("config", "set", *args)
        assert result.exit_code == 2, args
        assert "looks secret: the log would keep it" in result.stderr
        assert "`fased skill env gh" in result.stderr
    assert len(events(set_up)) == before
    # nor does a hand edit of fased.json get one into the log
    doc = json.loads((set_up / "fased.json").read_text())
    (set_up / "fased.json").write_text(json.dumps(
        {**doc, "skills": {"entries": {"gh": {"env": {"GH_TOKEN": "ghp_abcdefgh12345678"}}}}}))
    result = run("agent", "list")
    assert result.exit_code == 2 and "looks secret: the log would keep it" in result.stderr
    assert len(events(set_up)) == before
    (set_up / "fased.json").write_text(json.dumps(doc))
    assert run("config", "set", "skills.entries.gh.env.REGION", "eu").exit_code == 0


def full_log(monkeypatch):
    """The log's disk is full: every append fails as a full disk fails it."""
    import errno

    from fased.log import EventLog

    def append(self, records):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EventLog, "append", append)


@pytest.mark.parametrize("replace", [False, True])
def test_an_install_the_log_cannot_record_leaves_the_skills_as_they_were(
        set_up, ok, run, tmp_path, monkeypatch, replace):
    """A skill folder in place with no skill.installed event would be a skill the agent
    loads that replay never shows: the install lands only with its event."""
    skills = ws(set_up) / "skills"
    if replace:
        make_skill(skills, "tidy", "The old one. Use when asked.")
        ok("skill", "list")
    src = make_skill(tmp_path / "src", "tidy", "The new one. Use when asked.")
    before = len(events(set_up))
    full_log(monkeypatch)

    result = run("skill", "install", str(src), *(["--force"] if replace else []))

    assert result.exit_code != 0
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert "no space left on the device" in result.stderr
    monkeypatch.undo()
    assert len(events(set_up)) == before
    if replace:
        assert "The old one" in (skills / "tidy" / "SKILL.md").read_text()
    else:
        assert not (skills / "tidy").exists()
    assert sorted(p.name for p in skills.iterdir()) == (["tidy"] if replace else [])


def test_a_remove_the_log_cannot_record_leaves_the_skill_in_place(set_up, ok, run,
                                                                 monkeypatch):
    make_skill(ws(set_up) / "skills", "tidy")
    full_log(monkeypatch)
    result = run("skill", "remove", "tidy")
    assert result.exit_code != 0 and result.stderr.startswith("Error: ")
    assert (ws(set_up) / "skills" / "tidy" / "SKILL.md").is_file()


def test_a_copy_that_fails_halfway_leaves_nothing_behind(set_up, ok, run, tmp_path,
                                                         monkeypatch):
    import errno
    import shutil

    skills = ws(set_up) / "skills"
    make_skill(skills, "tidy", "The old one. Use when asked.")
    src = make_skill(tmp_path / "src", "tidy", "The new one. Use when asked.")
    (src / "big.bin").write_bytes(b"x" * 1000)
    real = shutil.copyfile

    def copyfile(a, b, **kw):
        if os.fspath(a).endswith("big.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(a, b, **kw)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    result = run("skill", "install", str(src), "--force")
    assert result.exit_code != 0 and result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr
    assert "The old one" in (skills / "tidy" / "SKILL.md").read_text()
    assert sorted(p.name for p in skills.iterdir()) == ["tidy"]


def test_a_skill_being_installed_or_left_by_a_killed_install_is_not_loaded(set_up, ok, run,
                                                                          tmp_path):
    """An install stages its copy in a hidden folder beside the skill's place; a turn that
    lists skills meanwhile neither loads it nor warns about it, and the next install sweeps
    what a killed one left."""
    import subprocess

    skills = ws(set_up) / "skills"
    dead = subprocess.Popen(["true"])
    dead.wait()
    make_skill(skills, "tidy")
    os.rename(skills / "tidy", skills / f".tidy.{dead.pid}.installing")
    make_skill(skills, "fine")

    result = run("skill", "list")
    assert result.exit_code == 0 and "skill skipped" not in result.stderr
    assert "tidy" not in result.stdout and "fine" in result.stdout

    ok("skill", "install", str(make_skill(tmp_path / "src", "other")))
    assert sorted(p.name for p in skills.iterdir()) == ["fine", "other"]


def test_a_skill_with_a_far_future_file_time_or_a_non_utf8_file_name_is_listed(set_up, ok,
                                                                              run):
    """The skills cache holds each file's name and mtime: a time past 2262 in ns (past 64
    bits) or a name that is not UTF-8 broke writing it, on every turn."""
    folder = make_skill(ws(set_up) / "skills", "odd")
    os.utime(folder / "SKILL.md", ns=(10**19, 10**19))
    (Path(os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9.txt")))).write_text("x")
    result = run("skill", "list")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and "odd" in result.stdout
    assert run("skill", "list").exit_code == 0  # from the cache it wrote


def test_force_over_a_linked_skill_replaces_the_link_and_leaves_its_target(set_up, ok,
                                                                           tmp_path):
    elsewhere = make_skill(tmp_path / "mine", "tidy", "Mine. Use when asked.")
    skills = ws(set_up) / "skills"
    skills.mkdir(parents=True, exist_ok=True)
    (skills / "tidy").symlink_to(elsewhere)
    ok("skill", "install", str(make_skill(tmp_path / "src", "tidy", "New. Use when asked.")),
       "--force")
    assert sorted(p.name for p in skills.iterdir()) == ["tidy"]
    assert not (skills / "tidy").is_symlink()
    assert "Mine" in (elsewhere / "SKILL.md").read_text()
