"""Field indexes (``steptrace index STEP FIELD``, ``Store.index_field``) and the
look-ups that use them.

Indexing a step's field makes two expression indexes over that step's attempts (partial
indexes: only rows of that step name are in them):

- by time, ``(name, started_at, run_id, step_key, attempt, value)``: ``distribution``
  reads the field from the index instead of parsing each output;
- by value, ``(name, value, run_id)`` (the name too, so that SQLite's planner prefers
  it to the index by time for a range of values): a ``--where`` predicate on the field
  that compares it with a text or a number (``= < <= > >=``) and is *selective* is
  answered by first looking up the runs whose attempts hold such a value (when fewer
  than ``FEW_PER_RUN`` attempts per run the page needs do, or always when every
  matching run is wanted, as a count), then checking the exact predicate on those runs
  only. A predicate that matches many rows keeps the newest-first check run by run,
  which finds a page within a few runs.

The look-up is a superset of the predicate's runs (any attempt, not only the final one;
a value index orders values of every JSON type), so the runs listed and their order are
exactly those found without the index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import orjson

from steptrace.errors import QueryError
from steptrace.query.where import Predicate, parse_predicate, score_name, step_field
from steptrace.record import stored_name
from steptrace.store.dialect import Dialect, Sql, compose, index_literal, index_literal_ok

if TYPE_CHECKING:
    from steptrace.query.distribution import Reader

FEW_PER_RUN = 40
"""A page that needs N runs (its size plus its offset) is chosen among the runs the
index lists when fewer than ``FEW_PER_RUN`` x N attempts hold the value (a page of 50:
2,000); past that, run by run, newest first. Checking one listed run costs about what
checking one run of the newest-first walk does, and the walk finds N matches after
about N x runs / matches runs: so the list wins while matches are fewer than about
sqrt(N x runs); 40 x N is that for N = 50 on a store of 100,000 runs, and errs towards
the list (a few ms) on smaller stores and towards the walk on larger ones."""

_LOOKUP_OPS = ("=", "<", "<=", ">", ">=")


def _digest(step: str, column: str, path: Sequence[str | int]) -> str:
    return hashlib.sha1(orjson.dumps([step, column, list(path)])).hexdigest()[:16]


def field_index_name(step: str, field: str) -> str:
    """The name of the by-time index of ``step``'s ``field``."""
    column, path = step_field(field)
    return f"field_{_digest(step, column, path)}"


def value_index_name(step: str, field: str) -> str:
    """The name of the by-value index of ``step``'s ``field``."""
    column, path = step_field(field)
    return _value_index_name(step, column, path)


def _value_index_name(step: str, column: str, path: Sequence[str | int]) -> str:
    return f"field_{_digest(step, column, path)}_value"


def indexable(step: str, path: Sequence[str | int]) -> bool:
    """Whether a field index can be made for the step and path: its SQL spells them
    out (an index cannot take parameters), so only names and keys of a strict character
    set are accepted (``dialect.index_literal``)."""
    return index_literal_ok(step) and all(index_literal_ok(p) for p in path if isinstance(p, str))


def _indexed_field(step: str, field: str) -> tuple[str, str, list[str | int]]:
    """(stored step name, column, path) of a field that can be indexed; ``QueryError``
    otherwise."""
    if score_name(field) is not None:
        raise QueryError(
            f"{field} is a score, read from the scores' own indexes; an output field "
            f"named score is output.{field}"
        )
    column, path = step_field(field)
    step = stored_name(step)
    if not indexable(step, path):
        raise QueryError(
            f"cannot index {step}.{field}: an index's SQL spells out the step name and the "
            "field's keys, so they may hold only letters, digits, spaces and _ . : / < > @ "
            "# + - (dist reads any field without an index)"
        )
    return step, column, path


def field_index_sql(d: Dialect, step: str, field: str) -> tuple[str, str]:
    """(name, CREATE INDEX statement) of the by-time index that lets
    ``distribution(step, field)`` read the field from the index instead of parsing
    every output. ``QueryError`` for a step name or field key ``indexable`` refuses."""
    step, column, path = _indexed_field(step, field)
    name = field_index_name(step, field)
    expr = d.json_at(column, path, literal=True)
    return name, (
        f"CREATE INDEX IF NOT EXISTS {name} ON spans (name, started_at, run_id, step_key, "
        f"attempt, ({expr.text})) WHERE name = {index_literal(step)} AND step_key IS NOT NULL"
    )


def value_index_sql(d: Dialect, step: str, field: str) -> tuple[str, str]:
    """(name, CREATE INDEX statement) of the by-value index that serves ``--where``
    look-ups of ``step``'s ``field``."""
    step, column, path = _indexed_field(step, field)
    name = _value_index_name(step, column, path)
    key = d.json_index_key(column, path)
    return name, (
        f"CREATE INDEX IF NOT EXISTS {name} ON spans (name, {key.text}, run_id) "
        f"WHERE name = {index_literal(step)} AND step_key IS NOT NULL"
    )


def value_lookup(pred: Predicate, d: Dialect) -> tuple[str, Sql] | None:
    """(index name, query of run ids) for a predicate a by-value index can serve: a
    step's input or output field compared with a text or a number by ``= < <= > >=``.
    The query lists (with repeats) every run with an attempt of the step whose value
    satisfies the comparison: a superset of the runs ``pred`` holds for. None for any
    other predicate."""
    value = pred.value
    if (
        pred.step is None
        or pred.column not in ("input", "output")
        or pred.path is None
        or pred.op not in _LOOKUP_OPS
        or isinstance(value, bool)
        or not isinstance(value, str | int | float)
        or not indexable(pred.step, pred.path)
    ):
        return None
    if pred.bare and not isinstance(value, str):
        return None  # would match its text too, which the index does not list
    try:
        wanted = d.json_index_value(value)
    except (TypeError, orjson.JSONEncodeError):  # a number JSON cannot hold
        return None
    key = d.json_index_key(f"s.{pred.column}", pred.path)
    return _value_index_name(pred.step, pred.column, pred.path), compose(
        f"SELECT s.run_id FROM spans s WHERE s.name = {index_literal(pred.step)} "
        f"AND s.step_key IS NOT NULL AND {{}} {pred.op} {{}}",
        key,
        wanted,
    )


def listed_runs(
    db: Reader, where: Sequence[str], *, need: int | None, exists: Callable[[str], bool]
) -> dict[str, Sql]:
    """For each ``where`` predicate a by-value index serves (``exists`` says whether an
    index of that name is in the store) and that is selective for a page that needs
    ``need`` runs (``FEW_PER_RUN``), or for every such one when all matching runs are
    wanted (``need`` None: a count): the query of the runs that may satisfy it
    (``value_lookup``), by the predicate's text (``RunFilter.sql``'s ``listed``)."""
    out: dict[str, Sql] = {}
    for text in where:
        found = value_lookup(parse_predicate(text), db.dialect)
        if found is None or not exists(found[0]):
            continue
        runs = found[1]
        if need is not None:
            cap = FEW_PER_RUN * max(need, 1)
            few = db.rows(f"SELECT count(*) FROM ({runs.text} LIMIT {cap}) few", runs.params)
            if few[0][0] >= cap:
                continue
        out[text] = runs
    return out
