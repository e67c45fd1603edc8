"""The embedded SQLite backend: WAL, batched writes, JSON1 reads.

``SQLiteBackend`` is used from two sides: the background writer owns one
connection and calls ``write``; a ``Store`` opened for queries owns another.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from steptrace.record import RunState, SpanRecord
from steptrace.store import private
from steptrace.store.columns import (
    LLM_CALLS,
    LOGS,
    RUNS,
    SCORES,
    SPANS,
    Collapse,
    Table,
    batch_logs,
    conflict_clause,
)
from steptrace.store.migrations import SchemaTooNew, pending

BUSY_TIMEOUT_MS = 5000
PAGE_BYTES = 8192
"""A step's row (its input and output, ~1-3 KB) leaves much of a 4 KiB page (SQLite's
default) empty, since a row is not split across pages until it is larger than one:
8 KiB pages hold several, which makes the file about a third smaller and a write about
a quarter cheaper (fewer pages to write, index pages included)."""


def iso_from_ns(ns: int) -> str:
    """ISO-8601 UTC with microseconds; sorts as text."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


def ns_from_iso(iso: str | None) -> int | None:
    """ns since the epoch of an ``iso_from_ns`` text (None for None)."""
    if not iso:
        return None
    moment = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(moment.utctimetuple()) * 1_000_000_000 + moment.microsecond * 1000


def path_from_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :] or ":memory:"
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    return url


def is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro",
            uri=True,
            check_same_thread=False,
            isolation_level=None,
        )
    else:
        if path not in ("", ":memory:"):
            # Created here, not by SQLite, so that it (and the -wal and -shm files SQLite
            # gives its permissions) is the user's alone.
            private.make_dirs(os.path.dirname(os.path.abspath(path)))
            private.create_file(path)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Before the first table: a new store is made of PAGE_BYTES pages (an existing
        # file keeps the size it was made with).
        conn.execute(f"PRAGMA page_size={PAGE_BYTES}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


MMAP_BYTES = 1 << 40
"""Asked of SQLite for reading connections; it clamps this to its compile-time maximum
(2 GiB by default). Memory-mapped reads skip a system call per page, which is most of
the cost of the random page reads of a "last N runs" query."""


def tune_for_reads(conn: sqlite3.Connection) -> None:
    """Settings for a connection that answers queries: memory-mapped I/O, a larger page
    cache, sorts and temporary indexes in memory."""
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")


# Pragmas that only read, allowed to ``Store.sql``; any other pragma, or one of these
# given a value other than a table or index name, is refused.
_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "database_list",
        "collation_list",
        "function_list",
        "module_list",
        "pragma_list",
        "compile_options",
        "user_version",
        "schema_version",
        "data_version",
        "page_count",
        "page_size",
        "freelist_count",
        "encoding",
        "journal_mode",
    }
)
_NAMED_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_REFUSED_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_ATTACH,
        sqlite3.SQLITE_DETACH,
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_SAVEPOINT,
    }
)


def authorize_read(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _source: str | None
) -> int:
    """Keep a read-only connection read-only: no ATTACH (which would open or create
    another file), no transactions held open, no pragma that sets something."""
    if action in _REFUSED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name not in _READ_PRAGMAS or (arg2 is not None and name not in _NAMED_PRAGMAS):
            return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def connect_readonly(path: str) -> sqlite3.Connection:
    """A connection the engine keeps from writing: opened read-only (``mode=ro``), in
    ``query_only`` mode (no temporary tables either), with an authorizer that refuses
    ATTACH, transactions and setting pragmas."""
    conn = connect(path, readonly=True)
    conn.execute("PRAGMA query_only=ON")
    tune_for_reads(conn)
    conn.set_authorizer(authorize_read)
    return conn


def applied(conn: sqlite3.Connection) -> list[str] | None:
    """Names of the migrations recorded in the database; None for a blank one."""
    try:
        return [r[0] for r in conn.execute("SELECT name FROM _migrations")]
    except sqlite3.OperationalError:  # no _migrations table
        return None


