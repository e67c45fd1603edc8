"""The store's tables and views, column by column: the one list statements come from.

The migrations (``migrations.py``) are the schema's history and create these columns;
``tests/test_columns.py`` checks, on a real SQLite file and a real PostgreSQL server,
that the two agree name for name, in order, type for type. Everything else is made
from the declarations here, once, when a module is imported: the SQLite writer's
inserts and upserts (``sqlite.py``), the PostgreSQL writer's COPY column lists,
staging tables, merges and rows (``postgres.py``), the upsert rules both share
(``conflict_clause``), the column lists readers select (``Store``, ``export``) and
the rows they read back, by name (``named``).

A ``Column`` says what a column holds (``type``), what it is made of (``source``:
attributes of the record the writer stores, ``form``: how the value is turned into the
column's), and what a second write of the same row does to it (``on_conflict``).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, TypeVar

ColumnType = Literal["text", "integer", "real", "json"]
"""``json`` is TEXT holding JSON under SQLite and JSONB under PostgreSQL; ``text`` is
compared byte by byte on both (``COLLATE "C"`` under PostgreSQL)."""

Form = Literal["value", "text", "json", "time", "duration", "flag"]
"""How a record's attribute becomes the column's value: ``value`` as it is (ids, names
and numbers the runtime made); ``text`` text from outside (PostgreSQL refuses NUL in
it); ``json`` encoded JSON bytes; ``time`` ns since the epoch as ISO-8601 UTC text;
``duration`` the ms between two such times (its source names start and end); ``flag``
a bool as 0 or 1."""

OnConflict = Literal["set", "keep", "fixed"]
"""What a second write of a row does to the column: ``set`` it to the new value, ``keep``
the old one when the new one is NULL, or leave it ``fixed`` as first written."""

Conflict = Literal["merge", "replace", "ignore"]
"""What writing a row whose key is stored already does: ``merge`` column by column
(``Column.on_conflict``, subject to the table's ``Guard``), ``replace`` it (every column
set), or ``ignore`` the new row."""


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    source: tuple[str, ...] = ()
    """The attributes of the stored record the value is made of (a dotted path reaches
    into the record, e.g. ``llm.model``); two for a ``duration`` (start, end). Empty:
    the recording writer leaves the column to its default."""
    form: Form = "value"
    nullable: bool = True
    on_conflict: OnConflict = "set"
    internal: bool = False
    """Bookkeeping of the store, not part of the data a run is read or exported as."""

    @property
    def json(self) -> bool:
        return self.type == "json"


@dataclass(frozen=True)
class Guard:
    """A row whose ``column`` is ``value`` never overwrites a stored row whose ``column``
    is something else (a run's start row arriving after its end row, replayed or out of
    order, leaves the ended run as it is), unless it is of a later ``epoch``; and a row
    of an earlier epoch never overwrites one of a later (a resumed run's rows win over
    those of the incarnations before it, whatever order they arrive in)."""

    column: str
    value: str
    epoch: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    """The primary key, or the unique index a write conflicts on."""
    conflict: Conflict | None = None
    """None: not written by the recording writer."""
    guard: Guard | None = None
    view: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def written(self) -> tuple[Column, ...]:
        """The columns the recording writer fills, in table order."""
        return tuple(c for c in self.columns if c.source)

    @property
    def json_names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns if c.json)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def select(self, names: Iterable[str] | None = None, alias: str = "") -> str:
        """A SELECT list of ``names`` (default: every column), each checked to be one of
        the table's, qualified by ``alias`` when given."""
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + self.column(n).name for n in names or self.names)


def _c(
    name: str,
    type: ColumnType,
    *source: str,
    form: Form | None = None,
    null: bool = True,
    on_conflict: OnConflict = "set",
    internal: bool = False,
) -> Column:
    return Column(
        name,
        type,
        source,
        form or ("json" if type == "json" and source else "value"),
        null,
        on_conflict,
        internal,
    )


class LogLine(NamedTuple):
    """The record a ``logs`` row is written from: a log entry of a run or span, with the
    place it belongs to."""

    run_id: str
    span_id: str
    seq: int
    ts_ns: int
    level: str
    logger: str
    message: str
    exception: str | None


