"""Questions across runs through ``st.Store`` (issue 4): distribution, per-step
statistics, the run filters of ``runs`` and read-only SQL, on a store whose answers
are known (``query_data``): every expectation is computed from the plans of the
recorded runs, not read back from the store."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.query import stats
from steptrace.query.distribution import distribution_sql
from steptrace.query.where import QueryError
from steptrace.store import migrate_store
from steptrace.store.dialect import SQLITE
from tests.support.helpers import reader_url
from tests.support.query_data import (
    FAILED,
    N_OTHER,
    N_RUNS,
    ODD,
    PLANS,
    Recorded,
    percentile,
    record,
)


@pytest.fixture
def reader(data: Recorded) -> Iterator[st.Store]:
    """The store as ``Store.sql`` needs it: on PostgreSQL, as a role that only reads."""
    with st.Store.open(reader_url(data.url)) as s:
        yield s


def ok(i: int) -> bool:
    return not PLANS[i].failed


def expected_values(counts: Counter[str], total: int) -> list[dict[str, Any]]:
    """Counts of JSON texts as ``distribution`` values: most common first, ties by text."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"value": json.loads(k), "count": n, "share": n / total} for k, n in ordered]


def key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- distribution ---------------------------------------------------------------------


def test_distribution_counts_final_attempts_over_the_runs_of_a_workflow(store: st.Store) -> None:
    d = store.distribution("classify", "classification", workflow="triage")
    labels = Counter(key(p.label) for p in PLANS if not p.failed)
    assert d["step"] == "classify" and d["field"] == "classification"
    assert d["runs"] == N_RUNS and d["occurrences"] == N_RUNS
    assert d["missing"] == len(FAILED)  # the failed final attempts have no output
    assert d["values"] == expected_values(labels, N_RUNS)
    assert d["values"][0]["value"] == "billing"
    assert math.isclose(sum(v["share"] for v in d["values"]) + d["missing"] / N_RUNS, 1.0)
    assert d["numeric"] is None


def test_distribution_without_workflow_takes_the_last_runs_of_any(store: st.Store) -> None:
    d = store.distribution("classify", "classification")
    assert d["runs"] == N_RUNS + N_OTHER
    values = {v["value"]: v["count"] for v in d["values"]}
    assert values["other"] == N_OTHER


def test_distribution_over_fewer_runs_takes_the_newest(store: st.Store) -> None:
    d = store.distribution("classify", "classification", last=10)
    newest = PLANS[-10:]
    assert d["runs"] == 10
    assert d["values"] == expected_values(Counter(key(p.label) for p in newest if not p.failed), 10)
    assert d["missing"] == sum(p.failed for p in newest)


def test_distribution_of_a_field_missing_in_some_outputs(store: st.Store) -> None:
    d = store.distribution("classify", "meta.label", workflow="triage")
    labels = Counter(key(p.meta["label"]) for p in PLANS if not p.failed and p.meta)
    assert d["values"] == expected_values(labels, N_RUNS)
    assert d["missing"] == sum(p.failed or p.meta is None for p in PLANS)


def test_distribution_of_non_scalar_values(store: st.Store) -> None:
    tags = store.distribution("classify", "tags", workflow="triage")
    assert tags["values"] == expected_values(
        Counter(key(p.tags) for p in PLANS if not p.failed), N_RUNS
    )
    assert {tuple(v["value"]) for v in tags["values"]} == {("x",), ("x", "y")}
    meta = store.distribution("classify", "meta", workflow="triage")
    assert meta["values"] == expected_values(
        Counter(key(p.meta) for p in PLANS if not p.failed and p.meta), N_RUNS
    )
    whole = store.distribution("lookup", ".")
    assert whole["field"] == "" and whole["runs"] == sum(ok(i) and i != ODD for i in range(N_RUNS))
    assert all(v["count"] == 1 and v["value"]["status"] == "shipped" for v in whole["values"])


def test_distribution_of_a_numeric_field(store: st.Store) -> None:
    d = store.distribution("classify", "confidence", workflow="triage")
    values = sorted(p.confidence for p in PLANS if not p.failed)
    numeric = d["numeric"]
    assert numeric is not None
    assert numeric["count"] == len(values)
    assert numeric["min"] == values[0] and numeric["max"] == values[-1]
    assert numeric["p50"] == pytest.approx(percentile(values, 0.5))
    assert numeric["p95"] == pytest.approx(percentile(values, 0.95))
    assert numeric["mean"] == pytest.approx(sum(values) / len(values))


