"""Reading a SQLite store: ``SQLiteEngine``.

One connection answers the questions, taking turns; a question made of independent
queries runs them side by side on read-only connections in worker threads (SQLite
releases the GIL while it computes, so they run on separate cores). ``sql`` runs the
user's statement on a connection the engine itself keeps from writing
(``sqlite.connect_readonly``), with a progress handler that stops it at its time limit.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from steptrace.config import get_config
from steptrace.errors import ConfigError, QueryError
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.dialect import SQLITE, Dialect
from steptrace.store.engine import Queries, Rows, take_runs, timeout_message
from steptrace.store.schema import check_schema, missing_store_message, open_error

T = TypeVar("T")

PROGRESS_STEPS = 10_000
"""SQLite virtual-machine steps between two checks of a running ``sql`` statement."""


class SQLiteEngine:
    """A SQLite file, read (``Store.open("path")``)."""

    dialect: Dialect = SQLITE
    tiebreak = "s.rowid"

    def __init__(
        self,
        url: str,
        conn: sqlite3.Connection,
        *,
        lock: threading.RLock | None = None,
        readonly: Callable[[], sqlite3.Connection] | None = None,
        parallel: bool = True,
    ) -> None:
        self.url = url
        self.dsn = url
        self._conn = conn
        self._lock = lock or threading.RLock()
        self._open_readonly = readonly or (
            lambda: sqlite_backend.connect_readonly(sqlite_backend.path_from_url(url))
        )
        self._readonly: sqlite3.Connection | None = None
        self._parallel = parallel and (os.cpu_count() or 1) > 1
        self._pool: ConnectionPool | None = None
        self._owns_conn = readonly is None

    @classmethod
    def open(cls, url: str) -> SQLiteEngine:
        """Open the file at ``url`` for queries, applying this version's migrations to a
        store an older one wrote (or, automatic migration off, checking it is current).
        A file that does not exist is a ``ConfigError`` naming it: reading creates
        nothing."""
        path = sqlite_backend.path_from_url(url)
        if not os.path.isfile(path):
            raise ConfigError(missing_store_message(url))
        try:
            conn = sqlite_backend.connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(open_error(url, exc)) from exc
        if sqlite_backend.has_pending(conn):
            try:
                if get_config().auto_migrate_enabled():
                    sqlite_backend.migrate(conn)
                else:
                    check_schema(url, sqlite_backend.applied(conn))
            except BaseException:
                conn.close()
                raise
        sqlite_backend.tune_for_reads(conn)
        return cls(url, conn)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._lock:
            return list(self._conn.execute(sql, params))

    def rows_batch(self, queries: Queries) -> list[Rows]:
        with self._lock:
            return [list(self._conn.execute(sql, params)) for sql, params in queries]

    def rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> Rows:
        with self._lock:
            cursor = self._conn.execute(sql, params)
            try:
                return take_runs(cursor.fetchmany, runs)
            finally:
                cursor.close()

    def rows_many(self, queries: Queries, transform: Callable[[Rows], T]) -> list[T]:
        if len(queries) < 2 or not self._parallel:
            return [transform(self.rows(sql, params)) for sql, params in queries]
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    sqlite_backend.path_from_url(self.url), min(4, os.cpu_count() or 1)
                )
            pool = self._pool
        return pool.map(queries, transform)

    def ddl(self, sql: str) -> None:
        with self._lock:
            self._conn.execute(sql)

    def index_exists(self, name: str) -> bool:
        return bool(
            self.rows("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [name])
        )

    def sql_rows(
        self, query: str, params: Sequence[Any], limit: int | None, timeout_s: float
    ) -> tuple[list[str], Rows]:
        """On the read-only connection, with a progress handler that stops the
        statement at the time limit; Ctrl-C stops it too (``KeyboardInterrupt``)."""
        deadline = time.monotonic() + timeout_s
        timed_out = False

        def progress() -> int:
            nonlocal timed_out
            timed_out = time.monotonic() > deadline
            return int(timed_out)

        with self._lock:
            if self._readonly is None:
                self._readonly = self._open_readonly()
            conn = self._readonly
            # A SIGINT's Python handler runs inside this handler (the only Python code
            # while SQLite works): the KeyboardInterrupt it raises there aborts the
            # statement ("interrupted") and is swallowed by sqlite3, so an interrupted
            # statement that did not time out was interrupted by the user.
            conn.set_progress_handler(progress, PROGRESS_STEPS)
            try:
                return _fetch(conn, query, params, limit)
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

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._readonly is not None and self._owns_conn:
            self._readonly.close()
        if self._owns_conn:
            self._conn.close()


def _fetch(
    conn: sqlite3.Connection, query: str, params: Sequence[Any], limit: int | None
) -> tuple[list[str], Rows]:
    cursor = conn.execute(query, params)
    try:
        names = [d[0] for d in cursor.description or ()]
        rows: Rows = []
        while limit is None or len(rows) < limit:
            chunk = cursor.fetchmany(1000 if limit is None else min(1000, limit - len(rows)))
            if not chunk:
                break
            rows.extend(chunk)
        return names, rows
    finally:
        cursor.close()


class ConnectionPool:
    """Worker threads with a read-only connection each, for the independent parts of a
    large query."""

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

    def _rows(self, sql: str, params: Sequence[Any], transform: Callable[[Rows], T]) -> T:
        return transform(self._conn().execute(sql, params).fetchall())

    def map(self, queries: Queries, transform: Callable[[Rows], T]) -> list[T]:
        futures = [
            self._executor.submit(self._rows, sql, params, transform) for sql, params in queries
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
