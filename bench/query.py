"""Latency of the store's questions on a large SQLite store (issue 4).

Builds (once, into ``bench/.data/``, git-ignored; reused when present) a store of
100,000 runs x 10 steps: 1M step records of ~1 KB of JSON each (input ~0.43 KB,
output ~0.62 KB), with an LLM call under two of the steps, retried (3% and 1%)
and failed (1% of runs) steps; then prints the median latency of each question
asked through ``st.Store`` (warm: each is asked a few times first), and the
store's bytes per step record against the raw JSON payload.

The store is built by the **bulk loader** below: it makes the same ``RunState``
and ``SpanRecord`` objects the runtime records and hands them, 500 runs at a
time, to ``SQLiteWriter.write`` — the writer's own SQL, without the background
thread, redaction or OpenTelemetry. Values are made deterministic by a seed, so
every build holds the same data (~2.5 minutes on 2 cores).

    python -m bench.query [--runs 100000] [--repeat 100] [--rebuild] [--analyze]
    python -m bench.query --postgres [--pg-url URL] [--runs 100000] [--repeat 100]

With ``--postgres`` the same data is loaded (through ``PostgresWriter.write``, the
same 500-run batches) into PostgreSQL — a throwaway server started for the bench
(Debian's ``postgresql`` package, fsync on), or a new database on ``--pg-url`` — then
``VACUUM (ANALYZE)`` (what autovacuum would do), and the same questions are asked.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from steptrace.query.distribution import distribution_sql
from steptrace.record import LLMUsage, RunState, SpanRecord, input_hash
from steptrace.store import Store, open_writer

HERE = os.path.dirname(os.path.abspath(__file__))
RARE = "classify.output.classification = legal"
"""A value 0.05% of the runs hold (issue 16: the runs page's rare-value filter)."""
RARE_PAGE = "runs --where classification = legal (0.05%), page of 50"
DIST_ROWS = "  its rows only (the same SQL, fetched: a floor)"
DIST_INDEXED = "  the same, field indexed (steptrace index)"
COMMON = "classify.output.classification = refund"
COMMON_PAGE = "runs --where classification = refund (15%), page of 20"
DATA_DIR = os.path.join(HERE, ".data")
WORKFLOW = "support"
RUN_INTERVAL_NS = 860_000_000

# (name, kind, median duration ms, has an LLM call)
STEPS: list[tuple[str, str, float, bool]] = [
    ("parse", "step", 0.4, False),
    ("classify", "step", 420.0, True),
    ("lookup_order", "tool", 35.0, False),
    ("fetch_history", "step", 12.0, False),
    ("retrieve", "step", 80.0, False),
    ("draft", "step", 1300.0, True),
    ("check_policy", "step", 2.0, False),
    ("translate", "step", 6.0, False),
    ("format", "step", 0.8, False),
    ("notify", "step", 25.0, False),
]
CLASSIFICATIONS = {
    "billing": 0.42,
    "shipping": 0.25,
    "refund": 0.15,
    "technical": 0.12,
    "account": 0.0595,
    "legal": 0.0005,
}
URGENCIES = {"low": 0.3, "normal": 0.5, "high": 0.17, "critical": 0.03}
ORDER_STATUSES = {"shipped": 0.5, "delivered": 0.3, "pending": 0.15, "cancelled": 0.05}
RETRY_RATE = {"classify": 0.03, "draft": 0.01, "lookup_order": 0.0}
FAIL_RATE = {"check_policy": 0.01}

_WORDS = [
    "order",
    "charge",
    "refund",
    "parcel",
    "delivery",
    "invoice",
    "account",
    "password",
    "card",
    "duplicate",
    "week",
    "tuesday",
    "courier",
    "address",
    "customer",
    "support",
    "reply",
    "thanks",
    "please",
    "urgent",
    "late",
]


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n_words))


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def hex(self, digits: int) -> str:
        return format(self.rng.getrandbits(digits * 4), f"0{digits}x")


