"""The LLM facade: ``chat`` / ``achat`` call a model through a provider and record the call.

A model is named ``provider:name``: ``scripted:`` (deterministic and offline,
registered with ``script(name, responder)``: the embedded default for the demo
and for tests, yours too), ``openai:`` (the official SDK; any OpenAI-compatible
endpoint through ``OPENAI_BASE_URL``) and ``anthropic:``. Inside a run each call
is an ``llm`` span (OTel ``chat {model}`` with GenAI attributes) under the
current step, recorded whether it succeeds or raises; outside a run the call is
just made. ``steptrace.instrument(client)`` records calls made through an
OpenAI or Anthropic client directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from steptrace.llm.providers import get_provider, register_provider
from steptrace.llm.recording import LLMSpan
from steptrace.llm.scripted import Responder, script
from steptrace.llm.types import Message, Provider, Reply, SyncProvider, ToolCall, Usage
from steptrace.prices import cost_usd, prices_as_of, set_price


def _split(model: str) -> tuple[str, str]:
    provider, sep, name = model.partition(":")
    if not sep or not provider or not name:
        raise ValueError(f"model {model!r} must be 'provider:name', e.g. 'scripted:triage'")
    return provider, name


def _priced(provider: str, name: str, reply: Reply) -> Reply:
    reply = replace(reply, provider=reply.provider or provider, model=reply.model or name)
    if reply.cost_usd is None:
        usage = reply.usage
        cost = cost_usd(
            provider,
            reply.model,
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
        )
        if cost is not None:
            reply = replace(reply, cost_usd=cost)
    return reply


def chat(model: str, messages: Sequence[Message], **params: Any) -> Reply:
    """Send ``messages`` to ``model`` (``provider:name``) and return the ``Reply``.

    ``params`` (temperature, max_tokens, tools, …) go to the provider and are
    recorded. Provider errors are recorded on the LLM span and re-raised unchanged.
    ``await chat(...)`` also works; ``achat`` is the non-blocking twin.
    """
    provider_name, name = _split(model)
    provider = get_provider(provider_name)
    span = LLMSpan.start(provider_name, name, messages, params)
    if span is None:
        return _priced(provider_name, name, provider.complete(name, messages, params))
    recorded = span.recorded_reply(messages)
    if recorded is not None:
        return span.succeed(recorded)
    try:
        reply = provider.complete(name, messages, params)
    except BaseException as exc:
        span.fail(exc)
        raise
    return span.succeed(_priced(provider_name, name, reply))


async def achat(model: str, messages: Sequence[Message], **params: Any) -> Reply:
    """The async twin of ``chat``."""
    provider_name, name = _split(model)
    provider = get_provider(provider_name)
    span = LLMSpan.start(provider_name, name, messages, params)
    if span is None:
        return _priced(provider_name, name, await provider.acomplete(name, messages, params))
    recorded = span.recorded_reply(messages)
    if recorded is not None:
        return span.succeed(recorded)
    try:
        reply = await provider.acomplete(name, messages, params)
    except BaseException as exc:
        span.fail(exc)
        raise
    return span.succeed(_priced(provider_name, name, reply))


__all__ = [
    "LLMSpan",
    "Message",
    "Provider",
    "Reply",
    "Responder",
    "SyncProvider",
    "ToolCall",
    "Usage",
    "achat",
    "chat",
    "cost_usd",
    "prices_as_of",
    "register_provider",
    "script",
    "set_price",
]
