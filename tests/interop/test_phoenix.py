"""Interop with a real receiver: Arize Phoenix.

``arize-phoenix`` is installed into its own virtual environment (cached between runs
under ``~/.cache/steptrace-interop``), ``phoenix serve`` runs on 127.0.0.1 with its
own ports and working directory, offline; the demo workflow exports to it over
OTLP/HTTP and OTLP/gRPC, and the spans are read back through Phoenix's REST API and
compared with the store. Skipped, visibly, only with ``STEPTRACE_SKIP_INTEROP=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from tests.support.helpers import clean_env
from tests.support.loopback import LoopbackServer, ServerDidNotStart, free_port

PHOENIX = "arize-phoenix==20.26.1"
VENV = Path.home() / ".cache" / "steptrace-interop" / PHOENIX.replace("==", "-")
OI_KIND = {"step": "CHAIN", "llm": "LLM", "tool": "TOOL"}


class Phoenix(LoopbackServer):
    """``phoenix serve`` from ``venv``, offline, working in ``work``; ready once its
    ``/healthz`` answers."""

    startup_timeout_s = 120.0

    def __init__(self, venv: Path, work: Path) -> None:
        self.venv = venv
        self.work = work

    def _launch(self) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
        env.update(
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(self.port),
            PHOENIX_GRPC_PORT=str(self.grpc_port),
            PHOENIX_WORKING_DIR=str(self.work),
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        )
        self._log = (self.work / "phoenix.log").open("w")
        self._proc = subprocess.Popen(
            [str(self.venv / "bin" / "phoenix"), "serve"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _ready(self) -> bool:
        if self._proc.poll() is not None:
            log = (self.work / "phoenix.log").read_text()[-2000:]
            raise ServerDidNotStart(f"phoenix serve exited: {log}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def _halt(self) -> str:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()
        return (self.work / "phoenix.log").read_text()[-2000:]

    def spans(self, project: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = "limit=1000" + (f"&cursor={cursor}" if cursor else "")
            try:
                with urllib.request.urlopen(
                    f"{self.url}/v1/projects/{project}/spans?{query}", timeout=10
                ) as reply:
                    page = json.load(reply)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # the project appears with its first span
                    return []
                raise
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out


def _phoenix_venv() -> Path:
    python = VENV / "bin" / "python"
    if (VENV / ".complete").exists():
        return VENV
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", PHOENIX],
        check=True,
        timeout=1200,
    )
    (VENV / ".complete").write_text(PHOENIX)
    return VENV


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    if os.environ.get("STEPTRACE_SKIP_INTEROP") == "1":
        pytest.skip("STEPTRACE_SKIP_INTEROP=1: the Arize Phoenix interop test is skipped")
    with Phoenix(_phoenix_venv(), tmp_path_factory.mktemp("phoenix")) as server:
        yield server


def _demo(store: Path, runs: int, **env: str) -> None:
    full = clean_env()
    full.update(STEPTRACE_STORE=str(store), OTEL_SERVICE_NAME="steptrace-demo", **env)
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", "demo", "--runs", str(runs)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "not exported" not in proc.stderr, proc.stderr


def _stored(store: Path) -> list[st.RunRecord]:
    with st.Store.open(str(store)) as s:
        return [s.run(r.run_id) for r in s.runs(last=1000)]


def _wait_for(phoenix: Phoenix, project: str, count: int) -> list[dict[str, Any]]:
    """Phoenix answers 200 before it stores the spans: poll until all are there."""
    deadline = time.monotonic() + 60
    while True:
        spans = phoenix.spans(project)
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def test_demo_runs_appear_in_phoenix_as_complete_traces(phoenix: Phoenix, tmp_path: Path) -> None:
    store = tmp_path / "phoenix.db"
    project = "steptrace-interop"
    _demo(
        store,
        8,
        OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.url,
        OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={project}",
    )
    runs = _stored(store)
    assert len(runs) == 8 and any(r.status == "failed" for r in runs)
    expected = sum(1 + len(r.spans) for r in runs)
    spans = _wait_for(phoenix, project, expected)
    assert len(spans) == expected
    by_id = {s["context"]["span_id"]: s for s in spans}

    llm_seen = tool_seen = retry_seen = 0
    for run in runs:
        root = by_id[run.span_id]
        assert root["parent_id"] is None
        assert root["context"]["trace_id"] == run.trace_id
        assert root["name"] == "invoke_workflow triage"
        assert root["span_kind"] == "CHAIN"
        assert root["status_code"] == ("ERROR" if run.status == "failed" else "UNSET")
        assert json.loads(root["attributes"]["input.value"]) == run.input
        for span in run.spans:
            got = by_id[span.span_id]
            assert got["context"]["trace_id"] == run.trace_id
            assert got["parent_id"] == span.parent_span_id  # the tree, as stored
            assert got["span_kind"] == OI_KIND[span.kind]
            attributes = got["attributes"]
            if span.kind == "step":
                assert json.loads(attributes["input.value"]) == span.input
                if span.status == "succeeded":
                    assert json.loads(attributes["output.value"]) == span.output
                assert attributes["steptrace.step.attempt"] == span.attempt
                retry_seen += span.attempt > 1
            elif span.kind == "llm":
                llm = span.llm
                assert llm is not None
                assert attributes["llm.model_name"] == llm["model"]
                assert attributes["llm.token_count.prompt"] == llm["input_tokens"]
                assert attributes["llm.token_count.completion"] == llm["output_tokens"]
                assert attributes["gen_ai.request.model"] == llm["model"]
                assert attributes["llm.input_messages.0.message.role"] in ("system", "user")
                assert json.loads(attributes["output.value"]) == span.output
                llm_seen += 1
            elif span.kind == "tool":
                assert attributes["tool.name"] == span.name
                assert json.loads(attributes["input.value"]) == span.input
                assert json.loads(attributes["output.value"]) == span.output
                tool_seen += 1
    assert llm_seen and tool_seen and retry_seen


def test_grpc_export_reaches_phoenix(phoenix: Phoenix, tmp_path: Path) -> None:
    store = tmp_path / "phoenix-grpc.db"
    project = "steptrace-interop-grpc"
    _demo(
        store,
        3,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{phoenix.grpc_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={project}",
    )
    runs = _stored(store)
    expected = {r.span_id for r in runs} | {s.span_id for r in runs for s in r.spans}
    spans = _wait_for(phoenix, project, len(expected))
    assert {s["context"]["span_id"] for s in spans} == expected
