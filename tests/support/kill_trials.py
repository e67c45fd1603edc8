"""Kill trials: a real workload process killed by a real signal at a random moment, then
the store it wrote to, checked for what it must hold. Plain functions, no pytest: the
kill tests (``test_kill.py``) and the long stress run (``scripts/stress.py``) share them.

The workload (``WORKLOAD``, written to a file and run with ``sys.executable``) loops
calling a workflow of a few steps (random small sleeps, log records, a scripted LLM
call, a tool) and prints ``run <run_id>`` on stdout, flushed, after each call returns;
in the ``durable`` variant it also prints ``step <run_id> <name>`` after each
``@st.step`` returns (the tool is not a step). What was printed had returned to the
application, so the contract says it is in the store: ``run_trial`` kills the
process, reads every printed line, opens the store with ``steptrace.Store.open`` (as
any reader would) and lists what is missing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import steptrace as st
from tests.support.helpers import reader_url

SPANS_PER_RUN = 5
"""parse, think, the LLM call inside think, the lookup tool, finish."""
LOGS_PER_RUN = 2
STEP_NAMES = ("parse", "think", "lookup", "finish")

MAX_EXIT_S = 5.0
"""How long a process may take to end after the signal: SIGTERM writes what is
recorded, as a normal exit does, and that must not stall (``docker stop`` waits 10 s
before it sends SIGKILL)."""

VARIANTS = ("plain", "durable", "threads", "handler")
"""plain: one thread; durable: ``@st.workflow(durable=True)``; threads: four threads
calling the workflow at once; handler: the application installed its own SIGTERM
handler, which raises ``SystemExit(3)``."""

WORKLOAD = """
import logging, random, signal, sys, threading, time

variant = sys.argv[1]
random.seed(int(sys.argv[2]))

import steptrace as st

if variant == "handler":
    def on_sigterm(signum, frame):
        raise SystemExit(3)

    signal.signal(signal.SIGTERM, on_sigterm)

log = logging.getLogger("workload")
log.addHandler(logging.NullHandler())  # records go to steptrace, not to stderr
st.llm.script("kill", ["noted"])
out = threading.Lock()
durable = variant == "durable"


def say(line):
    with out:
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()


def done(name):
    if durable:
        say(f"step {st.current_run_id()} {name}")


@st.step
def parse(i):
    log.warning("parsing item %d", i)
    return {"i": i, "text": f"item {i}"}


@st.step
def think(doc):
    time.sleep(random.random() * 0.004)
    reply = st.llm.chat(model="scripted:kill", messages=[{"role": "user", "content": doc["text"]}])
    return reply.text


@st.tool
def lookup(i):
    return {"order": f"A{i:05d}"}


@st.step
def finish(doc, note, order):
    if random.random() < 0.3:
        time.sleep(random.random() * 0.01)
    log.warning("finished item %d", doc["i"])
    return {"i": doc["i"], "note": note, **order}


def body(i):
    doc = parse(i)
    done("parse")
    note = think(doc)
    done("think")
    order = lookup(i)
    result = finish(doc, note, order)
    done("finish")
    return {"run_id": st.current_run_id(), **result}


workflow = st.workflow(durable=True)(body) if durable else st.workflow(body)


def loop(start, stride):
    i = start
    while True:
        say(f"run {workflow(i)['run_id']}")
        i += stride


