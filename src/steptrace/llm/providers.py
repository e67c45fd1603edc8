"""Provider registry: a provider turns (model name, messages, params) into a ``Reply``.

The facade in ``steptrace.llm`` records the call and prices it. ``scripted`` is
built in, ``openai`` and ``anthropic`` load their SDKs on first use; others are
registered by name with ``register_provider``.
"""

from __future__ import annotations

import threading

from steptrace.llm.types import Provider

_lock = threading.Lock()
_providers: dict[str, Provider] = {}


def register_provider(name: str, provider: Provider) -> None:
    """Make ``name:MODEL`` models answer through ``provider``."""
    with _lock:
        _providers[name] = provider


def get_provider(name: str) -> Provider:
    provider = _providers.get(name)
    if provider is not None:
        return provider
    if name == "scripted":
        from steptrace.llm.scripted import PROVIDER

        return PROVIDER
    if name == "openai":
        from steptrace.llm.openai import OpenAIProvider

        register_provider("openai", OpenAIProvider())
    elif name == "anthropic":
        from steptrace.llm.anthropic import AnthropicProvider

        register_provider("anthropic", AnthropicProvider())
    provider = _providers.get(name)
    if provider is None:
        known = ", ".join(sorted({"anthropic", "openai", "scripted", *_providers}))
        raise ValueError(f"unknown LLM provider {name!r}: known providers are {known}")
    return provider
