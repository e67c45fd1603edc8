"""Provider registry: a provider turns (model name, messages, params) into an answer.

A provider returns ``(text, input_tokens, output_tokens, finish_reason)``; the
facade in ``steptrace.llm`` records it. ``scripted`` is built in; others are
registered by name.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, Protocol

Completion = tuple[str, int | None, int | None, str | None]


class Provider(Protocol):
    def complete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Completion: ...

    async def acomplete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Completion: ...

    def cost_usd(
        self, model: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None: ...


class SyncProvider:
    """Base for providers with only a blocking call: the async twin runs it in a thread."""

    def complete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Completion:
        raise NotImplementedError

    async def acomplete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Completion:
        return await asyncio.to_thread(self.complete, model, messages, params)

    def cost_usd(
        self, model: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        return None


_lock = threading.Lock()
_providers: dict[str, Provider] = {}


def register_provider(name: str, provider: Provider) -> None:
    """Make ``name:MODEL`` models answer through ``provider``."""
    with _lock:
        _providers[name] = provider


def get_provider(name: str) -> Provider:
    if name == "scripted":
        from steptrace.llm.scripted import PROVIDER

        return PROVIDER
    provider = _providers.get(name)
    if provider is None:
        known = ", ".join(sorted({"scripted", *_providers}))
        raise ValueError(f"unknown LLM provider {name!r}: known providers are {known}")
    return provider
