"""What an LLM call returns: ``Reply`` with its ``Usage`` and ``ToolCall``s."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Tokens as the provider reported them (estimated for ``scripted:``)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked for: its call id, name and arguments (parsed JSON when
    the provider sent valid JSON, else the raw string)."""

    id: str
    name: str
    arguments: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Reply:
    """A model's answer: its text, tool calls, token usage and the model that gave it."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    finish_reason: str | None = None
    cost_usd: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    raw: Any = field(default=None, repr=False, compare=False)
    """The provider SDK's own response object, when there is one."""

    def __await__(self) -> Generator[None, None, Reply]:
        """``await st.llm.chat(...)`` works too (the call has already been made;
        ``achat`` is the non-blocking twin)."""
        return self
        yield  # pragma: no cover - makes this a generator


class Provider(Protocol):
    def complete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Reply: ...

    async def acomplete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Reply: ...


class SyncProvider:
    """Base for providers with only a blocking call: the async twin runs it in a thread."""

    def complete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Reply:
        raise NotImplementedError

    async def acomplete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Reply:
        return await asyncio.to_thread(self.complete, model, messages, params)
