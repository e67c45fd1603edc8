"""OpenAI (issue 3): ``st.instrument(client)`` and ``st.llm.chat("openai:...")`` record LLM
spans for calls through the real ``openai`` SDK talking HTTP to a fake server on loopback
(``openai_server.py``): plain, streamed and async calls, the Responses API, tool calls,
errors and retries, and keys kept out of the store and the exports. How streams stopped
early are recorded is ``test_llm_streams.py``'s, for both SDKs."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest

import steptrace as st
from steptrace.llm import providers
from steptrace.llm.openai import OpenAIProvider, instrument_openai
from steptrace.store.model import RunRecord, SpanView
from tests.support.helpers import parent_hex
from tests.support.openai_server import Answer, FakeOpenAI, error

KEY = "sk-proj-TESTKEYabcdefghijklmnopqrstuvwxyz0123456789"
OTHER_KEY = "sk-proj-OTHERKEYzyxwvutsrqponmlkjihgfedcba987654"
USER: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_CALL = ("call_weather_1", "get_weather", '{"city": "Paris", "unit": "C"}')

Exported = Callable[[], dict[str, Any]]


@pytest.fixture
def server(openai_server: FakeOpenAI) -> FakeOpenAI:
    """The shared ``openai_server``, by the name this module's tests use."""
    return openai_server


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as sdk_client:
        yield st.instrument(sdk_client)


def async_client(server: FakeOpenAI) -> openai.AsyncOpenAI:
    return st.instrument(openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0))


def last_run() -> RunRecord:
    run = st.last_run()
    assert run is not None
    return run


def llm_spans(run: RunRecord) -> list[SpanView]:
    return [s for s in run.spans if s.kind == "llm"]


def only_llm(run: RunRecord) -> dict[str, Any]:
    (span,) = llm_spans(run)
    assert span.llm is not None
    return span.llm


# --- plain calls --------------------------------------------------------------------------


def test_chat_completion_is_recorded_under_its_step(
    client: openai.OpenAI, server: FakeOpenAI, exported: Exported
) -> None:
    server.answer(Answer(text="Sunny, 24C.", model="gpt-4o-mini-2024-07-18"))

    @st.step
    def ask(question: str) -> str:
        response = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": question}],
            temperature=0.2,
            max_tokens=50,
        )
        assert isinstance(response, openai.types.chat.ChatCompletion)
        return response.choices[0].message.content or ""

    @st.workflow
    def wf() -> str:
        return ask("What is the weather in Paris?")

    assert wf() == "Sunny, 24C."
    run = last_run()
    (step,) = run.steps("ask")
    (span,) = llm_spans(run)
    assert span.parent_span_id == step.span_id
    assert span.name == "chat gpt-4o-mini" and span.status == "succeeded"
    assert span.duration_ms is not None and span.duration_ms > 0
    llm = span.llm
    assert llm is not None
    assert llm["provider"] == "openai" and llm["model"] == "gpt-4o-mini"
    assert llm["response_model"] == "gpt-4o-mini-2024-07-18"
    assert llm["messages"] == USER
    assert llm["params"] == {"temperature": 0.2, "max_tokens": 50}
    assert llm["response"] == "Sunny, 24C."
    assert (llm["input_tokens"], llm["output_tokens"]) == (12, 7)
    assert (llm["cached_input_tokens"], llm["reasoning_tokens"]) == (4, 2)
    assert llm["finish_reason"] == "stop"
    # gpt-4o-mini: 0.15 / 0.075 (cached) / 0.6 USD per million tokens
    assert llm["cost_usd"] == pytest.approx((8 * 0.15 + 4 * 0.075 + 7 * 0.6) / 1e6)
    assert server.requests[0].body["messages"] == USER

    otel = exported()[span.span_id]
    assert otel.name == "chat gpt-4o-mini"
    assert parent_hex(otel) == step.span_id
    attributes = dict(otel.attributes or {})
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 4
    assert json.loads(attributes["gen_ai.input.messages"]) == USER


def test_calls_outside_a_run_are_made_unrecorded(
    client: openai.OpenAI, server: FakeOpenAI, store_path: Path
) -> None:
    response = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert response.choices[0].message.content == "Hello from the fake server."
    events = list(client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))
    assert events and all(isinstance(e, openai.types.chat.ChatCompletionChunk) for e in events)
    st.flush()
    assert not store_path.exists()  # no run, so no store was even opened
    assert len(server.requests) == 2