def batch_logs(runs: Iterable[Any], spans: Iterable[Any]) -> list[LogLine]:
    """The log records a batch of run and span records carries, numbered within their
    run or span: an ended run's and every span's."""
    owners = [*(r for r in runs if r.end_ns is not None), *spans]
    return [
        LogLine(rec.run_id, rec.span_id, seq, *entry)
        for rec in owners
        if rec.logs
        for seq, entry in enumerate(rec.logs)
    ]


RUNS = Table(
    "runs",
    (
        _c("run_id", "text", "run_id", null=False),
        _c("workflow", "text", "workflow", null=False, on_conflict="fixed"),
        _c("status", "text", "status", null=False),
        _c("trace_id", "text", "trace_id", null=False, on_conflict="fixed"),
        _c("span_id", "text", "span_id", null=False, on_conflict="fixed"),
        _c("parent_trace_id", "text", "parent_trace_id", on_conflict="fixed"),
        _c("parent_span_id", "text", "parent_span_id", on_conflict="fixed"),
        _c("started_at", "text", "start_ns", form="time", null=False, on_conflict="fixed"),
        _c("ended_at", "text", "end_ns", form="time"),
        _c("duration_ms", "real", "start_ns", "end_ns", form="duration"),
        _c("input", "json", "input", on_conflict="keep"),
        _c("output", "json", "output"),
        _c("error", "json", "error"),
        _c("tags", "json", "tags", on_conflict="keep"),
        _c("owner", "text", "owner", on_conflict="keep", internal=True),
        _c("entry_point", "text", "entry_point", form="text", on_conflict="keep"),
        _c("code_version", "json", "code_version", on_conflict="keep"),
        _c("forked_from", "text", "forked_from", on_conflict="fixed"),
        _c("forked_at", "text", "forked_at", form="text", on_conflict="fixed"),
        _c("replay_of", "text", "replay_of", on_conflict="fixed"),
        _c("resume_count", "integer", "resume_count", null=False),
        _c("durability", "text", "durability", on_conflict="keep", internal=True),
        _c("lease_owner", "text", internal=True),
        _c("lease_until", "text", internal=True),
        _c("session_id", "text", "session_id", form="text", on_conflict="keep"),
    ),
    key=("run_id",),
    conflict="merge",
    guard=Guard("status", "running", "resume_count"),
)
"""One row per run, from a ``RunState``."""

SPANS = Table(
    "spans",
    (
        _c("span_id", "text", "span_id", null=False),
        _c("run_id", "text", "run_id", null=False),
        _c("parent_span_id", "text", "parent_span_id"),
        _c("kind", "text", "kind", null=False),
        _c("name", "text", "name", form="text", null=False),
        _c("step_key", "text", "key", form="text"),
        _c("attempt", "integer", "attempt"),
        _c("status", "text", "status", null=False),
        _c("started_at", "text", "start_ns", form="time", null=False),
        _c("ended_at", "text", "end_ns", form="time"),
        _c("duration_ms", "real", "start_ns", "end_ns", form="duration"),
        _c("input", "json", "input"),
        _c("output", "json", "output"),
        _c("error", "json", "error"),
        _c("attributes", "json", "attributes"),
        _c("input_hash", "text", "input_hash"),
    ),
    key=("span_id",),
    conflict="replace",
)
"""One row per span, from a ``SpanRecord``."""

LLM_CALLS = Table(
    "llm_calls",
    (
        _c("span_id", "text", "span_id", null=False),
        _c("run_id", "text", "run_id", null=False),
        _c("provider", "text", "llm.provider", form="text", null=False),
        _c("model", "text", "llm.model", form="text", null=False),
        _c("input_tokens", "integer", "llm.input_tokens"),
        _c("output_tokens", "integer", "llm.output_tokens"),
        _c("cost_usd", "real", "llm.cost_usd"),
        _c("params", "json", "llm.params"),
        _c("cached_input_tokens", "integer", "llm.cached_input_tokens"),
        _c("reasoning_tokens", "integer", "llm.reasoning_tokens"),
        _c("finish_reason", "text", "llm.finish_reason", form="text"),
        _c("response_model", "text", "llm.response_model", form="text"),
        _c("time_to_first_chunk_ms", "real", "llm.time_to_first_chunk_ms"),
        _c("tool_calls", "json", "llm.tool_calls"),
        _c("incomplete", "integer", "llm.incomplete", form="flag", null=False),
        # The LLM span's parent (the step attempt it was made in), repeated here so that
        # tokens and cost per step are read from one index (migration 0003_query).
        _c("parent_span_id", "text", "parent_span_id", internal=True),
    ),
    key=("span_id",),
    conflict="replace",
)
"""One row per LLM call, from a ``SpanRecord`` that has ``llm``."""

