"""Anthropic: the ``anthropic:`` provider of ``st.llm.chat`` and ``instrument_anthropic``.

``AnthropicProvider`` answers ``st.llm.chat("anthropic:MODEL", messages)`` through the
official SDK (``pip install 'steptrace[anthropic]'``), with clients created on first use
from ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``. OpenAI-style ``system`` messages
become Anthropic's ``system=`` parameter and ``max_tokens`` defaults to 1024.

``instrument_anthropic(client)`` (what ``st.instrument`` calls) wraps ``create`` and
``stream`` on an ``Anthropic`` / ``AsyncAnthropic`` client's ``messages`` in place: inside a
run each call is an ``llm`` span recorded through ``LLMSpan``, exactly like a ``chat``
call; outside a run the SDK is called unrecorded. Streams pass every event through
unchanged; how and when they are recorded is ``steptrace.llm.stream``'s.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
import weakref
from collections.abc import Sequence
from types import ModuleType, SimpleNamespace
from typing import Any, TypeVar

from steptrace.errors import ProviderNotInstalled
from steptrace.llm import stream as streaming
from steptrace.llm.recording import LLMSpan
from steptrace.llm.types import Message, Reply, ToolCall, Usage
from steptrace.runtime import current_run_id

C = TypeVar("C")

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 1024
"""Anthropic requires ``max_tokens``; ``chat`` sends this when the caller does not."""

_TRANSPORT_KEYS = frozenset({"extra_headers", "extra_query", "timeout"})
"""``create`` arguments that are about the HTTP request, not the model: not recorded
(headers may carry credentials)."""


class AnthropicSDKMissing(ProviderNotInstalled):
    """The ``anthropic`` package is not installed."""


def _sdk() -> ModuleType:
    try:
        import anthropic
    except ImportError as exc:
        raise AnthropicSDKMissing(
            "the anthropic provider needs the Anthropic SDK: pip install 'steptrace[anthropic]'"
        ) from exc
    return anthropic


# --- replies ------------------------------------------------------------------------


def _usage(usage: Any) -> Usage:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; ``Usage`` (like
    the GenAI conventions and the SDK's own spans) counts every prompt token as input."""
    if usage is None:
        return Usage()
    fresh = getattr(usage, "input_tokens", None)
    read = getattr(usage, "cache_read_input_tokens", None)
    written = getattr(usage, "cache_creation_input_tokens", None)
    details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input_tokens=None if fresh is None else fresh + (read or 0) + (written or 0),
        output_tokens=getattr(usage, "output_tokens", None),
        cached_input_tokens=read,
        reasoning_tokens=getattr(details, "thinking_tokens", None),
    )


