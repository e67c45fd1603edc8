"""Which engine a store URL names, and its schema's version: migrate it, or check it.

``scheme(url)`` picks the backend (a path or ``sqlite:///`` URL: SQLite;
``postgresql://``: PostgreSQL, whose module is loaded only then, so psycopg stays an
optional dependency; ``memory://NAME``: a database in this process's memory, which is
created with the current schema and has nothing to migrate). ``migrate_store``
applies pending migrations; ``prepare_schema`` is what opening a store does: migrate
(``auto_migrate``, the default) or refuse a schema that is behind with a message to
run ``steptrace migrate``.
"""

from __future__ import annotations

import os
from types import ModuleType

from steptrace.config import ConfigError, get_config
from steptrace.masking import mask_text, mask_url, url_secrets
from steptrace.store import memory
from steptrace.store import sqlite as sqlite_backend
from steptrace.store.migrations import SchemaTooNew, pending


def scheme(url: str) -> str:
    """``"sqlite"``, ``"postgresql"`` or ``"memory"``; ``ConfigError`` for anything
    else."""
    if "://" not in url:
        return "sqlite"
    name = url.split("://", 1)[0].lower()
    if name in ("postgres", "postgresql"):
        return "postgresql"
    if name not in ("sqlite", "memory"):
        raise ConfigError(
            f"unknown store URL scheme {name!r} in STEPTRACE_STORE: use a file path, "
            "sqlite:///path, postgresql://user@host/database or memory://NAME (tests)"
        )
    return name


def missing(url: str) -> bool:
    """Whether ``url`` names a store that does not exist (a SQLite file, an in-memory
    database of this process): reading creates no store, so a reader has nothing to
    open (or to sweep)."""
    kind = scheme(url)
    if kind == "memory":
        return not memory.exists(url)
    if kind != "sqlite":
        return False
    return not os.path.isfile(sqlite_backend.path_from_url(url))


def missing_store_message(url: str) -> str:
    if scheme(url) == "memory":
        return memory.missing_message(url)
    path = os.path.abspath(sqlite_backend.path_from_url(url))
    return (
        f"no store at {path} (set STEPTRACE_STORE or --store to an existing store; a "
        "workflow run creates one)"
    )


def load_postgres() -> ModuleType:
    """The PostgreSQL backend module; ``ConfigError`` when psycopg is not installed."""
    try:
        import pglast  # noqa: F401  (Store.sql's parser)
        import psycopg_pool  # noqa: F401  (PostgresEngine's pool)

        from steptrace.store import postgres
    except ImportError as exc:
        raise ConfigError(
            f"a postgresql:// store needs psycopg 3, psycopg-pool and pglast ({exc}): "
            "pip install 'steptrace[postgres]'"
        ) from exc
    return postgres


def describe(url: str) -> str:
    """The store's URL for messages: its password and secret parameters masked
    (``steptrace.masking.mask_url``)."""
    return mask_url(url)


def open_error(url: str, exc: BaseException) -> str:
    """What to tell the user when the store at ``url`` cannot be opened."""
    if scheme(url) == "postgresql":
        # libpq echoes parts of the URL it could not parse (a bad percent-encoding of the
        # password, an unclosed IPv6 bracket): the detail is masked too.
        detail = mask_text(" ".join(str(exc).split()), url_secrets(url))
        return (
            f"cannot open the PostgreSQL store {describe(url)}: {detail}. Check that the "
            "server is running and that STEPTRACE_STORE (or configure(store=...)) names the "
            "right host, port, user and database"
        )
    return (
        f"cannot open the steptrace store {mask_url(url)!r}: {exc}. Set STEPTRACE_STORE "
        "(or configure(store=...)) to a writable path or a sqlite:/// URL"
    )


def check_schema(url: str, applied: list[str] | None) -> None:
    """With automatic migration off: ``ConfigError`` unless the schema is current."""
    try:
        todo = pending(applied or [])
    except SchemaTooNew as exc:
        raise ConfigError(f"{describe(url)}: {exc}") from exc
    if todo:
        raise ConfigError(
            f"the store {describe(url)} needs migrations this steptrace has "
            f"({', '.join(m.name for m in todo)}) and automatic migration is off "
            "(STEPTRACE_AUTO_MIGRATE=0 or configure(auto_migrate=False)): run "
            "`steptrace migrate` (with the same STEPTRACE_STORE)"
        )


def migrate_store(url: str) -> list[str]:
    """Apply the migrations the store at ``url`` lacks (creating it if needed); returns
    their names (empty when the schema is current). Raises ``ConfigError`` for a store a
    newer steptrace migrated, or one that cannot be opened."""
    try:
        if scheme(url) == "memory":
            memory.database(url, create=True)  # made with the current schema
            return []
        if scheme(url) == "postgresql":
            pg = load_postgres()
            with pg.connect(url) as conn:
                return list(pg.migrate(conn))
        conn = sqlite_backend.connect(sqlite_backend.path_from_url(url))
        try:
            return sqlite_backend.migrate(conn)
        finally:
            conn.close()
    except SchemaTooNew as exc:
        raise ConfigError(f"{describe(url)}: {exc}") from exc


def prepare_schema(url: str) -> None:
    """Migrate the store on first use, or (automatic migration off) check it is current."""
    if get_config().auto_migrate_enabled() or scheme(url) == "memory":
        migrate_store(url)
        return
    if scheme(url) == "postgresql":
        pg = load_postgres()
        with pg.connect(url) as conn:
            check_schema(url, pg.applied(conn))
        return
    conn = sqlite_backend.connect(sqlite_backend.path_from_url(url))
    try:
        check_schema(url, sqlite_backend.applied(conn))
    finally:
        conn.close()


def same_store(a: str, b: str) -> bool:
    """Whether two store URLs name the same store."""
    if scheme(a) != scheme(b):
        return False
    if scheme(a) == "postgresql":  # a PostgresEngine's url has its password masked
        return mask_url(a) == mask_url(b)
    if scheme(a) == "memory":
        return memory.name_of(a) == memory.name_of(b)
    return os.path.abspath(sqlite_backend.path_from_url(a)) == os.path.abspath(
        sqlite_backend.path_from_url(b)
    )
