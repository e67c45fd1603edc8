"""steptrace side by side with its peers: the same 10-step workflow, ~1 KB of JSON in and
out of each step, recorded by each tool that is importable here, in one process and one
run, in interleaved rounds.

The rows (a tool that is not installed is named and skipped; ``scripts/bench_peers_venv.sh``
makes a virtual environment with all of them):

- **bare OpenTelemetry span**, the baseline: an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` and an exporter that drops everything (as ``bench/overhead.py``),
  the payload serialised into an attribute on the way in and out. It is the global
  provider, so steptrace exports its spans into it too, as an application would have it.
- **steptrace** at each durability level (``off``, ``run``: the default, ``step``) on a
  SQLite file in a temporary directory.
- **Langfuse** ``@observe`` on the workflow and the step, with a ``TracerProvider`` of its
  own (``Langfuse(tracer_provider=...)``) whose OTLP exporter posts to a sink on loopback:
  an HTTP server in a process of its own (so its CPU is not charged to Langfuse) that
  counts and discards what it is sent.
- **Logfire** ``@instrument`` (arguments and return value recorded) from
  ``logfire.configure(local=True, send_to_logfire=False, console=False)``: a ``local``
  instance installs no global provider.
- **DBOS** ``@DBOS.step`` inside ``@DBOS.workflow`` with its system database a SQLite
  file: once as DBOS ships it (rollback journal, ``synchronous=FULL``) and once with the
  settings steptrace's store uses (WAL, ``synchronous=NORMAL``). DBOS is launched for
  its own rounds only and destroyed after each, so its background threads (queue,
  notification and scheduler pollers) never run during another tool's round.

Per round and tool: the time spent in the workflow calls per step, and the CPU time of
the whole process per step from the first call until the tool's background work is done
(steptrace's writer: ``st.flush()``; the OpenTelemetry pipelines: ``force_flush()``), so
work a tool moves to a thread is charged to it. Each round starts from a collected heap,
after one untimed workflow; the order of the tools rotates from round to round. Prints
the median of the rounds with the interquartile range and min-max, the ratio to the
bare span, and a markdown table. Exits 0 whatever the figures (a benchmark, not a test).

    python -m bench.peers [--rounds 15] [--workflows 100] [--dbos-workflows 5] [--idle-s 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import orjson

from bench.overhead import STEPS, DropExporter, make_payload

Payload = dict[str, Any]
SETUP_HINT = "run scripts/bench_peers_venv.sh"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _nothing() -> None:
    pass


@dataclass
class Variant:
    """One row: a workflow to call, and what a round of it needs around the calls."""

    name: str
    does: str
    """What the tool does per step, for the table."""
    workflow: Callable[[Payload], None]
    settle: Callable[[], None]
    """Wait until the tool's background work for what ran is done."""
    workflows: int
    enter: Callable[[], None] = _nothing
    leave: Callable[[], None] = _nothing
    wall_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


class Missing(Exception):
    """The tool's package is not importable."""


class Unsupported(Exception):
    """The tool is installed but cannot run this benchmark; the message says why."""


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Missing(module)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- the rows -------------------------------------------------------------------------


def bare_span(provider: Any, workflows: int) -> Variant:
    tracer = provider.get_tracer("bench")

    def step(value: Payload) -> Payload:
        with tracer.start_as_current_span("step") as span:
            span.set_attribute("input", orjson.dumps({"value": value}).decode())
            result = value
            span.set_attribute("output", orjson.dumps(result).decode())
        return result

    def workflow(value: Payload) -> None:
        with tracer.start_as_current_span("workflow"):
            for _ in range(STEPS):
                step(value)

    return Variant(
        "bare OpenTelemetry span",
        "one span, payload serialised into two attributes, dropped by the exporter",
        workflow,
        provider.force_flush,
        workflows,
    )


def steptrace_levels(provider: Any, workflows: int) -> list[Variant]:
    import steptrace as st

    @st.step
    def step(value: Payload) -> Payload:
        return value

    def settle() -> None:
        st.flush(timeout_s=300)
        provider.force_flush()  # the spans its writer exported

    does = {
        "off": "records redacted input and output, span exported; committed to SQLite by "
        "a background thread within ~100 ms",
        "run": "as off, and the run is committed before the workflow call returns",
        "step": "as off, and each step is committed before it returns",
    }
    made = []
    for level in ("off", "run", "step"):

        def body(value: Payload) -> None:
            for _ in range(STEPS):
                step(value)

        body.__name__ = body.__qualname__ = f"level_{level}"
        label = f"steptrace, durable={level}" + (" (default)" if level == "run" else "")
        made.append(
            Variant(label, does[level], st.workflow(durable=level)(body), settle, workflows)
        )
    return made


