"""OpenTelemetry (issue 2, point 6): span names and attributes, and the same ids in the
store as in the exported spans. Uses the real SDK with an in-memory exporter."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import steptrace as st
from tests.support.helpers import parent_hex, span_hex, trace_hex

Exported = Callable[[], dict[str, ReadableSpan]]


def _triage_workflow() -> Any:
    st.llm.script("otel-model", ["billing"])

    @st.step
    def classify(text: str) -> str:
        reply = st.llm.chat(
            model="scripted:otel-model",
            messages=[{"role": "user", "content": text}],
            temperature=0.2,
            max_tokens=16,
        )
        return reply.text

    @st.tool
    def lookup_order(order_id: str) -> dict[str, str]:
        return {"order_id": order_id, "state": "open"}

    @st.workflow
    def triage(text: str) -> dict[str, Any]:
        return {"label": classify(text), "order": lookup_order("O-7")}

    return triage


def _by_name(spans: dict[str, ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {s.name: s for s in spans.values()}
    assert len(named) == len(spans), "span names are not unique in this test"
    return named


def test_span_names(exported: Exported) -> None:
    _triage_workflow()("my invoice is wrong")
    assert sorted(s.name for s in exported().values()) == sorted(
        ["invoke_workflow triage", "classify", "chat otel-model", "execute_tool lookup_order"]
    )


def test_llm_span_has_gen_ai_attributes(exported: Exported) -> None:
    _triage_workflow()("my invoice is wrong")
    run = st.last_run()
    assert run is not None
    (llm_view,) = [s for s in run.spans if s.kind == "llm"]
    assert llm_view.llm is not None

    llm_span = exported()[llm_view.span_id]
    attrs = dict(llm_span.attributes or {})
    assert llm_span.name == f"chat {attrs['gen_ai.request.model']}"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "scripted"
    assert attrs["gen_ai.request.model"] == "otel-model"
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.max_tokens"] == 16
    assert attrs["gen_ai.usage.input_tokens"] == llm_view.llm["input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] == llm_view.llm["output_tokens"] > 0
    assert attrs["steptrace.run.id"] == run.run_id
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "content": "my invoice is wrong"}
    ]
    assert "billing" in str(attrs["gen_ai.output.messages"])


def test_workflow_step_and_tool_span_attributes(exported: Exported) -> None:
    _triage_workflow()("my invoice is wrong")
    run = st.last_run()
    assert run is not None
    spans = _by_name(exported())

    root = spans["invoke_workflow triage"]
    assert span_hex(root) == run.span_id
    assert root.attributes is not None
    assert root.attributes["steptrace.run.id"] == run.run_id
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"

    step = spans["classify"]
    assert step.attributes is not None
    assert step.attributes["steptrace.run.id"] == run.run_id
    assert step.attributes["steptrace.step.attempt"] == 1
    assert json.loads(str(step.attributes["steptrace.step.input"])) == {
        "text": "my invoice is wrong"
    }
    assert json.loads(str(step.attributes["steptrace.step.output"])) == "billing"

    tool = spans["execute_tool lookup_order"]
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "lookup_order"
    assert tool.attributes["steptrace.run.id"] == run.run_id
    assert json.loads(str(tool.attributes["steptrace.step.output"])) == {
        "order_id": "O-7",
        "state": "open",
    }


def test_stored_ids_are_the_exported_ids_and_parents_match(exported: Exported) -> None:
    @st.step
    def inner(n: int) -> int:
        return n

    @st.step(retries=1, backoff=0.001)
    def outer() -> int:
        if not getattr(outer, "failed", False):
            outer.failed = True  # type: ignore[attr-defined]
            raise RuntimeError("first attempt")
        return inner(1) + inner(2)

    triage = _triage_workflow()

    @st.workflow
    def wf() -> int:
        triage("nested workflow as a step")
        return outer()

    assert wf() == 3
    run = st.last_run()
    assert run is not None
    spans = exported()
    assert len(spans) == len(run.spans) + 1  # every span is stored; plus the root
    root = spans[run.span_id]
    assert root.parent is None
    assert trace_hex(root) == run.trace_id
    for view in run.spans:
        otel_span = spans[view.span_id]
        assert trace_hex(otel_span) == run.trace_id
        assert parent_hex(otel_span) == view.parent_span_id
        assert otel_span.attributes is not None
        assert otel_span.attributes["steptrace.run.id"] == run.run_id
    # the stored timestamps are the exported ones
    for view in run.spans:
        otel_span = spans[view.span_id]
        assert otel_span.start_time is not None and otel_span.end_time is not None
        assert view.duration_ms == pytest.approx(
            (otel_span.end_time - otel_span.start_time) / 1e6, abs=0.002
        )


def test_run_started_inside_an_active_span_joins_its_trace(exported: Exported) -> None:
    @st.step
    def s() -> int:
        return 1

    @st.workflow
    def wf() -> int:
        return s()

    tracer = trace.get_tracer("tests.incoming-request")
    with tracer.start_as_current_span("GET /triage") as request_span:
        wf()
    run = st.last_run()
    assert run is not None
    ctx = request_span.get_span_context()
    assert run.trace_id == format(ctx.trace_id, "032x")
    assert run.parent_trace_id == run.trace_id
    assert run.parent_span_id == format(ctx.span_id, "016x")

    spans = exported()
    root = spans[run.span_id]
    assert parent_hex(root) == format(ctx.span_id, "016x")
    assert all(trace_hex(sp) == run.trace_id for sp in spans.values())


def test_separate_runs_get_separate_traces() -> None:
    @st.workflow
    def wf() -> None:
        return None

    a = st.run(wf)
    b = st.run(wf)
    assert a.record().trace_id != b.record().trace_id


def test_failed_spans_have_error_status_and_type(exported: Exported) -> None:
    @st.step
    def broken() -> None:
        raise LookupError("gone")

    @st.workflow
    def wf() -> None:
        broken()

    with pytest.raises(LookupError):
        wf()
    spans = _by_name(exported())
    for name in ("broken", "invoke_workflow wf"):
        span = spans[name]
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "LookupError"


def test_successful_spans_are_not_errors(exported: Exported) -> None:
    _triage_workflow()("fine")
    for span in exported().values():
        assert span.status.status_code is not StatusCode.ERROR
        assert "error.type" not in (span.attributes or {})


def test_exported_values_are_capped_but_the_store_keeps_everything(exported: Exported) -> None:
    st.configure(export_value_bytes=128)
    text = "a" * 1000

    @st.step
    def echo(text: str) -> str:
        return text

    @st.workflow
    def wf() -> str:
        return echo(text)

    wf()
    run = st.last_run()
    assert run is not None
    (view,) = run.steps()
    assert view.output == text
    attrs = exported()[view.span_id].attributes
    assert attrs is not None
    exported_output = str(attrs["steptrace.step.output"])
    assert len(exported_output) < 200
    assert "truncated" in exported_output


def test_each_attempt_is_its_own_otel_span(exported: Exported) -> None:
    failures = iter([True, True, False])

    @st.step(retries=2, backoff=0.001)
    def flaky() -> str:
        if next(failures):
            raise ConnectionError("again")
        return "ok"

    @st.workflow
    def wf() -> str:
        return flaky()

    wf()
    run = st.last_run()
    assert run is not None
    attempts = [exported()[s.span_id] for s in run.steps()]
    assert [a.name for a in attempts] == ["flaky"] * 3
    assert [(a.attributes or {})["steptrace.step.attempt"] for a in attempts] == [1, 2, 3]
    assert [a.status.status_code for a in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert {parent_hex(a) for a in attempts} == {run.span_id}
