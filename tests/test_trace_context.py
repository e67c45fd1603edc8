"""W3C trace context: a run continues a carried trace, and hands its own context on."""

from __future__ import annotations

import os
from typing import Any

import pytest

import steptrace as st
from tests.support.helpers import reader_url

pytestmark = pytest.mark.usefixtures("store_url")  # every test on both backends

UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"


def test_a_run_continues_the_trace_of_a_carried_traceparent(exported: Any) -> None:
    @st.step
    def inner() -> str | None:
        return st.current_traceparent()

    @st.workflow
    def job(n: int) -> str | None:
        return inner()

    result = st.run(job, 1, traceparent=TRACEPARENT)
    assert result.status == "succeeded"
    record = result.record()
    assert record.trace_id == UPSTREAM_TRACE
    assert (record.parent_trace_id, record.parent_span_id) == (UPSTREAM_TRACE, UPSTREAM_SPAN)
    assert record.input == {"n": 1}  # traceparent is not the workflow's argument
    root = exported()[record.span_id]
    assert root.parent is not None and format(root.parent.span_id, "016x") == UPSTREAM_SPAN
    assert format(root.context.trace_id, "032x") == UPSTREAM_TRACE
    # inside the step, the context to hand on names the step's own span
    step = record.steps("inner")[0]
    assert result.output == f"00-{UPSTREAM_TRACE}-{step.span_id}-01"
    reader = reader_url(os.environ["STEPTRACE_STORE"])
    with st.Store.open(reader) as store:  # the run can be found from the upstream trace id
        rows = store.sql(f"SELECT run_id FROM runs WHERE trace_id = '{UPSTREAM_TRACE}'")
    assert [r["run_id"] for r in rows] == [record.run_id]


def test_a_malformed_traceparent_is_refused_at_once() -> None:
    @st.workflow
    def job() -> None:
        return None

    with pytest.raises(ValueError, match="W3C trace context"):
        st.run(job, traceparent="not-a-traceparent")


def test_outside_a_run_there_is_no_traceparent() -> None:
    assert st.current_traceparent() is None


def test_log_records_are_span_events_on_their_span(exported: Any) -> None:
    import logging

    log = logging.getLogger("tests.trace_context")

    @st.step
    def work() -> None:
        log.warning("disk almost full: token=sk-abcdefghijklmnopqrstuv")

    @st.workflow
    def wf() -> None:
        work()

    wf()
    run = st.last_run()
    assert run is not None
    span = exported()[run.steps("work")[0].span_id]
    events = [e for e in span.events if e.name == "log"]
    assert len(events) == 1
    attributes = dict(events[0].attributes or {})
    assert attributes["log.severity"] == "WARNING"
    assert attributes["log.logger"] == "tests.trace_context"
    assert "sk-abcdefghijklmnopqrstuv" not in attributes["log.message"]
    assert "[REDACTED]" in attributes["log.message"]
