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

``score.NAME OP VALUE`` holds for a run when the run itself or one of its span attempts
has a score named NAME that satisfies it: a number or ``true``/``false`` compares the
score's value (a boolean score is 1 or 0), text compares its label (a categorical
score's category). ``score.NAME exists`` and ``score.NAME missing`` ask whether the run
has such a score at all. (A step named ``score`` is reached with three-part targets:
``score.output.FIELD``, ``score.input.FIELD``.)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from steptrace.errors import QueryError as QueryError  # re-exported: older imports
from steptrace.record import stored_form, stored_name, stored_value
from steptrace.store.dialect import Dialect, JsonPath, Sql, bound, compose

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
    path = [stored_form(p) if isinstance(p, str) else p for p in parse_path(text)]
    if path and path[0] in ("input", "output"):
        return str(path[0]), path[1:]
    return "output", path


# --- predicates ---------------------------------------------------------------------

_OPS = ("!=", "<=", ">=", "!~", "==", "=", "<", ">", "~")
_STEP_ATTRIBUTES = {"attempts": "attempt", "status": "status", "duration_ms": "duration_ms"}
_RUN_ATTRIBUTES = {"status": "status", "duration_ms": "duration_ms", "workflow": "workflow"}
_JSON_COLUMNS = ("input", "output", "error")
_SQL_OPS = {op: op for op in ("=", "!=", "<", "<=", ">", ">=", "~", "!~")}
"""The operators a predicate may use, as the SQL our code writes for them (a lookup, so
that no operator text reaches SQL unless it is one of these)."""


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


def _read_value(text: str, op: str, raw: str) -> tuple[str, Any, bool]:
    """``(op, value, bare)`` of a predicate: ``==`` is ``=``; the value is read as JSON
    when it parses, else as text (``bare``)."""
    op = "=" if op == "==" else op
    if not raw:
        raise QueryError(f"--where {text!r} has no value after {op!r}")
    try:
        return op, orjson.loads(raw), False
    except orjson.JSONDecodeError:
        return op, raw, True


def score_name(target: str) -> str | None:
    """The score's name when ``target`` is ``score.NAME`` (``score."a.b"`` for a name
    with dots), else None."""
    if not target.lstrip().startswith("score"):
        return None
    try:
        path = parse_path(target)
    except QueryError:
        return None
    if len(path) == 2 and path[0] == "score" and isinstance(path[1], str) and path[1]:
        return stored_name(path[1])
    return None


_PRESENCE = re.compile(r"^(.*\S)\s+(exists|missing)\s*$", re.DOTALL)


def _score_predicate(text: str) -> Predicate | None:
    """A ``score.NAME …`` predicate, or None when ``text`` is about something else."""
    presence = _PRESENCE.match(text)
    name = score_name(presence.group(1)) if presence else None
    if presence and name is not None and not _has_op(presence.group(1)):
        return Predicate(text, None, "score", (name,), presence.group(2), None, False, "")
    try:
        target, op, raw = _split_op(text)
    except QueryError:
        return None
    name = score_name(target)
    if name is None:
        return None
    op, value, bare = _read_value(text, op, raw)
    if value is None or isinstance(value, list | dict):
        raise QueryError(
            f"--where {text!r}: a score compares with a number, true/false or a label "
            f"(score.{name} exists / missing asks whether a run has one)"
        )
    if isinstance(value, bool) and op not in ("=", "!="):
        raise QueryError(f"--where {text!r}: {raw} can only be compared with = or !=")
    if op in ("~", "!~") and not isinstance(value, str):
        raise QueryError(f"--where {text!r}: ~ needs a text value")
    if isinstance(value, str):
        value = stored_name(value)
    return Predicate(text, None, "score", (name,), op, value, bare, stored_form(raw))


def _has_op(text: str) -> bool:
    try:
        _split_op(text)
    except QueryError:
        return False
    return True


def parse_predicate(text: str) -> Predicate:
    """Parse ``TARGET OP VALUE`` (see the module docstring)."""
    scored = _score_predicate(text)
    if scored is not None:
        return scored
    target, op, raw = _split_op(text)
    op, value, bare = _read_value(text, op, raw)
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
    if json_path is not None:  # keys as the store holds them (no NUL, no lone surrogate)
        json_path = tuple(stored_form(p) if isinstance(p, str) else p for p in json_path)
    elif column == "workflow" and isinstance(value, str):  # a name, cut as names are
        value = stored_name(value)
    pred = Predicate(
        text,
        None if step is None else stored_name(step),
        column,
        json_path,
        op,
        stored_value(value),
        bare,
        stored_form(raw),
    )
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


def _sql_op(pred: Predicate) -> str:
    try:
        return _SQL_OPS[pred.op]
    except KeyError:
        raise QueryError(f"--where {pred.text!r}: unknown operator {pred.op!r}") from None


def _attribute_sql(pred: Predicate, column: str, d: Dialect) -> Sql:
    op = _sql_op(pred)
    value: Any = pred.value
    if op in ("~", "!~"):
        found = d.contains(column, bound(value))
        return found if op == "~" else compose("{} IS NOT NULL AND NOT ({})", column, found)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return compose(f"{{}} {op} {{}}", column, bound(value))
    return compose(
        f"{{}} {op} {{}}", column, bound(value if isinstance(value, str) else str(value))
    )


def _json_sql(pred: Predicate, column: str, d: Dialect) -> Sql:
    path = list(pred.path or ())
    kind = d.json_type_at(column, path)
    scalar = d.json_scalar_at(column, path)
    value, op = pred.value, _sql_op(pred)
    present = compose("{} IS NOT NULL", kind)
    if value is None or isinstance(value, bool):
        name = "null" if value is None else ("true" if value else "false")
        if op == "=":
            return compose(f"{{}} = '{name}'", kind)
        return compose(f"{{}} AND {{}} <> '{name}'", present, kind)
    if isinstance(value, list | dict):
        eq = compose(
            "{} IN ('object', 'array') AND {}",
            kind,
            d.json_equals(column, path, bound(orjson.dumps(value).decode())),
        )
        return eq if op == "=" else compose("{} AND NOT ({})", present, eq)
    if op in ("~", "!~"):
        found = d.contains(scalar, bound(value))
        return compose(f"{{}} = 'text' AND {'NOT ' if op == '!~' else ''}({{}})", kind, found)
    if isinstance(value, int | float):
        number = compose("{} IN ('integer', 'real') AND {}", kind, d.json_number_at(column, path))
        if op in ("=", "!="):
            eq = compose("{} = {}", number, bound(value))
            if pred.bare:  # `= 42` also matches the text "42"
                eq = compose("({}) OR ({} = 'text' AND {} = {})", eq, kind, scalar, bound(pred.raw))
            return eq if op == "=" else compose("{} AND NOT ({})", present, eq)
        return compose(f"{{}} {op} {{}}", number, bound(value))
    text_cmp = compose(
        f"{{}} = 'text' AND {{}} {'=' if op == '!=' else op} {{}}", kind, scalar, bound(value)
    )
    return text_cmp if op != "!=" else compose("{} AND NOT ({})", present, text_cmp)


FEW_SCORES = 2000
"""Up to this many matching scores, a score predicate is checked against the list of
their runs; past it, run by run."""


def _score_sql(pred: Predicate, d: Dialect, runs: str, every: bool) -> Sql:
    """The runs with a score that satisfies ``pred``. Runs are listed newest first and
    a page stops early, so how to check each run depends on how many scores match
    (counted once, up to ``FEW_SCORES``, from the index on (name, value) or (name,
    label)): a few — whether the run is among theirs (the list read once from that
    index); many — a look-up of the run's own scores (the index on (run_id, name, …)),
    which finds a match within a few runs where reading every match would not. When
    ``every`` matching run is wanted (a count), the list it is."""
    name = bound(str((pred.path or ("",))[0]))
    op, value = pred.op, pred.value
    if op == "missing":
        if every:
            return compose(
                f"{runs}.run_id NOT IN (SELECT sc.run_id FROM scores sc WHERE sc.name = {{}})",
                name,
            )
        return compose(
            f"NOT EXISTS (SELECT 1 FROM scores sc WHERE sc.run_id = {runs}.run_id "
            f"AND sc.name = {{}}{d.per_outer_row})",
            name,
        )
    if op == "exists":
        cond = Sql("1 = 1")
    elif isinstance(value, bool):
        cond = compose(f"sc.value {_sql_op(pred)} {{}}", bound(1.0 if value else 0.0))
    elif isinstance(value, int | float):
        cond = compose(f"sc.value {_sql_op(pred)} {{}}", bound(float(value)))
    elif op in ("~", "!~"):
        found = d.contains("sc.label", bound(value))
        cond = found if op == "~" else compose("sc.label IS NOT NULL AND NOT ({})", found)
    else:
        cond = compose(f"sc.label {_sql_op(pred)} {{}}", bound(str(value)))
    listed = compose(
        f"{runs}.run_id IN (SELECT sc.run_id FROM scores sc WHERE sc.name = {{}} AND {{}})",
        name,
        cond,
    )
    if every:
        return listed
    return compose(
        "CASE WHEN (SELECT count(*) FROM (SELECT 1 FROM scores sc WHERE sc.name = {} AND {} "
        f"LIMIT {FEW_SCORES}) few) < {FEW_SCORES} "
        "THEN {} "
        f"ELSE EXISTS (SELECT 1 FROM scores sc WHERE sc.run_id = {runs}.run_id "
        f"AND sc.name = {{}} AND {{}}{d.per_outer_row}) END",
        name,
        cond,
        listed,
        name,
        cond,
    )


