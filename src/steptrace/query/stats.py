"""Per-step statistics over the last N runs (``Store.step_stats``, ``steptrace stats``):
which step is slow, fails, retries, spends tokens.

Step attempts are read per step name from an index ordered by (name, start time):
every attempt of a run in the window starts at or after the window's oldest run
did, so the window's attempts of a step are one index range — read without
visiting runs one by one. The range also holds attempts of runs *outside* the
window that overlap it in time (runs still going when the window's oldest run
started, runs of other workflows, runs tied at the cut): those runs are listed
first and left out, or, when they outnumber the window, the attempts are
checked against the window's runs instead. Durations travel as integer
nanoseconds (SQLite formats integers far faster than doubles, and ns / 1e6 gives
back exactly the stored ``duration_ms``). Windows of 2,000 runs and more are read
as two halves on two connections at once. LLM calls are attributed to the step
attempt they were made in (``llm_calls.parent_span_id``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypedDict

import orjson

from steptrace.query.distribution import Reader, Row, check_last, percentile, runs_window
from steptrace.store.dialect import Dialect

PARALLEL_MIN_RUNS = 2000
"""Windows at least this large are read as two halves at the same time."""


class StepStats(TypedDict):
    step: str
    kind: str
    count: int
    """Occurrences (calls) of the step."""
    attempts: int
    failed: int
    """Occurrences whose final attempt failed."""
    retried: int
    """Occurrences with more than one attempt."""
    failure_rate: float
    retry_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    total_ms: float
    """Over every attempt: the time spent in the step."""
    llm_calls: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    """Summed over the LLM calls made directly inside the step's attempts (None when
    there were none, or none had a known cost)."""


def _names_cte() -> str:
    """The distinct step names, one index seek each (a "loose index scan")."""
    return (
        "names(name) AS (SELECT min(name) FROM spans WHERE step_key IS NOT NULL "
        "UNION ALL SELECT (SELECT min(s.name) FROM spans s WHERE s.step_key IS NOT NULL "
        "AND s.name > names.name) FROM names WHERE names.name IS NOT NULL)"
    )


def _steps_sql(d: Dialect, runs_filter: str) -> str:
    """Per step name, its attempts started in [?, ?) and passing ``runs_filter``: one
    JSON array [attempts, first attempts, second attempts, failed attempts, kind,
    [duration ns…]]."""
    packed = d.json_row(
        "count(*)",
        d.count_if("s.attempt = 1"),
        d.count_if("s.attempt = 2"),
        d.count_if("s.status <> 'succeeded'"),
        "max(s.kind)",
        d.group_json_array(d.ms_to_ns("s.duration_ms")),
    )
    return (
        f"WITH RECURSIVE {_names_cte()} "
        f"SELECT n.name, (SELECT {packed} FROM spans s WHERE s.name = n.name "
        "AND s.step_key IS NOT NULL AND s.started_at >= ? AND s.started_at < ? "
        f"{runs_filter}) FROM names n WHERE n.name IS NOT NULL"
    )


def _unpack_steps(rows: list[Row]) -> list[tuple[str, list[Any]]]:
    """Decode each name's packed row and sort its durations (on the fetching thread)."""
    out = []
    for name, packed in rows:
        values = orjson.loads(packed) if isinstance(packed, str | bytes) else packed
        if not values or not values[0]:
            continue
        durations = [x for x in values[5] if x is not None]  # None: no end time
        durations.sort()
        out.append((name, [*values[:5], durations]))
    return out


