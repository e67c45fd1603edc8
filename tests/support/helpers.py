"""Small helpers shared by the tests (plain functions and constants, no fixtures)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan

import steptrace as st
import steptrace.config
from tests.support.loopback import RecordingHTTPServer

BACKENDS = ("sqlite", "postgresql")
"""The store engines every store test runs on (the ``store_url`` fixture's params)."""


def span_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def trace_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def parent_hex(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


def parse_ts(text: str) -> datetime:
    """A stored ISO-8601 timestamp (``...Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``OTEL_*`` and ``STEPTRACE_*`` settings (a
    child process then configures itself only from what the test gives it), plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    env.update(extra)
    return env


T = TypeVar("T")


def record_on_backend(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    record: Callable[[str], T],
    name: str,
) -> T:
    """A module's known runs (``record(url)``) in a fresh store of the fixture's backend
    (``request.param``): a SQLite file named after ``name``, or a new PostgreSQL
    database."""
    if request.param == "sqlite":
        return record(str(tmp_path_factory.mktemp(name) / f"{name}.db"))
    url: str = request.getfixturevalue("new_postgres_database")()
    return record(url)


@contextmanager
def recording_into(url: str) -> Iterator[None]:
    """steptrace recording into the store at ``url`` for the block (a module's known
    data), from default configuration; then everything flushed and the defaults back."""
    steptrace.config.reset()
    st.configure(store=url)
    try:
        yield
        assert st.flush()
    finally:
        steptrace.config.reset()


def run_python(
    code: str, store: Path, *, returncode: int = 0, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter writing to ``store`` (the test's PostgreSQL
    store instead when the test runs on that backend); fails the test unless it exits
    with ``returncode``."""
    configured = os.environ.get("STEPTRACE_STORE", "")
    env = dict(os.environ, STEPTRACE_STORE=configured if is_postgres(configured) else str(store))
    for name in list(env):
        if name.startswith("OTEL_"):
            del env[name]
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=store.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == returncode, proc.stderr
    return proc


ROOT = Path(__file__).resolve().parents[2]
"""The checkout the tests run in."""


def steptrace_cli(
    *args: str,
    store: Path | str | None,
    returncode: int | None = 0,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m steptrace ARGS`` on ``store`` (None: the default), in ``cwd``, as a
    user at a wide terminal runs it (no ``OTEL_*`` or other ``STEPTRACE_*`` settings but
    ``env``); fails the test unless it exits with ``returncode`` (None: any)."""
    full_env = clean_env(COLUMNS="200")
    if store is not None:
        full_env["STEPTRACE_STORE"] = str(store)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if returncode is not None:
        assert proc.returncode == returncode, proc.stderr
    return proc


def cli_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``steptrace ARGS`` run in this process (``steptrace.cli.main``): its exit code and
    the stdout and stderr ``capsys`` captured. Not for a command that records runs: at
    its end it shuts the OpenTelemetry SDK down, as a command line does."""
    from steptrace.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


READER = "steptrace_reader"
READER_PASSWORD = "reader-pw"


def reader_url(url: str) -> str:
    """A PostgreSQL store's URL (of a superuser) as the role that may only read it, the
    one ``Store.sql`` asks for (created on the server if needed, granted what
    docs/security.md says on the store's tables as they are now); any other URL
    as it is."""
    if not is_postgres(url):
        return url
    import psycopg
    import psycopg.errors

    with psycopg.connect(url, autocommit=True) as conn:
        # made by an earlier test on this server, perhaps
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        conn.execute(f'GRANT CONNECT ON DATABASE "{row[0]}" TO {READER}')
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}")
    parts = urllib.parse.urlsplit(url)
    netloc = f"{READER}:{READER_PASSWORD}@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def raw_sql(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run SQL on a store with the engine's own driver (not steptrace): ``?``
    placeholders; for PostgreSQL they become ``%s`` and JSONB comes back as its text,
    as SQLite gives it."""
    if is_postgres(url):
        import psycopg
        from psycopg.types.string import TextLoader

        with psycopg.connect(url, autocommit=True) as conn:
            conn.adapters.register_loader("jsonb", TextLoader)
            cursor = conn.execute(sql.replace("?", "%s").encode(), params or None)
            return list(cursor.fetchall()) if cursor.description else []
    import sqlite3

    conn = sqlite3.connect(url, isolation_level=None)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


@contextmanager
def recording_http_server(
    body: bytes = b'{"ok": true}',
) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A ``RecordingHTTPServer`` for the block: ``(url, headers of each request)``."""
    with RecordingHTTPServer(body) as server:
        yield server.url, server.seen


LONG_RUN = """
import time
import steptrace as st

@st.step
def first():
    return 1

@st.step
def forever():
    time.sleep(600)

@st.workflow(durable=True)
def wf():
    first()
    print(st.current_run_id(), flush=True)
    forever()

wf()
"""
"""A script whose durable run prints its id once its first step is stored, then never
ends: a run to kill in the middle."""


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
"""Where the browser tests leave their screenshots (``tests/artifacts``, git-ignored)."""


def screenshot(page: Any, name: str, full_page: bool = False) -> Path:
    """Save a Playwright page's screenshot as ``ARTIFACTS/name``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path
