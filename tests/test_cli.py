"""The command line, run as a real subprocess (``python -m steptrace``) on a SQLite store
in ``tmp_path``: listings, ``show``, ``run MODULE:WORKFLOW`` and the one-line errors.

The workflows below are run *by the CLI* (``run tests/test_cli.py:greet``)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import steptrace as st
from tests.support.helpers import steptrace_cli

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()

DESIGN_RUN_KEYS = {
    "run_id",
    "workflow",
    "status",
    "trace_id",
    "span_id",
    "started_at",
    "ended_at",
    "duration_ms",
    "input",
    "output",
    "error",
}
DESIGN_SPAN_KEYS = {
    "span_id",
    "parent_span_id",
    "kind",
    "name",
    "attempt",
    "status",
    "started_at",
    "ended_at",
    "duration_ms",
    "input",
    "output",
    "error",
    "llm",
    "logs",
    "attributes",
}


# --- workflows the CLI runs -----------------------------------------------------------


class Person(BaseModel):
    name: str
    times: int = 1


@st.step
def shout(text: str) -> str:
    return text.upper()


@st.workflow
def greet(person: Person, punctuation: str = "!") -> dict[str, str]:
    if not isinstance(person, Person):  # the CLI must convert the JSON object
        raise TypeError(f"person is a {type(person).__name__}, not a Person")
    words = [shout(f"hello {person.name}") for _ in range(person.times)]
    return {"greeting": " ".join(words) + punctuation}


@st.workflow
def boom(code: int) -> None:
    raise RuntimeError(f"boom {code}")


def not_a_workflow() -> None:
    pass


# --- helpers ------------------------------------------------------------------------


def steptrace(
    *args: str,
    store: Path | None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m steptrace ARGS`` with ``STEPTRACE_STORE=store`` and no OTEL_* settings."""
    return steptrace_cli(*args, store=store, returncode=None, cwd=cwd, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def stored_runs(store: Path) -> list[st.RunRecord]:
    if not store.exists():  # nothing was recorded (reading creates no store)
        return []
    with st.Store.open(str(store)) as s:
        return s.runs(last=10_000)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("cli") / "demo.db"
    proc = steptrace("demo", store=store)
    assert proc.returncode == 0, proc.stderr
    return store


# --- runs ---------------------------------------------------------------------------


def test_runs_json_lists_run_objects_newest_first(demo_store: Path) -> None:
    proc = steptrace("runs", "--json", "--last", "100", store=demo_store)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert len(runs) == 20
    with st.Store.open(str(demo_store)) as store:
        assert runs == [r.summary() for r in store.runs(last=100)]
    for run in runs:
        assert set(run) >= DESIGN_RUN_KEYS
        assert "spans" not in run
    started = [(r["started_at"], r["run_id"]) for r in runs]
    assert started == sorted(started, reverse=True)


def test_runs_filters_and_limit(demo_store: Path) -> None:
    everything = stored_runs(demo_store)
    by_status = Counter(r.status for r in everything)
    assert by_status["failed"] >= 1

    failed = json.loads(steptrace("runs", "--status", "failed", "--json", store=demo_store).stdout)
    assert len(failed) == by_status["failed"]
    assert {r["status"] for r in failed} == {"failed"}

    last3 = json.loads(steptrace("runs", "-n", "3", "--json", store=demo_store).stdout)
    assert [r["run_id"] for r in last3] == [r.run_id for r in everything[:3]]

    default = json.loads(
        steptrace("runs", "--json", "--workflow", "triage", store=demo_store).stdout
    )
    assert len(default) == 20

    none = steptrace("runs", "--json", "--workflow", "nope", store=demo_store)
    assert none.returncode == 1 and none.stdout == ""
    assert_one_line_error(none, "no workflow named 'nope'", "workflows: triage")
    nothing = steptrace("runs", "--json", "--status", "running", store=demo_store)
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == []


def test_runs_table(demo_store: Path) -> None:
    proc = steptrace("runs", "--status", "failed", store=demo_store)
    assert proc.returncode == 0, proc.stderr
    failed = [r for r in stored_runs(demo_store) if r.status == "failed"]
    lines = [line for line in proc.stdout.splitlines() if "triage" in line]
    assert len(lines) == len(failed)
    for line, run in zip(lines, failed, strict=True):
        assert line.split()[0] == run.run_id[: len(line.split()[0])]
        assert "failed" in line and "PolicyViolation" in line


def test_runs_rejects_an_unknown_status(demo_store: Path) -> None:
    proc = steptrace("runs", "--status", "exploded", store=demo_store)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


# --- show ---------------------------------------------------------------------------


def test_show_json_is_the_stored_run_and_accepts_a_prefix(demo_store: Path) -> None:
    run = next(r for r in stored_runs(demo_store) if r.status == "failed")
    full = steptrace("show", run.run_id, "--json", store=demo_store)
    assert full.returncode == 0, full.stderr
    data = json.loads(full.stdout)
    with st.Store.open(str(demo_store)) as store:
        # The run, and the runs made from it (none here: tests/test_lineage.py has some).
        expected = store.run(run.run_id).to_dict() | {"derived": []}
        assert data == json.loads(json.dumps(expected))
    assert DESIGN_RUN_KEYS | {"spans"} <= set(data)
    assert data["spans"], "a triage run has spans"
    for span in data["spans"]:
        assert set(span) >= DESIGN_SPAN_KEYS
    ids = {s["span_id"] for s in data["spans"]} | {data["span_id"]}
    assert all(s["parent_span_id"] in ids for s in data["spans"])
    assert data["error"]["type"] == "PolicyViolation"

    short = steptrace("show", run.run_id[:10], "--json", store=demo_store)
    assert short.returncode == 0, short.stderr
    assert json.loads(short.stdout) == data


def test_show_tree_has_steps_attempts_calls_and_logs(demo_store: Path) -> None:
    retried = None
    with st.Store.open(str(demo_store)) as store:
        for summary in store.runs(last=100):
            run = store.run(summary.run_id)
            if any(s.attempt == 2 for s in run.steps()) and any(s.logs for s in run.spans):
                retried = run
                break
    assert retried is not None
    proc = steptrace("show", retried.run_id[:12], store=demo_store)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert retried.run_id in out
    for fragment in (
        "step classify",
        "llm chat triage-classifier",
        "tool lookup_order",
        "step draft_reply",
        "attempt 2",
        "output (rejected)",
        "ValidationError",
        "log INFO triage:",
        "tokens",
        "system ",
        "user Ticket",
    ):
        assert fragment in out, fragment
    # The LLM call is drawn under its step, one level deeper.
    lines = out.splitlines()
    step_line = next(i for i, line in enumerate(lines) if "step classify" in line)
    llm_line = next(i for i, line in enumerate(lines) if "llm chat triage-classifier" in line)
    assert llm_line > step_line
    assert llm_line_indent(lines[llm_line]) > llm_line_indent(lines[step_line])


def llm_line_indent(line: str) -> int:
    return len(line) - len(line.lstrip("│ ├└─"))


def test_unknown_run_id_is_one_line_on_stderr(demo_store: Path) -> None:
    proc = steptrace("show", "zzzz", store=demo_store)
    assert_one_line_error(proc, "no run with id 'zzzz'", str(demo_store))
    assert proc.stdout == ""


def test_ambiguous_prefix_is_one_line_on_stderr(demo_store: Path) -> None:
    # 20 runs over 16 hex digits: some first character is shared.
    first = Counter(r.run_id[0] for r in stored_runs(demo_store))
    prefix, count = first.most_common(1)[0]
    assert count >= 2
    proc = steptrace("show", prefix, "--json", store=demo_store)
    assert_one_line_error(proc, "ambiguous", repr(prefix))


def test_debug_shows_the_traceback(demo_store: Path) -> None:
    proc = steptrace("--debug", "show", "zzzz", store=demo_store)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "RunNotFound" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no run with id 'zzzz'")


# --- run ----------------------------------------------------------------------------


def test_run_converts_json_to_the_pydantic_parameter(tmp_path: Path) -> None:
    store = tmp_path / "run.db"
    proc = steptrace(
        "run",
        f"{THIS_FILE}:greet",
        "--input",
        '{"person": {"name": "Ada", "times": 2}, "punctuation": "?"}',
        store=store,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    run_id = lines[0].split()[1]
    assert "succeeded" in lines[1]
    output_start = lines.index("output") + 1
    output_end = next(i for i, line in enumerate(lines) if line.startswith("show "))
    assert json.loads("\n".join(lines[output_start:output_end])) == {
        "greeting": "HELLO ADA HELLO ADA?"
    }
    assert f"show {run_id[:8]}" in lines[output_end]

    with st.Store.open(str(store)) as s:
        run = s.run(run_id)
    assert run.workflow == "greet" and run.status == "succeeded"
    assert run.input == {"person": {"name": "Ada", "times": 2}, "punctuation": "?"}
    assert [span.name for span in run.steps()] == ["shout", "shout"]


def test_run_module_form_positional_args_and_async(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        textwrap.dedent(
            """
            import datetime as dt
            import steptrace as st

            @st.workflow
            async def days_until(day: dt.date, start: dt.date) -> int:
                return (day - start).days
            """
        )
    )
    store = tmp_path / "run.db"
    proc = steptrace(
        "run",
        "flows:days_until",
        "--input",
        '["2025-03-01", "2025-02-01"]',
        store=store,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[3] == "28"
    (run,) = stored_runs(store)
    assert run.workflow == "days_until" and run.output == 28


def test_run_failed_workflow_exits_1_and_names_the_error(tmp_path: Path) -> None:
    store = tmp_path / "run.db"
    proc = steptrace("run", f"{THIS_FILE}:boom", "--input", '{"code": 7}', store=store)
    assert_one_line_error(proc, "failed", "RuntimeError: boom 7")
    assert proc.returncode == 1
    (run,) = stored_runs(store)
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "RuntimeError"
    assert run.run_id in proc.stdout
    assert f"show {run.run_id[:8]}" in proc.stdout


@pytest.mark.parametrize(
    ("input_json", "fragments"),
    [
        ('{"person": ', ("--input is not valid JSON",)),
        ("42", ("--input must be a JSON object",)),
        ('{"person": {"times": "many"}}', ("'person'", "Person", "name: Field required")),
        ('{"nobody": 1}', ("--input does not fit greet",)),
    ],
)
def test_run_bad_input_is_a_clear_error(
    tmp_path: Path, input_json: str, fragments: tuple[str, ...]
) -> None:
    store = tmp_path / "run.db"
    proc = steptrace("run", f"{THIS_FILE}:greet", "--input", input_json, store=store)
    assert_one_line_error(proc, *fragments)
    assert stored_runs(store) == []


@pytest.mark.parametrize(
    ("target", "fragments"),
    [
        (f"{THIS_FILE}:not_a_workflow", ("is not a @steptrace.workflow",)),
        (f"{THIS_FILE}:missing", ("has no attribute 'missing'",)),
        ("no_such_module_xyz:wf", ("cannot import 'no_such_module_xyz'",)),
        ("tests/nothing_here.py:wf", ("no such file",)),
        ("greet", ("is not MODULE:WORKFLOW",)),
    ],
)
def test_run_bad_target_is_a_clear_error(
    tmp_path: Path, target: str, fragments: tuple[str, ...]
) -> None:
    proc = steptrace("run", target, store=tmp_path / "run.db")
    assert_one_line_error(proc, *fragments)


# --- global options and configuration errors ---------------------------------------------


def test_store_option_wins_over_the_environment(tmp_path: Path) -> None:
    env_store, option_store = tmp_path / "env.db", tmp_path / "option.db"
    proc = steptrace(
        "--store",
        str(option_store),
        "run",
        f"{THIS_FILE}:greet",
        "--input",
        '{"person": {"name": "Bo"}}',
        store=env_store,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"--store {option_store}" in proc.stdout  # the suggested show command
    assert len(stored_runs(option_store)) == 1
    assert stored_runs(env_store) == []
    listed = steptrace("--store", str(option_store), "runs", "--json", store=env_store)
    assert len(json.loads(listed.stdout)) == 1


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"STEPTRACE_STORE": "postgresql://db.invalid/steptrace"}, "PostgreSQL"),
        ({"STEPTRACE_STORE": "mysql://db.invalid/x"}, "unknown store URL scheme"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_misconfiguration_is_one_line(tmp_path: Path, env: dict[str, Any], fragment: str) -> None:
    proc = steptrace("runs", store=tmp_path / "x.db", env=env)
    assert_one_line_error(proc, fragment)


def test_help_lists_the_commands() -> None:
    proc = steptrace("--help", store=None)
    assert proc.returncode == 0
    for command in ("demo", "run", "runs", "show", "recover"):
        assert command in proc.stdout
