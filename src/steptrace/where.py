"""Run filters: times (``since``/``until``), tags and ``--where`` predicates, as SQL.

A predicate reads ``TARGET OP VALUE``. The target is a step's field —
``classify.output.classification``, ``classify.input.ticket.id``,
``classify.error.type``, ``classify.attempts``, ``classify.status``,
``classify.duration_ms`` (``classify.classification`` is short for
``classify.output.classification``) — or the run's own: ``run.output.label``,
``run.input.text``, ``run.status``, ``run.duration_ms``, ``run.workflow``.
A step predicate holds for a run when the *final attempt* of some occurrence of
the step satisfies it (``attempts`` is that attempt's number). ``OP`` is one of
``= != < <= > >= ~ !~`` (``~``: the text contains). ``VALUE`` is read as JSON
when it parses (``3``, ``true``, ``null``, ``"a b"``) and as text otherwise; a
bare number also matches the same text (``= 42`` matches ``42`` and ``"42"``).
A field that is absent satisfies no comparison, ``!=`` included.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from steptrace.store.dialect import Dialect, JsonPath


class QueryError(ValueError):
    """A query the store cannot answer as asked: a malformed filter, field path or SQL,
    or a write attempted through ``Store.sql``."""


# --- times --------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def iso_utc(moment: dt.datetime) -> str:
    """A datetime as the store's timestamp text (UTC, microseconds, ``Z``); naive
    datetimes are taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def parse_time(value: str | dt.datetime, *, now: dt.datetime | None = None) -> str:
    """``value`` as the store's timestamp text: an ISO-8601 time (a date, or a time
    without offset, is UTC) or a span before ``now`` such as ``90s``, ``15m``,
    ``2h``, ``7d``, ``2w``."""
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
        return iso_utc((now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds))
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise QueryError(
            f"{value!r} is not a time: give ISO-8601 (2026-11-25, 2026-11-25T18:47:41Z) "
            "or a span before now (90s, 15m, 2h, 7d, 2w)"
        ) from None
    return iso_utc(parsed)


# --- field paths --------------------------------------------------------------------

_SEGMENT = re.compile(r'\s*(?:"([^"]*)"|([^.\[\]"]+))((?:\[\d+\])*)\s*')


def parse_path(text: str) -> list[str | int]:
    """``a.b[0]."c.d"`` → ``["a", "b", 0, "c.d"]``; ``""`` and ``"."`` → ``[]``."""
    text = text.strip()
    if text in ("", "."):
        return []
    path: list[str | int] = []
    pos = 0
    while True:
        match = _SEGMENT.match(text, pos)
        if match is None or match.end() == pos:
            raise QueryError(
                f"bad field path {text!r}: use dotted keys with [n] for list items, e.g. "
                'meta.labels[0] or "key.with.dots".x'
            )
        quoted, plain, indexes = match.groups()
        path.append(quoted if quoted is not None else plain.strip())
        path.extend(int(i) for i in re.findall(r"\[(\d+)\]", indexes))
        pos = match.end()
        if pos == len(text):
            return path
        if text[pos] != ".":
            raise QueryError(f"bad field path {text!r} at {text[pos:]!r}")
        pos += 1


