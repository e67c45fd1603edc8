"""Anthropic (issue 3): ``st.instrument(anthropic client)`` and ``st.llm.chat("anthropic:…")``.

The real ``anthropic`` SDK talks HTTP to a fake Messages API on loopback
(``anthropic_server``): plain, streamed (``create(stream=True)`` and
``messages.stream()``) and async calls, tool calls, SDK errors (how streams stopped
early are recorded is ``test_llm_streams.py``'s, for both SDKs).
Runs are read back from the SQLite store and the exported OpenTelemetry spans.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from opentelemetry.sdk.trace import ReadableSpan

import steptrace as st
from steptrace.llm.anthropic import AnthropicProvider, AnthropicSDKMissing
from tests.support.anthropic_server import FakeAnthropic, ToolUse
from tests.support.helpers import parent_hex

Exported = Callable[[], dict[str, ReadableSpan]]

API_KEY = "sk-ant-api03-" + "Qw7x" * 10
MODEL = "claude-haiku-4-5"  # in the price table: $1 in, $5 out, $0.10 cached, per Mtok
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Look an order up",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    }
]


@pytest.fixture
def fake(anthropic_server: FakeAnthropic) -> FakeAnthropic:
    """The shared ``anthropic_server``, by the name this module's tests use."""
    return anthropic_server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    plain = anthropic.Anthropic(api_key=API_KEY, base_url=fake.url, max_retries=0)
    with plain:
        yield st.instrument(plain)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def in_step(fn: Callable[[], Any], *, retries: int = 0) -> Any:
    """Run ``fn`` as the one step of a workflow; returns what it returned."""
    step = st.step(name="ask", retries=retries, backoff=0.001)(fn)
    return st.workflow(name="wf")(lambda: step())()


def llm_spans(run: Any) -> list[Any]:
    """steptrace's own LLM spans (not the SDK's own OTel span, which the collector may
    also store)."""
    return [s for s in run.spans if s.kind == "llm" and s.name.startswith("chat ")]


def only_llm(run: Any) -> Any:
    (span,) = llm_spans(run)
    return span


def sent_key(request: Any) -> str | None:
    """The API key a request carried: ``x-api-key``, or a bearer token (newer SDKs)."""
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    return request.headers.get("x-api-key") or bearer or None


def cost(input_tokens: int, output_tokens: int, cached: int = 0) -> float:
    return round(((input_tokens - cached) * 1.0 + cached * 0.1 + output_tokens * 5.0) / 1e6, 10)


# --- instrumented client: plain, streamed, async -----------------------------------------


def test_create_is_recorded_under_its_step(
    fake: FakeAnthropic, client: anthropic.Anthropic, exported: Exported
) -> None:
    fake.reply("Paris.", input_tokens=31, output_tokens=4)

    def ask() -> Any:
        return client.messages.create(
            model=MODEL,
            max_tokens=64,
            system="Answer in one word.",
            messages=user("Capital of France?"),
            stop_sequences=["\n\n"],
            metadata={"user_id": "u-1"},
        )

    message = in_step(ask)
    assert isinstance(message, anthropic.types.Message)  # the SDK's object, untouched
    assert message.content[0].text == "Paris."
    run = st.last_run()
    assert run is not None
    step = next(s for s in run.spans if s.kind == "step")
    span = only_llm(run)
    assert span.parent_span_id == step.span_id
    assert span.status == "succeeded"
    assert span.duration_ms is not None and span.duration_ms > 0
    llm = span.llm
    assert llm["provider"] == "anthropic"
    assert llm["model"] == MODEL
    assert llm["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert llm["params"] == {
        "max_tokens": 64,
        "stop_sequences": ["\n\n"],
        "metadata": {"user_id": "u-1"},
    }
    assert llm["response"] == "Paris."
    assert (llm["input_tokens"], llm["output_tokens"]) == (31, 4)
    assert llm["cost_usd"] == pytest.approx(cost(31, 4))
    assert llm["finish_reason"] == "end_turn"
    assert llm["response_model"] == MODEL
    assert llm["incomplete"] is False

    otel = exported()[span.span_id]
    assert otel.name == f"chat {MODEL}"
    assert parent_hex(otel) == step.span_id
    attrs = otel.attributes or {}
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.usage.input_tokens"] == 31
    assert attrs["gen_ai.usage.output_tokens"] == 4
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert json.loads(str(attrs["gen_ai.output.messages"]))[0]["content"] == "Paris."


