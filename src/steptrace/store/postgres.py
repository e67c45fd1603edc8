"""The PostgreSQL backend: psycopg 3, one COPY per table per batch, JSONB columns.

Imported only for a ``postgresql://`` store (psycopg is the ``steptrace[postgres]``
extra). ``connect`` opens a connection that reads JSON and JSONB as JSON text and
NUMERIC as float, so query code sees what it sees from SQLite; ``migrate`` applies
the shared named migrations under an advisory lock (many processes may start at
once); ``PostgresWriter`` is the background writer's backend: a batch is one
transaction of one COPY per table (runs through a staging table and a merge, since
a run is written when it starts and again when it ends), so a busy process pays a
few round trips per batch, not one per row.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg.adapt import Buffer, Loader
from psycopg.types.string import TextLoader

from steptrace.record import RunState, SpanRecord, without_nul
from steptrace.store.columns import (
    LLM_CALLS,
    LOGS,
    RUNS,
    SCORES,
    SPANS,
    Collapse,
    Column,
    Table,
    batch_logs,
    conflict_clause,
)
from steptrace.store.migrations import pending

log = logging.getLogger("steptrace")

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 10
_MIGRATION_LOCK = 0x5374657074726163
"""The advisory lock key that serialises migrations across processes ("Steptrac")."""


def is_url(url: str) -> bool:
    return "://" in url and url.split("://", 1)[0].lower() in SCHEMES


def libpq_url(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


class _NumberLoader(Loader):
    """NUMERIC (what ``sum`` of integers and ``avg`` give) as int when it is whole, else
    float: the numbers SQLite gives for the same query."""

    def load(self, data: Buffer) -> int | float:
        text = bytes(data)
        if text.lstrip(b"-").isdigit():
            return int(text)
        return float(text)


def configure(conn: psycopg.Connection[Any]) -> None:
    """JSON and JSONB arrive as JSON text and NUMERIC as int or float, as from SQLite."""
    conn.adapters.register_loader("jsonb", TextLoader)
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("numeric", _NumberLoader)


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    conn = psycopg.connect(
        libpq_url(url), autocommit=autocommit, application_name="steptrace", **kwargs
    )
    configure(conn)
    return conn


@functools.lru_cache(maxsize=512)
def placeholders(sql: str) -> str:
    """``sql`` with SQLite's ``?`` placeholders as psycopg's ``%s`` (outside quotes) and
    every other ``%`` doubled, so one query text serves both engines."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if ch == "%":
            out.append("%%")
        elif quote:
            out.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


# --- schema -----------------------------------------------------------------------------


def applied(conn: psycopg.Connection[Any]) -> list[str] | None:
    """Names of the migrations recorded in the database; None for a blank one."""
    row = conn.execute("SELECT to_regclass('_migrations')").fetchone()
    if row is None or row[0] is None:
        return None
    return [r[0] for r in conn.execute("SELECT name FROM _migrations")]


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply pending migrations in one transaction, holding an advisory lock so that
    processes starting together migrate once; returns the names applied. Raises
    ``SchemaTooNew`` for a database migrated by a newer steptrace. A current schema is
    only read (a role without DDL rights can open it)."""
    done = applied(conn)
    if done is not None and not pending(done):
        return []
    done_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations "
            "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for migration in pending(applied(conn) or []):
            for statement in migration.sql("postgresql"):
                conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)",
                [migration.name, iso_from_ns(time.time_ns())],
            )
            done_now.append(migration.name)
    return done_now


# --- the writer ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_from_ns(ns: int) -> str:
    """``sqlite.iso_from_ns``, the whole seconds formatted once per second: a batch's
    timestamps fall in a few seconds, and formatting is a tenth of the writer's work."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{rest // 1000:06d}Z"


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def _json(value: bytes | None) -> str | None:
    """An encoded JSON value for a JSONB column (which refuses ``\\u0000``: the
    recording path has replaced NUL already; records written by other means too)."""
    return None if value is None else without_nul(value).decode()


Rows = list[tuple[Any, ...]]
Row = Callable[[Any], tuple[Any, ...]]


def _value_code(column: Column) -> str:
    """The Python expression, over ``rec``, of the column's value (``Column.form``)."""
    for attr in column.source:
        if not all(part.isidentifier() for part in attr.split(".")):
            raise ValueError(f"{column.name}: {attr!r} is not an attribute path")
    value = f"rec.{column.source[0]}"
    if column.json:
        return f"json({value})"
    if column.form == "text":
        return f"text({value})"
    if column.form == "flag":
        return f"int({value})"
    if column.form == "time":
        return f"(None if {value} is None else iso({value}))"
    if column.form == "duration":
        end = f"rec.{column.source[1]}"
        return f"(None if {end} is None else ({end} - {value}) / 1e6)"
    return value


def _row_function(table: Table) -> Row:
    """The function that makes a record's row for ``table``, compiled once from the
    column table (as ``dataclasses`` makes ``__init__``): a batch makes thousands of
    rows, and one expression a column costs a third of calling a function a column.
    The code is made only of this module's names and the declared attribute paths."""
    values = ", ".join(_value_code(c) for c in table.written)
    code = f"def row(rec):\n    return ({values},)\n"
    namespace: dict[str, Any] = {"json": _json, "text": _text, "iso": iso_from_ns}
    exec(compile(code, f"<steptrace.store.postgres row of {table.name}>", "exec"), namespace)
    row: Row = namespace["row"]
    return row