def format_path(path: JsonPath) -> str:
    """The inverse of ``parse_path`` (``["a", 0, "b"]`` → ``a[0].b``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = f'"{part}"' if re.search(r'[.\[\]"\s]', part) or not part else part
            out += f".{key}" if out else key
    return out


def step_field(text: str) -> tuple[str, list[str | int]]:
    """A ``dist`` field: ``(column, path)`` where column is ``output`` (the default) or
    ``input`` (prefix ``input.``); ``output``/``.``/``""`` alone is the whole output."""
    path = parse_path(text)
    if path and path[0] in ("input", "output"):
        return str(path[0]), path[1:]
    return "output", path


# --- predicates ---------------------------------------------------------------------

_OPS = ("!=", "<=", ">=", "!~", "==", "=", "<", ">", "~")
_STEP_ATTRIBUTES = {"attempts": "attempt", "status": "status", "duration_ms": "duration_ms"}
_RUN_ATTRIBUTES = {"status": "status", "duration_ms": "duration_ms", "workflow": "workflow"}
_JSON_COLUMNS = ("input", "output", "error")


@dataclass(frozen=True)
class Predicate:
    """One parsed ``--where`` predicate."""

    text: str
    step: str | None
    """The step name, or None for the run itself."""
    column: str
    """``input``/``output``/``error`` (with ``path``) or an attribute column."""
    path: tuple[str | int, ...] | None
    """The JSON path for a JSON column; None for an attribute."""
    op: str
    value: Any
    bare: bool
    """The value was not JSON (read as text)."""
    raw: str
    """The value as written."""


def _split_op(text: str) -> tuple[str, str, str]:
    in_quote = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quote = not in_quote
        if in_quote:
            continue
        for op in _OPS:
            if text.startswith(op, i):
                return text[:i].strip(), op, text[i + len(op) :].strip()
    raise QueryError(
        f"--where {text!r} has no operator: write e.g. 'classify.output.label = billing' "
        f"(operators: {' '.join(o for o in _OPS if o != '==')})"
    )


def parse_predicate(text: str) -> Predicate:
    """Parse ``TARGET OP VALUE`` (see the module docstring)."""
    target, op, raw = _split_op(text)
    op = "=" if op == "==" else op
    if not raw:
        raise QueryError(f"--where {text!r} has no value after {op!r}")
    try:
        value, bare = orjson.loads(raw), False
    except orjson.JSONDecodeError:
        value, bare = raw, True
    path = parse_path(target)
    if len(path) < 2 or not isinstance(path[0], str) or not isinstance(path[1], str):
        raise QueryError(
            f"--where {text!r}: the target is STEP.output.FIELD, STEP.input.FIELD, "
            "STEP.attempts, STEP.status, STEP.duration_ms or run.output.FIELD, run.status…"
        )
    head, second, rest = path[0], path[1], tuple(path[2:])
    step: str | None = None if head == "run" else head
    attributes = _RUN_ATTRIBUTES if step is None else _STEP_ATTRIBUTES
    if second in _JSON_COLUMNS:
        column, json_path = second, rest
    elif second in attributes and not rest:
        column, json_path = attributes[second], None
    elif step is not None:  # classify.label is short for classify.output.label
        column, json_path = "output", tuple(path[1:])
    else:
        names = ", ".join(f"run.{n}" for n in (*_JSON_COLUMNS, *_RUN_ATTRIBUTES))
        raise QueryError(f"--where {text!r}: a run target is one of {names}")
    pred = Predicate(text, step, column, json_path, op, value, bare, raw)
    _check_value(pred)
    return pred


def _check_value(pred: Predicate) -> None:
    value, op = pred.value, pred.op
    if pred.path is None and pred.column in ("attempt", "duration_ms"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QueryError(f"--where {pred.text!r}: compare {pred.column} with a number")
        if op in ("~", "!~"):
            raise QueryError(f"--where {pred.text!r}: ~ applies to text")
    if (value is None or isinstance(value, bool | list | dict)) and op not in ("=", "!="):
        raise QueryError(f"--where {pred.text!r}: {value!r} can only be compared with = or !=")
    if op in ("~", "!~") and not isinstance(value, str):
        raise QueryError(f"--where {pred.text!r}: ~ needs a text value")


def _attribute_sql(pred: Predicate, column: str, d: Dialect) -> tuple[str, list[Any]]:
    op = pred.op
    value: Any = pred.value
    if op in ("~", "!~"):
        sql = d.contains(column, "?")
        return (sql if op == "~" else f"{column} IS NOT NULL AND NOT ({sql})"), [value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{column} {op} ?", [value]
    return f"{column} {op} ?", [str(value) if not isinstance(value, str) else value]


def _json_sql(pred: Predicate, column: str, d: Dialect) -> tuple[str, list[Any]]:
    path = list(pred.path or ())
    kind = d.json_type_at(column, path)
    scalar = d.json_scalar_at(column, path)
    value, op = pred.value, pred.op
    present = f"{kind} IS NOT NULL"
    if value is None or isinstance(value, bool):
        name = "null" if value is None else ("true" if value else "false")
        return (f"{kind} = '{name}'" if op == "=" else f"{present} AND {kind} <> '{name}'"), []
    if isinstance(value, list | dict):
        eq = f"{kind} IN ('object', 'array') AND {d.json_equals(column, path)}"
        return (eq if op == "=" else f"{present} AND NOT ({eq})"), [orjson.dumps(value).decode()]
    if op in ("~", "!~"):
        found = d.contains(scalar, "?")
        return f"{kind} = 'text' AND {'NOT ' if op == '!~' else ''}({found})", [value]
    if isinstance(value, int | float):
        number = f"{kind} IN ('integer', 'real') AND {d.json_number_at(column, path)}"
        if op in ("=", "!="):
            eq = f"{number} = ?"
            params: list[Any] = [value]
            if pred.bare:  # `= 42` also matches the text "42"
                eq = f"({eq}) OR ({kind} = 'text' AND {scalar} = ?)"
                params.append(pred.raw)
            return (eq if op == "=" else f"{present} AND NOT ({eq})"), params
        return f"{number} {op} ?", [value]
    text_cmp = f"{kind} = 'text' AND {scalar} {'=' if op == '!=' else op} ?"
    return (text_cmp if op != "!=" else f"{present} AND NOT ({text_cmp})"), [value]


def predicate_sql(pred: Predicate, d: Dialect, runs: str = "runs") -> tuple[str, list[Any]]:
    """An SQL condition on the ``runs`` row aliased ``runs`` that holds when ``pred``
    does."""
    if pred.step is None:
        column = f"{runs}.{pred.column}"
        if pred.path is None:
            return _attribute_sql(pred, column, d)
        cond, params = _json_sql(pred, column, d)
        return f"({cond})", params
    column = f"p.{pred.column}"
    cond, params = (
        _attribute_sql(pred, column, d) if pred.path is None else _json_sql(pred, column, d)
    )
    sql = (
        f"EXISTS (SELECT 1 FROM spans p WHERE p.run_id = {runs}.run_id AND p.name = ? "
        "AND p.step_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM spans q "
        "WHERE q.run_id = p.run_id AND q.step_key = p.step_key AND q.attempt > p.attempt "
        f"AND q.step_key IS NOT NULL) AND ({cond}){d.per_outer_row})"
    )
    return sql, [pred.step, *params]


# --- run filters --------------------------------------------------------------------


@dataclass
class RunFilter:
    """Which runs: the filters of ``Store.runs`` and ``steptrace runs``/``export``."""

    workflow: str | None = None
    status: str | None = None
    since: str | dt.datetime | None = None
    until: str | dt.datetime | None = None
    tags: Sequence[str] = ()
    where: Sequence[str] = field(default_factory=tuple)

    @classmethod
    def of(
        cls,
        workflow: str | None = None,
        status: str | None = None,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
    ) -> RunFilter:
        tags = (tag,) if isinstance(tag, str) else tuple(tag or ())
        wheres = (where,) if isinstance(where, str) else tuple(where or ())
        return cls(workflow, status, since, until, tags, wheres)

    def sql(self, d: Dialect, runs: str = "runs") -> tuple[list[str], list[Any]]:
        """Conditions (to AND together) on the runs table aliased ``runs``, and their
        parameters. Raises ``QueryError`` for a malformed time or predicate."""
        conds: list[str] = []
        params: list[Any] = []
        if self.workflow is not None:
            conds.append(f"{runs}.workflow = ?")
            params.append(self.workflow)
        if self.status is not None:
            conds.append(f"{runs}.status = ?")
            params.append(self.status)
        if self.since is not None:
            conds.append(f"{runs}.started_at >= ?")
            params.append(parse_time(self.since))
        if self.until is not None:
            conds.append(f"{runs}.started_at < ?")
            params.append(parse_time(self.until))
        for tag in self.tags:
            conds.append(d.json_array_has(f"{runs}.tags"))
            params.append(tag)
        for text in self.where:
            cond, cond_params = predicate_sql(parse_predicate(text), d, runs)
            conds.append(cond)
            params.extend(cond_params)
        return conds, params
