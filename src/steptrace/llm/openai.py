"""The ``openai:`` provider and ``instrument_openai``: LLM spans for calls through the OpenAI SDK.

``OpenAIProvider`` answers ``st.llm.chat("openai:MODEL", ...)`` with the official SDK's
chat completions (lazily created ``openai.OpenAI()`` / ``AsyncOpenAI()`` clients, so
``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` pick any OpenAI-compatible server).

``instrument_openai(client)`` (what ``st.instrument`` calls) replaces ``create`` and
``parse`` on the client's own ``chat.completions`` and ``responses`` objects with
wrappers that record each call made inside a run as an LLM span, like ``st.llm.chat``.
Streamed calls return a stream wrapper that passes every chunk through unchanged (how and
when a stream is recorded is ``steptrace.llm.stream``'s). SDK errors are recorded and
re-raised as they are. Only request arguments and responses are recorded, never the
client's key or request headers.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from steptrace.errors import ProviderNotInstalled
from steptrace.llm import stream as streaming
from steptrace.llm.recording import LLMSpan
from steptrace.llm.types import Reply, ToolCall, Usage
from steptrace.runtime import current_run_id

C = TypeVar("C")

PROVIDER = "openai"
_ORIGINAL = "_steptrace_original"
_RAW_HEADER = "x-stainless-raw-response"
# Request arguments that are not model parameters (or are recorded as the messages).
_NOT_PARAMS = frozenset(
    {"messages", "input", "instructions", "model", "stream"}
    | {"extra_headers", "extra_query", "extra_body", "timeout"}
)


class OpenAINotInstalled(ProviderNotInstalled):
    """The ``openai`` package is missing."""


class OpenAIResponseFailed(Exception):
    """A streamed Responses API call ended with ``response.failed`` (recorded on the LLM
    span, never raised: the SDK hands that event to the caller like any other)."""


def _sdk() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise OpenAINotInstalled(
            "the openai provider needs the OpenAI SDK: pip install 'steptrace[openai]'"
        ) from exc
    return openai


# --- replies from SDK responses ---------------------------------------------------------


def _arguments(value: Any) -> Any:
    """Tool-call arguments: parsed JSON when they are valid JSON, else as sent."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _usage(usage: Any, input_name: str, output_name: str) -> Usage:
    """``Usage`` from ``{input_name}_tokens`` and ``{output_name}_tokens`` (``prompt`` and
    ``completion`` for chat, ``input`` and ``output`` for the Responses API) and the cached
    and reasoning counts in their ``_tokens_details``."""
    if usage is None:
        return Usage()
    cached = getattr(getattr(usage, f"{input_name}_tokens_details", None), "cached_tokens", None)
    reasoning = getattr(
        getattr(usage, f"{output_name}_tokens_details", None), "reasoning_tokens", None
    )
    return Usage(
        input_tokens=getattr(usage, f"{input_name}_tokens", None),
        output_tokens=getattr(usage, f"{output_name}_tokens", None),
        cached_input_tokens=cached if isinstance(cached, int) else None,
        reasoning_tokens=reasoning if isinstance(reasoning, int) else None,
    )


def _chat_tool_call(call: Any) -> ToolCall:
    custom = getattr(call, "custom", None)
    if getattr(call, "type", "function") == "custom" and custom is not None:
        return ToolCall(str(call.id), str(custom.name), custom.input)
    function = call.function
    return ToolCall(str(call.id), str(function.name), _arguments(function.arguments))


def reply_from_chat_completion(response: Any) -> Reply:
    """The ``Reply`` of a ``ChatCompletion`` (its first choice)."""
    text, finish_reason = "", None
    calls: tuple[ToolCall, ...] = ()
    choices = getattr(response, "choices", None) or ()
    if choices:
        message = choices[0].message
        text = message.content or ""
        finish_reason = choices[0].finish_reason
        calls = tuple(_chat_tool_call(c) for c in getattr(message, "tool_calls", None) or ())
    return Reply(
        text=text,
        usage=_usage(getattr(response, "usage", None), "prompt", "completion"),
        model=getattr(response, "model", None) or "",
        provider=PROVIDER,
        finish_reason=finish_reason,
        tool_calls=calls,
        raw=response,
    )


