"""Questions across runs: the distribution of a step's field (``Store.distribution``,
``steptrace dist``), the expression indexes that serve it, and what the question
modules share (``Reader``, the runs window, percentiles).

The other questions live next door: ``steptrace.query.stats`` (per-step statistics),
``steptrace.query.diff`` and ``steptrace.query.compare`` (run against run),
``steptrace.query.export``. Each takes a ``Reader`` (what a ``Store`` lends its query
modules) and returns plain JSON-shaped data, exactly what the command prints
with ``--json``.

Conventions shared by every question:

- a *step* is a ``step`` or ``tool`` span (those with a ``step_key``); an
  *occurrence* is one call of it in a run (``name#n``), made of one or more
  attempts, and its *final attempt* is the one with the highest number;
- "the last N runs" are ordered like ``steptrace runs``: by start time, newest
  first (ties by run id) — except for a distribution, whose runs are ranked by
  when they last executed the step;
- percentiles interpolate linearly between the closest ranks (NumPy's default).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypedDict, TypeVar

import orjson

from steptrace.errors import QueryError
from steptrace.query.indexes import indexable
from steptrace.query.where import format_path, score_name, step_field
from steptrace.record import stored_name
from steptrace.store.dialect import Dialect, Sql
from steptrace.store.model import RunRecord

Row = tuple[Any, ...]
T = TypeVar("T")


class Reader(Protocol):
    """What the query modules need of a store."""

    dialect: Dialect

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """All rows of a query."""
        ...

    def rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> list[Row]:
        """Rows of a query whose first column is a run id, up to (not including) the
        first row of the ``runs + 1``-th run; the rest of the query is never computed."""
        ...

    def rows_many(
        self, queries: Sequence[tuple[str, Sequence[Any]]], transform: Callable[[list[Row]], T]
    ) -> list[T]:
        """``transform`` of the rows of each of independent queries, which may run (and
        be transformed) at the same time, on other threads."""
        ...

    def run(self, run_id: str) -> RunRecord:
        """The run with its spans (``Store.run``)."""
        ...


# --- shared helpers -----------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, interpolating linearly; None if empty."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def check_last(last: int, name: str = "last") -> int:
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise QueryError(f"{name} must be a positive number of runs, not {last!r}")
    return last


def runs_window(
    d: Dialect,
    workflow: str | None,
    *,
    status: str | None = None,
    exclude: bool = False,
    columns: str = "run_id",
) -> tuple[str, list[Any]]:
    """SQL for the ids (or ``columns``) of the last N runs (N is the last ``?``), newest
    first; with ``exclude`` a further ``?`` names a run to leave out."""
    conds: list[str] = []
    params: list[Any] = []
    if workflow is not None:
        conds.append("workflow = ?")
        params.append(stored_name(workflow))
    if status is not None:
        conds.append("status = ?")
        params.append(status)
    if exclude:
        conds.append("run_id <> ?")
    where = f"WHERE {' AND '.join(conds)} " if conds else ""
    return (
        f"SELECT {columns} FROM runs {where}ORDER BY started_at DESC, run_id DESC LIMIT ?",
        params,
    )


def json_key(value: Any) -> str:
    """A canonical JSON text for grouping equal values (object keys sorted)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _decode_key(raw: str | bytes) -> str:
    """The grouping key of a value read with ``Dialect.json_at`` (JSON text): scalars
    as they are, objects and arrays re-serialised with sorted keys."""
    if isinstance(raw, str) and raw[:1] not in ("{", "["):
        return raw
    return json_key(orjson.loads(raw))


# --- distribution ---------------------------------------------------------------------


class ValueCount(TypedDict):
    value: Any
    count: int
    share: float


class NumericSummary(TypedDict):
    count: int
    min: float
    p50: float
    p95: float
    max: float
    mean: float


class Distribution(TypedDict):
    step: str
    field: str
    workflow: str | None
    last: int
    runs: int
    """Runs counted: the ``last`` runs that executed the step most recently (fewer if
    the store holds fewer)."""
    occurrences: int
    """Final attempts counted (a run may call the step more than once)."""
    missing: int
    """Occurrences whose output (or input) lacks the field."""
    values: list[ValueCount]
    numeric: NumericSummary | None
    """Over the numeric values (booleans excepted), when there are any."""


def _value_sql(d: Dialect, step: str, field: str) -> tuple[str, Sql]:
    """The field's column and the SQL reading it. On SQLite the path is spelled out
    when it can be (``indexable``), so that a field index made for it serves the query
    (SQLite matches an index expression word for word); otherwise, and always on
    PostgreSQL (whose planner folds a bound value into the plan), it is a parameter."""
    column, path = step_field(field)
    literal = d.name == "sqlite" and indexable(stored_name(step), path)
    return column, d.json_at(f"s.{column}", path, literal=literal)


