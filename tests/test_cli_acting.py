"""``steptrace resume``, ``fork`` and ``replay`` (one run, and ``--workflow W --last N``)
run as real subprocesses on SQLite stores in a temporary directory.

The workflow is a module written into that directory (``v1/flows.py``) and recorded
there by a fresh interpreter; a code change is another version of the file in another
directory (``v2`` routes refunds elsewhere, ``v3`` calls its steps in another order),
from which the command is run: the recorded entry point ``flows:triage`` then imports
today's code, as it would after a deploy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import steptrace as st
from tests.support.helpers import clean_env, steptrace_cli

FLOWS = """
import os
import steptrace as st

st.llm.script(
    "triage-model",
    lambda messages, **params: (
        "refund" if "money back" in messages[-1]["content"] else "question"
    ),
)


@st.step
def normalize(text: str) -> str:
    return " ".join(text.lower().split())


@st.step
def classify(text: str) -> str:
    messages = [{"role": "user", "content": text}]
    return st.llm.chat(model="scripted:triage-model", messages=messages).text


@st.step
def route(label: str, priority: int = 1) -> dict:
    return {"queue": "billing" if label == "refund" else "support", "priority": priority}


@st.step
def send(route: dict) -> str:
    if os.environ.get("FLOWS_OUTBOX_DOWN"):
        raise RuntimeError("the outbox is down")
    return f"sent to {route['queue']} at priority {route['priority']}"


@st.workflow
def triage(text: str) -> str:
    text = normalize(text)
    label = classify(text)
    return send(route(label))
