"""Which engine a store URL names, opened for reading or for writing.

The writer (``store/writer.py``), the ``Store`` facade and ``record_export_report``
(which ``configure`` and the command line hand to the OTLP export queue) open engines
here: the writer need not import the facade (nor the questions it answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steptrace.config import get_config
from steptrace.record import stored_form
from steptrace.store import memory, memory_engine
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.engine import Engine, WriterBackend
from steptrace.store.schema import load_postgres, prepare_schema, scheme


def open_writer(url: str) -> WriterBackend:
    """Open (creating and migrating if needed) the store at ``url`` for writing."""
    kind = scheme(url)
    if kind == "memory":
        return memory_engine.MemoryWriter(memory.database(url, create=True))
    prepare_schema(url)
    if kind == "postgresql":
        writer: WriterBackend = load_postgres().PostgresWriter(url)
        return writer
    return sqlite_backend.SQLiteWriter(sqlite_backend.path_from_url(url))


def open_engine(url: str) -> WriterBackend:
    """A writing connection to a store that exists (no migration): for the sweep of
    interrupted runs."""
    kind = scheme(url)
    if kind == "memory":
        return memory_engine.MemoryWriter(memory.database(url, create=False))
    if kind == "postgresql":
        engine: WriterBackend = load_postgres().PostgresWriter(url)
        return engine
    return sqlite_backend.SQLiteWriter(sqlite_backend.path_from_url(url))


def open_read_engine(url: str) -> Engine:
    """The read engine for the store at ``url`` (which must exist)."""
    kind = scheme(url)
    if kind == "memory":
        return memory_engine.MemoryEngine.open(url)
    if kind == "postgresql":
        load_postgres()  # says what to install when psycopg is missing
        from steptrace.store.postgres_engine import PostgresEngine

        return PostgresEngine.open(url)
    from steptrace.store.sqlite_engine import SQLiteEngine

    return SQLiteEngine.open(url)


def record_export_report(row: dict[str, Any], url: str | None = None) -> None:
    """Append a row to ``otel_export`` (spans the OTLP export dropped) in the configured
    store. Uses its own short connection: reports also come at exit, after the writer
    has closed."""
    url = url or get_config().store_url()
    columns = ", ".join(row)
    statement = f"INSERT INTO otel_export ({columns}) VALUES ({', '.join('?' for _ in row)})"
    if scheme(url) == "memory":
        open_engine(url).execute([(statement, list(row.values()))])
        return
    prepare_schema(url)
    if scheme(url) == "postgresql":
        pg = load_postgres()
        with pg.connect(url) as pg_conn:
            pg_conn.execute(pg.placeholders(statement), list(row.values()))
        return
    conn = sqlite_backend.connect(sqlite_backend.path_from_url(url))
    try:
        conn.execute(statement, list(row.values()))
    finally:
        conn.close()


def query_params(params: Sequence[Any]) -> list[Any]:
    """A query's parameters with their text as the store holds text (no NUL, no lone
    surrogate: ``record.stored_form``): neither driver can send those, and a value
    recorded with one is stored that way."""
    return [stored_form(p) if isinstance(p, str) else p for p in params]
