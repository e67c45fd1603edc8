"""Questions about scores across runs: per step and name, how a score came out
(``Store.score_stats``, ``steptrace stats --scores``), and the distribution of one
score (``Store.distribution(step, "score.NAME")``, ``steptrace dist STEP score.NAME``).

A numeric score is summarised by its values, a boolean one by its values 1 and 0 (its
mean is the share of true), a categorical one by its labels. Every score counts: a
target scored by a human and by a judge counts twice (``source`` picks one). The
run's own scores (``span_id`` NULL) have no step: ``step`` None in the results, the
step name ``run`` in the distribution's question (``dist run score.NAME``), as in
``--where run.…``.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from steptrace.query.distribution import (
    Distribution,
    Reader,
    ValueCount,
    check_last,
    json_key,
    numeric_summary,
    runs_window,
)
from steptrace.record import stored_name
from steptrace.store.dialect import Dialect

RUN_STEP = "run"
"""The step name that means the run's own scores in ``score_distribution``."""


class LabelCount(TypedDict):
    label: str
    count: int
    share: float


class ScoreStats(TypedDict):
    step: str | None
    """The scored spans' step, None for the run's own scores."""
    name: str
    kind: str
    """numeric, boolean or categorical (a name scored with two kinds has two rows)."""
    count: int
    """Scores counted (attempts or runs scored, once per source)."""
    mean: float | None
    """Of the values (a boolean's: the share of true); None for a categorical score
    (``score_distribution`` has a score's percentiles)."""
    labels: list[LabelCount]
    """The labels given (a categorical score's categories), most common first."""


def _filters(
    d: Dialect, step: str | None, name: str | None, source: str | None, windowed: bool
) -> tuple[list[str], list[Any]]:
    """Conditions on ``scores sc`` for the filters given; ``windowed``: the scores are
    read run by run, so the step is checked, not looked up in its index."""
    conds: list[str] = []
    params: list[Any] = []
    for column, wanted in (("step", step), ("name", name), ("source", source)):
        if wanted is not None:
            expr = f"sc.{column}"
            conds.append(f"{d.unindexed(expr) if windowed and column == 'step' else expr} = ?")
            params.append(stored_name(wanted))
    return conds, params


def score_stats(
    db: Reader,
    workflow: str | None = None,
    last: int | None = 1000,
    *,
    step: str | None = None,
    name: str | None = None,
    source: str | None = None,
) -> list[ScoreStats]:
    """Per step and score name (and kind), over the scores of the last ``last`` runs
    (of ``workflow``; every run when ``last`` is None): how many, the mean of the
    values, the labels. ``step``, ``name``, ``source`` keep only those scores.
    The run's own scores come first (``step`` None), then by step and name."""
    conds, params = _filters(db.dialect, step, name, source, windowed=last is not None)
    if last is not None:
        window, window_params = runs_window(db.dialect, workflow)
        conds.append(f"sc.run_id IN ({window})")
        params.extend([*window_params, check_last(last)])
    elif workflow is not None:
        conds.append("sc.run_id IN (SELECT run_id FROM runs WHERE workflow = ?)")
        params.append(stored_name(workflow))
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    # Grouped by what the filters leave open (fewer columns to compare: faster).
    fixed = {"step": step and stored_name(step), "name": name and stored_name(name)}
    group = ", ".join(
        [*(f"sc.{c}" for c, value in fixed.items() if value is None), "sc.kind", "sc.label"]
    )
    rows = db.rows(
        f"SELECT {group}, count(*), sum(sc.value) FROM scores sc{where} GROUP BY {group}",
        params,
    )
    groups: dict[tuple[Any, ...], _Totals] = {}
    for row in rows:
        values = list(row)
        s = fixed["step"] if fixed["step"] is not None else values.pop(0)
        n = fixed["name"] if fixed["name"] is not None else values.pop(0)
        kind, label, count, total = values
        groups.setdefault((s, n, kind), _Totals()).add(label, int(count), total)
    out = [group.stats(*key) for key, group in groups.items()]
    out.sort(key=lambda r: (r["step"] is not None, r["step"] or "", r["name"], r["kind"]))
    return out


