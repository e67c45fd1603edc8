"""Small questions a run listing asks besides the runs themselves: each run's step,
attempt, token and cost totals (``Store.run_totals``) and the workflow names in the
store (``Store.workflows``); and the store's own state (``Store.status``, ``steptrace
status``). Portable SQL over the covering indexes of migration
``0003_query``, so a page of runs costs two index range reads whatever the store's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from steptrace.query.distribution import Reader
from steptrace.record import stored_name


class RunTotals(TypedDict):
    steps: int
    """Step and tool calls (step keys), retries not counted again."""
    attempts: int
    """Step and tool attempts."""
    llm_calls: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    """Of the LLM calls whose cost is known (None when none is)."""


def run_totals(reader: Reader, run_ids: Sequence[str]) -> dict[str, RunTotals]:
    """Totals of each run in ``run_ids`` (runs without spans get zeros)."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, RunTotals] = {
        r: {
            "steps": 0,
            "attempts": 0,
            "llm_calls": 0,
            "input_tokens": None,
            "output_tokens": None,
            "cost_usd": None,
        }
        for r in ids
    }
    if not ids:
        return out
    marks = ", ".join("?" for _ in ids)
    for run_id, steps, attempts in reader.rows(
        "SELECT run_id, count(DISTINCT step_key), count(*) FROM spans "
        f"WHERE run_id IN ({marks}) AND step_key IS NOT NULL GROUP BY run_id",
        ids,
    ):
        out[run_id]["steps"] = int(steps)
        out[run_id]["attempts"] = int(attempts)
    for run_id, calls, tokens_in, tokens_out, cost in reader.rows(
        "SELECT run_id, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) "
        f"FROM llm_calls WHERE run_id IN ({marks}) GROUP BY run_id",
        ids,
    ):
        totals = out[run_id]
        totals["llm_calls"] = int(calls)
        totals["input_tokens"] = None if tokens_in is None else int(tokens_in)
        totals["output_tokens"] = None if tokens_out is None else int(tokens_out)
        totals["cost_usd"] = None if cost is None else float(cost)
    return out


def workflows(reader: Reader) -> list[str]:
    """The workflow names in the store, sorted. A skip scan of the ``(workflow,
    started_at)`` index: one index seek per name, however many runs each has."""
    rows = reader.rows(
        "WITH RECURSIVE w(name) AS ("
        "SELECT min(workflow) FROM runs "
        "UNION ALL SELECT (SELECT min(workflow) FROM runs WHERE workflow > w.name) "
        "FROM w WHERE w.name IS NOT NULL) "
        "SELECT name FROM w WHERE name IS NOT NULL"
    )
    return [str(r[0]) for r in rows]


class RunWindow(TypedDict):
    runs: int
    """How many runs the window holds (at most the ``last`` asked for)."""
    first_started_at: str | None
    last_started_at: str | None


def run_window(reader: Reader, workflow: str | None = None, last: int = 1000) -> RunWindow:
    """The last ``last`` runs (of ``workflow``) as ``step_stats`` reads them: how many
    there are and when the oldest and the newest started."""
    from steptrace.query.distribution import check_last, runs_window

    check_last(last)
    edge, params = runs_window(reader.dialect, workflow, columns="started_at")
    ((n, first, newest),) = reader.rows(
        f"SELECT count(*), min(w.started_at), max(w.started_at) FROM ({edge}) w",
        [*params, last],
    )
    return {"runs": int(n), "first_started_at": first, "last_started_at": newest}


def step_names(reader: Reader, workflow: str | None = None) -> list[str]:
    """The names of the steps and tools recorded (in runs of ``workflow``), sorted: what
    an error about an unknown step lists."""
    sql = "SELECT DISTINCT s.name FROM spans s WHERE s.step_key IS NOT NULL"
    params: list[Any] = []
    if workflow is not None:
        sql += " AND EXISTS (SELECT 1 FROM runs r WHERE r.run_id = s.run_id AND r.workflow = ?)"
        params.append(stored_name(workflow))
    return sorted(str(r[0]) for r in reader.rows(sql, params))


def step_durations(
    reader: Reader, step: str, workflow: str | None = None, last: int = 1000
) -> list[float]:
    """Durations (ms) of the last ``last`` finished attempts of ``step`` (of runs of
    ``workflow`` when given), newest first: the index on (name, start time) walked
    backwards, stopping after ``last`` rows."""
    sql = (
        "SELECT s.duration_ms FROM spans s "
        "WHERE s.name = ? AND s.step_key IS NOT NULL AND s.duration_ms IS NOT NULL"
    )
    params: list[Any] = [stored_name(step)]
    if workflow is not None:
        sql += " AND EXISTS (SELECT 1 FROM runs r WHERE r.run_id = s.run_id AND r.workflow = ?)"
        params.append(stored_name(workflow))
    sql += " ORDER BY s.started_at DESC LIMIT ?"
    params.append(last)
    return [float(r[0]) for r in reader.rows(sql, params)]


class StoreStatus(TypedDict):
    runs: dict[str, int]
    """Runs by status."""
    schema: str | None
    """The last migration applied."""
    writers: list[dict[str, Any]]
    """Live writer processes: ``owner``, ``heartbeat_at``, newest heartbeat first."""
    reports: list[dict[str, Any]]
    """The latest rows of ``store_health`` (write trouble reports), newest first."""


_HEALTH_COLUMNS = (
    "reported_at",
    "process",
    "store",
    "interval_s",
    "written",
    "spilled",
    "replayed",
    "quarantined",
    "lost",
    "sanitized",
    "last_error",
)


def store_status(reader: Reader, reports: int = 5) -> StoreStatus:
    """Runs by status, the schema's last migration, live writers and the last
    ``reports`` write-trouble reports."""
    runs = {
        str(status): int(n)
        for status, n in reader.rows(
            "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status"
        )
    }
    schema = [str(r[0]) for r in reader.rows("SELECT name FROM _migrations")]
    writers = [
        {"owner": owner, "heartbeat_at": heartbeat}
        for owner, heartbeat in reader.rows(
            "SELECT owner, heartbeat_at FROM owners WHERE ended_at IS NULL "
            "ORDER BY heartbeat_at DESC"
        )
    ]
    recent = [
        dict(zip(_HEALTH_COLUMNS, row, strict=True))
        for row in reader.rows(
            f"SELECT {', '.join(_HEALTH_COLUMNS)} FROM store_health "
            "ORDER BY reported_at DESC LIMIT ?",
            [reports],
        )
    ]
    return {
        "runs": runs,
        "schema": max(schema) if schema else None,
        "writers": writers,
        "reports": recent,
    }
