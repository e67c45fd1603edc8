"""What the store asks of a database engine: one protocol for reading, one for writing.

``Store`` (the facade in ``steptrace.store``) holds one read engine and writes its
questions once, as SQL with ``?`` parameters and a ``Dialect`` for what differs. Each
engine runs that SQL its own way:

- ``SQLiteEngine`` (``store/sqlite_engine.py``): a file; large questions split over
  read-only connections in worker threads.
- ``PostgresEngine`` (``store/postgres_engine.py``): a server; small questions in one
  pipeline, large ones over a connection pool.
- ``MemoryEngine`` (``store/memory.py``): a SQLite database in this process's memory,
  one connection shared by the writer and every reader (for tests).

The background writer (``store/writer.py``) holds a ``WriterBackend`` of the same
engine. No engine inherits from another: they share functions, not a base class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from steptrace.record import RunState, SpanRecord
from steptrace.store.dialect import Dialect

T = TypeVar("T")

Rows = list[tuple[Any, ...]]
Queries = Sequence[tuple[str, Sequence[Any]]]


class Engine(Protocol):
    """The read side of a store. Parameters arrive as the store holds text
    (``query_params``); every method may be called from several threads."""

    url: str
    """The store's URL as messages show it (a password masked)."""
    dsn: str
    """The URL to connect with."""
    dialect: Dialect
    tiebreak: str
    """An expression on ``spans s`` that orders spans started in the same microsecond
    in the order they were written."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """All rows of one query."""
        ...

    def rows_batch(self, queries: Queries) -> list[Rows]:
        """The rows of each of a few small queries (one round trip where the engine
        can)."""
        ...

    def rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> Rows:
        """Rows ordered by run (first column: a run id), up to those of ``runs`` runs
        (``take_runs``)."""
        ...

    def rows_many(self, queries: Queries, transform: Callable[[Rows], T]) -> list[T]:
        """Independent queries, side by side where the engine can, each result passed
        through ``transform`` on the thread that fetched it."""
        ...

    def ddl(self, sql: str) -> None:
        """A statement that changes the schema (an index)."""
        ...

    def index_exists(self, name: str) -> bool: ...

    def sql_rows(
        self, query: str, params: Sequence[Any], limit: int | None, timeout_s: float
    ) -> tuple[list[str], Rows]:
        """The column names and (up to ``limit``) rows of a user's statement, run so
        that it cannot write, stopped after ``timeout_s``; ``QueryError`` otherwise."""
        ...

    def close(self) -> None: ...


class WriterBackend(Protocol):
    """The write side, what the sink needs of an engine: one attempt per call (the sink
    decides what a failure means), ``cancel`` callable from another thread to break a
    call off."""

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None: ...

    def execute(self, statements: Queries) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def cancel(self) -> None: ...

    def in_transaction(self) -> bool: ...

    def abandon(self) -> None: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


def take_runs(fetchmany: Callable[[int], Sequence[tuple[Any, ...]]], runs: int) -> Rows:
    """Rows (first column: a run id) up to the first row of the ``runs + 1``-th run: at
    least one row a run, so ``runs`` rows are fetched at once, then a few at a time,
    and the query computes few rows past the stopping point. The first ``runs`` rows
    hold at most ``runs`` runs, so they are kept whole, without a look at each row (a
    distribution's window is mostly those)."""
    chunk = fetchmany(runs)
    out: Rows = list(chunk[:runs])
    seen = {row[0] for row in out}
    rest = chunk[runs:]
    while True:
        for row in rest:
            if row[0] not in seen:
                if len(seen) == runs:
                    return out
                seen.add(row[0])
            out.append(row)
        if not chunk:
            return out
        rest = chunk = fetchmany(16)


def timeout_message(timeout_s: float) -> str:
    return (
        f"SQL error: the query was stopped at its time limit of {timeout_s:g} s "
        "(statement timeout; steptrace sql --timeout SECONDS allows more)"
    )
