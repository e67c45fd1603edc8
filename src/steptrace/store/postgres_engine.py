"""Reading a PostgreSQL store: ``PostgresEngine``, the same questions, the same answers.

Query modules write SQL once (``?`` placeholders, a ``Dialect`` for what differs);
``PostgresEngine`` runs it on a connection of its own, and the independent halves of
a large question side by side on connections from a psycopg pool (opened when first
needed). ``sql`` runs the user's statement on a session of its own, read-only by
default, as a role that may not reach the server's files or programs, after
``sql_guard`` has parsed it (one query that reads, calling no volatile function):
in a ``READ ONLY`` transaction under a statement timeout, rolled back afterwards,
its rows read through a server-side cursor a chunk at a time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from steptrace.config import get_config
from steptrace.errors import ConfigError, QueryError
from steptrace.masking import mask_url
from steptrace.store import postgres as pg
from steptrace.store import sql_guard
from steptrace.store.dialect import POSTGRESQL, Dialect
from steptrace.store.engine import Queries, Rows, take_runs, timeout_message
from steptrace.store.schema import check_schema, migrate_store, open_error

T = TypeVar("T")

POOL_MAX = 4
FETCH_ROWS = 1000
"""Rows ``sql`` fetches from its cursor at a time."""


def _fetch_from(rows: list[tuple[Any, ...]]) -> Callable[[int], list[tuple[Any, ...]]]:
    """A ``fetchmany`` over rows already fetched: all of them, then none."""
    chunks = iter([rows])
    return lambda _size: next(chunks, [])


class PostgresEngine:
    """A PostgreSQL server, read (``Store.open("postgresql://…")``)."""

    dialect: Dialect = POSTGRESQL
    tiebreak = "s.ctid"

    def __init__(self, url: str) -> None:
        self.url = mask_url(url)
        """What messages show: the URL with its password masked."""
        self.dsn = url
        self._pool_pg: ConnectionPool[Any] | None = None
        self._main: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._readonly_pg: psycopg.Connection[Any] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def open(cls, url: str) -> PostgresEngine:
        """Open the store, migrating it first (``auto_migrate``) or checking its schema."""
        try:
            if get_config().auto_migrate_enabled():
                migrate_store(url)
            else:
                with pg.connect(url) as conn:
                    check_schema(url, pg.applied(conn))
        except psycopg.Error as exc:
            raise ConfigError(open_error(url, exc)) from exc
        return cls(url)

    def _main_conn(self) -> psycopg.Connection[Any]:
        """The store's own connection (hold ``_lock``), reopened after a failure."""
        if self._main is None or self._main.closed:
            self._main = pg.connect(self.dsn)
        return self._main

    def _parallel_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool_pg is None:
                self._pool_pg = ConnectionPool(
                    pg.libpq_url(self.dsn),
                    min_size=1,
                    max_size=POOL_MAX,
                    kwargs={"autocommit": True, "application_name": "steptrace"},
                    configure=pg.configure,
                    open=True,
                    name="steptrace",
                )
            return self._pool_pg

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """On the store's own connection (a pool checkout costs as much as a small
        query); the pool serves the queries run side by side."""
        with self._lock:
            conn = self._main_conn()
            try:
                rows: Rows = conn.execute(pg.placeholders(sql), params).fetchall()
            except psycopg.OperationalError:
                conn.close()  # reconnect on the next query
                raise
            return rows

    def rows_batch(self, queries: Queries) -> list[Rows]:
        """The queries in one pipeline: one round trip for all of them."""
        with self._lock:
            conn = self._main_conn()
            try:
                with conn.pipeline():
                    cursors = [
                        conn.cursor().execute(pg.placeholders(sql), params)
                        for sql, params in queries
                    ]
                return [c.fetchall() for c in cursors]
            except psycopg.OperationalError:
                conn.close()
                raise

    def ddl(self, sql: str) -> None:
        with self._lock:
            conn = self._main_conn()
            conn.execute(sql.encode())

    def rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> Rows:
        """The query with a ``LIMIT`` a little past ``runs`` rows (most runs have one
        row), raised fourfold until the rows hold one run more than asked for or the
        query is exhausted: one round trip in the usual case, where a server-side cursor
        takes four."""
        limit = runs + runs // 4 + 16
        while True:
            rows = self.rows(f"{sql} LIMIT {limit}", params)
            if len(rows) < limit or len({r[0] for r in rows}) > runs:
                return take_runs(_fetch_from(rows), runs)
            limit *= 4

    def rows_many(self, queries: Queries, transform: Callable[[Rows], T]) -> list[T]:
        if len(queries) < 2:
            return [transform(self.rows(sql, params)) for sql, params in queries]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(POOL_MAX, thread_name_prefix="steptrace-pg")
            executor = self._executor

        pool = self._parallel_pool()

        def one(sql: str, params: Sequence[Any]) -> T:
            with pool.connection() as conn:
                return transform(conn.execute(pg.placeholders(sql), params).fetchall())

        futures = [executor.submit(one, sql, params) for sql, params in queries]
        return [f.result() for f in futures]

    def index_exists(self, name: str) -> bool:
        return bool(self.rows("SELECT 1 FROM pg_indexes WHERE indexname = ?", [name]))

    def _sql_conn(self) -> psycopg.Connection[Any]:
        """The ``sql`` session (hold ``_lock``): read-only by default, literals read as
        ``sql_guard`` parses them, and a role that cannot reach the server's files or
        programs (``sql_guard.check_role``)."""
        conn = self._readonly_pg
        if conn is not None and not conn.closed:
            return conn
        conn = pg.connect(self.dsn, options=sql_guard.session_options(self.dsn))
        try:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            row = conn.execute(sql_guard.ROLE_SQL).fetchone()
            if row is None:
                raise QueryError("cannot tell which PostgreSQL role this session has")
            sql_guard.check_role(row, sql_guard.reader_url(self.url))
        except BaseException:
            conn.close()
            raise
        self._readonly_pg = conn
        return conn

    def sql_rows(
        self, query: str, params: Sequence[Any], limit: int | None, timeout_s: float
    ) -> tuple[list[str], Rows]:
        text = pg.placeholders(query) if params else query.replace("%", "%%")
        statement = sql_guard.parse(_as_sent(text))
        deadline = time.monotonic() + timeout_s
        with self._lock:
            try:
                conn = self._sql_conn()
                conn.execute("BEGIN TRANSACTION READ ONLY")
                try:
                    conn.execute(
                        "SELECT pg_catalog.set_config('statement_timeout', %s, true)",
                        [str(max(1, round(timeout_s * 1000)))],
                    )
                    volatile = conn.execute(
                        sql_guard.CATALOG_SQL, sql_guard.catalog_params(statement)
                    ).fetchall()
                    sql_guard.check_volatile(statement, volatile)
                    return _fetch(conn, text, list(params), statement.explain, limit, deadline)
                finally:
                    if not conn.closed:
                        conn.execute("ROLLBACK")
            except psycopg.errors.QueryCanceled:
                raise QueryError(timeout_message(timeout_s)) from None
            except psycopg.Error as exc:
                raise QueryError(f"SQL error: {str(exc).strip()}") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._readonly_pg is not None:
            self._readonly_pg.close()
        if self._main is not None:
            self._main.close()
        if self._pool_pg is not None:
            self._pool_pg.close()