def test_distribution_of_an_input_field_and_repeated_occurrences(store: st.Store) -> None:
    d = store.distribution("classify", "input.i", workflow="triage")
    assert d["field"] == "input.i"
    assert sorted(v["value"] for v in d["values"]) == list(range(N_RUNS))  # failed ones too
    enrich = store.distribution("enrich", "n")
    calls = [p.enrich_calls for p in PLANS if not p.failed]
    assert enrich["runs"] == len(calls) and enrich["occurrences"] == sum(calls)
    assert enrich["values"] == expected_values(
        Counter(key(k) for n in calls for k in range(n)), sum(calls)
    )


def test_distribution_of_an_unknown_step_or_a_bad_path(store: st.Store) -> None:
    d = store.distribution("no_such_step", "x")
    assert (d["runs"], d["occurrences"], d["missing"], d["values"]) == (0, 0, 0, [])
    with pytest.raises(QueryError, match="bad field path"):
        store.distribution("classify", "a..b")
    with pytest.raises(QueryError, match="positive"):
        store.distribution("classify", "x", last=0)


def _plan(store: st.Store, sql: str, params: list[Any]) -> list[str]:
    return [str(row["detail"]) for row in store.sql(f"EXPLAIN QUERY PLAN {sql}", params)]


@pytest.fixture(scope="module")
def sqlite_data(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The known runs in a SQLite file, for SQLite's own query plans (PostgreSQL's
    field index is tested in test_postgres.py)."""
    return record(tmp_path_factory.mktemp("sqlite-known") / "known.db")


def test_distribution_walks_an_index_newest_first(sqlite_data: Recorded) -> None:
    with st.Store.open(sqlite_data.url) as store:
        for workflow in (None, "triage"):
            sql, params = distribution_sql(SQLITE, "classify", "meta.label", workflow)
            plan = _plan(store, sql, params)
            assert "spans_steps_name_started (name=?)" in plan[0], plan
            assert not any("TEMP B-TREE" in p or p.startswith("SCAN") for p in plan), plan


def test_a_field_index_gives_the_same_answer_and_is_used(
    sqlite_data: Recorded, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    with sqlite3.connect(sqlite_data.url) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with st.Store.open(str(copy)) as store:
        before = store.distribution("classify", "classification")
        name = store.index_field("classify", "classification")
        assert store.distribution("classify", "classification") == before
        sql, params = distribution_sql(SQLITE, "classify", "classification")
        assert f"USING INDEX {name} (name=?)" in _plan(store, sql, params)[0]
        assert store.drop_field_index("classify", "classification")
        assert not store.drop_field_index("classify", "classification")


def test_distribution_of_runs_whose_calls_interleave() -> None:
    """Concurrent runs: the walk stops inside a run it counts; its older attempts are
    read too."""
    first_done, second_done = threading.Event(), threading.Event()

    @st.step
    def tick(label: str) -> dict[str, str]:
        return {"v": label}

    @st.workflow
    def long_run() -> None:
        tick("a0")
        first_done.set()
        assert second_done.wait(5)
        tick("a1")

    @st.workflow
    def short_run() -> None:
        assert first_done.wait(5)
        tick("b0")
        second_done.set()

    thread = threading.Thread(target=st.run, args=(long_run,))
    thread.start()
    st.run(short_run)
    thread.join()
    with st.Store.open() as store:
        newest = store.distribution("tick", "v", last=1)  # long_run ticked last
        assert (newest["runs"], newest["occurrences"]) == (1, 2)
        assert sorted(v["value"] for v in newest["values"]) == ["a0", "a1"]
        both = store.distribution("tick", "v", last=2)
        assert sorted(v["value"] for v in both["values"]) == ["a0", "a1", "b0"]


# --- per-step statistics --------------------------------------------------------------


def _attempt_durations(store: st.Store, run_ids: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for run_id in run_ids:
        for span in store.run(run_id).spans:
            if span.kind in ("step", "tool") and span.duration_ms is not None:
                out.setdefault(span.name, []).append(span.duration_ms)
    return out


def test_step_stats_of_a_workflow(store: st.Store, data: Recorded) -> None:
    stats = {s["step"]: s for s in store.step_stats("triage")}
    assert set(stats) == {"classify", "enrich", "lookup", "audit", "draft"}
    alive = [p for p in PLANS if not p.failed]
    classify = stats["classify"]
    assert classify["kind"] == "step" and classify["count"] == N_RUNS
    assert classify["attempts"] == sum(p.classify_attempts for p in PLANS)
    assert classify["failed"] == len(FAILED)
    assert classify["retried"] == sum(p.classify_attempts > 1 for p in PLANS)
    assert classify["failure_rate"] == len(FAILED) / N_RUNS
    assert classify["retry_rate"] == classify["retried"] / N_RUNS
    assert classify["llm_calls"] == 0 and classify["input_tokens"] is None
    assert stats["enrich"]["count"] == sum(p.enrich_calls for p in alive)
    assert stats["enrich"]["retried"] == 0 and stats["enrich"]["failed"] == 0
    assert stats["lookup"]["kind"] == "tool"
    assert stats["lookup"]["count"] == sum(p.lookup for p in alive)
    assert stats["audit"]["count"] == 1
    draft = stats["draft"]
    assert draft["llm_calls"] == len(alive)
    assert draft["input_tokens"] == sum(p.input_tokens for p in alive)
    assert draft["output_tokens"] == sum(p.output_tokens for p in alive)
    assert draft["cost_usd"] == pytest.approx(sum(p.cost_usd for p in alive))

    durations = _attempt_durations(store, data.run_ids)
    for name, s in stats.items():
        values = durations[name]
        assert s["attempts"] == len(values), name
        for q, field in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            assert s[field] == pytest.approx(percentile(values, q), rel=1e-12), (name, field)
        assert s["max_ms"] == max(values)
        assert s["total_ms"] == pytest.approx(sum(values), rel=1e-12)
    totals = [s["total_ms"] for s in store.step_stats("triage")]
    assert totals == sorted(totals, reverse=True)


def test_step_stats_over_the_last_runs_and_of_all_workflows(store: st.Store) -> None:
    last5 = {s["step"]: s for s in store.step_stats("triage", last=5)}
    newest = PLANS[-5:]
    assert last5["classify"]["count"] == 5
    assert last5["classify"]["retried"] == sum(p.classify_attempts > 1 for p in newest)
    assert last5["enrich"]["count"] == sum(p.enrich_calls for p in newest if not p.failed)
    assert "audit" in last5  # run 27
    everything = {s["step"]: s for s in store.step_stats()}
    assert everything["classify"]["count"] == N_RUNS + N_OTHER


def test_step_stats_split_in_halves_gives_the_same_answer(
    store: st.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = store.step_stats("triage"), store.step_stats(last=7)
    monkeypatch.setattr(stats, "PARALLEL_MIN_RUNS", 2)  # read as two halves at once
    halves = store.step_stats("triage"), store.step_stats(last=7)
    for split, one in zip(halves, whole, strict=True):
        assert [s["step"] for s in split] == [s["step"] for s in one]
        for a, b in zip(split, one, strict=True):
            cost = a.pop("cost_usd"), b.pop("cost_usd")  # summed in another order
            assert a == b
            assert cost[0] == (cost[1] and pytest.approx(cost[1], rel=1e-12))


@pytest.mark.parametrize("halves", [False, True])
def test_step_stats_leave_out_overlapping_runs_outside_the_window(
    halves: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempts in the window's time range of runs it does not hold: a run that started
    before the window and went on (``long``), runs of another workflow."""
    if halves:
        monkeypatch.setattr(stats, "PARALLEL_MIN_RUNS", 2)
    started = threading.Event()
    go_on = threading.Event()

    @st.step
    def work(x: int) -> int:
        return x

    @st.workflow
    def job(x: int) -> None:
        if x == 0:
            started.set()
            assert go_on.wait(5)
        work(x)

    @st.workflow
    def chore(x: int) -> None:
        work(x)
        work(x)

    long = threading.Thread(target=st.run, args=(job, 0))
    long.start()
    assert started.wait(5)
    for x in (1, 2, 3):
        st.run(job, x)
        st.run(chore, x)
    go_on.set()
    long.join()
    with st.Store.open() as store:

        def count(workflow: str | None, last: int) -> int:
            return {s["step"]: s["count"] for s in store.step_stats(workflow, last)}["work"]

        assert count("job", 3) == 3  # not job 0's late attempt, not chore's
        assert count("job", 4) == 4
        assert count("chore", 2) == 4
        assert count(None, 2) == 1 + 2  # the newest: chore 3, job 3
        assert count(None, 100) == 4 + 6