def test_cache_reads_count_as_input_and_are_priced_as_cached(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.reply("ok", input_tokens=10, cache_read_input_tokens=1000, output_tokens=2)
    in_step(lambda: client.messages.create(model=MODEL, max_tokens=8, messages=user("hi")))
    llm = only_llm(st.last_run()).llm
    assert (llm["input_tokens"], llm["cached_input_tokens"]) == (1010, 1000)
    assert llm["cost_usd"] == pytest.approx(cost(1010, 2, cached=1000))


def test_create_stream_passes_events_through_and_records_once_complete(
    fake: FakeAnthropic, client: anthropic.Anthropic, exported: Exported
) -> None:
    for _ in range(2):
        fake.reply("streamed answer", input_tokens=12, output_tokens=6, message_id="msg_1")
    plain = anthropic.Anthropic(api_key=API_KEY, base_url=fake.url, max_retries=0)
    with plain.messages.create(
        model=MODEL, max_tokens=32, messages=user("x"), stream=True
    ) as reference:
        expected = [e.to_dict() for e in reference]
    plain.close()

    def ask() -> list[Any]:
        with client.messages.create(
            model=MODEL, max_tokens=32, messages=user("x"), stream=True
        ) as stream:
            assert stream.response.status_code == 200  # attributes are the SDK stream's
            return list(stream)

    events = in_step(ask)
    assert [e.to_dict() for e in events] == expected
    assert all(type(e).__module__.startswith("anthropic.") for e in events)
    span = only_llm(st.last_run())
    assert span.status == "succeeded"
    llm = span.llm
    assert llm["response"] == "streamed answer"
    assert (llm["input_tokens"], llm["output_tokens"]) == (12, 6)
    assert llm["params"] == {"max_tokens": 32, "stream": True}
    assert llm["finish_reason"] == "end_turn"
    assert llm["cost_usd"] == pytest.approx(cost(12, 6))
    assert llm["incomplete"] is False
    assert 0 < llm["time_to_first_chunk_ms"] <= span.duration_ms
    attrs = exported()[span.span_id].attributes or {}
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    assert "steptrace.llm.incomplete" not in attrs


def test_messages_stream_helper_is_recorded_on_exit(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.reply("helper text", output_tokens=3)

    def ask() -> tuple[str, Any]:
        with client.messages.stream(  # messages as an iterator: read once, sent and recorded
            model=MODEL, max_tokens=32, system="sys", messages=iter(user("q"))
        ) as stream:
            assert type(stream).__name__ == "MessageStream"  # the SDK's own stream
            text = "".join(stream.text_stream)
            return text, stream.get_final_message()

    text, final = in_step(ask)
    assert text == "helper text"
    assert final.content[0].text == "helper text"
    span = only_llm(st.last_run())
    assert span.status == "succeeded"
    assert span.llm["messages"] == [{"role": "system", "content": "sys"}, *user("q")]
    assert fake.requests[0].body["messages"] == user("q")
    assert span.llm["response"] == "helper text"
    assert span.llm["output_tokens"] == 3
    assert span.llm["time_to_first_chunk_ms"] > 0


def test_async_client_create_stream_helper_and_early_close(fake: FakeAnthropic) -> None:
    for n, text in enumerate(["one", "two", "three", "never finished"], start=1):
        fake.reply(text, output_tokens=n)

    async def main() -> list[str]:
        async with anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=fake.url, max_retries=0
        ) as raw:
            client = st.instrument(raw)

            @st.step
            async def ask() -> list[str]:
                first = await client.messages.create(model=MODEL, max_tokens=8, messages=user("1"))
                stream = await client.messages.create(
                    model=MODEL, max_tokens=8, messages=user("2"), stream=True
                )
                parts = [
                    e.delta.text
                    async for e in stream
                    if e.type == "content_block_delta" and e.delta.type == "text_delta"
                ]
                async with client.messages.stream(
                    model=MODEL, max_tokens=8, messages=user("3")
                ) as helper:
                    third = await helper.get_final_text()
                abandoned = await client.messages.create(
                    model=MODEL, max_tokens=8, messages=user("4"), stream=True
                )
                await abandoned.__anext__()
                await abandoned.close()
                return [first.content[0].text, "".join(parts), third]

            @st.workflow
            async def wf() -> list[str]:
                return await ask()

            return await wf()

    assert asyncio.run(main()) == ["one", "two", "three"]
    run = st.last_run()
    step = next(s for s in run.spans if s.kind == "step")
    spans = llm_spans(run)
    assert [s.llm["response"] for s in spans] == ["one", "two", "three", ""]
    assert [s.llm["output_tokens"] for s in spans] == [1, 2, 3, 1]  # 1: message_start's
    assert [s.status for s in spans] == ["succeeded"] * 3 + ["incomplete"]
    assert spans[3].llm["incomplete"] is True
    assert all(s.parent_span_id == step.span_id for s in spans)
    assert spans[1].llm["time_to_first_chunk_ms"] > 0


def test_code_run_while_a_stream_is_read_is_not_a_child_of_the_llm_span(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    @st.tool
    def note(text: str) -> str:
        return text

    def ask() -> None:
        with client.messages.create(
            model=MODEL, max_tokens=8, messages=user("x"), stream=True
        ) as stream:
            for event in stream:
                if event.type == "message_start":
                    note("started")

    in_step(ask)
    run = st.last_run()
    step = next(s for s in run.spans if s.kind == "step")
    tool = next(s for s in run.spans if s.kind == "tool")
    assert tool.parent_span_id == step.span_id


# --- tool calls --------------------------------------------------------------------------


def _tool_use_of(style: str, client: anthropic.Anthropic) -> Any:
    """Ask for a tool in one of three ways; returns (id, name, input) of its tool_use."""
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 64,
        "tools": TOOLS,
        "messages": user("Where is order A-1?"),
    }
    if style == "create":
        block = next(b for b in client.messages.create(**kwargs).content if b.type == "tool_use")
        return block.id, block.name, block.input
    if style == "helper":
        with client.messages.stream(**kwargs) as helper:
            final = helper.get_final_message()
        block = next(b for b in final.content if b.type == "tool_use")
        return block.id, block.name, block.input
    started: dict[str, Any] = {}
    partial: list[str] = []
    for event in client.messages.create(**kwargs, stream=True):
        if event.type == "content_block_start" and event.content_block.type == "tool_use":
            started = {"id": event.content_block.id, "name": event.content_block.name}
        elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            partial.append(event.delta.partial_json)
    return started["id"], started["name"], json.loads("".join(partial))


@pytest.mark.parametrize("style", ["create", "create-stream", "helper"])
def test_tool_executed_from_a_tool_use_is_linked_by_call_id(
    style: str, fake: FakeAnthropic, client: anthropic.Anthropic, exported: Exported
) -> None:
    use = ToolUse("toolu_01Xy7", "lookup_order", {"order_id": "A-1", "verbose": True})
    fake.reply("Let me look.", tool_uses=[use])

    @st.tool
    def lookup_order(order_id: str, verbose: bool = False) -> dict[str, str]:
        return {"order_id": order_id, "state": "shipped"}

    def agent() -> dict[str, str]:
        call_id, name, arguments = _tool_use_of(style, client)
        assert (call_id, name) == (use.id, "lookup_order")
        return lookup_order(**arguments)

    assert in_step(agent) == {"order_id": "A-1", "state": "shipped"}
    run = st.last_run()
    llm = only_llm(run).llm
    assert llm["tool_calls"] == [{"id": use.id, "name": "lookup_order", "arguments": use.input}]
    assert llm["finish_reason"] == "tool_use"
    assert llm["response"] == "Let me look."
    tool = next(s for s in run.spans if s.kind == "tool")
    assert tool.attributes["gen_ai.tool.call.id"] == use.id
    assert (exported()[tool.span_id].attributes or {})["gen_ai.tool.call.id"] == use.id


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
def test_status_errors_are_recorded_and_reraised_unchanged(
    status: int, error_class: type[Exception], fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.fail(status, "scripted trouble")
    seen: list[BaseException] = []

    def ask() -> None:
        try:
            client.messages.create(model=MODEL, max_tokens=8, messages=user("x"))
        except anthropic.APIStatusError as exc:
            seen.append(exc)
            raise

    with pytest.raises(error_class) as info:
        in_step(ask)
    assert info.value is seen[0]
    assert type(info.value) is error_class
    span = only_llm(st.last_run())
    assert span.status == "failed"
    assert span.error["type"] == error_class.__name__
    assert span.error["status_code"] == status
    assert "scripted trouble" in span.error["message"]


def test_timeout_and_refused_connection_are_recorded(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.reply("too late", delay_s=1.0)
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = st.instrument(
        anthropic.Anthropic(
            api_key=API_KEY, base_url=f"http://127.0.0.1:{closed_port}", max_retries=0
        )
    )

    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 8, "messages": user("x")}
    for fn, error_class in [
        (lambda: client.messages.create(**kwargs, timeout=0.2), anthropic.APITimeoutError),
        (lambda: refused.messages.create(**kwargs), anthropic.APIConnectionError),
    ]:
        with pytest.raises(error_class):
            in_step(fn)
        span = only_llm(st.last_run())
        assert span.status == "failed"
        assert span.error["type"] == error_class.__name__
        assert "status_code" not in span.error
        assert "timeout" not in span.llm["params"]
    refused.close()


def test_a_step_retries_a_rate_limited_call(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.fail(429, "rate limited")
    fake.reply("second time lucky")

    def ask() -> str:
        return client.messages.create(model=MODEL, max_tokens=8, messages=user("x")).content[0].text

    assert in_step(ask, retries=1) == "second time lucky"
    run = st.last_run()
    attempts = sorted((s for s in run.spans if s.kind == "step"), key=lambda s: s.attempt)
    assert [(s.attempt, s.status) for s in attempts] == [(1, "failed"), (2, "succeeded")]
    by_parent = {s.parent_span_id: s for s in llm_spans(run)}
    assert by_parent[attempts[0].span_id].error["status_code"] == 429
    assert by_parent[attempts[1].span_id].llm["response"] == "second time lucky"
    assert len(fake.requests) == 2


# --- outside a run, idempotence, secrets ------------------------------------------------------


def test_outside_a_run_calls_go_through_unrecorded(
    fake: FakeAnthropic, client: anthropic.Anthropic, store_path: Path
) -> None:
    message = client.messages.create(model=MODEL, max_tokens=8, messages=user("hi"))
    assert message.content[0].text == "echo: hi"
    with client.messages.stream(model=MODEL, max_tokens=8, messages=user("yo")) as stream:
        assert stream.get_final_text() == "echo: yo"
    assert type(client.messages.create(model=MODEL, max_tokens=8, messages=user("s"), stream=True))
    st.flush()
    assert st.last_run() is None
    assert len(fake.requests) == 3


def test_instrument_is_idempotent_and_returns_the_client(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    assert st.instrument(client) is client
    assert st.instrument(st.instrument(client)) is client
    in_step(lambda: client.messages.create(model=MODEL, max_tokens=8, messages=user("x")))
    assert len(llm_spans(st.last_run())) == 1


def test_api_key_never_reaches_the_store_or_the_exporter(
    fake: FakeAnthropic, client: anthropic.Anthropic, store_path: Path, exported: Exported
) -> None:
    fake.reply(tool_uses=[ToolUse("toolu_1", "lookup_order", {"order_id": "A-1"})])

    def everything() -> None:
        client.messages.create(model=MODEL, max_tokens=8, messages=user("a"))
        client.messages.create(
            model=MODEL, max_tokens=8, messages=user("b"), extra_headers={"x-api-key": API_KEY}
        )
        for _ in client.messages.create(model=MODEL, max_tokens=8, messages=user("c"), stream=True):
            pass
        with client.messages.stream(model=MODEL, max_tokens=8, messages=user("d")) as s:
            s.until_done()

    in_step(everything)
    fake.fail(429)
    with pytest.raises(anthropic.RateLimitError):
        in_step(lambda: client.messages.create(model=MODEL, max_tokens=8, messages=user("e")))
    assert all(sent_key(r) == API_KEY for r in fake.requests)  # it was sent
    spans = exported()
    st.flush()
    stored = b"".join(p.read_bytes() for p in store_path.parent.glob(store_path.name + "*"))
    assert b"toolu_1" in stored  # the scan reads the data
    assert b"sk-ant-" not in stored and API_KEY.encode() not in stored
    for span in spans.values():
        assert API_KEY not in repr(dict(span.attributes or {}))
        assert all(API_KEY not in repr(dict(e.attributes or {})) for e in span.events)


def test_one_llm_record_per_call_although_the_sdk_traces_itself(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    in_step(lambda: client.messages.create(model=MODEL, max_tokens=8, messages=user("x")))
    assert [s.name for s in st.last_run().spans if s.kind == "llm"] == [f"chat {MODEL}"]


# --- st.llm.chat("anthropic:…") ----------------------------------------------------------


@pytest.fixture
def env(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> FakeAnthropic:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    return fake


def test_chat_through_the_sdk(env: FakeAnthropic, exported: Exported) -> None:
    env.reply("Bonjour.", input_tokens=40, output_tokens=3)
    messages = [
        {"role": "system", "content": "Translate to French."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello."},
    ]

    reply = in_step(
        lambda: st.llm.chat(f"anthropic:{MODEL}", messages, temperature=0.3, stop_sequences=["."])
    )
    assert reply.text == "Bonjour."
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (40, 3)
    assert (reply.model, reply.provider, reply.finish_reason) == (MODEL, "anthropic", "end_turn")
    assert reply.cost_usd == pytest.approx(cost(40, 3))
    assert isinstance(reply.raw, anthropic.types.Message)
    sent = env.requests[-1]
    assert sent_key(sent) == API_KEY
    assert sent.body["system"] == "Translate to French.\n\nBe brief."
    assert sent.body["messages"] == [{"role": "user", "content": "Hello."}]
    assert sent.body["max_tokens"] == 1024
    assert sent.body["temperature"] == 0.3  # not an SDK argument here: sent in extra_body
    assert sent.body["stop_sequences"] == ["."]
    span = only_llm(st.last_run())
    assert span.llm["messages"] == messages
    assert span.llm["params"] == {"temperature": 0.3, "stop_sequences": ["."]}
    assert (span.llm["provider"], span.llm["model"]) == ("anthropic", MODEL)
    assert span.llm["cost_usd"] == pytest.approx(cost(40, 3))
    attrs = exported()[span.span_id].attributes or {}
    assert attrs["gen_ai.request.temperature"] == 0.3


def test_achat_streamed_chat_and_tool_calls(env: FakeAnthropic) -> None:
    use = ToolUse("toolu_9", "lookup_order", {"order_id": "B-2"})
    env.reply("async answer", output_tokens=2)
    env.reply("streamed", tool_uses=[use], output_tokens=5)

    async def main() -> list[Any]:
        @st.workflow
        async def wf() -> list[Any]:
            first = await st.llm.achat(f"anthropic:{MODEL}", user("a"), max_tokens=10)
            second = st.llm.chat(f"anthropic:{MODEL}", user("b"), stream=True, tools=TOOLS)
            return [first, second]

        return await wf()

    first, second = asyncio.run(main())
    assert first.text == "async answer"
    assert (second.text, second.usage.output_tokens, second.finish_reason) == (
        "streamed",
        5,
        "tool_use",
    )
    assert second.tool_calls == (st.llm.ToolCall(use.id, use.name, use.input),)
    assert env.requests[0].body["max_tokens"] == 10
    assert env.requests[1].body["stream"] is True
    assert [s.llm["response"] for s in llm_spans(st.last_run())] == ["async answer", "streamed"]


def test_chat_errors_are_recorded_and_reraised(fake: FakeAnthropic) -> None:
    raw = st.instrument(anthropic.Anthropic(api_key=API_KEY, base_url=fake.url, max_retries=0))
    st.llm.register_provider("anthropic-test", AnthropicProvider(client=raw))  # not twice
    fake.fail(529, "overloaded")
    with pytest.raises(anthropic.OverloadedError):
        in_step(lambda: st.llm.chat("anthropic-test:claude-haiku-4-5", user("x")))
    span = only_llm(st.last_run())
    assert (span.status, span.error["status_code"]) == ("failed", 529)
    raw.close()


def test_missing_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ImportError, match=r"pip install 'steptrace\[anthropic\]'") as info:
        AnthropicProvider().complete(MODEL, user("x"), {})
    assert isinstance(info.value, AnthropicSDKMissing)
