"""Shared fixtures for the runtime tests.

Every test gets a fresh SQLite store in its own ``tmp_path`` (through
``STEPTRACE_STORE``), default configuration before and after it, and an empty
in-memory span exporter. The OpenTelemetry SDK is the real one: one
``TracerProvider`` exporting to memory is installed for the whole session, the
way an application installs its provider once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import span_hex
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import steptrace.config

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _tracer_provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    yield provider
    provider.shutdown()


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    """The session's in-memory exporter (cleared before each test)."""
    return _EXPORTER


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """The SQLite file this test's runs are written to."""
    return tmp_path / "steptrace.db"


@pytest.fixture(autouse=True)
def _fresh_steptrace(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, _tracer_provider: TracerProvider
) -> Iterator[None]:
    monkeypatch.setenv("STEPTRACE_STORE", str(store_path))
    steptrace.config.reset()
    _EXPORTER.clear()
    yield
    steptrace.config.reset()  # closes (and flushes) the background writer
    _EXPORTER.clear()


@pytest.fixture
def exported(span_exporter: InMemorySpanExporter) -> Callable[[], dict[str, ReadableSpan]]:
    """Finished OTel spans so far, by their span id as 16 hex digits. The writer thread
    ends spans once their values are redacted, so this flushes it first."""

    def get() -> dict[str, ReadableSpan]:
        steptrace.flush()
        return {span_hex(s): s for s in span_exporter.get_finished_spans()}

    return get


@pytest.fixture
def db(store_path: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    """Run SQL against the test's store file with a plain sqlite3 connection."""

    def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(store_path)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    return query
