"""The workflow API (issue 2, point 1): decorators, sync and async, nesting, results.

Every test runs real workflows against a real SQLite file and reads the run back
through the public API.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import steptrace as st
from tests.support.helpers import is_postgres, parse_ts, run_python

pytestmark = pytest.mark.usefixtures("store_url")  # every test on both backends


def recorded_runs() -> list[st.RunRecord]:
    """The runs in the test's store: none when no SQLite file was made (reading a store
    creates none)."""
    url = os.environ["STEPTRACE_STORE"]
    if not is_postgres(url) and not os.path.exists(url):
        return []
    with st.Store.open() as store:
        return store.runs()


RUN_KEYS = {
    "run_id",
    "workflow",
    "status",
    "trace_id",
    "span_id",
    "started_at",
    "ended_at",
    "duration_ms",
    "input",
    "output",
    "error",
    "spans",
}
SPAN_KEYS = {
    "span_id",
    "parent_span_id",
    "kind",
    "name",
    "attempt",
    "status",
    "started_at",
    "ended_at",
    "duration_ms",
    "input",
    "output",
    "error",
    "llm",
    "logs",
    "attributes",
}


class Payload:
    """An arbitrary object: what a step returns must come back as the same object."""


# --- one sync workflow, end to end ---------------------------------------------------


def test_sync_workflow_records_run_steps_tools_and_llm_calls() -> None:
    st.llm.script("api-sync", ["positive"])

    @st.step
    def classify(text: str, *, temperature: float = 0.0) -> str:
        reply = st.llm.chat(
            model="scripted:api-sync",
            messages=[{"role": "user", "content": text}],
            temperature=temperature,
        )
        return reply.text

    @st.tool
    def lookup(order_id: str) -> dict[str, Any]:
        return {"order_id": order_id, "state": "shipped"}

    @st.workflow
    def triage(text: str, order_id: str) -> dict[str, Any]:
        label = classify(text)
        order = lookup(order_id)
        return {"label": label, "order": order}

    result = triage("great service", order_id="A-1")
    assert result == {"label": "positive", "order": {"order_id": "A-1", "state": "shipped"}}

    run = st.last_run()
    assert run is not None
    data = run.to_dict()
    assert set(data) >= RUN_KEYS
    assert data["workflow"] == "triage"
    assert data["status"] == "succeeded"
    assert data["input"] == {"text": "great service", "order_id": "A-1"}
    assert data["output"] == result
    assert data["error"] is None
    assert len(data["trace_id"]) == 32 and int(data["trace_id"], 16)
    assert len(data["span_id"]) == 16 and int(data["span_id"], 16)
    assert parse_ts(data["started_at"]) <= parse_ts(data["ended_at"])
    assert data["duration_ms"] >= 0

    spans = data["spans"]
    assert [(s["kind"], s["name"]) for s in spans] == [
        ("step", "classify"),
        ("llm", "chat api-sync"),
        ("tool", "lookup"),
    ]
    for span in spans:
        assert set(span) >= SPAN_KEYS
        assert span["status"] == "succeeded"
        assert span["error"] is None
        assert span["duration_ms"] >= 0
        assert parse_ts(span["started_at"]) <= parse_ts(span["ended_at"])
    step, llm_call, tool_call = spans
    assert step["parent_span_id"] == data["span_id"]
    assert step["attempt"] == 1
    assert step["input"] == {"text": "great service", "temperature": 0.0}
    assert step["output"] == "positive"
    assert llm_call["parent_span_id"] == step["span_id"]
    assert llm_call["llm"]["provider"] == "scripted"
    assert llm_call["llm"]["model"] == "api-sync"
    assert llm_call["llm"]["messages"] == [{"role": "user", "content": "great service"}]
    assert llm_call["llm"]["response"] == "positive"
    assert llm_call["llm"]["input_tokens"] > 0
    assert llm_call["llm"]["output_tokens"] > 0
    assert tool_call["parent_span_id"] == data["span_id"]
    assert tool_call["input"] == {"order_id": "A-1"}
    assert tool_call["output"] == {"order_id": "A-1", "state": "shipped"}


def test_inputs_are_bound_by_parameter_name_with_defaults() -> None:
    @st.step
    def shaped(a: int, b: int = 2, *rest: int, c: str = "x", **extra: Any) -> int:
        return a + b + sum(rest)

    @st.workflow
    def wf() -> int:
        return shaped(1, 5, 7, 8, c="y", flag=True)

    assert wf() == 21
    run = st.last_run()
    assert run is not None
    assert run.steps("shaped")[0].input == {
        "a": 1,
        "b": 5,
        "rest": [7, 8],
        "c": "y",
        "extra": {"flag": True},
    }


def test_method_steps_do_not_record_self() -> None:
    class Classifier:
        def __init__(self) -> None:
            self.prefix = "label:"

        @st.step
        def classify(self, text: str) -> str:
            return self.prefix + text

    @st.workflow
    def wf() -> str:
        return Classifier().classify("ok")

    assert wf() == "label:ok"
    run = st.last_run()
    assert run is not None
    assert run.steps("classify")[0].input == {"text": "ok"}


# --- async ---------------------------------------------------------------------------


def test_async_workflow_steps_tools_and_llm_calls() -> None:
    st.llm.script("api-async", ["async answer"])

    @st.step
    async def think(question: str) -> str:
        await asyncio.sleep(0)
        reply = await st.llm.achat(
            model="scripted:api-async", messages=[{"role": "user", "content": question}]
        )
        return reply.text

    @st.tool
    async def fetch(url: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"url": url, "body": "ok"}

    @st.workflow
    async def agent(question: str) -> dict[str, Any]:
        answer = await think(question)
        page = await fetch("http://example.test/")
        return {"answer": answer, "page": page}

    out = asyncio.run(agent("why?"))
    assert out == {"answer": "async answer", "page": {"url": "http://example.test/", "body": "ok"}}

    run = st.last_run()
    assert run is not None
    assert run.workflow == "agent"
    assert run.status == "succeeded"
    assert run.input == {"question": "why?"}
    assert run.output == out
    kinds = [(s.kind, s.name, s.status) for s in run.spans]
    assert kinds == [
        ("step", "think", "succeeded"),
        ("llm", "chat api-async", "succeeded"),
        ("tool", "fetch", "succeeded"),
    ]
    think_span, llm_span, tool_span = run.spans
    assert think_span.parent_span_id == run.span_id
    assert llm_span.parent_span_id == think_span.span_id
    assert llm_span.llm is not None and llm_span.llm["response"] == "async answer"
    assert tool_span.parent_span_id == run.span_id
    assert tool_span.output == {"url": "http://example.test/", "body": "ok"}


def test_sync_and_async_decorated_functions_keep_their_kind() -> None:
    @st.step
    async def a() -> int:
        return 1

    @st.step
    def b() -> int:
        return 2

    assert asyncio.iscoroutinefunction(a)
    assert not asyncio.iscoroutinefunction(b)
    assert a.__name__ == "a" and b.__name__ == "b"


# --- nesting -------------------------------------------------------------------------


def test_steps_nest_and_parent_span_ids_form_the_tree() -> None:
    @st.step
    def leaf(n: int) -> int:
        return n * 10

    @st.step
    def middle(n: int) -> int:
        return leaf(n) + leaf(n + 1)

    @st.step
    def outer() -> int:
        return middle(1)

    @st.workflow
    def wf() -> int:
        return outer()

    assert wf() == 30
    run = st.last_run()
    assert run is not None
    by_name: dict[str, list[Any]] = {}
    for s in run.spans:
        by_name.setdefault(s.name, []).append(s)
    (outer_span,) = by_name["outer"]
    (middle_span,) = by_name["middle"]
    leaves = by_name["leaf"]
    assert outer_span.parent_span_id == run.span_id
    assert middle_span.parent_span_id == outer_span.span_id
    assert [s.parent_span_id for s in leaves] == [middle_span.span_id] * 2
    assert [s.input for s in leaves] == [{"n": 1}, {"n": 2}]
    assert [s.output for s in leaves] == [10, 20]
    assert run.children(middle_span.span_id) == leaves
    # flat, in start order
    assert [s.name for s in run.spans] == ["outer", "middle", "leaf", "leaf"]


def test_workflow_called_inside_a_run_is_a_step_of_that_run() -> None:
    @st.workflow
    def inner(x: int) -> int:
        return x + 1

    @st.workflow
    def outer() -> int:
        return inner(1)

    assert outer() == 2
    with st.Store.open() as store:
        runs = store.runs()
        assert [r.workflow for r in runs] == ["outer"]
        run = store.run(runs[0].run_id)
    (span,) = run.spans
    assert (span.name, span.kind, span.input, span.output) == ("inner", "step", {"x": 1}, 2)
    assert span.parent_span_id == run.span_id


# --- outside a workflow --------------------------------------------------------------


def test_step_outside_a_workflow_runs_untraced(exported: Any) -> None:
    calls: list[int] = []

    @st.step(retries=1, backoff=0.001)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first attempt fails")
        return x * 2

    @st.tool
    def helper() -> str:
        return "plain"

    assert st.current_run_id() is None
    assert flaky(21) == 42
    assert calls == [21, 21]  # retries still apply
    assert helper() == "plain"
    st.flush()
    assert exported() == {}
    assert recorded_runs() == []


def test_async_step_outside_a_workflow_runs_untraced(exported: Any) -> None:
    @st.step
    async def double(x: int) -> int:
        return x * 2

    assert asyncio.run(double(4)) == 8
    assert exported() == {}
    assert recorded_runs() == []


def test_llm_chat_outside_a_run_is_just_made(exported: Any) -> None:
    st.llm.script("api-outside", ["hello"])
    reply = st.llm.chat(model="scripted:api-outside", messages=[{"role": "user", "content": "hi"}])
    assert reply.text == "hello"
    assert reply.model == "api-outside"
    assert reply.usage.input_tokens and reply.usage.output_tokens
    assert exported() == {}


def test_step_outside_a_workflow_becomes_a_one_step_run_when_configured() -> None:
    st.configure(record_steps_outside_workflow=True)

    @st.step
    def standalone(x: int) -> int:
        return x + 1

    assert standalone(1) == 2
    run = st.last_run()
    assert run is not None
    assert run.workflow == "standalone"
    assert run.status == "succeeded"
    assert run.input == {"x": 1}
    assert run.output == 2


def test_one_step_run_keeps_retries_and_records_the_step() -> None:
    st.configure(record_steps_outside_workflow=True)
    calls: list[int] = []

    @st.step(retries=2, backoff=0.001)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ValueError("not yet")
        return x

    assert flaky(7) == 7  # the same as with recording off
    run = st.last_run()
    assert run is not None
    assert run.status == "succeeded"
    assert [(s.name, s.attempt, s.status) for s in run.steps()] == [
        ("flaky", 1, "failed"),
        ("flaky", 2, "failed"),
        ("flaky", 3, "succeeded"),
    ]


# --- values and exceptions pass through unchanged ------------------------------------


def test_return_values_pass_through_unchanged() -> None:
    payload = Payload()
    items = [1, 2]

    @st.step
    def give() -> Payload:
        return payload

    @st.tool
    def same(x: list[int]) -> list[int]:
        return x

    @st.workflow
    def wf() -> tuple[Payload, list[int]]:
        got = give()
        assert got is payload
        listed = same(items)
        assert listed is items
        return got, listed

    out = wf()
    assert out[0] is payload
    assert out[1] is items


def test_exceptions_pass_through_unchanged() -> None:
    boom = KeyError("missing")

    @st.step
    def step_raises() -> None:
        raise boom

    @st.workflow
    def wf() -> None:
        step_raises()

    with pytest.raises(KeyError) as info:
        wf()
    assert info.value is boom

    run = st.last_run()
    assert run is not None
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["type"] == "KeyError"
    assert "missing" in run.error["message"]
    assert "step_raises" in run.error["traceback"]
    (span,) = run.steps()
    assert span.status == "failed"
    assert span.error is not None and span.error["type"] == "KeyError"


def test_async_exceptions_pass_through_unchanged() -> None:
    boom = RuntimeError("async boom")

    @st.tool
    async def breaks() -> None:
        raise boom

    @st.workflow
    async def wf() -> None:
        await breaks()

    with pytest.raises(RuntimeError) as info:
        asyncio.run(wf())
    assert info.value is boom
    run = st.last_run()
    assert run is not None
    assert run.status == "failed"
    assert [(s.kind, s.status) for s in run.spans] == [("tool", "failed")]


def test_caught_step_failure_leaves_the_run_succeeded() -> None:
    @st.step
    def fails() -> None:
        raise ValueError("handled")

    @st.workflow
    def wf() -> str:
        try:
            fails()
        except ValueError:
            return "recovered"
        return "unreachable"

    assert wf() == "recovered"
    run = st.last_run()
    assert run is not None
    assert run.status == "succeeded"
    assert run.output == "recovered"
    assert run.steps()[0].status == "failed"


# --- llm -----------------------------------------------------------------------------


def test_scripted_responder_list_cycles_and_callable_sees_messages_and_params() -> None:
    st.llm.script("api-cycle", ["one", "two"])
    seen: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def responder(messages: list[dict[str, Any]], **params: Any) -> str:
        seen.append((messages, params))
        return f"echo {messages[-1]['content']}"

    st.llm.script("api-fn", responder)
    msgs = [{"role": "user", "content": "x"}]
    assert [st.llm.chat(model="scripted:api-cycle", messages=msgs).text for _ in range(3)] == [
        "one",
        "two",
        "one",
    ]
    assert st.llm.chat(model="scripted:api-fn", messages=msgs, temperature=0.5).text == "echo x"
    assert seen == [(msgs, {"temperature": 0.5})]


def test_llm_failure_is_recorded_and_reraised_unchanged() -> None:
    boom = TimeoutError("model timed out")

    def responder(messages: list[dict[str, Any]], **params: Any) -> str:
        raise boom

    st.llm.script("api-broken", responder)

    @st.step
    def ask() -> str:
        reply = st.llm.chat(
            model="scripted:api-broken", messages=[{"role": "user", "content": "q"}]
        )
        return reply.text

    @st.workflow
    def wf() -> str:
        return ask()

    with pytest.raises(TimeoutError) as info:
        wf()
    assert info.value is boom
    run = st.last_run()
    assert run is not None
    step_span, llm_span = run.spans
    assert llm_span.kind == "llm"
    assert llm_span.status == "failed"
    assert llm_span.parent_span_id == step_span.span_id
    assert llm_span.error is not None
    assert llm_span.error["type"] == "TimeoutError"
    assert llm_span.error["message"] == "model timed out"
    assert llm_span.llm is not None
    assert llm_span.llm["messages"] == [{"role": "user", "content": "q"}]


def test_bad_model_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="provider:name"):
        st.llm.chat(model="no-provider", messages=[])
    with pytest.raises(ValueError, match="unknown LLM provider"):
        st.llm.chat(model="nosuch:model", messages=[])


# --- run / arun / last_run -----------------------------------------------------------


def test_run_returns_a_result_for_success_and_failure_without_raising() -> None:
    boom = ValueError("bad input")

    @st.workflow
    def wf(x: int) -> int:
        if x < 0:
            raise boom
        return x * 2

    ok = st.run(wf, 21)
    assert isinstance(ok, st.RunResult)
    assert (ok.status, ok.output, ok.exception) == ("succeeded", 42, None)
    failed = st.run(wf, x=-1)
    assert failed.status == "failed"
    assert failed.output is None
    assert failed.exception is boom
    assert ok.run_id != failed.run_id

    with st.Store.open() as store:
        stored_ok = store.run(ok.run_id)
        stored_failed = store.run(failed.run_id)
    assert (stored_ok.status, stored_ok.input, stored_ok.output) == ("succeeded", {"x": 21}, 42)
    assert stored_failed.status == "failed"
    assert stored_failed.error is not None and stored_failed.error["message"] == "bad input"
    assert failed.record().run_id == failed.run_id


def test_arun_is_the_async_twin_of_run() -> None:
    @st.workflow
    async def wf(x: int) -> int:
        await asyncio.sleep(0)
        if x == 0:
            raise ZeroDivisionError("zero")
        return 10 // x

    ok = asyncio.run(st.arun(wf, 5))
    assert (ok.status, ok.output) == ("succeeded", 2)
    bad = asyncio.run(st.arun(wf, 0))
    assert bad.status == "failed"
    assert isinstance(bad.exception, ZeroDivisionError)
    assert bad.record().status == "failed"


def test_run_rejects_what_it_cannot_run() -> None:
    @st.step
    def not_a_workflow() -> None:
        return None

    @st.workflow
    async def async_wf() -> None:
        return None

    with pytest.raises(TypeError, match=r"not a @steptrace\.workflow"):
        st.run(not_a_workflow)
    with pytest.raises(TypeError, match="arun"):
        st.run(async_wf)


def test_last_run_is_the_run_that_finished_last() -> None:
    @st.workflow
    def wf(n: int) -> int:
        return n

    first = st.run(wf, 1)
    second = st.run(wf, 2)
    last = st.last_run()
    assert last is not None
    assert last.run_id == second.run_id != first.run_id
    assert last.output == 2


def test_current_run_id_inside_steps_and_workflows() -> None:
    seen: list[str | None] = []

    @st.step
    def s() -> None:
        seen.append(st.current_run_id())

    @st.workflow
    def wf() -> None:
        seen.append(st.current_run_id())
        s()

    result = st.run(wf)
    assert seen == [result.run_id, result.run_id]
    assert st.current_run_id() is None


def test_workflow_name_and_tags() -> None:
    @st.workflow(name="renamed", tags=["nightly", "v2"])
    def wf() -> int:
        return 1

    @st.step(name="custom-step")
    def s() -> int:
        return 2

    @st.workflow
    def wf2() -> int:
        return s()

    wf()
    run = st.last_run()
    assert run is not None
    assert run.workflow == "renamed"
    assert run.tags == ["nightly", "v2"]
    wf2()
    run2 = st.last_run()
    assert run2 is not None
    assert [s.name for s in run2.steps()] == ["custom-step"]


def test_import_has_no_side_effects(tmp_path: Any) -> None:
    proc = run_python(
        """
        import os, threading
        before = threading.active_count()
        import steptrace
        from opentelemetry import trace
        from opentelemetry.trace import ProxyTracerProvider
        assert threading.active_count() == before, threading.enumerate()
        assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
        assert not os.path.exists(os.environ["STEPTRACE_STORE"])
        assert not os.path.exists(".steptrace")
        print("clean")
        """,
        tmp_path / "never.db",
    )
    assert proc.stdout.strip() == "clean"