def reply_from_message(message: Any) -> Reply:
    """The ``Reply`` for an SDK ``Message``: its text blocks, tool_use blocks and usage."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(block.text)
        elif kind == "tool_use":
            calls.append(ToolCall(block.id, block.name, block.input))
    return Reply(
        text="".join(texts),
        usage=_usage(getattr(message, "usage", None)),
        model=getattr(message, "model", "") or "",
        provider=PROVIDER,
        finish_reason=getattr(message, "stop_reason", None),
        tool_calls=tuple(calls),
        raw=message,
    )


_USAGE_KEYS: tuple[str, ...] = ("input_tokens", "output_tokens", "output_tokens_details")
_USAGE_KEYS += ("cache_read_input_tokens", "cache_creation_input_tokens")


class _Block:
    __slots__ = ("id", "input", "kind", "name", "parts")

    def __init__(self, block: Any) -> None:
        self.kind: str = getattr(block, "type", "")
        self.id: str = getattr(block, "id", "")
        self.name: str = getattr(block, "name", "")
        self.input: Any = getattr(block, "input", None)
        text = getattr(block, "text", "") if self.kind == "text" else ""
        self.parts: list[str] = [text] if text else []

    def arguments(self) -> Any:
        raw = "".join(self.parts)
        if not raw:
            return self.input
        try:
            return json.loads(raw)
        except ValueError:
            return raw


class _MessageAccumulator:
    """Builds a ``Reply`` from a stream's raw events (a ``StreamAccumulator``): text and
    tool_use blocks (input assembled from ``input_json`` deltas), usage from
    ``message_start`` and ``message_delta``, the stop reason; complete once
    ``message_stop`` arrived."""

    __slots__ = ("_blocks", "_complete", "_model", "_stop_reason", "_usage")

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self._model = ""
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._complete = False

    def add(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            block = self._blocks.get(event.index)
            delta = event.delta
            if block is None:
                return
            if delta.type == "text_delta":
                block.parts.append(delta.text)
            elif delta.type == "input_json_delta":
                block.parts.append(delta.partial_json)
        elif kind == "content_block_start":
            self._blocks[event.index] = _Block(event.content_block)
        elif kind == "message_start":
            message = event.message
            self._model = getattr(message, "model", "") or ""
            self._merge_usage(getattr(message, "usage", None))
        elif kind == "message_delta":
            self._stop_reason = getattr(event.delta, "stop_reason", None)
            self._merge_usage(getattr(event, "usage", None))
        elif kind == "message_stop":
            self._complete = True

    def complete(self) -> bool:
        return self._complete

    def error(self) -> BaseException | None:
        return None  # errors come as an ``error`` event, which the SDK raises

    def _merge_usage(self, usage: Any) -> None:
        # message_delta counts are running totals; a count it leaves out (None) keeps
        # the message_start value.
        if usage is None:
            return
        for key in _USAGE_KEYS:
            value = getattr(usage, key, None)
            if value is not None:
                self._usage[key] = value

    def reply(self) -> Reply:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for _, block in sorted(self._blocks.items()):
            if block.kind == "text":
                texts.append("".join(block.parts))
            elif block.kind == "tool_use":
                calls.append(ToolCall(block.id, block.name, block.arguments()))
        usage = self._usage
        return Reply(
            text="".join(texts),
            usage=_usage(SimpleNamespace(**usage)) if usage else Usage(),
            model=self._model,
            provider=PROVIDER,
            finish_reason=self._stop_reason,
            tool_calls=tuple(calls),
        )


def _recording(span: LLMSpan) -> streaming.StreamRecording:
    return streaming.StreamRecording(span, _MessageAccumulator())


# --- instrumentation ----------------------------------------------------------------


class _Calls:
    """How one client's calls are recorded: the request as messages and params."""

    __slots__ = ("message_type", "skip_types", "stream_types")

    def __init__(self, sdk: ModuleType) -> None:
        self.skip_types = (sdk.NotGiven, sdk.Omit)
        self.message_type = sdk.types.Message
        self.stream_types = (sdk.Stream, sdk.AsyncStream)

    @staticmethod
    def listed(kwargs: dict[str, Any]) -> Any:
        """The call's messages, an iterator of them made a list first (in ``kwargs`` too)
        so that both the record and the SDK see them."""
        messages = kwargs.get("messages", ())
        if not isinstance(messages, list | tuple):
            messages = kwargs["messages"] = list(messages)
        return messages

    def start(self, kwargs: dict[str, Any]) -> LLMSpan | None:
        """Start the span of a call made with ``kwargs``, or None outside a run."""
        if current_run_id() is None:
            return None
        recorded: list[Any] = list(self.listed(kwargs))
        system = kwargs.get("system")
        if system is not None and not isinstance(system, self.skip_types):
            recorded.insert(0, {"role": "system", "content": system})
        params = {
            key: value
            for key, value in kwargs.items()
            if key not in ("model", "messages", "system")
            and key not in _TRANSPORT_KEYS
            and not isinstance(value, self.skip_types)
        }
        return LLMSpan.start(PROVIDER, str(kwargs.get("model", "")), recorded, params)

    def start_stream(self, kwargs: dict[str, Any]) -> streaming.StreamRecording | None:
        """Start the recording of a ``messages.stream`` call, or None outside a run."""
        span = self.start(kwargs)
        return None if span is None else _recording(span)

    def record(self, span: LLMSpan, message: Any) -> None:
        """Record a non-streamed call's ``Message`` (None: a result that is not one)."""
        if isinstance(message, self.message_type):
            span.succeed(reply_from_message(message))
        else:
            span.succeed(Reply(text="", provider=PROVIDER))


