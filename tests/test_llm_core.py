"""The LLM core shared by every provider: tool-call linking, usage, prices, errors."""

from __future__ import annotations

from typing import Any

import pytest

import steptrace as st
from steptrace.llm import Reply, ToolCall, Usage

pytestmark = pytest.mark.usefixtures("runtime_store_url")  # in memory and on PostgreSQL


def _weather_script() -> None:
    st.llm.script(
        "agent",
        [
            Reply(
                text="",
                tool_calls=(
                    ToolCall("call_paris", "get_weather", {"city": "Paris"}),
                    ToolCall("call_oslo", "get_weather", {"city": "Oslo"}),
                ),
            ),
            "Paris is sunny, Oslo is snowy.",
        ],
    )


def test_a_tool_executed_for_a_tool_call_is_linked_by_call_id(exported: Any) -> None:
    _weather_script()

    @st.tool
    def get_weather(city: str) -> str:
        return {"Paris": "sunny", "Oslo": "snowy"}[city]

    @st.step
    def answer(question: str) -> str:
        messages = [{"role": "user", "content": question}]
        reply = st.llm.chat("scripted:agent", messages)
        # executed out of order: linking goes by arguments, not by position
        for call in reversed(reply.tool_calls):
            get_weather(**call.arguments)
        return st.llm.chat("scripted:agent", messages).text

    @st.workflow
    def agent(question: str) -> str:
        return answer(question)

    assert agent("weather?") == "Paris is sunny, Oslo is snowy."
    run = st.last_run()
    assert run is not None
    asked = run.spans[1]
    assert asked.kind == "llm" and asked.llm is not None
    assert asked.llm["tool_calls"] == [
        {"id": "call_paris", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "call_oslo", "name": "get_weather", "arguments": {"city": "Oslo"}},
    ]
    assert asked.llm["finish_reason"] == "tool_calls"
    tools = [s for s in run.spans if s.kind == "tool"]
    by_city = {t.input["city"]: t.attributes["gen_ai.tool.call.id"] for t in tools}
    assert by_city == {"Oslo": "call_oslo", "Paris": "call_paris"}
    spans = exported()
    for tool in tools:
        assert spans[tool.span_id].attributes["gen_ai.tool.call.id"] == by_city[tool.input["city"]]


def test_a_tool_called_without_a_pending_call_has_no_call_id() -> None:
    @st.tool
    def lookup(order_id: str) -> str:
        return order_id

    @st.workflow
    def wf() -> str:
        return lookup("A-1")

    wf()
    run = st.last_run()
    assert run is not None
    assert "gen_ai.tool.call.id" not in run.spans[0].attributes


def test_cost_comes_from_the_price_table_and_can_be_overridden() -> None:
    st.llm.script("priced", [Reply("ok", usage=Usage(2_000_000, 1_000_000))])
    st.llm.set_price("scripted", "priced", input_per_mtok=1.5, output_per_mtok=4.0)

    @st.workflow
    def wf() -> float | None:
        return st.llm.chat("scripted:priced", [{"role": "user", "content": "hi"}]).cost_usd

    assert wf() == pytest.approx(2 * 1.5 + 4.0)
    run = st.last_run()
    assert run is not None
    assert run.spans[0].llm is not None
    assert run.spans[0].llm["cost_usd"] == pytest.approx(7.0)


def test_shipped_prices_are_dated_and_match_dated_model_names() -> None:
    assert st.llm.prices_as_of() >= "2026-01-01"
    undated = st.llm.cost_usd("openai", "gpt-4o-mini", 1_000_000, 1_000_000)
    dated = st.llm.cost_usd("openai", "gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000)
    assert undated == dated == pytest.approx(0.15 + 0.6)
    cached = st.llm.cost_usd("openai", "gpt-4o-mini", 1_000_000, 0, cached_input_tokens=500_000)
    assert cached == pytest.approx(0.5 * 0.15 + 0.5 * 0.075)
    assert st.llm.cost_usd("openai", "no-such-model", 10, 10) is None


def test_provider_errors_keep_their_status_code() -> None:
    class RateLimited(Exception):
        status_code = 429

    def refuse(messages: object, **params: object) -> str:
        raise RateLimited("slow down")

    st.llm.script("limited", refuse)

    @st.step
    def ask() -> str:
        return st.llm.chat("scripted:limited", [{"role": "user", "content": "hi"}]).text

    @st.workflow
    def wf() -> str:
        return ask()

    with pytest.raises(RateLimited):
        wf()
    run = st.last_run()
    assert run is not None
    llm = next(s for s in run.spans if s.kind == "llm")
    assert llm.status == "failed"
    assert llm.error is not None
    assert (llm.error["type"], llm.error["status_code"]) == ("RateLimited", 429)
