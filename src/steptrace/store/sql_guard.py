"""What ``Store.sql`` lets reach PostgreSQL: one query that reads, checked before it
is sent.

PostgreSQL itself refuses every write in the read-only session ``Store.sql`` uses.
What a read-only transaction does not stop are functions whose effects lie outside
the tables: ending other sessions (``pg_terminate_backend``), taking advisory
locks, reading server files (``pg_read_file``, ``lo_import``), running programs
(``COPY … PROGRAM``), sending notifications, advancing sequences, changing
settings (``set_config``), reaching other servers (``dblink``). So the statement
is parsed with PostgreSQL's own parser (``pglast``, which wraps libpg_query) and
allowed only when:

- it is exactly one statement, a ``SELECT`` (``VALUES``, ``TABLE``, ``WITH …
  SELECT``) or an ``EXPLAIN`` of one; no ``SELECT … INTO``, no ``FOR UPDATE`` /
  ``FOR SHARE``, no ``INSERT``/``UPDATE``/``DELETE``/``MERGE`` in a ``WITH``;
- every function it calls — however it is spelled: any case, quoted,
  schema-qualified, in a subquery or a CTE — is not *volatile* by the server's
  own catalog (``pg_proc.provolatile``), but for a few volatile functions that only
  read (``VOLATILE_ALLOWED``), nor one of the two stable functions that assign a
  transaction id (``REFUSED_STABLE``); operators are judged by the function behind
  them.

Why a rule on volatility rather than a list of dangerous names: PostgreSQL marks
every function with a side effect volatile (that is what the mark means: the
planner may not skip or repeat a call), and it refuses writes inside non-volatile
functions. A list would miss the function nobody thought of, an extension's most of
all; the rule refuses it. Names are looked up on the server, every overload in
every schema (or in the schema named): a name one of whose overloads is volatile is
refused.

The check needs the text the server parses to be the text the parser saw: the
session pins ``standard_conforming_strings=on`` (the parser's reading of ``'\\'``)
and ``backslash_quote=safe_encoding``, whatever the server or database default.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

from steptrace.errors import QueryError

VOLATILE_ALLOWED = frozenset(
    {
        "random",
        "random_normal",
        "clock_timestamp",
        "timeofday",
        "gen_random_uuid",
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_database_size",
    }
)
"""Volatile functions of ``pg_catalog`` that only read (a clock, a random number, the
size of a relation): allowed."""

REFUSED_STABLE = frozenset({"txid_current", "pg_current_xact_id"})
"""Functions marked stable that still change something: they give the transaction an
id (which a read-only transaction otherwise never takes). Refused by name."""

SESSION_OPTIONS = (
    "-c default_transaction_read_only=on "
    "-c standard_conforming_strings=on "
    "-c backslash_quote=safe_encoding"
)
"""Connection options of the session ``Store.sql`` uses: read-only by default (a
statement cannot flip it back: ``SET`` and ``set_config`` are refused), and string
literals read the way the parser of this module reads them."""

_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


@dataclass(frozen=True)
class Statement:
    """A statement that passed the parser: what it calls, for the catalog check."""

    text: str
    explain: bool
    """An ``EXPLAIN`` (which a cursor cannot run)."""
    functions: frozenset[tuple[str | None, str]]
    """(schema or None, name) of each function called."""
    operators: frozenset[str]
    """The name of each operator used."""


def _names(parts: Any) -> tuple[str, ...]:
    return tuple(p.sval or "" for p in parts or () if isinstance(p, ast.String))


class _Walk(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.functions: set[tuple[str | None, str]] = set()
        self.operators: set[str] = set()
        self.refused: str | None = None

    def visit(self, ancestors: Any, node: Any) -> None:
        if isinstance(node, _WRITES):
            self.refused = f"{type(node).__name__.removesuffix('Stmt').upper()} in a WITH"
        elif isinstance(node, ast.SelectStmt):
            if node.intoClause is not None:
                self.refused = "SELECT … INTO"
            elif node.lockingClause:
                self.refused = "SELECT … FOR UPDATE/SHARE"
        elif isinstance(node, ast.FuncCall):
            names = _names(node.funcname)
            if names:
                self.functions.add((names[-2] if len(names) > 1 else None, names[-1]))
        elif isinstance(node, ast.A_Expr):
            names = _names(node.name)
            if names:
                self.operators.add(names[-1])


def parse(query: str) -> Statement:
    """The statement, if it is one query that reads (see the module docstring);
    ``QueryError`` otherwise, saying what was refused."""
    try:
        statements = parse_sql(query)
    except ParseError as exc:
        raise QueryError(f"SQL error: {exc}") from None
    if len(statements) != 1:
        raise QueryError(f"SQL error: Store.sql runs exactly one statement, not {len(statements)}")
    stmt = statements[0].stmt
    explain = isinstance(stmt, ast.ExplainStmt)
    query_node = stmt.query if isinstance(stmt, ast.ExplainStmt) else stmt
    if not isinstance(query_node, ast.SelectStmt):
        kind = type(query_node).__name__.removesuffix("Stmt")
        raise QueryError(
            f"SQL error: Store.sql runs one read-only query (SELECT, WITH … SELECT, VALUES, "
            f"TABLE or EXPLAIN of one), not {kind}"
        )
    walk = _Walk()
    walk(statements[0])
    if walk.refused is not None:
        raise QueryError(f"SQL error: Store.sql does not run {walk.refused}: it only reads")
    for _schema, name in walk.functions:
        if name in REFUSED_STABLE:
            raise QueryError(
                f"SQL error: Store.sql does not call {name}(): it assigns a transaction id"
            )
    return Statement(query, explain, frozenset(walk.functions), frozenset(walk.operators))


CATALOG_SQL = (
    "SELECT 'f', n.nspname, p.proname FROM pg_catalog.pg_proc p "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE p.provolatile = 'v' AND p.proname = ANY(%s) "
    "UNION ALL "
    "SELECT 'o', n.nspname, o.oprname FROM pg_catalog.pg_operator o "
    "JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode "
    "JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace "
    "WHERE p.provolatile = 'v' AND o.oprname = ANY(%s)"
)
"""The volatile functions (and the operators over volatile functions) among the names
a statement uses: ``[function names, operator names]`` as parameters."""


def catalog_params(statement: Statement) -> list[list[str]]:
    return [
        sorted({name for _, name in statement.functions}),
        sorted(statement.operators),
    ]


def check_volatile(statement: Statement, volatile: list[tuple[str, str, str]]) -> None:
    """``QueryError`` when the statement calls a volatile function (or uses an operator
    over one) that ``VOLATILE_ALLOWED`` does not name; ``volatile`` is what
    ``CATALOG_SQL`` found."""
    for kind, schema, name in volatile:
        if kind == "o":
            raise QueryError(
                f"SQL error: Store.sql does not run the operator {name} (its function "
                "is volatile: it may change something)"
            )
        for called_schema, called in statement.functions:
            if called != name or called_schema not in (None, schema):
                continue
            if schema == "pg_catalog" and name in VOLATILE_ALLOWED:
                continue
            shown = f"{called_schema}.{called}" if called_schema else called
            raise QueryError(
                f"SQL error: Store.sql does not call {shown}(): a volatile function may act "
                "outside the query (end sessions, take locks, read or write server files, "
                "change settings), so only functions PostgreSQL marks stable or immutable "
                f"are allowed, and {', '.join(sorted(VOLATILE_ALLOWED))}"
            )


ROLE_SQL = (
    "SELECT current_user, r.rolsuper, "
    "pg_catalog.pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER'), "
    "pg_catalog.pg_has_role(current_user, 'pg_read_server_files', 'MEMBER'), "
    "pg_catalog.pg_has_role(current_user, 'pg_write_server_files', 'MEMBER'), "
    "current_database(), current_schema() "
    "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
)
"""Who the session is, and whether it may act on the server's files or programs."""