class TableCopy:
    """How a batch's rows of one table (``columns.WRITTEN``) are made and copied: the
    row of a record in the order of ``columns``, the staging table a COPY that conflicts
    goes through, and the merge from it (``columns.conflict_clause``). A table whose
    rows are merged (runs: each is written when it starts and again when it ends) is
    always copied through staging; others straight into the table, where rows are new
    but for rare re-writes (a batch replayed from the spill journal)."""

    def __init__(self, table: Table) -> None:
        written = table.written
        self.table = table.name
        self.columns = ", ".join(c.name for c in written)
        self.staging = f"_st_{table.name}"
        self.create_staging = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.staging} (LIKE {table.name}) "
            "ON COMMIT DELETE ROWS"
        )
        self.merge = (
            f"INSERT INTO {table.name} ({self.columns}) "
            f"SELECT {self.columns} FROM {self.staging} {conflict_clause(table)}"
        )
        self.direct = table.conflict != "merge"
        self.row = _row_function(table)


_RUNS, _SPANS, _LLM_CALLS, _LOGS, _SCORES = _TABLES = tuple(
    TableCopy(t) for t in (RUNS, SPANS, LLM_CALLS, LOGS, SCORES)
)
# A batch's rows are written once each (COPY and one INSERT … ON CONFLICT cannot touch a
# row twice): a run met twice (started and ended in the same batch) is one row, as the
# upsert would leave it; likewise a span, an LLM call or a score.
_latest_runs, _latest_spans, _latest_llm = Collapse(RUNS), Collapse(SPANS), Collapse(LLM_CALLS)
_latest_scores = Collapse(SCORES)


def prepare(
    runs: Sequence[RunState], spans: Sequence[SpanRecord]
) -> tuple[Rows, Rows, Rows, Rows, Rows]:
    """The batch's rows for runs, spans, LLM calls, logs and scores, in column order."""
    logs = batch_logs(runs, spans)
    scores = [line for rec in spans if rec.scores for line in rec.scores]
    return (
        [_RUNS.row(r) for r in _latest_runs(runs)],
        [_SPANS.row(s) for s in _latest_spans(spans)],
        [_LLM_CALLS.row(s) for s in _latest_llm(s for s in spans if s.llm is not None)],
        [_LOGS.row(line) for line in logs],
        [_SCORES.row(line) for line in _latest_scores(scores)] if scores else [],
    )


WRITE_OPTIONS = (
    "-c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000 -c lock_timeout=5000"
)
"""Server-side bounds for the writer's session; the sink's watchdog bounds each call on
the client side too (a server that stopped answering)."""


class PostgresWriter:
    """The sink's engine for PostgreSQL: a batch is one transaction of COPYs (runs, and
    anything written before, through a staging table and ``INSERT … ON CONFLICT``). One
    attempt per call: a lost connection fails the call and is reopened only by
    ``reconnect()`` (the sink's background thread), never on a workflow's thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection[Any] | None = None
        self.reconnect()

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def reconnect(self) -> None:
        self._close_quietly()
        conn = connect(
            self.url,
            autocommit=False,
            connect_timeout=2,
            options=WRITE_OPTIONS,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=5000,
        )
        with conn.transaction():
            for table in _TABLES:
                conn.execute(table.create_staging)
        self.conn = conn

    def _conn(self) -> psycopg.Connection[Any]:
        conn = self.conn
        if conn is None or conn.closed:
            raise psycopg.OperationalError("not connected to the PostgreSQL store")
        return conn

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None:
        batch = prepare(runs, spans)
        try:
            self._write_once(self._conn(), *batch)
        except psycopg.OperationalError as exc:
            if _is_connection(exc):
                self._close_quietly()
            raise

    def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run statements (``?`` parameters) in one transaction."""
        conn = self._conn()
        try:
            with conn.transaction():
                for sql, params in statements:
                    conn.execute(placeholders(sql).encode(), list(params))
        except psycopg.OperationalError as exc:
            if _is_connection(exc):
                self._close_quietly()
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._conn()
        with conn.transaction():
            return list(conn.execute(placeholders(sql).encode(), list(params)))

    def _write_once(self, conn: psycopg.Connection[Any], *batch: Rows) -> None:
        with conn.transaction(), conn.cursor() as cur:
            for table, rows in zip(_TABLES, batch, strict=True):
                if not rows:
                    continue
                if table.direct:
                    try:
                        with conn.transaction():
                            _copy(cur, table.table, table.columns, rows)
                        continue
                    except psycopg.errors.UniqueViolation:
                        pass  # a re-write: merge it
                _copy(cur, table.staging, table.columns, rows)
                cur.execute(table.merge)

    def in_transaction(self) -> bool:
        """A transaction is open on the connection (only ever seen from a signal handler
        that interrupted a write on the same thread)."""
        conn = self.conn
        return (
            conn is not None
            and not conn.closed
            and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        )

    def checkpoint(self) -> None:
        """Nothing to do: the server checkpoints."""

    def abandon(self) -> None:
        """Give up the connection a write interrupted by a signal left mid-command."""
        self.reconnect()

    def cancel(self) -> None:
        """Break off the call in progress (from another thread): the connection's socket
        is shut down, so a server that stopped answering cannot hold the caller."""
        conn = self.conn
        if conn is None:
            return
        with contextlib.suppress(Exception):
            fd = conn.pgconn.socket
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    def _close_quietly(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self._close_quietly()


def _copy(cur: psycopg.Cursor[Any], table: str, columns: str, rows: Rows) -> None:
    if rows:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _is_connection(exc: psycopg.OperationalError) -> bool:
    """A lost or refused connection (worth reconnecting), not an SQL-level failure."""
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state.startswith("57P")
