"""What acting on recorded runs costs: resuming a durable run, replaying many runs as a
regression test, and the durable steps that make resuming possible.

The workflow: 10 steps on SQLite, the first of which calls a scripted model (answered
from the recording by a replay), each step taking and returning ~150 bytes of JSON.
Each part runs in a fresh interpreter (``--worker``):

(a) **resume against fresh**: a durable run (``@st.workflow(durable=True)``) whose last
    step failed, resumed (``st.resume``: its first 9 steps return their recorded
    outputs, the 10th executes), against the same durable workflow run fresh; in
    interleaved rounds, the median time of one call of each and their ratio.
(b) **regression replay**: ``steptrace.regression.replay_many`` over 1,000 recorded
    runs (each round on a fresh copy of the same store), in runs per second: with no
    OpenTelemetry SDK installed (a Python script or test), and under an SDK provider
    with a batch processor and a dropping exporter (an application, as in
    ``bench/overhead.py``); and ``steptrace replay --workflow W --last N --json`` as a
    whole process (its start included), which installs the SDK as an application does,
    and with ``OTEL_SDK_DISABLED=true``, which keeps it from doing so.
(c) **durable overhead per step**: the 10-step workflow at the default level (the run
    committed before its call returns) and with ``durable=True`` (each step committed
    before it returns), in interleaved rounds: the difference per step.

Parts (a) and (c) run under the SDK provider with a dropping exporter. Medians of the
rounds, with the spread (min–max). Exits 0 whatever the figures (a benchmark, not a
test).

    python -m bench.replay [--rounds 5] [--runs 1000] [--resumes 40] [--workflows 100]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import steptrace as st
from bench.durability import install_provider

STEPS = 10
MODEL = "bench-replay"
FAIL_LAST = {"on": False}
"""While on, the last step of ``durable_ticket`` fails (the run to resume)."""


@st.step
def classify(ticket: dict[str, Any]) -> str:
    messages = [{"role": "user", "content": ticket["text"]}]
    return st.llm.chat(model=f"scripted:{MODEL}", messages=messages).text


@st.step
def enrich(i: int, state: dict[str, Any]) -> dict[str, Any]:
    return {**state, f"s{i}": (state["n"] * 31 + i) % 97}


@st.step
def finish(state: dict[str, Any]) -> dict[str, Any]:
    if FAIL_LAST["on"]:
        raise RuntimeError("the last step fails the first time")
    return {**state, "done": True}


def _body(ticket: dict[str, Any]) -> dict[str, Any]:
    state = {"n": ticket["n"], "label": classify(ticket)}
    for i in range(1, STEPS - 1):
        state = enrich(i, state)
    return finish(state)


@st.workflow(name="bench_ticket")
def ticket(ticket: dict[str, Any]) -> dict[str, Any]:
    return _body(ticket)


@st.workflow(name="bench_ticket_durable", durable=True)
def durable_ticket(ticket: dict[str, Any]) -> dict[str, Any]:
    return _body(ticket)


def _tickets(n: int) -> list[dict[str, Any]]:
    return [{"n": i, "text": f"ticket {i}: please refund order A-{i:05d}"} for i in range(n)]


def _flows() -> Any:
    """This module under its own name, so that the runs record an entry point a
    ``steptrace`` process can import (run as ``-m``, it is ``__main__``)."""
    flows = importlib.import_module("bench.replay")
    st.llm.script(MODEL, lambda messages, **params: "refund")
    return flows


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --- (a) resume ---------------------------------------------------------------------------


def worker_resume(store: str, args: argparse.Namespace) -> dict[str, Any]:
    os.environ["STEPTRACE_STORE"] = store
    provider = install_provider()
    flows = _flows()
    tickets = _tickets(args.rounds * args.resumes + args.resumes)
    flows.FAIL_LAST["on"] = True
    failed = [st.run(flows.durable_ticket, t).run_id for t in tickets]
    flows.FAIL_LAST["on"] = False
    st.flush()
    fresh_ms: list[float] = []
    resume_ms: list[float] = []

    def per_call(calls: Sequence[Callable[[], st.RunResult]]) -> float:
        started = time.perf_counter()
        for call in calls:
            assert call().status == "succeeded"
        return (time.perf_counter() - started) / len(calls) * 1e3

    def resumes(ids: Sequence[str]) -> list[Callable[[], st.RunResult]]:
        return [lambda r=r: st.resume(r, workflow=flows.durable_ticket) for r in ids]

    def fresh(n: int) -> list[Callable[[], st.RunResult]]:
        return [lambda t=t: st.run(flows.durable_ticket, t) for t in tickets[:n]]

    per_call(resumes(failed[: args.resumes]))  # warm up
    per_call(fresh(args.resumes))
    for r in range(1, args.rounds + 1):
        ids = failed[r * args.resumes : (r + 1) * args.resumes]
        resume_ms.append(per_call(resumes(ids)))
        fresh_ms.append(per_call(fresh(args.resumes)))
    with st.Store.open() as s:
        resumed = s.read_runs(failed[args.resumes :])
    assert all(run.status == "succeeded" and run.resume_count == 1 for run in resumed)
    # Each resumed run has its 10 first attempts and what the resume executed.
    executed = {len(run.steps()) - STEPS for run in resumed}
    provider.shutdown()
    return {
        "resume_ms": _spread(resume_ms),
        "fresh_ms": _spread(fresh_ms),
        "ratios": sorted(a / b for a, b in zip(resume_ms, fresh_ms, strict=True)),
        "steps_executed_per_resume": sorted(executed),
    }


# --- (b) regression replay ----------------------------------------------------------------


def worker_record(store: str, args: argparse.Namespace) -> dict[str, Any]:
    """The store the replay rounds copy: ``--runs`` runs of ``ticket``."""
    os.environ["STEPTRACE_STORE"] = store
    flows = _flows()
    started = time.perf_counter()
    for t in _tickets(args.runs):
        st.run(flows.ticket, t)
    assert st.flush(timeout_s=300)
    seconds = time.perf_counter() - started
    st.configure(store=store + ".unused")  # closes the writer
    conn = sqlite3.connect(store)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"runs": args.runs, "record_s": seconds}


def worker_replay(store: str, args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of ``replay_many`` over fresh copies of the recorded store."""
    provider = install_provider() if args.sdk else None
    _flows()
    from steptrace.regression import replay_many

    rates: list[float] = []
    cpu_ms: list[float] = []
    for r in range(args.rounds + 1):  # the first round warms up
        copy = f"{store}.{'sdk' if args.sdk else 'api'}.{r}"
        shutil.copyfile(store, copy)
        st.configure(store=copy)
        wall, cpu = time.perf_counter(), time.process_time()
        report = replay_many("bench_ticket", last=args.runs)  # by its recorded entry point
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        summary = report.summary()
        assert summary["runs"] == args.runs and report.ok, summary
        if r:
            rates.append(args.runs / wall)
            cpu_ms.append(cpu / args.runs * 1e3)
        st.configure(store=store + ".unused")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(copy + suffix):
                os.remove(copy + suffix)
    if provider is not None:
        provider.shutdown()
    return {"runs_per_s": _spread(rates), "cpu_ms_per_run": _spread(cpu_ms)}