def _step_values(
    rng: random.Random, name: str, run_no: int, ticket: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A step's input (~0.35 KB) and output (~0.65 KB)."""
    inp: dict[str, Any] = {
        "ticket_id": ticket["ticket_id"],
        "step": name,
        "context": {"channel": ticket["channel"], "locale": "en-GB", "run": run_no},
        "text": _text(rng, 44),
    }
    out: dict[str, Any]
    if name == "classify":
        out = {
            "classification": _pick(rng, CLASSIFICATIONS),
            "urgency": _pick(rng, URGENCIES),
            "confidence": round(rng.uniform(0.5, 1.0), 3),
            "meta": {"label": rng.choice(["a", "b", "c"]), "model": "triage-v3"},
        }
    elif name == "lookup_order":
        out = {
            "order_id": f"A-{rng.randrange(100000)}",
            "status": _pick(rng, ORDER_STATUSES),
            "amount_usd": round(rng.uniform(5, 400), 2),
        }
    elif name == "check_policy":
        out = {"ok": True, "rules": ["refund_limit", "no_promises"]}
    else:
        out = {"ok": True, "items": rng.randrange(1, 20)}
    out["notes"] = _text(rng, 72)
    out["scores"] = [round(rng.random(), 3) for _ in range(6)]
    return inp, out


def _runs(n_runs: int, seed: int) -> Iterator[tuple[RunState, list[SpanRecord]]]:
    rng = random.Random(seed)
    ids = _Ids(rng)
    t0 = time.time_ns() - n_runs * RUN_INTERVAL_NS - 60 * 1_000_000_000
    for i in range(n_runs):
        run_id, trace_id, root = ids.hex(32), ids.hex(32), ids.hex(16)
        start = t0 + i * RUN_INTERVAL_NS
        ticket = {"ticket_id": f"T-{i}", "channel": rng.choice(["email", "chat", "phone"])}
        now = start + 50_000
        spans: list[SpanRecord] = []
        failed = False
        for name, kind, median_ms, has_llm in STEPS:
            inp, out = _step_values(rng, name, i, ticket)
            inp_json = orjson.dumps(inp)
            attempts = 1
            while rng.random() < RETRY_RATE.get(name, 0.0) and attempts < 3:
                attempts += 1
            fails = rng.random() < FAIL_RATE.get(name, 0.0)
            for attempt in range(1, attempts + 1):
                duration_ns = int(rng.lognormvariate(0, 0.35) * median_ms * 1_000_000)
                span = SpanRecord(run_id, ids.hex(16), root, kind, name, now, attempt, f"{name}#0")
                span.end_ns = now + duration_ns
                span.input = inp_json
                span.input_hash = input_hash(inp_json)
                if attempt < attempts or fails:
                    span.status = "failed"
                    span.output = orjson.dumps("Sure! Here is the JSON: {" + _text(rng, 8))
                    span.error = orjson.dumps(
                        {
                            "type": "ValidationError",
                            "message": "1 validation error",
                            "validation": True,
                        }
                    )
                else:
                    span.status = "succeeded"
                    span.output = orjson.dumps(out)
                spans.append(span)
                if has_llm:
                    tokens_in, tokens_out = rng.randrange(300, 900), rng.randrange(20, 400)
                    llm = SpanRecord(
                        run_id, ids.hex(16), span.span_id, "llm", f"chat {name}", now + 10_000
                    )
                    llm.end_ns = span.end_ns - 10_000
                    llm.status = "succeeded"
                    llm.input = orjson.dumps(
                        {"messages": [{"role": "user", "content": inp["text"]}], "params": {}}
                    )
                    llm.output = orjson.dumps(_text(rng, 20))
                    llm.llm = LLMUsage(
                        provider="scripted",
                        model=name,
                        input_tokens=tokens_in,
                        output_tokens=tokens_out,
                        cost_usd=round(tokens_in * 2.5e-6 + tokens_out * 1e-5, 8),
                        params=b"{}",
                    )
                    spans.append(llm)
                now = span.end_ns + 20_000
            if fails:
                failed = True
                break
        run = RunState(run_id, WORKFLOW, trace_id, root, start)
        run.end_ns = now + 30_000
        run.input = orjson.dumps(ticket)
        if failed:
            run.status = "failed"
            run.error = orjson.dumps({"type": "PolicyViolation", "message": "refund too large"})
        else:
            run.status = "succeeded"
            run.output = orjson.dumps({"reply": "sent"})
        yield run, spans


def build(path: str, n_runs: int, seed: int = 7) -> None:
    """The bulk loader: the backend's ``write`` (``SQLiteWriter`` or ``PostgresWriter``)
    in batches of 500 runs."""
    started = time.perf_counter()
    writer = open_writer(path)
    batch_runs: list[RunState] = []
    batch_spans: list[SpanRecord] = []
    for n, (run, spans) in enumerate(_runs(n_runs, seed), 1):
        batch_runs.append(run)
        batch_spans.extend(spans)
        if len(batch_runs) == 500 or n == n_runs:
            writer.write(batch_runs, batch_spans)
            batch_runs, batch_spans = [], []
        if n % 10_000 == 0:
            print(f"  {n:,} runs written ({time.perf_counter() - started:.0f} s)", flush=True)
    writer.close()
    print(f"built {path} in {time.perf_counter() - started:.0f} s", flush=True)


def _median_ms(fn: Callable[[int], Any], repeat: int, warmup: int) -> tuple[float, float]:
    """Median and 90th percentile of ``fn(i)`` in ms, after ``warmup`` calls (with
    ``warmup=0`` for a first touch of each ``i``)."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def _checkpoint(path: str) -> None:
    """Move what the last write left in the WAL into the database file (reads of pages in
    the WAL are not memory-mapped)."""
    if "://" in path:
        return
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _sizes(path: str) -> None:
    conn = sqlite3.connect(path)
    steps, payload = conn.execute(
        "SELECT count(*), sum(length(input) + length(output)) FROM spans WHERE step_key IS NOT NULL"
    ).fetchone()
    spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    objects = conn.execute(
        "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
    ).fetchall()
    conn.close()
    total = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    print(f"\nstore: {total / 1e9:.2f} GB for {steps:,} step records ({spans:,} spans)")
    print(f"  raw step payload (input + output JSON): {payload / steps:,.0f} B per step record")
    print(f"  store: {total / steps:,.0f} B per step record ({total / payload:.2f}x the payload)")
    tables = {"runs", "spans", "llm_calls", "logs"}
    data = sum(size for name, size in objects if name in tables)
    print(f"  tables {data / steps:,.0f} B, indexes {(total - data) / steps:,.0f} B per step")
    for name, size in objects[:12]:
        print(f"    {name:28} {size / 1e6:9.1f} MB  {size / steps:6.0f} B/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=100, help="timed calls per question")
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument(
        "--analyze", action="store_true", help="run ANALYZE first (plans must not change)"
    )
    parser.add_argument("--postgres", action="store_true", help="ask PostgreSQL instead")
    parser.add_argument("--pg-url", help="a server to create the database in (with --postgres)")
    args = parser.parse_args()
    if args.postgres:
        _postgres(args)
        return
    os.makedirs(DATA_DIR, exist_ok=True)
    path = os.path.join(DATA_DIR, f"query-{args.runs}.db")
    if args.rebuild or not os.path.exists(path):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        build(path, args.runs)
    _questions(path, args)
    _sizes(path)


def _postgres(args: argparse.Namespace) -> None:
    import urllib.parse

    import psycopg

    server = None
    admin = args.pg_url
    if admin is None:
        from tests.support import pg_server

        server = pg_server.start(durable=True)
        admin = server.url
    name = f"steptrace_query_{args.runs}"
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(admin)._replace(path=f"/{name}"))
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if args.rebuild or exists.fetchone() is None:
                conn.execute(f"DROP DATABASE IF EXISTS {name}")
                conn.execute(f"CREATE DATABASE {name}")
                build(url, args.runs)
                started = time.perf_counter()
                with psycopg.connect(url, autocommit=True) as db:
                    db.execute("VACUUM (ANALYZE)")
                print(f"VACUUM (ANALYZE) in {time.perf_counter() - started:.0f} s", flush=True)
        _questions(url, args)
        with psycopg.connect(url) as db:
            row = db.execute(
                "SELECT pg_database_size(current_database()), "
                "(SELECT count(*) FROM spans WHERE step_key IS NOT NULL)"
            ).fetchone()
            assert row is not None
            size, steps = row
        print(
            f"\nstore: {size / 1e9:.2f} GB for {steps:,} step records "
            f"({size / steps:,.0f} B per step record)"
        )
    finally:
        if server is not None:
            server.stop()


def _questions(path: str, args: argparse.Namespace) -> None:
    with Store.open(path) as store:  # applies this version's migrations to an older store
        if args.analyze:
            store.engine.ddl("ANALYZE")
        store.drop_field_index("classify", "classification")  # measure without it first
        _checkpoint(path)
        recent = [r.run_id for r in store.runs(last=10_000)]
        rng = random.Random(1)
        n = args.repeat
        picks = [rng.choice(recent) for _ in range(n + 1)]
        rows: list[tuple[str, tuple[float, float], str]] = []

        def measure(
            label: str, fn: Callable[[int], Any], repeat: int, target: str, warmup: int = 3
        ) -> None:
            rows.append((label, _median_ms(fn, repeat, warmup), target))
            print(f"  {label:52} {rows[-1][1][0]:8.2f} ms", flush=True)

        print(f"{args.runs:,} runs in {path}; medians (p90 in the table)")
        measure(
            "a run's full tree, first read in the process",
            lambda i: store.run(picks[i]),
            n,
            "1",
            warmup=0,
        )
        measure("a run's full tree (Store.run), warm", lambda i: store.run(picks[i]), n, "1")
        dist_sql, dist_params = distribution_sql(store.dialect, "classify", "classification")
        measure(
            "distribution over the last 1,000 runs",
            lambda i: store.distribution("classify", "classification", last=1000),
            n,
            "2",
        )
        measure(
            DIST_ROWS,
            lambda i: store.engine.rows_of_runs(dist_sql, dist_params, 1000),
            n,
            "",
        )
        measure(
            RARE_PAGE,
            lambda i: store.runs(where=RARE, last=50),
            max(5, n // 10),
            "200",
        )
        measure("  count_runs of the same", lambda i: store.count_runs(where=RARE), 5, "")
        measure(COMMON_PAGE, lambda i: store.runs(where=COMMON), n, "")
        store.index_field("classify", "classification")  # steptrace index classify classification
        _checkpoint(path)
        measure(
            DIST_INDEXED,
            lambda i: store.distribution("classify", "classification", last=1000),
            n,
            "2",
        )
        measure(f"{RARE_PAGE}, indexed", lambda i: store.runs(where=RARE, last=50), n, "200")
        measure("  count_runs of the same, indexed", lambda i: store.count_runs(where=RARE), n, "")
        measure(f"{COMMON_PAGE}, indexed", lambda i: store.runs(where=COMMON), n, "")
        measure(
            "stats over the last 10,000 runs",
            lambda i: store.step_stats(WORKFLOW, last=10_000),
            max(10, n // 5),
            "100",
        )
        measure("diff of two runs", lambda i: store.diff(picks[i], picks[i + 1]), n, "20")
        measure("compare against 100", lambda i: store.compare(picks[i], 100), n, "20")
        median = {label.strip(): med for label, (med, _), _ in rows}
        plain = median["distribution over the last 1,000 runs"]
        print(
            f"\ndistribution ÷ its rows only: {plain / median[DIST_ROWS.strip()]:.2f}; "
            f"÷ the indexed distribution: {plain / median[DIST_INDEXED.strip()]:.2f}; "
            f"rare-value page, unindexed ÷ indexed: "
            f"{median[RARE_PAGE] / median[f'{RARE_PAGE}, indexed']:.0f}"
        )
        print("\n| question | median | p90 | target |\n|---|---|---|---|")
        for label, (median, p90), target in rows:
            goal = f"≤ {target} ms" if target else ""
            print(f"| {label.strip()} | {median:.2f} ms | {p90:.2f} ms | {goal} |")


if __name__ == "__main__":
    main()