def has_pending(conn: sqlite3.Connection) -> bool:
    """Whether ``migrate`` has something to do (read without taking the write lock).
    A store migrated by a newer steptrace has nothing this version could apply."""
    try:
        done = [r[0] for r in conn.execute("SELECT name FROM _migrations")]
    except sqlite3.OperationalError:  # no _migrations table: a blank database
        return True
    try:
        return bool(pending(done))
    except SchemaTooNew:
        return False


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in one transaction each; returns the names applied. A
    current schema is only read (no write lock is taken: another process may hold it)."""
    if not has_pending(conn):
        done = applied(conn) or []
        pending(done)  # raises SchemaTooNew for a store a newer steptrace migrated
        return []
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    applied_now: list[str] = []
    for _ in range(100):
        try:
            conn.execute("BEGIN IMMEDIATE")
            done = [r[0] for r in conn.execute("SELECT name FROM _migrations")]
            todo = pending(done)
            for migration in todo:
                for statement in migration.sql("sqlite"):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (migration.name, iso_from_ns(time.time_ns())),
                )
                applied_now.append(migration.name)
            conn.execute("COMMIT")
            return applied_now
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not is_locked(exc):
                raise
            applied_now.clear()
            time.sleep(0.05)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    raise sqlite3.OperationalError("database is locked: could not migrate")


def _iso(param: str) -> str:
    """SQL for the ISO-8601 text of an ns-since-epoch parameter (formatted by SQLite, off
    the GIL, rather than by the writer thread in Python)."""
    return (
        f"strftime('%Y-%m-%dT%H:%M:%S', {param} / 1000000000, 'unixepoch') "
        f"|| printf('.%06dZ', ({param} / 1000) % 1000000)"
    )


def _ms(start: str, end: str) -> str:
    return f"({end} - {start}) / 1e6"


# A batch reaches SQLite as a few multi-row INSERT statements per table (``VALUES (…),
# (…), …``), each row's values bound as parameters: the writer enters SQLite (and
# releases the GIL) once per chunk of rows rather than once per row, which would cost a
# whole switch interval each time an application thread is busy, and no value is
# escaped into an intermediate document and parsed again. A chunk's size is a power of
# two, so a table has a handful of statement texts, each prepared once (the
# connection's statement cache). Times travel as ns and are formatted by SQLite (off the
# GIL), not by the writer thread in Python.
_CHUNK_ROWS = 256


def _row_getter(slots: Sequence[str], json: frozenset[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The function that makes a record's parameters (one per slot: a source attribute,
    JSON values as text), compiled once from the column table: a batch makes thousands
    of rows, and an expression a slot costs a third of calling a function a slot."""
    for attr in slots:
        if not all(part.isidentifier() for part in attr.split(".")):
            raise ValueError(f"{attr!r} is not an attribute path")
    values = ", ".join(f"text(rec.{a})" if a in json else f"rec.{a}" for a in slots)
    code = f"def row(rec):\n    return ({values},)\n"
    namespace: dict[str, Any] = {"text": _as_text}
    exec(compile(code, "<steptrace.store.sqlite row>", "exec"), namespace)
    row: Callable[[Any], tuple[Any, ...]] = namespace["row"]
    return row


def _as_text(value: Any) -> Any:
    """An encoded JSON value as the text SQLite stores (JSON1 reads TEXT, not BLOB)."""
    return value.decode() if isinstance(value, bytes) else value


class TableWrite:
    """How a batch's rows of one table (``columns.WRITTEN``) are inserted: the parameters
    of a record's row (``row``: its source attributes, each once), and the statement that
    inserts ``n`` rows with the table's conflict rule (``statement(n)``)."""

    def __init__(self, table: Table) -> None:
        written = table.written
        slots = list(dict.fromkeys(s for c in written for s in c.source))
        self.row = _row_getter(slots, frozenset(c.source[0] for c in written if c.json))
        self.width = len(slots)
        self.head = f"INSERT INTO {table.name} ({', '.join(c.name for c in written)}) VALUES "
        self.tail = f" {conflict_clause(table)}"
        # One row's SQL with {0}, {1}, … standing for its slots' parameter numbers.
        exprs: list[str] = []
        for c in written:
            first = f"?{{{slots.index(c.source[0])}}}"
            if c.form == "time":
                exprs.append(_iso(first))  # NULL for a NULL time
            elif c.form == "duration":
                exprs.append(_ms(first, f"?{{{slots.index(c.source[1])}}}"))
            else:
                exprs.append(first)
        self._template = "(" + ", ".join(exprs) + ")"
        self._statements: dict[int, str] = {}

    def statement(self, n: int) -> str:
        sql = self._statements.get(n)
        if sql is None:
            w = self.width
            rows = (self._template.format(*range(k * w + 1, k * w + w + 1)) for k in range(n))
            sql = self._statements[n] = self.head + ", ".join(rows) + self.tail
        return sql

    def statements(self, records: Sequence[Any]) -> list[tuple[str, list[Any]]]:
        """The statements (with their parameters) that insert ``records``: chunks of
        ``_CHUNK_ROWS``, the rest in power-of-two chunks."""
        out: list[tuple[str, list[Any]]] = []
        row = self.row
        at, left = 0, len(records)
        while left:
            n = _CHUNK_ROWS if left >= _CHUNK_ROWS else 1 << (left.bit_length() - 1)
            params: list[Any] = []
            for rec in records[at : at + n]:
                params.extend(row(rec))
            out.append((self.statement(n), params))
            at += n
            left -= n
        return out