def test_step_stats_when_the_window_is_a_few_runs_among_many(store: st.Store) -> None:
    # The other workflow's runs are older than any triage run: the last 2 of `other`
    # span the whole store's time range, so membership is checked run by run.
    stats_other = {s["step"]: s for s in store.step_stats("other", last=2)}
    assert stats_other["classify"]["count"] == 2
    assert set(stats_other) == {"classify"}


# --- runs filters ---------------------------------------------------------------------


def ids(store: st.Store, **filters: Any) -> list[str]:
    return [r.run_id for r in store.runs(last=1000, **filters)]


def newest_first(data: Recorded, indexes: list[int]) -> list[str]:
    return [data.run_ids[i] for i in sorted(indexes, reverse=True)]


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        ("classify.output.classification = refund", lambda p: not p.failed and p.label == "refund"),
        ("classify.classification = refund", lambda p: not p.failed and p.label == "refund"),
        (
            "classify.output.classification != billing",
            lambda p: not p.failed and p.label != "billing",
        ),
        ("classify.attempts > 1", lambda p: p.classify_attempts > 1),
        ("classify.attempts = 3", lambda p: p.classify_attempts == 3),
        ("classify.status = failed", lambda p: p.failed),
        ("classify.error.type = ValueError", lambda p: p.failed),
        ("classify.output.confidence >= 0.5", lambda p: not p.failed and p.confidence >= 0.5),
        (
            "classify.output.meta.label != a",
            lambda p: not p.failed and p.meta and p.meta["label"] != "a",
        ),
        ('classify.output.tags = ["x", "y"]', lambda p: not p.failed and p.tags == ["x", "y"]),
        ("classify.output.classification ~ ill", lambda p: not p.failed and "ill" in p.label),
        ("classify.input.i = 7", lambda p: p.i == 7),
        ("classify.input.i < 3", lambda p: p.i < 3),
        ("enrich.attempts = 1", lambda p: not p.failed),
        ("audit.attempts >= 1", lambda p: p.audit),
        ("lookup.output.status = shipped", lambda p: not p.failed and p.lookup),
        ("run.status = failed", lambda p: p.failed),
        ("run.output.label = legal", lambda p: p.i == 7),
        ('run.output.label = "legal"', lambda p: p.i == 7),
        ("run.input.i >= 28", lambda p: p.i >= 28),
    ],
)
def test_runs_where(store: st.Store, data: Recorded, predicate: str, expected: Any) -> None:
    want = newest_first(data, [p.i for p in PLANS if expected(p)])
    assert ids(store, workflow="triage", where=predicate) == want


