"""The query commands (``dist``, ``stats``, ``diff``, ``compare``, ``sql``, ``export``,
``index`` and the new ``runs`` filters) as real subprocesses on the store of known
runs (``query_data``): ``--json`` is exactly what the ``Store`` method returns, and
the expected answers come from the run plans."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from tests.support.helpers import clean_env, reader_url
from tests.support.query_data import (
    FAILED,
    N_OTHER,
    N_RUNS,
    ODD,
    PLANS,
    Recorded,
)

ROOT = Path(__file__).resolve().parents[1]


def cli(
    *args: str, store: Path | str, stdin: str | None = None, returncode: int = 0
) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env["COLUMNS"] = "200"
    env["STEPTRACE_STORE"] = str(store)
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == returncode, proc.stderr
    return proc


def cli_json(*args: str, store: Path | str) -> Any:
    return json.loads(cli(*args, "--json", store=store).stdout)


def same(value: Any) -> Any:
    """A value as it comes back from JSON."""
    return json.loads(json.dumps(value))


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_dist(data: Recorded) -> None:
    got = cli_json("dist", "classify", "classification", "-w", "triage", store=data.url)
    with st.Store.open(data.url) as store:
        assert got == same(store.distribution("classify", "classification", workflow="triage"))
    labels = Counter(p.label for p in PLANS if not p.failed)
    assert {v["value"]: v["count"] for v in got["values"]} == dict(labels)
    billing = labels["billing"]
    assert got["values"][0] == {"value": "billing", "count": billing, "share": billing / N_RUNS}
    assert (got["runs"], got["missing"]) == (N_RUNS, len(FAILED))

    last = cli_json("dist", "classify", "confidence", "--last", "4", store=data.url)
    assert last["runs"] == 4
    assert last["numeric"]["max"] == PLANS[-1].confidence

    text = cli("dist", "classify", "classification", "-w", "triage", store=data.url).stdout
    assert "classify.classification" in text
    assert f"over all {N_RUNS} runs of triage that ran classify (1,000 asked for)" in text
    line = next(line for line in text.splitlines() if line.startswith("billing"))
    assert f"{billing / N_RUNS:.1%}" in line and "█" in line
    assert "(missing)" in text

    one_line_error(cli("dist", "classify", "a..b", store=data.url, returncode=1), "bad field path")


def test_stats(data: Recorded) -> None:
    got = cli_json("stats", "triage", store=data.url)
    with st.Store.open(data.url) as store:
        assert got == same(store.step_stats("triage"))
    rows = {s["step"]: s for s in got}
    assert rows["classify"]["failed"] == len(FAILED) and rows["classify"]["count"] == N_RUNS
    assert rows["draft"]["input_tokens"] == sum(p.input_tokens for p in PLANS if not p.failed)
    everything = cli_json("stats", "--last", "1000", store=data.url)
    assert {s["step"]: s["count"] for s in everything}["classify"] == N_RUNS + N_OTHER

    text = cli("stats", "triage", store=data.url).stdout
    lines = {
        line.split()[0]: line
        for line in text.splitlines()[2:]
        if line.strip() and not line.startswith("─")
    }
    assert set(lines) == {"classify", "enrich", "lookup", "audit", "draft"}
    assert "(tool)" in lines["lookup"]
    assert f"{len(FAILED) / N_RUNS:.1%}" in lines["classify"]


def test_diff(data: Recorded) -> None:
    a, b = data.run_ids[2], data.run_ids[3]
    got = cli_json("diff", a[:10], b, store=data.url)
    with st.Store.open(data.url) as store:
        assert got == same(store.diff(a, b))
    assert [s["key"] for s in got["steps"]] == PLANS[3].steps()

    text = cli("diff", a, b, store=data.url).stdout
    assert "~ classify#0" in text
    assert "output.classification: billing → refund" in text
    assert "+ enrich#1" in text and "only in b" in text
    assert "-your ticket 2 is a billing case." in text
    assert "+your ticket 3 is a refund case." in text


def test_compare(data: Recorded) -> None:
    got = cli_json("compare", data.run_ids[ODD], "--baseline", "50", store=data.url)
    with st.Store.open(data.url) as store:
        assert got == same(store.compare(data.run_ids[ODD], baseline=50))
    kinds = {f["kind"] for f in got["findings"]}
    assert {"missing_step", "extra_step", "slow", "cost"} <= kinds
    text = cli("compare", data.run_ids[7], store=data.url).stdout
    assert "new_value" in text and 'output.classification = "legal"' in text
    assert f"against {sum(not p.failed for p in PLANS) - 1} successful run(s)" in text


def test_sql(data: Recorded) -> None:
    query = (
        "SELECT name, count(*) AS n FROM steps WHERE is_final_attempt = 1 "
        "GROUP BY name ORDER BY name"
    )
    got = cli_json("sql", query, store=reader_url(data.url))
    want = Counter(k.split("#")[0] for p in PLANS for k in p.steps()) + Counter(
        {"classify": N_OTHER}
    )
    assert got == [{"name": n, "n": c} for n, c in sorted(want.items())]
    outputs = cli(
        "sql",
        "-",
        "--json",
        store=reader_url(data.url),
        stdin="SELECT output FROM steps WHERE name = 'classify' AND workflow = 'triage' "
        "AND is_final_attempt = 1 ORDER BY started_at",
    )
    assert [r["output"] for r in json.loads(outputs.stdout)] == [p.output for p in PLANS]
    text = cli(
        "sql", "SELECT workflow, count(*) AS n FROM runs GROUP BY 1", store=reader_url(data.url)
    )
    assert "triage" in text.stdout and str(N_RUNS) in text.stdout and "2 row(s)" in text.stdout


def test_sql_cannot_change_the_store(data: Recorded) -> None:
    count = "SELECT count(*) AS n FROM runs"
    with st.Store.open(reader_url(data.url)) as store:
        before = store.sql(count)
    for statement in ("DELETE FROM runs", "DROP TABLE spans", "PRAGMA query_only = 0"):
        one_line_error(cli("sql", statement, store=reader_url(data.url), returncode=1), "SQL error")
    with st.Store.open(reader_url(data.url)) as store:
        assert store.sql(count) == before == [{"n": N_RUNS + N_OTHER}]


def test_export(data: Recorded, tmp_path: Path) -> None:
    lines = cli("export", "--table", "runs", "-w", "triage", store=data.url).stdout
    runs = [json.loads(line) for line in lines.splitlines()]
    assert [r["run_id"] for r in runs] == list(reversed(data.run_ids))
    assert runs[0]["output"] == {"label": PLANS[-1].label}

    path = tmp_path / "classify.csv"
    proc = cli(
        "export",
        "--format",
        "csv",
        "--step",
        "classify",
        "--where",
        "classify.attempts > 1",
        "-o",
        str(path),
        store=data.url,
    )
    retried = [p for p in PLANS if p.classify_attempts > 1]
    n = sum(p.classify_attempts for p in retried)
    assert f"wrote {n} row(s) of steps" in proc.stderr
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and {r["name"] for r in rows} == {"classify"}

    pq = pytest.importorskip("pyarrow.parquet")
    parquet = tmp_path / "llm.parquet"
    cli("export", "-f", "parquet", "-t", "llm", "-o", str(parquet), store=data.url)
    assert pq.read_table(parquet).num_rows == sum(not p.failed for p in PLANS)
    one_line_error(cli("export", "-f", "parquet", store=data.url, returncode=1), "needs --output")
    one_line_error(cli("export", "-t", "bogus", store=data.url, returncode=1), "unknown table")
    csv_text = cli("export", "-f", "csv", "-t", "runs", "-n", "1", store=data.url).stdout
    assert list(csv.reader(io.StringIO(csv_text)))[1][0] == data.run_ids[-1]


def test_runs_filters(data: Recorded) -> None:
    refunds = cli_json(
        "runs", "--where", "classify.output.classification = refund", "-n", "100", store=data.url
    )
    assert [r["run_id"] for r in refunds] == [
        data.run_ids[p.i] for p in reversed(PLANS) if not p.failed and p.label == "refund"
    ]
    both = cli_json(
        "runs",
        "--where",
        "classify.attempts > 1",
        "--where",
        "run.status = succeeded",
        "--since",
        "1h",
        store=data.url,
    )
    assert len(both) == sum(p.classify_attempts > 1 and not p.failed for p in PLANS)
    nightly = cli_json("runs", "--tag", "nightly", store=data.url)
    assert [r["run_id"] for r in nightly] == list(reversed(data.other_ids))
    page = cli_json("runs", "-n", "3", "--offset", "3", store=data.url)
    assert [r["run_id"] for r in page] == list(reversed(data.run_ids))[3:6]
    one_line_error(
        cli("runs", "--where", "classify.output.x", store=data.url, returncode=1), "no operator"
    )
    one_line_error(cli("runs", "--until", "someday", store=data.url, returncode=1), "not a time")
    empty = cli("runs", "--where", "run.output.label = nope", store=data.url).stdout
    assert "no matching runs" in empty


def test_index(data: Recorded, tmp_path: Path) -> None:
    copy: Path | str = data.url  # PostgreSQL: index the module's store, then drop it
    if data.backend == "sqlite":
        copy = tmp_path / "copy.db"
        with sqlite3.connect(data.url) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
    before = cli_json("dist", "classify", "classification", store=copy)
    made = cli("index", "classify", "classification", store=copy).stdout
    assert "is indexed (field_" in made
    assert cli_json("dist", "classify", "classification", store=copy) == before
    assert "dropped" in cli("index", "classify", "classification", "--drop", store=copy).stdout


def test_counts_windows_and_unknown_names(data: Recorded) -> None:
    """On every backend: `runs` counts what it left out, `stats` names its window, an
    unknown step or workflow lists the ones there are."""
    page = cli("runs", "-w", "triage", "-n", "3", "--offset", "3", "--json", store=data.url)
    assert len(json.loads(page.stdout)) == 3
    assert f"showing 4–6 of {N_RUNS} matching runs" in page.stderr
    title = cli("stats", "triage", "--last", "4", store=data.url).stdout.splitlines()[0]
    assert title.startswith("steps of the last 4 runs of triage, ")
    one_line_error(
        cli("dist", "clasify", "classification", "-w", "triage", store=data.url, returncode=1),
        "no step named 'clasify' in workflow 'triage'; steps: ",
        "classify",
    )
    one_line_error(cli("stats", "triag", store=data.url, returncode=1), "workflows: other, triage")
