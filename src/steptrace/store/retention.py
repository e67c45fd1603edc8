"""Retention: delete old runs with everything they own (``steptrace prune``).

Runs are chosen by start time (and optionally workflow, keeping failed ones) and
deleted a batch at a time — their logs, LLM calls, spans, then the runs — one
transaction per batch, so writers in other processes wait at most one batch's
delete, never the whole prune. The SQL is the same on both engines; SQLite's
``database is locked`` is waited out, as the writer does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from steptrace.errors import ConfigError
from steptrace.query.where import parse_time
from steptrace.store import memory
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.columns import RUNS, WRITTEN
from steptrace.store.schema import (
    load_postgres,
    missing,
    missing_store_message,
    prepare_schema,
    scheme,
)

BATCH_RUNS = 500
T = TypeVar("T")
Execute = Callable[[str, Sequence[Any]], int]

_OWNED = tuple(t.name for t in reversed(WRITTEN) if t is not RUNS)
"""What a run owns (logs, LLM calls, spans): the tables a batch writes besides runs,
deleted in the reverse of the order they are written."""


@dataclass
class PruneResult:
    cutoff: str
    """Runs that started before this time (ISO-8601 UTC) were chosen."""
    runs: int
    spans: int
    llm_calls: int
    logs: int
    dry_run: bool
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Conn:
    """The little prune needs of a connection: queries, and a retried transaction."""

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
def _open(url: str) -> Iterator[_Conn]:
    conn = _Conn(url)
    try:
        yield conn
    finally:
        conn.close()


def _delete(ids: list[str], execute: Execute) -> dict[str, int]:
    """Delete the runs ``ids`` and what they own; the rows deleted per table."""
    marks = ", ".join("?" * len(ids))
    return {
        table: execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
        for table in (*_OWNED, "runs")
    }


def prune(
    url: str,
    older_than: str | dt.datetime,
    *,
    workflow: str | None = None,
    keep_failed: bool = False,
    dry_run: bool = False,
    batch_runs: int = BATCH_RUNS,
) -> PruneResult:
    """Delete the runs that started before ``older_than`` (``"30d"``, ``"12h"``, an
    ISO-8601 time) — of ``workflow`` only if given, failed ones kept with
    ``keep_failed`` — with their spans, LLM calls and logs, ``batch_runs`` runs per
    transaction. ``dry_run`` counts what would go and deletes nothing. Raises
    ``QueryError`` for a malformed time, ``ConfigError`` for a store it cannot open."""
    if batch_runs < 1:
        raise ValueError("batch_runs must be at least 1")
    cutoff = parse_time(older_than)
    conds = ["started_at < ?"]
    params: list[Any] = [cutoff]
    if workflow is not None:
        conds.append("workflow = ?")
        params.append(workflow)
    if keep_failed:
        conds.append("status <> 'failed'")
    chosen = f"SELECT run_id FROM runs WHERE {' AND '.join(conds)}"
    if missing(url):
        raise ConfigError(missing_store_message(url))
    prepare_schema(url)
    result = PruneResult(cutoff, 0, 0, 0, 0, dry_run, 0)
    with _open(url) as conn:
        if dry_run:
            ((result.runs,),) = conn.rows(f"SELECT count(*) FROM ({chosen}) c", params)
            for table in _OWNED:
                ((n,),) = conn.rows(
                    f"SELECT count(*) FROM {table} WHERE run_id IN ({chosen})", params
                )
                setattr(result, table, n)
            return result
        while True:
            batch = conn.rows(f"{chosen} ORDER BY started_at LIMIT ?", [*params, batch_runs])
            ids = [r[0] for r in batch]
            if not ids:
                return result
            for table, n in conn.transaction(functools.partial(_delete, ids)).items():
                setattr(result, table, getattr(result, table) + n)
            result.batches += 1
            if len(ids) < batch_runs:
                return result
