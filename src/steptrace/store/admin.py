"""A writing connection for maintenance outside the recording writer: deleting old runs
(``retention``) and the leases recoverers take on runs (``leases``). The same ``?``
SQL runs on every engine; SQLite's ``database is locked`` is waited out."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from steptrace.store import memory
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.schema import load_postgres, scheme

T = TypeVar("T")
Execute = Callable[[str, Sequence[Any]], int]


class Connection:
    """A writing connection for the store's own maintenance (prune, leases): queries, and a
    transaction retried while SQLite is locked."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = scheme(url) == "postgresql"
        self._memory: memory.MemoryDatabase | None = None
        if self.postgres:
            self._pg = load_postgres()
            self._pgconn = self._pg.connect(url)
        elif scheme(url) == "memory":
            # The one connection of the database, held (its lock) for the whole prune.
            self._memory = memory.database(url, create=False)
            self._memory.lock.acquire()
            self._sqlite = self._memory.conn
        else:
            self._sqlite = sqlite_backend.connect(sqlite_backend.path_from_url(url))

    def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self.postgres:
            rows: list[tuple[Any, ...]] = self._pgconn.execute(
                self._pg.placeholders(sql), list(params)
            ).fetchall()
            return rows
        return self._sqlite.execute(sql, params).fetchall()

    def transaction(self, work: Callable[[Execute], T]) -> T:
        """``work(execute)`` in one transaction (retried while SQLite is locked);
        ``execute`` returns the number of rows a statement changed."""
        if self.postgres:
            conn = self._pgconn
            with conn.transaction():
                return work(
                    lambda sql, p: conn.execute(self._pg.placeholders(sql), list(p)).rowcount
                )
        db = self._sqlite
        delay = 0.01
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    done = work(lambda sql, p: db.execute(sql, p).rowcount)
                    db.execute("COMMIT")
                    return done
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if not sqlite_backend.is_locked(exc):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def close(self) -> None:
        if self.postgres:
            self._pgconn.close()
        elif self._memory is not None:
            self._memory.lock.release()
        else:
            self._sqlite.close()


@contextlib.contextmanager
def connect(url: str) -> Iterator[Connection]:
    conn = Connection(url)
    try:
        yield conn
    finally:
        conn.close()
