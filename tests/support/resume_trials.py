"""Resume trials: durable runs in real processes killed by SIGKILL, then resumed, and the
side effects of their steps compared with what the store had committed when the process
died. Plain functions, no pytest: the recovery tests (``test_recovery.py``) and the
long stress run (``scripts/stress.py``) share them.

The workflows are ``tests.support.recovery_flows``: five durable steps, each appending
``NAME PID`` to the run's side-effect file before it returns. A trial starts a child
process running one such run, or a few on threads (steps sleeping a random 0..30 ms
each), waits until they have started, lets them go on for a random 0..``max_delay_s``,
and kills it with SIGKILL: the signal lands before, inside or after a step's side effect, during a
commit, or after the run ended. Then, before anything is resumed, the store is read as
the next process would (the sweep marks the run ``interrupted``; the spill journals
left behind are written first): the steps with a succeeded record are those committed
at the kill. After the recovery, ``check`` holds, run by run:

- the run succeeded (resumed once, or not at all when it had ended before the kill);
- no committed step executed again: the recoverer's side effects are exactly the steps
  without a record, in order; the killed process's are the committed steps, plus at
  most the one step it was inside of (executed, not yet committed: that one step, and
  only it, executed twice);
- every step has exactly one succeeded record.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import steptrace as st
from tests.support.kill_trials import workload_env
from tests.support.recovery_flows import STEPS

ROOT = Path(__file__).resolve().parents[2]
FLOWS = "from tests.support.recovery_flows import main; main()"
ENTRY_POINTS = {
    "sync": "tests.support.recovery_flows:counted",
    "async": "tests.support.recovery_flows:counted_async",
}


def flow_env(store_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process or a recoverer: ``kill_trials``'s (the store,
    the spill directory, the steptrace under test) with this repository on
    ``PYTHONPATH`` (the workflows' module) and the side-effect directory."""
    env = workload_env(store_url, workdir / "spill")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(ROOT)])
    env["RECOVERY_FLOW_DIR"] = str(workdir / "effects")
    env.update(extra)
    return env


def prepare(workdir: Path) -> None:
    (workdir / "effects").mkdir(parents=True, exist_ok=True)


def side_effects(workdir: Path, run_id: str) -> list[tuple[str, int]]:
    """The run's side effects: (step, pid of the process that executed it), in order."""
    path = workdir / "effects" / run_id
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(name, int(pid)) for name, pid in (line.split() for line in lines)]


def read_store(store_url: str, workdir: Path, run_ids: Sequence[str]) -> dict[str, st.RunRecord]:
    """The runs as the next process opening the store sees them: the spill journals of the
    dead writers written to it first (they share ``workdir/spill``), dead owners' runs
    marked interrupted."""
    saved = os.environ.get("STEPTRACE_SPILL_DIR")
    os.environ["STEPTRACE_SPILL_DIR"] = str(workdir / "spill")
    try:
        with st.Store.open(store_url) as store:
            found = {}
            for run_id in run_ids:
                with contextlib.suppress(st.RunNotFound):
                    found[run_id] = store.run(run_id)
            return found
    finally:
        if saved is None:
            os.environ.pop("STEPTRACE_SPILL_DIR", None)
        else:
            os.environ["STEPTRACE_SPILL_DIR"] = saved


def committed_steps(record: st.RunRecord) -> list[str]:
    """The steps of ``record`` with a succeeded attempt, in start order."""
    return [s.name for s in record.steps() if s.status == "succeeded"]


@dataclass
class Killed:
    """One child process killed by SIGKILL, and what its run had committed then."""

    run_id: str | None
    kind: str
    pid: int
    delay_s: float
    exit_status: int | None
    status_at_kill: str | None = None
    committed: list[str] = field(default_factory=list)
    stderr: str = ""


