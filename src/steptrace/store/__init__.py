"""The store: where runs are written (by the background writer) and read (by ``Store``).

``Store`` is a facade over one read engine (``store/engine.py``: SQLite, PostgreSQL or
memory, picked by the URL's scheme); ``open_writer(url)`` gives the background writer
the same engine's write side. ``Store`` answers the questions of ``steptrace.query.distribution``,
``steptrace.query.diff``, ``steptrace.query.compare`` and ``steptrace.query.export`` through thin
methods, after writing what this process itself recorded; ``Store.sql`` runs
read-only SQL in a way the engine itself keeps from writing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

from steptrace.config import get_config
from steptrace.errors import QueryError
from steptrace.errors import RunNotFound as RunNotFound  # re-exported: older imports
from steptrace.query.where import RunFilter
from steptrace.record import stored_form, stored_name
from steptrace.store import scores
from steptrace.store.columns import JSON_NAMES, LLM_CALLS, LOGS, RUN_FIELDS, RUNS, SPANS, named
from steptrace.store.dialect import Dialect
from steptrace.store.engine import Engine, Queries, Rows, WriterBackend
from steptrace.store.engines import open_read_engine, open_writer, query_params
from steptrace.store.model import DerivedRun, RunRecord, SpanView, loads
from steptrace.store.schema import migrate_store, same_store
from steptrace.store.scores import Score

T = TypeVar("T")

if TYPE_CHECKING:
    from steptrace.query.compare import Comparison
    from steptrace.query.diff import RunDiff
    from steptrace.query.distribution import Distribution
    from steptrace.query.overview import RunTotals, RunWindow, StoreStatus
    from steptrace.query.score_columns import ScoreCell
    from steptrace.query.scores import ScoreStats
    from steptrace.query.sessions import SessionSummary
    from steptrace.query.stats import StepStats


_SPAN_FIELDS = tuple(n for n in SPANS.names if n in {f.name for f in fields(SpanView)})
"""The ``spans`` columns a ``SpanView`` is made of (each a field of the same name)."""
_LLM_FIELDS = tuple(n for n in LLM_CALLS.names if n not in SPANS.names)
"""The ``llm_calls`` columns of a span's ``llm`` dict (each a key of the same name): those
the span does not have itself."""
_SPANS_OF_RUN = (
    f"SELECT {SPANS.select(_SPAN_FIELDS, 's')}, {LLM_CALLS.select(_LLM_FIELDS, 'l')}"
    " FROM spans s LEFT JOIN llm_calls l ON l.span_id = s.span_id"
    " WHERE s.run_id = ? ORDER BY s.started_at, {tiebreak}"
)
_SPANS_OF_RUNS = (
    f"SELECT {SPANS.select(_SPAN_FIELDS, 's')}, {LLM_CALLS.select(_LLM_FIELDS, 'l')}, s.run_id"
    " FROM spans s LEFT JOIN llm_calls l ON l.span_id = s.span_id"
    " WHERE s.run_id IN ({marks}) ORDER BY s.run_id, s.started_at, {tiebreak}"
)
_LOG_FIELDS = ("span_id", "ts", "level", "logger", "message", "exception")
_LOGS_OF_RUN = f"SELECT {LOGS.select(_LOG_FIELDS)} FROM logs WHERE run_id = ? ORDER BY span_id, seq"
_LOGS_OF_RUNS = (
    f"SELECT {LOGS.select(_LOG_FIELDS)}, run_id FROM logs"
    " WHERE run_id IN ({marks}) ORDER BY run_id, span_id, seq"
)
_SCORES_OF_RUN = f"SELECT {scores.READ_COLUMNS} FROM scores WHERE run_id = ? ORDER BY name, source"
_SCORES_OF_RUNS = (
    f"SELECT {scores.READ_COLUMNS} FROM scores WHERE run_id IN ({{marks}}) ORDER BY name, source"
)
READ_RUNS_BATCH = 200
"""Runs ``Store.read_runs`` reads with one query per table."""


_DERIVED = (
    "SELECT run_id, workflow, status, started_at, CASE WHEN forked_from = ? THEN 1 ELSE 0 END,"
    " forked_at FROM runs WHERE forked_from = ? OR replay_of = ?"
    " ORDER BY started_at DESC, run_id DESC"
)
"""The runs forked from or replaying one run (each condition served by its partial
index): whether it is a fork, then its fork step."""

SQL_TIMEOUT_S = 30.0
"""How long ``Store.sql`` lets a statement run, unless told otherwise."""


_RUN_COLUMNS = RUNS.select(RUN_FIELDS)


_RUN_JSON = tuple(n for n in RUN_FIELDS if n in RUNS.json_names)


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    run = named(RUN_FIELDS, row)
    for name in _RUN_JSON:
        run[name] = loads(run[name])
    run["tags"] = run["tags"] or []
    return RunRecord(**run)


_SPAN_WIDTH = len(_SPAN_FIELDS) + len(_LLM_FIELDS)
"""The columns of a ``spans`` row joined with its ``llm_calls`` row."""
_SPAN_JSON = tuple(i for i, n in enumerate(_SPAN_FIELDS) if n in JSON_NAMES)
_SPAN_ID = _SPAN_FIELDS.index("span_id")
_LLM_JSON = tuple(n for n in _LLM_FIELDS if n in JSON_NAMES)


def _decoded(values: Sequence[Any], at: Sequence[int]) -> list[Any]:
    out = list(values)
    for i in at:
        if out[i] is not None:
            out[i] = loads(out[i])
    return out


def _span_from_row(r: Sequence[Any], logs: list[dict[str, Any]]) -> SpanView:
    """A span of its ``spans`` columns then its ``llm_calls`` columns (NULL for a span
    that is not an LLM call)."""
    n = len(_SPAN_FIELDS)
    span = SpanView(**dict(zip(_SPAN_FIELDS, _decoded(r[:n], _SPAN_JSON), strict=True)), logs=logs)
    span.attributes = span.attributes or {}
    if r[n] is not None:  # the provider
        row = dict(zip(_LLM_FIELDS, r[n:_SPAN_WIDTH], strict=True))
        for name in _LLM_JSON:
            row[name] = loads(row[name])
        inp = span.input if isinstance(span.input, dict) else {}
        span.llm = row | {
            "messages": inp.get("messages"),
            "response": span.output,
            "params": row["params"] or {},
            "tool_calls": row["tool_calls"] or [],
            "incomplete": bool(row["incomplete"]),
        }
    return span


def _assemble(
    run_rows: Rows, span_rows: Rows, log_rows: Rows, score_rows: Rows, *, keyed: bool = False
) -> list[RunRecord]:
    """Runs made of their rows: ``runs`` rows, the ``spans`` rows (joined with
    ``llm_calls``) in start order, the ``logs`` rows and the ``scores`` rows; of one run,
    or (``keyed``: each span and log row ends with its run id) of several."""
    runs = [_run_from_row(r) for r in run_rows]
    by_id = {run.run_id: run for run in runs}
    only = runs[0].run_id if runs else ""
    logs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for log_row in log_rows:
        entry = named(_LOG_FIELDS, log_row[: len(_LOG_FIELDS)])
        if not entry["exception"]:
            del entry["exception"]
        run_id = log_row[-1] if keyed else only
        logs.setdefault((run_id, entry.pop("span_id")), []).append(entry)
    for run in runs:
        run.logs = logs.get((run.run_id, run.span_id), [])
    span_scores: dict[tuple[str, str], list[Score]] = {}
    for score_row in score_rows:
        score = scores.from_row(score_row)
        owner = by_id.get(score.run_id)
        if owner is not None:
            owner.scores.append(score)
            if score.span_id is not None:
                span_scores.setdefault((score.run_id, score.span_id), []).append(score)
    for r in span_rows:
        owner = by_id.get(r[_SPAN_WIDTH] if keyed else only)
        if owner is not None:
            span = _span_from_row(r, logs.get((owner.run_id, r[_SPAN_ID])) or [])
            span.scores = span_scores.get((owner.run_id, span.span_id), [])
            owner.spans.append(span)
    return runs


class StoreReader:
    """What the query modules use of a ``Store`` (``steptrace.query.distribution.Reader``): the
    engine's answers, after this process's own records are written."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.dialect: Dialect = store.dialect

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        self._store.flush_own_writes()
        return self._store.engine.rows(sql, query_params(params))

    def rows_of_runs(self, sql: str, params: Sequence[Any], runs: int) -> Rows:
        self._store.flush_own_writes()
        return self._store.engine.rows_of_runs(sql, query_params(params), runs)

    def rows_many(self, queries: Queries, transform: Callable[[Rows], T]) -> list[T]:
        self._store.flush_own_writes()
        return self._store.engine.rows_many(
            [(sql, query_params(params)) for sql, params in queries], transform
        )

    def run(self, run_id: str) -> RunRecord:
        return self._store.run(run_id)


