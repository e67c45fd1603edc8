"""Retention: delete old runs with everything they own (``steptrace prune``).

Runs are chosen by start time (and optionally workflow, keeping failed ones) and
deleted a batch at a time — their logs, LLM calls, spans, then the runs — one
transaction per batch, so writers in other processes wait at most one batch's
delete, never the whole prune. The SQL is the same on both engines; SQLite's
``database is locked`` is waited out, as the writer does.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from steptrace.errors import ConfigError
from steptrace.query.where import parse_time
from steptrace.store import admin
from steptrace.store.columns import RUNS, WRITTEN
from steptrace.store.schema import missing, missing_store_message, prepare_schema

BATCH_RUNS = 500
T = TypeVar("T")

_OWNED = tuple(t.name for t in reversed(WRITTEN) if t is not RUNS)
"""What a run owns (scores, logs, LLM calls, spans): the tables a batch writes besides
runs, deleted in the reverse of the order they are written."""


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
    scores: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _delete(ids: list[str], execute: admin.Execute) -> dict[str, int]:
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
    ``keep_failed`` — with their spans, LLM calls, logs and scores, ``batch_runs`` runs per
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
    with admin.connect(url) as conn:
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