def cli_replay(store: str, args: argparse.Namespace, sdk: bool = True) -> dict[str, Any]:
    """``steptrace replay --workflow bench_ticket --last N --json`` as a process, over
    fresh copies of the store; and with ``--last 1``, what a process costs anyway.
    ``sdk=False``: with ``OTEL_SDK_DISABLED=true`` (no spans made for OpenTelemetry)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    if not sdk:
        env["OTEL_SDK_DISABLED"] = "true"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH", "")) if p
    )  # bench.replay, the recorded entry point

    def once(last: int, copy: str) -> float:
        shutil.copyfile(store, copy)
        command = [sys.executable, "-m", "steptrace", "--store", copy, "replay"]
        command += ["--workflow", "bench_ticket", "--last", str(last), "--json"]
        started = time.perf_counter()
        proc = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)["summary"]
        assert summary["identical"] == summary["runs"] == last, summary
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(copy + suffix):
                os.remove(copy + suffix)
        return seconds

    once(1, store + ".cli")  # warm up (the interpreter's caches)
    whole = [once(args.runs, store + ".cli") for _ in range(args.cli_rounds)]
    start = [once(1, store + ".cli") for _ in range(args.cli_rounds)]
    return {
        "runs_per_s": _spread([args.runs / s for s in whole]),
        "process_s": _spread(whole),
        "one_run_process_s": _spread(start),
        "runs_per_s_after_start": _spread(
            [args.runs / (s - statistics.median(start)) for s in whole]
        ),
    }


# --- (c) durable steps --------------------------------------------------------------------


def worker_durable(store: str, args: argparse.Namespace) -> dict[str, Any]:
    os.environ["STEPTRACE_STORE"] = store
    provider = install_provider()
    flows = _flows()
    tickets = _tickets(args.workflows)

    def per_step_us(wf: Callable[..., Any]) -> float:
        started = time.perf_counter()
        for t in tickets:
            wf(t)
        seconds = time.perf_counter() - started
        st.flush(timeout_s=300)  # nothing of one round's spills into the next
        return seconds / (len(tickets) * STEPS) * 1e6

    per_step_us(flows.ticket)
    per_step_us(flows.durable_ticket)
    default: list[float] = []
    durable: list[float] = []
    for _ in range(args.rounds * 2):
        default.append(per_step_us(flows.ticket))
        durable.append(per_step_us(flows.durable_ticket))
    provider.shutdown()
    return {
        "default_us": _spread(default),
        "durable_us": _spread(durable),
        "overhead_us": _spread([d - r for d, r in zip(durable, default, strict=True)]),
    }


# --- the driver ---------------------------------------------------------------------------


def worker_bare(store: str, args: argparse.Namespace) -> dict[str, Any]:
    """The machine's speed that day: a bare OpenTelemetry span carrying ~1 KB in and out
    (``bench/overhead.py``'s reference), in us."""
    import orjson
    from opentelemetry import trace

    from bench.overhead import make_payload

    provider = install_provider()
    tracer = trace.get_tracer("bench")
    payload = make_payload()

    def rounds() -> float:
        started = time.perf_counter()
        for _ in range(2000):
            with tracer.start_as_current_span("step") as span:
                span.set_attribute("input", orjson.dumps({"value": payload}).decode())
                span.set_attribute("output", orjson.dumps(payload).decode())
        return (time.perf_counter() - started) / 2000 * 1e6

    rounds()
    spans = [rounds() for _ in range(args.rounds)]
    provider.shutdown()
    return {"bare_span_us": _spread(spans)}


WORKERS = {
    "bare": worker_bare,
    "resume": worker_resume,
    "record": worker_record,
    "replay": worker_replay,
    "durable": worker_durable,
}


def _in_worker(part: str, store: str, argv: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.replay", "--worker", part, store, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench.replay worker {part} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _fmt(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _options(parser)
    args = parser.parse_args()
    argv = [
        f"--rounds={args.rounds}",
        f"--runs={args.runs}",
        f"--resumes={args.resumes}",
        f"--workflows={args.workflows}",
        f"--cli-rounds={args.cli_rounds}",
    ]
    started = time.perf_counter()
    print(
        f"{STEPS}-step workflow (1 scripted LLM call), SQLite; {args.rounds} rounds; "
        f"(a) {args.resumes} calls a round; (b) {args.runs:,} runs; (c) {args.workflows} "
        "workflows a round; medians (min–max)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="steptrace-replay-") as tmp:
        bare = _in_worker("bare", os.path.join(tmp, "unused.db"), argv)
        print(
            f"(the machine: a bare OpenTelemetry span with ~1 KB in and out, "
            f"{_fmt(bare['bare_span_us'])} us)",
            flush=True,
        )
        a = _in_worker("resume", os.path.join(tmp, "resume.db"), argv)
        ratio = statistics.median(a["ratios"])
        print("(a) resuming a durable run whose first 9 steps are recorded, against running it")
        print(f"    resume: {_fmt(a['resume_ms'], 2)} ms   fresh: {_fmt(a['fresh_ms'], 2)} ms")
        print(
            f"    ratio:  {ratio:.2f}x ({min(a['ratios']):.2f}–{max(a['ratios']):.2f}); "
            f"steps a resume executed: {a['steps_executed_per_resume']}",
            flush=True,
        )
        base = os.path.join(tmp, "traffic.db")
        recorded = _in_worker("record", base, argv)
        print(
            f"(b) regression replay of {recorded['runs']:,} recorded runs "
            f"(recorded in {recorded['record_s']:.1f} s)"
        )
        in_process = (
            ("replay_many, no OpenTelemetry SDK", argv),
            ("replay_many, SDK + dropping export", [*argv, "--sdk"]),
        )
        for label, worker_argv in in_process:
            replayed = _in_worker("replay", base, worker_argv)
            print(
                f"    {label:35}: {_fmt(replayed['runs_per_s'], 0)} runs/s, "
                f"{_fmt(replayed['cpu_ms_per_run'], 2)} ms CPU a run",
                flush=True,
            )
        processes = (("steptrace replay (a process)", True), ("  OTEL_SDK_DISABLED=true", False))
        for label, with_sdk in processes:
            cli = cli_replay(base, args, with_sdk)
            print(
                f"    {label:35}: {_fmt(cli['runs_per_s'], 0)} runs/s "
                f"({_fmt(cli['process_s'], 2)} s a process; --last 1: "
                f"{_fmt(cli['one_run_process_s'], 2)} s; after that: "
                f"{_fmt(cli['runs_per_s_after_start'], 0)} runs/s)",
                flush=True,
            )
        c = _in_worker("durable", os.path.join(tmp, "durable.db"), argv)
        print("(c) durable=True against the default level, per step (in the workflow)")
        print(
            f"    default: {_fmt(c['default_us'])} us   durable: {_fmt(c['durable_us'])} us   "
            f"overhead: {_fmt(c['overhead_us'])} us a step"
        )
    print(f"\n({time.perf_counter() - started:.0f} s)")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each measure")
    parser.add_argument("--runs", type=int, default=1000, help="(b) runs replayed a round")
    parser.add_argument("--resumes", type=int, default=40, help="(a) calls a round")
    parser.add_argument("--workflows", type=int, default=100, help="(c) workflows a round")
    parser.add_argument("--cli-rounds", type=int, default=3, help="(b) CLI processes")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        part, store = sys.argv[2], sys.argv[3]
        worker_parser = argparse.ArgumentParser()
        _options(worker_parser)
        worker_parser.add_argument("--sdk", action="store_true")
        print(json.dumps(WORKERS[part](store, worker_parser.parse_args(sys.argv[4:]))), flush=True)
    else:
        main()
