"""Experiments as stored, and two of them side by side.

An experiment (``experiments`` row) ran one target — today's code of a step (``mode``
``step``), or of the workflow from that step (``from-step``) — over a dataset; each item
it ran is an ``experiment_items`` row naming the run that executed it and the step
attempt whose output was judged, and each evaluator's verdict on that output is a
score on that attempt (``scores``: source ``code``, or ``llm`` for a judge). Running one
is ``steptrace.experimenting``; this module reads and writes the rows and answers
``compare`` (``steptrace experiment compare A B``).

A failed evaluation (``steptrace.evals.evaluators``: the evaluator raised, or returned
something that is not a score) is stored as a false score labelled ``error`` or
``invalid`` with the reason as its rationale: it is counted as an error, never in a
mean.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from steptrace.errors import EvaluationError
from steptrace.evals.evaluators import ERROR, INVALID
from steptrace.query.diff import Change, json_diff
from steptrace.query.distribution import percentile
from steptrace.record import stored_name
from steptrace.store import Store, StoreReader, admin, scores
from steptrace.store.columns import EXPERIMENT_ITEMS, EXPERIMENTS, ScoreLine, named
from steptrace.store.model import loads
from steptrace.store.sqlite import iso_from_ns

STATUSES: tuple[str, ...] = ("running", "completed", "interrupted", "failed")
"""An experiment's status: ``completed`` once every item ran (whatever each item's
outcome), ``interrupted`` when stopped (Ctrl-C) with the items done so far kept,
``failed`` when the experiment itself broke off."""
MODES: tuple[str, ...] = ("step", "from-step")
FAILED_LABELS = (ERROR, INVALID)
"""The labels of a failed evaluation's (false) score."""


def failed_score_sql(alias: str = "s") -> str:
    """An SQL condition (both engines) on a ``scores`` row aliased ``alias`` that holds for
    a failed evaluation: to leave those out of a mean and count them apart, in SQL, as
    ``aggregate`` does."""
    labels = ", ".join(f"'{label}'" for label in FAILED_LABELS)  # constants, not input
    return f"({alias}.kind = 'boolean' AND {alias}.value = 0 AND {alias}.label IN ({labels}))"


# --- the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemScore:
    """One evaluator's verdict on one item (a row of ``scores``)."""

    value: float | bool | str | None
    label: str | None
    rationale: str | None
    source: str

    @property
    def error(self) -> bool:
        """The evaluation failed (the evaluator raised or returned no score)."""
        return self.value is False and self.label in FAILED_LABELS

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": None if self.error else self.value,
            "label": self.label,
            "rationale": self.rationale,
            "source": self.source,
            "error": self.error,
        }