def step_stats(db: Reader, workflow: str | None = None, last: int = 1000) -> list[StepStats]:
    """Per step name over the last ``last`` runs (of ``workflow``, else of any): count,
    failures, retries, duration percentiles over attempts, LLM tokens and cost.
    Ordered by total time spent, most first."""
    check_last(last)
    d = db.dialect
    window, params = runs_window(d, workflow)
    window_params = [*params, last]
    edge, _ = runs_window(d, workflow, columns="started_at")
    ((n_runs, cutoff),) = db.rows(
        f"SELECT count(*), min(w.started_at) FROM ({edge}) w", window_params
    )
    if not n_runs:
        return []
    outsiders = _outsiders(db, workflow, window, window_params, n_runs, cutoff)
    if len(outsiders) <= n_runs:
        marks = ", ".join("?" * len(outsiders))
        runs_filter = f"AND s.run_id NOT IN ({marks})" if outsiders else ""
        filter_params: list[Any] = list(outsiders)
    else:  # most runs in the range are not the window's: check membership instead
        runs_filter = f"AND s.run_id IN ({window})"
        filter_params = window_params
    end = "\uffff"  # after any timestamp
    if n_runs >= PARALLEL_MIN_RUNS:
        (mid,) = db.rows(
            f"SELECT started_at FROM runs {_where(workflow)}"
            "ORDER BY started_at DESC, run_id DESC LIMIT 1 OFFSET ?",
            [*params, n_runs // 2],
        )[0]
        ranges = [(cutoff, mid), (mid, end)]
        half = (n_runs + 1) // 2
        slices = [(half, 0), (n_runs - half, half)]
    else:
        ranges = [(cutoff, end)]
        slices = [(n_runs, 0)]
    steps_sql = _steps_sql(d, runs_filter)
    llm_sql = _llm_sql(d, window)
    parts = db.rows_many(
        [(steps_sql, [lo, hi, *filter_params]) for lo, hi in ranges], _unpack_steps
    )
    llm_parts = db.rows_many([(llm_sql, [*params, n, skip]) for n, skip in slices], list)
    merged: dict[str, _StepTotals] = {}
    for part in parts:
        for name, (attempts, first, second, failed_attempts, kind, durations) in part:
            totals = merged.setdefault(name, _StepTotals())
            totals.kinds[kind] += attempts
            totals.attempts += attempts
            totals.occurrences += first
            totals.retried += second
            totals.failed_attempts += failed_attempts
            totals.durations_ns.extend(durations)
    for rows in llm_parts:
        for name, calls, tokens_in, tokens_out, cost, costed in rows:
            totals = merged.setdefault(name, _StepTotals())
            totals.llm_calls += calls
            totals.input_tokens = _add(totals.input_tokens, tokens_in)
            totals.output_tokens = _add(totals.output_tokens, tokens_out)
            totals.cost_usd = _add(totals.cost_usd, cost if costed else None)
    out = [totals.stats(name) for name, totals in merged.items() if totals.attempts]
    out.sort(key=lambda s: (-s["total_ms"], s["step"]))
    return out


def _where(workflow: str | None) -> str:
    return "WHERE workflow = ? " if workflow is not None else ""


def _outsiders(
    db: Reader,
    workflow: str | None,
    window: str,
    window_params: list[Any],
    n_runs: int,
    cutoff: str,
) -> list[str]:
    """Runs outside the window that may have step attempts starting at or after
    ``cutoff``: runs started before it that had not ended by then (or never did), and
    runs started since that the window does not hold (other workflows, ties)."""
    outsiders = [
        r[0]
        for r in db.rows(
            "SELECT run_id FROM runs WHERE (ended_at >= ? OR ended_at IS NULL) "
            f"AND {db.dialect.unindexed('started_at')} < ?",
            [cutoff, cutoff],
        )
    ]
    ((since,),) = db.rows("SELECT count(*) FROM runs WHERE started_at >= ?", [cutoff])
    if since > n_runs:
        outsiders += [
            r[0]
            for r in db.rows(
                f"SELECT run_id FROM runs WHERE started_at >= ? AND run_id NOT IN ({window})",
                [cutoff, *window_params],
            )
        ]
    return outsiders


def _llm_sql(d: Dialect, window: str) -> str:
    return (
        f"WITH r AS MATERIALIZED (SELECT run_id FROM ({window} OFFSET ?) w ORDER BY run_id) "
        "SELECT p.name, count(*), sum(l.input_tokens), sum(l.output_tokens), "
        "sum(l.cost_usd), count(l.cost_usd) "
        f"FROM r {d.ordered_join} llm_calls l ON l.run_id = r.run_id "
        f"{d.ordered_join} spans p ON p.run_id = l.run_id "
        "AND p.span_id = l.parent_span_id AND p.step_key IS NOT NULL "
        "GROUP BY p.name"
    )


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


class _StepTotals:
    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.attempts = 0
        self.occurrences = 0
        self.retried = 0
        self.failed_attempts = 0
        self.durations_ns: list[int] = []
        self.llm_calls = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cost_usd: float | None = None

    def stats(self, name: str) -> StepStats:
        # Percentiles of the integer ns (cheap to sort), converted back to ms at the end.
        ns = self.durations_ns
        ns.sort()  # sorted runs from each half: a merge
        total_ns = sum(ns)
        occurrences = self.occurrences
        # Every attempt but the last of an occurrence failed (that is why it was retried).
        failed = max(0, self.failed_attempts - (self.attempts - occurrences))
        return {
            "step": name,
            "kind": self.kinds.most_common(1)[0][0],
            "count": occurrences,
            "attempts": self.attempts,
            "failed": failed,
            "retried": self.retried,
            "failure_rate": failed / occurrences if occurrences else 0.0,
            "retry_rate": self.retried / occurrences if occurrences else 0.0,
            "p50_ms": _ms(percentile(ns, 0.5)),
            "p95_ms": _ms(percentile(ns, 0.95)),
            "p99_ms": _ms(percentile(ns, 0.99)),
            "max_ms": ns[-1] / 1e6 if ns else None,
            "mean_ms": total_ns / len(ns) / 1e6 if ns else None,
            "total_ms": total_ns / 1e6,
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }
