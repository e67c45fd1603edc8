"""``Store`` over PostgreSQL: the same questions, the same answers.

Query modules write SQL once (``?`` placeholders, a ``Dialect`` for what differs);
``PostgresStore`` runs it on a connection of its own, and the independent halves of
a large question side by side on connections from a psycopg pool (opened when first
needed). ``sql`` runs the
user's statement alone (extended protocol: one statement) in a ``READ ONLY``
transaction under a statement timeout, and rolls the transaction back, so even a
``SET`` it contains does not outlive it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from steptrace.config import ConfigError, get_config
from steptrace.store import Store, query_params, take_runs
from steptrace.store import postgres as pg
from steptrace.store.dialect import POSTGRESQL, Dialect
from steptrace.store.schema import check_schema, migrate_store, open_error
from steptrace.where import QueryError

T = TypeVar("T")

POOL_MAX = 4
SQL_TIMEOUT_S = 60
"""Statement timeout of ``Store.sql`` (a runaway query must not hold the server)."""
_REFUSED = re.compile(
    r"\s*(BEGIN|START|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|PREPARE|SET|RESET|DISCARD|"
    r"LISTEN|NOTIFY|UNLISTEN|LOCK|CHECKPOINT|LOAD|COPY|DO|CALL|VACUUM|ANALYZE)\b",
    re.IGNORECASE,
)
"""Statements refused before they reach the server: transaction control and session
state (a second line of defence behind the read-only transaction, which is rolled back),
and ``COPY`` (which may run a program or write a file as the server)."""


def _fetch_from(rows: list[tuple[Any, ...]]) -> Callable[[int], list[tuple[Any, ...]]]:
    """A ``fetchmany`` over rows already fetched: all of them, then none."""
    chunks = iter([rows])
    return lambda _size: next(chunks, [])


class PostgresStore(Store):
    """Read access to a PostgreSQL store (``Store.open("postgresql://…")``)."""

    dialect: Dialect = POSTGRESQL
    _tiebreak = "s.ctid"

    def __init__(self, url: str) -> None:
        self.url = pg.safe_url(url)
        """What messages show: the URL with its password masked."""
        self._dsn = url
        self._pool_pg: ConnectionPool[Any] | None = None
        self._main: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._readonly_pg: psycopg.Connection[Any] | None = None
        self._executor: ThreadPoolExecutor | None = None
        from steptrace.store import _Reader

        self._reader = _Reader(self)

    @classmethod
    def connect(cls, url: str) -> PostgresStore:
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
            self._main = pg.connect(self._dsn)
        return self._main

    def _parallel_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool_pg is None:
                self._pool_pg = ConnectionPool(
                    pg._libpq_url(self._dsn),
                    min_size=1,
                    max_size=POOL_MAX,
                    kwargs={"autocommit": True, "application_name": "steptrace"},
                    configure=pg.configure,
                    open=True,
                    name="steptrace",
                )
            return self._pool_pg

    # -- plumbing -----------------------------------------------------------------
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """On the store's own connection (a pool checkout costs as much as a small
        query); the pool serves the queries run side by side."""
        self._same_process_flush()
        with self._lock:
            conn = self._main_conn()
            try:
                rows: list[tuple[Any, ...]] = conn.execute(
                    pg.placeholders(sql), query_params(params)
                ).fetchall()
            except psycopg.OperationalError:
                conn.close()  # reconnect on the next query
                raise
            return rows

    def _query_batch(
        self, queries: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """The queries in one pipeline: one round trip for all of them."""
        self._same_process_flush()
        with self._lock:
            conn = self._main_conn()
            try:
                with conn.pipeline():
                    cursors = [
                        conn.cursor().execute(pg.placeholders(sql), query_params(params))
                        for sql, params in queries
                    ]
                return [c.fetchall() for c in cursors]
            except psycopg.OperationalError:
                conn.close()
                raise

    def _execute(self, sql: str) -> None:
        with self._lock:
            conn = self._main_conn()
            conn.execute(sql.encode())

    def _rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> list[tuple[Any, ...]]:
        """The query with a ``LIMIT`` a little past ``runs`` rows (most runs have one
        row), raised fourfold until the rows hold one run more than asked for or the
        query is exhausted: one round trip in the usual case, where a server-side cursor
        takes four."""
        limit = runs + runs // 4 + 16
        while True:
            rows = self._query(f"{sql} LIMIT {limit}", params)
            if len(rows) < limit or len({r[0] for r in rows}) > runs:
                return take_runs(_fetch_from(rows), runs)
            limit *= 4

    def _query_many(
        self,
        queries: Sequence[tuple[str, Sequence[Any]]],
        transform: Callable[[list[tuple[Any, ...]]], T],
    ) -> list[T]:
        if len(queries) < 2:
            return [transform(self._query(sql, params)) for sql, params in queries]
        self._same_process_flush()
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(POOL_MAX, thread_name_prefix="steptrace-pg")
            executor = self._executor

        pool = self._parallel_pool()

        def one(sql: str, params: Sequence[Any]) -> T:
            with pool.connection() as conn:
                return transform(
                    conn.execute(pg.placeholders(sql), query_params(params)).fetchall()
                )

        futures = [executor.submit(one, sql, params) for sql, params in queries]
        return [f.result() for f in futures]

    def _index_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM pg_indexes WHERE indexname = ?", [name]))

    def _sql_rows(
        self, query: str, params: Sequence[Any]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        if _REFUSED.match(query):
            raise QueryError("SQL error: Store.sql runs one read-only query (SELECT, WITH …)")
        with self._lock:
            conn = self._readonly_pg
            if conn is None or conn.closed:
                conn = self._readonly_pg = pg.connect(
                    self._dsn, options="-c default_transaction_read_only=on"
                )
            try:
                conn.execute("BEGIN READ ONLY")
                try:
                    conn.execute(f"SET LOCAL statement_timeout = {SQL_TIMEOUT_S * 1000}")
                    # Pipeline mode uses the extended protocol, which runs exactly one
                    # statement ("select 1; commit; …" is refused).
                    with conn.pipeline():
                        cursor = conn.execute(
                            pg.placeholders(query) if params else query.replace("%", "%%"),
                            list(params),
                        )
                    names = [d.name for d in cursor.description or ()]
                    rows = cursor.fetchall() if cursor.description else []
                finally:
                    if not conn.closed:
                        conn.execute("ROLLBACK")
            except psycopg.Error as exc:
                raise QueryError(f"SQL error: {str(exc).strip()}") from None
            return names, rows

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._readonly_pg is not None:
            self._readonly_pg.close()
        if self._main is not None:
            self._main.close()
        if self._pool_pg is not None:
            self._pool_pg.close()