LOGS = Table(
    "logs",
    (
        _c("run_id", "text", "run_id", null=False),
        _c("span_id", "text", "span_id", null=False),
        _c("seq", "integer", "seq", null=False),
        _c("ts", "text", "ts_ns", form="time", null=False),
        _c("level", "text", "level", null=False),
        _c("logger", "text", "logger", form="text", null=False),
        _c("message", "text", "message", form="text", null=False),
        _c("exception", "text", "exception", form="text"),
        _c("attributes", "json"),
    ),
    key=("run_id", "span_id", "seq"),
    conflict="ignore",
)
"""One row per log record, from a ``LogLine``; a record written twice is stored once."""


@dataclass(frozen=True, slots=True)
class ScoreLine:
    """The record a ``scores`` row is written from (``steptrace.store.scores.line``)."""

    score_id: str
    run_id: str
    span_id: str | None
    step: str | None
    name: str
    kind: str
    value: float | None
    label: str | None
    rationale: str | None
    source: str
    judge_run_id: str | None
    created_ns: int


SCORES = Table(
    "scores",
    (
        _c("score_id", "text", "score_id", null=False),
        _c("run_id", "text", "run_id", null=False, on_conflict="fixed"),
        _c("span_id", "text", "span_id", on_conflict="fixed"),
        _c("step", "text", "step", form="text", on_conflict="keep"),
        _c("name", "text", "name", form="text", null=False, on_conflict="fixed"),
        _c("kind", "text", "kind", null=False),
        _c("value", "real", "value"),
        _c("label", "text", "label", form="text"),
        _c("rationale", "text", "rationale", form="text"),
        _c("source", "text", "source", null=False, on_conflict="fixed"),
        _c("judge_run_id", "text", "judge_run_id"),
        _c("created_at", "text", "created_ns", form="time", null=False, on_conflict="fixed"),
        _c("updated_at", "text", "created_ns", form="time", null=False),
    ),
    key=("score_id",),
    conflict="merge",
)
"""One row per score on a run or a span attempt; scoring a target again with the same
name and source updates its row (``created_at`` stays the first time's)."""

DATASETS = Table(
    "datasets",
    (
        _c("name", "text", null=False),
        _c("step", "text"),
        _c("description", "text"),
        _c("created_at", "text", null=False),
    ),
    key=("name",),
)
"""One row per dataset."""

DATASET_ITEMS = Table(
    "dataset_items",
    (
        _c("item_id", "text", null=False),
        _c("dataset", "text", null=False),
        _c("seq", "integer", null=False),
        _c("step", "text", null=False),
        _c("step_key", "text"),
        _c("source_run_id", "text"),
        _c("source_span_id", "text"),
        _c("input", "json"),
        _c("recorded_output", "json"),
        _c("reference", "json"),
        _c("corrected_at", "text"),
        _c("corrected_by", "text"),
        _c("created_at", "text", null=False),
    ),
    key=("item_id",),
)
"""One row per dataset item: a recorded step occurrence's input, and the reference an
output is judged against (the recorded output, or a human correction)."""

EXPERIMENTS = Table(
    "experiments",
    (
        _c("name", "text", null=False),
        _c("dataset", "text", null=False),
        _c("target", "text", null=False),
        _c("mode", "text", null=False),
        _c("evaluators", "json"),
        _c("params", "json"),
        _c("code_version", "json"),
        _c("status", "text", null=False),
        _c("started_at", "text", null=False),
        _c("ended_at", "text"),
    ),
    key=("name",),
)
"""One row per experiment: today's code of a step (or of the workflow from a step) run
over a dataset."""

EXPERIMENT_ITEMS = Table(
    "experiment_items",
    (
        _c("experiment", "text", null=False),
        _c("item_id", "text", null=False),
        _c("run_id", "text"),
        _c("span_id", "text"),
        _c("status", "text", null=False),
        _c("output", "json"),
        _c("error", "json"),
        _c("duration_ms", "real"),
        _c("cost_usd", "real"),
        _c("input_tokens", "integer"),
        _c("output_tokens", "integer"),
    ),
    key=("experiment", "item_id"),
)
"""One row per dataset item an experiment ran: the run that executed it and what the
step produced there."""