def test_runs_where_predicates_combine_and_number_matches_text(
    store: st.Store, data: Recorded
) -> None:
    both = ids(store, where=["classify.output.classification = billing", "classify.attempts = 2"])
    want = [
        p.i for p in PLANS if not p.failed and p.label == "billing" and p.classify_attempts == 2
    ]
    assert both == newest_first(data, want)
    # `= 1` also matches the text "1"; `= "1"` only the text.
    assert ids(store, where="lookup.input.order_id = A-1") == [data.run_ids[1]]
    assert ids(store, where='classify.input.i = "7"') == []


def test_runs_filters_by_tag_time_and_page(store: st.Store, data: Recorded) -> None:
    assert ids(store, tag="nightly") == list(reversed(data.other_ids))
    assert ids(store, tag=["nightly", "nope"]) == []
    everything = ids(store)
    assert len(everything) == N_RUNS + N_OTHER
    assert ids(store, since="1h") == everything
    assert ids(store, since="0s") == []
    cut = store.run(data.run_ids[20]).started_at
    assert ids(store, since=cut) == newest_first(data, list(range(20, N_RUNS)))
    assert ids(store, until=cut) == everything[N_RUNS - 20 :]
    assert [r.run_id for r in store.runs(last=5, offset=5)] == everything[5:10]
    assert ids(store, workflow="triage", status="failed") == newest_first(data, list(FAILED))


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"where": "classify.output.x"}, "no operator"),
        ({"where": "classify = 3"}, "target"),
        ({"where": "classify.attempts > many"}, "number"),
        ({"where": "run.bogus = 1"}, "run target"),
        ({"where": "classify.output.x > true"}, "= or !="),
        ({"since": "yesterday-ish"}, "not a time"),
    ],
)
def test_runs_filter_mistakes_are_query_errors(
    store: st.Store, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        store.runs(**filters)


# --- SQL ------------------------------------------------------------------------------


def test_sql_over_the_documented_tables_and_views(reader: st.Store, data: Recorded) -> None:
    store = reader
    counts = store.sql(
        "SELECT name, count(*) AS n FROM steps WHERE workflow = 'triage' "
        "AND is_final_attempt = 1 GROUP BY name ORDER BY name"
    )
    want = Counter(k.split("#")[0] for p in PLANS for k in p.steps())
    assert counts == [{"name": n, "n": c} for n, c in sorted(want.items())]

    outputs = store.sql(
        "SELECT occurrence, attempt, output FROM steps WHERE workflow = 'triage' "
        "AND name = ? AND is_final_attempt = 1 ORDER BY started_at",
        ["classify"],
    )
    assert [r["output"] for r in outputs] == [p.output for p in PLANS]  # JSON, decoded
    assert [r["attempt"] for r in outputs] == [p.classify_attempts for p in PLANS]
    assert {r["occurrence"] for r in outputs} == {0}

    llm = store.sql("SELECT step, input_tokens, cost_usd, messages, response FROM llm")
    alive = [p for p in PLANS if not p.failed]
    assert sorted(r["input_tokens"] for r in llm) == sorted(p.input_tokens for p in alive)
    assert {r["step"] for r in llm} == {"draft"}
    assert sorted(r["response"] for r in llm) == sorted(p.reply for p in alive)
    assert all(isinstance(r["messages"], list) for r in llm)

    assert store.sql("SELECT count(*) AS n FROM runs") == [{"n": N_RUNS + N_OTHER}]
    tags = store.sql("SELECT tags FROM runs WHERE workflow = 'other' LIMIT 1")
    assert tags == [{"tags": ["nightly"]}]
    assert store.sql("SELECT count(*) AS n FROM spans WHERE kind = 'llm'") == [{"n": len(alive)}]


def _fingerprint(data: Recorded) -> str:
    if data.backend == "postgresql":
        import psycopg

        with psycopg.connect(data.url) as pg:
            digest = hashlib.sha256()
            for table in ("runs", "spans", "llm_calls", "logs", "_migrations"):
                for row in pg.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                    digest.update(repr(row).encode())
            for row in pg.execute(
                "SELECT relname, relkind FROM pg_class WHERE relnamespace = "
                "'public'::regnamespace ORDER BY 1"
            ):
                digest.update(repr(row).encode())
            return digest.hexdigest()
    conn = sqlite3.connect(data.url)
    try:
        digest = hashlib.sha256()
        for table in ("runs", "spans", "llm_calls", "logs", "_migrations", "sqlite_master"):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM runs",
        "UPDATE spans SET status = 'succeeded'",
        "INSERT INTO runs (run_id, workflow, status, trace_id, span_id, started_at) "
        "VALUES ('x', 'w', 's', 't', 's', 'now')",
        "DROP TABLE runs",
        "DROP VIEW steps",
        "CREATE TABLE sneaky (x)",
        "CREATE TEMP TABLE sneaky (x)",
        "CREATE INDEX sneaky ON runs (status)",
        "ALTER TABLE runs ADD COLUMN sneaky TEXT",
        "PRAGMA query_only = 0",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
        "VACUUM",
        "REINDEX",
        "ANALYZE",
        "BEGIN IMMEDIATE",
        "SAVEPOINT sneaky",
        "SELECT 1; DELETE FROM runs",
        "WITH d AS (SELECT 1) DELETE FROM runs",
    ],
)
def test_sql_cannot_change_the_store(data: Recorded, statement: str) -> None:
    before = _fingerprint(data)
    with st.Store.open(reader_url(data.url)) as store:
        with pytest.raises(QueryError):
            store.sql(statement)
        assert store.sql("SELECT count(*) AS n FROM runs") == [{"n": N_RUNS + N_OTHER}]
    assert _fingerprint(data) == before


