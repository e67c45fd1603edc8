"""What the command line prints hides nothing: every column at 80 columns, at 40 and
when piped; ``--format json|csv`` on the listings; ``runs`` says when more runs
exist; an unknown step, workflow or field is an error listing what exists; ``stats``
names the window it used; ``--version``; a dead OTLP endpoint is one line.

The store is made by ``steptrace demo`` (a real SQLite file); the commands run in
this process through ``steptrace.cli.main`` (their real exit code, stdout and
stderr; not a terminal, like a pipe), except where the terminal output of a whole
process is the point."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import pytest

import steptrace as st
from steptrace.cli import main
from tests.support.helpers import clean_env

ROOT = Path(__file__).resolve().parents[1]
N_RUNS = 30


class Result(NamedTuple):
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("output") / "demo.db"
    env = clean_env()
    env["STEPTRACE_STORE"] = str(store)
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", "demo", "--runs", str(N_RUNS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # Piped output has no width limit: nothing may pad itself out to it.
    assert max(len(line) for line in proc.stdout.splitlines()) < 200
    return store


@pytest.fixture
def cli(
    demo_store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """``steptrace --store DEMO ARGS`` in this process, ``COLUMNS=columns`` (None: unset,
    as when piped)."""

    def run(*args: str, columns: int | None = 80) -> Result:
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", str(columns))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["--store", str(demo_store), *args])
        captured = capsys.readouterr()
        code = exit_info.value.code
        return Result(code if isinstance(code, int) else 1, captured.out, captured.err)

    return run


def has_header(text: str, name: str) -> bool:
    return re.search(rf"(?m)(^|\s){re.escape(name)}(\s|$)", text) is not None


def ok(result: Result) -> str:
    assert result.code == 0, result.err
    return result.out


def one_error(result: Result, *fragments: str) -> str:
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


SQL_7 = "select run_id, workflow, status, started_at, ended_at, duration_ms, error from runs"


@pytest.mark.parametrize("columns", [80, None], ids=["COLUMNS=80", "piped"])
def test_every_column_shows_at_80_columns_and_when_piped(cli: Cli, columns: int | None) -> None:
    text = ok(cli("sql", SQL_7, columns=columns))
    for name in SQL_7.removeprefix("select ").removesuffix(" from runs").split(", "):
        assert has_header(text, name), (name, text)
    assert f"{N_RUNS} row(s)" in text

    stats = json.loads(ok(cli("stats", "triage", "--json")))
    text = ok(cli("stats", "triage", columns=columns))
    for name in ("step", "count", "failed", "retried", "p50", "p95", "p99", "tokens", "cost"):
        assert has_header(text, name), (name, text)
    classify = next(s for s in stats if s["step"] == "classify")
    row = next(line for line in text.splitlines() if line.startswith("classify "))
    assert f"{classify['input_tokens'] + classify['output_tokens']:,}" in row

    dist = json.loads(ok(cli("dist", "classify", "category", "--json")))
    text = ok(cli("dist", "classify", "category", columns=columns))
    for name in ("value", "count", "share"):
        assert has_header(text, name), (name, text)
    for v in dist["values"]:
        row = next(line for line in text.splitlines() if line.startswith(f"{v['value']} "))
        assert f" {v['count']} " in row and f"{v['share']:.1%}" in row

    runs = json.loads(ok(cli("runs", "--json")))
    text = ok(cli("runs", columns=columns))
    for name in ("run", "workflow", "status", "started", "duration", "error"):
        assert has_header(text, name), (name, text)
    failed = next(r for r in runs if r["status"] == "failed")
    assert failed["error"]["type"] in text

    text = ok(cli("show", failed["run_id"], columns=columns))
    assert failed["run_id"] in text and "check_policy" in text and "PolicyViolation" in text
    show = cli("show", failed["run_id"], columns=columns)
    cut = [line for line in show.out.splitlines() if line.endswith("…")]
    if cut:  # values longer than 300 characters, or than the terminal's width
        assert show.err == (
            f"note: {len(cut)} value(s) were cut to one line (…): "
            f"show {failed['run_id']} --json prints them whole\n"
        )
    else:
        assert show.err == ""
    if columns is None:  # piped: nothing is cut to a terminal's width
        assert all(len(line) <= 300 + 40 for line in cut)


def test_a_table_too_wide_for_the_terminal_prints_one_block_per_row(cli: Cli) -> None:
    text = ok(cli("sql", "select * from runs order by started_at limit 2", columns=40))
    with st.Store.open() as store:
        columns = list(store.sql("select * from runs limit 1")[0])
    assert len(columns) >= 10
    for name in columns:
        assert len(re.findall(rf"(?m)^{re.escape(name)}\s", text)) == 2, (name, text)
    assert "[ row 2 ]" in text


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_listings_print_json_and_csv(cli: Cli) -> None:
    runs = json.loads(ok(cli("runs", "--format", "json", "--last", "50")))
    rows = parse_csv(ok(cli("runs", "--format", "csv", "--last", "50")))
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in runs] and len(rows) == N_RUNS
    assert json.loads(rows[0]["input"]) == runs[0]["input"]

    stats = json.loads(ok(cli("stats", "triage", "--json")))
    rows = parse_csv(ok(cli("stats", "triage", "-f", "csv")))
    assert [(r["step"], int(r["count"])) for r in rows] == [(s["step"], s["count"]) for s in stats]
    assert "cost_usd" in rows[0] and "p95_ms" in rows[0]

    dist = json.loads(ok(cli("dist", "classify", "category", "--json")))
    rows = parse_csv(ok(cli("dist", "classify", "category", "-f", "csv")))
    assert {r["value"]: int(r["count"]) for r in rows} == {
        v["value"]: v["count"] for v in dist["values"]
    }

    rows = parse_csv(ok(cli("sql", SQL_7, "-f", "csv")))
    assert len(rows) == N_RUNS and list(rows[0]) == SQL_7[7:-10].split(", ")

    failed = next(r for r in runs if r["status"] == "failed")
    compared = json.loads(ok(cli("compare", failed["run_id"], "--json")))
    rows = parse_csv(ok(cli("compare", failed["run_id"], "-f", "csv")))
    assert [r["kind"] for r in rows] == [f["kind"] for f in compared["findings"]]

    a, b = failed["run_id"], next(r for r in runs if r["status"] == "succeeded")["run_id"]
    diff = json.loads(ok(cli("diff", a, b, "--json")))
    rows = parse_csv(ok(cli("diff", a, b, "-f", "csv")))
    assert [(r["key"], r["status_a"], r["status_b"], r["changed"]) for r in rows] == [
        (s["key"], s["status"]["a"] or "", s["status"]["b"] or "", str(s["changed"]).lower())
        for s in diff["steps"]
    ]

    conflict = cli("runs", "--json", "--format", "csv")  # a usage error: exit code 2
    assert conflict.code == 2 and "--json and --format csv disagree" in conflict.err


def test_runs_says_when_more_runs_exist(cli: Cli) -> None:
    result = cli("runs")
    assert ok(result).count("triage") == 20
    assert result.err.splitlines()[-1] == (
        f"note: showing 20 of {N_RUNS} runs; --last N for more, --offset 20 for the next page"
    )
    assert "showing 5–9 of" in cli("runs", "--offset", "4", "--last", "5").err
    assert "showing" not in cli("runs", "--last", str(N_RUNS)).err
    json_page = cli("runs", "--json", "-n", "3")
    assert len(json.loads(json_page.out)) == 3 and f"showing 3 of {N_RUNS} runs" in json_page.err
    failed = len(json.loads(ok(cli("runs", "--status", "failed", "--json", "-n", "100"))))
    assert f"showing 1 of {failed} matching runs" in cli("runs", "-s", "failed", "-n", "1").err


def test_unknown_names_are_errors_that_list_what_exists(cli: Cli) -> None:
    steps = "steps: check_policy, classify, draft_reply, lookup_order"
    one_error(cli("dist", "clasify", "category"), "no step named 'clasify'", steps)
    one_error(
        cli("dist", "clasify", "category", "-w", "triage"),
        "no step named 'clasify' in workflow 'triage'",
        steps,
    )
    one_error(cli("dist", "classify", "category", "-w", "triag"), "no workflow named 'triag'")
    line = one_error(cli("dist", "classify", "categry"), "no field 'categry'", "category")
    assert "summary" in line  # the fields there are
    one_error(cli("stats", "triag"), "no workflow named 'triag'", "workflows: triage")
    one_error(cli("runs", "--workflow", "triag"), "no workflow named 'triag'", "workflows: triage")
    one_error(cli("export", "--step", "clasify"), "no step named 'clasify'", steps)
    one_error(cli("show", "ffffffffff"), "no run with id 'ffffffffff'")
    one_error(cli("diff", "ffffffffff", "eeeeeeee"), "no run with id 'ffffffffff'")
    one_error(cli("compare", "ffffffffff"), "no run with id 'ffffffffff'")
    # Usage errors (an unknown option or choice) stay click's: exit code 2.
    assert cli("runs", "--status", "exploded").code == 2
    assert cli("stats", "--format", "xml").code == 2


def test_stats_and_dist_name_the_window_they_used(cli: Cli) -> None:
    runs = json.loads(ok(cli("runs", "--json", "--last", "100")))
    newest, fifth = runs[0]["started_at"], runs[4]["started_at"]

    def stamp(iso: str) -> str:
        return iso[:16].replace("T", " ")

    title = ok(cli("stats", "triage", "--last", "5", columns=None)).splitlines()[0]
    assert title == (
        f"steps of the last 5 runs of triage, {stamp(fifth)} → {stamp(newest)}, most time first"
    )
    title = ok(cli("dist", "classify", "category", "-n", "5", columns=None)).splitlines()[0]
    assert title == "classify.category  over the last 5 runs that ran classify"
    title = ok(cli("dist", "classify", "category", columns=None)).splitlines()[0]
    assert title == f"classify.category  over all {N_RUNS} runs that ran classify (1,000 asked for)"
    title = ok(cli("stats", columns=None)).splitlines()[0]
    oldest = runs[-1]["started_at"]
    assert title.startswith(
        f"steps of all {N_RUNS} runs (1,000 asked for), {stamp(oldest)} → {stamp(newest)}"
    )


def test_version(cli: Cli) -> None:
    expected = getattr(st, "__version__", None) or version("steptrace")
    assert cli("--version") == Result(0, f"steptrace {expected}\n", "")


def test_export_otlp_to_a_dead_endpoint_is_one_line(demo_store: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
    env.update(STEPTRACE_STORE=str(demo_store))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", "export-otlp", "--endpoint", "http://127.0.0.1:9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: the OTLP endpoint http://127.0.0.1:9/v1/traces")
    assert "cannot be reached: connection refused" in proc.stderr
    assert time.monotonic() - started < 5  # not after the exporter's retries (~7 s)
