"""``steptrace demo``: the bundled triage workflow, run as a real subprocess.

Checks that the summary tells the truth about the store, that 20 runs tell the
whole story (categories, a retried-then-fixed step, a failed run, tool calls,
logs), that the suggested next commands work, and that the demo is the same in
every process."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.examples import triage
from tests.support.helpers import clean_env

SUMMARY_LINE = re.compile(
    r"^\s+(runs|succeeded|failed|steps retried|LLM calls|tool calls|log lines)\s+(\d+)\s*$"
)


def run_cli(
    *args: str, store: Path | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = clean_env()
    full_env["COLUMNS"] = "200"
    if store is not None:
        full_env["STEPTRACE_STORE"] = str(store)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "steptrace", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_runs(store: Path) -> list[st.RunRecord]:
    """Every stored run with its spans, oldest first."""
    with st.Store.open(str(store)) as s:
        return [s.run(r.run_id) for r in reversed(s.runs(last=10_000))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    store = tmp_path_factory.mktemp("demo") / "steptrace.db"
    proc = run_cli("demo", store=store)
    assert proc.returncode == 0, proc.stderr
    return proc, store


def test_summary_numbers_match_the_store(demo: tuple[Any, Path]) -> None:
    proc, store = demo
    printed = {
        m.group(1): int(m.group(2))
        for m in map(SUMMARY_LINE.match, proc.stdout.splitlines())
        if m is not None
    }
    runs = load_runs(store)
    spans = [s for r in runs for s in r.spans]
    retried = sum(
        1 for r in runs for key, n in Counter(s.step_key for s in r.steps()).items() if n > 1
    )
    assert printed == {
        "runs": 20,
        "succeeded": sum(r.status == "succeeded" for r in runs),
        "failed": sum(r.status == "failed" for r in runs),
        "steps retried": retried,
        "LLM calls": sum(s.kind == "llm" for s in spans),
        "tool calls": sum(s.kind == "tool" for s in spans),
        "log lines": sum(len(s.logs) for s in spans),
    }
    assert len(runs) == 20
    assert str(store) in proc.stdout
    assert proc.stderr == ""  # the workflow's own warnings go to the store, not the terminal


def test_twenty_runs_tell_the_whole_story(demo: tuple[Any, Path]) -> None:
    _, store = demo
    runs = load_runs(store)
    assert all(r.workflow == "triage" for r in runs)

    categories = Counter(
        s.output["category"] for r in runs for s in r.steps("classify") if s.status == "succeeded"
    )
    assert len(categories) >= 4, categories

    # A step that failed validation on a malformed answer, then succeeded on retry; the
    # rejected raw text is the failed attempt's output.
    fixed = [
        (first, second)
        for r in runs
        for first in r.steps()
        for second in r.steps()
        if first.step_key == second.step_key and first.attempt == 1 and second.attempt == 2
    ]
    assert fixed
    for first, second in fixed:
        assert first.status == "failed" and second.status == "succeeded"
        assert first.error is not None and first.error["type"] == "ValidationError"
        assert isinstance(first.output, str)  # the raw LLM text that failed validation
        assert isinstance(second.output, dict)
    assert {first.name for first, _ in fixed} == {"classify", "draft_reply"}

    failed = [r for r in runs if r.status == "failed"]
    assert failed
    for run in failed:
        assert run.error is not None and run.error["type"] == "PolicyViolation"
        (policy,) = run.steps("check_policy")
        assert policy.status == "failed" and policy.error is not None
        assert policy.error["type"] == "PolicyViolation"

    tools = [s for r in runs for s in r.spans if s.kind == "tool"]
    assert tools and {t.name for t in tools} == {"lookup_order"}
    assert any(t.output["found"] for t in tools)
    assert any(not t.output["found"] for t in tools)
    assert all(t.input == {"order_id": t.output["order_id"]} for t in tools)

    llm_calls = [s for r in runs for s in r.spans if s.kind == "llm"]
    assert {c.llm["model"] for c in llm_calls if c.llm} == {"triage-classifier", "triage-drafter"}
    for call in llm_calls:
        assert call.llm is not None and call.llm["provider"] == "scripted"
        assert [m["role"] for m in call.llm["messages"]] == ["system", "user"]
        assert call.llm["input_tokens"] > 0 and call.llm["output_tokens"] > 0

    logs = [entry for r in runs for s in r.spans for entry in s.logs]
    levels = Counter(entry["level"] for entry in logs)
    assert levels["INFO"] > 0 and levels["WARNING"] > 0
    assert {entry["logger"] for entry in logs} == {"triage"}


def test_secrets_in_tickets_are_redacted(demo: tuple[Any, Path]) -> None:
    _, store = demo
    secrets = re.findall(r"sk-[\w-]{16,}", " ".join(str(t["body"]) for t in triage.TICKETS))
    assert secrets, "a bundled ticket pastes an API key"
    dumped = json.dumps([r.to_dict() for r in load_runs(store)])
    assert "[REDACTED]" in dumped
    for secret in secrets:
        assert secret not in dumped


def test_the_suggested_commands_work(demo: tuple[Any, Path]) -> None:
    proc, store = demo
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Look at a failed run"))
    show_cmd, runs_cmd = (shlex.split(line) for line in lines[start + 1 : start + 3])
    assert show_cmd[-2] == "show" and runs_cmd[-3:] == ["runs", "--status", "failed"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(STEPTRACE_STORE=str(store), COLUMNS="200")

    shown = subprocess.run(show_cmd, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "failed" in shown.stdout and "PolicyViolation" in shown.stdout
    assert "step check_policy" in shown.stdout

    listed = subprocess.run(runs_cmd, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    failed = sum(r.status == "failed" for r in load_runs(store))
    assert sum("✗ failed" in line for line in listed.stdout.splitlines()) == failed

    ask = next(i for i, line in enumerate(lines) if line.startswith("Ask across runs"))
    dist_cmd, stats_cmd, ui_cmd = (shlex.split(line) for line in lines[ask + 1 : ask + 4])
    assert ui_cmd[-1] == "ui"  # starts a server: its tests are in tests/ui
    dist = subprocess.run(dist_cmd, env=env, capture_output=True, text=True, timeout=60)
    assert dist.returncode == 0, dist.stderr
    assert "classify.category" in dist.stdout and "%" in dist.stdout
    stats = subprocess.run(stats_cmd, env=env, capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert "classify" in stats.stdout and "check_policy" in stats.stdout


def _story(store: Path) -> list[Any]:
    """A run without its ids and timings: what the demo did, to compare across processes."""
    return [
        (
            r.input,
            r.status,
            r.output,
            # Sorted: spans that start in the same microsecond have no fixed order.
            sorted(repr((s.kind, s.name, s.attempt, s.status, s.input, s.output)) for s in r.spans),
            sorted(entry["message"] for s in r.spans for entry in s.logs),
        )
        for r in load_runs(store)
    ]


def test_the_demo_is_the_same_in_every_process(tmp_path: Path) -> None:
    first, second = tmp_path / "one.db", tmp_path / "two.db"
    one = run_cli("demo", "--runs", "14", store=first, env={"PYTHONHASHSEED": "1"})
    two = run_cli(
        "--store", str(second), "demo", "-n", "14", store=None, env={"PYTHONHASHSEED": "2"}
    )
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert f"--store {second} show " in two.stdout  # the next commands name the store
    assert len(load_runs(first)) == 14
    assert _story(first) == _story(second)


def test_demo_tickets_vary_by_run_index() -> None:
    tickets = triage.demo_tickets(30)
    assert len({t.ticket_id for t in tickets}) == 30
    assert tickets[0].subject == tickets[12].subject
    assert tickets[0].customer != tickets[12].customer
    assert tickets[12].body != tickets[24].body
    assert triage.demo_tickets(30) == tickets


def test_demo_rejects_a_bad_run_count(tmp_path: Path) -> None:
    proc = run_cli("demo", "--runs", "0", store=tmp_path / "x.db")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


def test_the_demo_installs_what_the_readme_tour_uses() -> None:
    """``scripts/demo.sh`` is the README's first command: after it, every command the
    tour shows must work (``steptrace ui`` needs the ui extra, spans sent to an
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` the otlp one)."""
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    tour = readme[readme.index("## A tour") :]
    commands = re.search(r"```bash\n(.*?)```", tour, re.S)
    assert commands is not None
    needed = {"ui"} if re.search(r"^steptrace ui\b", commands.group(1), re.M) else set()
    needed |= {"otlp"} if "OTEL_EXPORTER_OTLP_ENDPOINT=" in commands.group(1) else set()

    demo_sh = (root / "scripts" / "demo.sh").read_text(encoding="utf-8")
    install = re.search(r"pip install .*-e '\.\[([\w,-]+)\]'", demo_sh)
    assert install is not None, "scripts/demo.sh installs steptrace with extras"
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]

    def resolved(names: list[str]) -> set[str]:
        found = set(names)
        for name in names:
            for requirement in extras[name]:
                inner = re.fullmatch(r"steptrace\[([\w,-]+)\]", requirement)
                if inner:
                    found |= resolved(inner.group(1).split(","))
        return found

    assert needed <= resolved(install.group(1).split(","))
