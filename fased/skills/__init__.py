"""Skills: folders of know-how (the Agent Skills format, a SKILL.md with YAML front matter)
that an agent is offered by name and reads when it decides one applies.

`loader` finds and validates them (three roots plus skills.load.extraDirs), `gating` decides
which of them a given agent is offered and says why the others are not, `install` copies one
in from a folder, a git repository or a tarball. Bundled skills live in `bundled/`.
"""