def reply_from_response(response: Any) -> Reply:
    """The ``Reply`` of a Responses API ``Response``; its finish reason is the response's
    status (``completed``), or why it is incomplete (``max_output_tokens``)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in getattr(response, "output", None) or ():
        kind = getattr(item, "type", None)
        if kind == "message":
            texts.extend(
                part.text
                for part in getattr(item, "content", None) or ()
                if getattr(part, "type", None) == "output_text" and part.text is not None
            )
        elif kind == "function_call":
            calls.append(ToolCall(str(item.call_id), str(item.name), _arguments(item.arguments)))
        elif kind == "custom_tool_call":
            calls.append(ToolCall(str(item.call_id), str(item.name), item.input))
    details = getattr(response, "incomplete_details", None)
    return Reply(
        text="".join(texts),
        usage=_usage(getattr(response, "usage", None), "input", "output"),
        model=getattr(response, "model", None) or "",
        provider=PROVIDER,
        finish_reason=getattr(details, "reason", None) or getattr(response, "status", None),
        tool_calls=tuple(calls),
        raw=response,
    )


# --- streams ------------------------------------------------------------------------------


class _Accumulator:
    """Builds the reply of a stream from its items (a ``StreamAccumulator``)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument pieces]]
        self.model = ""

    def add(self, item: Any) -> None:
        raise NotImplementedError

    def complete(self) -> bool:
        raise NotImplementedError

    def reply(self) -> Reply:
        raise NotImplementedError

    def error(self) -> BaseException | None:
        return None

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(str(cid), str(name), _arguments("".join(args)))
            for cid, name, args in (self.calls[i] for i in sorted(self.calls))
        )


class _ChatAccumulator(_Accumulator):
    """Chat completion chunks (choice 0); usage comes in a last chunk when the request
    asked for it with ``stream_options={"include_usage": True}``."""

    def __init__(self) -> None:
        super().__init__()
        self.usage = Usage()
        self.finish_reason: str | None = None

    def add(self, chunk: Any) -> None:
        self.model = chunk.model or self.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = _usage(chunk.usage, "prompt", "completion")
        for choice in chunk.choices or ():
            delta = choice.delta
            if choice.index != 0 or delta is None:
                continue
            if delta.content:
                self.parts.append(delta.content)
            for call in getattr(delta, "tool_calls", None) or ():
                entry = self.calls.setdefault(call.index, ["", "", []])
                entry[0] = call.id or entry[0]
                if call.function is not None:
                    entry[1] = call.function.name or entry[1]
                    entry[2].append(call.function.arguments or "")
            self.finish_reason = choice.finish_reason or self.finish_reason

    def complete(self) -> bool:
        return self.finish_reason is not None

    def reply(self) -> Reply:
        return Reply(
            text="".join(self.parts),
            usage=self.usage,
            model=self.model,
            provider=PROVIDER,
            finish_reason=self.finish_reason,
            tool_calls=self.tool_calls(),
        )


