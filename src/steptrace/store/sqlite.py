"""The embedded SQLite backend: WAL, batched writes, JSON1 reads.

``SQLiteBackend`` is used from two sides: the background writer owns one
connection and calls ``write``; a ``Store`` opened for queries owns another.
"""

from __future__ import annotations

import calendar
import datetime as dt
import operator
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from steptrace.record import RunState, SpanRecord
from steptrace.store import private
from steptrace.store.columns import (
    LLM_CALLS,
    LOGS,
    RUNS,
    SCORES,
    SPANS,
    Collapse,
    LogLine,
    ScoreLine,
    Table,
    conflict_clause,
)
from steptrace.store.migrations import SchemaTooNew, pending

BUSY_TIMEOUT_MS = 5000


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


# A batch reaches SQLite as ONE flat JSON array per table ([row0 part0, row0 part1, …,
# row1 part0, …]) that SQLite pivots back into rows: one statement per table per batch
# instead of one per row. The writer thread then enters SQLite (releasing the GIL)
# a handful of times per batch rather than once per row, and each GIL hand-back would
# otherwise interrupt the application thread.
#
# A row travels as [meta, json value, json value, …]: meta is a small array of the
# record's scalar attributes the table's columns are made of, each JSON column's value
# follows as a string. Pivoting a few parts a row is far cheaper than pivoting one per
# column, and extracting from meta parses only meta. Times travel as ns and are
# formatted by SQLite (off the GIL), not by the writer thread in Python.
def _rows(parts: int) -> str:
    if parts == 1:
        return "(SELECT key AS g, value AS c0 FROM json_each(?1))"
    cols = ", ".join(
        f"max(CASE key % {parts} WHEN {i} THEN value END) AS c{i}" for i in range(parts)
    )
    return f"(SELECT key / {parts} AS g, {cols} FROM json_each(?1) GROUP BY key / {parts})"


def _tuple_getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    get = operator.attrgetter(*names)
    if len(names) == 1:
        return lambda rec: (get(rec),)
    return get


class TableWrite:
    """How a batch's rows of one table (``columns.WRITTEN``) are sent and inserted: the
    parts of a record's row (``meta``, then ``values``, the JSON columns) and the one
    statement that inserts them all, with the table's conflict rule."""

    def __init__(self, table: Table) -> None:
        written = table.written
        meta = list(dict.fromkeys(s for c in written if not c.json for s in c.source))
        values = [c for c in written if c.json]
        self.meta = _tuple_getter(meta)
        self.values = _tuple_getter([c.source[0] for c in values]) if values else None

        def scalar(attr: str) -> str:
            return f"(c0 ->> {meta.index(attr)})"

        exprs: list[str] = []
        for c in written:
            if c.json:
                exprs.append(f"c{1 + values.index(c)}")
            elif c.form == "time":
                exprs.append(_iso(scalar(c.source[0])))  # NULL for a NULL time
            elif c.form == "duration":
                exprs.append(_ms(scalar(c.source[0]), scalar(c.source[1])))
            else:  # a flag travels as JSON true/false, which ->> gives as 1/0
                exprs.append(scalar(c.source[0]))
        # WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT.
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(c.name for c in written)})\n"
            f"SELECT {', '.join(exprs)}\nFROM {_rows(1 + len(values))} WHERE true ORDER BY g\n"
            f"{conflict_clause(table)}"
        )

    def add(self, flat: list[Any], rec: Any) -> None:
        flat.append(self.meta(rec))
        if self.values is not None:
            flat.extend(self.values(rec))


_RUNS, _SPANS, _LLM_CALLS, _LOGS, _SCORES = (
    TableWrite(t) for t in (RUNS, SPANS, LLM_CALLS, LOGS, SCORES)
)
_STATEMENTS = tuple(w.sql for w in (_RUNS, _SPANS, _LLM_CALLS, _LOGS, _SCORES))
_latest_runs = Collapse(RUNS)
_latest_scores = Collapse(SCORES)


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes):  # an encoded value travels as a JSON string
        return value.decode()
    raise TypeError(type(value).__name__)


def _batch(
    runs: Sequence[RunState], spans: Sequence[SpanRecord]
) -> tuple[list[Any], list[Any], list[Any], list[Any], list[Any]]:
    run_flat: list[Any] = []
    span_flat: list[Any] = []
    llm_flat: list[Any] = []
    log_flat: list[Any] = []
    score_flat: list[Any] = []
    # A run that started and ended in this batch needs only one row (the upsert would
    # merge the two; one row is half the work).
    for r in _latest_runs(runs) if len(runs) > 1 else runs:
        _RUNS.add(run_flat, r)
    for r in runs:
        if r.logs and r.end_ns is not None:
            for seq, entry in enumerate(r.logs):
                _LOGS.add(log_flat, LogLine(r.run_id, r.span_id, seq, *entry))
    add_span, add_llm = _SPANS.add, _LLM_CALLS.add
    scores: list[ScoreLine] = []
    for s in spans:
        add_span(span_flat, s)
        if s.llm is not None:
            add_llm(llm_flat, s)
        if s.logs:
            for seq, entry in enumerate(s.logs):
                _LOGS.add(log_flat, LogLine(s.run_id, s.span_id, seq, *entry))
        if s.scores:
            scores.extend(s.scores)
    for line in _latest_scores(scores) if len(scores) > 1 else scores:
        _SCORES.add(score_flat, line)
    return run_flat, span_flat, llm_flat, log_flat, score_flat


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
        docs = [
            orjson.dumps(flat, default=_as_text).decode() if flat else None
            for flat in _batch(runs, spans)
        ]
        self._transaction([(st, (doc,)) for st, doc in zip(_STATEMENTS, docs, strict=True) if doc])
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
