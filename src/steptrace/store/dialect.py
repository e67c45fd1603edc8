"""The few SQL fragments where SQLite and PostgreSQL differ, for the query layer.

Queries are written once in portable SQL (``?`` placeholders, CTEs, ``CASE``,
``EXISTS``); what each engine spells its own way — reading a JSON value at a
path, testing a JSON array for a member, keeping the planner on the intended
join order — comes from a ``Dialect``. A JSON path is a sequence of object keys
(``str``) and array indexes (``int``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

JsonPath = Sequence[str | int]


def literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Dialect:
    name: str
    """``"sqlite"`` or ``"postgresql"``."""

    # -- JSON ---------------------------------------------------------------------
    def json_path(self, path: JsonPath) -> str:
        """The engine's path literal for ``path`` (keys must not contain ``"``)."""
        if self.name == "postgresql":
            return literal("{" + ",".join(f'"{p}"' for p in path) + "}")
        parts = "".join(f"[{p}]" if isinstance(p, int) else f'."{p}"' for p in path)
        return literal("$" + parts)

    def json_at(self, column: str, path: JsonPath) -> str:
        """The JSON value at ``path`` of a JSON column, as JSON text (NULL when absent);
        the whole value for an empty path."""
        if self.name == "postgresql":
            return f"({column} #> {self.json_path(path)})::text" if path else f"{column}::text"
        if not path:
            return column
        return f"{column} -> {self.json_path(path)}"

    def json_equals(self, column: str, path: JsonPath, placeholder: str = "?") -> str:
        """True when the JSON value at ``path`` equals the JSON text ``placeholder``
        (compact JSON, as orjson writes it)."""
        if self.name == "postgresql":
            value = f"({column} #> {self.json_path(path)})" if path else column
            return f"{value} = CAST({placeholder} AS jsonb)"
        return f"{self.json_at(column, path)} = {placeholder}"

    def json_scalar_at(self, column: str, path: JsonPath) -> str:
        """The value at ``path`` as an SQL scalar (text or number), for comparisons."""
        if self.name == "postgresql":
            return f"{column} #>> {self.json_path(path) if path else literal('{}')}"
        return f"{column} ->> {self.json_path(path) if path else literal('$')}"

    def json_number_at(self, column: str, path: JsonPath) -> str:
        """The number at ``path`` (use where ``json_type_at`` is integer or real)."""
        if self.name == "postgresql":
            return f"({self.json_scalar_at(column, path)})::double precision"
        return self.json_scalar_at(column, path)

    def json_type_at(self, column: str, path: JsonPath) -> str:
        """The JSON type name at ``path``: ``object array text integer real true false
        null`` (SQLite's names; PostgreSQL's are mapped to them), NULL when absent."""
        if self.name == "postgresql":
            value = f"{column} #> {self.json_path(path)}" if path else column
            return (
                f"CASE jsonb_typeof({value}) WHEN 'string' THEN 'text' "
                f"WHEN 'number' THEN CASE WHEN ({value})::text ~ '^-?[0-9]+$' "
                "THEN 'integer' ELSE 'real' END "
                f"WHEN 'boolean' THEN ({value})::text ELSE jsonb_typeof({value}) END"
            )
        return f"json_type({column}, {self.json_path(path)})"

    def json_array_has(self, column: str, placeholder: str = "?") -> str:
        """True when the JSON array in ``column`` has the string ``placeholder``."""
        if self.name == "postgresql":
            return (
                f"EXISTS (SELECT 1 FROM jsonb_array_elements_text({column}) AS t(value) "
                f"WHERE t.value = {placeholder})"
            )
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.value = {placeholder})"

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

    def contains(self, haystack: str, needle: str) -> str:
        """True when the text ``haystack`` contains ``needle``."""
        if self.name == "postgresql":
            return f"strpos({haystack}, {needle}) > 0"
        return f"instr({haystack}, {needle}) > 0"

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
