"""The store: where runs are written (by the background writer) and read (by ``Store``).

``open_writer(url)`` and ``Store.open(url)`` pick the backend by URL scheme:
a path or ``sqlite:///path`` is the embedded SQLite file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

from steptrace.config import ConfigError, get_config
from steptrace.record import RunState, SpanRecord
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.migrations import SchemaTooNew
from steptrace.store.model import RunRecord, SpanView, loads


class WriterBackend(Protocol):
    """What the background writer needs of a backend."""

    def write(self, runs: Sequence[RunState], spans: Sequence[SpanRecord]) -> None: ...

    def close(self) -> None: ...


def _scheme(url: str) -> str:
    if "://" not in url:
        return "sqlite"
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgres", "postgresql"):
        raise ConfigError(
            "the PostgreSQL store is not available in this version of steptrace; "
            "use a SQLite path or sqlite:/// URL for STEPTRACE_STORE"
        )
    if scheme != "sqlite":
        raise ConfigError(
            f"unknown store URL scheme {scheme!r} in {url!r}: use a file path or sqlite:///path"
        )
    return scheme


def open_writer(url: str) -> WriterBackend:
    """Open (creating and migrating if needed) the store at ``url`` for writing."""
    _scheme(url)
    path = sqlite_backend.path_from_url(url)
    conn = sqlite_backend.connect(path)
    try:
        sqlite_backend.migrate(conn)
    except SchemaTooNew as exc:
        raise ConfigError(str(exc)) from exc
    finally:
        conn.close()
    return sqlite_backend.SQLiteWriter(path)


class RunNotFound(LookupError):
    """No run matches the id or prefix given (or a prefix matches several)."""


_RUN_COLUMNS = (
    "run_id, workflow, status, trace_id, span_id, started_at, ended_at, duration_ms, "
    "input, output, error, tags, parent_trace_id, parent_span_id"
)


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        workflow=row[1],
        status=row[2],
        trace_id=row[3],
        span_id=row[4],
        started_at=row[5],
        ended_at=row[6],
        duration_ms=row[7],
        input=loads(row[8]),
        output=loads(row[9]),
        error=loads(row[10]),
        tags=loads(row[11]) or [],
        parent_trace_id=row[12],
        parent_span_id=row[13],
    )


class Store:
    """Read access to a store. ``Store.open()`` opens the configured one."""

    def __init__(self, url: str, conn: sqlite3.Connection) -> None:
        self.url = url
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str | None = None) -> Store:
        """Open the store at ``url`` (default: ``STEPTRACE_STORE``, else
        ``./.steptrace/steptrace.db``) for queries. Creates and migrates it if needed."""
        url = url or get_config().store_url()
        _scheme(url)
        path = sqlite_backend.path_from_url(url)
        if not os.path.exists(path):
            open_writer(url).close()
        conn = sqlite_backend.connect(path)
        return cls(url, conn)

    # -- plumbing -----------------------------------------------------------------
    def _same_process_flush(self) -> None:
        from steptrace.store import writer

        sink = writer.current_sink()
        if sink is not None and os.path.abspath(
            sqlite_backend.path_from_url(sink.url)
        ) == os.path.abspath(sqlite_backend.path_from_url(self.url)):
            sink.flush()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._same_process_flush()
        with self._lock:
            return list(self._conn.execute(sql, params))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------
    def runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        last: int = 20,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first, without their spans."""
        where: list[str] = []
        params: list[Any] = []
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs {clause} "
            "ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?",
            [*params, last, offset],
        )
        return [_run_from_row(r) for r in rows]

    def resolve(self, run_id: str) -> str:
        """The full id of the run whose id is ``run_id`` or starts with it."""
        rows = self._query("SELECT run_id FROM runs WHERE run_id = ?", [run_id])
        if rows:
            return str(rows[0][0])
        rows = self._query(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
            [run_id, run_id + "\U0010ffff"],
        )
        if not rows:
            raise RunNotFound(f"no run with id {run_id!r} in {self.url}")
        if len(rows) > 1:
            raise RunNotFound(f"run id prefix {run_id!r} is ambiguous: give more characters")
        return str(rows[0][0])

    def run(self, run_id: str) -> RunRecord:
        """The run with this id (or unambiguous id prefix), with all its spans."""
        full = self.resolve(run_id)
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [full])
        run = _run_from_row(rows[0])
        span_rows = self._query(
            "SELECT s.span_id, s.parent_span_id, s.kind, s.name, s.attempt, s.status, "
            "s.started_at, s.ended_at, s.duration_ms, s.input, s.output, s.error, s.step_key, "
            "s.input_hash, s.attributes, l.provider, l.model, l.input_tokens, l.output_tokens, "
            "l.cost_usd, l.params, l.cached_input_tokens, l.reasoning_tokens, l.finish_reason, "
            "l.response_model, l.time_to_first_chunk_ms, l.tool_calls, l.incomplete "
            "FROM spans s LEFT JOIN llm_calls l ON l.span_id = s.span_id "
            "WHERE s.run_id = ? ORDER BY s.started_at, s.rowid",
            [full],
        )
        logs: dict[str, list[dict[str, Any]]] = {}
        for span_id, ts, level, logger, message, exc_text in self._query(
            "SELECT span_id, ts, level, logger, message, exception FROM logs "
            "WHERE run_id = ? ORDER BY span_id, seq",
            [full],
        ):
            logs.setdefault(span_id, []).append(
                {"ts": ts, "level": level, "logger": logger, "message": message}
                | ({"exception": exc_text} if exc_text else {})
            )
        run.logs = logs.get(run.span_id, [])
        for r in span_rows:
            span = SpanView(
                span_id=r[0],
                parent_span_id=r[1],
                kind=r[2],
                name=r[3],
                attempt=r[4],
                status=r[5],
                started_at=r[6],
                ended_at=r[7],
                duration_ms=r[8],
                input=loads(r[9]),
                output=loads(r[10]),
                error=loads(r[11]),
                step_key=r[12],
                input_hash=r[13],
                attributes=loads(r[14]) or {},
                logs=logs.get(r[0], []),
            )
            if r[15] is not None:
                inp = span.input if isinstance(span.input, dict) else {}
                span.llm = {
                    "provider": r[15],
                    "model": r[16],
                    "messages": inp.get("messages"),
                    "params": loads(r[20]) or {},
                    "response": span.output,
                    "input_tokens": r[17],
                    "output_tokens": r[18],
                    "cost_usd": r[19],
                    "cached_input_tokens": r[21],
                    "reasoning_tokens": r[22],
                    "finish_reason": r[23],
                    "response_model": r[24],
                    "time_to_first_chunk_ms": r[25],
                    "tool_calls": loads(r[26]) or [],
                    "incomplete": bool(r[27]),
                }
            run.spans.append(span)
        return run


__all__ = ["RunNotFound", "RunRecord", "SpanView", "Store", "WriterBackend", "open_writer"]