class _ResponsesAccumulator(_Accumulator):
    """Responses API events; the final one (``response.completed``, ``.incomplete`` or
    ``.failed``) carries the whole response, usage included."""

    _FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def __init__(self) -> None:
        super().__init__()
        self.final: Any = None
        self.failed = False

    def add(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            self.parts.append(event.delta)
        elif kind == "response.function_call_arguments.delta":
            if event.output_index in self.calls:
                self.calls[event.output_index][2].append(event.delta)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = event.item
            if getattr(item, "type", None) == "function_call":
                self.calls[event.output_index] = [item.call_id, item.name, [item.arguments or ""]]
        elif kind in ("response.created", "response.in_progress"):
            self.model = getattr(event.response, "model", None) or self.model
        elif kind in self._FINAL:
            self.final = event.response
            self.failed = kind == "response.failed"

    def complete(self) -> bool:
        return self.final is not None

    def error(self) -> BaseException | None:
        if not self.failed:
            return None
        error = getattr(self.final, "error", None)
        message = getattr(error, "message", None) or "the response failed"
        code = getattr(error, "code", None)
        return OpenAIResponseFailed(f"{code}: {message}" if code else message)

    def reply(self) -> Reply:
        text = "".join(self.parts)
        if self.final is not None:
            reply = reply_from_response(self.final)
            return reply if reply.text or not text else replace(reply, text=text)
        return Reply(text=text, model=self.model, provider=PROVIDER, tool_calls=self.tool_calls())


# --- instrumentation ------------------------------------------------------------------------


def _materialized(value: Any) -> Any:
    """A list for a one-shot iterable (a generator of messages), so recording it does not
    use up what the SDK is about to send."""
    if value is None or isinstance(value, str | bytes | list | tuple | dict):
        return value
    try:
        return list(value)
    except TypeError:
        return value


def _passes_through(kwargs: dict[str, Any]) -> bool:
    """Raw-response calls (``with_streaming_response``, raw streams) hand the caller an
    unread HTTP body; reading it to record the reply would take it from them."""
    headers = kwargs.get("extra_headers")
    if not headers:
        return False
    mode = next((str(v) for k, v in headers.items() if str(k).lower() == _RAW_HEADER), None)
    return mode is not None and (mode != "true" or kwargs.get("stream") is True)


class _Endpoint:
    """What differs between chat completions and the Responses API."""

    __slots__ = ("chat", "sentinels", "streams")

    def __init__(self, sdk: Any, *, chat: bool) -> None:
        self.chat = chat
        self.sentinels = tuple(
            t for t in (getattr(sdk, "NotGiven", None), getattr(sdk, "Omit", None)) if t
        )
        self.streams: tuple[type, type] = (sdk.Stream, sdk.AsyncStream)

    def _messages(self, kwargs: dict[str, Any]) -> list[Any]:
        if self.chat:
            given = kwargs.get("messages")
            return list(given) if isinstance(given, list | tuple) else []
        messages: list[Any] = []  # Responses API: instructions (system), then the input
        instructions = kwargs.get("instructions")
        if isinstance(instructions, str):
            messages.append({"role": "system", "content": instructions})
        elif isinstance(instructions, list | tuple):
            messages.extend(instructions)
        given = kwargs.get("input")
        if isinstance(given, str):
            messages.append({"role": "user", "content": given})
        elif isinstance(given, list | tuple):
            messages.extend(given)
        elif given is not None and not isinstance(given, self.sentinels):
            messages.append(given)
        return messages

    def start(self, kwargs: dict[str, Any]) -> tuple[LLMSpan | None, dict[str, Any]]:
        """Start the LLM span of a call (None when it is not recorded) and give the
        arguments to call the SDK with."""
        if _passes_through(kwargs):
            return None, kwargs
        key = "messages" if self.chat else "input"
        given = kwargs.get(key)
        materialized = _materialized(given)
        if materialized is not given:
            kwargs = {**kwargs, key: materialized}
        params = {
            # response_format=MyModel (parse) is recorded by name
            k: f"{v.__module__}.{v.__qualname__}" if isinstance(v, type) else v
            for k, v in kwargs.items()
            if k not in _NOT_PARAMS and not isinstance(v, self.sentinels)
        }
        model = kwargs.get("model")
        model = model if isinstance(model, str) else ""
        return LLMSpan.start(PROVIDER, model, self._messages(kwargs), params), kwargs

    def finish(self, span: LLMSpan, result: Any) -> Any:
        """Record a returned result; a stream is wrapped, to be recorded when it ends."""
        if isinstance(result, self.streams):
            accumulator = _ChatAccumulator() if self.chat else _ResponsesAccumulator()
            recording = streaming.StreamRecording(span, accumulator)
            if isinstance(result, self.streams[1]):
                return streaming.AsyncRecordedStream(result, recording)
            return streaming.RecordedStream(result, recording)
        try:
            parsed = result
            if callable(getattr(result, "parse", None)) and hasattr(result, "http_response"):
                parsed = result.parse()  # with_raw_response: parse() caches what it returns
            reply = (reply_from_chat_completion if self.chat else reply_from_response)(parsed)
        except Exception:
            reply = Reply(text="", provider=PROVIDER)
        span.succeed(reply)
        return result


def _wrap_sync(method: Callable[..., Any], endpoint: _Endpoint) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if current_run_id() is None:
            return method(*args, **kwargs)
        span, kwargs = endpoint.start(kwargs)
        if span is None:
            return method(*args, **kwargs)
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            span.fail(exc)
            raise
        return endpoint.finish(span, result)

    return _mark(call, method)


def _wrap_async(method: Callable[..., Any], endpoint: _Endpoint) -> Callable[..., Any]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        if current_run_id() is None:
            return await method(*args, **kwargs)
        span, kwargs = endpoint.start(kwargs)
        if span is None:
            return await method(*args, **kwargs)
        try:
            result = await method(*args, **kwargs)
        except BaseException as exc:
            span.fail(exc)
            raise
        return endpoint.finish(span, result)

    return _mark(call, method)


def _wrap_stream(method: Callable[..., Any], manager: type) -> Callable[..., Any]:
    """``.stream()``: its request goes through the instrumented ``create``; the manager
    records the stream as its block is left (the SDK's helper closes only the response)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if current_run_id() is None:
            return method(*args, **kwargs)
        return manager(method(*args, **kwargs))

    return _mark(call, method)


def _mark(wrapper: Callable[..., Any], method: Callable[..., Any]) -> Callable[..., Any]:
    for attr in ("__name__", "__qualname__", "__doc__"):
        setattr(wrapper, attr, getattr(method, attr, None))
    setattr(wrapper, _ORIGINAL, method)
    return wrapper


def _original(method: Callable[..., Any]) -> Callable[..., Any]:
    """The SDK's own method behind an instrumented one."""
    original: Callable[..., Any] = getattr(method, _ORIGINAL, method)
    return original


def instrument_openai(client: C) -> C:
    """Record the calls made through ``client`` (``openai.OpenAI`` or ``AsyncOpenAI``, or a
    subclass such as ``AzureOpenAI``) inside a run as LLM spans; returns ``client``.

    Patches ``create``, ``parse`` and ``stream`` on this client's ``chat.completions``
    and ``responses``, in place and idempotently. Raw-response variants obtained before
    instrumenting, clients made later with ``with_options``/``copy``, and
    ``with_streaming_response`` are not recorded.
    """
    sdk = _sdk()
    manager: type
    if isinstance(client, sdk.AsyncOpenAI):
        wrap, manager = _wrap_async, streaming.AsyncRecordedStreamManager
    elif isinstance(client, sdk.OpenAI):
        wrap, manager = _wrap_sync, streaming.RecordedStreamManager
    else:
        raise TypeError(
            f"instrument_openai() needs an openai.OpenAI or AsyncOpenAI, not {client!r}"
        )
    resources = [(client.chat.completions, True)]
    responses = getattr(client, "responses", None)  # the Responses API arrived in openai 1.66
    if responses is not None:
        resources.append((responses, False))
    for resource, chat in resources:
        endpoint = _Endpoint(sdk, chat=chat)
        for name in ("create", "parse"):
            method = getattr(resource, name, None)
            if method is not None and not hasattr(method, _ORIGINAL):
                setattr(resource, name, wrap(method, endpoint))
        stream = getattr(resource, "stream", None)
        if stream is not None and not hasattr(stream, _ORIGINAL):
            resource.stream = _wrap_stream(stream, manager)
    return client


# --- the provider -------------------------------------------------------------------------


class OpenAIProvider:
    """``openai:MODEL`` through chat completions. Without clients given, it makes its own
    on first use, from ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` as they are at that call
    (a changed variable gets a new client; so does a new event loop for the async one).
    The SDK's own retries (2 by default) happen inside the one recorded call."""

    def __init__(self, client: Any = None, async_client: Any = None) -> None:
        self._sdk = _sdk()
        self._lock = threading.Lock()
        self._given = client
        self._given_async = async_client
        self._client: tuple[tuple[str | None, ...], Any] | None = None
        self._async: tuple[tuple[str | None, ...], weakref.ref[Any], Any] | None = None

    @staticmethod
    def _env() -> tuple[str | None, ...]:
        return (os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY"))

    def client(self) -> Any:
        """The ``openai.OpenAI`` this provider calls."""
        if self._given is not None:
            return self._given
        env = self._env()
        with self._lock:
            if self._client is None or self._client[0] != env:
                self._client = (env, self._sdk.OpenAI())
            return self._client[1]

    def async_client(self) -> Any:
        """The ``openai.AsyncOpenAI`` this provider calls from the running event loop."""
        if self._given_async is not None:
            return self._given_async
        env = self._env()
        loop = asyncio.get_running_loop()
        with self._lock:
            cached = self._async
            if cached is None or cached[0] != env or cached[1]() is not loop:
                cached = self._async = (env, weakref.ref(loop), self._sdk.AsyncOpenAI())
            return cached[2]

    def complete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Reply:
        create = _original(self.client().chat.completions.create)
        response = create(model=model, messages=list(messages), **params)
        if not params.get("stream"):
            return reply_from_chat_completion(response)
        return streaming.read_stream(response, _ChatAccumulator())

    async def acomplete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Reply:
        create = _original(self.async_client().chat.completions.create)
        response = await create(model=model, messages=list(messages), **params)
        if not params.get("stream"):
            return reply_from_chat_completion(response)
        return await streaming.aread_stream(response, _ChatAccumulator())
