"""The store: where runs are written (by the background writer) and read (by ``Store``).

``open_writer(url)`` and ``Store.open(url)`` pick the backend by URL scheme:
a path or ``sqlite:///path`` is the embedded SQLite file. ``Store`` answers the
questions of ``steptrace.query``, ``steptrace.diff``, ``steptrace.compare`` and
``steptrace.export`` through thin methods; ``Store.sql`` runs read-only SQL on a
connection the engine itself keeps from writing.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from steptrace.config import get_config
from steptrace.errors import ConfigError, QueryError
from steptrace.errors import RunNotFound as RunNotFound  # re-exported: older imports
from steptrace.record import RunState, SpanRecord, stored_form
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.columns import JSON_NAMES, LLM_CALLS, LOGS, RUN_FIELDS, RUNS, SPANS, named
from steptrace.store.dialect import SQLITE, Dialect
from steptrace.store.model import RunRecord, SpanView, loads
from steptrace.store.schema import check_schema as _check_schema
from steptrace.store.schema import load_postgres, migrate_store, same_store
from steptrace.store.schema import missing as _missing
from steptrace.store.schema import prepare_schema as _prepare_schema
from steptrace.store.schema import scheme as _scheme
from steptrace.where import RunFilter

T = TypeVar("T")

if TYPE_CHECKING:
    from steptrace.compare import Comparison
    from steptrace.diff import RunDiff
    from steptrace.overview import RunTotals, RunWindow, StoreStatus
    from steptrace.query import Distribution
    from steptrace.stats import StepStats


class WriterBackend(Protocol):
    """What the sink needs of an engine: one attempt per call (the sink decides what a
    failure means), ``cancel`` callable from another thread to break a call off."""

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None: ...

    def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def cancel(self) -> None: ...

    def in_transaction(self) -> bool: ...

    def abandon(self) -> None: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


def open_writer(url: str) -> WriterBackend:
    """Open (creating and migrating if needed) the store at ``url`` for writing."""
    scheme = _scheme(url)
    _prepare_schema(url)
    if scheme == "postgresql":
        writer: WriterBackend = load_postgres().PostgresWriter(url)
        return writer
    return sqlite_backend.SQLiteWriter(sqlite_backend.path_from_url(url))


def open_engine(url: str) -> WriterBackend:
    """A writing connection to a store that exists (no migration): for the sweep of
    interrupted runs."""
    if _scheme(url) == "postgresql":
        engine: WriterBackend = load_postgres().PostgresWriter(url)
        return engine
    return sqlite_backend.SQLiteWriter(sqlite_backend.path_from_url(url))


_SPAN_FIELDS = tuple(n for n in SPANS.names if n in {f.name for f in fields(SpanView)})
"""The ``spans`` columns a ``SpanView`` is made of (each a field of the same name)."""
_LLM_FIELDS = tuple(n for n in LLM_CALLS.names if n not in SPANS.names)
"""The ``llm_calls`` columns of a span's ``llm`` dict (each a key of the same name): those
the span does not have itself."""
_SPANS_OF_RUN = (
    f"SELECT {SPANS.select(_SPAN_FIELDS, 's')}, {LLM_CALLS.select(_LLM_FIELDS, 'l')}"
    " FROM spans s LEFT JOIN llm_calls l ON l.span_id = s.span_id"
    " WHERE s.run_id = ? ORDER BY s.started_at, {tiebreak}"
)
_LOG_FIELDS = ("span_id", "ts", "level", "logger", "message", "exception")
_LOGS_OF_RUN = f"SELECT {LOGS.select(_LOG_FIELDS)} FROM logs WHERE run_id = ? ORDER BY span_id, seq"


def record_export_report(row: dict[str, Any], url: str | None = None) -> None:
    """Append a row to ``otel_export`` (spans the OTLP export dropped) in the configured
    store. Uses its own short connection: reports also come at exit, after the writer
    has closed."""
    from steptrace.config import get_config
    from steptrace.store.schema import load_postgres, prepare_schema

    url = url or get_config().store_url()
    prepare_schema(url)
    columns = ", ".join(row)
    if _scheme(url) == "postgresql":
        pg = load_postgres()
        marks = ", ".join("%s" for _ in row)
        with pg.connect(url) as pg_conn:
            pg_conn.execute(
                f"INSERT INTO otel_export ({columns}) VALUES ({marks})".encode(),
                list(row.values()),
            )
        return
    conn = sqlite_backend.connect(sqlite_backend.path_from_url(url))
    try:
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO otel_export ({columns}) VALUES ({marks})", list(row.values()))
    finally:
        conn.close()


def query_params(params: Sequence[Any]) -> list[Any]:
    """A query's parameters with their text as the store holds text (no NUL, no lone
    surrogate: ``record.stored_form``): neither driver can send those, and a value
    recorded with one is stored that way."""
    return [stored_form(p) if isinstance(p, str) else p for p in params]


SQL_TIMEOUT_S = 30.0
"""How long ``Store.sql`` lets a statement run, unless told otherwise."""
_PROGRESS_STEPS = 10_000
"""SQLite virtual-machine steps between two checks of a running ``sql`` statement."""


def timeout_message(timeout_s: float) -> str:
    return (
        f"SQL error: the query was stopped at its time limit of {timeout_s:g} s "
        "(statement timeout; steptrace sql --timeout SECONDS allows more)"
    )


def missing_store_message(path: str) -> str:
    return (
        f"no store at {os.path.abspath(path)} (set STEPTRACE_STORE or --store to an "
        "existing store; a workflow run creates one)"
    )


_RUN_COLUMNS = RUNS.select(RUN_FIELDS)


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    run = named(RUN_FIELDS, row)
    for name in RUNS.json_names & run.keys():
        run[name] = loads(run[name])
    run["tags"] = run["tags"] or []
    return RunRecord(**run)


def take_runs(
    fetchmany: Callable[[int], Sequence[tuple[Any, ...]]], runs: int
) -> list[tuple[Any, ...]]:
    """Rows (first column: a run id) up to the first row of the ``runs + 1``-th run: at
    least one row a run, so ``runs`` rows are fetched at once, then a few at a time,
    and the query computes few rows past the stopping point."""
    seen: set[Any] = set()
    out: list[tuple[Any, ...]] = []
    size = runs
    while chunk := fetchmany(size):
        for row in chunk:
            if row[0] not in seen:
                if len(seen) == runs:
                    return out
                seen.add(row[0])
            out.append(row)
        size = 16
    return out


class _Reader:
    """What the query modules use of a ``Store`` (``steptrace.query.Reader``)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.dialect: Dialect = store.dialect

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._store._query(sql, params)

    def rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> list[tuple[Any, ...]]:
        return self._store._rows_of_runs(sql, params, runs)

    def rows_many(
        self,
        queries: Sequence[tuple[str, Sequence[Any]]],
        transform: Callable[[list[tuple[Any, ...]]], T],
    ) -> list[T]:
        return self._store._query_many(queries, transform)

    def run(self, run_id: str) -> RunRecord:
        return self._store.run(run_id)


