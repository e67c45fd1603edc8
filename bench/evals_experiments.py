"""Experiment throughput: items per second of ``st.experiment`` over a dataset of recorded
step occurrences, at concurrency 1 and 8.

The step calls a scripted model (``st.llm.chat("scripted:…")``) once and returns a small
dict; each item is a run of its own (``experiment:{step}``, committed before the item
is read back), scored by the built-in ``exact`` evaluator and written with its score.
A dataset of ``--items`` occurrences is recorded once; each round runs one experiment
per concurrency, interleaved, and the figure is the median of the rounds with the spread
(min–max). Optionally the same on PostgreSQL (``--pg-url URL``: a database the bench
may write to; or ``--pg``: a throwaway server of ``tests/support/pg_server.py``).
``--latency-ms`` makes the scripted model sleep, as a remote model would (concurrency
then pays). Exits 0 whatever the figures (a benchmark, not a test).

    python -m bench.evals_experiments [--items 200] [--rounds 5] [--latency-ms 0]
                                      [--concurrency 1,8] [--pg | --pg-url URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import steptrace as st

MODEL = "bench-experiments"
LATENCY_S = {"value": 0.0}


def _answer(messages: list[dict[str, Any]], **params: Any) -> str:
    if LATENCY_S["value"]:
        time.sleep(LATENCY_S["value"])
    return "refund" if "refund" in messages[-1]["content"] else "question"


st.llm.script(MODEL, _answer)


@st.step
def classify(text: str) -> dict[str, str]:
    reply = st.llm.chat(
        model=f"scripted:{MODEL}", messages=[{"role": "user", "content": f"Label: {text}"}]
    )
    return {"label": reply.text, "text": text[:40]}


@st.workflow
def ticket(text: str) -> dict[str, str]:
    return classify(text)


def _measure(store: str, args: argparse.Namespace) -> dict[int, list[float]]:
    import steptrace.config
    from steptrace.evals import datasets
    from steptrace.experimenting import experiment

    steptrace.config.reset()
    st.configure(store=store)
    for i in range(args.items):
        ticket(f"ticket {i}: " + ("refund please" if i % 3 == 0 else "how do I"))
    assert st.flush()
    with st.Store.open() as opened:
        datasets.add(opened, "bench", "classify")
    LATENCY_S["value"] = args.latency_ms / 1000
    rates: dict[int, list[float]] = {c: [] for c in args.concurrency}
    for round_ in range(args.rounds):
        for c in args.concurrency:
            started = time.perf_counter()
            done = experiment(f"r{round_}-c{c}", "bench", concurrency=c)
            elapsed = time.perf_counter() - started
            assert done.summary()["scores"]["exact"]["mean"] == 1.0
            rates[c].append(args.items / elapsed)
    LATENCY_S["value"] = 0.0
    steptrace.config.reset()
    return rates


def _report(label: str, rates: dict[int, list[float]]) -> None:
    print(label, flush=True)
    for c, values in rates.items():
        print(
            f"    concurrency {c:>2}: {statistics.median(values):7.0f} items/s "
            f"({min(values):.0f}–{max(values):.0f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="dataset items")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians of them)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the model's latency")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 8],
        help="concurrencies to measure, e.g. 1,8",
    )
    parser.add_argument("--pg", action="store_true", help="also on a throwaway PostgreSQL")
    parser.add_argument("--pg-url", help="also on this PostgreSQL database")
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"experiment over {args.items} items, a step with 1 scripted LLM call "
        f"({args.latency_ms:g} ms), exact evaluator; {args.rounds} rounds, medians (min–max)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="steptrace-experiments-") as tmp:
        _report("SQLite file", _measure(os.path.join(tmp, "bench.db"), args))
    if args.pg_url:
        _report("PostgreSQL", _measure(args.pg_url, args))
    elif args.pg:
        from tests.support import pg_server

        with pg_server.start() as server:
            url = pg_server.create_database(server.url, "bench_experiments")
            _report("PostgreSQL (loopback)", _measure(url, args))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