def test_sql_cannot_write_through_an_attached_or_new_file(data: Recorded, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    copy = tmp_path / "vacuumed.db"
    with st.Store.open(data.url) as store:
        for statement in (f"ATTACH '{other}' AS o", f"VACUUM INTO '{copy}'"):
            with pytest.raises(QueryError):
                store.sql(statement)
    assert not other.exists() and not copy.exists()


def test_sql_reports_mistakes_as_query_errors(reader: st.Store, data: Recorded) -> None:
    store = reader
    with pytest.raises(QueryError, match=r"no such table|does not exist"):
        store.sql("SELECT * FROM nowhere")
    with pytest.raises(QueryError, match="syntax"):
        store.sql("SELEC 1")
    if data.backend == "sqlite":
        assert store.sql("PRAGMA table_info(runs)")[0]["name"] == "run_id"
    else:
        columns = store.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            ["runs"],
        )
        assert columns[0]["column_name"] == "run_id"


def test_sql_reads_this_process_s_own_writes() -> None:
    @st.step
    def one(x: int) -> int:
        return x

    @st.workflow
    def wf(x: int) -> int:
        return one(x)

    migrate_store(os.environ["STEPTRACE_STORE"])
    with st.Store.open() as store:
        assert store.sql("SELECT count(*) AS n FROM steps") == [{"n": 0}]
        wf(1)
        assert store.sql("SELECT output FROM steps") == [{"output": 1}]


