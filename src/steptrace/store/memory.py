"""A store in this process's memory: ``memory://NAME``, for tests.

A SQLite database in memory belongs to the one connection that opened it, so the
writer and the readers of a ``memory://`` store share one connection, and take turns
on it under one lock: a reader never sees half of a batch, and nothing reaches a disk.
The database lives until ``drop(url)`` (``steptrace.testing.memory_store`` drops it on
exit) or the process ends. This module keeps the databases by name;
``store/memory_engine.py`` reads and writes them.
"""

from __future__ import annotations

import sqlite3
import threading

from steptrace.errors import ConfigError
from steptrace.store import sqlite as sqlite_backend

SCHEME = "memory://"


def is_url(url: str) -> bool:
    return url.lower().startswith(SCHEME)


def name_of(url: str) -> str:
    return url[len(SCHEME) :] or "default"


class MemoryDatabase:
    """One in-memory SQLite database, its one connection and the lock its users take
    turns under."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        sqlite_backend.migrate(self.conn)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


_databases: dict[str, MemoryDatabase] = {}
_registry_lock = threading.Lock()


def database(url: str, *, create: bool) -> MemoryDatabase:
    """The database ``url`` names, created (with the current schema) if ``create``;
    ``ConfigError`` for one that does not exist (reading creates nothing)."""
    name = name_of(url)
    with _registry_lock:
        db = _databases.get(name)
        if db is None:
            if not create:
                raise ConfigError(missing_message(url))
            db = _databases[name] = MemoryDatabase(SCHEME + name)
        return db


def missing_message(url: str) -> str:
    return (
        f"no in-memory store {url!r} in this process: a workflow run records into one "
        "(configure(store=...) with the same URL) before it is read, and it lives only in "
        "the process that recorded it"
    )


def exists(url: str) -> bool:
    with _registry_lock:
        return name_of(url) in _databases


def drop(url: str) -> None:
    """Forget the database ``url`` names (its records go with it)."""
    with _registry_lock:
        db = _databases.pop(name_of(url), None)
    if db is not None:
        db.close()
