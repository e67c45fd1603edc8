"""Many writers: 8 processes each record 200 runs (``STEPTRACE_WRITER_RUNS``) through
the public API into one store at the same time, each run committed when its call
returns; afterwards every run and every step is
there, counted exactly, on SQLite (busy timeout and retry on ``database is locked``)
and on PostgreSQL — and no process saw an error or a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import steptrace as st
from steptrace.store import migrate_store
from tests.support.helpers import raw_sql

PROCESSES = 8
RUNS = int(os.environ.get("STEPTRACE_WRITER_RUNS", "200"))

WRITER = """
import os, sys, time
import steptrace as st

proc, runs, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

@st.step
def parse(proc: int, i: int) -> dict:
    return {"proc": proc, "i": i, "text": "x" * 200}

@st.step
def classify(item: dict) -> dict:
    return {"label": "even" if item["i"] % 2 == 0 else "odd", "i": item["i"]}

@st.workflow(name="writer")
def writer(proc: int, i: int) -> str:
    return classify(parse(proc, i))["label"]

while not os.path.exists(go):  # start together
    time.sleep(0.002)
for i in range(runs):
    assert writer(proc, i) == ("even" if i % 2 == 0 else "odd")
"""


def test_eight_processes_writing_at_once_lose_nothing(store_url: str, tmp_path: Path) -> None:
    migrate_store(store_url)  # created and migrated (each writer would also do it, racing)
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    env["STEPTRACE_STORE"] = store_url
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(p), str(RUNS), str(go)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    time.sleep(1.0)  # let them import and reach the start line
    go.touch()
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert "steptrace" not in stderr, stderr  # no warning about a failed write

    total = PROCESSES * RUNS
    assert raw_sql(store_url, "SELECT count(*), count(DISTINCT run_id) FROM runs") == [
        (total, total)
    ]
    assert raw_sql(store_url, "SELECT status, count(*) FROM runs GROUP BY status") == [
        ("succeeded", total)
    ]
    steps = raw_sql(
        store_url,
        "SELECT name, status, count(*), count(DISTINCT run_id) FROM spans "
        "WHERE kind = 'step' GROUP BY name, status ORDER BY name",
    )
    assert steps == [
        ("classify", "succeeded", total, total),
        ("parse", "succeeded", total, total),
    ]
    with st.Store.open(store_url) as store:
        runs = store.runs(workflow="writer", last=total + 1)
        assert Counter((r.input["proc"], r.input["i"]) for r in runs) == Counter(
            {(p, i): 1 for p in range(PROCESSES) for i in range(RUNS)}
        )
        labels = store.distribution("classify", "label", last=total)
        assert {v["value"]: v["count"] for v in labels["values"]} == {
            "even": total // 2,
            "odd": total // 2,
        }
