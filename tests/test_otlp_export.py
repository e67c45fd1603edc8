"""Spans leave the CLI over real OTLP/HTTP: a collector on 127.0.0.1 (``http.server`` in a
thread) decodes the protobuf requests, and what it received is compared with the store."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import steptrace as st
from steptrace.examples import triage
from tests.support.helpers import clean_env
from tests.support.otlp_collector import Collector

SERVICE = "steptrace-otlp-test"


@pytest.fixture
def collector(otlp_collector: Collector) -> Collector:
    """The shared ``otlp_collector``, by the name this module's tests use."""
    return otlp_collector


def run_demo(runs: int, store: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = clean_env()
    full_env.update(STEPTRACE_STORE=str(store), OTEL_SERVICE_NAME=SERVICE, **env)
    return subprocess.run(
        [sys.executable, "-m", "steptrace", "demo", "--runs", str(runs)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def export_otlp(
    store: Path, endpoint: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``steptrace export-otlp`` in a child process, with no ``OTEL_*`` settings of ours."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    full_env.update(STEPTRACE_STORE=str(store), **env)
    return subprocess.run(
        [sys.executable, "-m", "steptrace", "export-otlp", "--endpoint", endpoint, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored(store: Path) -> list[st.RunRecord]:
    with st.Store.open(str(store)) as s:
        return [s.run(r.run_id) for r in s.runs(last=1000)]


def test_demo_exports_its_spans_over_otlp_http(collector: Collector, tmp_path: Path) -> None:
    store = tmp_path / "steptrace.db"
    proc = run_demo(
        12,
        store,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        OTEL_EXPORTER_OTLP_HEADERS="x-team=evals,x-env=ci",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert f"sent to http://127.0.0.1:{collector.port} (OTLP http/protobuf)" in proc.stdout

    assert collector.requests, "the collector received nothing"
    for path, headers, _ in collector.requests:
        assert path == "/v1/traces"
        assert headers.get("content-type") == "application/x-protobuf"
        assert (headers.get("x-team"), headers.get("x-env")) == ("evals", "ci")
    spans = collector.spans()
    by_id = {s["span_id"]: s for s in spans}
    assert len(by_id) == len(spans)
    assert {s["resource"].get("service.name") for s in spans} == {SERVICE}
    assert {s["scope"] for s in spans} == {"steptrace"}

    names = {s["name"] for s in spans}
    assert {
        "invoke_workflow triage",
        "classify",
        "draft_reply",
        "check_policy",
        "chat triage-classifier",
        "chat triage-drafter",
        "execute_tool lookup_order",
    } <= names

    runs = stored(store)
    assert len(runs) == 12
    assert any(r.status == "failed" for r in runs)
    for run in runs:
        root = by_id[run.span_id]
        assert root["name"] == "invoke_workflow triage"
        assert root["trace_id"] == run.trace_id
        assert root["parent_span_id"] is None
        assert root["attributes"]["steptrace.run.id"] == run.run_id
        assert root["attributes"]["gen_ai.operation.name"] == "invoke_workflow"
        assert root["status"] == (2 if run.status == "failed" else 0)  # ERROR / UNSET
        for span in run.spans:
            exported = by_id[span.span_id]
            assert exported["trace_id"] == run.trace_id
            assert exported["parent_span_id"] == span.parent_span_id
            assert exported["attributes"]["steptrace.run.id"] == run.run_id
        in_trace = [s for s in spans if s["trace_id"] == run.trace_id]
        assert len(in_trace) == 1 + len(run.spans)

    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert chats
    for chat in chats:
        attributes = chat["attributes"]
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == chat["name"].removeprefix("chat ")
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.input.messages" in attributes
    tools = [s for s in spans if s["name"] == "execute_tool lookup_order"]
    assert tools and all(t["attributes"]["gen_ai.tool.name"] == "lookup_order" for t in tools)
    retried = [s for s in spans if s["attributes"].get("steptrace.step.attempt") == 2]
    assert retried, "a retried attempt is exported with its attempt number"


def test_no_secret_reaches_the_collector(collector: Collector, tmp_path: Path) -> None:
    secrets = re.findall(r"sk-[\w-]{16,}", " ".join(str(t["body"]) for t in triage.TICKETS))
    tickets = triage.demo_tickets(12)
    assert secrets and any(secret in t.body for t in tickets for secret in secrets)
    proc = run_demo(
        12, tmp_path / "s.db", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}"
    )
    assert proc.returncode == 0, proc.stderr
    raw = b"".join(body for _, _, body in collector.requests)
    assert raw
    for secret in secrets:
        assert secret.encode() not in raw
    assert b"[REDACTED]" in raw  # the ticket with the key was exported, redacted


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_collector_does_not_break_the_demo(tmp_path: Path) -> None:
    store = tmp_path / "steptrace.db"
    started = time.monotonic()
    proc = run_demo(3, store, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 60
    runs = stored(store)
    assert len(runs) == 3
    assert all(r.spans for r in runs)
    assert "runs           3" in proc.stdout


def test_export_otlp_resends_stored_runs_with_their_ids(
    tmp_path: Path, collector: Collector
) -> None:
    store = tmp_path / "backfill.db"
    done = run_demo(4, store)  # no collector configured while these ran
    assert done.returncode == 0, done.stderr
    runs = stored(store)
    sent = export_otlp(
        store,
        f"http://127.0.0.1:{collector.port}",
        "--header",
        "x-team=evals",
        "--last",
        "10",
        OTEL_SERVICE_NAME="backfill",
    )
    assert sent.returncode == 0, sent.stderr
    expected = {(r.trace_id, r.span_id) for r in runs} | {
        (r.trace_id, s.span_id) for r in runs for s in r.spans
    }
    assert f"sent 4 run(s), {len(expected)} span(s)" in sent.stdout
    spans = collector.spans()
    assert {(s["trace_id"], s["span_id"]) for s in spans} == expected
    assert all(headers.get("x-team") == "evals" for _, headers, _ in collector.requests)
    by_id = {s["span_id"]: s for s in spans}
    for run in runs:
        root = by_id[run.span_id]
        assert root["name"] == "invoke_workflow triage"
        assert root["attributes"]["steptrace.run.id"] == run.run_id
        assert root["resource"]["service.name"] == "backfill"
        for span in run.spans:
            sent_span = by_id[span.span_id]
            assert sent_span["parent_span_id"] == span.parent_span_id
            if span.kind == "llm":
                assert sent_span["attributes"]["gen_ai.provider.name"] == "scripted"
                assert sent_span["attributes"]["openinference.span.kind"] == "LLM"
    assert "sk-" not in repr(spans)  # the demo's pasted key stays redacted


def test_export_otlp_to_a_dead_endpoint_is_one_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "dead.db"
    assert run_demo(1, store).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    sent = export_otlp(store, f"http://127.0.0.1:{port}")
    assert sent.returncode != 0
    assert sent.stderr.count("\n") == 1 and "Traceback" not in sent.stderr
    assert "cannot be reached: connection refused" in sent.stderr


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An OTLP endpoint that is up but refuses every request (400: not retried)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_export_otlp_to_an_endpoint_that_refuses_the_spans_says_so(tmp_path: Path) -> None:
    store = tmp_path / "refused.db"
    assert run_demo(1, store).returncode == 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sent = export_otlp(store, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert sent.returncode == 1 and "Traceback" not in sent.stderr
    assert "did not accept the spans (0 sent before)" in sent.stderr, sent.stderr