def langfuse_observe(sink_url: str, workflows: int) -> tuple[Variant, Callable[[], None]]:
    """The row, and what to call at the end (the client's shutdown)."""
    _require("langfuse")
    from langfuse import Langfuse, observe
    from opentelemetry.sdk.trace import TracerProvider

    client = Langfuse(
        public_key="pk-lf-bench",
        secret_key="sk-lf-bench",
        base_url=sink_url,
        tracer_provider=TracerProvider(),  # its own: neither the global one nor the baseline's
    )

    @observe()
    def step(value: Payload) -> Payload:
        return value

    @observe()
    def workflow(value: Payload) -> None:
        for _ in range(STEPS):
            step(value)

    row = Variant(
        "Langfuse @observe",
        "one span, input and output serialised to JSON attributes; OTLP/HTTP export "
        "(protobuf, gzip) to a loopback sink",
        workflow,
        client.flush,
        workflows,
    )
    return row, client.shutdown


def logfire_instrument(workflows: int) -> Variant:
    _require("logfire")
    import logfire

    lf = logfire.configure(local=True, send_to_logfire=False, console=False)

    @lf.instrument("step", record_return=True)
    def step(value: Payload) -> Payload:
        return value

    @lf.instrument("workflow")
    def workflow(value: Payload) -> None:
        for _ in range(STEPS):
            step(value)

    return Variant(
        "Logfire @instrument",
        "one span, arguments and return value serialised to JSON attributes (with a JSON "
        "schema) and scrubbed; no exporter",
        workflow,
        lf.force_flush,
        workflows,
    )


def dbos_steps(tmp: str, workflows: int) -> list[Variant]:
    """DBOS as shipped and with steptrace's SQLite settings; raises Unsupported when this
    DBOS cannot keep its system database in SQLite."""
    _require("dbos")
    import logging

    import sqlalchemy as sa
    from dbos import DBOS

    @DBOS.step()
    def step(value: Payload) -> Payload:
        return value

    @DBOS.workflow()
    def workflow(value: Payload) -> None:
        for _ in range(STEPS):
            step(value)

    def wal_engine(url: str) -> Any:
        engine = sa.create_engine(url)

        @sa.event.listens_for(engine, "connect")
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            # What DBOS sets on the engine it makes for SQLite, plus steptrace's store settings.
            dbapi_conn.isolation_level = "IMMEDIATE"
            dbapi_conn.execute("PRAGMA busy_timeout=30000")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        return engine

    def launcher(config: dict[str, Any]) -> Callable[[], None]:
        def enter() -> None:
            DBOS(config=config)  # type: ignore[arg-type]
            DBOS.launch()

        return enter

    def leave() -> None:
        DBOS.destroy()

    shipped_url = f"sqlite:///{os.path.join(tmp, 'dbos.sqlite')}"
    wal_url = f"sqlite:///{os.path.join(tmp, 'dbos-wal.sqlite')}"
    quiet = {"log_level": "WARNING"}
    shipped = {"name": "bench", "system_database_url": shipped_url, **quiet}
    wal = {
        "name": "bench",
        "system_database_url": wal_url,
        "system_database_engine": wal_engine(wal_url),
        **quiet,
    }
    does = "checkpoints the step's output (pickled) in the system database, one commit a step"
    rows = [
        Variant(
            "DBOS step (SQLite as shipped)",
            does + ", synchronous=FULL",
            workflow,
            _nothing,
            workflows,
            launcher(shipped),
            leave,
        ),
        Variant(
            "DBOS step (SQLite WAL, synchronous=NORMAL)",
            does + ", as steptrace's store is set",
            workflow,
            _nothing,
            workflows,
            launcher(wal),
            leave,
        ),
    ]
    for row in rows:  # creates each system database, and tells whether SQLite is supported
        try:
            row.enter()
            row.workflow(make_payload())
        except Exception as exc:
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                row.leave()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    return rows