def start_flows(workdir: Path, env: dict[str, str], kind: str, runs: int) -> subprocess.Popen[str]:
    """A child process running ``runs`` runs of the ``kind`` workflow on as many threads
    (``recovery_flows.main``), its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-c", FLOWS, kind, str(runs)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_one(
    proc: subprocess.Popen[str], kind: str, runs: int, delay_s: float, into: list[Killed]
) -> None:
    assert proc.stdout is not None
    run_ids = []
    while len(run_ids) < runs:
        line = proc.stdout.readline()  # "started RUN_ID": the run is in the store
        if not line:
            break
        if line.startswith("started "):
            run_ids.append(line.split()[1])
    if run_ids:
        time.sleep(delay_s)
    proc.kill()
    _, err = proc.communicate(timeout=30)
    for run_id in run_ids or [None]:
        into.append(Killed(run_id, kind, proc.pid, delay_s, proc.returncode, stderr=err))


def kill_children(
    workdir: Path,
    store_url: str,
    kinds: Sequence[str],
    rng: random.Random,
    *,
    runs_per_child: int = 1,
    max_delay_s: float = 0.1,
    pause_s: float = 0.03,
) -> list[Killed]:
    """Start a child process per entry of ``kinds`` (``sync``/``async``), all at once,
    each running ``runs_per_child`` durable runs on as many threads; kill each with
    SIGKILL a random 0..``max_delay_s`` after its runs started (each run somewhere else
    by then: the steps sleep at random); then read what each run had committed."""
    prepare(workdir)
    env = flow_env(store_url, workdir, RECOVERY_FLOW_PAUSE_S=str(pause_s))
    killed: list[Killed] = []
    threads = []
    for kind in kinds:
        proc = start_flows(workdir, env, kind, runs_per_child)
        delay_s = rng.uniform(0.0, max_delay_s)
        thread = threading.Thread(
            target=_kill_one, args=(proc, kind, runs_per_child, delay_s, killed)
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(60)
    records = read_store(store_url, workdir, [k.run_id for k in killed if k.run_id])
    for k in killed:
        record = records.get(k.run_id or "")
        if record is not None:
            k.status_at_kill = record.status
            k.committed = committed_steps(record)
    return killed


def check(workdir: Path, store_url: str, killed: Sequence[Killed]) -> TrialCounts:
    """Compare, run by run, the side effects with what was committed at the kill, and
    the store after the recovery (see the module docstring)."""
    counts = TrialCounts(trials=len(killed))
    records = read_store(store_url, workdir, [k.run_id for k in killed if k.run_id])
    for k in killed:
        if k.run_id is None:
            counts.problems.append(f"pid {k.pid}: its run never started: {k.stderr[-2000:]}")
            continue
        record = records.get(k.run_id)
        if record is None:
            counts.problems.append(f"{k.run_id}: not in the store after the kill")
            continue
        before = len(counts.problems)
        effects = side_effects(workdir, k.run_id)
        by_child = [name for name, pid in effects if pid == k.pid]
        by_others = [name for name, pid in effects if pid != k.pid]
        done = len(k.committed)
        counts.committed_steps += done
        counts.killed_after[done] += 1
        counts.re_executed += sum(name in k.committed for name in by_others)
        in_flight = by_child[done:]
        counts.in_flight += len(in_flight)
        counts.resumed += record.resume_count
        where = f"{k.run_id} ({k.kind}, killed {k.delay_s:.3f} s in, {k.status_at_kill})"
        if k.status_at_kill == "succeeded":
            counts.ended_before_kill += 1
            expected_resumes = 0
        else:
            expected_resumes = 1
        if k.committed != list(STEPS[:done]):
            counts.problems.append(f"{where}: committed steps {k.committed}")
        if (
            by_child[:done] != list(STEPS[:done])
            or len(in_flight) > 1
            or (in_flight and in_flight[0] != STEPS[done])
        ):
            counts.problems.append(f"{where}: the killed process executed {by_child}")
        if by_others != list(STEPS[done:]):
            counts.problems.append(
                f"{where}: committed {k.committed}, then the recoverer executed {by_others}"
            )
        if record.status != "succeeded" or record.resume_count != expected_resumes:
            counts.problems.append(
                f"{where}: {record.status} after recovery, resumed {record.resume_count} times"
            )
        succeeded = committed_steps(record)
        if sorted(succeeded) != sorted(STEPS):
            counts.problems.append(f"{where}: succeeded records {succeeded}")
        counts.completed += len(counts.problems) == before
    return counts


@dataclass
class TrialCounts:
    trials: int = 0
    completed: int = 0
    """Runs that ended ``succeeded`` with every check holding."""
    resumed: int = 0
    ended_before_kill: int = 0
    committed_steps: int = 0
    """Steps committed at the kill, over all runs."""
    re_executed: int = 0
    """Committed steps executed again by the recovery: must be 0."""
    in_flight: int = 0
    """Steps the killed process had executed but not committed (executed again: allowed)."""
    killed_after: Counter[int] = field(default_factory=Counter)
    """How many runs were killed after how many committed steps (5: it had ended)."""
    problems: list[str] = field(default_factory=list)

    def add(self, other: TrialCounts) -> None:
        for name in (
            "trials",
            "completed",
            "resumed",
            "ended_before_kill",
            "committed_steps",
            "re_executed",
            "in_flight",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.killed_after += other.killed_after
        self.problems += other.problems

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k not in ("problems", "killed_after")}
        after = " ".join(f"{n}:{self.killed_after[n]}" for n in range(len(STEPS) + 1))
        return row | {"killed_after_steps": after, "problems": len(self.problems)}


# --- recoverers -----------------------------------------------------------------------


def recover_cli(
    store_url: str, workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``python -m steptrace recover ARGS`` started (not waited for) with the children's
    environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "steptrace", "recover", *args],
        cwd=workdir,
        env=env or flow_env(store_url, workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def recover_once(store_url: str, workdir: Path) -> dict[str, Any]:
    """One ``steptrace recover --json`` pass, waited for: its JSON (``runs``, ``summary``)."""
    proc = recover_cli(store_url, workdir, "--json")
    out, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"steptrace recover exited {proc.returncode}: {err}")
    result: dict[str, Any] = json.loads(out)
    return result


def block_many(
    workdir: Path, store_url: str, runs: int, *, kind: str = "sync", step: str = "clean"
) -> tuple[list[str], int]:
    """A child process starting ``runs`` durable runs on as many threads, each blocking in
    ``step`` after its side effect (the steps before it committed), killed by SIGKILL
    once every run is blocked: the run ids, and the child's pid."""
    prepare(workdir)
    env = flow_env(store_url, workdir, RECOVERY_FLOW_BLOCK=step)
    with start_flows(workdir, env, kind, runs) as proc:
        assert proc.stdout is not None
        blocked: list[str] = []
        deadline = time.monotonic() + 120
        try:
            while len(blocked) < runs and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("blocked "):
                    blocked.append(line.split()[1])
        finally:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
    if len(blocked) < runs:
        raise RuntimeError(f"only {len(blocked)} of {runs} runs blocked: {err[-3000:]}")
    return blocked, proc.pid