def predicate_sql(pred: Predicate, d: Dialect, runs: str = "runs", *, every: bool = False) -> Sql:
    """An SQL condition on the ``runs`` row aliased ``runs`` that holds when ``pred``
    does (``every``: for a question about every matching run, a count, rather than a
    page of the newest). Every value and path is a bound parameter; column names come
    from the fixed lists above."""
    if pred.column == "score":
        return _score_sql(pred, d, runs, every)
    allowed = (
        *_JSON_COLUMNS,
        *(_RUN_ATTRIBUTES if pred.step is None else _STEP_ATTRIBUTES).values(),
    )
    if pred.column not in allowed or (pred.path is not None) != (pred.column in _JSON_COLUMNS):
        raise QueryError(f"--where {pred.text!r}: no column {pred.column!r}")
    if pred.step is None:
        column = f"{runs}.{pred.column}"
        if pred.path is None:
            return _attribute_sql(pred, column, d)
        return compose("({})", _json_sql(pred, column, d))
    cond = span_condition(pred, d, "p")
    return compose(
        f"EXISTS (SELECT 1 FROM spans p WHERE p.run_id = {runs}.run_id AND p.name = {{}} "
        "AND p.step_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM spans q "
        "WHERE q.run_id = p.run_id AND q.step_key = p.step_key AND q.attempt > p.attempt "
        f"AND q.step_key IS NOT NULL) AND ({{}}){d.per_outer_row})",
        bound(pred.step),
        cond,
    )


def span_condition(pred: Predicate, d: Dialect, span: str) -> Sql:
    """The condition of a step predicate on one attempt's ``spans`` row aliased
    ``span``: what ``predicate_sql`` asks of some final attempt of a run, and what
    ``dataset add`` asks of each occurrence it takes."""
    allowed = (*_JSON_COLUMNS, *_STEP_ATTRIBUTES.values())
    if pred.step is None or pred.column not in allowed:
        raise QueryError(f"--where {pred.text!r}: not a condition on a step")
    column = f"{span}.{pred.column}"
    return _attribute_sql(pred, column, d) if pred.path is None else _json_sql(pred, column, d)


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
    forked_from: str | None = None
    """Only forks of the run with this id."""
    replay_of: str | None = None
    """Only replays of the run with this id."""
    derived: bool = False
    """Only runs made from another run: forks and replays."""
    originals: bool = False
    """Only runs not made from another run: neither forks nor replays."""
    session: str | None = None
    """Only runs of the session with this id (exactly)."""

    @classmethod
    def of(
        cls,
        workflow: str | None = None,
        status: str | None = None,
        since: str | dt.datetime | None = None,
        until: str | dt.datetime | None = None,
        tag: str | Sequence[str] | None = None,
        where: str | Sequence[str] | None = None,
        forked_from: str | None = None,
        replay_of: str | None = None,
        derived: bool = False,
        originals: bool = False,
    ) -> RunFilter:
        tags = (tag,) if isinstance(tag, str) else tuple(tag or ())
        wheres = (where,) if isinstance(where, str) else tuple(where or ())
        return cls(
            workflow, status, since, until, tags, wheres, forked_from, replay_of, derived, originals
        )

    def sql(
        self,
        d: Dialect,
        runs: str = "runs",
        *,
        every: bool = False,
        listed: Mapping[str, Sql] | None = None,
    ) -> tuple[list[str], list[Any]]:
        """Conditions (to AND together) on the runs table aliased ``runs``, and their
        parameters; ``every``: for a question about every matching run (a count), not
        a page of the newest; ``listed``: by a ``where`` predicate's text, a query of
        run ids among which the runs it holds for are (``query.indexes.listed_runs``:
        a look-up in a field's index, so that the predicate is checked on those runs
        only). Raises ``QueryError`` for a malformed time or predicate."""
        conds: list[str] = []
        params: list[Any] = []
        if self.workflow is not None:
            conds.append(f"{runs}.workflow = ?")
            params.append(stored_name(self.workflow))
        if self.status is not None:
            conds.append(f"{runs}.status = ?")
            params.append(self.status)
        if self.forked_from is not None:
            conds.append(f"{runs}.forked_from = ?")
            params.append(self.forked_from)
        if self.replay_of is not None:
            conds.append(f"{runs}.replay_of = ?")
            params.append(self.replay_of)
        if self.derived:
            conds.append(f"({runs}.forked_from IS NOT NULL OR {runs}.replay_of IS NOT NULL)")
        if self.originals:
            conds.append(f"{runs}.forked_from IS NULL AND {runs}.replay_of IS NULL")
        if self.session is not None:
            conds.append(f"{runs}.session_id = ?")
            params.append(stored_form(self.session))
        if self.since is not None:
            conds.append(f"{runs}.started_at >= ?")
            params.append(parse_time(self.since))
        if self.until is not None:
            conds.append(f"{runs}.started_at < ?")
            params.append(parse_time(self.until))
        for tag in self.tags:
            has = d.json_array_has(f"{runs}.tags", bound(stored_form(tag)))
            conds.append(has.text)
            params.extend(has.params)
        for text in self.where:
            among = (listed or {}).get(text)
            if among is not None:
                conds.append(f"{runs}.run_id IN ({among.text})")
                params.extend(among.params)
            cond = predicate_sql(parse_predicate(text), d, runs, every=every)
            conds.append(cond.text)
            params.extend(cond.params)
        return conds, params
