"""Shared fixtures for the tests, defined once here (the servers and helpers they use
live in ``tests/support``).

Every test gets a fresh SQLite store in its own ``tmp_path`` (through
``STEPTRACE_STORE``), default configuration before and after it, and an empty
in-memory span exporter. Tests that take ``store_url`` (or the query tests' ``data``)
run once per backend: SQLite, and PostgreSQL in a fresh database of a throwaway
server this session starts (``support/pg_server.py``; or of
``STEPTRACE_TEST_POSTGRES_URL``). The runtime's own tests take ``runtime_store_url``:
the in-memory store (``memory://``, what ``steptrace.testing`` gives users) and
PostgreSQL. Without PostgreSQL those runs are skipped with the reason, except in CI
(``CI`` set), where they fail. The OpenTelemetry SDK is the real one: one
``TracerProvider`` exporting to memory is installed for the whole session, the way an
application installs its provider once. A test that talks to a model API or an OTLP
receiver gets a loopback server of its own: ``openai_server``, ``anthropic_server``,
``otlp_collector``.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import steptrace as st
import steptrace.config
from steptrace.store import memory
from tests.support import pg_server
from tests.support.anthropic_server import FakeAnthropic
from tests.support.helpers import BACKENDS, is_postgres, raw_sql, record_on_backend, span_hex
from tests.support.openai_server import FakeOpenAI
from tests.support.otlp_collector import HTTPCollector
from tests.support.query_data import Recorded, record

_EXPORTER = InMemorySpanExporter()


def pytest_configure(config: pytest.Config) -> None:
    # A child process started in another directory must import the steptrace this one
    # imports: a relative PYTHONPATH (``PYTHONPATH=src pytest`` in a worktree) would
    # silently give it another checkout's, or the installed one.
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if entries:
        os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in entries)


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
    monkeypatch.setenv("STEPTRACE_SPILL_DIR", str(store_path.parent / "spill"))
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
    """Run SQL against the test's store with the engine's own driver: a plain sqlite3
    connection to the file, or psycopg when the test runs on PostgreSQL."""

    def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        configured = os.environ.get("STEPTRACE_STORE", "")
        if is_postgres(configured):
            return raw_sql(configured, sql, params)
        if configured.startswith("memory://"):
            st.flush()
            database = memory.database(configured, create=False)
            with database.lock:
                return list(database.conn.execute(sql, params))
        conn = sqlite3.connect(store_path)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    return query


# --- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create databases in."""
    given = os.environ.get("STEPTRACE_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        server = pg_server.start()
    except pg_server.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and did not start: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    with server:
        yield server.url


_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Creates an empty database on the session's server; returns its URL."""
    import psycopg

    created: list[str] = []
    prefix = f"steptrace_test_{os.getpid()}_"

    def create() -> str:
        name = f"{prefix}{next(_database_numbers)}"
        url = pg_server.create_database(postgres_server, name)
        created.append(name)
        return url

    yield create
    if not os.environ.get("STEPTRACE_TEST_POSTGRES_URL"):
        # The session's own server is deleted whole; dropping ~200 databases one by one
        # (a checkpoint each) took minutes.
        return
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        for name in created:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
def store_url(
    request: pytest.FixtureRequest, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """This test's store, once per backend (also set as ``STEPTRACE_STORE``)."""
    if request.param == "sqlite":
        return str(store_path)
    url: str = request.getfixturevalue("new_postgres_database")()
    monkeypatch.setenv("STEPTRACE_STORE", url)
    return url


RUNTIME_BACKENDS = ("memory", "postgresql")
"""Where the runtime's own tests (values, retries, logs, LLM calls) record: the
in-memory store (the same SQL as a SQLite file, without the disk) and PostgreSQL."""


@pytest.fixture(params=RUNTIME_BACKENDS)
def runtime_store_url(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """This test's store, once per runtime backend (also set as ``STEPTRACE_STORE``)."""
    if request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    else:
        url = request.getfixturevalue("new_postgres_database")()
    monkeypatch.setenv("STEPTRACE_STORE", url)
    yield url
    if request.param == "memory":
        steptrace.config.reset()
        memory.drop(url)


@pytest.fixture
def own_server(postgres_server: str) -> Iterator[pg_server.PostgresServer]:
    """A PostgreSQL server of this test's own, which it may stop, freeze and start again
    (needs the suite's own binaries: skipped with ``STEPTRACE_TEST_POSTGRES_URL``)."""
    if os.environ.get("STEPTRACE_TEST_POSTGRES_URL"):
        pytest.skip("needs a server it can stop (not STEPTRACE_TEST_POSTGRES_URL)")
    with pg_server.start() as server:
        yield server


# --- the query tests' known runs ----------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The runs of ``support/query_data.py``, recorded into a store of their own once per
    module and backend (the query tests only read it)."""
    return record_on_backend(request, tmp_path_factory, record, "known")


@pytest.fixture
def store(data: Recorded) -> Iterator[st.Store]:
    """``data``'s store, opened through the public API."""
    with st.Store.open(data.url) as s:
        yield s


# --- loopback servers -------------------------------------------------------------------


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible API on loopback of this test's own (``support/openai_server.py``)."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropic]:
    """An Anthropic Messages API on loopback of this test's own (``support/anthropic_server``)."""
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def otlp_collector() -> Iterator[HTTPCollector]:
    """An OTLP/HTTP receiver on loopback of this test's own (``support/otlp_collector.py``)."""
    with HTTPCollector() as collector:
        yield collector