def test_a_store_written_before_the_query_migration_is_upgraded(store_path: Path) -> None:
    from steptrace.store.migrations import MIGRATIONS

    conn = sqlite3.connect(store_path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration in MIGRATIONS[:2]:
        for statement in migration.sql("sqlite"):
            conn.execute(statement)
        conn.execute("INSERT INTO _migrations VALUES (?, 'then')", (migration.name,))
    t = "2026-01-01T00:00:00.000000Z"
    conn.execute(
        "INSERT INTO runs (run_id, workflow, status, trace_id, span_id, started_at, ended_at) "
        "VALUES ('r1', 'old', 'succeeded', 't', 'root', ?, ?)",
        (t, t),
    )
    spans = [
        ("step1", "root", "step", "ask", "ask#0", 1, 2.5),
        ("llm1", "step1", "llm", "chat m", None, None, 2.0),
    ]
    for span_id, parent, kind, name, key, attempt, ms in spans:
        conn.execute(
            "INSERT INTO spans (span_id, run_id, parent_span_id, kind, name, step_key, attempt, "
            "status, started_at, ended_at, duration_ms, output) "
            "VALUES (?, 'r1', ?, ?, ?, ?, ?, 'succeeded', ?, ?, ?, '{\"a\": 1}')",
            (span_id, parent, kind, name, key, attempt, t, t, ms),
        )
    conn.execute(
        "INSERT INTO llm_calls (span_id, run_id, provider, model, input_tokens, output_tokens, "
        "cost_usd) VALUES ('llm1', 'r1', 'p', 'm', 7, 3, 0.5)"
    )
    conn.commit()
    conn.close()
    with st.Store.open(str(store_path)) as store:
        (ask,) = store.step_stats()
        assert (ask["step"], ask["p50_ms"], ask["llm_calls"]) == ("ask", 2.5, 1)
        assert (ask["input_tokens"], ask["output_tokens"], ask["cost_usd"]) == (7, 3, 0.5)
        assert store.distribution("ask", "a")["values"] == [{"value": 1, "count": 1, "share": 1.0}]
        assert store.sql("SELECT step, input_tokens FROM llm") == [
            {"step": "ask", "input_tokens": 7}
        ]
