"""The SQLite store (issue 2, point 7): schema, WAL, recorded migrations, indexes, step
keys and input hashes, visibility in this process and others, durability at exit,
locking, and start-up errors."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.store import migrate_store
from tests.support.helpers import run_python

Query = Callable[..., list[tuple[Any, ...]]]

DESIGN_COLUMNS = {
    "runs": {
        "run_id",
        "workflow",
        "status",
        "trace_id",
        "span_id",
        "started_at",
        "ended_at",
        "input",
        "output",
        "error",
        "tags",
    },
    "spans": {
        "run_id",
        "span_id",
        "parent_span_id",
        "kind",
        "name",
        "attempt",
        "status",
        "started_at",
        "ended_at",
        "input",
        "output",
        "error",
        "attributes",
    },
    "llm_calls": {"model", "provider", "input_tokens", "output_tokens", "params"},
    "logs": {"run_id", "span_id", "ts", "level", "logger", "message", "attributes"},
}


def _simple_workflow() -> Any:
    @st.step
    def double(x: int) -> int:
        return x * 2

    @st.workflow
    def wf(x: int) -> int:
        return double(x)

    return wf


def _columns(db: Query, table: str) -> set[str]:
    return {row[1] for row in db(f"PRAGMA table_info({table})")}


def _index_prefixes(db: Query, table: str) -> set[tuple[str, ...]]:
    prefixes: set[tuple[str, ...]] = set()
    for index in db(f"PRAGMA index_list({table})"):
        columns = tuple(r[2] for r in sorted(db(f"PRAGMA index_info({index[1]})")))
        for n in range(1, len(columns) + 1):
            prefixes.add(columns[:n])
    return prefixes


# --- schema --------------------------------------------------------------------------


def test_store_is_in_wal_mode(db: Query) -> None:
    _simple_workflow()(1)
    st.flush()
    assert db("PRAGMA journal_mode") == [("wal",)]


def test_migrations_are_named_and_recorded(db: Query) -> None:
    _simple_workflow()(1)
    st.flush()
    rows = db("SELECT name, applied_at FROM _migrations ORDER BY name")
    assert [r[0] for r in rows] == [
        "0001_initial",
        "0002_llm_details",
        "0003_query",
        "0004_export_drops",
        "0005_durability",
        "0006_lineage",
        "0007_evaluation",
        "0008_lean_spans",
    ]
    assert all(r[1] for r in rows)  # when each was applied


def test_a_store_at_the_oldest_schema_is_upgraded_keeping_its_runs(store_path: str) -> None:
    import sqlite3

    from steptrace.store.migrations import MIGRATIONS

    conn = sqlite3.connect(store_path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for statement in MIGRATIONS[0].sql("sqlite"):
        conn.execute(statement)
    conn.execute("INSERT INTO _migrations VALUES ('0001_initial', '2026-01-01T00:00:00Z')")
    conn.execute(
        "INSERT INTO runs (run_id, workflow, status, trace_id, span_id, started_at) "
        "VALUES ('old', 'legacy', 'succeeded', 't', 's', '2026-01-01T00:00:00.000000Z')"
    )
    conn.commit()
    conn.close()

    _simple_workflow()(1)
    with st.Store.open() as store:
        assert store.run("old").workflow == "legacy"
        assert len(store.runs()) == 2
    conn = sqlite3.connect(store_path)
    names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
    columns = {r[1] for r in conn.execute("PRAGMA table_info(llm_calls)")}
    conn.close()
    assert names == [m.name for m in MIGRATIONS]
    assert {"cached_input_tokens", "tool_calls", "incomplete"} <= columns


def test_tables_have_the_design_columns(db: Query, store_path: Path) -> None:
    migrate_store(str(store_path))  # creates and migrates a blank database
    for table, columns in DESIGN_COLUMNS.items():
        assert columns <= _columns(db, table), table
    assert any(c.startswith("cost") for c in _columns(db, "llm_calls"))


def test_indexes_serve_the_design_queries(db: Query, store_path: Path) -> None:
    migrate_store(str(store_path))
    assert ("workflow", "started_at") in _index_prefixes(db, "runs")
    assert ("run_id",) in _index_prefixes(db, "spans")
    # A step's outputs by name and run: one index leads with both (run, then name: a
    # run's lookup by step name is two equalities), another with the name (its
    # attempts newest first, across runs).
    assert ("run_id", "name") in _index_prefixes(db, "spans")
    assert ("name", "started_at", "run_id") in _index_prefixes(db, "spans")
    assert ("run_id",) in _index_prefixes(db, "logs")


def test_reopening_does_not_migrate_again(store_path: Path, db: Query) -> None:
    migrate_store(str(store_path))
    for _ in range(3):
        with st.Store.open(str(store_path)):
            pass
    _simple_workflow()(1)
    st.flush()
    from steptrace.store.migrations import MIGRATIONS

    assert db("SELECT count(*) FROM _migrations") == [(len(MIGRATIONS),)]


def test_sqlite_url_form(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "url.db"
    st.configure(store=f"sqlite:///{path}")
    result = st.run(_simple_workflow(), 4)
    with st.Store.open(f"sqlite:///{path}") as store:
        assert store.run(result.run_id).output == 8
    assert path.exists()


def test_rows_are_json_queryable_with_json1(db: Query) -> None:
    @st.step
    def classify(ticket: dict[str, Any]) -> dict[str, Any]:
        return {"label": ticket["kind"], "score": 0.5}

    @st.workflow
    def wf(kind: str) -> dict[str, Any]:
        return classify({"kind": kind})

    for kind in ("billing", "billing", "shipping"):
        wf(kind)
    st.flush()
    rows = db(
        "SELECT json_extract(output, '$.label') AS label, count(*) FROM spans "
        "WHERE name = 'classify' GROUP BY label ORDER BY label"
    )
    assert rows == [("billing", 2), ("shipping", 1)]
    assert db("SELECT json_type(input) FROM runs LIMIT 1") == [("object",)]


# --- step keys and input hashes -------------------------------------------------------


def test_step_key_is_stable_across_attempts_and_counts_occurrences() -> None:
    failed = set()

    @st.step(retries=1, backoff=0.001)
    def fetch(url: str) -> str:
        if url not in failed:
            failed.add(url)
            raise ConnectionError(url)
        return url.upper()

    @st.workflow
    def wf() -> list[str]:
        return [fetch("a"), fetch("b"), fetch("a")]

    assert wf() == ["A", "B", "A"]
    run = st.last_run()
    assert run is not None
    rows = [(s.step_key, s.attempt, s.input["url"], s.input_hash) for s in run.steps()]
    assert [r[:3] for r in rows] == [
        ("fetch#0", 1, "a"),
        ("fetch#0", 2, "a"),
        ("fetch#1", 1, "b"),
        ("fetch#1", 2, "b"),
        ("fetch#2", 1, "a"),  # "a" already failed once: no retry this time
    ]
    hashes = [r[3] for r in rows]
    assert all(isinstance(h, str) and h for h in hashes)
    assert hashes[0] == hashes[1]  # attempts of one call
    assert hashes[2] == hashes[3]
    assert hashes[0] != hashes[2]  # different input
    assert hashes[4] == hashes[0]  # same input, another call


def test_step_keys_are_the_same_in_every_run_of_a_workflow() -> None:
    wf = _simple_workflow()
    a = st.run(wf, 1).record()
    b = st.run(wf, 2).record()
    assert [s.step_key for s in a.steps()] == [s.step_key for s in b.steps()] == ["double#0"]
    assert a.steps()[0].input_hash != b.steps()[0].input_hash


# --- visibility ----------------------------------------------------------------------


def test_finished_run_is_readable_in_this_process_immediately() -> None:
    wf = _simple_workflow()
    for x in range(5):
        result = st.run(wf, x)
        with st.Store.open() as store:  # no explicit flush
            run = store.run(result.run_id)
        assert run.status == "succeeded"
        assert run.output == x * 2
        assert [s.output for s in run.steps()] == [x * 2]


def test_finished_run_reaches_another_connection_within_a_second(store_path: Path) -> None:
    result = st.run(_simple_workflow(), 3)
    deadline = time.monotonic() + 1.0
    conn = sqlite3.connect(store_path)
    try:
        while True:
            rows = list(conn.execute("SELECT status FROM runs WHERE run_id = ?", (result.run_id,)))
            if rows == [("succeeded",)] or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        spans = list(conn.execute("SELECT name FROM spans WHERE run_id = ?", (result.run_id,)))
    finally:
        conn.close()
    assert rows == [("succeeded",)]
    assert spans == [("double",)]


def test_run_written_by_another_process_is_readable(store_path: Path) -> None:
    proc = run_python(
        """
        import steptrace as st

        st.llm.script("other", ["hello from elsewhere"])

        @st.step
        def greet(name):
            messages = [{"role": "user", "content": name}]
            return st.llm.chat(model="scripted:other", messages=messages).text

        @st.workflow
        def hello(name):
            return greet(name)

        print(st.run(hello, "ada").run_id)
        """,
        store_path,
    )
    run_id = proc.stdout.strip()
    with st.Store.open() as store:
        run = store.run(run_id)
    assert (run.workflow, run.status, run.input) == ("hello", "succeeded", {"name": "ada"})
    assert [(s.kind, s.name) for s in run.spans] == [("step", "greet"), ("llm", "chat other")]
    assert run.spans[1].llm is not None
    assert run.spans[1].llm["response"] == "hello from elsewhere"


def test_nothing_is_lost_at_normal_exit(store_path: Path, db: Query) -> None:
    run_python(
        """
        import steptrace as st

        @st.step
        def work(i):
            return {"i": i}

        @st.workflow
        def wf(i):
            return work(i)

        for i in range(200):
            wf(i)
        """,
        store_path,
    )
    assert db("SELECT count(*), count(DISTINCT status) FROM runs") == [(200, 1)]
    assert db("SELECT DISTINCT status FROM runs") == [("succeeded",)]
    assert db("SELECT count(*) FROM spans WHERE name = 'work' AND status = 'succeeded'") == [(200,)]
    assert db("SELECT sum(json_extract(output, '$.i')) FROM spans") == [(sum(range(200)),)]


def test_a_run_failing_the_process_is_still_stored(store_path: Path) -> None:
    proc = run_python(
        """
        import steptrace as st

        @st.step
        def explode():
            raise RuntimeError("fatal")

        @st.workflow
        def wf():
            explode()

        wf()
        """,
        store_path,
        returncode=1,
    )
    assert "RuntimeError: fatal" in proc.stderr
    with st.Store.open() as store:
        (run,) = store.runs()
        run = store.run(run.run_id)
    assert run.status == "failed"
    assert [(s.name, s.status) for s in run.spans] == [("explode", "failed")]


# --- locking -------------------------------------------------------------------------


def _hold_exclusive_lock(path: Path, seconds: float) -> threading.Thread:
    """Another connection takes the write lock now and releases it after ``seconds``."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_locked_database_does_not_raise_into_user_code(store_path: Path) -> None:
    wf = _simple_workflow()
    wf(0)  # the writer is open
    st.flush()
    holder = _hold_exclusive_lock(store_path, 1.0)
    started = time.monotonic()
    try:
        result = st.run(wf, 21)
        assert result.status == "succeeded"
        assert result.output == 42
        run = st.last_run()  # waits for the writer, which waits for the lock
    finally:
        holder.join()
    assert time.monotonic() - started >= 0.5  # the lock was really in the way
    assert run is not None
    assert run.run_id == result.run_id
    assert run.status == "succeeded"
    assert [s.output for s in run.steps()] == [42]


