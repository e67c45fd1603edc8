"""What each durability level costs (issue "Nothing lost"), against a bare OpenTelemetry
span carrying the same ~1 KB payload.

Three parts, each in a fresh interpreter:

(a) **per-step cost of each level** on a 10-step workflow writing to SQLite: ``off``
    (``@st.workflow(durable=False)``: fire-and-forget), ``run`` (the default: the run
    is committed before its workflow call returns) and ``step``
    (``@st.workflow(durable=True)``: each step attempt is committed before the step
    returns), in interleaved rounds with a bare span under one SDK ``TracerProvider``
    with a ``BatchSpanProcessor`` and a dropping exporter (as ``bench/overhead.py``).
    Medians of the in-workflow time per step, ratios against the bare span and against
    ``off``; also the time per step once the writer has caught up (``st.flush()``).
(b) **run-return latency** at the default level: from the workflow call to its
    return, p50 and p99, from 1 and from 8 threads at once.
(c) **durable-step cost per backend**: the same levels on SQLite and on PostgreSQL on
    loopback (a throwaway server with fsync on, ``tests/support/pg_server.py``, as
    ``bench/ingest.py`` does; or a database created on ``--pg-url``).

A core without the ``durable=`` argument is measured at the one level it has (``off``:
its writer is fire-and-forget) and the other levels are shown as n/a. Exits 0 whatever
the figures (a benchmark, not a test).

    python -m bench.durability [--rounds 15] [--workflows 100] [--latency-runs 400]
                               [--threads 1,8] [--backends sqlite,postgresql]
                               [--backend-rounds 5] [--backend-workflows 40] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bench.overhead import STEPS, DropExporter, make_payload

LEVELS = ("off", "run", "step")


# --- inside a worker ----------------------------------------------------------------------


def _workflows() -> dict[str, Callable[[dict[str, Any]], None]]:
    """A 10-step workflow per durability level this core has."""
    import steptrace as st

    @st.step
    def traced_step(value: dict[str, Any]) -> dict[str, Any]:
        return value

    def body(value: dict[str, Any]) -> None:
        for _ in range(STEPS):
            traced_step(value)

    if "durable" not in inspect.signature(st.workflow).parameters:
        body.__name__ = body.__qualname__ = "level_off"
        return {"off": st.workflow(body)}  # the writer of old: fire-and-forget
    made = {}
    for level, decorate in (
        ("off", st.workflow(durable=False)),  # type: ignore[call-overload]
        ("run", st.workflow),
        ("step", st.workflow(durable=True)),  # type: ignore[call-overload]
    ):

        def wf(value: dict[str, Any]) -> None:
            body(value)

        wf.__name__ = wf.__qualname__ = f"level_{level}"
        made[level] = decorate(wf)
    return made


def install_provider() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _per_step_rounds(
    workflows: dict[str, Callable[[dict[str, Any]], None]],
    bare: Callable[[dict[str, Any]], None] | None,
    rounds: int,
    per_round: int,
) -> dict[str, dict[str, float]]:
    """Interleaved rounds; per variant the median us/step in the workflow and once the
    writer has caught up."""
    import steptrace as st

    payload = make_payload()
    steps = per_round * STEPS
    variants: dict[str, Callable[[dict[str, Any]], None]] = dict(workflows)
    if bare is not None:
        variants = {"bare": bare, **variants}

    def one(fn: Callable[[dict[str, Any]], None]) -> tuple[float, float]:
        started = time.perf_counter()
        for _ in range(per_round):
            fn(payload)
        ran = time.perf_counter()
        st.flush(timeout_s=300)  # its background work is charged to it, not the next
        settled = time.perf_counter()
        return (ran - started) / steps * 1e6, (settled - started) / steps * 1e6

    for fn in variants.values():  # warm up: imports, store creation, caches
        one(fn)
    inside: dict[str, list[float]] = {name: [] for name in variants}
    caught_up: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            a, b = one(fn)
            inside[name].append(a)
            caught_up[name].append(b)
    return {
        name: {
            "in_workflow_us": statistics.median(inside[name]),
            "caught_up_us": statistics.median(caught_up[name]),
        }
        for name in variants
    }


def _latencies(wf: Callable[[dict[str, Any]], None], threads: int, runs: int) -> list[float]:
    """Milliseconds from each workflow call to its return, ``runs`` per thread."""
    payload = make_payload()
    out: list[float] = []
    lock = threading.Lock()
    go = threading.Barrier(threads)

    def work() -> None:
        mine = []
        go.wait()
        for _ in range(runs):
            started = time.perf_counter()
            wf(payload)
            mine.append((time.perf_counter() - started) * 1e3)
        with lock:
            out.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def worker_local(store: str, args: argparse.Namespace) -> dict[str, Any]:
    """Parts (a) and (b), on a SQLite store."""
    os.environ["STEPTRACE_STORE"] = store
    provider = install_provider()
    import orjson
    from opentelemetry import trace

    import steptrace as st

    tracer = trace.get_tracer("bench")

    def bare_step(value: dict[str, Any]) -> dict[str, Any]:
        with tracer.start_as_current_span("step") as span:
            span.set_attribute("input", orjson.dumps({"value": value}).decode())
            result = value
            span.set_attribute("output", orjson.dumps(result).decode())
        return result

    def bare(value: dict[str, Any]) -> None:
        with tracer.start_as_current_span("workflow"):
            for _ in range(STEPS):
                bare_step(value)

    workflows = _workflows()
    per_step = _per_step_rounds(workflows, bare, args.rounds, args.workflows)
    default = workflows.get("run") or workflows["off"]
    latency: dict[str, dict[str, float]] = {}
    for threads in (int(t) for t in args.threads.split(",")):
        per_thread = max(args.latency_runs // threads, 20)
        _latencies(default, threads, 10)  # warm
        st.flush(timeout_s=300)
        ms = _latencies(default, threads, per_thread)
        st.flush(timeout_s=300)
        latency[str(threads)] = {
            "p50_ms": _percentile(ms, 0.50),
            "p99_ms": _percentile(ms, 0.99),
            "runs": len(ms),
        }
    health = getattr(st, "health", None)
    provider.shutdown()
    return {
        "levels": sorted(workflows, key=LEVELS.index),
        "latency_level": "run" if "run" in workflows else "off",
        "per_step": per_step,
        "latency": latency,
        "health": health() if health is not None else None,
    }


def worker_backend(store: str, args: argparse.Namespace) -> dict[str, Any]:
    """Part (c): the levels on one store."""
    os.environ["STEPTRACE_STORE"] = store
    provider = install_provider()
    workflows = _workflows()
    per_step = _per_step_rounds(workflows, None, args.backend_rounds, args.backend_workflows)
    provider.shutdown()
    return {"levels": sorted(workflows, key=LEVELS.index), "per_step": per_step}


# --- the driver ---------------------------------------------------------------------------


def _in_worker(part: str, store: str, argv: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.durability", "--worker", part, store, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:7.1f}{unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:5.2f}x"


def _print_local(result: dict[str, Any]) -> None:
    if "error" in result:
        print(f"(a)/(b) failed: {result['error']}")
        return
    per_step = result["per_step"]
    bare = per_step["bare"]["in_workflow_us"]
    off = per_step.get("off", {}).get("in_workflow_us")
    print("\n(a) per-step cost by durability level (SQLite, 10-step workflow, ~1 KB in/out)")
    print(f"    bare OpenTelemetry span : {bare:7.1f} us/step")
    print(
        "    level  in workflow   vs bare   vs off   writer caught up   vs bare"
        "\n    -----  -----------   -------   ------   ----------------   -------"
    )
    for level in LEVELS:
        row = per_step.get(level)
        inside = row["in_workflow_us"] if row else None
        settled = row["caught_up_us"] if row else None
        print(
            f"    {level:5}  {_fmt(inside, ' us'):>11}   {_ratio(inside, bare):>7}   "
            f"{_ratio(inside, off):>6}   {_fmt(settled, ' us'):>16}   {_ratio(settled, bare):>7}"
        )
    if len(result["levels"]) == 1:
        print("    (this core has no durable= argument: its one level is fire-and-forget)")
    print(f"\n(b) run-return latency, level {result['latency_level']} (call to return)")
    for threads, figures in result["latency"].items():
        print(
            f"    {threads} thread(s): p50 {figures['p50_ms']:6.2f} ms   "
            f"p99 {figures['p99_ms']:6.2f} ms   ({figures['runs']} runs)"
        )
    if result.get("health"):
        print(f"    health: {result['health']}")


def _print_backends(results: dict[str, dict[str, Any]]) -> None:
    print("\n(c) per-step cost by level and store (in the workflow / writer caught up)")
    for backend, result in results.items():
        if "error" in result:
            print(f"    {backend:10}: failed: {result['error']}")
            continue
        per_step = result["per_step"]
        off = per_step.get("off", {}).get("in_workflow_us")
        cells = []
        for level in LEVELS:
            row = per_step.get(level)
            if row is None:
                cells.append(f"{level} n/a")
            else:
                cells.append(
                    f"{level} {row['in_workflow_us']:.1f} / {row['caught_up_us']:.1f} us"
                    f" ({_ratio(row['in_workflow_us'], off).strip()} off)"
                )
        print(f"    {backend:10}: " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="(a) interleaved rounds")
    parser.add_argument("--workflows", type=int, default=100, help="(a) workflows per round")
    parser.add_argument("--latency-runs", type=int, default=400, help="(b) runs per thread count")
    parser.add_argument("--threads", default="1,8", help="(b) thread counts")
    parser.add_argument("--backends", default="sqlite,postgresql", help="(c) stores")
    parser.add_argument("--backend-rounds", type=int, default=5, help="(c) rounds")
    parser.add_argument("--backend-workflows", type=int, default=40, help="(c) per round")
    parser.add_argument("--pg-url", help="(c) an existing server (a database is created in it)")
    args = parser.parse_args()
    argv = [
        f"--rounds={args.rounds}",
        f"--workflows={args.workflows}",
        f"--latency-runs={args.latency_runs}",
        f"--threads={args.threads}",
        f"--backend-rounds={args.backend_rounds}",
        f"--backend-workflows={args.backend_workflows}",
    ]
    started = time.perf_counter()
    size = len(orjson.dumps(make_payload()))
    print(f"payload: ~{size} bytes in and out per step, {STEPS} steps/workflow")
    print(
        f"(a) {args.rounds} rounds x {args.workflows} workflows; (b) {args.latency_runs} runs "
        f"per thread count; (c) {args.backend_rounds} rounds x {args.backend_workflows}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="steptrace-durability-") as tmp:
        _print_local(_in_worker("local", os.path.join(tmp, "local.db"), argv))
        backends: dict[str, dict[str, Any]] = {}
        for backend in args.backends.split(","):
            if backend == "sqlite":
                backends[backend] = _in_worker("backend", os.path.join(tmp, "c.db"), argv)
            elif backend == "postgresql":
                backends[backend] = _postgres(args, argv)
        if backends:
            _print_backends(backends)
    print(f"\n({time.perf_counter() - started:.0f} s)")


def _postgres(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    server = None
    admin = args.pg_url
    try:
        if admin is None:
            from tests.support import pg_server

            try:
                server = pg_server.start(durable=True)  # fsync on, as in production
            except pg_server.PostgresUnavailable as exc:
                return {"error": f"PostgreSQL unavailable: {exc}"}
            admin = server.url
        import psycopg

        name = f"steptrace_durability_{os.getpid()}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        url = urllib.parse.urlunsplit(urllib.parse.urlsplit(admin)._replace(path=f"/{name}"))
        try:
            return _in_worker("backend", url, argv)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        part, store = sys.argv[2], sys.argv[3]
        parser = argparse.ArgumentParser()
        for flag in ("--rounds", "--workflows", "--latency-runs"):
            parser.add_argument(flag, type=int)
        parser.add_argument("--backend-rounds", type=int)
        parser.add_argument("--backend-workflows", type=int)
        parser.add_argument("--threads")
        worker_args = parser.parse_args(sys.argv[4:])
        fn = worker_local if part == "local" else worker_backend
        print(json.dumps(fn(store, worker_args)), flush=True)
    else:
        main()