OWNERS = Table(
    "owners",
    (
        _c("owner", "text", null=False),
        _c("host", "text", null=False),
        _c("pid", "integer", null=False),
        _c("process_started_at", "text"),
        _c("started_at", "text", null=False),
        _c("heartbeat_at", "text", null=False),
        _c("ended_at", "text"),
    ),
    key=("owner",),
)
"""One row per process that recorded runs (``liveness``)."""

OTEL_EXPORT = Table(
    "otel_export",
    (
        _c("reported_at", "text", null=False),
        _c("process", "text", null=False),
        _c("target", "text", null=False),
        _c("interval_s", "real", null=False),
        _c("exported", "integer", null=False),
        _c("dropped_queue_full", "integer", null=False),
        _c("dropped_failed", "integer", null=False),
        _c("dropped_at_exit", "integer", null=False),
        _c("last_error", "text"),
    ),
)
"""One row per report of spans the OTLP export dropped."""

STORE_HEALTH = Table(
    "store_health",
    (
        _c("reported_at", "text", null=False),
        _c("process", "text", null=False),
        _c("store", "text", null=False),
        _c("interval_s", "real", null=False),
        _c("written", "integer", null=False),
        _c("spilled", "integer", null=False),
        _c("replayed", "integer", null=False),
        _c("quarantined", "integer", null=False),
        _c("lost", "integer", null=False),
        _c("sanitized", "integer", null=False),
        _c("last_error", "text"),
    ),
)
"""One row per report of a process whose writes were spilled, quarantined or lost."""

STEPS = Table(
    "steps",
    (
        _c("run_id", "text"),
        _c("workflow", "text"),
        _c("run_status", "text"),
        _c("span_id", "text"),
        _c("parent_span_id", "text"),
        _c("kind", "text"),
        _c("name", "text"),
        _c("step_key", "text"),
        _c("occurrence", "integer"),
        _c("attempt", "integer"),
        _c("is_final_attempt", "integer"),
        _c("status", "text"),
        _c("started_at", "text"),
        _c("ended_at", "text"),
        _c("duration_ms", "real"),
        _c("input", "json"),
        _c("output", "json"),
        _c("error", "json"),
        _c("attributes", "json"),
        _c("input_hash", "text"),
    ),
    view=True,
)
"""The view of step and tool attempts, documented for ``steptrace sql``."""

LLM = Table(
    "llm",
    (
        _c("run_id", "text"),
        _c("span_id", "text"),
        _c("parent_span_id", "text"),
        _c("step", "text"),
        _c("step_key", "text"),
        _c("step_attempt", "integer"),
        _c("provider", "text"),
        _c("model", "text"),
        _c("response_model", "text"),
        _c("status", "text"),
        _c("started_at", "text"),
        _c("ended_at", "text"),
        _c("duration_ms", "real"),
        _c("input_tokens", "integer"),
        _c("output_tokens", "integer"),
        _c("cached_input_tokens", "integer"),
        _c("reasoning_tokens", "integer"),
        _c("cost_usd", "real"),
        _c("finish_reason", "text"),
        _c("messages", "json"),
        _c("params", "json"),
        _c("response", "json"),
        _c("tool_calls", "json"),
        _c("error", "json"),
    ),
    view=True,
)
"""The view of LLM calls with the step each was made in."""

TABLES: tuple[Table, ...] = (
    RUNS,
    SPANS,
    LLM_CALLS,
    LOGS,
    OWNERS,
    OTEL_EXPORT,
    STORE_HEALTH,
    SCORES,
    DATASETS,
    DATASET_ITEMS,
    EXPERIMENTS,
    EXPERIMENT_ITEMS,
    STEPS,
    LLM,
)
"""Every table and view the migrations create (``_migrations`` aside)."""

WRITTEN: tuple[Table, ...] = (RUNS, SPANS, LLM_CALLS, LOGS, SCORES)
"""The tables a batch of records is written to, in the order a batch writes them (a
step attempt's scores, from its checks, travel with its ``SpanRecord``)."""

JSON_NAMES: frozenset[str] = frozenset().union(*(t.json_names for t in TABLES))
"""Columns holding JSON, by name (a name means JSON in every table and view it is in)."""

