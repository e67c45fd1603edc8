"""Recovering interrupted durable runs (``steptrace.recovery``, ``steptrace recover``):
real processes running durable workflows, killed by SIGKILL, then resumed, in this
process (``recover()``) or by ``steptrace recover`` processes; the workflows'
side-effect files (``tests/support/recovery_flows.py``) say which step executed how
often, and in which process.

``STEPTRACE_RESUME_TRIALS`` sets how many killed runs the crash test makes per engine
(default 6; ``scripts/stress.py --only resume`` makes many more), and
``STEPTRACE_RECOVER_RACE_RUNS`` how many runs two recoverers race for on PostgreSQL
(default 200; a fifth of that on SQLite).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import steptrace as st
from steptrace.recovery import recover
from tests.support import resume_trials
from tests.support.helpers import is_postgres, raw_sql
from tests.support.recovery_flows import STEPS
from tests.support.resume_trials import block_many, flow_env, read_store, side_effects

RACE_RUNS = int(os.environ.get("STEPTRACE_RECOVER_RACE_RUNS", 200))


@pytest.fixture
def workdir(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the children, the recoverers and this process meet: one spill directory,
    one side-effect directory (this process, when it recovers, as the others do)."""
    work = tmp_path / "work"
    resume_trials.prepare(work)
    for name in ("STEPTRACE_SPILL_DIR", "RECOVERY_FLOW_DIR"):
        monkeypatch.setenv(name, flow_env(store_url, work)[name])
    return work


def _by_step(effects: list[tuple[str, int]]) -> dict[str, list[int]]:
    """step -> the pids that executed it, in order."""
    out: dict[str, list[int]] = {}
    for name, pid in effects:
        out.setdefault(name, []).append(pid)
    return out


# --- recover() in this process ------------------------------------------------------------


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_durable_run_killed_in_its_first_step_is_recovered(store_url: str, workdir: Path) -> None:
    """A durable run's start is committed before its first step runs: killed inside that
    step, the run is in the store (``interrupted``, no step recorded) and is recovered.
    ``limit`` takes the oldest runs first."""
    run_ids, pid = block_many(workdir, store_url, 2, step="fetch")
    runs = read_store(store_url, workdir, run_ids)
    assert {r.status for r in runs.values()} == {"interrupted"}
    assert all(r.spans == [] for r in runs.values())
    first, second = sorted(run_ids, key=lambda run_id: runs[run_id].started_at)

    assert [(o.run_id, o.status) for o in recover(limit=1)] == [(first, "succeeded")]
    (outcome,) = recover()
    assert (outcome.run_id, outcome.status, outcome.resume_count) == (second, "succeeded", 1)
    assert outcome.workflow == "counted" and outcome.error is None
    assert recover() == []

    by_step = _by_step(side_effects(workdir, first))
    assert by_step["fetch"] == [pid, os.getpid()]  # never committed: executed again
    assert all(by_step[name] == [os.getpid()] for name in STEPS[1:])
    with st.Store.open(store_url) as store:
        record = store.run(first)
    assert (record.status, record.resume_count) == ("succeeded", 1)
    assert record.output["delivered"].startswith("item ")


