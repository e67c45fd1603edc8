"""Per-step cost of steptrace against a bare OpenTelemetry span carrying the same payload.

Both sides run under one SDK TracerProvider with a BatchSpanProcessor and an
exporter that drops everything, in the same process, in interleaved rounds. A
round runs a workflow of 10 steps, each taking and returning ~1 KB of JSON;
the per-step figure is the round's time / (workflows x 10). steptrace also
writes every run to a SQLite store in a temporary directory; each steptrace
round ends by waiting for its writer thread, so all of its background work
(redaction, span export, SQLite) is charged to it. Prints medians and the
ratio; exits 0 whatever the figures (a benchmark, not a test).

    python -m bench.overhead [--rounds 30] [--workflows 200] [--no-redact]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

STEPS = 10


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
    tmp = tempfile.mkdtemp(prefix="steptrace-bench-")
    os.environ["STEPTRACE_STORE"] = os.path.join(tmp, "bench.db")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)
    return provider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workflows", type=int, default=200, help="workflows per round")
    parser.add_argument(
        "--no-redact", action="store_true", help="measure with redaction off (it is on by default)"
    )
    args = parser.parse_args()

    provider = set_up()

    import steptrace as st

    if args.no_redact:
        st.configure(redact=False)
    payload = make_payload()
    tracer = trace.get_tracer("bench")

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

    @st.workflow
    def traced_workflow(value: dict[str, Any]) -> None:
        for _ in range(STEPS):
            traced_step(value)

    steps = args.workflows * STEPS

    def per_step_us(fn: Any) -> tuple[float, float]:
        """(in-workflow us/step, us/step once steptrace's writer has caught up)."""
        started = time.perf_counter()
        for _ in range(args.workflows):
            fn(payload)
        ran = time.perf_counter()
        st.flush(timeout_s=120)
        settled = time.perf_counter()
        return (ran - started) / steps * 1e6, (settled - started) / steps * 1e6

    # Warm up both (imports, store creation, caches).
    per_step_us(bare_workflow)
    per_step_us(traced_workflow)
    st.flush()

    bare: list[float] = []
    traced: list[float] = []
    sustained: list[float] = []
    for _ in range(args.rounds):
        bare.append(per_step_us(bare_workflow)[0])
        # Each steptrace round waits for its writer thread, so none of its background
        # work (redaction, span export, SQLite) spills into the next bare round.
        in_workflow, caught_up = per_step_us(traced_workflow)
        traced.append(in_workflow)
        sustained.append(caught_up)

    with st.Store.open() as store:
        stored_runs = len(store.runs(last=10**9))
    bare_med = statistics.median(bare)
    traced_med = statistics.median(traced)
    sustained_med = statistics.median(sustained)
    size = len(orjson.dumps(payload))
    print(f"payload: {size} bytes in and out per step, {STEPS} steps/workflow")
    print(f"rounds: {args.rounds} x {args.workflows} workflows each")
    print(f"redaction: {'off' if args.no_redact else 'on (the default)'}")
    print(f"bare OpenTelemetry span : median {bare_med:7.1f} us/step")
    print(f"steptrace step          : median {traced_med:7.1f} us/step (in the workflow)")
    print(f"ratio                   : {traced_med / bare_med:.2f}x  (target <= 1.25x)")
    print(
        f"sustained, writer included: median {sustained_med:7.1f} us/step "
        f"({sustained_med / bare_med:.2f}x; ~{1e6 / sustained_med:,.0f} steps/s; "
        "the background thread redacts, exports and commits to SQLite)"
    )
    print(f"runs stored: {stored_runs} (all of them: nothing dropped)")
    if not args.no_redact:
        redaction_costs(payload, bare_med)
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
