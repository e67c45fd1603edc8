"""OTLP export that never hurts the app: a dead collector, a slow one, a full queue,
gRPC when asked, and ``st.configure(otlp_endpoint=...)`` in an application, with step
log records leaving as OTel log records that carry their step's ids."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider

import steptrace as st
from steptrace.otel.otlp import ExportQueue
from steptrace.store.engines import record_export_report
from tests.support.helpers import clean_env, reader_url
from tests.support.otlp_collector import grpc_collector, http_collector

APP = textwrap.dedent(
    """
    import logging, sys, time
    import steptrace as st

    log = logging.getLogger("app.triage")

    @st.step
    def classify(text: str) -> dict:
        log.info("classifying %d characters", len(text))
        return {"category": "billing" if "refund" in text else "other"}

    @st.workflow
    def triage(text: str) -> dict:
        return classify(text)

    st.configure(**eval(sys.argv[1]))
    started = time.perf_counter()
    for i in range(int(sys.argv[2])):
        triage(f"ticket {i} wants a refund")
    print(f"workflows took {time.perf_counter() - started:.3f}s", flush=True)
    """
)


def run_app(
    tmp_path: Path, configure: str, runs: int, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    full_env = clean_env()
    full_env.update(STEPTRACE_STORE=str(tmp_path / "app.db"), OTEL_SERVICE_NAME="app", **env)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), configure, str(runs)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stored_counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    return runs, spans


def export_reports(db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM otel_export").fetchall()


def test_app_exports_spans_and_step_logs_with_their_ids(tmp_path: Path) -> None:
    with http_collector() as collector:
        proc, _ = run_app(
            tmp_path, f"dict(otlp_endpoint={collector.url!r}, otlp_logs=True)", runs=3
        )
        assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    with st.Store.open(str(tmp_path / "app.db")) as store:
        runs = [store.run(r.run_id) for r in store.runs(last=10)]
    assert len(runs) == 3
    spans = {s["span_id"]: s for s in collector.spans()}
    logs = collector.logs()
    assert len(logs) == 3
    for run in runs:
        assert spans[run.span_id]["name"] == "invoke_workflow triage"
        step = run.spans[0]
        assert spans[step.span_id]["trace_id"] == run.trace_id
        # the log record left as an OTel log record with the step's ids, not as an event
        assert spans[step.span_id]["events"] == []
        (record,) = [r for r in logs if r["span_id"] == step.span_id]
        assert record["trace_id"] == run.trace_id
        assert record["body"] == "classifying 23 characters"
        assert record["severity_text"] == "INFO" and record["severity_number"] == 9
        assert record["attributes"]["logger.name"] == "app.triage"
        assert record["scope"] == "steptrace"
        assert step.logs and step.logs[0]["message"] == record["body"]  # stored too


def test_grpc_export_when_asked(tmp_path: Path) -> None:
    with grpc_collector() as collector:
        configure = f"dict(otlp_endpoint='http://127.0.0.1:{collector.port}', otlp_protocol='grpc')"
        proc, _ = run_app(tmp_path, configure, runs=4)
        assert proc.returncode == 0, proc.stderr
    with st.Store.open(str(tmp_path / "app.db")) as store:
        runs = [store.run(r.run_id) for r in store.runs(last=10)]
    exported = {(s["trace_id"], s["span_id"]) for s in collector.spans()}
    expected = {(r.trace_id, r.span_id) for r in runs} | {
        (r.trace_id, s.span_id) for r in runs for s in r.spans
    }
    assert len(expected) == 8
    assert exported == expected


def test_cli_uses_grpc_from_the_standard_variables(tmp_path: Path) -> None:
    with grpc_collector() as collector:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
        env.update(
            STEPTRACE_STORE=str(tmp_path / "cli.db"),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        )
        proc = subprocess.run(
            [sys.executable, "-m", "steptrace", "demo", "--runs", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    runs, spans = stored_counts(tmp_path / "cli.db")
    assert len(collector.spans()) == runs + spans


def test_a_dead_collector_is_reported_and_costs_no_wait(tmp_path: Path) -> None:
    proc, elapsed = run_app(
        tmp_path, f"dict(otlp_endpoint='http://127.0.0.1:{closed_port()}')", runs=20
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 10  # no waiting out the exporter's retries at exit
    runs, spans = stored_counts(tmp_path / "app.db")
    assert (runs, spans) == (20, 20)  # the store lost nothing
    # reported, never silent: a warning line and a row in the store
    assert "40 spans were not exported" in proc.stderr
    assert "Connection refused" in proc.stderr
    (report,) = export_reports(tmp_path / "app.db")
    assert report["dropped_failed"] + report["dropped_at_exit"] + report["dropped_queue_full"] == 40
    assert report["exported"] == 0
    assert "Connection refused" in report["last_error"]


def test_a_slow_collector_does_not_hold_up_workflows(tmp_path: Path) -> None:
    with http_collector(delay_s=4.0) as collector:
        proc, elapsed = run_app(
            tmp_path,
            f"dict(otlp_endpoint={collector.url!r})",
            runs=200,
            OTEL_BSP_SCHEDULE_DELAY="50",
            STEPTRACE_EXPORT_EXIT_TIMEOUT_S="1",
        )
    assert proc.returncode == 0, proc.stderr
    took = float(proc.stdout.split("workflows took ")[1].split("s")[0])
    assert took < 1.5, proc.stdout  # 200 runs; each export waits 4 s at the collector
    assert elapsed < 15
    assert stored_counts(tmp_path / "app.db") == (200, 200)
    assert "spans were not exported" in proc.stderr
    (report,) = export_reports(tmp_path / "app.db")
    assert report["dropped_at_exit"] > 0


def test_a_full_queue_drops_and_counts(caplog: pytest.LogCaptureFixture, store_url: str) -> None:
    with http_collector(delay_s=0.3) as collector:
        queue = ExportQueue(
            OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"),
            target=collector.url,
            max_queue_size=50,
            max_batch_size=10,
            schedule_delay_s=0.01,
            report_interval_s=0.2,
            exit_timeout_s=10,
            report=record_export_report,
        )
        provider = TracerProvider()
        provider.add_span_processor(queue)
        tracer = provider.get_tracer("burst")
        with caplog.at_level(logging.WARNING, logger="steptrace"):
            for i in range(500):
                tracer.start_span(f"span {i}").end()
            time.sleep(0.5)
            provider.shutdown()
    totals = queue.totals
    assert totals.queue_full > 0
    assert totals.exported + totals.dropped == 500
    assert totals.exported == len(collector.spans())
    assert any("spans were not exported" in r.getMessage() for r in caplog.records)
    with st.Store.open(reader_url(store_url)) as store:  # reported to the store, either engine
        reports = store.sql("SELECT * FROM otel_export")
    assert reports and sum(r["dropped_queue_full"] for r in reports) == totals.queue_full
    assert all(r["target"] == collector.url for r in reports)


def test_an_unknown_protocol_fails_at_configure() -> None:
    with pytest.raises(st.ConfigError, match="use http/protobuf"):
        st.configure(otlp_endpoint="http://127.0.0.1:4318", otlp_protocol="thrift")


def test_an_endpoint_adds_an_exporter_to_the_apps_own_provider() -> None:
    from steptrace.otel import otlp

    @st.workflow
    def ping(n: int) -> int:
        return n + 1

    with http_collector() as collector:
        before = len(otlp._queues)
        st.configure(otlp_endpoint=collector.url, otlp_headers={"x-team": "evals"})
        st.configure(otlp_endpoint=collector.url)  # twice: still exported once
        queue = otlp._queues[-1]
        try:
            assert len(otlp._queues) == before + 1
            result = st.run(ping, 1)
            st.flush()
            assert queue.force_flush(5000)
            record = result.record()
            assert [s["span_id"] for s in collector.spans()] == [record.span_id]
            assert all(h.get("x-team") == "evals" for _, h, _ in collector.requests)
        finally:
            queue.shutdown()  # the session's provider outlives this test
