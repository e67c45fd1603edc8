"""Soak: many runs in one process, resident memory sampled as they go (issue "Nothing
lost": memory is bounded in bytes, so it stays flat however many runs go through).

Each run is a workflow of 10 steps, each returning ~1 KB of JSON; every
``--big-every``-th run has one step that returns 1 MiB. After ``--warmup`` runs the
process is measured (``gc.collect()``, then resident set size from
``/proc/self/statm``); then again every ``--every`` runs and at the end, once the
writer has caught up (``st.flush()``). Prints RSS over time and the growth from the
warm-up point, then counts what the store holds (every run, every step). Exits 0
whatever the figures; ``--json`` adds one JSON line with the results (the soak test
runs this script and asserts on that line).

    python -m bench.soak [--runs 100000] [--every 10000] [--warmup 2000]
                         [--big-every 2500] [--store PATH_OR_URL] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import tempfile
import time
from typing import Any

STEPS = 10
MIB = 1024 * 1024
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def payload(run: int, step: int) -> dict[str, Any]:
    """~1 KB of JSON, different for every step of every run (nothing interned)."""
    return {
        "run": run,
        "step": step,
        "ticket": f"T-{run:08d}-{step}",
        "customer": {"name": f"customer {run % 977}", "tier": ("gold", "silver")[run % 2]},
        "body": f"run {run} step {step}: charged twice for order A-{run * 31 % 100_003}. " * 12,
        "scores": [(run * (i + 1) % 1000) / 1000 for i in range(8)],
    }


def count_stored(url: str) -> tuple[int, int]:
    """(runs, spans) in the store, by SQL with the engine's own driver."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(url) as conn:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()
            spans = conn.execute("SELECT count(*) FROM spans").fetchone()
    else:
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()
            spans = conn.execute("SELECT count(*) FROM spans").fetchone()
        finally:
            conn.close()
    assert runs is not None and spans is not None
    return int(runs[0]), int(spans[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs in all, warm-up included")
    parser.add_argument("--every", type=int, default=10_000, help="sample RSS every N runs")
    parser.add_argument("--warmup", type=int, default=2_000, help="runs before the baseline")
    parser.add_argument("--big-every", type=int, default=2_500, help="a 1 MiB output every N runs")
    parser.add_argument("--store", help="store path or URL (default: a temporary SQLite file)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()

    tmp = None
    if args.store is None:
        tmp = tempfile.mkdtemp(prefix="steptrace-soak-")
        args.store = os.path.join(tmp, "soak.db")
    os.environ["STEPTRACE_STORE"] = args.store

    import steptrace as st

    big = "m" * MIB

    @st.step
    def work(run: int, step: int) -> Any:
        if step == 3 and run % args.big_every == 0:
            return {"run": run, "blob": big}
        return payload(run, step)

    @st.workflow
    def soak(run: int) -> int:
        for step in range(STEPS):
            work(run, step)
        return run

    def settle() -> int:
        st.flush(timeout_s=300)
        gc.collect()
        return rss_bytes()

    started = time.perf_counter()
    print(f"store: {args.store}", flush=True)
    print(f"{'runs':>8} {'seconds':>8} {'RSS MB':>8} {'growth MB':>10} {'runs/s':>8}", flush=True)
    baseline: int | None = None
    samples: list[tuple[int, float, int]] = []
    last_t, last_n = started, 0
    health = getattr(st, "health", None)
    for n in range(args.runs):
        soak(n)
        done = n + 1
        if done == min(args.warmup, args.runs) or done % args.every == 0 or done == args.runs:
            rss = settle()
            now = time.perf_counter()
            if baseline is None:
                baseline = rss
            samples.append((done, now - started, rss))
            rate = (done - last_n) / (now - last_t) if now > last_t else 0.0
            last_t, last_n = now, done
            extra = ""
            if health is not None:
                h = health()
                extra = f"  queued {h['queued']} ({h['queued_bytes'] / MIB:.1f} MiB)"
            print(
                f"{done:8d} {now - started:8.1f} {rss / MIB:8.1f} "
                f"{(rss - baseline) / MIB:10.1f} {rate:8.0f}{extra}",
                flush=True,
            )
    final = settle()
    assert baseline is not None
    growth = final - baseline
    stored_runs, stored_spans = count_stored(args.store)
    print(
        f"growth after warm-up: {growth / MIB:.1f} MB over {args.runs - args.warmup} runs "
        f"(peak RSS {peak_rss_bytes() / MIB:.0f} MB)"
    )
    print(f"stored: {stored_runs} of {args.runs} runs, {stored_spans} of {args.runs * STEPS} steps")
    if args.json:
        result = {
            "runs": args.runs,
            "warmup": min(args.warmup, args.runs),
            "baseline_bytes": baseline,
            "final_bytes": final,
            "growth_bytes": growth,
            "peak_bytes": peak_rss_bytes(),
            "samples": samples,
            "stored_runs": stored_runs,
            "stored_spans": stored_spans,
            "seconds": time.perf_counter() - started,
            "health": health() if health is not None else None,
        }
        print(json.dumps(result, default=str), flush=True)
    if tmp is not None:
        import steptrace.config

        steptrace.config.reset()  # closes the writer before its file goes
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
