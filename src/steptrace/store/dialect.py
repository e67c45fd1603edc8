"""The few SQL fragments where SQLite and PostgreSQL differ, for the query layer.

Queries are written once in portable SQL (``?`` placeholders, CTEs, ``CASE``,
``EXISTS``); what each engine spells its own way — reading a JSON value at a
path, testing a JSON array for a member, keeping the planner on the intended
join order — comes from a ``Dialect``. A JSON path is a sequence of object keys
(``str``) and array indexes (``int``).

Nothing a user typed is ever quoted into SQL text: values and JSON paths travel
as bound parameters (``Sql`` carries a fragment's text with its parameters, in
order), so what a query means does not depend on server settings such as
PostgreSQL's ``standard_conforming_strings``. The one exception is an expression
index (``steptrace index``), whose SQL cannot hold a parameter:
``index_literal`` spells out only text of a strict character set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

JsonPath = Sequence[str | int]


@dataclass(frozen=True)
class Sql:
    """A piece of SQL and the values of its ``?`` placeholders, in the order they
    appear."""

    text: str
    params: tuple[Any, ...] = ()


def bound(value: Any) -> Sql:
    """A value as a bound parameter."""
    return Sql("?", (value,))


def compose(template: str, *parts: Sql | str) -> Sql:
    """``template`` with each ``{}`` replaced by the next part, the parameters of the
    parts kept in text order. A ``str`` part is SQL our code chose (a column from a
    fixed list, an operator), never text from outside; the template holds no ``?``
    of its own."""
    pieces = template.split("{}")
    if len(pieces) != len(parts) + 1:
        raise ValueError(f"{len(parts)} parts for {len(pieces) - 1} slots in {template!r}")
    text = [pieces[0]]
    params: list[Any] = []
    for part, after in zip(parts, pieces[1:], strict=True):
        if isinstance(part, Sql):
            text.append(part.text)
            params.extend(part.params)
        else:
            text.append(part)
        text.append(after)
    return Sql("".join(text), tuple(params))


_LITERAL_SAFE = re.compile(r"[\w .:/<>@#+\-]+")
"""What ``index_literal`` spells out: letters, digits, ``_``, space and ``.:/<>@#+-``.
No quote, backslash, ``$`` or NUL: the literal reads the same under any
``standard_conforming_strings`` or ``backslash_quote``."""


def index_literal_ok(text: str) -> bool:
    """Whether ``index_literal`` accepts ``text``."""
    return _LITERAL_SAFE.fullmatch(text) is not None


def index_literal(text: str) -> str:
    """``text`` as an SQL string literal, for an expression index's SQL only (an index
    cannot take a parameter, and SQLite uses an expression index only for a query that
    repeats its expression word for word). ``ValueError`` unless ``index_literal_ok``."""
    if not index_literal_ok(text):
        raise ValueError(f"{text!r} cannot be spelled out in an index's SQL")
    return f"'{text}'"


def sqlite_path(path: JsonPath) -> str:
    """SQLite's JSON path text for ``path`` (a bound parameter's value). Every key is
    quoted, and written as JSON escapes it (``a\\b``): SQLite 3.40 compares a quoted
    key with the key's JSON text, later versions decode escapes on both sides, so both
    find keys holding a backslash or a control character. A key cannot hold ``"``
    (``where.parse_path`` refuses it)."""
    parts = []
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            if '"' in p:
                raise ValueError(f"a JSON path key cannot hold a double quote: {p!r}")
            parts.append(f".{orjson.dumps(p).decode()}")
    return "$" + "".join(parts)


@dataclass(frozen=True)
class Dialect:
    name: str
    """``"sqlite"`` or ``"postgresql"``."""

    # -- JSON ---------------------------------------------------------------------
    def json_path(self, path: JsonPath) -> Sql:
        """``path`` as a bound parameter: SQLite's path text, PostgreSQL's ``text[]``."""
        if self.name == "postgresql":
            return bound([str(p) for p in path])
        return bound(sqlite_path(path))

    def _path(self, path: JsonPath, literal: bool) -> Sql:
        if not literal:
            return self.json_path(path)
        for p in path:
            if isinstance(p, str) and not index_literal_ok(p):
                raise ValueError(f"the key {p!r} cannot be spelled out in an index's SQL")
        if self.name == "postgresql":
            return Sql("'{" + ",".join(f'"{p}"' for p in path) + "}'")
        return Sql(f"'{sqlite_path(path)}'")

    def json_at(self, column: str, path: JsonPath, *, literal: bool = False) -> Sql:
        """The JSON value at ``path`` of a JSON column, as JSON text (NULL when absent);
        the whole value for an empty path. ``literal``: the path spelled out (only keys
        ``index_literal_ok`` accepts), for an expression index and the queries it
        serves."""
        if self.name == "postgresql":
            if not path:
                return Sql(f"{column}::text")
            return compose("({} #> {})::text", column, self._path(path, literal))
        if not path:
            return Sql(column)
        return compose("{} -> {}", column, self._path(path, literal))

    def json_index_key(self, column: str, path: JsonPath) -> Sql:
        """The value at ``path`` as a by-value index holds it, the path spelled out
        (``index_literal_ok`` keys only): an SQL scalar on SQLite (a text, a number;
        objects and arrays as JSON text), JSONB on PostgreSQL (ordered by JSON type,
        then by value). Compare it with ``json_index_value``."""
        if self.name == "postgresql":
            return compose("({} #> {})", column, self._path(path, True))
        return compose("({} ->> {})", column, self._path(path, True))

    def json_index_value(self, value: str | float) -> Sql:
        """A text or a number, bound, to compare with ``json_index_key``: as itself on
        SQLite, as JSONB on PostgreSQL (``TypeError`` or ``orjson.JSONEncodeError`` for a
        number JSON cannot hold)."""
        if self.name == "postgresql":
            return compose("CAST({} AS jsonb)", bound(orjson.dumps(value).decode()))
        return bound(value)

    def _jsonb_at(self, column: str, path: JsonPath) -> Sql:
        return compose("({} #> {})", column, self.json_path(path)) if path else Sql(column)

    def json_equals(self, column: str, path: JsonPath, value: Sql) -> Sql:
        """True when the JSON value at ``path`` equals the JSON text ``value`` (compact
        JSON, as orjson writes it)."""
        if self.name == "postgresql":
            return compose("{} = CAST({} AS jsonb)", self._jsonb_at(column, path), value)
        return compose("{} = {}", self.json_at(column, path), value)

    def json_scalar_at(self, column: str, path: JsonPath) -> Sql:
        """The value at ``path`` as an SQL scalar (text or number), for comparisons."""
        if self.name == "postgresql":
            return compose("{} #>> {}", column, self.json_path(path))
        return compose("{} ->> {}", column, self.json_path(path))

    def json_number_at(self, column: str, path: JsonPath) -> Sql:
        """The number at ``path`` (use where ``json_type_at`` is integer or real; NULL
        for any other value: PostgreSQL does not promise to test that first)."""
        if self.name == "postgresql":
            return compose(
                "CASE WHEN jsonb_typeof({}) = 'number' THEN ({})::double precision END",
                self._jsonb_at(column, path),
                self.json_scalar_at(column, path),
            )
        return self.json_scalar_at(column, path)

    def json_type_at(self, column: str, path: JsonPath) -> Sql:
        """The JSON type name at ``path``: ``object array text integer real true false
        null`` (SQLite's names; PostgreSQL's are mapped to them), NULL when absent."""
        if self.name == "postgresql":
            value = self._jsonb_at(column, path)
            return compose(
                "CASE jsonb_typeof({}) WHEN 'string' THEN 'text' "
                "WHEN 'number' THEN CASE WHEN ({})::text ~ '^-{0,1}[0-9]+$' "
                "THEN 'integer' ELSE 'real' END "
                "WHEN 'boolean' THEN ({})::text ELSE jsonb_typeof({}) END",
                value,
                value,
                value,
                value,
            )
        return compose("json_type({}, {})", column, self.json_path(path))

    def json_array_has(self, column: str, value: Sql) -> Sql:
        """True when the JSON array in ``column`` has the string ``value``."""
        if self.name == "postgresql":
            return compose(
                "EXISTS (SELECT 1 FROM jsonb_array_elements_text({}) AS t(value) "
                "WHERE t.value = {})",
                column,
                value,
            )
        return compose(
            "EXISTS (SELECT 1 FROM json_each({}) WHERE json_each.value = {})", column, value
        )

    def json_row(self, *exprs: str) -> str:
        """A JSON array of the values (as JSON text): several aggregates from one
        scalar subquery."""
        if self.name == "postgresql":
            return f"json_build_array({', '.join(exprs)})::text"
        return f"json_array({', '.join(exprs)})"

    def group_json_array(self, expr: str) -> str:
        """An aggregate collecting ``expr`` into a JSON array (as JSON text)."""
        if self.name == "postgresql":
            return f"json_agg({expr})"
        return f"json_group_array({expr})"

    def count_if(self, condition: str) -> str:
        """An aggregate counting the rows where ``condition`` holds."""
        if self.name == "postgresql":
            return f"count(*) FILTER (WHERE {condition})"
        return f"sum({condition})"

    def ms_to_ns(self, expr: str) -> str:
        """A duration in ms (from integer ns) back as its integer ns."""
        if self.name == "postgresql":
            return f"round({expr} * 1000000)::bigint"
        return f"CAST(round({expr} * 1000000) AS INTEGER)"

    def contains(self, haystack: Sql | str, needle: Sql) -> Sql:
        """True when the text ``haystack`` contains ``needle``."""
        if self.name == "postgresql":
            return compose("strpos({}, {}) > 0", haystack, needle)
        return compose("instr({}, {}) > 0", haystack, needle)

    # -- planning -----------------------------------------------------------------
    @property
    def ordered_join(self) -> str:
        """A join that keeps the left table as the outer loop (SQLite's planner otherwise
        sometimes drives a "last N runs" query from the wrong index)."""
        return "JOIN" if self.name == "postgresql" else "CROSS JOIN"

    @property
    def per_outer_row(self) -> str:
        """Ends an ``EXISTS`` subquery that must be checked run by run, newest first, until
        a page is full: PostgreSQL otherwise turns it into a join over every matching
        span (an ``OFFSET`` keeps it a subplan); SQLite always checks it per row."""
        return " OFFSET 0" if self.name == "postgresql" else ""

    def unindexed(self, expr: str) -> str:
        """``expr``, marked so the planner does not pick an index for this term."""
        return expr if self.name == "postgresql" else f"+{expr}"


SQLITE = Dialect("sqlite")
POSTGRESQL = Dialect("postgresql")


def for_name(name: str) -> Dialect:
    return POSTGRESQL if name == "postgresql" else SQLITE
