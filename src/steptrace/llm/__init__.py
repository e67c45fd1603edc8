"""The LLM facade: ``chat`` / ``achat`` call a model through a provider and record the call.

A model is named ``provider:name``. Built in is ``scripted:`` — deterministic and
offline, registered with ``script(name, responder)`` — the embedded default for
the demo and for tests (yours too). Inside a run each call is an ``llm`` span
(OTel ``chat {model}`` with GenAI attributes) under the current step, recorded
whether it succeeds or raises. Outside a run the call is just made.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from steptrace.llm.providers import Provider, get_provider, register_provider
from steptrace.llm.scripted import script
from steptrace.record import LLMUsage, encode, for_export

Message = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Reply:
    """A model's answer: its text, token usage and the model that gave it."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    finish_reason: str | None = None
    cost_usd: float | None = None

    def __await__(self) -> Generator[None, None, Reply]:
        """``await st.llm.chat(...)`` works too (the call has already been made;
        ``achat`` is the non-blocking twin)."""
        return self
        yield  # pragma: no cover - makes this a generator


def _split(model: str) -> tuple[str, str]:
    provider, sep, name = model.partition(":")
    if not sep or not provider or not name:
        raise ValueError(f"model {model!r} must be 'provider:name', e.g. 'scripted:triage'")
    return provider, name


def chat(model: str, messages: Sequence[Message], **params: Any) -> Reply:
    """Send ``messages`` to ``model`` (``provider:name``) and return the ``Reply``.

    ``params`` (temperature, max_tokens, …) go to the provider and are recorded.
    Provider errors are recorded on the LLM span and re-raised unchanged.
    """
    provider_name, name = _split(model)
    provider = get_provider(provider_name)
    call = _LLMCall.begin(provider_name, name, messages, params)
    if call is None:
        return _reply(provider, provider_name, name, provider.complete(name, messages, params))
    try:
        raw = provider.complete(name, messages, params)
    except BaseException as exc:
        call.fail(exc)
        raise
    reply = _reply(provider, provider_name, name, raw)
    call.succeed(reply)
    return reply


async def achat(model: str, messages: Sequence[Message], **params: Any) -> Reply:
    """The async twin of ``chat``."""
    provider_name, name = _split(model)
    provider = get_provider(provider_name)
    call = _LLMCall.begin(provider_name, name, messages, params)
    if call is None:
        raw = await provider.acomplete(name, messages, params)
        return _reply(provider, provider_name, name, raw)
    try:
        raw = await provider.acomplete(name, messages, params)
    except BaseException as exc:
        call.fail(exc)
        raise
    reply = _reply(provider, provider_name, name, raw)
    call.succeed(reply)
    return reply


def _reply(provider: Provider, provider_name: str, name: str, raw: Any) -> Reply:
    text, input_tokens, output_tokens, finish = raw
    return Reply(
        text=text,
        usage=Usage(input_tokens, output_tokens),
        model=name,
        provider=provider_name,
        finish_reason=finish,
        cost_usd=provider.cost_usd(name, input_tokens, output_tokens),
    )


class _LLMCall:
    """An LLM span in flight inside a run."""

    __slots__ = ("active", "messages_json", "name", "params", "parent", "provider")

    active: Any
    parent: Any
    provider: str
    name: str
    params: dict[str, Any]
    messages_json: bytes

    @classmethod
    def begin(
        cls, provider: str, name: str, messages: Sequence[Message], params: dict[str, Any]
    ) -> _LLMCall | None:
        from steptrace.workflow import _Active, _frame

        parent = _frame.get()
        if parent is None:
            return None
        call = cls()
        call.parent = parent
        call.provider = provider
        call.name = name
        call.params = params
        call.active = _Active(parent, "llm", f"chat {name}", f"chat {name}", None, None)
        record = call.active.record
        record.input = encode({"messages": list(messages), "params": params})
        call.messages_json = encode(list(messages))
        record.llm = LLMUsage(provider=provider, model=name, params=encode(params))
        return call

    def _attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.name,
            "gen_ai.input.messages": for_export(self.messages_json),
        }
        for key in ("temperature", "max_tokens", "top_p", "seed"):
            value = self.params.get(key)
            if isinstance(value, int | float):
                attributes[f"gen_ai.request.{key}"] = value
        return attributes

    def succeed(self, reply: Reply) -> None:
        active = self.active
        active.detach()
        record = active.record
        record.status = "succeeded"
        record.output = encode(reply.text)
        llm = record.llm
        assert llm is not None
        llm.input_tokens = reply.usage.input_tokens
        llm.output_tokens = reply.usage.output_tokens
        llm.cost_usd = reply.cost_usd
        self.parent.last_llm_text = reply.text
        attributes = self._attributes()
        attributes["gen_ai.response.model"] = reply.model
        attributes["gen_ai.output.messages"] = for_export(
            encode([{"role": "assistant", "content": reply.text}])
        )
        if reply.usage.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = reply.usage.input_tokens
        if reply.usage.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = reply.usage.output_tokens
        if reply.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [reply.finish_reason]
        active.finish(attributes)

    def fail(self, exc: BaseException) -> None:
        from steptrace.workflow import _fail

        active = self.active
        active.detach()
        _fail(active, exc, validation=False)
        active.finish(self._attributes(), exc)


Responder = Callable[..., str] | list[str]

__all__ = [
    "Message",
    "Provider",
    "Reply",
    "Responder",
    "Usage",
    "achat",
    "chat",
    "register_provider",
    "script",
]
