"""The ids steptrace mints itself, with no tracer provider installed (a library user
without OpenTelemetry set up): every run, span and trace id unique and well formed, in
one process, across threads, and across processes forked from one parent, which would
otherwise mint the very ids their parent mints. Each case runs in a process of its own:
the test session installs a provider."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import raw_sql

RECORD = """
import os, sys, threading
from opentelemetry import trace
import steptrace as st

seen = []
tried = set()

@st.step(retries=1, backoff=0.001)
def flaky(i: int) -> int:
    seen.append((st.current_traceparent(), trace.get_current_span().get_span_context()))
    key = (os.getpid(), threading.get_ident(), i)
    if i % 3 == 0 and key not in tried:  # the first attempt fails, the retry succeeds
        tried.add(key)
        raise ConnectionError("once")
    return inner(i) + 1

@st.step
def inner(i: int) -> int:
    return i * 2

@st.workflow(name="ids")
def ids(i: int) -> int:
    outer_ctx = trace.get_current_span().get_span_context()
    value = flaky(i)
    assert seen[-1][1] == outer_ctx  # a step's OTel context is the run's, as before
    return value

def runs(n):
    for i in range(n):
        ids(i)

mode = sys.argv[1]
if mode == "threads":
    threads = [threading.Thread(target=runs, args=(30,)) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    runs(30)
elif mode == "fork":
    runs(5)
    st.flush()
    tried.clear()
    children = []
    for c in range(3):
        pid = os.fork()
        if pid == 0:
            runs(20)
            st.flush()
            os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
st.flush()
for traceparent, _ in seen:
    assert traceparent is not None and len(traceparent) == 55, traceparent
print("ok", len(seen))
"""


def _record(mode: str, store: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    env["STEPTRACE_STORE"] = str(store)
    done = subprocess.run(
        [sys.executable, "-c", RECORD, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok"), done.stdout


def _check_ids(store: Path, runs: int) -> None:
    url = str(store)
    assert raw_sql(url, "SELECT count(*), count(DISTINCT run_id) FROM runs") == [(runs, runs)]
    assert raw_sql(url, "SELECT count(DISTINCT trace_id) FROM runs") == [(runs,)]
    # Every span once; every id 16 hex digits, not all zero.
    (spans, distinct, well_formed) = raw_sql(
        url,
        "SELECT count(*), count(DISTINCT span_id), "
        "sum(length(span_id) = 16 AND span_id GLOB '[0-9a-f]*' AND span_id <> '0000000000000000') "
        "FROM spans",
    )[0]
    assert spans == distinct == well_formed
    root_ids = raw_sql(url, "SELECT count(DISTINCT span_id) FROM runs")[0][0]
    clash = raw_sql(url, "SELECT count(*) FROM spans s JOIN runs r ON r.span_id = s.span_id")
    assert root_ids == runs and clash == [(0,)]
    # Each span's parent is its run's root or a span of the same run.
    orphans = raw_sql(
        url,
        "SELECT count(*) FROM spans s JOIN runs r ON r.run_id = s.run_id "
        "WHERE s.parent_span_id <> r.span_id AND NOT EXISTS (SELECT 1 FROM spans p "
        "WHERE p.span_id = s.parent_span_id AND p.run_id = s.run_id)",
    )
    assert orphans == [(0,)]
    # Each run: one inner step (in flaky's succeeded attempt); flaky failed once first
    # in every run whose i is a multiple of 3.
    assert raw_sql(url, "SELECT count(*) FROM spans WHERE name = 'inner'") == [(runs,)]
    thirds = "SELECT count(*) FROM runs WHERE CAST(input ->> '$.i' AS INTEGER) % 3 = 0"
    retried = "SELECT count(*) FROM spans WHERE name = 'flaky' AND attempt = 2"
    assert raw_sql(url, retried) == raw_sql(url, thirds)


def test_ids_minted_without_a_provider_are_unique_across_threads(tmp_path: Path) -> None:
    store = tmp_path / "ids.db"
    _record("threads", store)
    _check_ids(store, 150)


def test_processes_forked_from_one_parent_mint_ids_of_their_own(tmp_path: Path) -> None:
    store = tmp_path / "fork.db"
    _record("fork", store)
    _check_ids(store, 5 + 3 * 20)