RUN_FIELDS: tuple[str, ...] = tuple(c.name for c in RUNS.columns if not c.internal)
"""The ``runs`` columns a run is read and exported as (``RunRecord``'s fields)."""


def named(names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row of a SELECT of ``names`` (``Table.select``), by column name."""
    return dict(zip(names, row, strict=True))


# --- what a second write of a row does -------------------------------------------------


def conflict_clause(table: Table) -> str:
    """The ``ON CONFLICT`` clause of an insert into ``table`` (both engines): the rows
    already stored merge with, give way to, or ignore the new ones as the table says."""
    target = f"ON CONFLICT ({', '.join(table.key)})"
    if table.conflict == "ignore":
        return f"{target} DO NOTHING"
    parts: list[str] = []
    for c in table.columns:
        if c.name in table.key or not c.source:
            continue
        if table.conflict == "replace" or c.on_conflict == "set":
            parts.append(f"{c.name} = excluded.{c.name}")
        elif c.on_conflict == "keep":
            parts.append(f"{c.name} = coalesce(excluded.{c.name}, {table.name}.{c.name})")
    clause = f"{target} DO UPDATE SET {', '.join(parts)}"
    guard = table.guard
    if guard is not None:
        # The guard's value is a constant of this module, never text from outside.
        g, v, e, t = guard.column, guard.value, guard.epoch, table.name
        clause += (
            f" WHERE excluded.{e} > {t}.{e} OR (excluded.{e} = {t}.{e}"
            f" AND NOT (excluded.{g} = '{v}' AND {t}.{g} <> '{v}'))"
        )
    return clause


class _Record(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


R = TypeVar("R", bound=_Record)


class Collapse:
    """A batch's records for ``table`` with one record per key: what writing them all, in
    order, leaves in the row (the table's ``conflict`` rule, its guard, and each
    column's ``on_conflict``), so that an engine writes each row once. A column whose
    source is shared with a column that is set (a run's start time: ``started_at`` is
    fixed, ``duration_ms`` set) takes it from the newer record."""

    def __init__(self, table: Table) -> None:
        self.table = table
        sources = [c.source for c in table.columns if c.name in table.key]
        self.key = operator.attrgetter(*(s[0] for s in sources))
        moving = {s for c in table.written if c.on_conflict != "fixed" for s in c.source}
        self.fixed = tuple(
            dict.fromkeys(
                s
                for c in table.written
                if c.on_conflict == "fixed" and c.name not in table.key
                for s in c.source
                if s not in moving
            )
        )
        self.keep = tuple(
            dict.fromkeys(s for c in table.written if c.on_conflict == "keep" for s in c.source)
        )
        guard = table.guard
        self.guard = (
            None
            if guard is None
            else (
                table.column(guard.column).source[0],
                guard.value,
                table.column(guard.epoch).source[0],
            )
        )
        merged_by = [*self.fixed, *self.keep, *(self.guard[::2] if self.guard else [])]
        if any("." in a for a in merged_by):
            raise ValueError(f"{table.name}: records are merged by their own attributes")

    def __call__(self, records: Iterable[R]) -> list[R]:
        if self.table.conflict == "replace":  # the common case, in one pass
            return list({self.key(rec): rec for rec in records}.values())
        latest: dict[Any, R] = {}
        for rec in records:
            key = self.key(rec)
            before = latest.get(key)
            if before is not None:
                merged = self._merge(before, rec)
                if merged is None:
                    continue
                rec = merged
            latest[key] = rec
        return list(latest.values())

    def _merge(self, before: R, new: R) -> R | None:
        conflict = self.table.conflict
        if conflict == "ignore":
            return None
        if conflict == "replace":
            return new
        if self.guard is not None:
            attr, value, epoch = self.guard
            if getattr(new, epoch) < getattr(before, epoch):
                return None
            if (
                getattr(new, epoch) == getattr(before, epoch)
                and getattr(new, attr) == value
                and getattr(before, attr) != value
            ):
                return None
        changes = {
            a: getattr(before, a) for a in self.fixed if getattr(new, a) != getattr(before, a)
        }
        for a in self.keep:
            if getattr(new, a) is None and getattr(before, a) is not None:
                changes[a] = getattr(before, a)
        return dataclasses.replace(new, **changes) if changes else new
