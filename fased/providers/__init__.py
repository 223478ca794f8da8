"""Model providers: one `requests`-based HTTP client per API family.

Importing this package does not import `requests`; the first request does.
"""

from __future__ import annotations

from typing import Any

from fased.errors import UsageError

from .anthropic import AnthropicClient
from .base import (
    ERROR_KINDS,
    PROBE_RESULTS,
    ChatResult,
    Client,
    ProviderError,
    ToolCall,
    Usage,
)
from .ollama import OllamaClient
from .openai import OpenAIClient

OPENAI_KINDS = (
    "openai-compatible",
    "openai",
    "openrouter",
    "lmstudio",
    "vllm",
    "litellm",
    "cloudflare",
)
KINDS = (*OPENAI_KINDS, "ollama", "anthropic")


def client_for(
    kind: str,
    base_url: str,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
    **timeouts: Any,
) -> Client:
    """The client for a provider kind; `timeouts` are connect_timeout / read_timeout."""
    if kind in OPENAI_KINDS:
        cls: type[Client] = OpenAIClient
    elif kind == "ollama":
        cls = OllamaClient
    elif kind == "anthropic":
        cls = AnthropicClient
    else:
        raise UsageError(f"unknown provider kind {kind!r}", hint="one of: " + ", ".join(KINDS))
    return cls(base_url, api_key, headers, label=kind, **timeouts)


__all__ = [
    "ERROR_KINDS",
    "KINDS",
    "PROBE_RESULTS",
    "AnthropicClient",
    "ChatResult",
    "Client",
    "OllamaClient",
    "OpenAIClient",
    "ProviderError",
    "ToolCall",
    "Usage",
    "client_for",
]
