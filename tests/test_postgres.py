"""What only the PostgreSQL store has to show (issue 6, point 1): a server that goes
away while workflows run (they keep running; the problem is a logged warning; what
was recorded is written once the server is back), start-up mistakes that say what
to change (psycopg missing, server unreachable — without echoing the password), and
``Store.sql`` that cannot be talked out of read-only."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable

import pytest

import steptrace as st
from steptrace.query.where import QueryError
from tests.support import pg_server
from tests.support.helpers import raw_sql, reader_url


def test_a_server_that_goes_away_does_not_break_workflows_and_loses_nothing(
    own_server: pg_server.PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    @st.step
    def work(i: int) -> int:
        return i * 3

    @st.workflow
    def wf(i: int) -> int:
        return work(i)

    st.configure(store=own_server.url)
    assert wf(0) == 0
    assert st.flush()
    own_server.pause()
    with caplog.at_level(logging.WARNING, logger="steptrace"):
        results = [st.run(wf, i) for i in range(1, 6)]  # the server is down
        assert [r.output for r in results] == [3, 6, 9, 12, 15]
        assert all(r.status == "succeeded" and r.exception is None for r in results)
        st.flush(timeout_s=1.5)  # the writer tries, and reports
        assert any("recording goes on into" in r.getMessage() for r in caplog.records), caplog.text
        assert st.health()["pending"] > 0  # in the spill journal meanwhile
        own_server.resume()
        assert st.flush(timeout_s=30)
    rows = raw_sql(own_server.url, "SELECT count(*), count(DISTINCT run_id) FROM runs")
    assert rows == [(6, 6)]
    outputs = raw_sql(
        own_server.url, "SELECT output::text FROM spans WHERE name = 'work' ORDER BY output"
    )
    assert sorted(int(str(r[0])) for r in outputs) == [0, 3, 6, 9, 12, 15]
    assert not any("failed to write" in r.getMessage() for r in caplog.records)


def test_an_unreachable_server_at_start_is_spilled_to_and_reported_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that is down when the first run starts may only be starting: the runs go
    to the spill journal, the warning says so (password masked), and a reader that
    cannot open the store gets a ConfigError saying what to check."""
    url = "postgresql://ada:hunter2secret@127.0.0.1:1/steptrace"
    st.configure(store=url)

    @st.workflow
    def wf() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="steptrace"):
        assert wf() == 1
    message = caplog.text
    assert "cannot open the store" in message and "check STEPTRACE_STORE" in message
    assert "ada:****@127.0.0.1:1" in message and "hunter2secret" not in message
    health = st.health()
    assert health["state"] == "spilling" and health["pending"] == 2 and health["lost"] == 0
    with pytest.raises(st.ConfigError, match="right host, port, user and database") as caught:
        st.Store.open(url)
    assert "hunter2secret" not in str(caught.value)


def test_a_wrong_password_is_a_config_error_at_start(postgres_server: str) -> None:
    """A mistake that will not pass by itself fails the first run loudly."""
    parts = urllib.parse.urlsplit(postgres_server)
    url = urllib.parse.urlunsplit(
        parts._replace(netloc=f"nobody_here:pw@{parts.netloc.split('@')[-1]}")
    )
    st.configure(store=url)

    @st.workflow
    def wf() -> int:
        return 1

    with pytest.raises(st.ConfigError, match="cannot open the PostgreSQL store"):
        wf()


def test_without_psycopg_a_postgresql_store_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # as if the postgres extra were not installed\n"
        "import steptrace as st\n"
        "try:\n"
        "    st.Store.open('postgresql://127.0.0.1/x')\n"
        "except st.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'steptrace[postgres]'" in proc.stdout, proc.stdout + proc.stderr


def test_sql_cannot_be_talked_out_of_read_only(
    new_postgres_database: Callable[[], str],
) -> None:
    store_url = new_postgres_database()
    st.configure(store=store_url)

    @st.workflow
    def wf() -> int:
        return 1

    wf()
    st.flush()
    with st.Store.open(reader_url(store_url)) as store:
        for statement in (
            "SET default_transaction_read_only = off",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "COMMIT",
            "SELECT 1; DELETE FROM runs",
            "DELETE FROM runs",
            "CREATE TABLE sneaky (x int)",
            "COPY runs TO STDOUT",
            "SELECT * FROM runs FOR UPDATE",
        ):
            with pytest.raises(QueryError):
                store.sql(statement)
        assert store.sql("SELECT count(*) AS n FROM runs") == [{"n": 1}]
        started = time.monotonic()
        with pytest.raises(QueryError, match="statement timeout"):
            store.sql("SELECT count(*) FROM generate_series(1, 10000000000)", timeout_s=1)
        assert time.monotonic() - started < 10
        assert store.sql("SELECT count(*) AS n FROM runs") == [{"n": 1}]
    assert raw_sql(store_url, "SELECT count(*) FROM runs") == [(1,)]