def test_instrument_is_idempotent_and_keeps_one_shot_messages_intact(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    assert st.instrument(client) is client
    assert instrument_openai(client) is client

    @st.workflow
    def wf() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=(m for m in USER))

    wf()
    assert only_llm(last_run())["messages"] == USER  # recorded once, generator and all
    assert server.requests[0].body["messages"] == USER
    with pytest.raises(TypeError, match="openai"):
        instrument_openai(object())


def test_parse_and_with_raw_response_are_recorded(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    class Weather(pydantic.BaseModel):
        city: str
        celsius: int

    server.answer(Answer(text='{"city": "Paris", "celsius": 24}'))

    @st.workflow
    def wf() -> Weather | None:
        completion = client.chat.completions.parse(
            model="gpt-4o-mini", messages=USER, response_format=Weather
        )
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
        assert raw.headers["x-request-id"]
        assert raw.parse().choices[0].message.content == "Hello from the fake server."
        return completion.choices[0].message.parsed

    assert wf() == Weather(city="Paris", celsius=24)
    parsed, raw = (s.llm for s in llm_spans(last_run()))
    assert parsed is not None and raw is not None
    assert parsed["response"] == '{"city": "Paris", "celsius": 24}'
    assert parsed["params"]["response_format"].endswith("Weather")
    assert raw["response"] == "Hello from the fake server."


# --- streaming ------------------------------------------------------------------------------


def test_streamed_chat_passes_chunks_through_and_records_once_complete(
    client: openai.OpenAI, server: FakeOpenAI, exported: Exported
) -> None:
    server.answer(Answer(text="It is sunny in Paris today.", chunk_delay_s=0.01))

    @st.step
    def ask() -> list[Any]:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert stream.response.status_code == 200  # attributes are the SDK stream's
        return list(stream)

    @st.workflow
    def wf() -> list[Any]:
        return ask()

    chunks = wf()
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It is sunny in Paris today."
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 12

    run = last_run()
    (span,) = llm_spans(run)
    llm = span.llm
    assert llm is not None and span.status == "succeeded"
    assert llm["response"] == "It is sunny in Paris today."
    assert (llm["input_tokens"], llm["output_tokens"], llm["cached_input_tokens"]) == (12, 7, 4)
    assert llm["finish_reason"] == "stop" and llm["incomplete"] is False
    assert llm["params"] == {"stream_options": {"include_usage": True}}
    assert llm["cost_usd"] is not None
    ttfc = llm["time_to_first_chunk_ms"]
    assert ttfc is not None and 0 < ttfc < span.duration_ms
    attributes = dict(exported()[span.span_id].attributes or {})
    assert attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(ttfc / 1000)


def test_streamed_tool_calls_are_assembled_from_deltas(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    second = ("call_time_2", "get_time", '{"tz": "Europe/Paris"}')
    server.answer(Answer(text="", tool_calls=[WEATHER_CALL, second]))

    @st.workflow
    def wf() -> None:
        with client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True
        ) as stream:
            for _ in stream:
                pass

    wf()
    llm = only_llm(last_run())
    assert llm["finish_reason"] == "tool_calls"
    assert llm["tool_calls"] == [
        {
            "id": "call_weather_1",
            "name": "get_weather",
            "arguments": {"city": "Paris", "unit": "C"},
        },
        {"id": "call_time_2", "name": "get_time", "arguments": {"tz": "Europe/Paris"}},
    ]
    assert llm["input_tokens"] is None  # no include_usage: the server sent no usage


def test_stream_helper_is_recorded_once(client: openai.OpenAI, server: FakeOpenAI) -> None:
    @st.workflow
    def wf() -> str:
        with client.chat.completions.stream(model="gpt-4o-mini", messages=USER) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion().choices[0].message.content or ""

    assert wf() == "Hello from the fake server."
    llm = only_llm(last_run())
    assert llm["response"] == "Hello from the fake server." and llm["incomplete"] is False


def test_code_run_while_reading_a_stream_is_not_a_child_of_the_llm_span(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    @st.tool
    def on_chunk(n: int) -> int:
        return n

    @st.step
    def ask() -> None:
        for n, _ in enumerate(
            client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        ):
            on_chunk(n)

    @st.workflow
    def wf() -> None:
        ask()

    wf()
    run = last_run()
    (step,) = run.steps("ask")
    tools = [s for s in run.spans if s.kind == "tool"]
    assert tools and all(t.parent_span_id == step.span_id for t in tools)
    assert llm_spans(run)[0].parent_span_id == step.span_id


# --- async --------------------------------------------------------------------------------


def test_async_client_plain_streamed_helper_and_abandoned_calls(server: FakeOpenAI) -> None:
    server.answer(Answer(text="plain answer"), Answer(text="streamed answer"))

    @st.step
    async def ask() -> tuple[str, str]:
        async with async_client(server) as aclient:
            response = await aclient.chat.completions.create(model="gpt-4o-mini", messages=USER)
            stream = await aclient.chat.completions.create(
                model="gpt-4o-mini",
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts = []
            async with stream:
                async for chunk in stream:
                    if chunk.choices:
                        parts.append(chunk.choices[0].delta.content or "")
            async with aclient.chat.completions.stream(model="gpt-4o-mini", messages=USER) as s:
                async for _ in s:
                    pass
                assert (await s.get_final_completion()).choices[0].message.content
            abandoned = await aclient.chat.completions.create(
                model="gpt-4o-mini", messages=USER, stream=True
            )
            async with abandoned:
                await abandoned.__anext__()
            return response.choices[0].message.content or "", "".join(parts)

    @st.workflow
    async def wf() -> tuple[str, str]:
        return await ask()

    assert asyncio.run(wf()) == ("plain answer", "streamed answer")
    run = last_run()
    (step,) = run.steps("ask")
    plain, streamed, helper, abandoned = llm_spans(run)
    assert plain.parent_span_id == streamed.parent_span_id == step.span_id
    assert (helper.status, abandoned.status) == ("succeeded", "incomplete")
    assert plain.llm is not None and streamed.llm is not None
    assert plain.llm["response"] == "plain answer"
    assert streamed.llm["response"] == "streamed answer"
    assert streamed.llm["input_tokens"] == 12 and streamed.llm["incomplete"] is False
    assert streamed.llm["time_to_first_chunk_ms"] is not None


# --- the Responses API ------------------------------------------------------------------------


def test_responses_api_records_instructions_and_input_as_messages(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    server.answer(Answer(text="Bonjour.", tool_calls=[WEATHER_CALL]))

    @st.workflow
    def wf() -> str:
        response = client.responses.create(
            model="gpt-4o-mini",
            instructions="Answer in French.",
            input="Say hello.",
            max_output_tokens=100,
        )
        return response.output_text

    assert wf() == "Bonjour."
    llm = only_llm(last_run())
    assert llm["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Say hello."},
    ]
    assert llm["params"] == {"max_output_tokens": 100}
    assert llm["response"] == "Bonjour."
    assert (llm["input_tokens"], llm["output_tokens"]) == (12, 7)
    assert (llm["cached_input_tokens"], llm["reasoning_tokens"]) == (4, 2)
    assert llm["finish_reason"] == "completed"
    assert llm["tool_calls"] == [
        {"id": "call_weather_1", "name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}
    ]
    assert server.requests[0].path == "/v1/responses"


def test_streamed_responses_api_with_a_function_call(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    server.answer(Answer(text="Let me check.", tool_calls=[WEATHER_CALL]))
    given = [{"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}]

    @st.workflow
    def wf() -> list[str]:
        stream = client.responses.create(model="gpt-4o-mini", input=given, stream=True)
        return [event.type for event in stream]

    types = wf()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    llm = only_llm(last_run())
    assert llm["messages"] == given
    assert llm["response"] == "Let me check."
    assert llm["input_tokens"] == 12 and llm["incomplete"] is False
    assert llm["tool_calls"][0]["id"] == "call_weather_1"
    assert llm["time_to_first_chunk_ms"] is not None


def test_responses_stream_helper_and_async_client(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    @st.workflow
    def wf() -> str:
        with client.responses.stream(model="gpt-4o-mini", input="hi") as stream:
            for _ in stream:
                pass
            return stream.get_final_response().output_text

    @st.workflow
    async def awf() -> str:
        async with async_client(server) as aclient:
            response = await aclient.responses.create(model="gpt-4o-mini", input="hi")
            async for _ in await aclient.responses.create(
                model="gpt-4o-mini", input="hi", stream=True
            ):
                pass
            return response.output_text

    assert wf() == "Hello from the fake server."
    assert only_llm(last_run())["response"] == "Hello from the fake server."
    assert asyncio.run(awf()) == "Hello from the fake server."
    assert [s.status for s in llm_spans(last_run())] == ["succeeded", "succeeded"]


# --- tool calling -------------------------------------------------------------------------------


def test_a_tool_executed_with_the_models_arguments_gets_its_call_id(
    client: openai.OpenAI, server: FakeOpenAI, exported: Exported
) -> None:
    server.answer(Answer(text="", tool_calls=[WEATHER_CALL]), Answer(text="24C in Paris."))

    @st.tool
    def get_weather(city: str, unit: str) -> dict[str, Any]:
        return {"city": city, "temperature": 24, "unit": unit}

    @st.step
    def agent() -> str:
        messages: list[Any] = list(USER)
        first = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        message = first.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls or ():
            result = get_weather(**json.loads(call.function.arguments))
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
            )
        final = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return final.choices[0].message.content or ""

    @st.workflow
    def wf() -> str:
        return agent()

    assert wf() == "24C in Paris."
    run = last_run()
    first, second = llm_spans(run)
    assert first.llm is not None and first.llm["tool_calls"] == [
        {"id": "call_weather_1", "name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}
    ]
    (tool,) = [s for s in run.spans if s.kind == "tool"]
    assert tool.attributes["gen_ai.tool.call.id"] == "call_weather_1"
    assert dict(exported()[tool.span_id].attributes or {})["gen_ai.tool.call.id"] == (
        "call_weather_1"
    )
    assert second.llm is not None and second.llm["messages"][-1]["tool_call_id"] == "call_weather_1"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exc_type"), [(429, openai.RateLimitError), (500, openai.InternalServerError)]
)
def test_http_errors_are_recorded_and_reraised_unchanged(
    client: openai.OpenAI, server: FakeOpenAI, status: int, exc_type: type[Exception]
) -> None:
    server.answer(error(status, "try again later"))
    raised: list[BaseException] = []

    @st.workflow
    def wf() -> None:
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        except Exception as exc:
            raised.append(exc)
            raise

    with pytest.raises(exc_type) as info:
        wf()
    assert info.value is raised[0]
    (span,) = llm_spans(last_run())
    assert span.status == "failed" and span.error is not None
    assert span.error["type"] == exc_type.__name__
    assert span.error["status_code"] == status
    assert "try again later" in span.error["message"]


@pytest.mark.parametrize("failure", ["APITimeoutError", "APIConnectionError"])
def test_timeouts_and_refused_connections_are_recorded(server: FakeOpenAI, failure: str) -> None:
    url = server.url
    if failure == "APITimeoutError":
        server.answer(Answer(delay_s=1.0))
    else:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sdk = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=0.2)
    with st.instrument(sdk) as failing:

        @st.workflow
        def wf() -> None:
            failing.chat.completions.create(model="gpt-4o-mini", messages=USER)

        with pytest.raises(getattr(openai, failure)):
            wf()
    (span,) = llm_spans(last_run())
    assert span.error is not None and span.error["type"] == failure
    assert "status_code" not in span.error


def test_an_error_while_streaming_fails_the_span(client: openai.OpenAI, server: FakeOpenAI) -> None:
    server.answer(error(500, "overloaded"))

    @st.workflow
    def wf() -> None:
        stream = client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        list(stream)

    with pytest.raises(openai.InternalServerError):
        wf()
    (span,) = llm_spans(last_run())
    assert span.status == "failed" and span.error is not None
    assert span.error["status_code"] == 500


def test_a_step_retries_a_rate_limited_call(client: openai.OpenAI, server: FakeOpenAI) -> None:
    server.answer(error(429, "slow down"), Answer(text="finally"))

    @st.step(retries=1, backoff=0.001)
    def ask() -> str:
        response = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        return response.choices[0].message.content or ""

    @st.workflow
    def wf() -> str:
        return ask()

    assert wf() == "finally"
    run = last_run()
    first, second = run.steps("ask")
    assert (first.attempt, first.status, second.attempt, second.status) == (
        1,
        "failed",
        2,
        "succeeded",
    )
    assert first.error is not None and first.error["type"] == "RateLimitError"
    (failed_llm,) = run.children(first.span_id)
    assert failed_llm.kind == "llm" and failed_llm.status == "failed"
    assert failed_llm.error is not None and failed_llm.error["status_code"] == 429
    (ok_llm,) = run.children(second.span_id)
    assert ok_llm.status == "succeeded"


# --- secrets ------------------------------------------------------------------------------------


def test_api_keys_never_reach_the_store_or_the_exported_spans(
    client: openai.OpenAI, server: FakeOpenAI, store_path: Path, exported: Exported
) -> None:
    server.answer(Answer(), error(401, f"Incorrect API key provided: {OTHER_KEY}."))

    @st.workflow
    def wf() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=USER,
                extra_headers={"Authorization": f"Bearer {OTHER_KEY}"},
            )

    wf()
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # the key was used
    assert server.requests[1].headers["authorization"] == f"Bearer {OTHER_KEY}"
    spans = exported()
    st.configure()  # closes the writer: everything is in the database files
    stored = b"".join(p.read_bytes() for p in store_path.parent.glob(store_path.name + "*"))
    assert b"chat gpt-4o-mini" in stored
    for secret in (KEY, OTHER_KEY):
        assert secret.encode() not in stored
        assert secret[8:30].encode() not in stored
        for span in spans.values():
            assert secret[8:30] not in repr(dict(span.attributes or {}))


# --- st.llm.chat("openai:...") ------------------------------------------------------------------


@pytest.fixture
def openai_env(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return server


def test_llm_chat_through_the_openai_provider(openai_env: FakeOpenAI, exported: Exported) -> None:
    openai_env.answer(Answer(text="", tool_calls=[WEATHER_CALL]))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]

    @st.step
    def ask() -> st.llm.Reply:
        return st.llm.chat("openai:gpt-4o-mini", USER, temperature=0, tools=tools)

    @st.workflow
    def wf() -> st.llm.Reply:
        return ask()

    reply = wf()
    assert reply.provider == "openai" and reply.model == "gpt-4o-mini"
    assert reply.usage == st.llm.Usage(12, 7, 4, 2)
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls == (
        st.llm.ToolCall("call_weather_1", "get_weather", {"city": "Paris", "unit": "C"}),
    )
    assert reply.cost_usd is not None
    assert isinstance(reply.raw, openai.types.chat.ChatCompletion)
    body = openai_env.requests[0].body
    assert body["temperature"] == 0 and body["tools"] == tools
    assert openai_env.requests[0].headers["authorization"] == f"Bearer {KEY}"
    run = last_run()
    (span,) = llm_spans(run)
    assert span.parent_span_id == run.steps("ask")[0].span_id
    assert span.llm is not None
    assert span.llm["params"] == {"temperature": 0, "tools": tools}
    assert span.llm["provider"] == "openai" and span.llm["input_tokens"] == 12
    assert span.llm["cost_usd"] == reply.cost_usd
    assert dict(exported()[span.span_id].attributes or {})["gen_ai.provider.name"] == "openai"


def test_llm_achat_and_a_streamed_chat_through_the_provider(openai_env: FakeOpenAI) -> None:
    openai_env.answer(Answer(text="async"), Answer(text="streamed reply"))

    @st.workflow
    async def wf() -> tuple[str, str]:
        first = await st.llm.achat("openai:gpt-4o-mini", USER)
        second = st.llm.chat(
            "openai:gpt-4o-mini", USER, stream=True, stream_options={"include_usage": True}
        )
        return first.text, second.text

    assert asyncio.run(wf()) == ("async", "streamed reply")
    spans = llm_spans(last_run())
    assert [s.output for s in spans] == ["async", "streamed reply"]
    assert spans[1].llm is not None and spans[1].llm["input_tokens"] == 12


def test_llm_chat_errors_are_recorded_and_reraised(openai_env: FakeOpenAI) -> None:
    openai_env.answer(error(429), error(429), error(429))  # the SDK's own 2 retries included

    @st.workflow
    def wf() -> None:
        st.llm.chat("openai:gpt-4o-mini", USER)

    with pytest.raises(openai.RateLimitError):
        wf()
    assert len(openai_env.requests) == 3
    (span,) = llm_spans(last_run())
    assert span.error is not None and span.error["status_code"] == 429


def test_the_provider_does_not_record_twice_through_an_instrumented_client(
    client: openai.OpenAI, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(providers._providers, "openai-mine", OpenAIProvider(client=client))

    @st.workflow
    def wf() -> str:
        return st.llm.chat("openai-mine:gpt-4o-mini", USER).text

    assert wf() == "Hello from the fake server."
    assert len(llm_spans(last_run())) == 1


def test_a_missing_sdk_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"pip install 'steptrace\[openai\]'"):
        OpenAIProvider()
    with pytest.raises(ImportError, match=r"steptrace\[openai\]"):
        instrument_openai(object())
