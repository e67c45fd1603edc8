"""Per-step cost of steptrace against a bare OpenTelemetry span carrying the same payload.

A round runs a workflow of 10 steps, each taking and returning ~1 KB of JSON, 200 times
(``--workflows``); the per-step figure is the round's time / (workflows x 10). Two
figures per round:

- **in the workflow**: wall time from the first call to the last return;
- **CPU, writer included**: the process's CPU time (every thread: the workflow's, the
  writer's, the span processor's) from the first call until everything is written
  (``st.flush()``; for the bare span, ``force_flush()`` of its provider).

The baseline is a bare OpenTelemetry SDK span (a ``TracerProvider`` with a
``BatchSpanProcessor`` and an exporter that drops everything) with the payload as two
attributes, serialised the way an instrumentation would. steptrace writes every run to
a SQLite file in a temporary directory, at each durability level (``off``: written in
the background; ``run``, the default: committed before the workflow returns; ``step``:
each step committed before it returns), in two set-ups measured in one process:

1. **no provider installed** (a library user without OpenTelemetry set up): the bare
   span uses its provider directly, not installed globally, so steptrace sees none;
2. **provider installed** (``trace.set_tracer_provider``): steptrace's spans go to it.

Rounds of each set-up are interleaved with the baseline's; medians with the spread
(min–max) are printed, and each steptrace row's ratio to the baseline's median.
Exits 0 whatever the figures (a benchmark, not a test).

    python -m bench.overhead [--rounds 15] [--workflows 200] [--no-redact]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

STEPS = 10
LEVELS = ("off", "run", "step")


class DropExporter(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def make_payload() -> dict[str, Any]:
    payload = {
        "ticket_id": "T-10293",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
        "subject": "Charged twice for my order",
        "body": "Hello, I was charged twice for order A-7731 last Tuesday. " * 7,
        "tags": ["billing", "duplicate-charge", "priority"],
        "history": [{"at": f"2026-11-{d:02d}", "event": "note", "n": d} for d in range(1, 8)],
        "scores": [0.12, 0.55, 0.91, 0.33],
    }
    size = len(orjson.dumps(payload))
    assert 900 <= size <= 1300, size
    return payload


def set_up() -> TracerProvider:
    """What a benchmark runs under: a SQLite store in a temporary directory and an SDK
    TracerProvider whose BatchSpanProcessor drops every span (its provider, installed)."""
    provider = new_provider()
    use_temporary_store()
    trace.set_tracer_provider(provider)
    return provider


def new_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    return provider


def use_temporary_store() -> str:
    tmp = tempfile.mkdtemp(prefix="steptrace-bench-")
    os.environ["STEPTRACE_STORE"] = path = os.path.join(tmp, "bench.db")
    return path


class Round:
    """One measured round: (in-workflow wall us/step, CPU us/step writer included)."""

    def __init__(self, workflows: int, payload: dict[str, Any]) -> None:
        self.workflows = workflows
        self.payload = payload

    def __call__(self, fn: Callable[[Any], Any], settle: Callable[[], Any]) -> tuple[float, float]:
        steps = self.workflows * STEPS
        cpu = time.process_time()
        started = time.perf_counter()
        for _ in range(self.workflows):
            fn(self.payload)
        ran = time.perf_counter()
        settle()
        return (ran - started) / steps * 1e6, (time.process_time() - cpu) / steps * 1e6


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.0f}–{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workflows", type=int, default=200, help="workflows per round")
    parser.add_argument(
        "--no-redact", action="store_true", help="measure with redaction off (it is on by default)"
    )
    args = parser.parse_args()

    provider = new_provider()
    use_temporary_store()

    import steptrace as st

    if args.no_redact:
        st.configure(redact=False)
    payload = make_payload()
    tracer = provider.get_tracer("bench")

    def bare_step(value: dict[str, Any]) -> dict[str, Any]:
        with tracer.start_as_current_span("step") as span:
            span.set_attribute("input", orjson.dumps({"value": value}).decode())
            result = value
            span.set_attribute("output", orjson.dumps(result).decode())
        return result

    def bare_workflow(value: dict[str, Any]) -> None:
        with tracer.start_as_current_span("workflow"):
            for _ in range(STEPS):
                bare_step(value)

    @st.step
    def traced_step(value: dict[str, Any]) -> dict[str, Any]:
        return value

    workflows: dict[str, Callable[[Any], Any]] = {}
    for level in LEVELS:

        def body(value: dict[str, Any]) -> None:
            for _ in range(STEPS):
                traced_step(value)

        workflows[level] = st.workflow(name=f"bench_{level}", durable=level)(body)

    measure = Round(args.workflows, payload)

    def settle_bare() -> None:
        provider.force_flush()

    def settle_traced() -> None:
        st.flush(timeout_s=120)

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for setup in ("no provider", "provider installed"):
        if setup == "provider installed":
            trace.set_tracer_provider(provider)
        # Warm up (imports, the store's creation, caches).
        measure(bare_workflow, settle_bare)
        for level in LEVELS:
            measure(workflows[level], settle_traced)
        for _ in range(args.rounds):
            results.setdefault((setup, "bare"), []).append(measure(bare_workflow, settle_bare))
            for level in LEVELS:
                results.setdefault((setup, level), []).append(
                    measure(workflows[level], settle_traced)
                )

    with st.Store.open() as store:
        stored_runs = store.count_runs()
    size = len(orjson.dumps(payload))
    print(f"payload: {size} bytes in and out per step, {STEPS} steps a workflow")
    print(f"rounds: {args.rounds} x {args.workflows} workflows of each, interleaved")
    print(f"redaction: {'off' if args.no_redact else 'on (the default)'}")
    print("medians (min–max), us per step:")
    print()
    print("| set-up | recording | in the workflow | CPU, writer included | CPU vs bare span |")
    print("|---|---|---|---|---|")
    for setup in ("no provider", "provider installed"):
        bare = results[(setup, "bare")]
        bare_cpu = statistics.median(r[1] for r in bare)
        print(
            f"| {setup} | bare OpenTelemetry span | {_med([r[0] for r in bare])} "
            f"| {_med([r[1] for r in bare])} | 1.00x |"
        )
        for level in LEVELS:
            rows = results[(setup, level)]
            cpu = statistics.median(r[1] for r in rows)
            print(
                f"| {setup} | steptrace, durable={level!r} | {_med([r[0] for r in rows])} "
                f"| {_med([r[1] for r in rows])} | {cpu / bare_cpu:.2f}x |"
            )
    print()
    print(f"runs stored: {stored_runs} (every one: nothing dropped)")
    if not args.no_redact:
        bare_cpu = statistics.median(r[1] for r in results[("provider installed", "bare")])
        redaction_costs(payload, bare_cpu)
    provider.shutdown()


def redaction_costs(payload: dict[str, Any], bare_us: float) -> None:
    """What redaction itself costs, per value, on the writer's batch path (the payload
    as is, and with a secret in it) and on the caller's path (a log message)."""
    from steptrace.record import redact_text, redact_values, to_json

    clean = to_json({"value": payload})
    dirty = to_json({"value": {**payload, "api_key": "sk-" + "x" * 40}})
    message = "charged twice for order A-7731, customer ada@example.com, tier gold " * 2

    def per_item_us(fn: Any, n: int) -> float:
        runs = []
        for _ in range(15):
            started = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - started) / n * 1e6)
        return statistics.median(runs)

    batch = 500
    clean_us = per_item_us(lambda: redact_values([clean] * batch), batch)
    dirty_us = per_item_us(lambda: redact_values([dirty] * batch), batch)
    text_us = per_item_us(lambda: [redact_text(message) for _ in range(batch)], batch)
    print(
        f"redaction, writer batch : median {clean_us:5.2f} us/value without a secret "
        f"({clean_us / bare_us:.1%} of a bare span), {dirty_us:5.1f} us/value with one"
    )
    print(f"redaction, log message  : median {text_us:5.2f} us/message (on the caller's thread)")


if __name__ == "__main__":
    main()