READER_ROLE = "steptrace_reader"


def reader_commands(database: str, schema: str) -> str:
    """The SQL that makes a role that can only read the store."""
    return (
        f"CREATE ROLE {READER_ROLE} LOGIN PASSWORD '…'; "
        f"GRANT CONNECT ON DATABASE {database} TO {READER_ROLE}; "
        f"GRANT USAGE ON SCHEMA {schema} TO {READER_ROLE}; "
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {READER_ROLE}"
    )


def check_role(row: tuple[Any, ...], reader_url: str) -> None:
    """``QueryError`` when the session's role (a ``ROLE_SQL`` row) is a superuser or may
    run server programs or read or write server files: such a role can act outside
    the database through means no check here can close, so ``Store.sql`` refuses it
    and says how to make a role that can only read."""
    user, superuser, program, read_files, write_files, database, schema = row
    powers = [
        what
        for what, has in (
            ("a superuser", superuser),
            ("a member of pg_execute_server_program", program and not superuser),
            ("a member of pg_read_server_files", read_files and not superuser),
            ("a member of pg_write_server_files", write_files and not superuser),
        )
        if has
    ]
    if not powers:
        return
    raise QueryError(
        f"refusing to run SQL as the PostgreSQL role {user!r}, {' and '.join(powers)}: "
        "such a role can reach the server's files and programs whatever steptrace "
        "checks. Create a role that can only read the store (as a superuser, in psql: "
        f"{reader_commands(database, schema or 'public')}; or GRANT pg_read_all_data TO "
        f"{READER_ROLE}) and point steptrace sql at it: steptrace --store {reader_url} "
        "sql 'SELECT …' (or STEPTRACE_STORE)"
    )


def reader_url(url: str) -> str:
    """``url`` with the reader role as its user and no password: what to point
    ``steptrace sql`` at."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{READER_ROLE}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def session_options(url: str) -> str:
    """The ``options`` of the ``Store.sql`` session: the URL's own (a ``search_path``,
    say) followed by ``SESSION_OPTIONS``, which win over them."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url).get("options") or ""
    return f"{given} {SESSION_OPTIONS}".strip()