# --- the sink -------------------------------------------------------------------------


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector would
    received: ClassVar[dict[str, int]] = {"requests": 0, "bytes": 0}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received["requests"] += 1
        self.received["bytes"] += len(body)
        self._answer(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        self._answer(json.dumps(self.received).encode(), "application/json")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_sink() -> None:
    """In the sink's own process: print the port, then serve until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SinkHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Sink:
    """The loopback sink, in a process of its own: ``url``, ``received()``, ``stop()``."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.peers", "--sink"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def received(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/received", timeout=5) as answer:
            counts: dict[str, int] = json.loads(answer.read())
            return counts

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


# --- measuring ------------------------------------------------------------------------


def one_round(row: Variant, payload: Payload) -> None:
    row.enter()
    try:
        row.workflow(payload)  # untimed: what entering left to do
        row.settle()
        gc.collect()
        cpu_started = time.process_time()
        started = time.perf_counter()
        for _ in range(row.workflows):
            row.workflow(payload)
        ran = time.perf_counter()
        row.settle()
        cpu = time.process_time() - cpu_started
    finally:
        row.leave()
    steps = row.workflows * STEPS
    row.wall_us.append((ran - started) / steps * 1e6)
    row.cpu_us.append(cpu / steps * 1e6)


def idle_cpu_ms_per_s(seconds: float = 2.0) -> float:
    """CPU the process spends per second while no tool is called: the background threads
    of every tool set up (DBOS's only while launched), charged to whichever round runs."""
    gc.collect()
    started = time.process_time()
    time.sleep(seconds)
    return (time.process_time() - started) / seconds * 1e3


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _spread(values: list[float], baseline: list[float]) -> tuple[str, str, str]:
    """(median with its interquartile range, min-max, ratio of the medians to the
    baseline's), as printed."""
    if len(values) > 1:
        low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    else:
        low = median = high = values[0]
    ratio = median / statistics.median(baseline)
    return (
        f"{_num(median)} ({_num(low)}–{_num(high)})",
        f"{_num(min(values))}–{_num(max(values))}",
        f"{ratio:.2f}×",
    )


def report(rows: list[Variant]) -> None:
    bare = rows[0]
    cells = {
        row.name: (_spread(row.wall_us, bare.wall_us), _spread(row.cpu_us, bare.cpu_us))
        for row in rows
    }
    print("\nper step, µs: median of the rounds (interquartile range) [min–max] vs the bare span")
    for row in rows:
        (wall, wall_range, wall_ratio), (cpu, cpu_range, cpu_ratio) = cells[row.name]
        print(
            f"  {row.name:44} in the workflow {wall:>24} [{wall_range}] {wall_ratio:>7}"
            f"   CPU {cpu:>24} [{cpu_range}] {cpu_ratio:>7}"
        )
    print(
        "\n| tool | in the workflow, µs/step | vs bare span "
        "| CPU incl. background, µs/step | vs bare span | what it does per step |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        (wall, _, wall_ratio), (cpu, _, cpu_ratio) = cells[row.name]
        print(f"| {row.name} | {wall} | {wall_ratio} | {cpu} | {cpu_ratio} | {row.does} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workflows", type=int, default=100, help="workflows per round")
    parser.add_argument(
        "--dbos-workflows",
        type=int,
        default=5,
        help="workflows per DBOS round (a DBOS step commits to SQLite: milliseconds)",
    )
    parser.add_argument(
        "--idle-s", type=float, default=2.0, help="how long to measure the idle process's CPU"
    )
    args = parser.parse_args()
    started = time.perf_counter()

    tmp = tempfile.mkdtemp(prefix="steptrace-peers-")
    for name in [k for k in os.environ if k.startswith(("STEPTRACE_", "OTEL_"))]:
        del os.environ[name]
    os.environ["STEPTRACE_STORE"] = os.path.join(tmp, "steptrace.db")

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)  # before any tool can install one

    payload = make_payload()
    print(
        f"payload: {len(orjson.dumps(payload))} bytes in and out per step, {STEPS} steps/workflow"
    )
    print(
        f"rounds: {args.rounds} x {args.workflows} workflows "
        f"({args.dbos_workflows} for DBOS), tools in rotating order"
    )
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores; "
        + ", ".join(
            f"{d} {v}"
            for d in ("steptrace", "opentelemetry-sdk", "langfuse", "logfire", "dbos")
            if (v := _version(d)) is not None
        )
    )

    rows = [bare_span(provider, args.workflows), *steptrace_levels(provider, args.workflows)]
    at_exit: list[Callable[[], None]] = []
    sink: Sink | None = None

    def _with_sink() -> list[Variant]:
        nonlocal sink
        _require("langfuse")
        sink = Sink()
        row, shutdown = langfuse_observe(sink.url, args.workflows)
        at_exit.append(shutdown)
        return [row]

    peers: list[tuple[str, Callable[[], list[Variant]]]] = [
        ("langfuse", _with_sink),
        ("logfire", lambda: [logfire_instrument(args.workflows)]),
        ("dbos", lambda: dbos_steps(tmp, args.dbos_workflows)),
    ]

    for name, make in peers:
        try:
            rows.extend(make())
        except Missing:
            print(f"not installed: {name} ({SETUP_HINT})")
        except Unsupported as exc:
            print(f"skipped: {name}: {exc}")

    try:
        for row in rows:  # warm up: imports, stores, caches
            one_round(row, payload)
            row.wall_us.clear()
            row.cpu_us.clear()
        for r in range(args.rounds):
            shift = r % len(rows)
            for row in rows[shift:] + rows[:shift]:
                one_round(row, payload)
        idle = idle_cpu_ms_per_s(args.idle_s)
        report(rows)
        print(
            f"\nidle background CPU of the process (every tool set up, DBOS not launched): "
            f"{idle:.2f} ms per second"
        )
        if sink is not None:
            got = sink.received()
            print(f"Langfuse's sink received {got['requests']} requests, {got['bytes']:,} bytes")
    finally:
        for shutdown in at_exit:
            shutdown()
        if sink is not None:
            sink.stop()
        provider.shutdown()
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--sink"]:
        serve_sink()
    else:
        main()
