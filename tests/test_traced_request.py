"""A run started inside an incoming traced HTTP request is one trace with the request:
a real FastAPI app instrumented with OpenTelemetry, served by uvicorn on 127.0.0.1,
called by an instrumented ``requests`` client; the workflow's tool calls a third
loopback server, which records the ``traceparent`` it was sent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor

import steptrace as st
from tests.support.helpers import recording_http_server


@pytest.fixture
def orders() -> Iterator[tuple[str, list[dict[str, str]]]]:
    with recording_http_server(b'{"order": "A-1", "amount": 42}') as (url, seen):
        yield f"{url}/orders/A-1", seen


@st.tool
def fetch_order(url: str) -> dict[str, Any]:
    result: dict[str, Any] = requests.get(url, timeout=5).json()
    return result


@st.workflow
def refund(url: str) -> dict[str, Any]:
    order = fetch_order(url)
    return {"refund": order["amount"]}


@pytest.fixture
def app_url(orders: tuple[str, list[dict[str, str]]]) -> Iterator[str]:
    orders_url = orders[0]
    app = FastAPI()

    @app.post("/refunds")
    def create_refund() -> dict[str, Any]:
        result = st.run(refund, orders_url)
        return {"run_id": result.run_id, "output": result.output}

    FastAPIInstrumentor.instrument_app(app)
    RequestsInstrumentor().instrument()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
        RequestsInstrumentor().uninstrument()
        FastAPIInstrumentor.uninstrument_app(app)


def test_a_run_in_a_traced_request_is_one_trace_with_it(
    app_url: str, orders: tuple[str, list[dict[str, str]]], exported: Any
) -> None:
    client = trace.get_tracer("tests.client")
    with client.start_as_current_span("client call") as call:
        reply = requests.post(f"{app_url}/refunds", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["output"] == {"refund": 42}
    trace_id = format(call.get_span_context().trace_id, "032x")

    st.flush()
    with st.Store.open() as store:
        run = store.run(reply.json()["run_id"])
    assert run.trace_id == trace_id  # the run joined the request's trace
    spans = exported()
    server_span = next(
        s for s in spans.values() if s.kind == trace.SpanKind.SERVER and "refunds" in s.name
    )
    assert format(server_span.context.trace_id, "032x") == trace_id
    # the run's parent is the request handler's span (directly, or the server span)
    assert run.parent_trace_id == trace_id
    parent = spans[run.parent_span_id]
    assert parent.context.span_id == server_span.context.span_id or (
        parent.parent is not None and parent.parent.span_id == server_span.context.span_id
    )
    # the tool's outgoing call carried the same trace, naming the HTTP client span
    # stored under the tool
    (headers,) = orders[1]
    traceparent = headers["traceparent"]
    _, sent_trace, sent_parent, _ = traceparent.split("-")
    assert sent_trace == trace_id
    tool = next(s for s in run.spans if s.kind == "tool")
    http_call = next(s for s in run.spans if s.span_id == sent_parent)
    assert http_call.kind == "other" and http_call.parent_span_id == tool.span_id
