"""Hooks: the user's own commands, run on the events of the log.

A hook is `{on, run, ...}` in fased.json (`hooks`, or `agents.list[].hooks`). Nothing runs a
hook inside the command that appended its event: runners (`fased run`, `fased hooks run
--once`) read the log after the hook's cursor and deliver each matching event in order, one
at a time per hook, in a worker thread so a slow hook never holds up a turn.

- `spec`     what a hook is: its name, which events it takes, its retry schedule
- `deliver`  claiming the next delivery under the log lock, recording how it went
- `command`  running the command: stdin, environment, workspace, timeout, capped output

Every delivery is two events on the stream `hook:<name>`: `hook.started` (before the
command runs, with a lease) and `hook.finished` (delivered, retry or failed). A runner that
finds a started delivery whose lease ran out records it as interrupted and runs it again, so
delivery is at least once: a crash between the command's effect and its hook.finished runs
the command again for that event. Events of type `hook.*` never trigger a hook.

In-process hook points (before a turn, after a tool call) can join later without a second
mechanism: such a point is a function the runtime calls with an event-shaped dict (type,
data) and the HookSpec list; `spec.matches` already decides on exactly that shape, and
`command.run_command` runs a command for it. What they would not get is the cursor: a point
that must not be missed records its event first and lets the runners deliver it.
"""