"""

TEXTS = (
    "I want my money back",
    "Where is my parcel?",
    "Money back, now!",
    "How do I reset my password",
    "hello",
)
REFUNDS = (0, 2)


@dataclass
class Recorded:
    root: Path
    traffic: Path
    """A store with the five runs of ``TEXTS``, oldest first in ``runs``."""
    runs: list[str]
    ops: Path
    """A store with a run of the first text and two failed runs (the outbox was down)."""
    done: str
    failed: str
    failed_too: str


def steptrace(
    *args: str, store: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return steptrace_cli(*args, store=store, returncode=None, cwd=cwd, env=env)


def replay_traffic(
    recorded: Recorded, version: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``steptrace replay --workflow triage ARGS`` over the traffic store, with the code
    of ``version``."""
    return steptrace(
        "replay", "--workflow", "triage", *args, store=recorded.traffic, cwd=recorded.root / version
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    root = tmp_path_factory.mktemp("acting")
    versions = {
        "v1": FLOWS,
        "v2": FLOWS.replace('"billing" if label', '"refunds" if label'),
        "v3": FLOWS.replace(
            "    text = normalize(text)\n    label = classify(text)",
            "    label = classify(text)\n    text = normalize(text)",
        ),
    }
    for name, source in versions.items():
        assert name == "v1" or source != FLOWS
        (root / name).mkdir()
        (root / name / "flows.py").write_text(source, encoding="utf-8")
    script = textwrap.dedent(
        f"""
        import json, os, sys
        import steptrace as st
        from flows import triage

        st.configure(store={str(root / "traffic.db")!r})
        runs = [st.run(triage, text).run_id for text in {TEXTS!r}]
        st.configure(store={str(root / "ops.db")!r})
        done = st.run(triage, {TEXTS[0]!r}).run_id
        os.environ["FLOWS_OUTBOX_DOWN"] = "1"
        failed = st.run(triage, {TEXTS[1]!r}).run_id
        failed_too = st.run(triage, {TEXTS[2]!r}).run_id
        assert st.flush()
        print(json.dumps([runs, done, failed, failed_too]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root / "v1",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    runs, done, failed, failed_too = json.loads(proc.stdout)
    return Recorded(root, root / "traffic.db", runs, root / "ops.db", done, failed, failed_too)


# --- replay --workflow W --last N ------------------------------------------------------------


def test_a_code_change_changes_exactly_the_runs_it_touches_at_the_step_it_touches(
    recorded: Recorded,
) -> None:
    proc = replay_traffic(recorded, "v2", "--last", "5")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "3 identical, 2 changed (at step route#0: 2), 0 diverged, 0 failed"
    per_run = lines[:-1]
    assert len(per_run) == 5
    for i, run_id in enumerate(recorded.runs):
        (line,) = [line for line in per_run if line.startswith(run_id[:16])]
        if i in REFUNDS:
            assert "changed at route#0: output.queue: billing → refunds" in line, line
        else:
            assert line.endswith("identical"), line
    # Unchanged code: every replay is identical, and exit code 0.
    same = replay_traffic(recorded, "v1", "-n", "5")
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[-1] == "5 identical, 0 changed, 0 diverged, 0 failed"


def test_regression_replay_json(recorded: Recorded) -> None:
    proc = replay_traffic(
        recorded, "v2", "-n", "3", "--where", "classify.output = refund", "--json"
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {"workflow", "runs", "summary"}
    assert report["workflow"] == "triage"
    refunds = [recorded.runs[i] for i in reversed(REFUNDS)]
    assert [r["source_run_id"] for r in report["runs"]] == refunds  # newest first
    for run in report["runs"]:
        assert set(run) == {
            "source_run_id",
            "replay_run_id",
            "verdict",
            "step",
            "changes",
            "message",
            "llm_calls",
            "unmatched",
        }
        assert run["verdict"] == "changed" and run["step"] == "route#0"
        assert run["changes"] == [
            {"path": "output.queue", "change": "changed", "a": "billing", "b": "refunds"}
        ]
        assert run["llm_calls"] == {"recorded": 1, "live": 0}
        assert run["unmatched"] == [] and run["message"] is None
    assert report["summary"] == {
        "runs": 2,
        "identical": 0,
        "changed": 2,
        "diverged": 0,
        "failed": 0,
        "skipped": 0,
        "changed_at": {"route#0": 2},
    }
    with st.Store.open(str(recorded.traffic)) as store:
        replay = store.run(report["runs"][0]["replay_run_id"])
    assert replay.replay_of == refunds[0] and replay.status == "succeeded"


def test_steps_called_in_another_order_are_counted_as_diverged(recorded: Recorded) -> None:
    proc = replay_traffic(recorded, "v3", "--last", "2", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"]["diverged"] == 2
    assert report["summary"]["identical"] == report["summary"]["changed"] == 0
    for run in report["runs"]:
        assert run["verdict"] == "diverged" and run["step"] == "classify#0"
        assert run["message"].startswith("DivergenceError: ")
        assert "where the recording has 'normalize#0'" in run["message"]


def test_regression_replay_request_errors_exit_2(recorded: Recorded) -> None:
    v1 = recorded.root / "v1"
    unknown = steptrace("replay", "--workflow", "nope", store=recorded.traffic, cwd=v1)
    one_line_error(unknown, 2, "no workflow named 'nope'", "workflows: triage")
    both = steptrace(
        "replay", recorded.runs[0], "--workflow", "triage", store=recorded.traffic, cwd=v1
    )
    one_line_error(both, 2, "not both")
    nothing = replay_traffic(recorded, "v1", "--where", "route.output.queue = nowhere")
    one_line_error(nothing, 2, "nothing to replay")
    assert nothing.stdout == ""


# --- replay RUN_ID -----------------------------------------------------------------------


def test_replay_one_run_by_prefix(recorded: Recorded) -> None:
    refund = recorded.runs[REFUNDS[0]]
    same = steptrace("replay", refund[:10], store=recorded.traffic, cwd=recorded.root / "v1")
    assert same.returncode == 0, same.stderr
    out = same.stdout
    assert f"source   {refund}" in out
    assert "verdict  identical" in out
    assert "LLM      1 recorded, 0 live; 0 unmatched" in out
    changed = steptrace(
        "replay", refund[:10], "--json", store=recorded.traffic, cwd=recorded.root / "v2"
    )
    assert changed.returncode == 1, changed.stderr
    found = json.loads(changed.stdout)
    assert found["source_run_id"] == refund
    assert (found["verdict"], found["step"]) == ("changed", "route#0")
    assert found["llm_calls"] == {"recorded": 1, "live": 0}


# --- fork ------------------------------------------------------------------------------


def test_fork_with_input_prints_the_diff_against_the_source(recorded: Recorded) -> None:
    v1 = recorded.root / "v1"
    proc = steptrace(
        "fork",
        recorded.done[:12],
        "--from",
        "route",
        "--input",
        '{"priority": 3}',
        store=recorded.ops,
        cwd=v1,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    new_id = out.splitlines()[0].split()[1]
    assert f"fork of {recorded.done[:8]} at route#0" in out.splitlines()[0]
    assert "✓ succeeded" in out.splitlines()[1]
    assert "against the source run:" in out
    assert "4 steps: 2 changed, 2 the same, 0 only in a, 0 only in b" in out  # reused: same
    assert "~ route#0" in out and "~ input.priority: 1 → 3" in out
    assert "~ output.priority: 1 → 3" in out
    assert "~ send#0" in out
    assert "sent to billing at priority 1 → sent to billing at priority 3" in out
    with st.Store.open(str(recorded.ops)) as store:
        fork = store.run(new_id)
    assert (fork.forked_from, fork.forked_at) == (recorded.done, "route#0")
    assert fork.output == "sent to billing at priority 3"

    args = recorded.root / "args.json"
    args.write_text('{"label": "question"}', encoding="utf-8")
    as_json = steptrace(
        "fork",
        recorded.done,
        "--from",
        "route#0",
        "--input",
        f"@{args}",
        "--json",
        store=recorded.ops,
        cwd=v1,
    )
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["source_run_id"] == recorded.done and data["forked_at"] == "route#0"
    assert data["output"] == "sent to support at priority 1"
    route = next(s for s in data["diff"]["steps"] if s["key"] == "route#0")
    assert {c["path"] for c in route["changes"]} == {"input.label", "output.queue"}

    bad = steptrace("fork", recorded.done, "--from", "nope", store=recorded.ops, cwd=v1)
    one_line_error(bad, 2, "has no step 'nope#0'", "normalize#0, classify#0, route#0, send#0")


# --- resume ----------------------------------------------------------------------------


def test_resume_a_failed_run(recorded: Recorded) -> None:
    v1 = recorded.root / "v1"
    still_down = steptrace(
        "resume",
        recorded.failed[:12],
        store=recorded.ops,
        cwd=v1,
        env={"FLOWS_OUTBOX_DOWN": "1"},
    )
    one_line_error(still_down, 1, "resumed run", "RuntimeError: the outbox is down")
    assert "executed send#0 (attempt 2) failed" in still_down.stdout
    proc = steptrace("resume", recorded.failed[:12], "--json", store=recorded.ops, cwd=v1)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["run_id"] == recorded.failed and data["status"] == "succeeded"
    assert data["resume_count"] == 2
    assert data["reused"] == ["normalize#0", "classify#0", "route#0"]
    assert data["executed"] == [
        {"key": "send#0", "name": "send", "attempt": 3, "status": "succeeded"}
    ]
    assert data["output"] == "sent to support at priority 1"
    with st.Store.open(str(recorded.ops)) as store:
        run = store.run(recorded.failed)
    assert run.status == "succeeded" and run.resume_count == 2
    assert [s.attempt for s in run.steps("send")] == [1, 2, 3]

    again = steptrace("resume", recorded.failed, store=recorded.ops, cwd=v1)
    one_line_error(again, 2, "succeeded: there is nothing to resume", "steptrace fork")


def test_resume_prints_reused_and_executed_steps(recorded: Recorded) -> None:
    run_id = recorded.failed_too
    v1 = recorded.root / "v1"
    proc = steptrace("resume", run_id, "--entry", "flows.py:triage", store=recorded.ops, cwd=v1)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run      {run_id}"
    assert "✓ succeeded" in lines[1]
    assert lines[2] == "resumed  once"
    assert lines[3] == "reused   normalize#0, classify#0, route#0 (recorded outputs, not executed)"
    assert lines[4] == "executed send#0 (attempt 2)"
    assert lines[5].startswith("show     ") and run_id[:8] in lines[5]
    not_a_workflow = steptrace(
        "resume", run_id, "--entry", "flows.py:normalize", store=recorded.ops, cwd=v1
    )
    one_line_error(not_a_workflow, 2, "'normalize' is not a @steptrace.workflow")
