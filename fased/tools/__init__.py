"""The tool registry: every built-in tool by name, loaded a family at a time, and which of
them an agent is offered (fased.tools.policy decides).

A family is one module declaring `TOOLS = (ToolSpec(...), ...)`; a new tool (memory, MCP
later) plugs in by adding its module here. A family is imported only when a turn offers it,
so start-up stays fast.
"""

from __future__ import annotations

import importlib

from fased.tools.base import ToolContext, ToolError, ToolResult, ToolSpec

# tool name -> the module that declares it
FAMILIES = {
    "read": "files", "write": "files", "edit": "files",
    "apply_patch": "patch",
    "exec": "exec", "process": "exec",
    "memory_search": "memory", "memory_get": "memory",
}
GROUPS = {
    "group:fs": ("read", "write", "edit", "apply_patch"),
    "group:runtime": ("exec", "process"),
    "group:memory": ("memory_search", "memory_get"),
}

__all__ = ["FAMILIES", "GROUPS", "ToolContext", "ToolError", "ToolResult", "ToolSpec",
           "spec", "specs"]

_loaded: dict[str, ToolSpec] = {}


def spec(name: str) -> ToolSpec:
    """The spec of a built-in tool (its family is imported on first use)."""
    if name not in _loaded:
        module = importlib.import_module(f"fased.tools.{FAMILIES[name]}")
        for tool in module.TOOLS:
            _loaded[tool.name] = tool
    return _loaded[name]


def specs(names: list[str]) -> list[ToolSpec]:
    return [spec(n) for n in names]
