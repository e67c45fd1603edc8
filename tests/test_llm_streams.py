"""Streams are recorded by one set of rules whichever SDK streams them (``steptrace.llm.stream``).

The same scenarios run over the real OpenAI and Anthropic SDKs, sync and async, against
the fake servers on loopback (``openai_server``, ``anthropic_server``): a stream read to
the end, left with ``break``, closed, left in its ``with`` block or the SDK helper's,
cancelled mid-stream, broken by an error event or a dropped connection, or ended early
by the server. Each is stored with the same status, and with what arrived until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan

import steptrace as st
from steptrace.store.model import SpanView
from tests.support.anthropic_server import FakeAnthropic
from tests.support.openai_server import Answer, FakeOpenAI

TEXT = "one two three four five six seven eight"
SEEN = 3
"""How many pieces of text the caller reads before it stops."""
MESSAGES: list[Any] = [{"role": "user", "content": "Count to eight."}]


# --- what differs between the two SDKs ------------------------------------------------------


class OpenAISide:
    name = "openai"
    usage = (12, 7)
    partial_usage = (None, None)  # asked for, usage comes in a chunk after the last word
    finish_reason = "stop"

    def __init__(self, server: FakeOpenAI) -> None:
        self.server = server

    def answer(self, end: str = "full", delay_s: float = 0.0) -> None:
        """``end``: ``full``, or after five words ``cut`` (the body just ends), ``drop``
        (the connection breaks) or ``error`` (an error event)."""
        after = 1 + 5  # the role chunk, then a chunk per word
        ends = {"cut": "cut_after", "drop": "drop_after", "error": "error_after"}
        fields = {ends[end]: after} if end in ends else {}
        self.server.answer(Answer(text=TEXT, chunk_delay_s=delay_s, **fields))

    def client(self, is_async: bool) -> Any:
        sdk = openai.AsyncOpenAI if is_async else openai.OpenAI
        return sdk(base_url=self.server.url, api_key="sk-test", max_retries=0)

    def create(self, client: Any) -> Any:
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )

    def helper(self, client: Any) -> Any:
        return client.chat.completions.stream(
            model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
        )

    @staticmethod
    def text(chunk: Any) -> str:
        return (chunk.choices[0].delta.content or "") if chunk.choices else ""

    @staticmethod
    def helper_text(event: Any) -> str:
        return str(event.delta) if event.type == "content.delta" else ""


class AnthropicSide:
    name = "anthropic"
    usage = (25, 8)
    partial_usage = (25, 1)  # message_start's
    finish_reason = "end_turn"

    def __init__(self, server: FakeAnthropic) -> None:
        self.server = server

    def answer(self, end: str = "full", delay_s: float = 0.0) -> None:
        """As ``OpenAISide.answer`` (here after five pieces of four characters)."""
        after = 3 + 5  # message_start, ping, content_block_start, then the deltas
        ends = {"cut": "cut_after_events", "drop": "drop_after_events"}
        ends["error"] = "error_after_events"
        fields = {ends[end]: after} if end in ends else {}
        self.server.reply(TEXT, event_delay_s=delay_s, **fields)

    def client(self, is_async: bool) -> Any:
        sdk = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
        return sdk(api_key="sk-ant-test", base_url=self.server.url, max_retries=0)

    def create(self, client: Any) -> Any:
        return client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES, stream=True
        )

    def helper(self, client: Any) -> Any:
        return client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)

    @staticmethod
    def text(event: Any) -> str:
        delta = getattr(event, "delta", None)
        return str(delta.text) if getattr(delta, "type", None) == "text_delta" else ""

    @staticmethod
    def helper_text(event: Any) -> str:
        return str(event.text) if event.type == "text" else ""


Side = OpenAISide | AnthropicSide


@pytest.fixture(params=["openai", "anthropic"])
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    if request.param == "openai":
        with FakeOpenAI() as server:
            yield OpenAISide(server)
    else:
        with FakeAnthropic() as fake:
            yield AnthropicSide(fake)


# --- reading a stream the sync or the async way ------------------------------------------


class SyncReader:
    """Sync SDK clients and streams (called from the test's event loop)."""

    @asynccontextmanager
    async def client(self, side: Side) -> AsyncIterator[Any]:
        with side.client(is_async=False) as client:
            yield st.instrument(client)

    async def call(self, result: Any) -> Any:
        return result

    async def read(
        self, stream: Any, text: Callable[[Any], str], seen: list[str], n: int | None = None
    ) -> None:
        """Read ``stream`` into ``seen``, leaving the loop with ``break`` after ``n``
        pieces of text (to the end when None)."""
        for item in stream:
            if piece := text(item):
                seen.append(piece)
            if len(seen) == n:
                break

    async def close(self, stream: Any) -> None:
        stream.close()

    @asynccontextmanager
    async def entered(self, manager: Any) -> AsyncIterator[Any]:
        with manager as stream:
            yield stream


class AsyncReader:
    """The async twin of ``SyncReader``."""

    @asynccontextmanager
    async def client(self, side: Side) -> AsyncIterator[Any]:
        async with side.client(is_async=True) as client:
            yield st.instrument(client)

    async def call(self, result: Any) -> Any:
        return await result

    async def read(
        self, stream: Any, text: Callable[[Any], str], seen: list[str], n: int | None = None
    ) -> None:
        async for item in stream:
            if piece := text(item):
                seen.append(piece)
            if len(seen) == n:
                break

    async def close(self, stream: Any) -> None:
        await stream.close()

    @asynccontextmanager
    async def entered(self, manager: Any) -> AsyncIterator[Any]:
        async with manager as stream:
            yield stream


Reader = SyncReader | AsyncReader


@pytest.fixture(params=["sync", "async"])
def reader(request: pytest.FixtureRequest) -> Reader:
    return SyncReader() if request.param == "sync" else AsyncReader()


def in_step(side: Side, reader: Reader, body: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``body(client)`` as the one step of a workflow."""

    async def main() -> None:
        async with reader.client(side) as client:

            @st.step
            async def ask() -> None:
                await body(client)

            @st.workflow
            async def wf() -> None:
                await ask()

            await wf()

    asyncio.run(main())


def recorded() -> SpanView:
    """The last run's one LLM call, as stored (not the SDK's own OTel span, which the
    collector may store too)."""
    run = st.last_run()
    assert run is not None
    (span,) = [s for s in run.spans if s.kind == "llm" and s.name.startswith("chat ")]
    assert span.llm is not None
    return span


def assert_incomplete(span: SpanView, seen: list[str], side: Side) -> None:
    """Recorded incomplete, with what had arrived: ``seen`` and the usage sent so far."""
    llm = span.llm
    assert llm is not None
    assert (span.status, llm["incomplete"]) == ("incomplete", True)
    assert llm["response"] == "".join(seen)
    assert llm["finish_reason"] is None
    assert span.error is None
    if seen:
        assert (llm["input_tokens"], llm["output_tokens"]) == side.partial_usage


# --- the scenarios ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["create", "helper"])
def test_a_stream_read_to_its_end_succeeded(side: Side, reader: Reader, how: str) -> None:
    side.answer()
    seen: list[str] = []

    async def body(client: Any) -> None:
        if how == "create":
            await reader.read(await reader.call(side.create(client)), side.text, seen)
        else:
            async with reader.entered(side.helper(client)) as stream:
                await reader.read(stream, side.helper_text, seen)

    in_step(side, reader, body)
    span = recorded()
    llm = span.llm
    assert llm is not None
    assert (span.status, llm["incomplete"]) == ("succeeded", False)
    assert llm["response"] == "".join(seen) == TEXT
    assert llm["finish_reason"] == side.finish_reason
    assert (llm["input_tokens"], llm["output_tokens"]) == side.usage
    assert span.duration_ms is not None
    assert 0 < llm["time_to_first_chunk_ms"] < span.duration_ms


@pytest.mark.parametrize("then", ["reads on", "drops it"])
def test_a_break_ends_nothing_until_the_stream_is_dropped(
    side: Side, reader: Reader, then: str
) -> None:
    side.answer()
    seen: list[str] = []

    async def body(client: Any) -> None:
        stream = await reader.call(side.create(client))
        await reader.read(stream, side.text, seen, SEEN)
        if then == "reads on":
            await reader.read(stream, side.text, seen)

    in_step(side, reader, body)
    span = recorded()
    if then == "reads on":
        assert span.llm is not None
        assert (span.status, span.llm["response"]) == ("succeeded", TEXT)
    else:
        assert_incomplete(span, seen, side)


@pytest.mark.parametrize("pieces", [SEEN, 0])
def test_a_stream_closed_before_its_end_is_incomplete(
    side: Side, reader: Reader, pieces: int, exported: Callable[[], dict[str, ReadableSpan]]
) -> None:
    side.answer()
    seen: list[str] = []

    async def body(client: Any) -> None:
        stream = await reader.call(side.create(client))
        if pieces:
            await reader.read(stream, side.text, seen, pieces)
        await reader.close(stream)
        await reader.close(stream)  # closing twice records once

    in_step(side, reader, body)
    span = recorded()
    assert_incomplete(span, seen, side)
    assert span.llm is not None
    assert (span.llm["time_to_first_chunk_ms"] is None) == (pieces == 0)
    attributes = exported()[span.span_id].attributes or {}
    assert attributes["steptrace.llm.incomplete"] is True


@pytest.mark.parametrize("how", ["stream", "helper", "stream, the caller raising"])
def test_a_with_block_left_before_the_end_is_incomplete(
    side: Side, reader: Reader, how: str
) -> None:
    side.answer()
    seen: list[str] = []
    kept: list[Any] = []  # recorded as the block is left, not when collected

    async def body(client: Any) -> None:
        if how == "helper":
            manager, text = side.helper(client), side.helper_text
        else:
            manager, text = await reader.call(side.create(client)), side.text
        async with reader.entered(manager) as stream:
            kept.append(stream)
            await reader.read(stream, text, seen, SEEN)
            if how.endswith("raising"):
                raise LookupError("the caller's own error")

    if how.endswith("raising"):
        with pytest.raises(LookupError):
            in_step(side, reader, body)
    else:
        in_step(side, reader, body)
    span = recorded()
    assert span.llm is not None
    if how == "helper":  # the helper may have read a little further than it handed on
        response = span.llm["response"]
        assert response.startswith("".join(seen)) and TEXT.startswith(response)
        seen = [response]
    assert_incomplete(span, seen, side)
    assert kept


def test_a_task_cancelled_mid_stream_is_incomplete(side: Side) -> None:
    side.answer(delay_s=0.05)
    seen: list[str] = []

    async def body(client: Any) -> None:
        stream = await side.create(client)
        read_some = asyncio.Event()

        async def consume() -> None:
            async for item in stream:
                if piece := side.text(item):
                    seen.append(piece)
                if len(seen) == SEEN:
                    read_some.set()

        task = asyncio.create_task(consume())
        await read_some.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    in_step(side, AsyncReader(), body)
    assert_incomplete(recorded(), seen, side)


@pytest.mark.parametrize("end", ["error", "drop"])
def test_an_error_raised_mid_stream_fails_the_call_and_keeps_what_arrived(
    side: Side, reader: Reader, end: str
) -> None:
    side.answer(end)
    seen: list[str] = []
    raised: list[BaseException] = []

    async def body(client: Any) -> None:
        stream = await reader.call(side.create(client))
        try:
            await reader.read(stream, side.text, seen)
        except Exception as exc:
            raised.append(exc)
            raise

    with pytest.raises(Exception) as info:
        in_step(side, reader, body)
    assert raised and info.value is raised[0]
    span = recorded()
    assert span.llm is not None
    assert (span.status, span.llm["incomplete"]) == ("failed", True)
    assert span.error is not None and span.error["type"] == type(raised[0]).__name__
    assert span.llm["response"] == "".join(seen) == TEXT[: len(span.llm["response"])]
    assert seen and span.llm["finish_reason"] is None


def test_a_stream_the_server_ends_early_is_incomplete(side: Side, reader: Reader) -> None:
    side.answer("cut")
    seen: list[str] = []

    async def body(client: Any) -> None:
        await reader.read(await reader.call(side.create(client)), side.text, seen)

    in_step(side, reader, body)
    assert_incomplete(recorded(), seen, side)
    assert seen
