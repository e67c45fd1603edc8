"""The embedded SQLite backend: WAL, batched writes, JSON1 reads.

``SQLiteBackend`` is used from two sides: the background writer owns one
connection and calls ``write``; a ``Store`` opened for queries owns another.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from steptrace.record import LLMUsage, RunState, SpanRecord
from steptrace.store.migrations import pending

BUSY_TIMEOUT_MS = 5000


def iso_from_ns(ns: int) -> str:
    """ISO-8601 UTC with microseconds; sorts as text."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


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
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in one transaction each; returns the names applied."""
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


# JSON arrives as UTF-8 bytes and is stored as TEXT (JSON1 reads text).
_RUN_UPSERT = f"""
INSERT INTO runs (run_id, workflow, status, trace_id, span_id, parent_trace_id, parent_span_id,
                  started_at, ended_at, duration_ms, input, output, error, tags)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {_iso("?8")},
        CASE WHEN ?9 IS NULL THEN NULL ELSE {_iso("?9")} END,
        CASE WHEN ?9 IS NULL THEN NULL ELSE {_ms("?8", "?9")} END,
        CAST(?10 AS TEXT), CAST(?11 AS TEXT), CAST(?12 AS TEXT), CAST(?13 AS TEXT))
ON CONFLICT (run_id) DO UPDATE SET
  status = excluded.status, ended_at = excluded.ended_at, duration_ms = excluded.duration_ms,
  output = excluded.output, error = excluded.error,
  input = coalesce(excluded.input, runs.input), tags = coalesce(excluded.tags, runs.tags)
"""

_SPAN_INSERT = f"""
INSERT OR REPLACE INTO spans (span_id, run_id, parent_span_id, kind, name, step_key, attempt,
                   status, started_at, ended_at, duration_ms, input, output, error, attributes,
                   input_hash)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {_iso("?9")}, {_iso("?10")}, {_ms("?9", "?10")},
        CAST(?11 AS TEXT), CAST(?12 AS TEXT), CAST(?13 AS TEXT), CAST(?14 AS TEXT), ?15)
"""

_LLM_INSERT = """
INSERT OR REPLACE INTO llm_calls (span_id, run_id, provider, model, input_tokens, output_tokens,
                                  cost_usd, params)
VALUES (?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT))
"""

_LOG_INSERT = f"""
INSERT INTO logs (run_id, span_id, seq, ts, level, logger, message, exception)
VALUES (?1, ?2, ?3, {_iso("?4")}, ?5, ?6, ?7, ?8)
"""

_run_fields = operator.attrgetter(
    "run_id",
    "workflow",
    "status",
    "trace_id",
    "span_id",
    "parent_trace_id",
    "parent_span_id",
    "start_ns",
    "end_ns",
    "input",
    "output",
    "error",
    "tags",
)
_span_fields = operator.attrgetter(
    "span_id",
    "run_id",
    "parent_span_id",
    "kind",
    "name",
    "key",
    "attempt",
    "status",
    "start_ns",
    "end_ns",
    "input",
    "output",
    "error",
    "attributes",
    "input_hash",
)


def log_rows(
    run_id: str, span_id: str, logs: list[tuple[int, str, str, str, str | None]]
) -> list[tuple[Any, ...]]:
    return [(run_id, span_id, seq, *entry) for seq, entry in enumerate(logs)]


def _side_rows(
    runs: Sequence[RunState], spans: Sequence[SpanRecord]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    llm_out: list[tuple[Any, ...]] = []
    log_out: list[tuple[Any, ...]] = []
    for s in spans:
        llm: LLMUsage | None = s.llm
        if llm is not None:
            llm_out.append(
                (
                    s.span_id,
                    s.run_id,
                    llm.provider,
                    llm.model,
                    llm.input_tokens,
                    llm.output_tokens,
                    llm.cost_usd,
                    llm.params,
                )
            )
        if s.logs:
            log_out.extend(log_rows(s.run_id, s.span_id, s.logs))
    for r in runs:
        if r.logs and r.end_ns is not None:
            log_out.extend(log_rows(r.run_id, r.span_id, r.logs))
    return llm_out, log_out


class SQLiteWriter:
    """Writes batches of records in one transaction, retrying while the file is locked."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = connect(path)
        self._lock = threading.Lock()

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None:
        run_out = list(map(_run_fields, runs))
        span_out = list(map(_span_fields, spans))
        llm_out, log_out = _side_rows(runs, spans)
        delay = 0.01
        while True:
            try:
                with self._lock:
                    self._write_once(run_out, span_out, llm_out, log_out)
                return
            except sqlite3.OperationalError as exc:
                if not is_locked(exc):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _write_once(
        self,
        run_out: list[tuple[Any, ...]],
        span_out: list[tuple[Any, ...]],
        llm_out: list[tuple[Any, ...]],
        log_out: list[tuple[Any, ...]],
    ) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if run_out:
                conn.executemany(_RUN_UPSERT, run_out)
            if span_out:
                conn.executemany(_SPAN_INSERT, span_out)
            if llm_out:
                conn.executemany(_LLM_INSERT, llm_out)
            if log_out:
                conn.executemany(_LOG_INSERT, log_out)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()
