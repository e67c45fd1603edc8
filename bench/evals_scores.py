"""Latency of the questions about scores on a store holding 1M of them (issue 15).

Builds (once, into ``bench/.data/``, git-ignored; reused when present) a store of
100,000 runs, each with 10 scores: nine on its step attempts (steps ``s0``..``s8``) and
one on the run itself — 1,000,000 scores of five names and three kinds:

- ``helpful``   numeric, uniform in [0, 1) (steps s0 and s5, and the run, by a human)
- ``relevance`` numeric, uniform in [0, 1) (steps s1 and s6)
- ``correct``   boolean, 80% true          (steps s2 and s7)
- ``grounded``  boolean, 95% true          (steps s3 and s8)
- ``tone``      categorical: polite 70%, neutral 25%, rude 5% (step s4)

The rows are inserted directly (``executemany`` on SQLite, ``COPY`` on PostgreSQL) into
a schema made by ``migrate_store``: the runs table and the scores table, no spans (no
question below reads them). SQLite is not ANALYZEd (steptrace never does it);
PostgreSQL is VACUUM ANALYZEd, as autovacuum would. Then, through ``st.Store``, it times (median of
``--repeat`` rounds, with the spread: fastest and slowest, and the p90):

- the mean of one score over one step's attempts (``Store.score_stats(step=…,
  name=…, last=None)``) — target ≤ 50 ms;
- the same over the last 1,000 runs (``Store.score_stats(name=…)``, what ``stats
  --scores`` asks);
- the distribution of a score on a step over the last 1,000 runs holding it
  (``Store.distribution(step, "score.NAME")``);
- a page of 50 runs filtered by a score (``Store.runs(where="score.helpful < 0.2",
  last=50)``) — target ≤ 200 ms — by a rare value, a category, a boolean, and the
  count of the matching runs (``count_runs``, what ``steptrace runs`` adds to a full
  page);
- the last 50 scores given (``steptrace scores``), and one run read with its scores.

    python -m bench.evals_scores [--runs 100000] [--repeat 20] [--rebuild]
    python -m bench.evals_scores --postgres URL [--runs 100000] [--repeat 20] [--rebuild]

``--postgres URL`` creates (or reuses) a database ``steptrace_scores_RUNS`` on the server
at URL (its user may create databases), loads it and runs ``VACUUM (ANALYZE)``.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from steptrace.store import Store, migrate_store
from steptrace.store.columns import SCORES
from steptrace.store.scores import score_id
from steptrace.store.sqlite import iso_from_ns

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, ".data")
WORKFLOW = "support"
START_NS = 1_764_547_200 * 1_000_000_000  # 2025-12-01
RUN_INTERVAL_NS = 860_000_000
STEP_NAMES = [f"s{i}" for i in range(9)]
# (name, kind) per step s0..s8; the run itself gets a human ``helpful``.
STEP_SCORES = [
    ("helpful", "numeric"),
    ("relevance", "numeric"),
    ("correct", "boolean"),
    ("grounded", "boolean"),
    ("tone", "categorical"),
    ("helpful", "numeric"),
    ("relevance", "numeric"),
    ("correct", "boolean"),
    ("grounded", "boolean"),
]
TRUE_RATE = {"correct": 0.8, "grounded": 0.95}
TONES = {"polite": 0.70, "neutral": 0.25, "rude": 0.05}
RUN_COLUMNS = (
    "run_id",
    "workflow",
    "status",
    "trace_id",
    "span_id",
    "started_at",
    "ended_at",
    "duration_ms",
    "resume_count",
)
BATCH_RUNS = 2000

TARGET_STEP_MEAN_MS = 50.0
TARGET_FILTER_MS = 200.0


def _hex(rng: random.Random, digits: int) -> str:
    return format(rng.getrandbits(digits * 4), f"0{digits}x")


def _rows(n_runs: int, seed: int) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(runs rows, scores rows) in batches of ``BATCH_RUNS`` runs, deterministic."""
    rng = random.Random(seed)
    runs: list[tuple[Any, ...]] = []
    scores: list[tuple[Any, ...]] = []
    for n in range(n_runs):
        run_id = _hex(rng, 32)
        start = START_NS + n * RUN_INTERVAL_NS
        end = start + 2_000_000_000
        runs.append(
            (
                run_id,
                WORKFLOW,
                "succeeded",
                _hex(rng, 32),
                _hex(rng, 16),
                iso_from_ns(start),
                iso_from_ns(end),
                2000.0,
                0,
            )
        )
        at = iso_from_ns(end + 1_000_000)
        targets = [
            (step, _hex(rng, 16), name, kind)
            for step, (name, kind) in zip(STEP_NAMES, STEP_SCORES, strict=True)
        ]
        targets.append((None, None, "helpful", "numeric"))
        for step, span_id, name, kind in targets:
            source = "human" if span_id is None else ("llm" if name != "tone" else "code")
            value: float | None
            label: str | None = None
            if kind == "numeric":
                value = round(rng.random(), 4)
            elif kind == "boolean":
                value = 1.0 if rng.random() < TRUE_RATE[name] else 0.0
            else:
                value = None
                label = rng.choices(list(TONES), weights=list(TONES.values()))[0]
            scores.append(
                (
                    score_id(run_id, span_id, name, source),
                    run_id,
                    span_id,
                    step,
                    name,
                    kind,
                    value,
                    label,
                    None,
                    source,
                    None,
                    at,
                    at,
                )
            )
        if len(runs) == BATCH_RUNS or n == n_runs - 1:
            yield runs, scores
            runs, scores = [], []


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def build_sqlite(path: str, n_runs: int, seed: int = 15) -> None:
    started = time.perf_counter()
    migrate_store(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    runs_sql = _insert_sql("runs", RUN_COLUMNS)
    scores_sql = _insert_sql("scores", SCORES.names)
    for runs, scores in _rows(n_runs, seed):
        with conn:
            conn.executemany(runs_sql, runs)
            conn.executemany(scores_sql, scores)
    # No ANALYZE: steptrace never runs it, so the plans measured are a store's own.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"built {path} in {time.perf_counter() - started:.0f} s", flush=True)


def build_postgres(url: str, n_runs: int, seed: int = 15) -> None:
    import psycopg

    started = time.perf_counter()
    migrate_store(url)
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            for runs, scores in _rows(n_runs, seed):
                with cur.copy(f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN") as copy:
                    for row in runs:
                        copy.write_row(row)
                with cur.copy(f"COPY scores ({', '.join(SCORES.names)}) FROM STDIN") as copy:
                    for row in scores:
                        copy.write_row(row)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    print(f"built {url.rsplit('/', 1)[-1]} in {time.perf_counter() - started:.0f} s", flush=True)


def _timed(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def questions(url: str, repeat: int) -> list[tuple[str, list[float], float | None]]:
    """Each question's timings (ms, sorted) and its target."""
    out: list[tuple[str, list[float], float | None]] = []
    with Store.open(url) as store:

        def measure(label: str, fn: Callable[[], Any], target: float | None = None) -> None:
            times = _timed(fn, repeat)
            out.append((label, times, target))
            print(f"  {label:62} {statistics.median(times):8.2f} ms", flush=True)

        measure(
            "mean of helpful over step s5's attempts (all 100k)",
            lambda: store.score_stats(step="s5", name="helpful", last=None),
            TARGET_STEP_MEAN_MS,
        )
        measure(
            "mean of correct over step s2's attempts (all 100k)",
            lambda: store.score_stats(step="s2", name="correct", last=None),
            TARGET_STEP_MEAN_MS,
        )
        measure(
            "every score per step, last 1,000 runs (stats --scores)",
            lambda: store.score_stats(last=1000),
        )
        measure(
            "distribution of s4's tone, last 1,000 runs holding it",
            lambda: store.distribution("s4", "score.tone", last=1000),
        )
        measure(
            "distribution of the run's helpful, last 1,000 runs",
            lambda: store.distribution("run", "score.helpful", last=1000),
        )
        measure(
            "runs --where 'score.helpful < 0.2', a page of 50",
            lambda: store.runs(where="score.helpful < 0.2", last=50),
            TARGET_FILTER_MS,
        )
        measure(
            "runs --where 'score.helpful < 0.001' (rare), a page of 50",
            lambda: store.runs(where="score.helpful < 0.001", last=50),
            TARGET_FILTER_MS,
        )
        measure(
            "runs --where 'score.tone = rude', a page of 50",
            lambda: store.runs(where="score.tone = rude", last=50),
            TARGET_FILTER_MS,
        )
        measure(
            "runs --where 'score.correct = false', a page of 50",
            lambda: store.runs(where="score.correct = false", last=50),
            TARGET_FILTER_MS,
        )
        measure(
            "count_runs(where='score.helpful < 0.2')",
            lambda: store.count_runs(where="score.helpful < 0.2"),
        )
        measure("the last 50 scores given (steptrace scores)", lambda: store.scores(limit=50))
        recent = store.runs(last=1)[0].run_id
        measure("one run with its scores (Store.run, no spans)", lambda: store.run(recent))
    return out


def report(url: str, n_runs: int, results: list[tuple[str, list[float], float | None]]) -> None:
    print(f"\n{n_runs:,} runs, {n_runs * 10:,} scores in {url}")
    print("\n| question | median | min – max | p90 | target |\n|---|---|---|---|---|")
    for label, times, target in results:
        p90 = times[int(0.9 * (len(times) - 1))]
        goal = f"≤ {target:g} ms" if target else ""
        if target and statistics.median(times) > target:
            goal += " **missed**"
        print(
            f"| {label} | {statistics.median(times):.2f} ms | "
            f"{times[0]:.2f} – {times[-1]:.2f} ms | {p90:.2f} ms | {goal} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds per question")
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to load too")
    args = parser.parse_args()
    os.makedirs(DATA_DIR, exist_ok=True)
    path = os.path.join(DATA_DIR, f"scores-{args.runs}.db")
    if args.rebuild or not os.path.exists(path):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        build_sqlite(path, args.runs)
    print(f"SQLite: {path}", flush=True)
    report(path, args.runs, questions(path, args.repeat))
    if args.postgres:
        _postgres(args)


def _postgres(args: argparse.Namespace) -> None:
    import psycopg

    name = f"steptrace_scores_{args.runs}"
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(args.postgres)._replace(path=f"/{name}"))
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if args.rebuild or exists is None:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
            build_postgres(url, args.runs)
    print(f"PostgreSQL: database {name}", flush=True)
    report(f"PostgreSQL database {name}", args.runs, questions(url, args.repeat))


if __name__ == "__main__":
    main()