def test_locked_database_while_the_store_is_first_opened(store_path: Path) -> None:
    migrate_store(str(store_path))  # the file exists and is migrated; the writer is not open yet
    holder = _hold_exclusive_lock(store_path, 0.5)
    try:
        result = st.run(_simple_workflow(), 5)
    finally:
        holder.join()
    assert result.status == "succeeded"
    assert result.exception is None
    run = result.record()
    assert run.output == 10


# --- start-up errors -----------------------------------------------------------------


def test_store_migrated_by_a_newer_steptrace_is_refused(store_path: Path) -> None:
    migrate_store(str(store_path))
    conn = sqlite3.connect(store_path)
    with conn:
        conn.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES ('0099_from_the_future', 'x')"
        )
    conn.close()
    wf = _simple_workflow()
    with pytest.raises(st.ConfigError, match=r"newer steptrace.*0099_from_the_future"):
        wf(1)


@pytest.mark.parametrize(
    ("url", "message", "reading"),
    [
        ("mysql://localhost/steptrace", "unknown store URL scheme 'mysql'", None),
        ("redis://localhost:6379/0", "unknown store URL scheme 'redis'", None),
        (
            "/proc/version/steptrace.db",
            "cannot open the steptrace store",
            "no store at /proc/version/steptrace.db",
        ),
        ("sqlite:///", "in-memory SQLite database, which the writer and the readers", None),
        (":memory:", "in-memory SQLite database", None),
    ],
)
def test_unusable_store_url_raises_config_error(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str, reading: str | None
) -> None:
    monkeypatch.setenv("STEPTRACE_STORE", url)
    wf = _simple_workflow()
    with pytest.raises(st.ConfigError, match=message):
        wf(1)
    with pytest.raises(st.ConfigError, match=reading or message):
        st.Store.open()