class _ConnectionPool:
    """Worker threads with a read-only connection each, for the independent parts of a
    large query: SQLite releases the GIL while it computes, so they run on separate
    cores."""

    def __init__(self, path: str, workers: int) -> None:
        self._path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="steptrace-query")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite_backend.connect(self._path, readonly=True)
            sqlite_backend.tune_for_reads(conn)
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def _rows(
        self, sql: str, params: Sequence[Any], transform: Callable[[list[tuple[Any, ...]]], T]
    ) -> T:
        return transform(self._conn().execute(sql, params).fetchall())

    def map(
        self,
        queries: Sequence[tuple[str, Sequence[Any]]],
        transform: Callable[[list[tuple[Any, ...]]], T],
    ) -> list[T]:
        futures = [
            self._executor.submit(self._rows, sql, query_params(params), transform)
            for sql, params in queries
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


class Store:
    """Read access to a store. ``Store.open()`` opens the configured one.

    One ``Store`` may be shared by threads; its queries take turns on one connection.
    ``Store.open`` of a ``postgresql://`` URL gives a ``PostgresStore``, which answers the
    same questions with the same results.
    """

    dialect: Dialect = SQLITE
    _tiebreak = "s.rowid"
    """Orders spans that started in the same microsecond: in the order they were written."""

    def __init__(self, url: str, conn: sqlite3.Connection) -> None:
        self.url = url
        self._dsn = url
        """The URL to connect with (``url`` is what messages show)."""
        self._conn = conn
        self._lock = threading.Lock()
        self._readonly: sqlite3.Connection | None = None
        self._pool: _ConnectionPool | None = None
        self._reader = _Reader(self)

    @classmethod
    def open(cls, url: str | None = None) -> Store:
        """Open the store at ``url`` (default: ``STEPTRACE_STORE``, else
        ``./.steptrace/steptrace.db``) for queries, applying the migrations of this
        version to a store an older one wrote. Reading creates nothing: a SQLite file
        that does not exist is a ``ConfigError`` naming it (a workflow run, or
        ``steptrace migrate``, creates a store)."""
        from steptrace.store.writer import recover

        url = url or get_config().store_url()
        if _scheme(url) == "postgresql":
            load_postgres()  # says what to install when psycopg is missing
            from steptrace.store.postgres_store import PostgresStore

            pg_store = PostgresStore.connect(url)
            recover(url)
            return pg_store
        path = sqlite_backend.path_from_url(url)
        if _missing(url):
            raise ConfigError(missing_store_message(path))
        try:
            conn = sqlite_backend.connect(path)
        except (OSError, sqlite3.Error) as exc:
            from steptrace.store.schema import open_error

            raise ConfigError(open_error(url, exc)) from exc
        if sqlite_backend.has_pending(conn):
            try:
                if get_config().auto_migrate_enabled():
                    sqlite_backend.migrate(conn)
                else:
                    _check_schema(url, sqlite_backend.applied(conn))
            except BaseException:
                conn.close()
                raise
        sqlite_backend.tune_for_reads(conn)
        recover(url)
        return cls(url, conn)

    # -- plumbing -----------------------------------------------------------------
    def _same_process_flush(self) -> None:
        """Before a query: what this process recorded is written, and (every few
        seconds) runs of processes that died are marked interrupted."""
        from steptrace.store import writer

        writer.recover(self._dsn)
        sink = writer.current_sink()
        if sink is not None and same_store(sink.url, self.url):
            sink.flush(timeout_s=5.0)

    def _rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> list[tuple[Any, ...]]:
        self._same_process_flush()
        with self._lock:
            cursor = self._conn.execute(sql, query_params(params))
            try:
                return take_runs(cursor.fetchmany, runs)
            finally:
                cursor.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._same_process_flush()
        with self._lock:
            return list(self._conn.execute(sql, query_params(params)))

    def _query_batch(
        self, queries: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """The rows of each of a few small queries (PostgreSQL sends them in one round
        trip)."""
        return [self._query(sql, params) for sql, params in queries]

    def _query_many(
        self,
        queries: Sequence[tuple[str, Sequence[Any]]],
        transform: Callable[[list[tuple[Any, ...]]], T],
    ) -> list[T]:
        """Independent queries, run at the same time on the pool's connections, each
        result passed through ``transform`` on the thread that fetched it."""
        if len(queries) < 2 or (os.cpu_count() or 1) < 2:
            return [transform(self._query(sql, params)) for sql, params in queries]
        self._same_process_flush()
        with self._lock:
            if self._pool is None:
                self._pool = _ConnectionPool(
                    sqlite_backend.path_from_url(self.url), min(4, os.cpu_count() or 1)
                )
            pool = self._pool
        return pool.map(queries, transform)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._readonly is not None:
            self._readonly.close()
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------
    def runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        last: int = 20,
        offset: int = 0,
        *,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first, without their spans: ``last`` of them after skipping
        ``offset`` (a page). ``since``/``until`` bound the start time (ISO-8601, or
        ``"2h"``/``"7d"`` before now); ``tag`` keeps runs carrying every tag given;
        ``where`` keeps runs matching every predicate, e.g.
        ``"classify.output.classification = billing"`` or ``"classify.attempts > 1"``
        (see ``steptrace.where``). Raises ``QueryError`` for a malformed filter."""
        conds, params = RunFilter.of(workflow, status, since, until, tag, where).sql(self.dialect)
        clause = f"WHERE {' AND '.join(conds)} " if conds else ""
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs {clause}"
            "ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?",
            [*params, last, offset],
        )
        return [_run_from_row(r) for r in rows]

    def count_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        *,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
    ) -> int:
        """How many runs ``runs`` with the same filters would list without a limit."""
        conds, params = RunFilter.of(workflow, status, since, until, tag, where).sql(self.dialect)
        clause = f" WHERE {' AND '.join(conds)}" if conds else ""
        return int(self._query(f"SELECT count(*) FROM runs{clause}", params)[0][0])

    def resolve(self, run_id: str) -> str:
        """The full id of the run whose id is ``run_id`` or starts with it."""
        rows = self._query("SELECT run_id FROM runs WHERE run_id = ?", [run_id])
        if rows:
            return str(rows[0][0])
        rows = self._query(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
            [run_id, run_id + "\U0010ffff"],
        )
        if not rows:
            raise RunNotFound(f"no run with id {run_id!r} in {self.url}")
        if len(rows) > 1:
            raise RunNotFound(f"run id prefix {run_id!r} is ambiguous: give more characters")
        return str(rows[0][0])

    def run(self, run_id: str) -> RunRecord:
        """The run with this id (or unambiguous id prefix), with all its spans."""

        def read(full: str) -> list[list[tuple[Any, ...]]]:
            return self._query_batch(
                [
                    (f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [full]),
                    (_SPANS_OF_RUN.format(tiebreak=self._tiebreak), [full]),
                    (_LOGS_OF_RUN, [full]),
                ]
            )

        rows, span_rows, log_rows = read(run_id)
        if not rows:  # a prefix
            rows, span_rows, log_rows = read(self.resolve(run_id))
        run = _run_from_row(rows[0])
        logs: dict[str, list[dict[str, Any]]] = {}
        for log_row in log_rows:
            entry = named(_LOG_FIELDS, log_row)
            if not entry["exception"]:
                del entry["exception"]
            logs.setdefault(entry.pop("span_id"), []).append(entry)
        run.logs = logs.get(run.span_id, [])
        names = (*_SPAN_FIELDS, *_LLM_FIELDS)
        for r in span_rows:
            row = {n: loads(v) if n in JSON_NAMES else v for n, v in zip(names, r, strict=True)}
            span = SpanView(**{n: row[n] for n in _SPAN_FIELDS}, logs=logs.get(row["span_id"], []))
            span.attributes = span.attributes or {}
            if row["provider"] is not None:
                inp = span.input if isinstance(span.input, dict) else {}
                span.llm = {n: row[n] for n in _LLM_FIELDS} | {
                    "messages": inp.get("messages"),
                    "response": span.output,
                    "params": row["params"] or {},
                    "tool_calls": row["tool_calls"] or [],
                    "incomplete": bool(row["incomplete"]),
                }
            run.spans.append(span)
        return run

    # -- questions across runs ------------------------------------------------------
    def distribution(
        self, step: str, field: str, last: int = 1000, workflow: str | None = None
    ) -> Distribution:
        """The distribution of ``field`` (a dotted path into the step's output; prefix
        ``input.`` for its input) over the last ``last`` runs that executed ``step``:
        ``{"step", "field", "runs", "occurrences", "missing", "values": [{"value",
        "count", "share"}], "numeric"}``, most common value first. Counts the final
        attempt of each occurrence. See ``steptrace.query.distribution``."""
        from steptrace.query import distribution

        return distribution(self._reader, step, field, last, workflow)

    def step_stats(self, workflow: str | None = None, last: int = 1000) -> list[StepStats]:
        """Per step name over the last ``last`` runs (of ``workflow``, else of all):
        count, failures, retries, p50/p95/p99 duration, LLM tokens and cost."""
        from steptrace.stats import step_stats

        return step_stats(self._reader, workflow, last)

    def diff(self, run_a: str, run_b: str) -> RunDiff:
        """How run ``run_b`` differs from ``run_a``, step by step (ids or prefixes)."""
        from steptrace.diff import diff_runs

        return diff_runs(self.run(run_a), self.run(run_b))

    def compare(self, run_id: str, baseline: int = 100) -> Comparison:
        """The run against the last ``baseline`` successful runs of its workflow: ranked
        findings (slow, rare_value, new_value, missing_step, extra_step, more_attempts,
        cost, failed)."""
        from steptrace.compare import compare_run

        return compare_run(self._reader, run_id, baseline)

    def run_totals(self, run_ids: Sequence[str]) -> dict[str, RunTotals]:
        """Per run id: step calls, step attempts, LLM calls, tokens and cost (for a
        listing of runs; see ``steptrace.overview``)."""
        from steptrace.overview import run_totals

        return run_totals(self._reader, run_ids)

    def step_durations(
        self, step: str, workflow: str | None = None, last: int = 1000
    ) -> list[float]:
        """Durations in ms of the last ``last`` attempts of ``step``, newest first."""
        from steptrace.overview import step_durations

        return step_durations(self._reader, step, workflow, last)

    def status(self, reports: int = 5) -> StoreStatus:
        """Runs by status, the schema's last migration, live writer processes and the
        last ``reports`` write-trouble reports (``steptrace status``)."""
        from steptrace.overview import store_status

        return store_status(self._reader, reports)

    def run_window(self, workflow: str | None = None, last: int = 1000) -> RunWindow:
        """What ``step_stats(workflow, last)`` covers: how many runs, and when the
        oldest and newest of them started."""
        from steptrace.overview import run_window

        return run_window(self._reader, workflow, last)

    def step_names(self, workflow: str | None = None) -> list[str]:
        """The step and tool names recorded (in runs of ``workflow``), sorted."""
        from steptrace.overview import step_names

        return step_names(self._reader, workflow)

    def workflows(self) -> list[str]:
        """The names of the workflows that have runs in the store, sorted."""
        from steptrace.overview import workflows

        return workflows(self._reader)

    def index_field(self, step: str, field: str) -> str:
        """Create (if needed) an expression index that serves ``distribution(step,
        field)`` from the index rather than by parsing each output; returns its name.
        Building it reads the whole spans table once."""
        from steptrace.query import field_index_sql

        name, sql = field_index_sql(self.dialect, step, field)
        self._execute(sql)
        return name

    def _execute(self, sql: str) -> None:
        """A statement that changes the schema (an index), not a query."""
        self._query(sql)

    def _index_exists(self, name: str) -> bool:
        return bool(
            self._query("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [name])
        )

    def drop_field_index(self, step: str, field: str) -> bool:
        """Drop the index ``index_field(step, field)`` made; False if there was none."""
        from steptrace.query import field_index_name

        name = field_index_name(step, field)
        existed = self._index_exists(name)
        self._execute(f"DROP INDEX IF EXISTS {name}")
        return existed

    # -- SQL --------------------------------------------------------------------------
    def _readonly_conn(self) -> sqlite3.Connection:
        if self._readonly is None:
            self._readonly = sqlite_backend.connect_readonly(sqlite_backend.path_from_url(self.url))
        return self._readonly

    def _sql_rows(
        self, query: str, params: Sequence[Any], limit: int | None, timeout_s: float
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """On the read-only connection, with a progress handler that stops the
        statement at the time limit; Ctrl-C stops it too (``KeyboardInterrupt``)."""
        deadline = time.monotonic() + timeout_s
        timed_out = False

        def progress() -> int:
            nonlocal timed_out
            timed_out = time.monotonic() > deadline
            return int(timed_out)

        with self._lock:
            conn = self._readonly_conn()
            # A SIGINT's Python handler runs inside this handler (the only Python code
            # while SQLite works): the KeyboardInterrupt it raises there aborts the
            # statement ("interrupted") and is swallowed by sqlite3, so an interrupted
            # statement that did not time out was interrupted by the user.
            conn.set_progress_handler(progress, _PROGRESS_STEPS)
            try:
                cursor = conn.execute(query, params)
                try:
                    names = [d[0] for d in cursor.description or ()]
                    rows: list[tuple[Any, ...]] = []
                    while limit is None or len(rows) < limit:
                        size = 1000 if limit is None else min(1000, limit - len(rows))
                        chunk = cursor.fetchmany(size)
                        if not chunk:
                            break
                        rows.extend(chunk)
                    return names, rows
                finally:
                    cursor.close()
            except sqlite3.OperationalError as exc:
                if str(exc) != "interrupted":
                    raise QueryError(f"SQL error: {exc}") from None
                if timed_out:
                    raise QueryError(timeout_message(timeout_s)) from None
                raise KeyboardInterrupt from None
            except (sqlite3.Error, sqlite3.Warning, OverflowError, UnicodeEncodeError) as exc:
                raise QueryError(f"SQL error: {exc}") from None
            finally:
                conn.set_progress_handler(None, 0)

    def sql(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        limit: int | None = None,
        timeout_s: float = SQL_TIMEOUT_S,
    ) -> list[dict[str, Any]]:
        """Rows of one read-only SQL statement as dicts (the first ``limit`` of them, if
        given), JSON columns (``input``, ``output``, ``error``, ``tags``,
        ``attributes``, ``messages``, ``params``, ``response``, ``tool_calls``)
        decoded. A statement still running after ``timeout_s`` seconds is stopped.
        Raises ``QueryError``.

        SQLite: the connection is opened read-only and in ``query_only`` mode, so the
        engine refuses any write; ``ATTACH``, transactions and setting pragmas are
        refused too. PostgreSQL: one query that reads, calling no volatile function
        (``steptrace.store.sql_guard``), on a read-only session, in a ``READ ONLY``
        transaction that is rolled back; a superuser, or a role that may reach the
        server's files or programs, is refused (docs/security.md says how to make
        a reader role)."""
        from steptrace.export import JSON_COLUMNS, decode_json

        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise QueryError(f"limit must be a positive number of rows, not {limit!r}")
        if not timeout_s > 0:
            raise QueryError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
        if stored_form(query) != query:
            raise QueryError("SQL error: the statement holds a NUL or a lone surrogate")
        self._same_process_flush()
        names, rows = self._sql_rows(query, query_params(params), limit, timeout_s)
        decode = [n in JSON_COLUMNS for n in names]
        return [
            {
                n: decode_json(v) if json else v
                for n, v, json in zip(names, row, decode, strict=True)
            }
            for row in rows
        ]

    # -- export -----------------------------------------------------------------------
    def export(
        self,
        dest: str | Path | IO[bytes],
        format: str = "jsonl",
        table: str = "steps",
        *,
        workflow: str | None = None,
        status: str | None = None,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
        last: int | None = None,
        step: str | None = None,
    ) -> int:
        """Write ``table`` (runs, steps, spans or llm) for the runs the filters choose
        (those of ``runs``; all of them unless ``last``) to a file or binary stream as
        ``format`` (jsonl, csv or parquet — parquet needs pyarrow). Returns the number
        of rows written. See ``steptrace.export``."""
        from steptrace import export

        if format not in export.FORMATS:
            raise QueryError(
                f"unknown format {format!r}: choose one of {', '.join(export.FORMATS)}"
            )
        if format == "parquet":
            export._arrow()  # fail before creating the file
        runs = RunFilter.of(workflow, status, since, until, tag, where)
        columns, rows = export.iter_rows(self._reader, table, runs, last=last, step=step)
        if isinstance(dest, str | Path):
            with open(dest, "wb") as out:
                return export.write(format, columns, rows, out)
        return export.write(format, columns, rows, dest)

    def to_pandas(
        self,
        table: str = "steps",
        *,
        workflow: str | None = None,
        status: str | None = None,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
        last: int | None = None,
        step: str | None = None,
    ) -> Any:
        """``table`` for the chosen runs as a pandas DataFrame (JSON columns decoded);
        needs pandas."""
        from steptrace import export

        runs = RunFilter.of(workflow, status, since, until, tag, where)
        columns, rows = export.iter_rows(self._reader, table, runs, last=last, step=step)
        return export.to_pandas(columns, rows)


__all__ = [
    "QueryError",
    "RunNotFound",
    "RunRecord",
    "SpanView",
    "Store",
    "WriterBackend",
    "migrate_store",
    "open_writer",
]
