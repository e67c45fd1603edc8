"""Spans made inside a run by other OpenTelemetry instrumentation land in the run's tree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor

import steptrace as st
from tests.support.helpers import recording_http_server

pytestmark = pytest.mark.usefixtures("store_url")  # every test on both backends

_seen: list[dict[str, str]] = []


@pytest.fixture
def http_url() -> Iterator[str]:
    with recording_http_server() as (url, seen):
        global _seen
        _seen = seen
        yield f"{url}/orders/A-1"


@pytest.fixture
def instrumented_requests() -> Iterator[None]:
    RequestsInstrumentor().instrument()
    yield
    RequestsInstrumentor().uninstrument()


def test_an_instrumented_http_call_in_a_tool_is_stored_under_it(
    http_url: str, instrumented_requests: None
) -> None:
    @st.tool
    def fetch_order(url: str) -> dict[str, bool]:
        result: dict[str, bool] = requests.get(url, timeout=5).json()
        return result

    @st.workflow
    def wf(url: str) -> dict[str, bool]:
        return fetch_order(url)

    assert wf(http_url) == {"ok": True}
    run = st.last_run()
    assert run is not None
    tool = next(s for s in run.spans if s.kind == "tool")
    others = [s for s in run.spans if s.kind == "other"]
    assert len(others) == 1
    http_span = others[0]
    assert http_span.parent_span_id == tool.span_id
    assert http_span.name == "GET"
    assert http_span.status == "succeeded"
    assert http_span.attributes.get("http.response.status_code") == 200 or (
        http_span.attributes.get("http.status_code") == 200
    )
    # the outgoing request carried the W3C context of that very span
    traceparent = _seen[0]["traceparent"]
    assert traceparent.split("-")[1] == run.trace_id
    assert traceparent.split("-")[2] == http_span.span_id


def test_a_span_with_genai_attributes_is_stored_as_an_llm_call() -> None:
    other = trace.get_tracer("some.vendor.instrumentation")

    @st.step
    def ask() -> str:
        with other.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 500,
                    "api_key": "sk-thisIsASecretKeyOf32Characters00",
                }
            )
        return "done"

    @st.workflow
    def wf() -> str:
        return ask()

    wf()
    run = st.last_run()
    assert run is not None
    step = run.steps("ask")[0]
    llm = next(s for s in run.spans if s.kind == "llm")
    assert llm.parent_span_id == step.span_id
    assert llm.llm is not None
    assert (llm.llm["provider"], llm.llm["model"]) == ("openai", "gpt-4o-mini")
    assert (llm.llm["input_tokens"], llm.llm["output_tokens"]) == (1000, 500)
    assert llm.llm["cost_usd"] == pytest.approx((1000 * 0.15 + 500 * 0.6) / 1e6)
    assert llm.attributes["api_key"] == "[REDACTED]"


def test_spans_outside_runs_and_when_turned_off_are_not_stored() -> None:
    other = trace.get_tracer("some.library")
    with other.start_as_current_span("outside any run"):
        pass

    @st.step
    def work() -> None:
        with other.start_as_current_span("inside"):
            pass

    @st.workflow
    def wf() -> None:
        work()

    st.configure(capture_foreign_spans=False)
    wf()
    run = st.last_run()
    assert run is not None
    assert [s.kind for s in run.spans] == ["step"]

    st.configure(capture_foreign_spans=True)
    wf()
    run = st.last_run()
    assert run is not None
    assert sorted(s.kind for s in run.spans) == ["other", "step"]
    with st.Store.open() as store:
        names = {s.name for r in store.runs(last=10) for s in store.run(r.run_id).spans}
    assert "outside any run" not in names
