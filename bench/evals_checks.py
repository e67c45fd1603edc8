"""Per-step cost of online checks: a step with two checks against the same step without
any, and a bare OpenTelemetry span carrying the same payload (as ``bench.overhead``).

All three run under one SDK TracerProvider with a BatchSpanProcessor and an exporter
that drops everything, in the same process, in interleaved rounds. A round runs a
workflow of 10 steps, each taking and returning ~1 KB of JSON; the per-step figure is
the round's time / (workflows x 10). The steptrace sides write every run to a SQLite
store in a temporary directory and end each round by waiting for the writer thread, so
its background work (redaction, the scores' rows, span export, SQLite) is charged to
them ("writer included"), and the process's CPU time is measured too (all its threads:
what a loaded machine's other processes cost is left out). The checks are cheap
functions (one a bool, one a number
with a rationale): what is measured is what steptrace adds around them. Prints medians
with the interquartile range, and the ratios; exits 0 whatever the figures.

    python -m bench.evals_checks [--rounds 30] [--workflows 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import orjson
from opentelemetry import trace

from bench.overhead import STEPS, make_payload, set_up


def has_ticket(output: dict[str, Any]) -> bool:
    return "ticket_id" in output


def body_length(output: dict[str, Any]) -> tuple[float, str]:
    n = len(output["body"])
    return min(1.0, n / 1000), f"{n} characters"


def spread(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"median {median:7.1f} us/step (IQR {q1:.1f}-{q3:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workflows", type=int, default=200, help="workflows per round")
    args = parser.parse_args()

    provider = set_up()

    import steptrace as st

    payload = make_payload()
    tracer = trace.get_tracer("bench")

    def bare_workflow(value: dict[str, Any]) -> None:
        with tracer.start_as_current_span("workflow"):
            for _ in range(STEPS):
                with tracer.start_as_current_span("step") as span:
                    span.set_attribute("input", orjson.dumps({"value": value}).decode())
                    span.set_attribute("output", orjson.dumps(value).decode())

    @st.step
    def plain_step(value: dict[str, Any]) -> dict[str, Any]:
        return value

    @st.step(checks=[has_ticket, body_length])
    def checked_step(value: dict[str, Any]) -> dict[str, Any]:
        return value

    @st.workflow
    def plain_workflow(value: dict[str, Any]) -> None:
        for _ in range(STEPS):
            plain_step(value)

    @st.workflow
    def checked_workflow(value: dict[str, Any]) -> None:
        for _ in range(STEPS):
            checked_step(value)

    steps = args.workflows * STEPS

    def per_step_us(fn: Any) -> tuple[float, float, float]:
        """(in-workflow us/step, us/step once the writer has caught up, CPU us/step of
        the whole process, writer thread included)."""
        cpu = time.process_time()
        started = time.perf_counter()
        for _ in range(args.workflows):
            fn(payload)
        ran = time.perf_counter()
        st.flush(timeout_s=120)
        settled = time.perf_counter()
        cpu = time.process_time() - cpu
        return (
            (ran - started) / steps * 1e6,
            (settled - started) / steps * 1e6,
            cpu / steps * 1e6,
        )

    for warm in (bare_workflow, plain_workflow, checked_workflow):
        per_step_us(warm)

    sides = {"bare": bare_workflow, "plain": plain_workflow, "checked": checked_workflow}
    ran: dict[str, list[float]] = {name: [] for name in sides}
    settled: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for n in range(args.rounds):
        # Rotate the order, so no side always runs after the same one.
        names = list(sides)[n % 3 :] + list(sides)[: n % 3]
        for name in names:
            in_workflow, caught_up, used = per_step_us(sides[name])
            ran[name].append(in_workflow)
            settled[name].append(caught_up)
            cpu[name].append(used)

    with st.Store.open() as store:
        stored = store.sql("SELECT count(*) AS n FROM scores")[0]["n"]
    med = {name: statistics.median(values) for name, values in ran.items()}
    med_settled = {name: statistics.median(values) for name, values in settled.items()}
    size = len(orjson.dumps(payload))
    print(f"payload: {size} bytes in and out per step, {STEPS} steps/workflow")
    print(f"rounds: {args.rounds} x {args.workflows} workflows each, order rotated")
    print("wall clock, in the workflow:")
    print(f"bare OpenTelemetry span      : {spread(ran['bare'])}")
    print(f"steptrace step, no checks    : {spread(ran['plain'])}")
    print(f"steptrace step, two checks   : {spread(ran['checked'])}")
    print(
        f"checks add                   : {med['checked'] - med['plain']:+.1f} us/step "
        f"(ratio {med['checked'] / med['plain']:.2f}x the step without; "
        f"{med['checked'] / med['bare']:.2f}x a bare span)"
    )
    print("writer included (flushed each round):")
    print(f"  bare OpenTelemetry span    : {spread(settled['bare'])}")
    print(f"  steptrace step, no checks  : {spread(settled['plain'])}")
    print(f"  steptrace step, two checks : {spread(settled['checked'])}")
    print(
        f"  ratio checks / no checks   : {med_settled['checked'] / med_settled['plain']:.2f}x "
        f"({med_settled['checked'] - med_settled['plain']:+.1f} us/step)"
    )
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    print("CPU of the process, writer thread included (other processes' load left out):")
    print(f"  bare OpenTelemetry span    : {spread(cpu['bare'])}")
    print(f"  steptrace step, no checks  : {spread(cpu['plain'])}")
    print(f"  steptrace step, two checks : {spread(cpu['checked'])}")
    print(
        f"  ratio checks / no checks   : {med_cpu['checked'] / med_cpu['plain']:.2f}x "
        f"({med_cpu['checked'] - med_cpu['plain']:+.1f} us/step)"
    )
    print(f"scores stored: {stored:,} (two per checked step)")
    provider.shutdown()


if __name__ == "__main__":
    main()
