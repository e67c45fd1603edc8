"""The embedded SQLite backend: WAL, batched writes, JSON1 reads.

``SQLiteBackend`` is used from two sides: the background writer owns one
connection and calls ``write``; a ``Store`` opened for queries owns another.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
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


_RUN_UPSERT = """
INSERT INTO runs (run_id, workflow, status, trace_id, span_id, parent_trace_id, parent_span_id,
                  started_at, ended_at, duration_ms, input, output, error, tags)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
  status = excluded.status, ended_at = excluded.ended_at, duration_ms = excluded.duration_ms,
  output = excluded.output, error = excluded.error,
  input = coalesce(excluded.input, runs.input), tags = coalesce(excluded.tags, runs.tags)
"""

_SPAN_INSERT = """
INSERT OR REPLACE INTO spans (span_id, run_id, parent_span_id, kind, name, step_key, attempt,
                   status, started_at, ended_at, duration_ms, input, output, error, attributes,
                   input_hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_LLM_INSERT = """
INSERT OR REPLACE INTO llm_calls (span_id, run_id, provider, model, input_tokens, output_tokens,
                                  cost_usd, params)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

_LOG_INSERT = """
INSERT INTO logs (run_id, span_id, seq, ts, level, logger, message, exception)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


def run_row(run: RunState) -> tuple[Any, ...]:
    end = run.end_ns
    return (
        run.run_id,
        run.workflow,
        run.status,
        run.trace_id,
        run.span_id,
        run.parent_trace_id,
        run.parent_span_id,
        iso_from_ns(run.start_ns),
        None if end is None else iso_from_ns(end),
        None if end is None else (end - run.start_ns) / 1e6,
        _text(run.input),
        _text(run.output),
        _text(run.error),
        _text(run.tags),
    )


def span_rows(
    spans: Iterable[SpanRecord],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    span_out: list[tuple[Any, ...]] = []
    llm_out: list[tuple[Any, ...]] = []
    log_out: list[tuple[Any, ...]] = []
    for s in spans:
        span_out.append(
            (
                s.span_id,
                s.run_id,
                s.parent_span_id,
                s.kind,
                s.name,
                s.key,
                s.attempt,
                s.status,
                iso_from_ns(s.start_ns),
                iso_from_ns(s.end_ns),
                (s.end_ns - s.start_ns) / 1e6,
                _text(s.input),
                _text(s.output),
                _text(s.error),
                _text(s.attributes),
                s.input_hash,
            )
        )
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
                    _text(llm.params),
                )
            )
        if s.logs:
            log_out.extend(log_rows(s.run_id, s.span_id, s.logs))
    return span_out, llm_out, log_out


def log_rows(
    run_id: str, span_id: str, logs: list[tuple[int, str, str, str, str | None]]
) -> list[tuple[Any, ...]]:
    return [
        (run_id, span_id, seq, iso_from_ns(ts), level, logger, message, exc_text)
        for seq, (ts, level, logger, message, exc_text) in enumerate(logs)
    ]


class SQLiteWriter:
    """Writes batches of records in one transaction, retrying while the file is locked."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = connect(path)
        self._lock = threading.Lock()

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None:
        span_out, llm_out, log_out = span_rows(spans)
        run_out = [run_row(r) for r in runs]
        for r in runs:
            if r.logs and r.end_ns is not None:
                log_out.extend(log_rows(r.run_id, r.span_id, r.logs))
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