def _parse(result: Any) -> Any:
    """What a ``with_raw_response`` result parses to (the SDK caches it for the caller)."""
    parse = getattr(result, "parse", None)
    if not callable(parse):
        return None
    try:
        return parse()
    except Exception:
        return None


async def _awaited(parsing: Any) -> Any:
    try:
        return await parsing
    except Exception:
        return None


def _install(messages: Any, create: Any, stream: Any) -> None:
    for name, wrapper in (("create", create), ("stream", stream)):
        original = getattr(messages, name)
        functools.update_wrapper(wrapper, original).__dict__["_steptrace_original"] = original
        setattr(messages, name, wrapper)


def _wrap_sync(messages: Any, calls: _Calls) -> None:
    create = messages.create
    stream = messages.stream

    def recorded_create(*args: Any, **kwargs: Any) -> Any:
        span = calls.start(kwargs)
        if span is None:
            return create(*args, **kwargs)
        try:
            result = create(*args, **kwargs)
        except BaseException as exc:
            span.fail(exc)
            raise
        if kwargs.get("stream") and isinstance(result, calls.stream_types):
            return streaming.RecordedStream(result, _recording(span))
        calls.record(span, result if isinstance(result, calls.message_type) else _parse(result))
        return result

    def recorded_stream(*args: Any, **kwargs: Any) -> Any:
        calls.listed(kwargs)  # the request is prepared now, the span starts on entering
        manager = stream(*args, **kwargs)
        return streaming.RecordedStreamManager(manager, lambda: calls.start_stream(kwargs))

    _install(messages, recorded_create, recorded_stream)


def _wrap_async(messages: Any, calls: _Calls) -> None:
    create = messages.create
    stream = messages.stream

    async def recorded_create(*args: Any, **kwargs: Any) -> Any:
        span = calls.start(kwargs)
        if span is None:
            return await create(*args, **kwargs)
        try:
            result = await create(*args, **kwargs)
        except BaseException as exc:
            span.fail(exc)
            raise
        if kwargs.get("stream") and isinstance(result, calls.stream_types):
            return streaming.AsyncRecordedStream(result, _recording(span))
        message = result if isinstance(result, calls.message_type) else _parse(result)
        if inspect.isawaitable(message):  # an async raw response parses when awaited
            message = await _awaited(message)
        calls.record(span, message)
        return result

    def recorded_stream(*args: Any, **kwargs: Any) -> Any:
        calls.listed(kwargs)
        manager = stream(*args, **kwargs)
        return streaming.AsyncRecordedStreamManager(manager, lambda: calls.start_stream(kwargs))

    _install(messages, recorded_create, recorded_stream)


def instrument_anthropic(client: C) -> C:
    """Record the ``messages.create`` / ``messages.stream`` calls made through ``client``
    (an ``anthropic.Anthropic`` or ``AsyncAnthropic``, or a Bedrock/Vertex twin) inside a
    run; returns ``client``, changed in place. Idempotent. Clients derived from it later
    (``with_options``, ``copy``) are not instrumented: instrument those too."""
    sdk = _sdk()
    messages: Any = client.messages  # type: ignore[attr-defined]
    if getattr(messages, "_steptrace_instrumented", False):
        return client
    calls = _Calls(sdk)
    # By the resource, not the client class: AsyncAnthropicBedrock & co. are no
    # AsyncAnthropic but have the same AsyncMessages.
    if isinstance(messages, sdk.resources.AsyncMessages):
        _wrap_async(messages, calls)
    else:
        _wrap_sync(messages, calls)
    messages._steptrace_instrumented = True
    return client


# --- the provider -------------------------------------------------------------------


def _system_text(content: Any) -> list[Any]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": "" if content is None else str(content)}]


