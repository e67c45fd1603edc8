"""``Store.export`` (JSON Lines, CSV, Parquet) and ``Store.to_pandas`` (issue 4) on the
store of known runs (``query_data``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import steptrace as st
from steptrace.query.export import TABLES
from steptrace.query.where import QueryError
from tests.support.query_data import N_OTHER, N_RUNS, PLANS, Recorded


def attempts(plan_steps: list[str], classify_attempts: int) -> int:
    return len(plan_steps) + classify_attempts - 1


ALL_STEP_ROWS = sum(attempts(p.steps(), p.classify_attempts) for p in PLANS) + N_OTHER


def jsonl(store: st.Store, **options: object) -> list[dict[str, object]]:
    out = io.BytesIO()
    n = store.export(out, "jsonl", **options)  # type: ignore[arg-type]
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert n == len(rows)
    return rows


def test_jsonl_steps_are_json_values_newest_run_first(store: st.Store, data: Recorded) -> None:
    rows = jsonl(store)
    assert len(rows) == ALL_STEP_ROWS
    assert list(rows[0]) == TABLES["steps"]
    run_order = list(dict.fromkeys(r["run_id"] for r in rows))
    assert run_order == list(reversed(data.other_ids + data.run_ids))
    classify = [
        r
        for r in rows
        if r["name"] == "classify" and r["is_final_attempt"] and r["workflow"] == "triage"
    ]
    assert [r["output"] for r in reversed(classify)] == [p.output for p in PLANS]
    first = [r for r in rows if r["run_id"] == data.run_ids[-1]]
    assert [r["attempt"] for r in first[:2]] == [1, 2]  # run 29 retried classify
    assert list(dict.fromkeys(r["step_key"] for r in first)) == PLANS[-1].steps()


def test_export_filters(store: st.Store, data: Recorded) -> None:
    last5 = jsonl(store, workflow="triage", last=5, step="classify")
    assert {r["run_id"] for r in last5} == set(data.run_ids[-5:])
    assert len(last5) == sum(p.classify_attempts for p in PLANS[-5:])
    refunds = jsonl(store, table="runs", where="classify.output.classification = refund")
    assert [r["run_id"] for r in refunds] == [
        data.run_ids[p.i] for p in reversed(PLANS) if not p.failed and p.label == "refund"
    ]
    assert refunds[0]["output"] == {"label": "refund"}
    llm = jsonl(store, table="llm")
    assert len(llm) == sum(not p.failed for p in PLANS)
    assert {r["step"] for r in llm} == {"draft"}
    nightly = jsonl(store, table="spans", tag="nightly")
    assert len(nightly) == N_OTHER and {r["kind"] for r in nightly} == {"step"}
    failed = jsonl(store, status="failed", since="1h", until="0s")  # until now
    assert {r["run_id"] for r in failed} == {data.run_ids[p.i] for p in PLANS if p.failed}
    assert jsonl(store, until="1h") == []


def test_csv_has_a_header_and_json_text(store: st.Store, tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    assert store.export(path, "csv", "runs") == N_RUNS + N_OTHER
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == TABLES["runs"]
    assert len(rows) == N_RUNS + N_OTHER
    assert json.loads(rows[0]["input"]) == {"i": N_RUNS - 1}
    assert rows[-1]["tags"] == '["nightly"]'
    assert rows[0]["error"] == ""  # NULL


def test_parquet_round_trips_through_pyarrow(store: st.Store, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "steps.parquet"
    assert store.export(path, "parquet") == ALL_STEP_ROWS
    table = pq.read_table(path)
    assert table.num_rows == ALL_STEP_ROWS
    assert table.column_names == TABLES["steps"]
    assert str(table.schema.field("attempt").type) == "int64"
    assert str(table.schema.field("duration_ms").type) == "double"
    outputs = table.column("output").to_pylist()
    assert all(o is None or isinstance(json.loads(o), dict | str) for o in outputs)
    empty = tmp_path / "none.parquet"
    assert store.export(empty, "parquet", workflow="nope") == 0
    assert pq.read_table(empty).num_rows == 0


def test_to_pandas(store: st.Store) -> None:
    pytest.importorskip("pandas")
    df = store.to_pandas(workflow="triage", step="classify")
    assert list(df.columns) == TABLES["steps"]
    assert len(df) == sum(p.classify_attempts for p in PLANS)
    finals = df[df["is_final_attempt"] == 1].sort_values("started_at")
    assert list(finals["output"]) == [p.output for p in PLANS]
    assert df["attempt"].max() == 3
    runs = store.to_pandas("runs")
    assert len(runs) == N_RUNS + N_OTHER and isinstance(runs["input"].iloc[0], dict)


def test_export_mistakes(store: st.Store, tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="unknown table"):
        store.export(io.BytesIO(), "jsonl", "nope")
    with pytest.raises(QueryError, match="unknown format"):
        store.export(io.BytesIO(), "xml")
    with pytest.raises(QueryError, match="not runs"):
        store.export(io.BytesIO(), "jsonl", "runs", step="classify")
    assert not (tmp_path / "x.xml").exists()
