"""Kind local: the embedded llama.cpp server (fased.local), spoken to with the
OpenAI-compatible client like any other server; only where it listens is learned late."""

from __future__ import annotations

from typing import Any

from fased.errors import FasedError
from fased.params import LOCAL_REPLY

from .base import ChatResult, ProviderError
from .openai import OpenAIClient


class LocalClient(OpenAIClient):
    """An OpenAIClient whose server is started in this process on first use."""

    family = "local"
    #: a tiny model may ramble until its context is full: minutes on a CPU
    DEFAULT_MAX_TOKENS = LOCAL_REPLY
    #: llama.cpp's own knob against the loops tiny models fall into ("I'm ready to help.")
    REPEAT_PENALTY = 1.15

    def sent_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        return {"repeat_penalty": self.REPEAT_PENALTY, **super().sent_options(options)}

    def _setup(self) -> None:
        super()._setup()
        self.model_path = ""
        self.model_name = ""
        #: the fased home, where the server keeps its prompt cache between processes
        self.home = None

    def _where(self) -> str:
        """The embedded server, not its throwaway port: a new one each process."""
        import os

        return f"the embedded server of {os.path.basename(self.model_path) or 'its file'}"

    def _new_session(self):
        """Plain HTTP over a socket: the server is this process's own
        (fased.providers.loopback)."""
        from .loopback import LoopbackSession

        return LoopbackSession()

    def _ensure_server(self, tokens: int = 0, need=None) -> None:
        from fased.local import server_url

        self.base_url = server_url(self.model_path, self.model_name, self.home,
                                   tokens=tokens, need=need)

    def chat(self, model: str, messages: list[dict], **kwargs: Any) -> ChatResult:
        kwargs["options"] = self.sent_options({"max_tokens": kwargs.pop("max_tokens", None),
                                               **(kwargs.get("options") or {})})
        room = kwargs["options"]["max_tokens"]
        tools = kwargs.get("tools")
        counted: list[int] = []
        self._ensure_server(_tokens_needed(messages, tools, room),
                            lambda url: self._counted(url, model, messages, tools, room,
                                                      counted))
        from fased.local import context_size

        if int(room) > context_size() // 2:  # the reply's room, not the history, is the cause
            hint = (f"the embedded server holds at most {context_size()} tokens: ask for a "
                    f"shorter reply (-o max_tokens {context_size() // 4}), or set "
                    "FASED_LOCAL_CTX higher")
        elif sum(m.get("role") == "user" for m in messages) <= 1:  # no history to leave
            hint = (f"the message alone is more than the embedded server holds "
                    f"({context_size()} tokens): send a shorter one (or point the agent at a "
                    "file), or set FASED_LOCAL_CTX higher")
        else:
            hint = (f"the embedded server holds at most {context_size()} tokens: set "
                    "FASED_LOCAL_CTX higher, or start a new session (fased chat "
                    "--new-session)")
        if counted and counted[0] > context_size():  # llama.cpp would refuse it
            refused = ProviderError(
                f"{self.label}: the request needs {counted[0]} tokens of context with the "
                f"reply's {room}, more than the {context_size()} the embedded server holds",
                kind="context_length", provider=self.label, model=model)
            refused.hint = hint
            raise refused
        try:
            result = super().chat(model, messages, **kwargs)
        except ProviderError as exc:
            if exc.kind == "context_length":
                exc.hint = hint
            raise
        if self.home is not None:
            from fased.local import save_prompt

            save_prompt(self.base_url, self.model_path, self.home,
                        (result.usage.input_tokens or 0) + (result.usage.output_tokens or 0))
        return result

    def _counted(self, url: str, model: str, messages: list[dict], tools: Any,
                 room: int, into: list[int]) -> int | None:
        """The context the request needs, counted by the running server itself: its prompt
        (fased.local.count_tokens) and the reply's room, also appended to `into`; None when
        it cannot say."""
        from fased.local import count_tokens

        _, payload = self._chat_request(model, messages, False, None, tools)
        counted = count_tokens(url, payload)
        if counted is None:
            return None
        into.append(counted + int(room))
        return into[-1]

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Vectors from a second server of the same file, started with embeddings on."""
        from fased.local import server_url

        self.base_url = server_url(self.model_path, self.model_name, self.home,
                                   embedding=True)
        return super().embed(model, texts)

    def list_models(self) -> list[str]:
        """The one model the file holds (no server needed to say so)."""
        return [self.model_name]

    def probe(self, model: str | None, *, timeout: float = 10.0) -> str:
        try:
            self._ensure_server()
        except FasedError as exc:
            self.last_probe_error = exc  # type: ignore[assignment]
            return "error"
        return super().probe(model, timeout=timeout)


def _tokens_needed(messages: list[dict], tools: Any, max_tokens: int | None) -> int:
    """An estimate of the context a request needs, for the size a server starts with: its
    JSON at 3 characters a token (tokenizers of small models make ~4 of English, but half a
    character of Chinese), the reply's room, and the chat template's own tokens. The server
    then counts the request exactly (_counted): an estimate too low costs a restart of the
    server, never the reply."""
    import json

    chars = len(json.dumps(messages, ensure_ascii=False)) + len(json.dumps(tools or []))
    return chars // 3 + int(max_tokens or 0) + 64