if variant == "threads":
    threads = [threading.Thread(target=loop, args=(k, 4)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
else:
    loop(0, 1)
"""


@dataclass
class TrialResult:
    """What one kill trial left behind. ``ok`` when nothing is missing."""

    store_url: str
    engine: str
    variant: str
    signal_name: str
    exit_status: int | None
    expected_status: int
    printed_runs: list[str]
    stored_runs: int
    statuses: dict[str, int]
    missing: list[str] = field(default_factory=list)
    """Printed run ids not stored as ``succeeded``."""
    incomplete: list[str] = field(default_factory=list)
    """Succeeded runs without exactly their spans and log records."""
    left_running: list[str] = field(default_factory=list)
    bad_status: list[str] = field(default_factory=list)
    """Runs whose status no run may have after this trial (e.g. ``failed`` after SIGKILL)."""
    missing_steps: list[str] = field(default_factory=list)
    """``run_id/name`` of steps printed after they returned (durable) but not stored."""
    duplicate_spans: int = 0
    exit_s: float | None = None
    """From the signal to the end of the process."""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.exit_status == self.expected_status
            and self.exit_s is not None
            and self.exit_s <= MAX_EXIT_S
            and not self.missing
            and not self.incomplete
            and not self.left_running
            and not self.bad_status
            and not self.missing_steps
            and self.duplicate_spans == 0
        )

    def explain(self) -> str:
        return (
            f"{self.engine}/{self.variant}/{self.signal_name}: exit status {self.exit_status} "
            f"(expected {self.expected_status}) {_seconds(self.exit_s)} after the signal "
            f"(at most {MAX_EXIT_S} s); {len(self.printed_runs)} runs printed, "
            f"{self.stored_runs} stored {self.statuses}; missing {self.missing[:5]} "
            f"({len(self.missing)}); incomplete {self.incomplete[:5]} ({len(self.incomplete)}); "
            f"left running {self.left_running[:5]}; bad status {self.bad_status[:5]}; "
            f"missing steps {self.missing_steps[:5]} ({len(self.missing_steps)}); "
            f"duplicate spans {self.duplicate_spans}\nstderr: {self.stderr[-3000:]}"
        )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def workload_env(store_url: str, spill_dir: Path) -> dict[str, str]:
    """A small, explicit environment: the store, the spill directory, ``PATH``, and the
    ``steptrace`` this process imported (so a worktree's ``src`` is the one tested)."""
    src = str(Path(st.__file__).resolve().parents[1])
    return {
        "STEPTRACE_STORE": store_url,
        "STEPTRACE_SPILL_DIR": str(spill_dir),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": src,
    }


def _read_lines(stream: Any, into: list[str], first: threading.Event) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))
        if line.startswith("run "):
            first.set()
    first.set()  # EOF: the process ended before its first run


def run_trial(
    workdir: Path,
    store_url: str,
    *,
    engine: str,
    variant: str,
    sig: signal.Signals,
    rng: random.Random,
    max_delay_s: float = 0.4,
) -> TrialResult:
    """Start the workload, wait for its first finished run, let it go on for a random
    0..``max_delay_s``, send ``sig``, wait for the process to end, then check the store.
    ``workdir`` must be empty (the script, the spill directory and, for SQLite, the
    store live there)."""
    assert variant in VARIANTS
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "workload.py"
    script.write_text(WORKLOAD)
    env = workload_env(store_url, workdir / "spill")
    lines: list[str] = []
    errors: list[str] = []
    first = threading.Event()
    exit_s: float | None = None
    with subprocess.Popen(
        [sys.executable, str(script), variant, str(rng.randrange(1 << 30))],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines, first))
        err_reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()))
        reader.start()
        err_reader.start()
        try:
            if not first.wait(30.0):
                errors.append("[the workload printed no run in 30 s]\n")
            time.sleep(rng.uniform(0.0, max_delay_s))
            signalled = time.monotonic()
            if proc.poll() is None:
                proc.send_signal(sig)
            try:
                proc.wait(timeout=20.0)
                exit_s = time.monotonic() - signalled
            except subprocess.TimeoutExpired:
                errors.append(f"[the workload did not end within 20 s of {sig.name}: killed]\n")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10.0)
            reader.join(10.0)
            err_reader.join(10.0)
    expected_status = 3 if variant == "handler" else -int(sig)
    result = check_store(
        store_url,
        lines,
        spill_dir=workdir / "spill",
        engine=engine,
        variant=variant,
        sig=sig,
        exit_status=proc.returncode,
        expected_status=expected_status,
    )
    result.stderr = "".join(errors)
    result.exit_s = exit_s
    return result