def test_an_in_memory_store_is_refused_when_configured() -> None:
    for url in ("sqlite:///", "sqlite:///:memory:", ":memory:"):
        with pytest.raises(st.ConfigError, match="in-memory SQLite database"):
            st.configure(store=url)


def test_unwritable_store_path_raises_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("STEPTRACE_STORE", str(blocker / "steptrace.db"))
    with pytest.raises(st.ConfigError, match="STEPTRACE_STORE"):
        _simple_workflow()(1)


def test_configure_store_overrides_the_environment(tmp_path: Path, store_path: Path) -> None:
    other = tmp_path / "configured.db"
    st.configure(store=str(other))
    result = st.run(_simple_workflow(), 2)
    with st.Store.open(str(other)) as store:
        assert store.run(result.run_id).output == 4
    assert not store_path.exists()


# --- Store queries -------------------------------------------------------------------


def test_store_run_accepts_an_unambiguous_prefix() -> None:
    wf = _simple_workflow()
    ids = [st.run(wf, i).run_id for i in range(17)]  # 17 ids: two share a first digit
    with st.Store.open() as store:
        target = ids[0]
        assert store.run(target[:10]).run_id == target
        assert store.run(target).run_id == target
        first_digits = [i[0] for i in ids]
        shared = next(d for d in first_digits if first_digits.count(d) > 1)
        with pytest.raises(st.RunNotFound, match="ambiguous"):
            store.run(shared)
        with pytest.raises(st.RunNotFound):
            store.run("not-a-run-id")
        assert isinstance(st.RunNotFound("x"), LookupError)


def test_store_runs_filters_and_orders_newest_first() -> None:
    @st.workflow
    def good(i: int) -> int:
        return i

    @st.workflow
    def bad(i: int) -> int:
        raise ValueError(i)

    for i in range(3):
        st.run(good, i)
        st.run(bad, i)
    with st.Store.open() as store:
        everything = store.runs(last=100)
        assert len(everything) == 6
        started = [r.started_at for r in everything]
        assert started == sorted(started, reverse=True)
        goods = store.runs(workflow="good")
        assert [r.input for r in goods] == [{"i": 2}, {"i": 1}, {"i": 0}]
        failed = store.runs(status="failed")
        assert {r.workflow for r in failed} == {"bad"}
        assert len(store.runs(last=2)) == 2
        assert all(r.spans == [] for r in everything)


def test_run_to_dict_round_trips_through_json() -> None:
    result = st.run(_simple_workflow(), 1)
    data = result.record().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["spans"][0]["parent_span_id"] == data["span_id"]
