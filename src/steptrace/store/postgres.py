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
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg.adapt import Buffer, Loader
from psycopg.types.string import TextLoader

from steptrace.record import RunState, SpanRecord, without_nul
from steptrace.store.migrations import pending
from steptrace.store.sqlite import RUN_UPSERT_GUARD, RUN_UPSERT_SET

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

_RUN_COLUMNS = (
    "run_id, workflow, status, trace_id, span_id, parent_trace_id, parent_span_id, "
    "started_at, ended_at, duration_ms, input, output, error, tags, owner"
)
_SPAN_COLUMNS = (
    "span_id, run_id, parent_span_id, kind, name, step_key, attempt, status, started_at, "
    "ended_at, duration_ms, input, output, error, attributes, input_hash"
)
_LLM_COLUMNS = (
    "span_id, run_id, provider, model, input_tokens, output_tokens, cost_usd, params, "
    "cached_input_tokens, reasoning_tokens, finish_reason, response_model, "
    "time_to_first_chunk_ms, tool_calls, incomplete, parent_span_id"
)
_LOG_COLUMNS = "run_id, span_id, seq, ts, level, logger, message, exception"


def _set_all(columns: str, key: str) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns.split(", ") if c != key)


_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS _st_runs (LIKE runs) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS _st_spans (LIKE spans) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS _st_llm (LIKE llm_calls) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS _st_logs (LIKE logs) ON COMMIT DELETE ROWS",
)
# The same upsert as SQLite's: a run is written when it starts and again when it ends;
# a span or LLM call written twice keeps its last version.
_RUN_MERGE = f"""
INSERT INTO runs ({_RUN_COLUMNS}) SELECT {_RUN_COLUMNS} FROM _st_runs
ON CONFLICT (run_id) DO UPDATE SET {RUN_UPSERT_SET} {RUN_UPSERT_GUARD}
"""
_LOG_MERGE = f"""
INSERT INTO logs ({_LOG_COLUMNS}) SELECT {_LOG_COLUMNS} FROM _st_logs
ON CONFLICT (run_id, span_id, seq) DO NOTHING
"""
_SPAN_MERGE = f"""
INSERT INTO spans ({_SPAN_COLUMNS}) SELECT {_SPAN_COLUMNS} FROM _st_spans
ON CONFLICT (span_id) DO UPDATE SET {_set_all(_SPAN_COLUMNS, "span_id")}
"""
_LLM_MERGE = f"""
INSERT INTO llm_calls ({_LLM_COLUMNS}) SELECT {_LLM_COLUMNS} FROM _st_llm
ON CONFLICT (span_id) DO UPDATE SET {_set_all(_LLM_COLUMNS, "span_id")}
"""


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


def prepare(runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> tuple[Rows, Rows, Rows, Rows]:
    """The batch's rows for runs, spans, LLM calls and logs, in column order. A run met
    twice (started and ended in the same batch) is one row, as the upsert would leave
    it; likewise a span."""
    by_run: dict[str, tuple[Any, ...]] = {}
    logs: Rows = []
    for r in runs:
        row = (
            r.run_id,
            r.workflow,
            r.status,
            r.trace_id,
            r.span_id,
            r.parent_trace_id,
            r.parent_span_id,
            iso_from_ns(r.start_ns),
            None if r.end_ns is None else iso_from_ns(r.end_ns),
            None if r.end_ns is None else (r.end_ns - r.start_ns) / 1e6,
            _json(r.input),
            _json(r.output),
            _json(r.error),
            _json(r.tags),
            r.owner,
        )
        before = by_run.get(r.run_id)
        if before is not None:  # as the upsert would merge the two
            if row[2] == "running" and before[2] != "running":
                continue
            row = (
                *before[:2],
                row[2],
                *before[3:8],
                row[8],
                row[9],
                row[10] if row[10] is not None else before[10],
                row[11],
                row[12],
                row[13] if row[13] is not None else before[13],
                row[14] if row[14] is not None else before[14],
            )
        by_run[r.run_id] = row
        if r.logs and r.end_ns is not None:
            logs.extend(_log_rows(r.run_id, r.span_id, r.logs))
    by_span: dict[str, tuple[Any, ...]] = {}
    by_llm: dict[str, tuple[Any, ...]] = {}
    for s in spans:
        by_span[s.span_id] = (
            s.span_id,
            s.run_id,
            s.parent_span_id,
            s.kind,
            _text(s.name),
            _text(s.key),
            s.attempt,
            s.status,
            iso_from_ns(s.start_ns),
            iso_from_ns(s.end_ns),
            (s.end_ns - s.start_ns) / 1e6,
            _json(s.input),
            _json(s.output),
            _json(s.error),
            _json(s.attributes),
            s.input_hash,
        )
        llm = s.llm
        if llm is not None:
            by_llm[s.span_id] = (
                s.span_id,
                s.run_id,
                _text(llm.provider),
                _text(llm.model),
                llm.input_tokens,
                llm.output_tokens,
                llm.cost_usd,
                _json(llm.params),
                llm.cached_input_tokens,
                llm.reasoning_tokens,
                _text(llm.finish_reason),
                _text(llm.response_model),
                llm.time_to_first_chunk_ms,
                _json(llm.tool_calls),
                int(llm.incomplete),
                s.parent_span_id,
            )
        if s.logs:
            logs.extend(_log_rows(s.run_id, s.span_id, s.logs))
    return list(by_run.values()), list(by_span.values()), list(by_llm.values()), logs


def _log_rows(
    run_id: str, span_id: str, entries: list[tuple[int, str, str, str, str | None]]
) -> Rows:
    return [
        (run_id, span_id, seq, iso_from_ns(ts), level, _text(logger), _text(msg), _text(exc))
        for seq, (ts, level, logger, msg, exc) in enumerate(entries)
    ]


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
            for statement in _STAGING:
                conn.execute(statement)
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

    def _write_once(
        self, conn: psycopg.Connection[Any], runs: Rows, spans: Rows, llm: Rows, logs: Rows
    ) -> None:
        with conn.transaction(), conn.cursor() as cur:
            if runs:
                _copy(cur, "_st_runs", _RUN_COLUMNS, runs)
                cur.execute(_RUN_MERGE)
            for rows, table, staging, columns, merge in (
                (spans, "spans", "_st_spans", _SPAN_COLUMNS, _SPAN_MERGE),
                (llm, "llm_calls", "_st_llm", _LLM_COLUMNS, _LLM_MERGE),
                (logs, "logs", "_st_logs", _LOG_COLUMNS, _LOG_MERGE),
            ):
                if not rows:
                    continue
                try:
                    # Rows are new but for rare re-writes (a batch replayed from the
                    # spill journal): COPY them straight into their table, and only on a
                    # duplicate key take the merging path.
                    with conn.transaction():
                        _copy(cur, table, columns, rows)
                except psycopg.errors.UniqueViolation:
                    _copy(cur, staging, columns, rows)
                    cur.execute(merge)

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
