"""Exported spans speak OpenInference too (Phoenix), and retries link to the attempt
before them."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic

import steptrace as st


class Label(pydantic.BaseModel):
    category: str


def _triage() -> Any:
    st.llm.script("oi", ["not json", '{"category": "billing"}'])

    @st.tool
    def lookup(order_id: str) -> dict[str, str]:
        return {"order_id": order_id}

    @st.step(retries=1, backoff=0.001, output=Label)
    def classify(text: str) -> str:
        messages = [{"role": "system", "content": "classify"}, {"role": "user", "content": text}]
        return st.llm.chat("scripted:oi", messages, temperature=0).text

    @st.workflow
    def triage(text: str) -> str:
        lookup("A-1")
        return classify(text).category

    return triage


def test_spans_carry_openinference_kinds_inputs_and_outputs(exported: Any) -> None:
    assert _triage()("charged twice") == "billing"
    run = st.last_run()
    assert run is not None
    spans = exported()
    root = spans[run.span_id].attributes
    assert root["openinference.span.kind"] == "CHAIN"
    assert orjson.loads(root["input.value"]) == {"text": "charged twice"}
    assert orjson.loads(root["output.value"]) == "billing"
    tool = next(s for s in run.spans if s.kind == "tool")
    assert spans[tool.span_id].attributes["openinference.span.kind"] == "TOOL"
    assert spans[tool.span_id].attributes["tool.name"] == "lookup"
    step = run.steps("classify")[-1]
    assert spans[step.span_id].attributes["openinference.span.kind"] == "CHAIN"
    assert orjson.loads(spans[step.span_id].attributes["output.value"]) == {"category": "billing"}
    llm = [s for s in run.spans if s.kind == "llm"][-1]
    attributes = spans[llm.span_id].attributes
    assert attributes["openinference.span.kind"] == "LLM"
    assert attributes["llm.model_name"] == "oi"
    assert attributes["llm.input_messages.0.message.role"] == "system"
    assert attributes["llm.input_messages.1.message.content"] == "charged twice"
    assert attributes["llm.token_count.total"] == (
        attributes["llm.token_count.prompt"] + attributes["llm.token_count.completion"]
    )
    assert orjson.loads(attributes["output.value"]) == '{"category": "billing"}'


def test_openinference_can_be_turned_off(exported: Any) -> None:
    st.configure(openinference=False)
    _triage()("x")
    run = st.last_run()
    assert run is not None
    assert all(
        "openinference.span.kind" not in (span.attributes or {}) for span in exported().values()
    )


def test_a_retry_links_to_the_attempt_before_it(exported: Any) -> None:
    _triage()("charged twice")
    run = st.last_run()
    assert run is not None
    first, second = run.steps("classify")
    spans = exported()
    assert spans[first.span_id].links == ()
    links = spans[second.span_id].links
    assert len(links) == 1
    assert format(links[0].context.span_id, "016x") == first.span_id