def request_kwargs(
    model: str,
    messages: Sequence[Message],
    params: dict[str, Any],
    accepted: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The ``messages.create`` arguments for a ``chat`` call: ``system`` messages joined
    into ``system=`` (after one given as a param), ``max_tokens`` defaulted, and params
    the SDK's ``create`` has no argument for (when ``accepted`` names those it has) sent
    in ``extra_body``, so that e.g. ``temperature`` reaches the API with any SDK version."""
    systems: list[Any] = []
    rest: list[Message] = []
    for message in messages:
        if message.get("role") == "system":
            systems.append(message.get("content"))
        else:
            rest.append(message)
    kwargs: dict[str, Any] = {"max_tokens": DEFAULT_MAX_TOKENS, **params}
    if systems:
        given = kwargs.pop("system", None)
        if given is not None:
            systems.insert(0, given)
        if all(isinstance(s, str) for s in systems):
            kwargs["system"] = "\n\n".join(systems)
        else:
            kwargs["system"] = [block for s in systems for block in _system_text(s)]
    if accepted is not None:
        extra = {key: kwargs.pop(key) for key in [k for k in kwargs if k not in accepted]}
        if extra:
            kwargs["extra_body"] = {**extra, **(kwargs.get("extra_body") or {})}
    kwargs["model"] = model
    kwargs["messages"] = rest
    return kwargs


_accepted_by: dict[Any, frozenset[str] | None] = {}


def _accepted_names(create: Any) -> frozenset[str] | None:
    """The keyword arguments ``create`` takes, or None when it takes any (computed once
    per SDK method: reading a signature costs tens of microseconds)."""
    function = getattr(create, "__func__", create)
    if function in _accepted_by:
        return _accepted_by[function]
    try:
        parameters = list(inspect.signature(create).parameters.values())
    except (TypeError, ValueError):
        names = None
    else:
        any_name = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        names = None if any_name else frozenset(p.name for p in parameters)
    _accepted_by[function] = names
    return names


def _uninstrumented(create: Any) -> Any:
    """``chat`` records the call itself: a client given instrumented is not recorded twice."""
    return getattr(create, "_steptrace_original", create)


def _env_key() -> tuple[str | None, str | None]:
    return os.environ.get("ANTHROPIC_BASE_URL"), os.environ.get("ANTHROPIC_API_KEY")


class AnthropicProvider:
    """``anthropic:MODEL`` models. With no client given, SDK clients are created on first
    use (and again when ``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY`` change, or for a
    new event loop); a missing SDK raises ``AnthropicSDKMissing`` (an ImportError)."""

    def __init__(self, client: Any = None, async_client: Any = None) -> None:
        self._client = client
        self._async_client = async_client
        self._lock = threading.Lock()
        self._made: tuple[tuple[str | None, str | None], Any] | None = None
        self._made_async: tuple[tuple[str | None, str | None], Any, Any] | None = None

    def _sync(self) -> Any:
        if self._client is not None:
            return self._client
        key = _env_key()
        with self._lock:
            if self._made is None or self._made[0] != key:
                self._made = (key, _sdk().Anthropic())
            return self._made[1]

    def _async(self) -> Any:
        if self._async_client is not None:
            return self._async_client
        import asyncio

        key = _env_key()
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._made_async
            # An async HTTP pool belongs to the loop it was made in: a new loop, a new client.
            if made is None or made[0] != key or made[1]() is not loop:
                made = self._made_async = (key, weakref.ref(loop), _sdk().AsyncAnthropic())
            return made[2]

    def complete(self, model: str, messages: Sequence[Message], params: dict[str, Any]) -> Reply:
        create = _uninstrumented(self._sync().messages.create)
        kwargs = request_kwargs(model, messages, params, _accepted_names(create))
        result = create(**kwargs)
        if kwargs.get("stream"):
            return streaming.read_stream(result, _MessageAccumulator())
        return reply_from_message(result)

    async def acomplete(
        self, model: str, messages: Sequence[Message], params: dict[str, Any]
    ) -> Reply:
        create = _uninstrumented(self._async().messages.create)
        kwargs = request_kwargs(model, messages, params, _accepted_names(create))
        result = await create(**kwargs)
        if kwargs.get("stream"):
            return await streaming.aread_stream(result, _MessageAccumulator())
        return reply_from_message(result)


__all__ = ["AnthropicProvider", "AnthropicSDKMissing", "instrument_anthropic"]
