"""``steptrace sql`` / ``Store.sql`` is read-only in fact: on PostgreSQL every
function with a side effect is refused however the statement spells it, a superuser
is refused with the commands that make a reader role, and the reader can still read;
on both engines a runaway query stops at its time limit, a huge result at its row
limit; on SQLite Ctrl-C stops a running query at once. Reading a store that does not
exist creates nothing and names the path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import steptrace as st
import steptrace.config
from steptrace.cli import main
from steptrace.query.where import QueryError
from tests.support.helpers import clean_env, raw_sql, reader_url, recording_into

ROOT = Path(__file__).resolve().parents[1]
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
"""Rows without end (PostgreSQL and SQLite both produce them one at a time)."""
RUNAWAY_COUNT = f"SELECT count(*) FROM ({RUNAWAY}) AS r"
"""Never answers: it counts rows without end."""


def _record(url: str) -> None:
    @st.step
    def label(i: int) -> dict[str, int]:
        return {"i": i}

    @st.workflow
    def numbers(i: int) -> None:
        label(i)

    with recording_into(url):
        for i in range(3):
            st.run(numbers, i)


@pytest.fixture(scope="module")
def pg(new_postgres_database: Callable[[], str]) -> str:
    """A PostgreSQL store of 3 runs (the URL of its superuser), whose database reads
    string literals the old way by default (as a server may be configured)."""
    url = new_postgres_database()
    database = urllib.parse.urlsplit(url).path.lstrip("/")
    raw_sql(url, f"ALTER DATABASE {database} SET standard_conforming_strings = off")
    raw_sql(url, f"ALTER DATABASE {database} SET backslash_quote = on")
    for extension in ("dblink", "adminpack"):  # side-effect functions nobody listed
        raw_sql(url, f"CREATE EXTENSION {extension}")
    raw_sql(url, "CREATE SEQUENCE counter")
    _record(url)
    return url


@pytest.fixture
def reader(pg: str) -> Iterator[st.Store]:
    with st.Store.open(reader_url(pg)) as store:
        yield store


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("readonly") / "store.db")
    _record(url)
    return url


# --- PostgreSQL: what is refused ------------------------------------------------------

CALLS = {
    "terminate": "pg_terminate_backend(pg_backend_pid())",
    "cancel": "pg_cancel_backend(pg_backend_pid())",
    "reload_conf": "pg_reload_conf()",
    "rotate_logfile": "pg_rotate_logfile()",
    "advisory_lock": "pg_advisory_lock(7)",
    "try_advisory_lock": "pg_try_advisory_xact_lock(7)",
    "lo_import": "lo_import('/etc/hostname')",
    "lo_creat": "lo_creat(-1)",
    "read_file": "pg_read_file('postgresql.conf')",
    "read_binary_file": "pg_read_binary_file('postgresql.conf')",
    "ls_dir": "pg_ls_dir('.')",
    "stat_file": "pg_stat_file('postgresql.conf')",
    "set_config": "set_config('default_transaction_read_only', 'off', false)",
    "nextval": "nextval('counter')",
    "setval": "setval('counter', 42)",
    "txid": "txid_current()",
    "notify": "pg_notify('channel', 'x')",
    "sleep": "pg_sleep(5)",
    "query_to_xml": "query_to_xml('SELECT pg_terminate_backend(pg_backend_pid())', true, "
    "false, '')",
    "dblink": "dblink_connect('dbname=postgres')",
    "file_write": "pg_file_write('x', 'y', false)",
}
"""One call of each kind of function with a side effect (the last two: extensions')."""


def _spellings(call: str) -> list[str]:
    name, args = call.split("(", 1)
    schema = "public" if name == "dblink_connect" else "pg_catalog"
    return [
        f"SELECT {call}",
        f"/* only reading */ -- really\nSELECT {call}",
        f"select {name.upper()}({args}",
        f'SELECT "{name}"({args}',
        f"SELECT {schema}.{call}",
        f'SELECT "{schema}"."{name}"({args}',
        f"SELECT * FROM (SELECT {call} AS x) AS s",
        f"WITH c AS (SELECT {call} AS x) SELECT * FROM c",
        f"SELECT * FROM runs WHERE EXISTS (SELECT {call})",
        f"SELECT * FROM {call} AS f",
        f"EXPLAIN ANALYZE SELECT {call}",
    ]


def test_side_effect_functions_are_refused_however_written(reader: st.Store, pg: str) -> None:
    for kind, call in CALLS.items():
        for statement in _spellings(call):
            with pytest.raises(QueryError, match=r"does not call|assigns a transaction id"):
                reader.sql(statement)
            with pytest.raises(QueryError, match="exactly one statement, not 2"):
                reader.sql(f"SELECT 1; {statement}")
        assert kind  # every kind was tried in every spelling
    # nothing happened: the session lives, no lock, no large object, the sequence and
    # the setting as they were
    assert reader.sql("SELECT current_setting('default_transaction_read_only') AS ro") == [
        {"ro": "on"}
    ]
    assert raw_sql(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]
    assert raw_sql(pg, "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
    assert raw_sql(pg, "SELECT last_value, is_called FROM counter") == [(1, False)]


def test_statements_that_are_not_one_reading_query_are_refused(
    reader: st.Store, pg: str, tmp_path: Path
) -> None:
    marker = tmp_path / "copied"
    refused = {
        "one read-only query": [
            f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
            f"/* hi */ copy runs TO '{marker}'",
            "Copy runs FROM STDIN",
            "SET default_transaction_read_only = off",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "RESET ALL",
            "BEGIN READ WRITE",
            "COMMIT",
            "DO $$ BEGIN PERFORM pg_sleep(0); END $$",
            "CALL nothing()",
            "LOCK TABLE runs",
            "LISTEN channel",
            "NOTIFY channel",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DECLARE c CURSOR FOR SELECT 1",
            "CREATE TEMP TABLE sneaky AS SELECT 1",
            "DELETE FROM runs",
            "EXPLAIN ANALYZE DELETE FROM runs",
            "SHOW ALL",
        ],
        "exactly one statement": ["SELECT 1; DELETE FROM runs", "SELECT 1;;SELECT 2"],
        "does not run": [
            "SELECT * INTO sneaky FROM runs",
            "SELECT * FROM runs FOR UPDATE",
            "SELECT * FROM runs FOR NO KEY UPDATE",
            "SELECT * FROM (SELECT * FROM runs FOR SHARE) AS s",
            "WITH d AS (DELETE FROM runs RETURNING *) SELECT count(*) FROM d",
            "WITH u AS (UPDATE runs SET status = 'x' RETURNING *) SELECT 1",
            "WITH i AS (INSERT INTO runs (run_id) VALUES ('x') RETURNING 1) SELECT 1",
        ],
    }
    for message, statements in refused.items():
        for statement in statements:
            with pytest.raises(QueryError, match=message):
                reader.sql(statement)
    assert not marker.exists()
    assert raw_sql(pg, "SELECT count(*) FROM runs WHERE status = 'succeeded'") == [(3,)]


def test_the_reader_role_still_reads(reader: st.Store, pg: str) -> None:
    assert reader.sql("SELECT count(*) AS n FROM runs") == [{"n": 3}]
    outputs = reader.sql("SELECT output FROM steps WHERE name = ? ORDER BY started_at", ["label"])
    assert [r["output"] for r in outputs] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert reader.sql("SELECT output ->> 'i' AS i FROM spans WHERE output ? 'i' LIMIT 1") in (
        [{"i": "0"}],
        [{"i": "1"}],
        [{"i": "2"}],
    )
    assert len(reader.sql("TABLE runs")) == 3
    assert reader.sql("VALUES (1, 'a')") == [{"column1": 1, "column2": "a"}]
    assert reader.sql("SELECT random() < 2 AS r, clock_timestamp() IS NOT NULL AS c") == [
        {"r": True, "c": True}
    ]
    assert reader.sql("SELECT $$it's \\ $$ AS s, 'a%b' AS p") == [{"s": "it's \\ ", "p": "a%b"}]
    plan = reader.sql("EXPLAIN SELECT * FROM runs WHERE workflow = 'numbers'")
    assert plan and "runs" in str(plan)
    # The database reads 'a\' as an unterminated literal; the session reads it as the
    # parser does, so what the guard saw as a string stays a string.
    tricky = "SELECT 'a\\'\n', pg_terminate_backend(pg_backend_pid()) --' AS s"
    assert reader.sql(tricky) == [{"s": "a\\, pg_terminate_backend(pg_backend_pid()) --"}]
    proc = _steptrace("--store", reader_url(pg), "sql", "--json", "SELECT count(*) AS n FROM runs")
    assert json.loads(proc.stdout) == [{"n": 3}], proc.stderr


def test_a_superuser_is_refused_with_the_way_to_a_reader_role(pg: str) -> None:
    parts = urllib.parse.urlsplit(pg)
    with_password = pg.replace("//postgres@", "//postgres:pw-s3cret@")
    with st.Store.open(with_password) as store, pytest.raises(QueryError) as refused:
        store.sql("SELECT 1")
    message = str(refused.value)
    database = parts.path.lstrip("/")
    for fragment in (
        "role 'postgres', a superuser",
        "CREATE ROLE steptrace_reader LOGIN PASSWORD",
        f"GRANT CONNECT ON DATABASE {database} TO steptrace_reader",
        "GRANT USAGE ON SCHEMA public TO steptrace_reader",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO steptrace_reader",
        "GRANT pg_read_all_data TO steptrace_reader",
        f"steptrace --store postgresql://steptrace_reader@{parts.hostname}:{parts.port}/"
        f"{database} sql",
    ):
        assert fragment in message, message
    assert "pw-s3cret" not in message
    # not only superusers: a role that may read the server's files is refused too
    raw_sql(pg, "DROP ROLE IF EXISTS steptrace_file_reader")
    raw_sql(pg, "CREATE ROLE steptrace_file_reader LOGIN")
    raw_sql(pg, "GRANT pg_read_server_files TO steptrace_file_reader")
    raw_sql(pg, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO steptrace_file_reader")
    files = pg.replace("//postgres@", "//steptrace_file_reader@")
    try:
        with st.Store.open(files) as store, pytest.raises(QueryError) as refused:
            store.sql("SELECT 1")
        assert "role 'steptrace_file_reader', a member of pg_read_server_files:" in str(
            refused.value
        )
    finally:
        raw_sql(pg, "DROP OWNED BY steptrace_file_reader")
        raw_sql(pg, "DROP ROLE steptrace_file_reader")


# --- both engines: limits ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def readable(request: pytest.FixtureRequest, sqlite_store: str) -> str:
    """A store URL ``Store.sql`` accepts, per engine."""
    if request.param == "sqlite":
        return sqlite_store
    return reader_url(request.getfixturevalue("pg"))


def test_a_runaway_query_stops_at_its_time_limit(readable: str) -> None:
    with st.Store.open(readable) as store:
        started = time.monotonic()
        with pytest.raises(QueryError, match=r"time limit of 0.5 s \(statement timeout"):
            store.sql(RUNAWAY_COUNT, timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert store.sql("SELECT count(*) AS n FROM runs") == [{"n": 3}]  # usable after
        with pytest.raises(QueryError, match="NUL or a lone surrogate"):
            store.sql("SELECT 'a\x00b'")
        assert store.sql("SELECT ? AS v", ["a\x00b"]) == [{"v": "a\ufffdb"}]  # as stored


def test_a_huge_result_is_cut_at_the_row_limit(
    readable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with st.Store.open(readable) as store:
        # rows without end: only a cursor read a chunk at a time returns at all
        assert store.sql(RUNAWAY, limit=5, timeout_s=20) == [{"x": i} for i in range(1, 6)]
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", readable, "sql", "--json", "--limit", "7", RUNAWAY])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    assert json.loads(out) == [{"x": i} for i in range(1, 8)]
    assert err == "note: showing the first 7 rows; pass --limit N for more\n"
    assert time.monotonic() - started < 10
    with pytest.raises(SystemExit):
        main(["--store", readable, "sql", "--json", "--limit", "3", "SELECT 1 AS one"])
    out, err = capsys.readouterr()
    assert (json.loads(out), err) == ([{"one": 1}], "")


# --- SQLite: the time limit and Ctrl-C from the command line ----------------------------


def _steptrace(*args: str, returncode: int = 0) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == returncode, proc.stderr
    return proc


def test_the_time_limit_from_the_command_line(sqlite_store: str) -> None:
    proc = _steptrace(
        "--store", sqlite_store, "sql", "--timeout", "0.3", RUNAWAY_COUNT, returncode=1
    )
    assert proc.stderr.startswith("error: SQL error: the query was stopped at its time limit")
    assert "--timeout" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_stops_a_running_query(sqlite_store: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "steptrace", "--store", sqlite_store, "sql", RUNAWAY_COUNT],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell may start a background job ignoring SIGINT: the child must not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 30
        store = os.path.realpath(sqlite_store)
        fds = Path(f"/proc/{proc.pid}/fd")
        # the query is running once the read-only connection has the file open (the
        # store's own connection and the reader's): past start-up, in the command
        while sum(1 for fd in _links(fds) if fd == store) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None  # still counting
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert out == ""


def _links(fds: Path) -> list[str]:
    found = []
    try:
        for fd in fds.iterdir():
            try:
                found.append(os.path.realpath(os.readlink(fd)))
            except OSError:
                continue
    except OSError:
        pass
    return found


# --- reading creates nothing ----------------------------------------------------------

READ_ONLY_COMMANDS = [
    ["runs"],
    ["show", "abc"],
    ["sql", "SELECT 1"],
    ["dist", "classify", "label"],
    ["stats"],
    ["diff", "a", "b"],
    ["compare", "a"],
    ["export"],
    ["status"],
    ["index", "classify", "label"],
    ["prune", "--older-than", "30d"],
    ["export-otlp", "--endpoint", "http://127.0.0.1:9"],
    ["ui", "--no-open", "--port", "9"],
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_reading_a_store_that_does_not_exist_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # the spill journals' default place is under the home directory: watched too
    monkeypatch.delenv("STEPTRACE_SPILL_DIR")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    typo = tmp_path / "typo" / "steptrace.db"
    before = _tree(tmp_path)
    for command in READ_ONLY_COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main(["--store", str(typo), *command])
        _, err = capsys.readouterr()
        assert exit_info.value.code == 1, (command, err)
        assert err == (
            f"error: no store at {typo} (set STEPTRACE_STORE or --store to an existing "
            "store; a workflow run creates one)\n"
        ), command
        assert _tree(tmp_path) == before, command
    with pytest.raises(st.ConfigError, match=f"no store at {typo}"):
        st.Store.open(str(typo))
    assert _tree(tmp_path) == before


def test_a_missing_postgresql_database_is_named_with_the_password_masked(
    pg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = pg.replace("//postgres@", "//postgres:pw-s3cret@").rsplit("/", 1)[0]
    missing += "/no_such_store_db"
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", missing, "runs"])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert "no_such_store_db" in err and "postgres:****@" in err, err
    assert "pw-s3cret" not in err