def distribution_sql(
    d: Dialect, step: str, field: str, workflow: str | None = None
) -> tuple[str, list[Any]]:
    """The query ``distribution`` walks: the step's attempts newest first (an index on
    (name, started_at)), each as its run id, its step key and the field's value (JSON
    text). The key is NULL for the first attempt of the step's first call
    (``step#0``), the row that shows a run whole: most rows are such, and a NULL costs
    Python less to receive than a text. The step name is a parameter (both engines use
    a partial index made for a name with it)."""
    _, value = _value_sql(d, step, field)
    name = stored_name(step)
    columns = (
        "s.run_id, CASE WHEN s.attempt = 1 AND s.step_key = ? THEN NULL ELSE s.step_key END, "
        f"{value.text}"
    )
    params = [f"{name}#0", *value.params, name]
    if workflow is None:
        return (
            f"SELECT {columns} FROM spans s "
            "WHERE s.name = ? AND s.step_key IS NOT NULL ORDER BY s.started_at DESC"
        ), params
    return (
        f"SELECT {columns} FROM spans s {d.ordered_join} runs r ON r.run_id = s.run_id "
        "WHERE s.name = ? AND s.step_key IS NOT NULL AND r.workflow = ? "
        "ORDER BY s.started_at DESC"
    ), [*params, stored_name(workflow)]


def distribution(
    db: Reader, step: str, field: str, last: int = 1000, workflow: str | None = None
) -> Distribution:
    """The distribution of ``field`` of ``step``'s output (``input.`` prefix: its input)
    over the last ``last`` runs that executed the step (by when they last executed it),
    counting the final attempt of each occurrence; most common value first."""
    check_last(last)
    d = db.dialect
    column, value = _value_sql(d, step, field)
    sql, params = distribution_sql(d, step, field, workflow)
    rows = db.rows_of_runs(sql, params, last)
    # Newest first: the first row of an occurrence is its final attempt. A run's first
    # call of the step starts before its other attempts of it, so a run whose first
    # attempt of ``step#0`` (key NULL) was walked past is complete; one whose attempts
    # interleave with another run's (concurrent runs) may have older attempts left
    # behind the stopping point: read those runs' attempts whole. Most rows are such a
    # first attempt, final unless a later attempt of its call came first: they are
    # taken by comprehensions, and values counted by their text (this loop was a third
    # of a distribution's time).
    first_key = f"{stored_name(step)}#0"
    plain = [row for row in rows if row[1] is None]
    complete = {row[0] for row in plain}
    others = {(row[0], row[1]): row[2] for row in reversed(rows) if row[1] is not None}
    retried = {run_id for run_id, key in others if key == first_key}
    if len(complete) < len(plain):  # a run with two first attempts: the newest counts
        plain = list({row[0]: row for row in reversed(plain)}.values())
    firsts = [row[2] for row in plain if row[0] not in retried]
    partial = sorted({run_id for run_id, _ in others} - complete)
    if partial:
        marks = ", ".join("?" * len(partial))
        others = {k: raw for k, raw in others.items() if k[0] in complete}
        for run_id, key, _attempt, raw in sorted(
            db.rows(
                f"SELECT s.run_id, s.step_key, s.attempt, {value.text} FROM spans s "
                f"WHERE s.name = ? AND s.step_key IS NOT NULL AND s.run_id IN ({marks})",
                [*value.params, stored_name(step), *partial],
            ),
            key=lambda r: -r[2],
        ):
            if (run_id, key) not in others:
                others[(run_id, key)] = raw
    texts = Counter(firsts)
    texts.update(others.values())
    missing = texts.pop(None, 0)
    counts: Counter[str] = Counter()
    for raw, count in texts.items():
        if type(raw) is str and raw[:1] not in ("{", "["):
            counts[raw] += count
        else:
            counts[_decode_key(raw)] += count
    occurrences = len(firsts) + len(others)
    values: list[ValueCount] = []
    numbers: list[float] = []
    for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        value = orjson.loads(key)
        values.append({"value": value, "count": count, "share": count / occurrences})
        if isinstance(value, int | float) and not isinstance(value, bool):
            numbers.extend([value] * count)
    numeric = numeric_summary(numbers)
    shown = format_path(step_field(field)[1])
    if column == "output" and score_name(shown) is not None:  # not to be read as a score
        shown = f"output.{shown}"
    return {
        "step": step,
        "field": f"input.{shown}" if column == "input" else shown,
        "workflow": workflow,
        "last": last,
        "runs": len(complete.union(run_id for run_id, _ in others)),
        "occurrences": occurrences,
        "missing": missing,
        "values": values,
        "numeric": numeric,
    }


def numeric_summary(numbers: list[float]) -> NumericSummary | None:
    """Count, min, p50, p95, max and mean of ``numbers`` (sorted here); None if empty."""
    if not numbers:
        return None
    numbers.sort()
    return {
        "count": len(numbers),
        "min": numbers[0],
        "p50": _number(percentile(numbers, 0.5)),
        "p95": _number(percentile(numbers, 0.95)),
        "max": numbers[-1],
        "mean": math.fsum(numbers) / len(numbers),
    }


def _number(value: float | None) -> float:
    assert value is not None
    return value