def check_store(
    store_url: str,
    lines: list[str],
    *,
    spill_dir: Path,
    engine: str,
    variant: str,
    sig: signal.Signals,
    exit_status: int | None,
    expected_status: int,
) -> TrialResult:
    """Compare what the workload printed with what ``Store.open(url)`` shows, opened as
    the next steptrace process on that machine would open it (with the same spill
    directory, so what the killed process had spilled is written to the store first)."""
    printed = [line.split()[1] for line in lines if line.startswith("run ")]
    printed_steps = {
        (parts[1], parts[2]) for parts in (line.split() for line in lines) if parts[0] == "step"
    }
    saved = os.environ.get("STEPTRACE_SPILL_DIR")
    os.environ["STEPTRACE_SPILL_DIR"] = str(spill_dir)
    try:
        store = st.Store.open(store_url)
    finally:
        if saved is None:
            os.environ.pop("STEPTRACE_SPILL_DIR", None)
        else:
            os.environ["STEPTRACE_SPILL_DIR"] = saved
    # Store.sql refuses a superuser: the counts are read as a role that only reads
    with store, st.Store.open(reader_url(store_url)) as reader:
        runs = {r.run_id: r for r in store.runs(last=10_000_000)}
        spans = Counter[str]()
        for row in reader.sql("SELECT run_id, count(*) AS n FROM spans GROUP BY run_id"):
            spans[str(row["run_id"])] = int(row["n"])
        logs = Counter[str]()
        for row in reader.sql("SELECT run_id, count(*) AS n FROM logs GROUP BY run_id"):
            logs[str(row["run_id"])] = int(row["n"])
        dup = reader.sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")[0]
        stored_steps = {
            (str(r["run_id"]), str(r["name"]))
            for r in reader.sql("SELECT run_id, name FROM spans WHERE status = 'succeeded'")
        }
    allowed = {"succeeded", "interrupted"} | ({"failed"} if variant == "handler" else set())
    result = TrialResult(
        store_url=store_url,
        engine=engine,
        variant=variant,
        signal_name=sig.name,
        exit_status=exit_status,
        expected_status=expected_status,
        printed_runs=printed,
        stored_runs=len(runs),
        statuses=dict(Counter(r.status for r in runs.values())),
        duplicate_spans=int(dup["n"]) - int(dup["d"]),
    )
    for run_id in printed:
        run = runs.get(run_id)
        if run is None or run.status != "succeeded":
            result.missing.append(run_id)
    for run_id, run in runs.items():
        if run.status == "running":
            result.left_running.append(run_id)
        elif run.status not in allowed:
            result.bad_status.append(f"{run_id}:{run.status}")
        if run.status == "succeeded" and (
            spans[run_id] != SPANS_PER_RUN or logs[run_id] != LOGS_PER_RUN
        ):
            result.incomplete.append(f"{run_id}: {spans[run_id]} spans, {logs[run_id]} logs")
    for run_id, name in sorted(printed_steps - stored_steps):
        result.missing_steps.append(f"{run_id}/{name}")
    for run_id in {r for r, _ in printed_steps} - set(printed):
        run = runs.get(run_id)
        if run is None:  # a durable run that started steps is in the store at once
            result.missing.append(run_id)
    return result


def trials_from_env(default: int = 3) -> int:
    """How many trials each kill test runs: ``STEPTRACE_KILL_TRIALS`` (default 3)."""
    return int(os.environ.get("STEPTRACE_KILL_TRIALS", default))


def cli_statuses(store_url: str, workdir: Path) -> dict[str, str]:
    """``steptrace runs --json`` run as its own process: run id -> status."""
    import json

    env = workload_env(store_url, workdir / "cli-spill")
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", "runs", "--json", "--last", "1000000"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {r["run_id"]: r["status"] for r in json.loads(proc.stdout)}
