"""``steptrace export-otlp`` re-sends a stored run as the spans live export sent: the same
names, ids, parents, kinds, statuses, attributes and log events (both are made by
``steptrace.otel.conventions``; a second copy of the conventions drifted once).

Runs cover every span kind: a workflow that succeeds, one that fails and one that
joins a carried trace (traceparent), a step retried after an exception, a step
retried after its output failed validation, a step that fails for good, tools (one
executing a model's tool call), LLM calls through the scripted provider and through
the real OpenAI and Anthropic SDKs (request parameters, a tool call in the reply, a
stream, an error answer), log records and a run in a session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

import steptrace as st
from steptrace.backfill import readable_spans
from steptrace.store.model import RunRecord
from tests.support.anthropic_server import FakeAnthropic
from tests.support.helpers import parent_hex, span_hex, trace_hex
from tests.support.openai_server import Answer, FakeOpenAI, error

KEY = "sk-proj-PARITYKEYabcdefghijklmnopqrstuvwxyz0123"
WEATHER_CALL = ("call_weather_1", "get_weather", '{"city": "Paris"}')
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

BACKFILL_ONLY = {"steptrace.backfill"}
"""Attributes only a re-sent span has: it says the span was re-sent, not recorded now."""

TIMESTAMP_SLACK_NS = 1_000
"""The store keeps timestamps to the microsecond; live spans have nanoseconds."""


class Label(pydantic.BaseModel):
    category: str


def _record_runs(server: FakeOpenAI, anthropic_server: FakeAnthropic) -> list[str]:
    """Record the runs; returns their ids."""
    log = logging.getLogger("parity")
    st.llm.script("parity", ["not json", '{"category": "billing"}', "a draft"])
    client = st.instrument(openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0))
    claude = st.instrument(
        anthropic.Anthropic(base_url=anthropic_server.url, api_key=KEY, max_retries=0)
    )
    anthropic_server.reply("Bonjour.", cache_read_input_tokens=3)
    server.answer(
        Answer(text="Let me look.", tool_calls=[WEATHER_CALL]),
        Answer(text="Sunny in Paris."),
        error(500, "the model is down"),
    )
    flaky_calls = []

    class DraftError(RuntimeError):
        """Defined in a function: its ``__qualname__`` is not its ``__name__``."""

    @st.tool
    def get_weather(city: str) -> dict[str, str]:
        return {"city": city, "sky": "sunny"}

    @st.tool
    def lookup(order_id: str) -> dict[str, str]:
        return {"order_id": order_id, "state": "shipped"}

    @st.step(retries=1, backoff=0.001)
    def flaky(text: str) -> str:
        flaky_calls.append(text)
        if len(flaky_calls) == 1:
            log.warning("first attempt fails")
            raise ConnectionError("try again")
        return text.upper()

    @st.step(retries=1, backoff=0.001, output=Label)
    def classify(text: str) -> str:
        log.info("classifying %s", text)
        messages = [{"role": "system", "content": "classify"}, {"role": "user", "content": text}]
        return st.llm.chat("scripted:parity", messages, temperature=0, max_tokens=20).text

    @st.step
    def weather(city: str) -> str:
        messages: Any = [{"role": "user", "content": f"Weather in {city}?"}]
        first = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, temperature=0.2, max_tokens=50
        )
        for call in first.choices[0].message.tool_calls or ():
            get_weather(city)
            messages += [
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ]
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, top_p=0.5
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    @st.step
    def ask_down_model() -> str:
        try:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "?"}]
            )
        except openai.InternalServerError:
            log.exception("the model failed")
        return "fallback"

    @st.workflow
    def triage(text: str) -> dict[str, str]:
        log.info("run starts")
        return {
            "loud": flaky(text),
            "label": classify(text).category,
            "order": lookup("A-1")["state"],
            "weather": weather("Paris"),
            "fallback": ask_down_model(),
        }

    @st.step
    def draft(text: str) -> str:
        st.llm.chat("scripted:parity", [{"role": "user", "content": text}])
        raise DraftError("cannot draft")

    @st.workflow
    def failing(text: str) -> str:
        return draft(text)

    @st.workflow
    def translate(text: str) -> str:
        reply = claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            temperature=0.5,
            messages=[{"role": "user", "content": text}],
        )
        return "".join(block.text for block in reply.content if block.type == "text")

    triage("charged twice")
    first = st.last_run()
    with pytest.raises(RuntimeError):
        failing("x")
    second = st.last_run()
    assert first is not None and second is not None
    # joins a carried trace, in a session
    third = st.run(translate, "Hello", traceparent=TRACEPARENT, session_id="parity-conversation")
    return [first.run_id, second.run_id, third.run_id]


def _compare(live: ReadableSpan, sent: ReadableSpan) -> None:
    where = f"{live.name} {span_hex(live)}"
    assert sent.name == live.name, where
    assert (trace_hex(sent), parent_hex(sent)) == (trace_hex(live), parent_hex(live)), where
    assert sent.kind == live.kind, where
    assert (sent.status.status_code, sent.status.description) == (
        live.status.status_code,
        live.status.description,
    ), where
    live_attributes = dict(live.attributes or {})
    sent_attributes = dict(sent.attributes or {})
    assert set(sent_attributes) == set(live_attributes) | BACKFILL_ONLY, where
    for key in BACKFILL_ONLY:
        sent_attributes.pop(key)
    assert sent_attributes == live_attributes, where
    assert [format(link.context.span_id, "016x") for link in sent.links] == [
        format(link.context.span_id, "016x") for link in live.links
    ], where
    assert [(e.name, dict(e.attributes or {})) for e in sent.events] == [
        (e.name, dict(e.attributes or {})) for e in live.events
    ], where
    for sent_ns, live_ns in [
        (sent.start_time, live.start_time),
        (sent.end_time, live.end_time),
        *((s.timestamp, v.timestamp) for s, v in zip(sent.events, live.events, strict=True)),
    ]:
        assert sent_ns is not None and live_ns is not None
        assert abs(sent_ns - live_ns) < TIMESTAMP_SLACK_NS, where


@pytest.mark.parametrize("openinference", [True, False])
def test_a_re_sent_run_has_the_spans_live_export_sent(
    openai_server: FakeOpenAI,
    anthropic_server: FakeAnthropic,
    exported: Callable[[], dict[str, ReadableSpan]],
    openinference: bool,
) -> None:
    st.configure(openinference=openinference)
    run_ids = _record_runs(openai_server, anthropic_server)
    live = {k: s for k, s in exported().items() if s.instrumentation_scope.name == "steptrace"}
    store = st.Store.open()
    runs: list[RunRecord] = [store.run(run_id) for run_id in run_ids]
    sent = {span_hex(s): s for run in runs for s in readable_spans(run, Resource.create())}

    assert set(sent) == set(live)
    for span_id, span in live.items():
        _compare(span, sent[span_id])

    # The runs cover what the conventions distinguish.
    kinds = {(s.kind, s.status) for run in runs for s in run.spans}
    assert {("step", "failed"), ("step", "succeeded"), ("tool", "succeeded")} <= kinds
    assert {("llm", "succeeded"), ("llm", "failed")} <= kinds
    attributes = [dict(s.attributes or {}) for s in live.values()]
    for key in (
        "error.type",
        "gen_ai.request.temperature",
        "gen_ai.request.max_tokens",
        "gen_ai.request.top_p",
        "gen_ai.response.finish_reasons",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.tool.call.id",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.conversation.id",
        "steptrace.step.attempt",
    ):
        assert any(key in a for a in attributes), key
    assert any(s.links for s in live.values())
    assert any(parent_hex(s) == TRACEPARENT.split("-")[2] for s in live.values())
    assert any(a.get("gen_ai.provider.name") == "anthropic" for a in attributes)
    assert any(s.events for s in live.values())
    if openinference:
        for key in ("llm.input_messages.0.message.content", "llm.token_count.total"):
            assert any(key in a for a in attributes), key
        assert all(a.get("input.mime_type") == "application/json" for a in attributes)
    else:
        assert not any(k.startswith(("openinference.", "llm.")) for a in attributes for k in a)
