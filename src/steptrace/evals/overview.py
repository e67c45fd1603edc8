"""Every experiment with its figures at a glance (the UI's experiments page): the
experiment's header (``steptrace.evals.experiments``), how many items it ran, how many
succeeded and failed, and per score name the mean over the items it scored.

Three queries whatever the number of experiments. The figures are those of
``Experiment.summary()``: a score's ``mean`` is over the numeric and boolean values
(true = 1), ``count`` how many those are, ``errors`` the failed evaluations.
"""

from __future__ import annotations

from typing import Any

from steptrace.evals.experiments import experiments, failed_score_sql
from steptrace.store import Store, StoreReader

_ITEMS = (
    "SELECT experiment, count(*), sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END)"
    " FROM experiment_items GROUP BY experiment"
)
_FAILED = failed_score_sql("s")
_SCORES = (
    "SELECT e.experiment, s.name,"
    f" sum(CASE WHEN {_FAILED} THEN NULL ELSE s.value END),"
    f" count(CASE WHEN {_FAILED} THEN NULL ELSE s.value END),"
    f" sum(CASE WHEN {_FAILED} THEN 1 ELSE 0 END)"
    " FROM experiment_items e JOIN scores s ON s.run_id = e.run_id AND s.span_id = e.span_id"
    " GROUP BY e.experiment, s.name"
)


def experiment_summaries(store: Store) -> list[dict[str, Any]]:
    """Each experiment's header, newest first, with ``items``, ``succeeded``, ``failed``
    and ``scores``: ``{name: {"mean", "count", "errors"}}`` (its evaluators first)."""
    reader = StoreReader(store)
    counts = {str(r[0]): (int(r[1]), int(r[2] or 0)) for r in reader.rows(_ITEMS)}
    scored: dict[str, dict[str, dict[str, Any]]] = {}
    for experiment, name, total, count, errors in reader.rows(_SCORES):
        n = int(count)
        scored.setdefault(str(experiment), {})[str(name)] = {
            "mean": float(total) / n if n else None,
            "count": n,
            "errors": int(errors or 0),
        }
    out = []
    for e in experiments(store):
        items, succeeded = counts.get(e.name, (0, 0))
        found = scored.get(e.name, {})
        names = list(dict.fromkeys([*e.evaluators, *sorted(found)]))
        empty = {"mean": None, "count": 0, "errors": 0}
        out.append(
            e.header()
            | {
                "items": items,
                "succeeded": succeeded,
                "failed": items - succeeded,
                "scores": {n: found.get(n, empty) for n in names},
            }
        )
    return out
