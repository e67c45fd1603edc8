"""Reading and writing a ``memory://`` store (``store/memory.py`` keeps the databases).

The same SQL runs on it as on a SQLite file, through the same writer and read engine
(``SQLiteWriter``, ``SQLiteEngine``) handed the database's one connection, each call
under the database's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from steptrace.record import RunState, SpanRecord
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.dialect import SQLITE, Dialect
from steptrace.store.engine import Queries, Rows
from steptrace.store.memory import MemoryDatabase, database
from steptrace.store.sqlite_engine import SQLiteEngine

T = TypeVar("T")


class MemoryWriter:
    """The sink's side: ``SQLiteWriter`` on the shared connection, each call under the
    database's lock. Closing it leaves the database open for the readers."""

    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db
        # Under the lock like every other use of the connection: a reader's ``sql`` sets a
        # Python progress handler on it, which a statement run here meanwhile would call
        # holding the connection's mutex — while the reader, holding the GIL, waits for
        # that mutex (a deadlock).
        with db.lock:
            self._writer = sqlite_backend.SQLiteWriter(db.url, conn=db.conn)

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None:
        with self._db.lock:
            self._writer.write(runs, spans)

    def execute(self, statements: Queries) -> None:
        with self._db.lock:
            self._writer.execute(statements)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._db.lock:
            return self._writer.query(sql, params)

    def cancel(self) -> None:
        self._writer.cancel()

    def in_transaction(self) -> bool:
        return self._writer.in_transaction()

    def abandon(self) -> None:
        with self._db.lock:
            self._writer.abandon()

    def checkpoint(self) -> None:
        """Nothing to copy: there is no write-ahead log in memory."""

    def close(self) -> None:
        """The database stays (``drop`` forgets it)."""


class MemoryEngine:
    """The readers' side: ``SQLiteEngine`` on the shared connection, one query at a
    time. The user's ``sql`` runs with the connection switched to ``query_only`` and
    the read-only authorizer, both switched back before the lock is given up."""

    dialect: Dialect = SQLITE
    tiebreak = SQLiteEngine.tiebreak

    def __init__(self, db: MemoryDatabase) -> None:
        self.url = self.dsn = db.url
        self._db = db
        self._sqlite = SQLiteEngine(
            db.url, db.conn, lock=db.lock, readonly=lambda: db.conn, parallel=False
        )

    @classmethod
    def open(cls, url: str) -> MemoryEngine:
        return cls(database(url, create=False))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self._sqlite.rows(sql, params)

    def rows_batch(self, queries: Queries) -> list[Rows]:
        return self._sqlite.rows_batch(queries)

    def rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> Rows:
        return self._sqlite.rows_of_runs(sql, params, runs)

    def rows_many(self, queries: Queries, transform: Callable[[Rows], T]) -> list[T]:
        return self._sqlite.rows_many(queries, transform)

    def ddl(self, sql: str) -> None:
        self._sqlite.ddl(sql)

    def index_exists(self, name: str) -> bool:
        return self._sqlite.index_exists(name)

    def sql_rows(
        self, query: str, params: Sequence[Any], limit: int | None, timeout_s: float
    ) -> tuple[list[str], Rows]:
        conn = self._db.conn
        with self._db.lock:
            conn.execute("PRAGMA query_only=ON")
            conn.set_authorizer(sqlite_backend.authorize_read)
            try:
                return self._sqlite.sql_rows(query, params, limit, timeout_s)
            finally:
                conn.set_authorizer(None)
                conn.execute("PRAGMA query_only=OFF")

    def close(self) -> None:
        """The database stays for the writer and other readers (``drop`` forgets it)."""