def _as_sent(text: str) -> str:
    """The statement as the server receives it from psycopg: each ``%s`` a ``$n``
    parameter, ``%%`` a ``%`` (what the guard must parse)."""
    numbers = iter(range(1, 1 << 16))
    return re.sub(r"%([s%])", lambda m: f"${next(numbers)}" if m[1] == "s" else "%", text)


def _fetch(
    conn: psycopg.Connection[Any],
    text: str,
    params: list[Any],
    explain: bool,
    limit: int | None,
    deadline: float,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and up to ``limit`` rows of the statement, in the open
    transaction. A query is read through a server-side cursor, ``FETCH_ROWS`` at a
    time, so a huge result never crosses the wire whole; an ``EXPLAIN`` (which a cursor
    cannot run) in one go, sent alone (pipeline mode: the extended protocol runs
    exactly one statement)."""
    if explain:
        with conn.pipeline():
            cursor = conn.execute(text, params)
        names = [d.name for d in cursor.description or ()]
        return names, cursor.fetchall() if limit is None else cursor.fetchmany(limit)
    with conn.cursor(name="steptrace_sql") as server:
        server.execute(text, params)
        names = [d.name for d in server.description or ()]
        rows: list[tuple[Any, ...]] = []
        while limit is None or len(rows) < limit:
            chunk = server.fetchmany(
                FETCH_ROWS if limit is None else min(FETCH_ROWS, limit - len(rows))
            )
            if not chunk:
                break
            rows.extend(chunk)
            if time.monotonic() > deadline:
                raise psycopg.errors.QueryCanceled("the time limit passed between fetches")
        return names, rows
