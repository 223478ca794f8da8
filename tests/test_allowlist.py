"""The exec allowlist: a command line runs unasked only if every command in it is allowed.

A table of chained, nested, quoted and inline-code commands against one fixed allowlist, on a
PATH of stub programs (so the verdicts do not depend on what this machine has installed);
hypothesis compositions of allowed and refused segments; a check against dash itself that
the reader finds every command the shell runs; and the policy and the loop using it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import events
from fakeserver import Reply
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fased.tools.allowlist import argv_entry, check, check_entry
from fased.tools.policy import decide_exec, how_to_allow

PROGRAMS = ("git", "ls", "cat", "grep", "head", "wc", "curl", "python3", "node", "perl", "make",
            "npm", "touch", "find", "awk", "sed", "bash", "sh", "env", "xargs", "sudo",
            "timeout", "nohup", "diff", "rm", "nc", "tar", "zip", "sort", "mawk", "ruby", "php",
            "lua", "sqlite3", "psql")
ENTRIES = ["git status", "git log *", "git rebase *", "git fetch *", "ls *", "cat *", "grep *",
           "head *", "wc *", "python3 *", "node *", "npm test", "CI=1 npm test", "make *",
           "touch *", "find *", "awk *", "sed *", "bash -c 'echo hi'", "env",
           "sudo systemctl status"]
SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture],
                    deadline=None)


def stub(path: Path, body: str = "exit 0") -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def where(tmp_path_factory) -> tuple[Path, Path]:
    """(a directory of stub programs to be PATH, a workspace with its own ./git)."""
    root = tmp_path_factory.mktemp("allowlist")
    bin_ = root / "bin"
    bin_.mkdir()
    for name in PROGRAMS:
        stub(bin_ / name)
    ws = root / "ws"
    (ws / "sub").mkdir(parents=True)
    stub(ws / "git")
    stub(ws / "sub" / "git")
    return bin_, ws


def verdict(where, command: str, entries=ENTRIES, **kw):
    bin_, ws = where
    kw.setdefault("env_names", {"PATH", "HOME", "LANG"})
    return check(command, [e.replace("{bin}", str(bin_)) for e in entries], cwd=ws,
                 path=str(bin_), **kw)


ALLOWED = [
    "git status", "git log", "git log --oneline -5", "ls -la", "git status; ls",
    "git log | head -5", "{ ls; git status; }", "(cd sub && make)", "ls $(git log)",
    "cat <(ls a)", "echo 'a;curl x'", 'echo "a && curl x"', "grep 'a|b' f",
    "git log --format='%H %s'", "git 'status'", "g'i't status", "ls > out.txt",
    "ls >> out.txt 2>&1", "ls &> /dev/null", "cat < in.txt", "ls 2>/dev/null",
    "CI=1 npm test", "x=1; echo $x", "env", "sudo systemctl status", "find . -name '*.py'",
    "python3 script.py -c x", "python3 -m pytest -c cfg", "node app.js", "awk '{print $1}' f",
    "sed -n 1p f", "{bin}/git status", "ls *.py", "ls $DIR", "exec ls", "command ls",
    "command -v git", "set -euo pipefail; ls", "cd /tmp", "test -f x && ls", "[ -f x ] || ls",
    "true; false; :", "make CC=clang", "git log -c", "git rebase -i main",
    "cat <<'EOF'\n$(curl x)\nEOF", "cat <<-EOF\n\thi\n\tEOF",
    "cat <<< 'hello'", "ls # ; curl x", "git status \\\n  && ls",
    "if git status; then ls; fi", "while true; do ls; done",
    "for f in a b; do wc -l $f; done", "echo $((1+2))", "git status &", "ls\n\n\nls",
]
ASKED = [
    ("git status --short", "`git` is not allowlisted"),
    ("git push", "`git` is not allowlisted"),
    ("curl https://example.com", "`curl` is not allowlisted"),
    ("git status && curl x", "`curl` in segment 2 is not allowlisted"),
    ("git status || curl x", "`curl` in segment 2"),
    ("git status & curl x", "`curl` in segment 2"),
    ("git status\ncurl x", "`curl` in segment 2"),
    ("ls | xargs rm", "`xargs` in segment 2 runs the command it is given"),
    ("(ls; curl x)", "`curl` in segment 2"),
    ("echo $(curl x)", "`curl` in segment 1"),
    ("echo `curl x`", "`curl`"),
    ('echo "$(cat f | curl x)"', "`curl`"),
    ("echo $(echo $(curl x))", "`curl`"),
    ("echo `echo \\`curl x\\``", "`curl`"),
    ("cat <(curl x)", "`curl`"),
    ("echo ${x:-$(curl y)}", "`curl`"),
    ("echo 'unclosed", "a ' quote is not closed"),
    ('echo "unclosed', 'a " quote is not closed'),
    ("ls > ~/.bashrc", "`> ~/.bashrc` writes outside the working directory"),
    ("ls > /etc/passwd", "writes outside the working directory"),
    ("ls > ../x", "writes outside the working directory"),
    ("ls > $OUT", "cannot tell where `> $OUT`"),
    ("FOO=1 ls", "`ls` is allowlisted, but not with FOO set for it"),
    ("CI=2 npm test", "not with CI set"),
    ("PATH=/tmp git status", "`PATH=/tmp` before `git` changes what runs"),
    ("HOME=/tmp; git status", "it sets HOME"),
    ("LD_PRELOAD=/tmp/x.so ls", "changes what runs"),
    ("LANG=C; ls", "it sets `LANG`, a variable the commands after it may read"),
    ("bash -c 'curl x'", "inline code (bash -c) needs asking"),
    ("bash -c 'echo hi'", "inline code (bash -c) needs asking"),
    ("sh script.sh", "`sh` is a shell"),
    ("env ls", "`env` runs the command it is given"),
    ("sudo rm -rf /", "`sudo` runs the command it is given"),
    ("timeout 5 ls", "`timeout` runs the command"),
    ("nohup ls &", "`nohup`"),
    ("find . -exec rm {} \\;", "`find` runs a command given with `-exec`"),
    ("python3 -c 'print(1)'", "inline code (python -c) needs asking"),
    ("python3 -Sc 'x'", "inline code (python -c)"),
    ('python3 -c "$CODE"', "inline code (python -c)"),
    ("python3 $FLAGS x.py", "cannot tell whether `python` is given inline code"),
    ("node -e 'x'", "inline code (node -e)"),
    ("node --eval=x", "inline code (node --eval)"),
    ("perl -ne 'print'", "inline code (perl -ne)"),
    ("awk 'BEGIN{system(\"id\")}'", "inline code (awk program that runs commands"),
    ("awk '{print > \"/etc/x\"}' f", "inline code (awk"),
    ("sed '1e id' f", "inline code (sed script that runs commands or writes files)"),
    ("sed 's/a/b/w /etc/x' f", "inline code (sed"),
    ("sed -e p -e '1e id' f", "inline code (sed"),
    ("./git status", "`./git` is not allowlisted (it runs "),
    ("sub/../git status", "is not allowlisted (it runs "),
    ("cd sub && ./git status", "after `cd`, cannot tell what `./git` in segment 2 runs"),
    ("$CMD status", "cannot tell what `$CMD` runs"),
    ("${CMD} status", "cannot tell what `${CMD}` runs"),
    ("$(echo git) status", "cannot tell what `$(echo git)`"),
    ("git $SUB", "`git` may run a command given in its arguments (`$SUB`)"),
    ("git -c core.pager='curl x' log", "`git` runs commands set with `-c`"),
    ("git rebase -x 'curl x' main", "runs a command given to `git rebase` with `-x`"),
    ("git fetch --upload-pack='curl x'", "runs a command given with `--upload-pack`"),
    ("~/bin/git status", "cannot tell what `~/bin/git` runs"),
    ("make SHELL=/tmp/x", "inline code (make SHELL=/tmp/x) needs asking"),
    ("make 'X=$(shell curl x)'", "inline code (make X=$(shell curl x))"),
    ("npm exec curl", "`npm` runs the command given to `npm exec`"),
    ("node --import data:text/javascript,x app.js", "inline code (node data:)"),
    ("echo $[x]", "`$[` (bash arithmetic) is not checked"),
    ("{ls,-la}", "cannot tell what `{ls,-la}` runs"),
    ("l* -la", "cannot tell what `l*` runs"),
    ("eval 'curl x'", "`eval` runs code fased cannot see"),
    ("eval ls", "`eval` runs code"),
    (". ./env.sh", "`.` runs code"),
    ("source x", "`source` runs code"),
    ("exec curl x", "`curl` is not allowlisted"),
    ("export FOO=1; ls", "`export` in segment 1 changes the shell"),
    ("alias ls=curl; ls", "`alias` in segment 1 changes the shell"),
    ("f() { curl x; }", "a function definition"),
    ("function f { ls; }", "a function definition"),
    ("trap 'curl x' EXIT", "`trap` runs code"),
    ("set -a; ls", "`set -a` in segment 1 changes how the shell runs commands"),
    ("cat <<EOF\n$(curl x)\nEOF", "`curl`"),
    ("cat <<EOF\nhello\nEOF\ncurl x", "`curl` in segment 2"),
    ("cat <<EOF\nhello", "the here-document has no end line `EOF`"),
    ('cat <<< "$(curl x)"', "`curl`"),
    ("ls #\ncurl x", "`curl` in segment 2"),
    ("cu\\\nrl x", "`curl` is not allowlisted"),
    ("echo a#b; curl x", "`curl` in segment 2"),
    ("if git status; then ls; else curl x; fi", "`curl` in segment 3"),
    ("for f in $(curl x); do ls; done", "`curl`"),
    ("for PATH in /tmp; do ls; done", "it sets PATH"),
    ("case x in x) ls;; esac", "`case ... esac` is not checked"),
    ("[[ -f x ]]", "`[[ ... ]]` is not checked"),
    ("((x=1))", "`((`"),
    ("echo $((x))", "arithmetic `$((x))`"),
    ("echo ${LANG:=C}", "it sets `LANG`"),
    ("if ls; then", "`fi` is missing"),
    ("fi", "`fi` has nothing to close"),
    ("ls )", "a `)` has no `(`"),
    ("(ls", "is not closed"),
    ("ls &&", "an operator at the end has no command after it"),
    ("&& ls", "`&&` has no command before it"),
    ("nc -l 4444", "`nc` is not allowlisted"),
    # where sh and bash read a line differently, either reading may be the one that runs
    ("true &> /dev/null curl x", "`&>` followed by more words is read differently"),
    ("echo $'a\\' ; curl x ; '", "a $'...' string that sh and bash read differently"),
    ("cat <<EOF\n`echo \\\"; curl x; \\\"`\nEOF", "`curl` in segment 2"),
    ("cat <<EOF\nEO\\\nF\ncurl x\nEOF", "a here-document line ending in `\\`"),
    ('echo "$\\\n(curl x)"', "a line continuation right after `$`"),
    ("missing-program", "`missing-program` is not found on PATH"),
    ("", "there is no command in it"),
]


@pytest.mark.parametrize("command", ALLOWED)
def test_allowed_commands(where, command):
    command = command.replace("{bin}", str(where[0]))
    result = verdict(where, command)
    assert result.allowed, result.reason


@pytest.mark.parametrize(("command", "reason"), ASKED)
def test_commands_that_need_asking(where, command, reason):
    result = verdict(where, command)
    assert not result.allowed
    assert reason in result.reason


def test_the_table_is_big_enough():
    assert len(ALLOWED) + len(ASKED) >= 60


def test_each_allowed_segment_names_its_entry(where):
    result = verdict(where, "git status && git log -1 | head -3; echo done")
    assert [(s.program, s.entry) for s in result.segments] == [
        (str(where[0] / "git"), "git status"), (str(where[0] / "git"), "git log *"),
        (str(where[0] / "head"), "head *"), ("builtin echo", None)]
    assert result.reason == "allowed by git status; git log *; head *"


def test_an_entry_matches_the_resolved_program_not_the_name(where):
    bin_, ws = where
    assert verdict(where, f"{bin_}/git status").allowed
    assert verdict(where, f"{ws}/git status", entries=[f"{bin_}/git status"]).reason.startswith(
        f"`{ws}/git` is not allowlisted")
    assert verdict(where, "git status", entries=[f"{bin_}/git *"]).allowed
    assert not verdict(where, "./git status", entries=["./git *"]).allowed


def test_a_workspace_on_path_is_not_where_entries_look(where):
    bin_, ws = where
    result = check("git status", ["git status"], cwd=ws, path=f".:{bin_}")
    assert not result.allowed  # `.` comes first: the shell runs ./git
    assert check("git status", ["git status"], cwd=ws, path=f"{bin_}:.").allowed


def test_without_a_working_directory_relative_paths_are_asked_about(where):
    bin_, _ = where
    assert check("git status", ["git status"], cwd=None, path=str(bin_)).allowed
    result = check("./git status", ["git *"], cwd=None, path=str(bin_))
    assert "the working directory is not known" in result.reason
    assert "not known" in check("ls > out", ["ls *"], cwd=None, path=str(bin_)).reason


def test_strict_inline_eval_off_lets_allowlisted_interpreters_run_code(where):
    assert verdict(where, "python3 -c 'print(1)'", strict_inline=False).allowed
    assert verdict(where, "bash -c 'echo hi'", strict_inline=False).allowed
    result = verdict(where, "bash -c 'curl x'", strict_inline=False)
    assert "only an entry for exactly this command allows it" in result.reason


def test_the_calls_own_variables_need_an_entry_that_names_them(where):
    assert verdict(where, "npm test", env={"CI": "1"}).allowed
    assert "not with GIT_SSH_COMMAND set" in verdict(
        where, "git status", env={"GIT_SSH_COMMAND": "sh -c x"}).reason
    assert "it sets `x`" in verdict(where, "x=1; ls", env_names=None).reason


def test_a_variable_already_in_the_environment_cannot_be_set(where):
    assert "it sets `GIT_DIR`" in verdict(where, "GIT_DIR=/x; git status",
                                          env_names={"GIT_DIR"}).reason
    assert "it sets `GIT_DIR`" in verdict(where, "GIT_DIR=/x :; git status",
                                          env_names={"GIT_DIR"}).reason


def test_a_symlink_out_of_the_working_directory_is_outside(where, tmp_path):
    _, ws = where
    (ws / "link").symlink_to(tmp_path)
    try:
        assert "writes outside" in verdict(where, "ls > link/x").reason
    finally:
        (ws / "link").unlink()


# -- what a probe ran unasked, and more of its kind ------------------------------------------
# Under entries like `tar *`, every one of these ran a program the line does not name.

PROBED = ["tar *", "make *", "zip *", "sort *", "git *", "sed *", "awk *", "mawk *", "python3 *",
          "perl *", "node *", "ruby *", "php *", "lua *", "sqlite3 *", "psql *", "cat *", "bash"]

# getopt_long takes any unambiguous prefix of a long option, with its value after `=` or in
# the next word
ABBREVIATED = [
    ("tar -xf a.tar --to-comm='touch X'", "`tar` runs a command given with `--to-command`"),
    ("tar -xf a.tar --to-c 'touch X'", "with `--to-command`"),
    ("tar -cf /dev/null f --checkpoint=1 --checkpoint-act=exec='touch X'",
     "with `--checkpoint-action`"),
    ("tar -cf x.tar --use-comp=sh f", "with `--use-compress-program`"),
    ("tar -cf x.tar --info=x.sh f", "with `--info-script`"),
    ("tar -cf x.tar --new-vol x.sh f", "with `--new-volume-script`"),
    ("tar -cf h:x.tar --rsh-c=x f", "with `--rsh-command`"),
    ("tar -cf h:x.tar --rmt=x f", "with `--rmt-command`"),
    ("make --ev='$(shell touch X)' -n", "inline code (make --eval)"),
    ("make --ev '$(shell touch X)'", "inline code (make --eval)"),
    ("make '-E$(shell touch X)'", "inline code (make -E)"),
    ("make -nE '$(shell touch X)'", "inline code (make -E)"),
    ("zip -q z.zip f -T --unzip-comm='touch X'", "`zip` runs a command given with "
     "`--unzip-command`"),
    ("sort --compress-prog=sh f", "`sort` runs a command given with `--compress-program`"),
    ("sort --com sh f", "with `--compress-program`"),
    ("git fetch --upload-p='touch X'", "`git` runs a command given with `--upload-pack`"),
    ("git push --rec='touch X'", "with `--receive-pack`"),
    ("git rebase --ex 'touch X' main", "`git` runs a command given with `--exec`"),
    ("git clone --templ=t x y", "with `--template`"),
    ("sed --expr='1e touch X' f", "inline code (sed script that runs commands"),
    ("sed --e '1e touch X' f", "inline code (sed script that runs commands"),
    ("sed --l 5 '1e touch X' f", "inline code (sed script that runs commands"),
    ("awk --so 'BEGIN{system(\"x\")}'", "inline code (awk program that runs commands"),
    ("awk --sou='BEGIN{system(\"x\")}'", "inline code (awk program that runs commands"),
    ("awk --fi x.awk --so 'BEGIN{system(\"x\")}'", "inline code (awk program that runs"),
    ("awk -F: --as x=1 'BEGIN{system(\"x\")}'", "inline code (awk program that runs"),
    ("awk --lo x", "inline code (awk -l)"),
    ("awk -W source='BEGIN{system(\"x\")}'", "inline code (awk program that runs"),
    # mawk reads its -W abbreviations in its own way, and ignores one it does not know: `fi`
    # may be nothing there, and the program the next word
    ("awk -W so='BEGIN{system(\"x\")}'", "cannot tell whether `awk` is given inline code "
     "(`-W so`)"),
    ("mawk -W fi 'BEGIN{system(\"x\")}' f", "cannot tell whether `awk` is given inline code"),
]
ABBREVIATED_ALLOWED = ["tar -cf x.tar --checkpoint=10 f", "tar -xf a.tar --to-stdout",
                       "sort -k2 --reverse f", "make -n", "make --directory sub",
                       "sed --expression=p f", "sed --quiet -e p f", "awk --source='{print}' f",
                       "awk -F, --assign x=1 '{print x}' f", "git fetch origin --prune"]


@pytest.mark.parametrize(("command", "reason"), ABBREVIATED)
def test_an_abbreviated_long_option_is_the_option(where, command, reason):
    result = verdict(where, command, entries=PROBED)
    assert not result.allowed
    assert reason in result.reason


@pytest.mark.parametrize("command", ABBREVIATED_ALLOWED)
def test_options_that_run_nothing_stay_allowed(where, command):
    result = verdict(where, command, entries=PROBED)
    assert result.allowed, result.reason


# An interpreter with no program named reads it from stdin: a pipe, a here-document, a
# here-string, or what exec gives it (a background process's stdin is a pipe the model writes
# to). That is inline code; a program in a file it is given (`< prog.py` too) is not.
FROM_STDIN = [
    ("echo 'import os;os.system(\"x\")' | python3", "inline code (python program from stdin)"),
    ("echo x | python3 -", "inline code (python program from stdin)"),
    ("python3 - <<'E'\nimport os\nE", "inline code (python program from stdin)"),
    ("python3 <<< 'import os'", "inline code (python program from stdin)"),
    ("python3 -u /dev/stdin <<< x", "inline code (python program from stdin)"),
    ("python3 /dev/./stdin <<< x", "inline code (python program from stdin)"),
    ("python3 /proc/self/fd/0 < /dev/stdin", "inline code (python program from stdin)"),
    ("python3 /dev/fd/3 3<<< x", "inline code (python program from a file descriptor)"),
    ("echo x | python3 3< a.py", "inline code (python program from stdin)"),
    ("echo x | python3 -i script.py", "inline code (python program from stdin)"),
    ("cat f | { python3; }", "inline code (python program from stdin)"),
    ("python3 -X dev", "inline code (python program from stdin)"),
    ("echo 'system(q(x))' | perl", "inline code (perl program from stdin)"),
    ("echo x | perl -w -- -", "inline code (perl program from stdin)"),
    ("echo x | perl -d script.pl", "inline code (perl program from stdin)"),
    ("perl '-Mstrict;system(q(x))' s.pl", "inline code (perl -M"),
    ("perl '-d:Peek;system(q(x))' s.pl", "inline code (perl -d:"),
    ("echo x | node", "inline code (node program from stdin)"),
    ("echo x | node -", "inline code (node program from stdin)"),
    ("echo x | node -i", "inline code (node program from stdin)"),
    ("echo x | node --require /dev/stdin app.js", "inline code (node program from stdin)"),
    ("echo x | node --stack-size 100", "inline code (node program from stdin)"),
    ("echo x | ruby", "inline code (ruby program from stdin)"),
    ("echo x | ruby -v -", "inline code (ruby program from stdin)"),
    ("echo x | ruby -r /dev/stdin x.rb", "inline code (ruby program from stdin)"),
    ("echo x | php", "inline code (php program from stdin)"),
    ("echo x | php -a", "inline code (php program from stdin)"),
    ("php -d auto_prepend_file=/dev/stdin x.php", "inline code (php"),
    ("echo x | lua -", "inline code (lua program from stdin)"),
    ("echo '1e touch X' | sed -f - f.txt", "inline code (sed script from stdin)"),
    ("sed --file=- f <<E\n1e x\nE", "inline code (sed script from stdin)"),
    ("sed -f /dev/stdin f.txt <<< '1e touch X'", "inline code (sed script that runs commands"),
    ("echo 'BEGIN{system(\"x\")}' | awk -f -", "inline code (awk program from stdin)"),
    ("awk -f /dev/stdin <<< 'BEGIN{system(\"x\")}'", "inline code (awk program that runs"),
    ("echo x | awk -W exec /dev/stdin", "inline code (awk program from stdin)"),
    ("echo x | awk -D '{print}'", "inline code (awk program from stdin)"),
    ("echo 'all:; touch X' | make -f -", "inline code (make makefile from stdin)"),
    ("make --file /dev/stdin <<< 'all:; touch X'", "inline code (make makefile from stdin)"),
    ("echo 'curl x' | bash", "inline code (bash program from stdin)"),
    ("bash <<< 'curl x'", "inline code (bash program from stdin)"),
]
FROM_A_FILE = ["python3 script.py < data.txt", "python3 < script.py", "python3 - < script.py",
               "echo x | python3 script.py", "python3 script.py <<< data", "python3 -m pytest",
               "python3 --version", "echo x | python3 -V", "node --version", "node app.js < in",
               "node --no-warnings app.js", "node -r ./setup.js app.js", "perl script.pl < in",
               "perl -Mstrict -MList::Util=sum s.pl", "ruby -v", "ruby x.rb", "lua -v",
               "php x.php", "sed -f script.sed f", "awk -f prog.awk f",
               "sed -f - f <<< 's/a/b/'", "awk -f - f <<< '{print}'", "make -f build.mk",
               "echo x | cat", "bash < /dev/null"]


@pytest.mark.parametrize(("command", "reason"), FROM_STDIN)
def test_a_program_read_from_stdin_is_inline_code(where, command, reason):
    result = verdict(where, command, entries=PROBED)
    assert not result.allowed
    assert reason in result.reason


@pytest.mark.parametrize("command", FROM_A_FILE)
def test_a_program_from_a_file_is_not(where, command):
    result = verdict(where, command, entries=PROBED)
    assert result.allowed, result.reason


def test_a_program_from_stdin_runs_when_strict_inline_eval_is_off(where):
    assert verdict(where, "echo x | python3", entries=PROBED, strict_inline=False).allowed


# Tools that run commands through their own syntax: git's config (aliases, pagers, filters,
# hooks ...), sqlite3's and psql's meta-commands.
OWN_SYNTAX = [
    ("git config alias.pw '!touch X'", "`git` sets `alias.pw` with `git config`, a key that "
     "may name a program git runs: only an entry for exactly this command allows it"),
    ("git config --global core.pager 'touch X'", "sets `core.pager` with `git config`"),
    ("git config set core.fsmonitor 'touch X'", "sets `core.fsmonitor` with `git config`"),
    ("git config set --all core.sshCommand x", "sets `core.sshCommand` with `git config`"),
    ("git config --file .git/config core.hooksPath h", "sets `core.hooksPath`"),
    ("git config --fi=x diff.external x", "sets `diff.external`"),
    ("git config --add diff.x.textconv sh", "sets `diff.x.textconv`"),
    ("git config --replace-all Filter.x.clean 'touch X'", "sets `Filter.x.clean`"),
    ("git -C sub config credential.helper '!touch X'", "sets `credential.helper`"),
    ("git config include.path x.cfg", "sets `include.path`"),
    ("git config init.templateDir t", "sets `init.templateDir`"),
    ("git config -e", "`git` opens an editor with `git config`"),
    ("git config --ed", "`git` opens an editor with `git config`"),
    ("git config edit", "`git` opens an editor with `git config`"),
    ("git config --rename-section user alias", "renames a section with `git config`"),
    ("git config alias.pw $X", "may run a command given in its arguments (`$X`)"),
    ("git pw", "`git` may run an alias or a program named `git-pw`"),
    ("git submodule--helper foreach 'touch X'", "runs a command given to "
     "`git submodule--helper`"),
    ("git grep -O'touch X' x", "runs a command given to `git grep` with `-O`"),
    ("git grep --open-files='touch X' x", "with `--open-files-in-pager`"),
    ("git for-each-repo --config=x -- log", "`git` runs a command given"),
    ("git hook run pre-commit", "runs a command given to `git hook` with `run`"),
    ("git merge-index 'touch X' -a", "runs a command given to `git merge-index`"),
    ("sqlite3 :memory: '.shell touch X'", "`sqlite3` runs a command given with `.shell`"),
    ("sqlite3 :memory: '.system touch X'", "`sqlite3` runs a command given with `.system`"),
    ("sqlite3 :memory: '.sh touch X'", "runs a command given with `.sh`"),
    ("sqlite3 -cmd '.sy touch X' db 'select 1'", "runs a command given with `.sy`"),
    ("sqlite3 --cmd '.system touch X' db 'select 1'", "runs a command given with `.system`"),
    ("sqlite3 db \".once '|touch X'\" 'select 1'", "runs a command given with `.once`"),
    ("sqlite3 db \".import '|touch X' t\"", "runs a command given with `.import`"),
    ("sqlite3 db '.once -x' 'select 1'", "runs a command given with `.once`"),
    ("sqlite3 db '.load ./x'", "runs a command given with `.load`"),
    ("sqlite3 db \"select edit('x', 'touch X')\"", "runs a command given with `edit(`"),
    ("sqlite3 db \"SELECT load_extension('./x')\"", "runs a command given with "
     "`load_extension(`"),
    ("sqlite3 db <<< '.system touch X'", "runs a command given with `.system`"),
    ("sqlite3 db -init /dev/stdin <<< '.shell x' 'select 1'", "with `.shell`"),
    ("echo '.shell touch X' | sqlite3 db", "inline code (sqlite3 commands from stdin)"),
    ("sqlite3 db <<'E'\n.shell touch X\nE", "inline code (sqlite3 commands from stdin)"),
    ("sqlite3 -safe -nonce n db '.shell x'", "runs a command given with `.shell`"),
    ("psql -c '\\! touch X'", "`psql` runs a command given with `\\!`"),
    ("psql --comm='\\! touch X'", "`psql` runs a command given with `\\!`"),
    ("psql -tAc '\\! touch X'", "`psql` runs a command given with `\\!`"),
    ("psql -c '\\o |touch X'", "runs a command given with `\\o |`"),
    ("psql -c \"\\copy t to program 'touch X'\"", "runs a command given with `to program`"),
    ("psql -c '\\echo `touch X`'", "`psql` runs a command given in backquotes"),
    ("psql -c '\\e'", "runs a command given with `\\e`"),
    ("psql -o '|touch X' -c 'select 1'", "runs a command given with `-o |`"),
    ("psql <<< '\\! touch X'", "`psql` runs a command given with `\\!`"),
    ("echo '\\! touch X' | psql", "inline code (psql commands from stdin)"),
    ("psql -f - <<'E'\n\\! touch X\nE", "inline code (psql commands from stdin)"),
    ("echo x >> .git/config", "`>> .git/config` writes into `.git`, where git finds "
     "commands to run"),
    ("echo x > sub/.git/hooks/pre-commit", "writes into `.git`"),
    ("echo 'gitdir: /x' > .git", "writes into `.git`"),
]
OWN_SYNTAX_ALLOWED = [
    "git config user.email a@b.c", "git config --global user.name 'A B'",
    "git config core.autocrlf false", "git config init.defaultBranch main",
    "git config branch.main.remote origin", "git config color.diff.meta blue",
    "git config --get core.pager", "git config alias.pw", "git config --list",
    "git config -l --show-origin", "git config get alias.pw", "git config --unset alias.pw",
    "git config --get-regexp '^alias\\.'", "git config --file x.cfg --get a.b",
    "git status", "git log -1", "git grep -n x", "git submodule update --init",
    "sqlite3 db 'select 1'", "sqlite3 db .tables '.mode csv' 'select * from t'",
    "sqlite3 db < schema.sql", "sqlite3 db <<< 'select 1'", "sqlite3 db '.read x.sql'",
    "sqlite3 db \".import data.csv t\"", "sqlite3 -safe db '.shell x'",
    "psql -c 'select 1'", "psql -tAc 'select 1' mydb", "psql -f q.sql", "psql < q.sql",
    "psql -c '\\dt'", "psql <<< 'select 1'", "echo x > .gitignore", "echo x > .github",
]


@pytest.mark.parametrize(("command", "reason"), OWN_SYNTAX)
def test_a_tool_that_runs_commands_through_its_own_syntax(where, command, reason):
    result = verdict(where, command, entries=PROBED)
    assert not result.allowed
    assert reason in result.reason


@pytest.mark.parametrize("command", OWN_SYNTAX_ALLOWED)
def test_the_same_tools_without_it_stay_allowed(where, command):
    result = verdict(where, command, entries=PROBED)
    assert result.allowed, result.reason


def test_only_an_exact_entry_lets_git_config_name_a_program(where):
    line = "git config alias.st status"
    assert verdict(where, line, entries=[line]).allowed
    assert not verdict(where, line, entries=["git config *"]).allowed
    assert check_entry("git config *") is None
    assert check_entry("sqlite3 *") is None and check_entry("psql *") is None


# -- entries -------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "problem"), [
    ("bash *", "would let any command through: `bash` is a shell"),
    ("/bin/sh *", "would let any command through: `sh` is a shell"),
    ("env *", "`env` runs the command it is given"), ("git -c *", "`git` runs commands set"),
    ("uv run *", "`uv` runs the command given to `uv run`"), ("npm exec *", "npm exec"),
    ("npm *", None), ("make *", None),
    ("xargs *", "xargs"), ("sudo *", "sudo"), ("timeout *", "timeout"), ("python3.12", None),
    ("eval *", "`eval` runs or changes shell code"), ("export *", "`export`"),
    ("./git *", "relative path"), ("scripts/test.sh", "relative path"),
    ("ls; rm", "an entry is one command"), ("ls\nrm", "an entry is one command"),
    ("$HOME/bin/x *", "`$HOME` in an entry is an expansion"),
    ("git log $(id)", "expansion"),
    ("/usr/bin/* *", "cannot be a pattern"), ("* *", "cannot be a pattern"),
    ("'unclosed", "a ' quote is not closed"), ("FOO=1", "an entry needs a program"),
    ("", "an entry needs a program"),
    ("git *", None), ("sudo systemctl status", None), ("bash -c 'echo hi'", None),
    ("/usr/bin/git log *", None), ("CI=1 npm test", None), ("find *", None),
])
def test_check_entry(entry, problem):
    found = check_entry(entry)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(("entry", "command", "allowed"), [
    ("git log *", "git log", True), ("git log *", "git log -p x", True),
    ("git log *", "git logx", False), ("git * --dry-run", "git push origin --dry-run", True),
    ("git * --dry-run", "git push", False), ("pytest tests/*.py", "pytest tests/a.py", True),
    ("pytest tests/*.py", "pytest tests/a.py tests/b.py", False),
    ("pytest 'tests/*.py'", "pytest tests/a.py", False),
    ("pytest 'tests/*.py'", "pytest 'tests/*.py'", True),
    ("ls -l?", "ls -la", True), ("ls *", "ls 'a b'", True), ("ls 'a b'", "ls a b", False),
    ("ls a b", "ls 'a b'", False), ("ls [ab]", "ls a", True), ("ls [ab]", "ls c", False),
    ("ls x", "ls *", False), ("ls *", "ls *", True),
])
def test_entry_patterns(where, entry, command, allowed):
    bin_, ws = where
    stub(bin_ / "pytest")
    assert check(command, [entry], cwd=ws, path=str(bin_)).allowed is allowed


@given(st.lists(st.text(st.characters(blacklist_characters="\0",
                                      blacklist_categories=("Cs",)), max_size=8), max_size=5))
@SETTINGS
def test_argv_entry_matches_exactly_that_argv(where, args):
    bin_, ws = where
    argv = ["ls", *args]
    entry = argv_entry(argv)
    assert check_entry(entry) is None
    assert check(shlex.join(argv), [entry], cwd=ws, path=str(bin_)).allowed
    other = [*argv, "x"]
    assert not check(shlex.join(other), [entry], cwd=ws, path=str(bin_)).allowed
    if args:
        changed = [*argv[:-1], argv[-1] + "*"]
        assert not check(shlex.join(changed), [entry], cwd=ws, path=str(bin_)).allowed


def test_argv_entry_of_a_launcher_allows_exactly_it(where):
    bin_, ws = where
    entry = argv_entry(["sudo", "systemctl", "restart", "web"])
    assert check("sudo systemctl restart web", [entry], cwd=ws, path=str(bin_)).allowed
    assert not check("sudo systemctl restart db", [entry], cwd=ws, path=str(bin_)).allowed


# -- compositions ----------------------------------------------------------------------------

HARMLESS = st.text("abcxyz019._-/=,:@% ", min_size=1, max_size=6)


def quoted(text: str, style: int) -> str:
    if style == 0 and text.strip() and all(c.isalnum() or c in "._-/=,:@%" for c in text):
        return text
    if style == 1 or style == 0:
        return shlex.quote(text)
    if style == 2:
        return '"' + text + '"'
    return "".join("\\" + c for c in text)


@st.composite
def allowed_segment(draw) -> str:
    head = draw(st.sampled_from(["ls", "cat", "grep x", "wc -l", "head -n 1", "git log",
                                 "echo", "true", "make"]))
    args = draw(st.lists(st.tuples(HARMLESS, st.integers(0, 3)), max_size=3))
    return " ".join([head, *(quoted(a, s) for a, s in args)])


REFUSED = st.sampled_from(["curl x", "rm -rf x", "./git status", "python3 -c 'x'",
                           "bash -c ls", "xargs ls", "$CMD", "sudo rm x", "nc -l 1",
                           "git push", "eval ls", "env ls", "FOO=1 ls", "ls > /etc/x",
                           "cat <<EOF\n$(curl x)\nEOF\n", "find . -exec rm {} +"])
OPERATORS = st.sampled_from([";", " ; ", "&&", " && ", "||", "|", " | ", "&", "\n", " &\n"])


def compose(draw, leaves, depth: int = 0) -> str:
    kind = draw(st.integers(0, 7 if depth < 3 else 0))
    if kind <= 2:
        return draw(leaves)
    if kind <= 4:
        parts = [compose(draw, leaves, depth + 1) for _ in range(draw(st.integers(2, 3)))]
        out = parts[0]
        for part in parts[1:]:
            out += draw(OPERATORS) + part
        return out
    inner = compose(draw, leaves, depth + 1)
    if kind == 5:
        return draw(st.sampled_from([f"( {inner} )", f"{{ {inner}\n}}", f"(\n{inner}\n)"]))
    if kind == 6:
        # `$( (` needs its space: `$((` begins arithmetic
        return draw(st.sampled_from([f"ls $( {inner})", f'echo "$( {inner} )"',
                                     f"cat <({inner})", f"x=$( {inner})"]))
    escaped = inner.replace("\\", "\\\\").replace("`", "\\`").replace("$", "\\$")
    return f"wc `{escaped}`"


@st.composite
def only_allowed(draw) -> str:
    return compose(draw, allowed_segment())


@st.composite
def with_refused(draw) -> tuple[str, str]:
    bad = draw(REFUSED)
    marker = "\0"
    line = compose(draw, st.one_of(allowed_segment(), st.just(marker)))
    assume(marker in line)
    first, _, rest = line.partition(marker)
    return first + bad + rest.replace(marker, draw(allowed_segment())), bad


@given(only_allowed())
@SETTINGS
def test_a_composition_of_allowed_segments_is_allowed(where, line):
    result = verdict(where, line, env_names=set())
    assert result.allowed, (line, result.reason)


@given(with_refused())
@SETTINGS
def test_any_refused_segment_makes_the_whole_line_need_asking(where, case):
    line, bad = case
    result = verdict(where, line, env_names=set())
    assert not result.allowed, (line, bad)
    assert result.reason


@given(st.text(max_size=80) | st.text("ab $(){}`'\"\\;&|<>\n#=*![]-c", max_size=60))
@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_text_never_crashes_the_checker(where, text):
    result = verdict(where, text, entries=[*ENTRIES, text])
    assert isinstance(result.reason, str) and result.reason
    check_entry(text)


def test_deep_nesting_is_refused_not_a_crash(where):
    for line in ("$(" * 500 + "ls" + ")" * 500, "(" * 2000, "${x:-" * 500, "`" * 3001,
                 '"$(' * 400, "if true; then " * 300):
        result = verdict(where, line)
        assert not result.allowed


# -- against the shell itself -----------------------------------------------------------------

@st.composite
def stub_line(draw) -> str:
    names = st.sampled_from(["s1", "s2", "s3"])
    leaf = st.builds(lambda n, a, s: f"{n} {quoted(a, s)}", names, HARMLESS, st.integers(0, 3))
    return compose(draw, leaf)


# /bin/sh, and bash, which is /bin/sh on other systems
SHELLS = sorted({os.path.realpath(p) for p in ("/bin/sh", "/bin/bash", "/usr/bin/bash")
                 if os.path.exists(p)})


def ran_by(shell: str, line: str, root: Path) -> set[str] | None:
    """Which of the stubs s1, s2, s3 `shell -c line` runs (None if it did not end)."""
    log = root / "ran"
    for name in ("s1", "s2", "s3"):
        stub(root / name, f'echo "$(basename "$0")" >> {shlex.quote(str(log))}')
    try:
        subprocess.run([shell, "-c", line], cwd=root, env={"PATH": str(root)}, timeout=10,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None
    return set(log.read_text().split()) if log.exists() else set()


@pytest.mark.parametrize("shell", SHELLS)
@given(line=stub_line())
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_command_the_shell_runs_is_found(tmp_path_factory, shell, line):
    """The reader never misses a command: what the shell runs is among the segments found."""
    from fased.tools.shellsplit import split

    ran = ran_by(shell, line, tmp_path_factory.mktemp("sh"))
    found = {c.words[0].value for c in split(line).commands if c.words}
    assert ran is None or ran <= found, (line, ran, found)


VOCABULARY = ["s1", "s2", "s3", "a", "'b c'", '"d"', "\\e", ";", "&&", "||", "|", "&", "\n",
              "(", ")", "{", "}", "if", "then", "else", "elif", "fi", "for", "x", "in", "do",
              "done", "!", "$(", "`", '"', "'", "#", "\\\n", "<<E", "<<'E'", "<<-E", "E",
              "\tE", "> /dev/null", "2>&1", "< /dev/null", "<<<", "$x", "${x:-", "$((1))",
              "y=", "<(", "\\", ";;", "case", "esac", "*", "-c", "s1()", "$'", " ", "&>",
              "&>>", "$", "'\\'", "\\'", "{s1,s2}", "~", "x=(", "$[", "|&", "${x#", "\t",
              "time", "[[", "]]", "function"]


@pytest.mark.parametrize("shell", SHELLS)
@given(tokens=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=14),
       spaced=st.booleans())
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_what_the_reader_accepts_hides_no_command_from_it(tmp_path_factory, shell, tokens,
                                                          spaced):
    """Token soup (mostly broken): whenever the reader does not refuse a line, every
    command the shell runs from it is among those it found."""
    from fased.tools.shellsplit import Unsure, split

    line = " ".join(tokens) if spaced else "".join(tokens)
    try:
        found = {c.words[0].value for c in split(line).commands if c.words}
    except Unsure:
        return
    ran = ran_by(shell, line, tmp_path_factory.mktemp("soup"))
    assert ran is None or ran <= found, (line, ran, found)


# -- the policy and the loop ---------------------------------------------------------------------

def tools(mode: str, *entries: str, **more) -> dict:
    return {"exec": {"mode": mode, "allowlist": list(entries), **more}}


def test_decide_exec_denies_in_allowlist_mode_and_asks_in_ask_mode(where):
    bin_, ws = where
    environ = {"PATH": str(bin_)}
    line = "git status && curl x"
    deny = decide_exec(line, tools("allowlist", "git status"), cwd=ws, environ=environ)
    ask = decide_exec(line, tools("ask", "git status"), cwd=ws, environ=environ)
    assert (deny.verdict, deny.reason) == ("deny", "`curl` in segment 2 is not allowlisted")
    assert (ask.verdict, ask.reason) == ("ask", "`curl` in segment 2 is not allowlisted")
    allow = decide_exec("git status | head -1", tools("ask", "git status", "head *"), cwd=ws,
                        environ=environ)
    assert (allow.verdict, allow.reason) == (
        "allow", "matches tools.exec.allowlist (git status; head *)")
    assert "curl *" in how_to_allow(line, ask)


def test_decide_exec_reads_strict_inline_eval(where):
    bin_, ws = where
    environ = {"PATH": str(bin_)}
    assert decide_exec("python3 -c 1", tools("ask", "python3 *"), cwd=ws,
                       environ=environ).verdict == "ask"
    assert decide_exec("python3 -c 1", tools("ask", "python3 *", strictInlineEval=False),
                       cwd=ws, environ=environ).verdict == "allow"


def test_decide_exec_uses_the_path_exec_passes_on(where, tmp_path):
    bin_, ws = where
    other = tmp_path / "other"
    other.mkdir()
    stub(other / "git")
    line, settings_ = "git status", tools("allowlist", f"{bin_}/git status")
    assert decide_exec(line, settings_, cwd=ws, environ={"PATH": str(bin_)}).verdict == "allow"
    assert decide_exec(line, settings_, cwd=ws,
                       environ={"PATH": f"{other}:{bin_}"}).verdict == "deny"


def test_how_to_allow_never_suggests_an_entry_that_cannot_work():
    assert "no allowlist entry lets it run unasked" in how_to_allow("bash -c 'x'")
    assert "no allowlist entry" in how_to_allow("./run.sh")
    assert '["git *"]' in how_to_allow("git push")
    assert '["git *"]' in how_to_allow("cd x && git push")


def call(name: str, **args) -> tuple[str, str]:
    return (name, json.dumps(args))


def finished(home: Path) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] == "tool.finished"]


def test_the_loop_runs_a_chain_of_allowlisted_commands(models, ok, run, server):
    ok("config", "set", "tools", '{"exec": {"mode": "allowlist", "allowlist": ["touch *"]}}')
    server.script(Reply("", tool_calls=[call("exec", command="touch a && touch b; echo ok")]),
                  Reply("done"))

    assert run("chat", "go", env={"FASED_NO_TTY": "1"}).exit_code == 0

    assert (models / "workspace" / "a").exists() and (models / "workspace" / "b").exists()
    [result] = finished(models)
    assert result["status"] == "ok"


def test_the_loop_refuses_a_chain_with_one_command_not_allowlisted(models, ok, run, server):
    ok("config", "set", "tools", '{"exec": {"mode": "allowlist", "allowlist": ["touch *"]}}')
    server.script(Reply("", tool_calls=[call("exec", command="touch a; rm -f a")]),
                  Reply("done"))

    assert run("chat", "go", env={"FASED_NO_TTY": "1"}).exit_code == 0

    assert not (models / "workspace" / "a").exists()
    [result] = finished(models)
    assert result["status"] == "denied"
    assert "`rm` in segment 2 is not allowlisted" in result["result"]


def test_the_loop_asks_about_inline_code_of_an_allowlisted_interpreter(models, ok, run,
                                                                       server):
    ok("config", "set", "tools", '{"exec": {"mode": "ask", "allowlist": ["sh *"]}}')
    server.script(Reply("", tool_calls=[call("exec", command="sh -c 'touch ran'")]),
                  Reply("done"))
    ok("chat", "--queue", "go")

    # nobody can be asked here: the turn parks on the request, saying why it needs asking
    assert run("run", "--once", env={"FASED_NO_TTY": "1"}).exit_code == 0
    [request] = json.loads(ok("approvals", "list", "--json"))
    assert request["command"] == "sh -c 'touch ran'"
    assert "inline code" in request["reason"] and "-c) needs asking" in request["reason"]
    ok("approvals", "deny", request["id"])
    assert run("run", "--once", env={"FASED_NO_TTY": "1"}).exit_code == 0

    assert not (models / "workspace" / "ran").exists()
    assert finished(models)[0]["status"] == "denied"


def test_strict_inline_eval_is_a_config_key(models, ok):
    ok("config", "set", "tools.exec.strictInlineEval", "false")
    assert json.loads((models / "fased.json").read_text())["tools"]["exec"][
        "strictInlineEval"] is False


def test_decide_exec_defaults_to_the_environment_fased_runs_in(monkeypatch, where):
    bin_, ws = where
    monkeypatch.setenv("PATH", str(bin_))
    assert decide_exec("git status", tools("allowlist", "git status"), cwd=ws).verdict == \
        "allow"
    monkeypatch.setenv("PATH", f".:{bin_}")  # the shell would run the workspace's ./git
    assert decide_exec("git status", tools("allowlist", "git status"), cwd=ws).verdict == \
        "deny"
