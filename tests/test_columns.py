"""The column table (``steptrace.store.columns``) against the schema the migrations
create, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import sqlite3
from typing import Any

from helpers import is_postgres, raw_sql

from steptrace.store import migrate_store
from steptrace.store.columns import TABLES, Table

SQLITE_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "DOUBLE PRECISION", "json": "TEXT"}
POSTGRES_TYPES = {"text": "text", "integer": "integer", "real": "double precision", "json": "jsonb"}


def _declared(table: Table, types: dict[str, str]) -> list[tuple[str, str, bool]]:
    return [(c.name, types[c.type], c.nullable) for c in table.columns]


def _sqlite_schema(path: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        found: dict[str, Any] = {}
        for kind, name in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ):
            # SQLite lets a primary key other than an INTEGER one hold NULL; the writer
            # never gives it one.
            columns = [
                (r[1], r[2], not (r[3] or r[5])) for r in conn.execute(f"PRAGMA table_info({name})")
            ]
            unique = [
                tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index[1]})"))
                for index in conn.execute(f"PRAGMA index_list({name})")
                if index[2]
            ]
            found[name] = (kind == "view", columns, unique)
        return found
    finally:
        conn.close()


def _postgres_schema(url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, kind in raw_sql(
        url,
        "SELECT table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_%'",
    ):
        columns = raw_sql(
            url,
            "SELECT column_name, data_type, is_nullable = 'YES', collation_name "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            (name,),
        )
        unique = raw_sql(
            url,
            "SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i "
            "CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indisunique AND i.indrelid = to_regclass(?) GROUP BY i.indexrelid",
            (str(name),),
        )
        found[str(name)] = (kind == "VIEW", columns, [tuple(u[0]) for u in unique])
    return found


def test_the_column_table_is_the_schema_the_migrations_create(store_url: str) -> None:
    """Every table and view, column for column, in order: name, type, NULL or not, and
    the key a write conflicts on (PostgreSQL: text compared byte by byte)."""
    migrate_store(store_url)
    postgres = is_postgres(store_url)
    found = _postgres_schema(store_url) if postgres else _sqlite_schema(store_url)
    assert sorted(found) == sorted(t.name for t in TABLES)
    for table in TABLES:
        view, columns, unique = found[table.name]
        assert view == table.view, table.name
        if postgres:
            declared = _declared(table, POSTGRES_TYPES)
            got = [(n, t, null) for n, t, null, _ in columns]
            collations = {n: collation for n, t, _, collation in columns if t == "text"}
            if not table.view:
                assert set(collations.values()) == {"C"}, table.name
        else:
            declared = _declared(table, SQLITE_TYPES)
            got = columns
        if table.view:
            # A view's columns are NULL or not as the rows they come from; SQLite names
            # no type for an expression.
            declared = [(n, t, True) for n, t, _ in declared]
            got = [(n, t or d, True) for (n, t, _), (_, d, _) in zip(got, declared, strict=False)]
        assert got == declared, table.name
        if table.key:
            assert table.key in unique, table.name