def test_killed_durable_runs_resume_without_re_executing_a_committed_step(
    store_url: str, workdir: Path
) -> None:
    """Child processes, each running two durable runs (sync or async) whose steps sleep
    a little, killed by SIGKILL at random moments; ``recover()`` then completes every
    run. No step whose record was committed at the kill executes again; the one step a
    process was inside of (executed, not committed) executes again, and no other."""
    trials = int(os.environ.get("STEPTRACE_RESUME_TRIALS", 6))
    kinds = [("sync", "async")[n % 2] for n in range(-(-trials // 2))]
    killed = resume_trials.kill_children(
        workdir, store_url, kinds, random.Random(), runs_per_child=2
    )
    interrupted = {k.run_id for k in killed if k.status_at_kill == "interrupted"}

    outcomes = recover()

    assert {o.run_id for o in outcomes} == interrupted
    assert {(o.status, o.resume_count) for o in outcomes} <= {("succeeded", 1)}
    counts = resume_trials.check(workdir, store_url, killed)
    assert counts.problems == [], "\n".join(counts.problems)
    assert counts.re_executed == 0
    assert counts.completed == len(killed) >= trials


# --- steptrace recover ------------------------------------------------------------------


def test_two_recoverers_resume_each_run_exactly_once(store_url: str, workdir: Path) -> None:
    """Many durable runs interrupted in their second step (a process killed while its
    threads were inside it), then two ``steptrace recover`` processes started at once:
    each run is resumed by exactly one of them, once, and succeeds; the step it was
    inside of executed once more, every other step once."""
    postgres = is_postgres(store_url)
    runs, child = block_many(workdir, store_url, RACE_RUNS if postgres else RACE_RUNS // 5)
    before = read_store(store_url, workdir, runs)
    assert Counter(r.status for r in before.values()) == {"interrupted": len(runs)}

    recoverers = [resume_trials.recover_cli(store_url, workdir, "--json") for _ in range(2)]
    ended = [proc.communicate(timeout=300) for proc in recoverers]
    reports = {}
    for proc, (out, err) in zip(recoverers, ended, strict=True):
        assert proc.returncode == 0, err
        reports[proc.pid] = json.loads(out)["runs"]

    resumed_by = {o["run_id"]: pid for pid, outcomes in reports.items() for o in outcomes}
    assert sum(len(outcomes) for outcomes in reports.values()) == len(runs)
    assert sorted(resumed_by) == sorted(runs)
    assert all(o["status"] == "succeeded" for outcomes in reports.values() for o in outcomes)
    if postgres:  # long enough for the two to overlap: both took runs
        assert all(reports.values()), {pid: len(o) for pid, o in reports.items()}
    after = read_store(store_url, workdir, runs)
    assert {(r.status, r.resume_count) for r in after.values()} == {("succeeded", 1)}
    for run_id in runs:
        by_step = _by_step(side_effects(workdir, run_id))
        recoverer = resumed_by[run_id]
        assert by_step == {
            "fetch": [child],
            "clean": [child, recoverer],
            "classify": [recoverer],
            "draft": [recoverer],
            "deliver": [recoverer],
        }, run_id


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_run_whose_recoverer_was_killed_is_recovered_again(store_url: str, workdir: Path) -> None:
    """A recoverer killed while it resumes a run leaves the run under its own name: the
    run is interrupted again, its lease given back with it (not left to lapse), and
    the next recovery finishes it (resumed twice), with the steps the killed recoverer
    committed not executed again."""
    (run_id,), child = block_many(workdir, store_url, 1)
    env = flow_env(store_url, workdir, RECOVERY_FLOW_BLOCK="draft")
    first = resume_trials.recover_cli(store_url, workdir, env=env)
    try:
        deadline = time.monotonic() + 30
        while ("draft", first.pid) not in side_effects(workdir, run_id):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        first.kill()
        first.communicate(timeout=30)

    (outcome,) = recover()

    assert (outcome.run_id, outcome.status, outcome.resume_count) == (run_id, "succeeded", 2)
    assert _by_step(side_effects(workdir, run_id)) == {
        "fetch": [child],
        "clean": [child, first.pid],
        "classify": [first.pid],
        "draft": [first.pid, os.getpid()],
        "deliver": [os.getpid()],
    }
    record = read_store(store_url, workdir, [run_id])[run_id]
    assert (record.status, record.resume_count) == ("succeeded", 2)
    assert [s.name for s in record.steps()] == list(STEPS)  # one attempt each, recorded


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_watch_resumes_a_run_interrupted_later_and_stops_cleanly_on_sigterm(
    store_url: str, workdir: Path
) -> None:
    """``recover --watch`` started first; a durable run is then started and its process
    killed: the watcher resumes it. SIGTERM while it does lets that run finish, then the
    watcher prints its summary and exits 0."""
    env = flow_env(store_url, workdir, RECOVERY_FLOW_SLOW="classify:1.0")
    watcher = resume_trials.recover_cli(
        store_url, workdir, "--watch", "--interval", "0.1", "--json", env=env
    )
    try:
        assert watcher.stderr is not None
        assert "watching" in watcher.stderr.readline()
        (run_id,), _ = block_many(workdir, store_url, 1)

        deadline = time.monotonic() + 30
        while ("classify", watcher.pid) not in side_effects(workdir, run_id):
            assert watcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        watcher.send_signal(signal.SIGTERM)  # inside classify, which sleeps 1 s
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x.get("run_id"), x.get("status"), x.get("resume_count")) for x in lines[:-1]] == [
        (run_id, "succeeded", 1)
    ]
    assert lines[-1]["summary"] | {"seconds": 0} == {
        "runs": 1,
        "succeeded": 1,
        "failed": 0,
        "skipped": 0,
        "seconds": 0,
    }
    assert _by_step(side_effects(workdir, run_id))["deliver"] == [watcher.pid]
    record = read_store(store_url, workdir, [run_id])[run_id]
    assert (record.status, record.resume_count) == ("succeeded", 1)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_run_whose_workflow_cannot_be_imported_is_reported_and_skipped(
    store_url: str, workdir: Path
) -> None:
    """A run whose module is gone is reported as skipped, its lease given back and its
    status left ``interrupted``; the recoverer goes on with the other runs, and exits 1.
    ``--workflow`` leaves runs of other workflows alone."""
    gone = workdir / "gone"
    gone.mkdir()
    (gone / "vanishing_flow.py").write_text(
        "import threading\nimport steptrace as st\n\n"
        "@st.step\ndef wait():\n    print('blocked', st.current_run_id(), flush=True)\n"
        "    threading.Event().wait()\n\n"
        "@st.workflow(durable=True)\ndef vanishing():\n    wait()\n"
    )
    env = flow_env(store_url, workdir)
    env["PYTHONPATH"] += os.pathsep + str(gone)
    code = "import vanishing_flow; vanishing_flow.vanishing()"
    with subprocess.Popen(
        [sys.executable, "-c", code], cwd=workdir, env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        vanishing = proc.stdout.readline().split()[1]
        proc.kill()
    (gone / "vanishing_flow.py").unlink()
    (counted,), _ = block_many(workdir, store_url, 1)

    only = resume_trials.recover_cli(store_url, workdir, "--workflow", "counted")
    out, err = only.communicate(timeout=60)
    assert only.returncode == 0, err
    line, summary = out.splitlines()  # (for people: a line per run, a summary)
    assert line.startswith(f"✓ succeeded  {counted}  counted  resume 1  "), line
    assert summary.startswith("recovered 1 run in ") and summary.endswith(
        ": 1 succeeded, 0 failed, 0 skipped"
    )

    everything = resume_trials.recover_cli(store_url, workdir, "--json")
    out, err = everything.communicate(timeout=60)
    assert everything.returncode == 1, err
    assert "Traceback" not in err
    report = json.loads(out)
    (skipped,) = report["runs"]
    assert skipped["run_id"] == vanishing and skipped["workflow"] == "vanishing"
    assert skipped["status"] == "skipped" and skipped["resume_count"] == 0
    assert "cannot import 'vanishing_flow'" in skipped["error"]
    assert report["summary"]["skipped"] == 1 and report["summary"]["runs"] == 1
    assert raw_sql(
        store_url,
        "SELECT status, lease_owner, lease_until FROM runs WHERE run_id = ?",
        (vanishing,),
    ) == [("interrupted", None, None)]
