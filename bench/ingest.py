"""Sustained ingest into the store (issue 6): steps/s from 1 and from 4 processes into
SQLite and into PostgreSQL, ~1 KB of JSON in and ~1 KB out per step.

Two things are measured, and labelled apart:

- **end to end** — workflows of 10 steps through the public API (``@st.workflow``,
  ``@st.step``): recording, the background writer thread (redaction, caps,
  OpenTelemetry span ends with no exporter installed) and the store's writes. The
  clock runs from the first run to the end of ``st.flush()``, so nothing is still
  queued when it stops;
- **store ingest path** — the writer backend's ``write(runs, spans)`` alone, in the
  batches the writer thread hands it (5,000 records), of step records prepared
  beforehand (the same ``RunState``/``SpanRecord`` objects the runtime makes, values
  already encoded): what the engine and our SQL can take. On SQLite each round is
  paired with a **baseline**: the same records' ids, input and output inserted into a
  bare four-column table with ``executemany`` (what SQLite itself takes for the
  payload), and the ratio printed.

With several processes, each writes its share at the same time into the one store;
the figure is all their steps over the wall time from the first start to the last
finish. Every case is run ``--repeat`` times on a fresh store and the median printed.
PostgreSQL is a throwaway server started for the bench (Debian's ``postgresql``
package, as the tests do; with fsync on) unless ``--pg-url`` names one, in which
case a database is created per run in it.

    python -m bench.ingest [--repeat 3] [--runs 1000] [--ingest-steps 50000]
                           [--backends sqlite,postgresql] [--processes 1,4] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from typing import Any

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS_PER_RUN = 10
BATCH_RECORDS = 5000
_WORDS = [
    "order",
    "charge",
    "refund",
    "parcel",
    "delivery",
    "invoice",
    "account",
    "card",
    "courier",
    "address",
]


def _text(n_chars: int, seed: int) -> str:
    words: list[str] = []
    size = 0
    i = seed
    while size < n_chars:
        word = _WORDS[i % len(_WORDS)]
        words.append(word)
        size += len(word) + 1
        i = i * 7 + 3
    return " ".join(words)[:n_chars]


def step_input(run: int, step: int) -> dict[str, Any]:
    """~1 KB of JSON."""
    return {
        "ticket_id": f"T-{run}",
        "step": step,
        "context": {"channel": "email", "locale": "en-GB", "run": run},
        "text": _text(880, run + step),
    }


def step_output(run: int, step: int) -> dict[str, Any]:
    """~1 KB of JSON."""
    return {
        "label": ["billing", "refund", "shipping"][(run + step) % 3],
        "confidence": 0.5 + ((run * 31 + step) % 50) / 100,
        "scores": [((run + k) % 97) / 97 for k in range(6)],
        "notes": _text(860, run * 3 + step),
    }


# --- workers (one process each) ---------------------------------------------------------


def _wait(go: str) -> None:
    while not os.path.exists(go):
        time.sleep(0.001)


def worker_end_to_end(url: str, runs: int, go: str, proc: int) -> dict[str, float]:
    import steptrace as st

    st.configure(store=url)

    @st.step
    def work(run: int, step: int, payload: dict[str, Any]) -> dict[str, Any]:
        return step_output(run, step)

    @st.workflow
    def ingest(run: int) -> int:
        for step in range(STEPS_PER_RUN):
            work(run, step, step_input(run, step))
        return run

    ingest(-1 - proc)  # open (and migrate) the store before the clock starts
    st.flush()
    _wait(go)
    start = time.time()
    for run in range(runs):
        ingest(proc * runs + run)
    st.flush(timeout_s=600)
    end = time.time()
    return {"start": start, "end": end, "steps": runs * STEPS_PER_RUN}


def _prepared(n_steps: int, proc: int) -> list[tuple[list[Any], list[Any]]]:
    """Batches of finished records, as the writer thread hands them to the backend."""
    import secrets

    from steptrace.record import RunState, SpanRecord, input_hash

    batches: list[tuple[list[Any], list[Any]]] = []
    runs: list[Any] = []
    spans: list[Any] = []
    now = time.time_ns()
    for run in range(n_steps // STEPS_PER_RUN):
        run_id, root = secrets.token_hex(16), secrets.token_hex(8)
        state = RunState(run_id, "ingest", secrets.token_hex(16), root, now)
        state.status, state.end_ns = "succeeded", now + 5_000_000
        state.input, state.output = orjson.dumps({"run": run}), orjson.dumps(run)
        runs.append(state)
        for step in range(STEPS_PER_RUN):
            span = SpanRecord(
                run_id,
                secrets.token_hex(8),
                root,
                "step",
                "work",
                now + step,
                1,
                "work#" + str(step),
            )
            span.end_ns = now + step + 400_000
            span.status = "succeeded"
            span.input = orjson.dumps(step_input(proc * n_steps + run, step))
            span.input_hash = input_hash(span.input)
            span.output = orjson.dumps(step_output(run, step))
            spans.append(span)
        if len(runs) + len(spans) >= BATCH_RECORDS:
            batches.append((runs, spans))
            runs, spans = [], []
        now += 10_000_000
    if runs:
        batches.append((runs, spans))
    return batches


def worker_ingest_path(url: str, n_steps: int, go: str, proc: int) -> dict[str, float]:
    from steptrace.store import open_writer
    from steptrace.store.sqlite import is_locked

    batches = _prepared(n_steps, proc)
    writer = open_writer(url)
    _wait(go)
    start = time.time()
    retries = 0
    for runs, spans in batches:
        while True:
            try:
                writer.write(runs, spans)
                break
            except Exception as exc:  # another process held SQLite's write lock too long
                if not is_locked(exc):
                    raise
                retries += 1  # (the sink would spill the batch and write it later)
    end = time.time()
    writer.close()
    steps = sum(len(s) for _, s in batches)
    return {"start": start, "end": end, "steps": steps, "retries": retries}


def worker_plain(path: str, n_steps: int, go: str, proc: int) -> dict[str, float]:
    """The baseline for SQLite: the same step records' ids, input and output as rows of a
    bare four-column table (a key and no other index), inserted with ``executemany`` in
    the same batches, one transaction each, in WAL mode with ``synchronous=NORMAL`` as
    the store runs: what SQLite itself takes for the payload, with no steptrace."""
    import sqlite3

    batches = [
        [(s.span_id, s.run_id, s.input, s.output) for s in spans]
        for _, spans in _prepared(n_steps, proc)
    ]
    db = sqlite3.connect(path + ".plain", isolation_level=None, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, run TEXT, i BLOB, o BLOB)")
    _wait(go)
    start = time.time()
    for rows in batches:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    end = time.time()
    db.close()
    return {"start": start, "end": end, "steps": sum(len(b) for b in batches)}


# --- the driver -------------------------------------------------------------------------


def _fresh_store(backend: str, pg_admin: str | None, tmp: str, n: int) -> str:
    if backend == "sqlite":
        return os.path.join(tmp, f"ingest-{n}.db")
    import psycopg

    assert pg_admin is not None
    name = f"steptrace_ingest_{os.getpid()}_{n}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(pg_admin)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _drop_store(url: str, pg_admin: str | None) -> None:
    if "://" not in url:
        for suffix in ("", "-wal", "-shm", ".plain", ".plain-wal", ".plain-shm"):
            if os.path.exists(url + suffix):
                os.remove(url + suffix)
        return
    import psycopg

    assert pg_admin is not None
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _one(mode: str, url: str, processes: int, amount: int, tmp: str) -> float:
    """Steps/s of one measurement with ``processes`` workers at once."""
    from steptrace.store import migrate_store

    migrate_store(url)  # the schema exists before the workers race to create it
    go = os.path.join(tmp, f"go-{time.monotonic_ns()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", mode, url, str(amount), go, str(p)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(processes)
    ]
    time.sleep(1.5 + 0.5 * processes)  # imports and preparation, before the clock
    with open(go, "w"):
        pass
    results = []
    for w in workers:
        out, _ = w.communicate(timeout=1200)
        if w.returncode != 0:
            raise SystemExit(f"worker failed ({w.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    steps = sum(r["steps"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return steps / wall


def _report(
    rows: list[tuple[str, str, int, float, list[float]]],
    mode: str,
    backend: str,
    processes: int,
    rates: list[float],
) -> None:
    median = statistics.median(rates)
    rows.append((mode, backend, processes, median, rates))
    shown = ", ".join(f"{r:,.0f}" for r in rates)
    print(
        f"  {mode:6} {backend:10} {processes} process(es): {median:9,.0f} steps/s  (runs: {shown})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1000, help="end-to-end runs per process")
    parser.add_argument(
        "--ingest-steps", type=int, default=50_000, help="steps per process, ingest path"
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--processes", default="1,4")
    parser.add_argument("--modes", default="ingest,e2e")
    parser.add_argument("--pg-url", help="an existing server (a database is created per run)")
    args = parser.parse_args()
    backends = args.backends.split(",")
    server = None
    pg_admin = args.pg_url
    if "postgresql" in backends and pg_admin is None:
        from tests.support import pg_server

        server = pg_server.start(durable=True)
        pg_admin = server.url
    rows: list[tuple[str, str, int, float, list[float]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="steptrace-ingest-") as tmp:
            n = 0
            for mode in args.modes.split(","):
                for backend in backends:
                    for processes in (int(p) for p in args.processes.split(",")):
                        amount = args.ingest_steps if mode == "ingest" else args.runs
                        # SQLite's ingest path is measured beside its baseline, round by
                        # round: the machine's speed moves between minutes
                        paired = mode == "ingest" and backend == "sqlite"
                        rates, plain = [], []
                        for _ in range(args.repeat):
                            n += 1
                            url = _fresh_store(backend, pg_admin, tmp, n)
                            try:
                                if paired:
                                    plain.append(_one("plain", url, processes, amount, tmp))
                                rates.append(_one(mode, url, processes, amount, tmp))
                            finally:
                                _drop_store(url, pg_admin)
                        if paired:
                            _report(rows, "plain", backend, processes, plain)
                        _report(rows, mode, backend, processes, rates)
                        if paired:
                            ratios = [r / p for r, p in zip(rates, plain, strict=True)]
                            print(
                                f"  {'':6} {'':10} ingest ÷ plain insert: "
                                f"{statistics.median(ratios):.2f} "
                                f"({min(ratios):.2f}–{max(ratios):.2f})",
                                flush=True,
                            )
    finally:
        if server is not None:
            server.stop()
    labels = {
        "plain": "baseline: plain batched INSERT of the same rows",
        "ingest": "store ingest path",
        "e2e": "end to end (public API)",
    }
    print("\n| measured | store | processes | steps/s (median) |\n|---|---|---|---|")
    for mode, backend, processes, median, _ in rows:
        print(f"| {labels[mode]} | {backend} | {processes} | {median:,.0f} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        mode, url, amount, go, proc = sys.argv[2:7]
        fn = {"e2e": worker_end_to_end, "plain": worker_plain}.get(mode, worker_ingest_path)
        print(json.dumps(fn(url, int(amount), go, int(proc))), flush=True)
    else:
        main()
