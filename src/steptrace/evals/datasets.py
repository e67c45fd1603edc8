"""Datasets built from recorded steps: each item is one step occurrence's input, its
recorded output, and the reference an output is judged against (the recorded output
until a human corrects it).

``add`` takes the occurrences of a step from the store (the final attempt of each,
succeeded ones by default) that match the runs' ``--where`` language
(``steptrace.query.where``): a predicate on the dataset's own step holds for the
occurrence itself (``classify.output.label = billing`` keeps the occurrences that said
billing), any other (``run.status``, another step) for the run it is in. Runs made by
experiments and the copies a fork made of recorded steps are left out: they are not
production behaviour. An occurrence is added once per dataset (its span id is the
item's identity: ``item_id`` is a digest of the dataset and that span id); a value
stored as a placeholder or with a redacted secret is skipped with the reason, never
stored as the reference it cannot be.

Everything here reads through a ``Store`` and writes through the store's maintenance
connection (``steptrace.store.admin``), like scores.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from steptrace.errors import EvaluationError, QueryError
from steptrace.query.where import RunFilter, parse_predicate, span_condition
from steptrace.record import encode, stored_name
from steptrace.reentry import not_whole
from steptrace.store import Store, StoreReader, admin
from steptrace.store.columns import DATASET_ITEMS, DATASETS, named
from steptrace.store.model import loads
from steptrace.store.sqlite import iso_from_ns

STATUSES: tuple[str, ...] = ("succeeded", "failed", "any")
"""Which occurrences ``add`` takes, by the status of their final attempt."""
FORMATS: tuple[str, ...] = ("jsonl", "json")
MAX_NAME = 200
ITEM_ID_CHARS = 16
SHORT_ID_CHARS = 8
"""An item id as listings show it (any unambiguous prefix names the item)."""


@dataclass(frozen=True)
class Dataset:
    """A dataset (``datasets``): its step, and how many items it holds."""

    name: str
    step: str | None
    description: str | None
    created_at: str
    items: int
    corrected: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "step": self.step,
            "description": self.description,
            "created_at": self.created_at,
            "items": self.items,
            "corrected": self.corrected,
        }


@dataclass(frozen=True)
class DatasetItem:
    """One item: a recorded step occurrence's input, its recorded output, and the
    reference (the recorded output, or a human correction of it)."""

    item_id: str
    dataset: str
    seq: int
    step: str
    step_key: str | None
    source_run_id: str | None
    source_span_id: str | None
    input: Any
    recorded_output: Any
    reference: Any
    corrected_at: str | None
    corrected_by: str | None
    created_at: str

    @property
    def corrected(self) -> bool:
        return self.corrected_at is not None

    def to_dict(self) -> dict[str, Any]:
        return named(DATASET_ITEMS.names, [getattr(self, n) for n in DATASET_ITEMS.names])


@dataclass(frozen=True)
class Skipped:
    """An occurrence ``add`` did not take, and why."""

    source_run_id: str
    source_span_id: str
    step_key: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_run_id": self.source_run_id,
            "source_span_id": self.source_span_id,
            "step_key": self.step_key,
            "reason": self.reason,
        }


@dataclass
class Added:
    """What ``add`` did: the items it added (their ids, oldest occurrence first), how
    many matching occurrences the dataset held already, and those it skipped."""

    dataset: str
    step: str
    matched: int = 0
    added: list[str] = field(default_factory=list)
    existing: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "step": self.step,
            "matched": self.matched,
            "added": len(self.added),
            "existing": self.existing,
            "skipped": len(self.skipped),
            "item_ids": self.added,
            "skipped_items": [s.to_dict() for s in self.skipped],
        }


def item_id(dataset: str, source_span_id: str) -> str:
    """The id of the item a recorded occurrence is in a dataset (the same every time
    it is added)."""
    key = f"{dataset}\x00{source_span_id}".encode()
    return hashlib.blake2b(key, digest_size=ITEM_ID_CHARS // 2).hexdigest()


def check_name(name: str, what: str = "dataset") -> str:
    """``name`` as stored; ``EvaluationError`` for one that cannot be a name."""
    if not isinstance(name, str) or not name.strip():
        raise EvaluationError(f"a {what} needs a name (a non-empty string)")
    if len(name) > MAX_NAME or name != name.strip():
        raise EvaluationError(
            f"a {what}'s name is at most {MAX_NAME} characters, without surrounding spaces"
        )
    return stored_name(name)


def _now() -> str:
    return iso_from_ns(time.time_ns())


def _reader(store: Store) -> StoreReader:
    return StoreReader(store)


# --- reading --------------------------------------------------------------------------

_DATASETS = (
    "SELECT d.name, d.step, d.description, d.created_at,"
    " (SELECT count(*) FROM dataset_items i WHERE i.dataset = d.name),"
    " (SELECT count(*) FROM dataset_items i WHERE i.dataset = d.name"
    " AND i.corrected_at IS NOT NULL)"
    " FROM datasets d"
)
_ITEMS = f"SELECT {DATASET_ITEMS.select()} FROM dataset_items"


def _dataset_from_row(r: Sequence[Any]) -> Dataset:
    return Dataset(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]))


def _item_from_row(r: Sequence[Any]) -> DatasetItem:
    row = named(DATASET_ITEMS.names, r)
    for name in DATASET_ITEMS.json_names:
        row[name] = loads(row[name])
    return DatasetItem(**row)


def datasets(store: Store) -> list[Dataset]:
    """Every dataset, by name."""
    rows = _reader(store).rows(f"{_DATASETS} ORDER BY d.name")
    return [_dataset_from_row(r) for r in rows]


def dataset(store: Store, name: str) -> Dataset:
    """The dataset ``name``; ``EvaluationError`` naming the datasets there are when there
    is none."""
    rows = _reader(store).rows(f"{_DATASETS} WHERE d.name = ?", [stored_name(name)])
    if not rows:
        known = [d.name for d in datasets(store)]
        raise EvaluationError(
            f"no dataset named {name!r} in {store.url}; "
            + (f"datasets: {', '.join(known)}" if known else "there are none yet")
            + " (make one with: steptrace dataset add NAME --step STEP)"
        )
    return _dataset_from_row(rows[0])


def items(store: Store, name: str) -> list[DatasetItem]:
    """The items of the dataset ``name``, in the order they were added."""
    dataset(store, name)
    rows = _reader(store).rows(
        f"{_ITEMS} WHERE dataset = ? ORDER BY seq, item_id", [stored_name(name)]
    )
    return [_item_from_row(r) for r in rows]


def item(store: Store, name: str, ref: str) -> DatasetItem:
    """The item of dataset ``name`` whose id is ``ref`` or starts with it."""
    dataset(store, name)
    stored = stored_name(name)
    reader = _reader(store)
    rows = reader.rows(f"{_ITEMS} WHERE dataset = ? AND item_id = ?", [stored, ref])
    if not rows and ref:
        rows = reader.rows(
            f"{_ITEMS} WHERE dataset = ? AND item_id >= ? AND item_id < ? LIMIT 2",
            [stored, ref, ref + "\U0010ffff"],
        )
    if not rows:
        raise EvaluationError(f"dataset {name!r} has no item {ref!r}")
    if len(rows) > 1:
        raise EvaluationError(f"item id prefix {ref!r} is ambiguous: give more characters")
    return _item_from_row(rows[0])


# --- adding ---------------------------------------------------------------------------


def _occurrences(
    store: Store,
    step: str,
    where: Sequence[str],
    last: int | None,
    workflow: str | None,
    status: str,
) -> list[tuple[Any, ...]]:
    """The final attempts of ``step``'s occurrences that match, newest first: run id,
    span id, step key, input, output."""
    d = store.dialect
    own: list[str] = []
    others: list[str] = []
    for text in where:
        pred = parse_predicate(text)
        (own if pred.step == step else others).append(text)
    conds = [
        "s.name = ?",
        "s.kind IN ('step', 'tool')",
        "s.step_key IS NOT NULL",
        "NOT EXISTS (SELECT 1 FROM spans q WHERE q.run_id = s.run_id"
        " AND q.step_key = s.step_key AND q.attempt > s.attempt)",
        "r.workflow NOT LIKE 'experiment:%'",
        "NOT EXISTS (SELECT 1 FROM experiment_items e WHERE e.run_id = s.run_id)",
    ]
    params: list[Any] = [step]
    reused = d.json_type_at("s.attributes", ["steptrace.reused_from"])
    conds.append(f"{reused.text} IS NULL")
    params.extend(reused.params)
    if status != "any":
        conds.append("s.status = ?")
        params.append(status)
    for text in own:
        cond = span_condition(parse_predicate(text), d, "s")
        conds.append(f"({cond.text})")
        params.extend(cond.params)
    run_conds, run_params = RunFilter.of(workflow, where=others).sql(d, "r")
    conds.extend(run_conds)
    params.extend(run_params)
    sql = (
        "SELECT s.run_id, s.span_id, s.step_key, s.input, s.output FROM spans s"
        f" JOIN runs r ON r.run_id = s.run_id WHERE {' AND '.join(conds)}"
        " ORDER BY s.started_at DESC, s.span_id DESC"
    )
    if last is not None:
        sql += " LIMIT ?"
        params.append(last)
    return _reader(store).rows(sql, params)


def add(
    store: Store,
    name: str,
    step: str,
    *,
    where: str | Sequence[str] | None = None,
    last: int | None = None,
    workflow: str | None = None,
    status: str = "succeeded",
    description: str | None = None,
) -> Added:
    """Add the occurrences of ``step`` that match to the dataset ``name`` (made on first
    use, for that step): the last ``last`` of them (all when None), in runs of
    ``workflow``, matching every ``where`` predicate, whose final attempt has
    ``status`` (``succeeded``, ``failed`` or ``any``). An occurrence the dataset holds
    already is counted, not added again; one recorded as a placeholder or with a
    redacted secret is skipped with the reason. ``EvaluationError`` for a dataset of
    another step, ``QueryError`` for a malformed filter."""
    name = check_name(name)
    if not isinstance(step, str) or not step.strip():
        raise EvaluationError("give the step whose occurrences to add (its name)")
    step = stored_name(step)
    if status not in STATUSES:
        raise EvaluationError(f"status {status!r}: one of {', '.join(STATUSES)}")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise QueryError(f"last must be a positive number of occurrences, not {last!r}")
    wheres = [where] if isinstance(where, str) else list(where or ())
    existing = _reader(store).rows("SELECT step FROM datasets WHERE name = ?", [name])
    if existing and existing[0][0] not in (None, step):
        raise EvaluationError(
            f"dataset {name!r} holds occurrences of step {existing[0][0]!r}, not {step!r}: "
            "give another dataset name"
        )
    found = _occurrences(store, step, wheres, last, workflow, status)
    report = Added(name, step, matched=len(found))
    rows: list[tuple[Any, ...]] = []
    now = _now()
    for run_id, span_id, key, raw_input, raw_output in reversed(found):  # oldest first
        inp, out = loads(raw_input), loads(raw_output)
        reason = _unusable(inp, out)
        if reason:
            report.skipped.append(Skipped(run_id, span_id, key, reason))
            continue
        out_json = orjson.dumps(out).decode()
        rows.append(
            (
                item_id(name, span_id),
                name,
                0,  # seq: set when written
                step,
                key,
                run_id,
                span_id,
                orjson.dumps(inp).decode(),
                out_json,
                out_json,
                None,
                None,
                now,
            )
        )
    report.added = _write_items(store, name, step, description, now, rows)
    report.existing = len(rows) - len(report.added)
    return report


def _unusable(inp: Any, out: Any) -> str | None:
    reason = not_whole(inp)
    if reason:
        return f"its input cannot be used: {reason}"
    reason = not_whole(out)
    if reason:
        return f"its output cannot be a reference: {reason}"
    return None


_INSERT_DATASET = (
    f"INSERT INTO datasets ({', '.join(DATASETS.names)}) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INSERT_ITEM = (
    f"INSERT INTO dataset_items ({', '.join(DATASET_ITEMS.names)}) "
    f"VALUES ({', '.join('?' for _ in DATASET_ITEMS.names)}) ON CONFLICT DO NOTHING"
)


def _write_items(
    store: Store,
    name: str,
    step: str,
    description: str | None,
    now: str,
    rows: list[tuple[Any, ...]],
) -> list[str]:
    """Write the dataset's row (when new) and the items it does not hold yet, numbered
    after its last; the ids of those written."""
    with admin.connect(store.engine.dsn) as conn:
        last = conn.rows("SELECT max(seq) FROM dataset_items WHERE dataset = ?", [name])
        seq = int(last[0][0]) if last and last[0][0] is not None else 0

        def write(execute: admin.Execute) -> list[str]:
            execute(_INSERT_DATASET, (name, step, description, now))
            written: list[str] = []
            at = seq
            for row in rows:
                if execute(_INSERT_ITEM, (*row[:2], at + 1, *row[3:])):
                    at += 1
                    written.append(row[0])
            return written

        return conn.transaction(write)


# --- changing -------------------------------------------------------------------------


def correct(
    store: Store, name: str, ref: str, reference: Any, *, by: str | None = None
) -> DatasetItem:
    """Make ``reference`` (a JSON value) the expectation of the item ``ref`` (an id or an
    unambiguous prefix) of dataset ``name``, recording when and by whom; its recorded
    output stays. ``EvaluationError`` for a reference that would be stored redacted or
    cut (it would no longer be what was meant)."""
    found = item(store, name, ref)
    stored = loads(encode(reference))
    reason = not_whole(stored)
    if reason:
        raise EvaluationError(f"the reference cannot be stored as given: {reason}")
    if by is not None:
        by = stored_name(str(by))
    with admin.connect(store.engine.dsn) as conn:
        conn.transaction(
            lambda execute: execute(
                "UPDATE dataset_items SET reference = ?, corrected_at = ?, corrected_by = ? "
                "WHERE item_id = ?",
                (orjson.dumps(stored).decode(), _now(), by, found.item_id),
            )
        )
    return item(store, name, found.item_id)


def remove(store: Store, name: str, refs: Sequence[str] = ()) -> int:
    """Remove the items ``refs`` (ids or unambiguous prefixes) of dataset ``name``, or,
    without ``refs``, the dataset and all its items: the number of items removed.
    Experiments that ran over them keep their results."""
    dataset(store, name)
    stored = stored_name(name)
    ids = [item(store, name, r).item_id for r in refs]
    with admin.connect(store.engine.dsn) as conn:
        if ids:
            return conn.transaction(
                lambda execute: sum(
                    execute("DELETE FROM dataset_items WHERE item_id = ?", (i,))
                    for i in dict.fromkeys(ids)
                )
            )

        def drop(execute: admin.Execute) -> int:
            n = execute("DELETE FROM dataset_items WHERE dataset = ?", (stored,))
            execute("DELETE FROM datasets WHERE name = ?", (stored,))
            return n

        return conn.transaction(drop)


# --- export ---------------------------------------------------------------------------


def document(store: Store, name: str) -> dict[str, Any]:
    """The dataset and its items as one JSON object (``dataset show --json``, ``dataset
    export --format json``)."""
    return dataset(store, name).to_dict() | {"items": [i.to_dict() for i in items(store, name)]}


def export(store: Store, name: str, dest: str | Path | IO[bytes], format: str = "jsonl") -> int:
    """Write the dataset's items to a file or binary stream: ``jsonl`` (one item per
    line) or ``json`` (the dataset with its items). Returns the number of items."""
    if format not in FORMATS:
        raise EvaluationError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    doc = document(store, name)
    if format == "json":
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    else:
        data = b"".join(orjson.dumps(i) + b"\n" for i in doc["items"])
    if isinstance(dest, str | Path):
        with open(dest, "wb") as out:
            out.write(data)
    else:
        dest.write(data)
    return len(doc["items"])
