"""Latency of the web UI's API (issue 7) on a large SQLite store, over real HTTP.

Builds (once, into ``bench/.data/``, git-ignored; reused when present) the store of
``bench/query.py`` — 100,000 runs x 10 steps through the same bulk loader
(``SQLiteWriter.write``, 500 runs at a time) — plus one run of 2,000 spans (step
attempts, LLM calls, tool calls, retries; ~1 KB of JSON per step). Then serves it
with ``steptrace.ui`` under uvicorn on 127.0.0.1 in this process and prints the
median (and p90) time of each API request a page makes, measured from a client on
another thread: the runs page (first page, filtered, a deep page), the run page of
the large run (its light tree, one span's detail, the whole run with values), and
the question pages. With ``--browser``, also the time for Chromium
(``/usr/bin/chromium``, through Playwright) to load and draw the runs page and the
large run's page (loaded again in one tab, and in a new browser context with nothing
cached) and to show a span's detail. ``--browser-only`` takes only the Chromium
figures, over a store of 1,000 runs unless ``--runs`` says otherwise (the run page
reads one run by its id: the store's size does not change what it costs).

    python -m bench.ui [--runs 100000] [--repeat 30] [--rebuild] [--browser]
    python -m bench.ui --browser-only [--runs 1000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import uvicorn

from bench import query as query_bench  # the bulk loader
from steptrace.record import LLMUsage, RunState, SpanRecord, input_hash
from steptrace.store import Store, open_writer
from steptrace.ui import create_app
from tests.support.loopback import free_port

BIG_RUN_ID = "b" * 32
BIG_SPANS = 2000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def _big_run(start_ns: int) -> tuple[RunState, list[SpanRecord]]:
    """One run of ``BIG_SPANS`` spans: steps, each with an LLM call and (every other
    step) a tool call; one step in ten fails validation once and is retried."""
    ids = query_bench._Ids(query_bench.random.Random(99))
    root = ids.hex(16)
    spans: list[SpanRecord] = []
    now = start_ns + 10_000
    i = 0
    while len(spans) < BIG_SPANS:
        name = f"step_{i % 40}"
        attempts = 2 if i % 10 == 3 else 1
        for attempt in range(1, attempts + 1):
            if len(spans) >= BIG_SPANS:
                break
            inp = orjson.dumps({"item": i, "text": "lorem ipsum dolor " * 20})
            step = SpanRecord(
                BIG_RUN_ID, ids.hex(16), root, "step", name, now, attempt, f"{name}#{i}"
            )
            step.end_ns = now + 900_000
            step.input, step.input_hash = inp, input_hash(inp)
            failed = attempt < attempts
            step.status = "failed" if failed else "succeeded"
            step.output = orjson.dumps(
                "Sure! {not json" if failed else {"label": "ok", "i": i, "notes": "x" * 500}
            )
            if failed:
                step.error = orjson.dumps(
                    {"type": "ValidationError", "message": "1 validation error", "validation": True}
                )
            spans.append(step)
            llm = SpanRecord(BIG_RUN_ID, ids.hex(16), step.span_id, "llm", "chat big", now + 5_000)
            llm.end_ns = now + 600_000
            llm.status = "succeeded"
            llm.input = orjson.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "be brief"},
                        {"role": "user", "content": "x" * 300},
                    ]
                }
            )
            llm.output = orjson.dumps('{"label": "ok"}')
            llm.llm = LLMUsage(
                provider="scripted",
                model="big",
                input_tokens=120,
                output_tokens=12,
                cost_usd=0.0004,
                params=b'{"temperature": 0}',
            )
            spans.append(llm)
            if i % 2 == 0 and len(spans) < BIG_SPANS:
                tool = SpanRecord(
                    BIG_RUN_ID,
                    ids.hex(16),
                    step.span_id,
                    "tool",
                    "lookup",
                    now + 650_000,
                    1,
                    f"lookup#{i}",
                )
                tool.end_ns = now + 850_000
                tool.status = "succeeded"
                tool.input = orjson.dumps({"id": i})
                tool.output = orjson.dumps({"found": True, "id": i})
                spans.append(tool)
            now += 1_000_000
        i += 1
    run = RunState(BIG_RUN_ID, "big", ids.hex(32), root, start_ns)
    run.end_ns = now + 10_000
    run.status = "succeeded"
    run.input = orjson.dumps({"items": i})
    run.output = orjson.dumps({"done": True})
    return run, spans[:BIG_SPANS]


def build(path: str, n_runs: int) -> None:
    query_bench.build(path, n_runs)
    writer = open_writer(path)
    run, spans = _big_run(time.time_ns() - 3_600 * 1_000_000_000)
    writer.write([run], spans)
    writer.close()
    print(f"added run {BIG_RUN_ID} of {len(spans):,} spans", flush=True)


def _measure(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def _api_measures(
    get: Callable[..., bytes], store: Store, runs: int, path: str, repeat: int
) -> None:
    """The API requests each page makes, over HTTP."""
    recent = [r.run_id for r in store.runs(workflow="support", last=200)]
    a, b = recent[10], recent[11]
    big = json.loads(get(f"/api/v1/runs/{BIG_RUN_ID}"))
    some_llm = next(s["span_id"] for s in big["spans"] if s["kind"] == "llm")

    def measure(label: str, path: str, target: str = "", **params: Any) -> None:
        size = len(get(path, **params))
        med, p90 = _measure(lambda: get(path, **params), repeat)
        print(
            f"  {label:58} {med:8.2f} ms  (p90 {p90:7.2f}; {size / 1024:7.1f} KiB) {target}",
            flush=True,
        )

    print(f"{runs:,} runs + one of {BIG_SPANS:,} spans in {path}; over HTTP, medians:")
    measure("runs page: first 50 runs", "/api/v1/runs", "< 200 ms", limit=50)
    measure("runs page: status=failed", "/api/v1/runs", "< 200 ms", status="failed", limit=50)
    measure(
        "runs page: workflow=support, since 7d",
        "/api/v1/runs",
        "< 200 ms",
        workflow="support",
        since="7d",
    )
    measure(
        "runs page: where classification = billing (42% of runs)",
        "/api/v1/runs",
        "< 200 ms",
        where="classify.output.classification = billing",
    )
    measure(
        "runs page: where classification = legal (0.05%: a scan)",
        "/api/v1/runs",
        "< 200 ms",
        where="classify.output.classification = legal",
    )
    measure("runs page: page 200 (offset 10,000)", "/api/v1/runs", "< 200 ms", offset=10_000)
    measure("workflow names (filter list)", "/api/v1/workflows")
    measure("run page: 2,000-span run, tree without values", f"/api/v1/runs/{BIG_RUN_ID}", "< 1 s")
    measure("run page: one span's detail", f"/api/v1/runs/{BIG_RUN_ID}/spans/{some_llm}")
    measure("2,000-span run with every value", f"/api/v1/runs/{BIG_RUN_ID}", values="true")
    measure("a 10-step run", f"/api/v1/runs/{a}")
    measure("diff of two runs", "/api/v1/diff", a=a, b=b)
    measure("compare against 100", f"/api/v1/runs/{a}/compare")
    measure("stats over the last 1,000 runs", "/api/v1/stats", workflow="support", last=1000)
    measure(
        "distribution over the last 1,000 runs",
        "/api/v1/distribution",
        step="classify",
        field="classification",
    )
    measure(
        "duration histogram, last 1,000 attempts",
        "/api/v1/histogram",
        step="classify",
        workflow="support",
    )

    store.index_field("classify", "classification")  # steptrace index classify classification
    query_bench._checkpoint(path)
    measure(
        "  the same, the field indexed (steptrace index)",
        "/api/v1/runs",
        "< 200 ms",
        where="classify.output.classification = legal",
    )
    store.drop_field_index("classify", "classification")


def _browser_measures(base: str, some_llm: str, repeat: int) -> None:
    """Chromium loading and drawing the runs page and the large run's page, each
    loaded again in the same tab (the UI's scripts and styles cached, as when a page is
    opened again) and, for the run page, in a new browser context (nothing cached);
    then selecting spans."""
    from playwright.sync_api import sync_playwright

    viewport = {"width": 1500, "height": 900}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=viewport)

        def load(tab: Any, path: str, drawn: str) -> None:
            tab.goto(f"{base}{path}")
            tab.wait_for_selector(f"body[data-ready='1'] {drawn}")

        def load_run() -> None:
            load(page, f"/runs/{BIG_RUN_ID}", "#waterfall .wf-row")

        def load_runs() -> None:
            load(page, "/", "#runs tbody tr[data-run]")

        def select_span() -> None:
            page.click(f".wf-row[data-span='{some_llm}']")
            page.wait_for_selector("#detail .msg")
            page.click(".wf-row[data-kind='run']")
            page.wait_for_selector("#detail [data-section='Input']")

        def load_run_cold() -> float:
            context = browser.new_context(viewport=viewport)
            tab = context.new_page()
            start = time.perf_counter()
            load(tab, f"/runs/{BIG_RUN_ID}", "#waterfall .wf-row")
            elapsed = (time.perf_counter() - start) * 1000
            context.close()
            return elapsed

        times = max(5, repeat // 3)
        for label, fn in (
            ("Chromium: runs page loaded and drawn", load_runs),
            ("Chromium: 2,000-span run page loaded and drawn", load_run),
            ("Chromium: select an LLM span, then the run (two details)", select_span),
        ):
            med, p90 = _measure(fn, times, warmup=1)
            print(f"  {label:58} {med:8.2f} ms  (p90 {p90:7.2f})", flush=True)
        in_dom = page.eval_on_selector_all("#waterfall .wf-row", "els => els.length")
        in_tree = page.evaluate(
            "() => { const b = document.querySelector('#waterfall .wf-body');"
            " return b ? Math.round(b.getBoundingClientRect().height / 24) : null; }"
        )
        load_run_cold()
        cold = sorted(load_run_cold() for _ in range(times))
        label = "Chromium: the same run page, nothing cached (new context)"
        print(
            f"  {label:58} {statistics.median(cold):8.2f} ms  "
            f"(p90 {cold[int(0.9 * (len(cold) - 1))]:7.2f})",
            flush=True,
        )
        print(
            f"  (the run page had {in_dom:,} waterfall rows in the DOM"
            + (f", of {in_tree:,} in its tree)" if in_tree else ")")
        )
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=None, help="default 100,000 (1,000 with --browser-only)"
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--browser", action="store_true", help="also time Chromium drawing pages")
    parser.add_argument(
        "--browser-only",
        action="store_true",
        help="time only Chromium drawing pages (the run page does not depend on the store's size)",
    )
    args = parser.parse_args()
    runs = args.runs if args.runs is not None else 1_000 if args.browser_only else 100_000
    os.makedirs(query_bench.DATA_DIR, exist_ok=True)
    path = os.path.join(query_bench.DATA_DIR, f"ui-{runs}.db")
    if args.rebuild or not os.path.exists(path):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        build(path, runs)
    query_bench._checkpoint(path)

    store = Store.open(path)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    def get(path: str, **params: Any) -> bytes:
        qs = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{base}{path}" + (f"?{qs}" if qs else "")) as resp:
            body: bytes = resp.read()
            return body

    if not args.browser_only:
        _api_measures(get, store, runs, path, args.repeat)
    if args.browser or args.browser_only:
        if args.browser_only:
            print(f"{runs:,} runs + one of {BIG_SPANS:,} spans in {path}; in Chromium, medians:")
        big = json.loads(get(f"/api/v1/runs/{BIG_RUN_ID}"))
        some_llm = next(s["span_id"] for s in big["spans"] if s["kind"] == "llm")
        _browser_measures(base, some_llm, args.repeat)
    server.should_exit = True
    thread.join(timeout=5)
    store.close()


if __name__ == "__main__":
    main()