class Store:
    """Read access to a store. ``Store.open()`` opens the configured one.

    A ``Store`` is a facade over one engine (``steptrace.store.engine``): SQLite for a
    path, PostgreSQL for a ``postgresql://`` URL, memory for ``memory://NAME``; each
    answers the same questions with the same results. One ``Store`` may be shared by
    threads.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = engine.url
        """The store's URL as messages show it (a password masked)."""
        self.dialect: Dialect = engine.dialect
        self._reader = StoreReader(self)

    @classmethod
    def open(cls, url: str | None = None) -> Store:
        """Open the store at ``url`` (default: ``STEPTRACE_STORE``, else
        ``./.steptrace/steptrace.db``) for queries, applying the migrations of this
        version to a store an older one wrote. Reading creates nothing: a SQLite file
        that does not exist is a ``ConfigError`` naming it (a workflow run, or
        ``steptrace migrate``, creates a store)."""
        from steptrace.store.writer import recover

        url = url or get_config().store_url()
        engine = open_read_engine(url)
        recover(url)
        return cls(engine)

    # -- plumbing -----------------------------------------------------------------
    def flush_own_writes(self) -> None:
        """Before a query: what this process recorded is written, and (every few
        seconds) runs of processes that died are marked interrupted."""
        from steptrace.store import writer

        writer.recover(self.engine.dsn)
        sink = writer.current_sink()
        if sink is not None and same_store(sink.url, self.url):
            sink.flush(timeout_s=5.0)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        self.flush_own_writes()
        return self.engine.rows(sql, query_params(params))

    def close(self) -> None:
        self.engine.close()

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
        *,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
        forked_from: str | None = None,
        replay_of: str | None = None,
        derived: bool = False,
        originals: bool = False,
        session: str | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first, without their spans: ``last`` of them after skipping
        ``offset`` (a page). ``since``/``until`` bound the start time (ISO-8601, or
        ``"2h"``/``"7d"`` before now); ``tag`` keeps runs carrying every tag given;
        ``where`` keeps runs matching every predicate, e.g.
        ``"classify.output.classification = billing"`` or ``"classify.attempts > 1"``
        (see ``steptrace.query.where``); ``forked_from``/``replay_of`` keep the forks or
        replays of the run with that id, ``derived`` every fork and replay, ``originals``
        every run that is neither; ``session`` the runs of that session (its exact id).
        Raises ``QueryError`` for a malformed filter."""
        runs = RunFilter.of(
            workflow, status, since, until, tag, where, forked_from, replay_of, derived, originals
        )
        runs.session = session
        clause, params = self._where(runs, need=last + offset)
        rows = self._rows(
            f"SELECT {_RUN_COLUMNS} FROM runs{clause} "
            "ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?",
            [*params, last, offset],
        )
        return [_run_from_row(r) for r in rows]

    def count_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        *,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
        forked_from: str | None = None,
        replay_of: str | None = None,
        derived: bool = False,
        originals: bool = False,
        session: str | None = None,
    ) -> int:
        """How many runs ``runs`` with the same filters would list without a limit."""
        runs = RunFilter.of(
            workflow, status, since, until, tag, where, forked_from, replay_of, derived, originals
        )
        runs.session = session
        clause, params = self._where(runs, need=None)
        return int(self._rows(f"SELECT count(*) FROM runs{clause}", params)[0][0])

    def sessions(
        self,
        workflow: str | None = None,
        last: int = 20,
        offset: int = 0,
        *,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
    ) -> list[SessionSummary]:
        """Sessions (runs grouped by ``session_id``), the most recently active first:
        ``last`` of them after skipping ``offset``, each with its run count, first and
        last start, last end, runs by status and workflows, counting only the runs of
        ``workflow`` started in ``[since, until)`` when given. A session's runs are
        ``runs(session=…)``. See ``steptrace.query.sessions``."""
        from steptrace.query.sessions import sessions

        return sessions(self._reader, workflow, last, offset, since=since, until=until)

    def count_sessions(
        self,
        workflow: str | None = None,
        *,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
    ) -> int:
        """How many sessions ``sessions`` with the same filters would list without a
        limit."""
        from steptrace.query.sessions import count_sessions

        return count_sessions(self._reader, workflow, since=since, until=until)

    def _where(self, runs: RunFilter, *, need: int | None) -> tuple[str, list[Any]]:
        """`` WHERE …`` (or nothing) choosing ``runs`` for a page that needs ``need`` of
        them (its size plus its offset; None: all of them are wanted, a count), and its
        parameters. A predicate on an indexed field is looked up in the field's index
        first when that is quicker (``steptrace.query.indexes``)."""
        from steptrace.query.indexes import listed_runs

        listed = listed_runs(self._reader, runs.where, need=need, exists=self._index_exists)
        conds, params = runs.sql(self.dialect, every=need is None, listed=listed)
        return (f" WHERE {' AND '.join(conds)}" if conds else ""), params

    def _index_exists(self, name: str) -> bool:
        return self.engine.index_exists(name)

    def derived(self, run_id: str) -> list[DerivedRun]:
        """The runs made from this run (id or unambiguous prefix), newest first: its
        forks (``relation`` ``"fork"``, ``forked_at`` the step key the fork started at)
        and its replays (``"replay"``, ``forked_at`` None). Each is ``{"run_id",
        "workflow", "status", "started_at", "relation", "forked_at"}``."""
        source = self.resolve(run_id)
        rows = self._rows(_DERIVED, [source, source, source])
        return [
            DerivedRun(
                run_id=r[0],
                workflow=r[1],
                status=r[2],
                started_at=r[3],
                relation="fork" if r[4] else "replay",
                forked_at=r[5] if r[4] else None,
            )
            for r in rows
        ]

    def resolve(self, run_id: str) -> str:
        """The full id of the run whose id is ``run_id`` or starts with it."""
        rows = self._rows("SELECT run_id FROM runs WHERE run_id = ?", [run_id])
        if rows:
            return str(rows[0][0])
        rows = self._rows(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
            [run_id, run_id + "\U0010ffff"],
        )
        if not rows:
            raise RunNotFound(f"no run with id {run_id!r} in {self.url}")
        if len(rows) > 1:
            raise RunNotFound(f"run id prefix {run_id!r} is ambiguous: give more characters")
        return str(rows[0][0])

    def run(self, run_id: str) -> RunRecord:
        """The run with this id (or unambiguous id prefix), with all its spans and
        scores."""

        def read(run_id: str) -> list[list[tuple[Any, ...]]]:
            self.flush_own_writes()
            key = query_params([run_id])
            return self.engine.rows_batch(
                [
                    (f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", key),
                    (_SPANS_OF_RUN.format(tiebreak=self.engine.tiebreak), key),
                    (_LOGS_OF_RUN, key),
                    (_SCORES_OF_RUN, key),
                ]
            )

        batch = read(run_id)
        if not batch[0]:  # a prefix
            batch = read(self.resolve(run_id))
        (run,) = _assemble(*batch)
        return run

    def read_runs(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """The runs with these ids (full ids, not prefixes), with all their spans, in the
        order given; an id no run has is left out. A few queries per ``READ_RUNS_BATCH``
        runs, where ``run`` makes a few per run."""
        self.flush_own_writes()
        found: dict[str, RunRecord] = {}
        unique = list(dict.fromkeys(run_ids))
        for at in range(0, len(unique), READ_RUNS_BATCH):
            ids = query_params(unique[at : at + READ_RUNS_BATCH])
            marks = ", ".join("?" * len(ids))
            batch = self.engine.rows_batch(
                [
                    (f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id IN ({marks})", ids),
                    (_SPANS_OF_RUNS.format(marks=marks, tiebreak=self.engine.tiebreak), ids),
                    (_LOGS_OF_RUNS.format(marks=marks), ids),
                    (_SCORES_OF_RUNS.format(marks=marks), ids),
                ]
            )
            for run in _assemble(*batch, keyed=True):
                found[run.run_id] = run
        return [found[r] for r in unique if r in found]

    # -- scores ---------------------------------------------------------------------
    def target(self, target: str) -> tuple[str, str | None, str | None]:
        """``(run_id, span_id, step)`` of a score's target: a run id (or unambiguous
        prefix), ``RUN/SPAN`` (a span id or unambiguous prefix within the run),
        ``RUN/STEP`` (a step key such as ``draft#0``, or a step name the run ran once:
        its last attempt), or a span id on its own. The run's root span is the run
        (``span_id`` None); ``step`` is the span's name."""
        run_part, slash, span_part = target.partition("/")
        if not slash:
            rows = self._rows("SELECT run_id, span_id, name FROM spans WHERE span_id = ?", [target])
            if rows:
                return str(rows[0][0]), str(rows[0][1]), str(rows[0][2])
            rows = self._rows("SELECT run_id FROM runs WHERE span_id = ?", [target])
            if len(rows) == 1:
                return str(rows[0][0]), None, None
        run_id = self.resolve(run_part)
        if not slash or not span_part:
            return run_id, None, None
        rows = self._rows(
            "SELECT span_id, name FROM spans WHERE run_id = ? AND span_id >= ? "
            "AND span_id < ? LIMIT 2",
            [run_id, span_part, span_part + "\U0010ffff"],
        )
        if len(rows) == 1:
            return run_id, str(rows[0][0]), str(rows[0][1])
        if rows:
            raise RunNotFound(f"span id prefix {span_part!r} is ambiguous: give more characters")
        root = self._rows("SELECT span_id FROM runs WHERE run_id = ?", [run_id])
        if root and str(root[0][0]).startswith(span_part):
            return run_id, None, None
        return self._step_target(run_id, span_part)

    def _step_target(self, run_id: str, step: str) -> tuple[str, str, str]:
        """The last attempt of the step occurrence ``step`` names in the run: a step key
        (``draft#0``, ``outer#0/inner#1``) or a step name that occurred once."""
        rows = self._rows(
            "SELECT span_id, name, step_key, attempt FROM spans "
            "WHERE run_id = ? AND step_key IS NOT NULL",
            [run_id],
        )
        wanted = stored_form(step)
        if "#" in wanted:
            found = [r for r in rows if r[2] == wanted]
        else:
            found = [r for r in rows if r[1] == wanted]
        keys = sorted({str(r[2]) for r in found})
        if len(keys) > 1:
            raise RunNotFound(
                f"run {run_id} ran step {step!r} more than once: name the occurrence "
                f"({', '.join(keys)})"
            )
        if not found:
            raise RunNotFound(
                f"run {run_id} has no span or step {step!r} in {self.url} "
                "(give a span id, or a step name or key as `steptrace show` lists them)"
            )
        last = max(found, key=lambda r: int(r[3] or 0))
        return run_id, str(last[0]), str(last[1])

    def score(
        self,
        target: str,
        name: str,
        value: float | bool | str,
        *,
        label: str | None = None,
        rationale: str | None = None,
        source: str = "human",
        judge_run_id: str | None = None,
    ) -> Score:
        """Score a run or one span attempt (``target`` as ``Store.target`` reads it):
        ``value`` is a number, a bool or a category string, ``source`` ``human``,
        ``code`` or ``llm``. Scoring the same target again with the same name and
        source replaces the value. ``ValueError`` for a value or name that cannot be a
        score, ``RunNotFound`` for a target that is not in the store."""
        from steptrace.store import scores

        run_id, span_id, step = self.target(target)
        written = scores.line(
            run_id,
            span_id,
            step,
            name,
            value,
            label=label,
            rationale=rationale,
            source=source,
            judge_run_id=judge_run_id,
        )
        scores.write(self.engine.dsn, [written])
        found = self.scores(run_id, span_id=span_id or "", name=written.name, source=source)
        return found[0]

    def delete_score(self, target: str, name: str, source: str = "human") -> bool:
        """Remove the score ``name`` given by ``source`` on ``target`` (as
        ``Store.target`` reads it); False when there was none. ``RunNotFound`` for a
        target that is not in the store."""
        run_id, span_id, _ = self.target(target)
        return scores.delete(self.engine.dsn, run_id, span_id, stored_name(name), source)

    def scores(
        self,
        run_id: str | None = None,
        *,
        span_id: str | None = None,
        name: str | None = None,
        source: str | None = None,
        step: str | None = None,
        limit: int | None = None,
    ) -> list[Score]:
        """Stored scores, newest first: of one run (id or prefix) or of every run, one
        span's (``span_id``; ``""`` for the run's own scores), of one ``name``,
        ``source`` or ``step``."""
        from steptrace.store import scores

        conds: list[str] = []
        params: list[Any] = []
        if run_id is not None:
            conds.append("run_id = ?")
            params.append(self.resolve(run_id))
        if span_id == "":
            conds.append("span_id IS NULL")
        elif span_id is not None:
            conds.append("span_id = ?")
            params.append(span_id)
        for column, wanted in (("name", name), ("source", source), ("step", step)):
            if wanted is not None:
                conds.append(f"{column} = ?")
                params.append(stored_form(wanted))
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self._rows(
            f"SELECT {scores.READ_COLUMNS} FROM scores{where} "
            f"ORDER BY updated_at DESC, score_id{tail}",
            params,
        )
        return [scores.from_row(r) for r in rows]

    # -- questions across runs ------------------------------------------------------
    def distribution(
        self, step: str, field: str, last: int = 1000, workflow: str | None = None
    ) -> Distribution:
        """The distribution of ``field`` (a dotted path into the step's output; prefix
        ``input.`` for its input) over the last ``last`` runs that executed ``step``:
        ``{"step", "field", "runs", "occurrences", "missing", "values": [{"value",
        "count", "share"}], "numeric"}``, most common value first. Counts the final
        attempt of each occurrence. See ``steptrace.query.distribution``.

        ``field`` ``score.NAME`` is the score of that name instead
        (``score_distribution``; ``step`` ``"run"`` for the run's own scores); the
        output's field ``score`` is then ``output.score.…``."""
        from steptrace.query.distribution import distribution
        from steptrace.query.scores import RUN_STEP
        from steptrace.query.where import score_name

        name = score_name(field)
        if name is not None:
            return self.score_distribution(
                None if step == RUN_STEP else step, name, last=last, workflow=workflow
            )
        return distribution(self._reader, step, field, last, workflow)

    def score_distribution(
        self,
        step: str | None,
        name: str,
        last: int = 1000,
        workflow: str | None = None,
        *,
        source: str | None = None,
    ) -> Distribution:
        """The distribution of score ``name`` on ``step``'s attempts (None: on the runs
        themselves) over the last ``last`` runs (of ``workflow``) holding such a score,
        in ``distribution``'s shape (``field`` ``score.NAME``): the numbers,
        ``true``/``false`` or categories given, the numeric summary of numbers; of
        one ``source`` if given. See ``steptrace.query.scores``."""
        from steptrace.query.scores import score_distribution

        return score_distribution(self._reader, step, name, last, workflow, source)

    def score_stats(
        self,
        workflow: str | None = None,
        last: int | None = 1000,
        *,
        step: str | None = None,
        name: str | None = None,
        source: str | None = None,
    ) -> list[ScoreStats]:
        """Per step and score name over the scores of the last ``last`` runs (of
        ``workflow``; all runs when ``last`` is None): ``{"step", "name", "kind",
        "count", "mean", "labels"}`` (a boolean's mean is its share of
        true; ``step`` None for the run's own scores); only ``step``'s, ``name``'s or
        ``source``'s if given. See ``steptrace.query.scores``."""
        from steptrace.query.scores import score_stats

        return score_stats(self._reader, workflow, last, step=step, name=name, source=source)

    def step_stats(self, workflow: str | None = None, last: int = 1000) -> list[StepStats]:
        """Per step name over the last ``last`` runs (of ``workflow``, else of all):
        count, failures, retries, p50/p95/p99 duration, LLM tokens and cost."""
        from steptrace.query.stats import step_stats

        return step_stats(self._reader, workflow, last)

    def diff(self, run_a: str, run_b: str) -> RunDiff:
        """How run ``run_b`` differs from ``run_a``, step by step (ids or prefixes)."""
        from steptrace.query.diff import diff_runs

        return diff_runs(self.run(run_a), self.run(run_b))

    def compare(self, run_id: str, baseline: int = 100) -> Comparison:
        """The run against the last ``baseline`` successful runs of its workflow: ranked
        findings (slow, rare_value, new_value, missing_step, extra_step, more_attempts,
        cost, failed)."""
        from steptrace.query.compare import compare_run

        return compare_run(self._reader, run_id, baseline)

    def run_totals(self, run_ids: Sequence[str]) -> dict[str, RunTotals]:
        """Per run id: step calls, step attempts, LLM calls, tokens and cost (for a
        listing of runs; see ``steptrace.query.overview``)."""
        from steptrace.query.overview import run_totals

        return run_totals(self._reader, run_ids)

    def score_names(self) -> list[str]:
        """The score names in the store, sorted (``steptrace.query.score_columns``)."""
        from steptrace.query.score_columns import score_names

        return score_names(self._reader)

    def score_columns(
        self, run_ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, dict[str, ScoreCell | None]]:
        """Per run id and score name, the figure a runs table shows: the run's own score,
        else a summary of its spans' scores of that name (None: no score). One query
        for the page; see ``steptrace.query.score_columns``."""
        from steptrace.query.score_columns import score_columns

        return score_columns(self._reader, run_ids, names)

    def step_durations(
        self, step: str, workflow: str | None = None, last: int = 1000
    ) -> list[float]:
        """Durations in ms of the last ``last`` attempts of ``step``, newest first."""
        from steptrace.query.overview import step_durations

        return step_durations(self._reader, step, workflow, last)

    def status(self, reports: int = 5) -> StoreStatus:
        """Runs by status, the schema's last migration, live writer processes and the
        last ``reports`` write-trouble reports (``steptrace status``)."""
        from steptrace.query.overview import store_status

        return store_status(self._reader, reports)

    def run_window(self, workflow: str | None = None, last: int = 1000) -> RunWindow:
        """What ``step_stats(workflow, last)`` covers: how many runs, and when the
        oldest and newest of them started."""
        from steptrace.query.overview import run_window

        return run_window(self._reader, workflow, last)

    def step_names(self, workflow: str | None = None) -> list[str]:
        """The step and tool names recorded (in runs of ``workflow``), sorted."""
        from steptrace.query.overview import step_names

        return step_names(self._reader, workflow)

    def workflows(self) -> list[str]:
        """The names of the workflows that have runs in the store, sorted."""
        from steptrace.query.overview import workflows

        return workflows(self._reader)

    def index_field(self, step: str, field: str) -> str:
        """Create (if needed) the two expression indexes of ``step``'s ``field``: one by
        time, which serves ``distribution(step, field)`` from the index rather than by
        parsing each output, and one by value, which ``runs(where=…)`` and
        ``count_runs`` use to find the runs with a rare value of the field (see
        ``steptrace.query.indexes``); returns the first one's name. Building them reads
        the whole spans table (twice on SQLite)."""
        from steptrace.query.indexes import field_index_sql, value_index_sql

        name, sql = field_index_sql(self.dialect, step, field)
        _, by_value = value_index_sql(self.dialect, step, field)
        self.flush_own_writes()
        self.engine.ddl(sql)
        self.engine.ddl(by_value)
        return name

    def drop_field_index(self, step: str, field: str) -> bool:
        """Drop the indexes ``index_field(step, field)`` made; False if there were
        none."""
        from steptrace.query.indexes import field_index_name, value_index_name

        existed = False
        for name in (field_index_name(step, field), value_index_name(step, field)):
            existed = self.engine.index_exists(name) or existed
            self.engine.ddl(f"DROP INDEX IF EXISTS {name}")
        return existed

    # -- SQL --------------------------------------------------------------------------
    def sql(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        limit: int | None = None,
        timeout_s: float = SQL_TIMEOUT_S,
    ) -> list[dict[str, Any]]:
        """Rows of one read-only SQL statement as dicts (the first ``limit`` of them, if
        given), JSON columns (``input``, ``output``, ``error``, ``tags``,
        ``attributes``, ``messages``, ``params``, ``response``, ``tool_calls``)
        decoded. A statement still running after ``timeout_s`` seconds is stopped.
        Raises ``QueryError``.

        SQLite: the connection is opened read-only and in ``query_only`` mode, so the
        engine refuses any write; ``ATTACH``, transactions and setting pragmas are
        refused too. PostgreSQL: one query that reads, calling no volatile function
        (``steptrace.store.sql_guard``), on a read-only session, in a ``READ ONLY``
        transaction that is rolled back; a superuser, or a role that may reach the
        server's files or programs, is refused (docs/security.md says how to make
        a reader role)."""
        from steptrace.query.export import JSON_COLUMNS, decode_json

        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise QueryError(f"limit must be a positive number of rows, not {limit!r}")
        if not timeout_s > 0:
            raise QueryError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
        if stored_form(query) != query:
            raise QueryError("SQL error: the statement holds a NUL or a lone surrogate")
        self.flush_own_writes()
        names, rows = self.engine.sql_rows(query, query_params(params), limit, timeout_s)
        decode = [n in JSON_COLUMNS for n in names]
        return [
            {
                n: decode_json(v) if json else v
                for n, v, json in zip(names, row, decode, strict=True)
            }
            for row in rows
        ]

    # -- export -----------------------------------------------------------------------
    def export(
        self,
        dest: str | Path | IO[bytes],
        format: str = "jsonl",
        table: str = "steps",
        *,
        workflow: str | None = None,
        status: str | None = None,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
        forked_from: str | None = None,
        replay_of: str | None = None,
        derived: bool = False,
        last: int | None = None,
        step: str | None = None,
        session: str | None = None,
    ) -> int:
        """Write ``table`` (runs, steps, spans, llm or scores) for the runs the filters
        choose (those of ``runs``; all of them unless ``last``) to a file or binary
        stream as ``format`` (jsonl, csv or parquet — parquet needs pyarrow). Returns
        the number of rows written. See ``steptrace.query.export``."""
        from steptrace.query import export

        if format not in export.FORMATS:
            raise QueryError(
                f"unknown format {format!r}: choose one of {', '.join(export.FORMATS)}"
            )
        if format == "parquet":
            export.require_arrow()  # fail before creating the file
        runs = RunFilter.of(
            workflow, status, since, until, tag, where, forked_from, replay_of, derived
        )
        runs.session = session
        columns, rows = export.iter_rows(self._reader, table, runs, last=last, step=step)
        if isinstance(dest, str | Path):
            with open(dest, "wb") as out:
                return export.write(format, columns, rows, out)
        return export.write(format, columns, rows, dest)

    def to_pandas(
        self,
        table: str = "steps",
        *,
        workflow: str | None = None,
        status: str | None = None,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
        forked_from: str | None = None,
        replay_of: str | None = None,
        derived: bool = False,
        last: int | None = None,
        step: str | None = None,
        session: str | None = None,
    ) -> Any:
        """``table`` for the chosen runs as a pandas DataFrame (JSON columns decoded);
        needs pandas."""
        from steptrace.query import export

        runs = RunFilter.of(
            workflow, status, since, until, tag, where, forked_from, replay_of, derived
        )
        runs.session = session
        columns, rows = export.iter_rows(self._reader, table, runs, last=last, step=step)
        return export.to_pandas(columns, rows)


__all__ = [
    "DerivedRun",
    "QueryError",
    "RunNotFound",
    "RunRecord",
    "SpanView",
    "Store",
    "WriterBackend",
    "migrate_store",
    "open_writer",
]