class _Totals:
    """One step's scores of one name and kind, added up a label at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: list[float] = []
        self.labels: list[LabelCount] = []

    def add(self, label: str | None, count: int, total: Any) -> None:
        self.count += count
        if total is not None:
            self.sums.append(float(total))
        if label is not None:
            self.labels.append({"label": label, "count": count, "share": 0.0})

    def stats(self, step: str | None, name: str, kind: str) -> ScoreStats:
        for entry in self.labels:
            entry["share"] = entry["count"] / self.count
        self.labels.sort(key=lambda e: (-e["count"], e["label"]))
        numeric = kind != "categorical" and bool(self.sums)
        return {
            "step": step,
            "name": name,
            "kind": kind,
            "count": self.count,
            "mean": math.fsum(self.sums) / self.count if numeric else None,
            "labels": self.labels,
        }


def score_distribution(
    db: Reader,
    step: str | None,
    name: str,
    last: int = 1000,
    workflow: str | None = None,
    source: str | None = None,
) -> Distribution:
    """The distribution of score ``name`` on ``step``'s attempts (``step`` None: on the
    runs themselves) over the last ``last`` runs holding such a score (of
    ``workflow``), newest first by start: the shape of ``distribution`` with
    ``field`` ``score.NAME``. Values are the numbers, ``true``/``false``, or the
    categories; ``occurrences`` counts scores, ``missing`` is 0."""
    check_last(last)
    # A run's scores are read by (run_id, name): the step is checked on them, not looked
    # up (SQLite would otherwise walk the step's whole index for every run).
    held = ["sc.run_id = r.run_id", "sc.name = ?"]
    params: list[Any] = [stored_name(name)]
    if step is None:
        held.append("sc.span_id IS NULL")
    else:
        held.append(f"{db.dialect.unindexed('sc.step')} = ?")
        params.append(stored_name(step))
    if source is not None:
        held.append("sc.source = ?")
        params.append(source)
    scope = ""
    window_params: list[Any] = []
    if workflow is not None:
        scope = "r.workflow = ? AND "
        window_params.append(stored_name(workflow))
    window = (
        f"WITH w AS MATERIALIZED (SELECT r.run_id FROM runs r WHERE {scope}EXISTS ("
        f"SELECT 1 FROM scores sc WHERE {' AND '.join(held)}{db.dialect.per_outer_row}) "
        "ORDER BY r.started_at DESC, r.run_id DESC LIMIT ?) "
    )
    mine = " AND ".join(c for c in held if not c.startswith("sc.run_id"))
    counts = db.rows(
        f"{window}SELECT sc.kind, sc.value, sc.label, count(*), (SELECT count(*) FROM w) "
        f"FROM scores sc WHERE sc.run_id IN (SELECT run_id FROM w) AND {mine} "
        "GROUP BY sc.kind, sc.value, sc.label",
        [*window_params, *params, last, *params],
    )
    runs = int(counts[0][4]) if counts else 0
    tally: dict[str, list[Any]] = {}
    numbers: list[float] = []
    for kind, value, label, count, _ in counts:
        shown: Any
        if kind == "categorical":
            shown = label
        elif kind == "boolean":
            shown = bool(value)
        else:
            shown = float(value)
            numbers.extend([shown] * int(count))
        key = json_key(shown)
        tally.setdefault(key, [shown, 0])[1] += int(count)
    occurrences = sum(c for _, c in tally.values())
    values: list[ValueCount] = [
        {"value": v, "count": c, "share": c / occurrences}
        for key, (v, c) in sorted(tally.items(), key=lambda kv: (-kv[1][1], kv[0]))
    ]
    return {
        "step": RUN_STEP if step is None else step,
        "field": f"score.{name}",
        "workflow": workflow,
        "last": last,
        "runs": runs,
        "occurrences": occurrences,
        "missing": 0,
        "values": values,
        "numeric": numeric_summary(numbers),
    }