def test_a_span_or_run_written_again_keeps_its_last_version(store_url: str) -> None:
    """The writer's upsert semantics, the same on both engines: a run is written when it
    starts and when it ends (in one batch or two); a span written twice (a re-import)
    replaces the first, without duplicates."""
    import orjson

    from steptrace.record import LLMUsage, RunState, SpanRecord
    from steptrace.store import open_writer

    writer = open_writer(store_url)
    t = 1_700_000_000_000_000_000
    run = RunState("r1", "wf", "t" * 32, "a" * 16, t, input=orjson.dumps({"x": 1}))
    span = SpanRecord("r1", "b" * 16, "a" * 16, "llm", "chat m", t + 1, 1, None, t + 2)
    span.status, span.output = "succeeded", orjson.dumps("first")
    span.llm = LLMUsage("scripted", "m", input_tokens=3)
    writer.write([run], [span])
    span.output, span.llm = orjson.dumps("second"), LLMUsage("scripted", "m", input_tokens=4)
    ended = RunState("r1", "wf", "t" * 32, "a" * 16, t, status="succeeded", end_ns=t + 9)
    ended.output = orjson.dumps({"y": 2})
    other = RunState("r2", "wf", "t" * 32, "c" * 16, t, input=orjson.dumps(5))
    other_end = RunState("r2", "wf", "t" * 32, "c" * 16, t, status="failed", end_ns=t + 5)
    writer.write([ended, other, other_end], [span])
    writer.close()
    with st.Store.open(store_url) as store:
        r1 = store.run("r1")
        assert (r1.status, r1.input, r1.output, r1.duration_ms) == (
            "succeeded",
            {"x": 1},
            {"y": 2},
            9e-6,
        )
        ((llm),) = r1.spans
        assert llm.output == "second" and llm.llm is not None
        assert llm.llm["input_tokens"] == 4
        r2 = store.run("r2")
        assert (r2.status, r2.input, r2.ended_at is not None) == ("failed", 5, True)
    assert raw_sql(store_url, "SELECT count(*) FROM spans") == [(1,)]
    assert raw_sql(store_url, "SELECT count(*) FROM llm_calls") == [(1,)]


def test_a_field_index_serves_the_distribution_on_postgresql(
    new_postgres_database: Callable[[], str],
) -> None:
    from steptrace.query.distribution import distribution_sql
    from steptrace.store.dialect import POSTGRESQL
    from tests.support.query_data import record

    url = record(new_postgres_database()).url
    with st.Store.open(url) as store:
        before = store.distribution("classify", "classification")
        name = store.index_field("classify", "classification")
        assert store.distribution("classify", "classification") == before
        sql, params = distribution_sql(POSTGRESQL, "classify", "classification")
        import psycopg

        from steptrace.store.postgres import placeholders

        with psycopg.connect(url) as conn:
            conn.execute("SET enable_seqscan = off")  # the table is tiny: make it choose
            # the step name and path are bound parameters, as Store sends them
            plan = "\n".join(
                r[0] for r in conn.execute(f"EXPLAIN {placeholders(sql)}".encode(), params)
            )
        assert name in plan, plan
        assert store.drop_field_index("classify", "classification")
        assert not store.drop_field_index("classify", "classification")


def test_a_distribution_over_runs_with_many_calls_each(store_url: str) -> None:
    """More rows per run than the first read fetches (the PostgreSQL store then reads
    further): the last 2 runs' 20 calls, exactly, on both engines."""

    @st.step
    def pick(i: int) -> dict[str, int]:
        return {"v": i % 3}

    @st.workflow
    def many(n: int) -> None:
        for i in range(n):
            pick(i)

    for _ in range(4):
        many(10)
    with st.Store.open(store_url) as store:
        d = store.distribution("pick", "v", last=2)
    assert (d["runs"], d["occurrences"]) == (2, 20)
    assert {v["value"]: v["count"] for v in d["values"]} == {0: 8, 1: 6, 2: 6}


def test_the_password_stays_out_of_what_the_store_shows(
    new_postgres_database: Callable[[], str],
) -> None:
    url = new_postgres_database().replace("//postgres@", "//postgres:pw-s3cret@")
    assert "pw-s3cret" in url
    st.configure(store=url)

    @st.workflow
    def wf() -> int:
        return 7

    wf()
    with st.Store.open(url) as store:
        assert "pw-s3cret" not in store.url and "***" in store.url
        assert [r.output for r in store.runs()] == [7]  # this process's write, flushed
        with pytest.raises(st.RunNotFound) as missing:
            store.run("nope")
        assert "pw-s3cret" not in str(missing.value)


def test_timestamps_are_the_text_sqlite_stores() -> None:
    import random

    from steptrace.store import postgres, sqlite

    rng = random.Random(3)
    stamps = [0, 999, 1_000_000_000, 1_764_000_000_123_456_789]
    stamps += [rng.randrange(0, 4_000_000_000_000_000_000) for _ in range(2000)]
    for ns in stamps:
        assert postgres.iso_from_ns(ns) == sqlite.iso_from_ns(ns), ns


def test_recorded_values_are_compressed_with_lz4(
    new_postgres_database: Callable[[], str],
) -> None:
    """The inputs and outputs of runs and spans use LZ4 (Debian's server is built with
    it): pglz, PostgreSQL's default, costs several times its CPU per value written."""
    import psycopg

    url = new_postgres_database()
    with st.Store.open(url):
        pass  # migrated
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attname, a.attcompression FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname IN ('runs', 'spans') "
            "AND a.attname IN ('input', 'output')"
        ).fetchall()
    assert sorted(rows) == [
        ("runs", "input", "l"),
        ("runs", "output", "l"),
        ("spans", "input", "l"),
        ("spans", "output", "l"),
    ]
