"""Model providers: one `requests`-based HTTP client per API family.

Importing this package does not import `requests`; the first request does.
"""

from __future__ import annotations

from typing import Any

from fased.errors import UsageError

from .base import (
    ERROR_KINDS,
    PROBE_RESULTS,
    ChatResult,
    Client,
    ProviderError,
    ToolCall,
    Usage,
)

# The client classes load on first use (PEP 562): a command needs one API family at most.
_CLIENTS = {"AnthropicClient": ".anthropic", "LocalClient": ".local",
            "OllamaClient": ".ollama", "OpenAIClient": ".openai"}


def __getattr__(name: str) -> Any:
    if name in _CLIENTS:
        import importlib

        return getattr(importlib.import_module(_CLIENTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

OPENAI_KINDS = (
    "openai-compatible",
    "openai",
    "openrouter",
    "lmstudio",
    "vllm",
    "litellm",
    "cloudflare",
)
KINDS = (*OPENAI_KINDS, "ollama", "anthropic", "local")


def client_for(
    kind: str,
    base_url: str,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    **timeouts: Any,
) -> Client:
    """The client for a provider kind; `params` go in the query of every request (a base
    URL's key, kept apart because paths are appended to the base URL); `timeouts` are
    connect_timeout / read_timeout."""
    if kind in OPENAI_KINDS:
        name = "OpenAIClient"
    elif kind == "ollama":
        name = "OllamaClient"
    elif kind == "anthropic":
        name = "AnthropicClient"
    elif kind == "local":
        name = "LocalClient"
    else:
        raise UsageError(f"unknown provider kind {kind!r}", hint="one of: " + ", ".join(KINDS))
    cls: type[Client] = __getattr__(name)
    client = cls(base_url, api_key, headers, label=kind, **timeouts)
    client.params = dict(params or {})
    return client


__all__ = [
    "ERROR_KINDS",
    "KINDS",
    "PROBE_RESULTS",
    "AnthropicClient",
    "ChatResult",
    "Client",
    "LocalClient",
    "OllamaClient",
    "OpenAIClient",
    "ProviderError",
    "ToolCall",
    "Usage",
    "client_for",
]