@dataclass(frozen=True)
class ExperimentItem:
    """One dataset item as an experiment ran it."""

    item_id: str
    run_id: str | None
    """The run that executed it (None when it could not start: see ``error``)."""
    span_id: str | None
    """The final attempt of the step whose output was judged."""
    status: str
    """``succeeded`` or ``failed``: the step's, not the run's."""
    output: Any
    error: dict[str, Any] | None
    duration_ms: float | None
    """From the step's first attempt's start to its last attempt's end."""
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    scores: dict[str, ItemScore] = field(default_factory=dict)
    """By evaluator name."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "run_id": self.run_id,
            "span_id": self.span_id,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "scores": {name: s.to_dict() for name, s in self.scores.items()},
        }


@dataclass(frozen=True)
class Experiment:
    """A stored experiment with its items (in dataset order)."""

    name: str
    dataset: str
    target: str
    """``module:qualname`` of the step (mode ``step``) or of the workflow (``from-step``)."""
    mode: str
    evaluators: list[str]
    params: dict[str, Any]
    """``concurrency``, ``llm``."""
    code_version: dict[str, Any] | None
    status: str
    started_at: str
    ended_at: str | None
    items: list[ExperimentItem] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The aggregates: items, succeeded, failed, cost and tokens, latency, and per
        evaluator the mean over the items it scored (``aggregate``)."""
        return aggregate(self.items, self.evaluators)

    def header(self) -> dict[str, Any]:
        """The experiment without its items."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "target": self.target,
            "mode": self.mode,
            "evaluators": self.evaluators,
            "params": self.params,
            "code_version": self.code_version,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.header() | {
            "summary": self.summary(),
            "items": [i.to_dict() for i in self.items],
        }


def aggregate(items: Sequence[ExperimentItem], evaluators: Sequence[str]) -> dict[str, Any]:
    """``{"items", "succeeded", "failed", "cost_usd", "input_tokens", "output_tokens",
    "latency_ms": {"p50", "mean"}, "scores": {name: {"mean", "count", "errors",
    "labels"}}}``: a score's ``mean`` is over the numeric and boolean values (true = 1)
    of the items it scored, ``count`` how many those are; ``errors`` counts failed
    evaluations and ``labels`` the categories given. Cost is None when no item's is
    known; latency is over the succeeded items."""
    durations = sorted(
        i.duration_ms for i in items if i.status == "succeeded" and i.duration_ms is not None
    )
    costs = [i.cost_usd for i in items if i.cost_usd is not None]
    per_name: dict[str, dict[str, Any]] = {}
    names = list(dict.fromkeys([*evaluators, *(n for i in items for n in i.scores)]))
    for name in names:
        values: list[float] = []
        errors = 0
        labels: dict[str, int] = {}
        for i in items:
            s = i.scores.get(name)
            if s is None:
                continue
            if s.error:
                errors += 1
            elif isinstance(s.value, bool | int | float):
                values.append(float(s.value))
            elif s.label is not None:
                labels[s.label] = labels.get(s.label, 0) + 1
        per_name[name] = {
            "mean": statistics.fmean(values) if values else None,
            "count": len(values),
            "errors": errors,
            "labels": labels,
        }
    return {
        "items": len(items),
        "succeeded": sum(i.status == "succeeded" for i in items),
        "failed": sum(i.status != "succeeded" for i in items),
        "cost_usd": sum(costs) if costs else None,
        "input_tokens": sum(i.input_tokens or 0 for i in items),
        "output_tokens": sum(i.output_tokens or 0 for i in items),
        "latency_ms": {
            "p50": percentile(durations, 0.5),
            "mean": statistics.fmean(durations) if durations else None,
        },
        "scores": per_name,
    }


# --- reading --------------------------------------------------------------------------

_HEADER = f"SELECT {EXPERIMENTS.select()} FROM experiments"
_ITEMS = (
    f"SELECT {EXPERIMENT_ITEMS.select(alias='e')} FROM experiment_items e"
    " LEFT JOIN dataset_items d ON d.item_id = e.item_id"
    " WHERE e.experiment = ?"
    " ORDER BY CASE WHEN d.seq IS NULL THEN 1 ELSE 0 END, d.seq, e.item_id"
)
_SCORES = (
    f"SELECT e.item_id, {', '.join('s.' + c.strip() for c in scores.READ_COLUMNS.split(','))}"
    " FROM experiment_items e JOIN scores s ON s.run_id = e.run_id AND s.span_id = e.span_id"
    " WHERE e.experiment = ?"
)


def _header_from_row(r: Sequence[Any]) -> dict[str, Any]:
    row = named(EXPERIMENTS.names, r)
    for name in EXPERIMENTS.json_names:
        row[name] = loads(row[name])
    row["evaluators"] = row["evaluators"] or []
    row["params"] = row["params"] or {}
    return row


def experiments(store: Store) -> list[Experiment]:
    """Every experiment, newest first, without items (``summary()`` of each is empty:
    ``load`` one for its items)."""
    rows = StoreReader(store).rows(f"{_HEADER} ORDER BY started_at DESC, name")
    return [Experiment(**_header_from_row(r)) for r in rows]


def exists(store: Store, name: str) -> bool:
    rows = StoreReader(store).rows("SELECT 1 FROM experiments WHERE name = ?", [name])
    return bool(rows)


def load(store: Store, name: str) -> Experiment:
    """The experiment ``name`` with its items and their scores; ``EvaluationError``
    naming the experiments there are when there is none."""
    reader = StoreReader(store)
    stored = stored_name(name)
    rows = reader.rows(f"{_HEADER} WHERE name = ?", [stored])
    if not rows:
        known = [e.name for e in experiments(store)]
        raise EvaluationError(
            f"no experiment named {name!r} in {store.url}; "
            + (f"experiments: {', '.join(known)}" if known else "there are none yet")
        )
    header = _header_from_row(rows[0])
    by_item: dict[str, dict[str, ItemScore]] = {}
    for r in reader.rows(_SCORES, [stored]):
        s = scores.from_row(r[1:])
        by_item.setdefault(r[0], {})[s.name] = ItemScore(s.value, s.label, s.rationale, s.source)
    items = []
    for r in reader.rows(_ITEMS, [stored]):
        row = named(EXPERIMENT_ITEMS.names, r)
        for column in EXPERIMENT_ITEMS.json_names:
            row[column] = loads(row[column])
        del row["experiment"]
        items.append(ExperimentItem(**row, scores=by_item.get(row["item_id"], {})))
    return Experiment(**header, items=items)


# --- writing --------------------------------------------------------------------------

_INSERT = (
    f"INSERT INTO experiments ({', '.join(EXPERIMENTS.names)}) "
    f"VALUES ({', '.join('?' for _ in EXPERIMENTS.names)})"
)
_UPSERT_ITEM = (
    f"INSERT INTO experiment_items ({', '.join(EXPERIMENT_ITEMS.names)}) "
    f"VALUES ({', '.join('?' for _ in EXPERIMENT_ITEMS.names)}) "
    "ON CONFLICT (experiment, item_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in EXPERIMENT_ITEMS.names[2:])
)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def create(store: Store, header: dict[str, Any]) -> None:
    """Write a new experiment's row (``header``: the ``experiments`` columns but
    ``status``, ``started_at``, ``ended_at``), running from now."""
    values = header | {"status": "running", "started_at": _now(), "ended_at": None}
    row = tuple(
        _json(values[n]) if n in EXPERIMENTS.json_names else values[n] for n in EXPERIMENTS.names
    )
    with admin.connect(store.engine.dsn) as conn:
        conn.transaction(lambda execute: execute(_INSERT, row))


def finish(store: Store, name: str, status: str) -> None:
    """Mark the experiment ``status`` (completed, interrupted, failed), ended now."""
    with admin.connect(store.engine.dsn) as conn:
        conn.transaction(
            lambda execute: execute(
                "UPDATE experiments SET status = ?, ended_at = ? WHERE name = ?",
                (status, _now(), name),
            )
        )


def write_items(
    store: Store, experiment: str, done: Sequence[tuple[ExperimentItem, Sequence[ScoreLine]]]
) -> None:
    """Write items' rows and their scores in one transaction (an item written again is
    replaced)."""

    def write(execute: admin.Execute) -> None:
        for item, lines in done:
            d = item.to_dict()
            execute(
                _UPSERT_ITEM,
                (
                    experiment,
                    *(
                        _json(d[n]) if n in EXPERIMENT_ITEMS.json_names else d[n]
                        for n in EXPERIMENT_ITEMS.names[1:]
                    ),
                ),
            )
            for line in lines:
                execute(scores.UPSERT, scores.row(line))

    if done:
        with admin.connect(store.engine.dsn) as conn:
            conn.transaction(write)


def remove(store: Store, name: str) -> int:
    """Remove the experiment and its item rows (the runs it made and their scores stay):
    the number of items removed."""
    load(store, name)
    stored = stored_name(name)

    def drop(execute: admin.Execute) -> int:
        n = execute("DELETE FROM experiment_items WHERE experiment = ?", (stored,))
        execute("DELETE FROM experiments WHERE name = ?", (stored,))
        return n

    with admin.connect(store.engine.dsn) as conn:
        return conn.transaction(drop)


def _now() -> str:
    return iso_from_ns(time.time_ns())


# --- compare --------------------------------------------------------------------------


def _score_values(item: ExperimentItem, names: set[str]) -> dict[str, Any]:
    return {n: (s.value, s.label, s.error) for n, s in item.scores.items() if n in names}


@dataclass
class ItemComparison:
    """One dataset item in two experiments (``a``/``b`` None: that one did not run it)."""

    item_id: str
    input: Any
    reference: Any
    a: ExperimentItem | None
    b: ExperimentItem | None
    diff: list[Change]
    """The structural changes from a's output to b's (``steptrace.query.diff``)."""

    @property
    def changed(self) -> bool:
        """The outputs differ structurally, a status differs, a score both experiments
        gave differs (an evaluator only one of them ran changes nothing), or only one of
        the experiments ran the item."""
        a, b = self.a, self.b
        if a is None or b is None:
            return True
        both = set(a.scores) & set(b.scores)
        return (
            bool(self.diff)
            or a.status != b.status
            or _score_values(a, both) != _score_values(b, both)
            or (a.error or {}).get("type") != (b.error or {}).get("type")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "input": self.input,
            "reference": self.reference,
            "changed": self.changed,
            "a": None if self.a is None else _side(self.a),
            "b": None if self.b is None else _side(self.b),
            "diff": self.diff,
        }


def _side(item: ExperimentItem) -> dict[str, Any]:
    d = item.to_dict()
    del d["item_id"]
    return d


@dataclass
class ExperimentComparison:
    """Two experiments side by side (``compare``)."""

    a: Experiment
    b: Experiment
    items: list[ItemComparison]

    @property
    def evaluators(self) -> list[str]:
        return list(dict.fromkeys([*self.a.evaluators, *self.b.evaluators]))

    @property
    def changed(self) -> list[str]:
        """The ids of the items whose outcome changed, in dataset order."""
        return [i.item_id for i in self.items if i.changed]

    def to_dict(self) -> dict[str, Any]:
        names = self.evaluators
        return {
            "a": self.a.header(),
            "b": self.b.header(),
            "evaluators": names,
            "aggregate": {
                "a": aggregate(self.a.items, names),
                "b": aggregate(self.b.items, names),
            },
            "items": [i.to_dict() for i in self.items],
            "changed": self.changed,
        }


def compare(store: Store, a: str, b: str) -> ExperimentComparison:
    """Experiment ``b`` against experiment ``a``, item by item (matched by dataset item
    id, in dataset order; an item only one of them ran is listed as changed) and in
    aggregate."""
    first, second = load(store, a), load(store, b)
    ids = list(
        dict.fromkeys([*(i.item_id for i in first.items), *(i.item_id for i in second.items)])
    )
    data = _dataset_items(store, ids)
    by_a = {i.item_id: i for i in first.items}
    by_b = {i.item_id: i for i in second.items}
    order = sorted(ids, key=lambda i: (data.get(i, (1 << 62, None, None))[0], i))
    out = []
    for item_id in order:
        ia, ib = by_a.get(item_id), by_b.get(item_id)
        diff = json_diff(ia.output, ib.output, "output") if ia and ib else []
        _, inp, ref = data.get(item_id, (0, None, None))
        out.append(ItemComparison(item_id, inp, ref, ia, ib, diff))
    return ExperimentComparison(first, second, out)


def _dataset_items(store: Store, ids: Sequence[str]) -> dict[str, tuple[int, Any, Any]]:
    """``item_id → (seq, input, reference)`` of the dataset items still stored."""
    found: dict[str, tuple[int, Any, Any]] = {}
    reader = StoreReader(store)
    for at in range(0, len(ids), 500):
        chunk = list(ids[at : at + 500])
        marks = ", ".join("?" for _ in chunk)
        for r in reader.rows(
            f"SELECT item_id, seq, input, reference FROM dataset_items WHERE item_id IN ({marks})",
            chunk,
        ):
            found[r[0]] = (int(r[1]), loads(r[2]), loads(r[3]))
    return found