_RUNS, _SPANS, _LLM_CALLS, _LOGS, _SCORES = (
    TableWrite(t) for t in (RUNS, SPANS, LLM_CALLS, LOGS, SCORES)
)
_latest_runs = Collapse(RUNS)
_latest_scores = Collapse(SCORES)


def _batch(runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> list[tuple[str, list[Any]]]:
    """The statements that write a batch: its runs, spans, LLM calls, logs and scores."""
    # A run that started and ended in this batch needs only one row (the upsert would
    # merge the two; one row is half the work).
    latest = _latest_runs(runs) if len(runs) > 1 else runs
    logs = batch_logs(runs, spans)
    scores = [line for s in spans if s.scores for line in s.scores]
    return [
        *_RUNS.statements(latest),
        *_SPANS.statements(spans),
        *_LLM_CALLS.statements([s for s in spans if s.llm is not None]),
        *_LOGS.statements(logs),
        *_SCORES.statements(_latest_scores(scores) if len(scores) > 1 else scores),
    ]


class StoreMoved(OSError):
    """The store file was deleted or replaced since it was opened."""


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


WRITE_BUSY_MS = 500
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
"""SQLite's own default (1,000 pages of 4 KiB)."""
"""How long one write waits for another process's lock before the sink spills the batch
(and writes it later): a workflow call never waits on a locked file for long."""


class SQLiteWriter:
    """The sink's engine for a SQLite file: one attempt per call, a batch in one
    transaction. A locked file fails the call after ``WRITE_BUSY_MS``; a file deleted or
    replaced since it was opened fails it with ``StoreMoved`` (checked before and after
    the commit, so a batch is never counted as written into a removed file)."""

    def __init__(self, path: str, *, conn: sqlite3.Connection | None = None) -> None:
        self.path = path
        self.conn = connect(path) if conn is None else conn
        self.conn.execute(f"PRAGMA busy_timeout={WRITE_BUSY_MS}")
        # Checkpoints (copying the WAL into the database, with an fsync) are done by the
        # sink's background thread (``checkpoint``), not by the commit that happens to
        # cross the threshold on a workflow's thread.
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.execute(f"PRAGMA journal_size_limit={CHECKPOINT_WAL_BYTES * 4}")
        self.ident = _ident(path)

    def checkpoint(self) -> None:
        """Copy the WAL into the database when it has grown past SQLite's usual
        threshold (PASSIVE: never waits for readers or writers)."""
        try:
            wal_bytes = os.stat(self.path + "-wal").st_size
        except OSError:
            return
        if wal_bytes < CHECKPOINT_WAL_BYTES:
            return
        # On the writing connection, between its transactions (the caller holds the
        # sink's store lock): the next write then finds the WAL fully copied and starts
        # it again from the beginning. A checkpoint from another connection, racing a
        # steady writer, never sees the WAL complete and lets it grow without bound.
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None:
        self._transaction(_batch(runs, spans))
        # Checked after the commit (a batch written into a file deleted before it was
        # written, or meanwhile, is not stored: the caller spills it and reopens).
        self._check_file()

    def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run statements (``?`` parameters) in one transaction."""
        self._check_file()
        self._transaction(statements)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params))

    def _check_file(self) -> None:
        if _ident(self.path) != self.ident:
            raise StoreMoved(f"the store file {self.path} was deleted or replaced")

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement, params in statements:
                conn.execute(statement, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def in_transaction(self) -> bool:
        """A transaction is open on the connection (only ever seen from a signal handler
        that interrupted a write on the same thread)."""
        return self.conn.in_transaction

    def abandon(self) -> None:
        """Give up the transaction a write interrupted by a signal left open."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def cancel(self) -> None:
        """Abort the statement in progress (from another thread)."""
        self.conn.interrupt()

    def close(self) -> None:
        self.conn.close()
