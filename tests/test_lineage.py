"""What shows a run's lineage, on each engine: ``Store.derived`` (the forks and replays
made from a run), the lineage filters of ``Store.runs`` and ``steptrace runs``/``export``,
and ``steptrace show``'s lineage lines and ``show --json``'s ``derived``. The runs —
resumed, forked, replayed by the runtime — are ``support/lineage_data.py``'s."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

import steptrace as st
from tests.support import lineage_data
from tests.support.helpers import BACKENDS, steptrace_cli
from tests.support.lineage_data import (
    ENTRY_POINT,
    FORK_AT,
    GRANDCHILD_AT,
    NESTED_FORK_AT,
    RESUMES,
    Lineage,
)

DERIVED_KEYS = {"run_id", "workflow", "status", "started_at", "relation", "forked_at"}
LINEAGE_WORDS = ("forked from", "replay of", "resumed", "derived")


@pytest.fixture(scope="module", params=BACKENDS)
def lineage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Lineage:
    """The runs of ``lineage_data``, recorded once per module and engine (only read)."""
    if request.param == "sqlite":
        return lineage_data.record(tmp_path_factory.mktemp("lineage") / "lineage.db")
    return lineage_data.record(request.getfixturevalue("new_postgres_database")())


@pytest.fixture(scope="module")
def lineage_file(tmp_path_factory: pytest.TempPathFactory) -> Lineage:
    """The same runs in a SQLite file, for the command line: it reads every engine
    through the ``Store`` API the tests above run on both (a command is a process of
    its own, the suite's slowest kind of test)."""
    return lineage_data.record(tmp_path_factory.mktemp("lineage-cli") / "lineage.db")


def ids(runs: list[st.RunRecord]) -> list[str]:
    return [r.run_id for r in runs]


def cli_json(*args: str, store: str) -> Any:
    return json.loads(steptrace_cli(*args, "--json", store=store).stdout)


# --- the Python API -----------------------------------------------------------------------


def test_derived_lists_the_forks_and_replays_of_a_run_newest_first(lineage: Lineage) -> None:
    with st.Store.open(lineage.url) as store:
        derived = store.derived(lineage.source)
        started = {r: store.run(r).started_at for r in (lineage.fork, lineage.replay)}
        assert [(d["run_id"], d["relation"], d["forked_at"]) for d in derived] == [
            (lineage.replay, "replay", None),
            (lineage.nested_fork, "fork", NESTED_FORK_AT),
            (lineage.fork, "fork", FORK_AT),
        ]
        assert all(set(d) == DERIVED_KEYS for d in derived)
        assert {(d["workflow"], d["status"]) for d in derived} == {("ticket", "succeeded")}
        assert derived[0]["started_at"] == started[lineage.replay]
        assert derived[2]["started_at"] == started[lineage.fork]
        # A fork of a fork is the fork's, not the source's; an id prefix names the run.
        assert store.derived(lineage.fork[:10]) == [
            {
                "run_id": lineage.grandchild,
                "workflow": "ticket",
                "status": "succeeded",
                "started_at": store.run(lineage.grandchild).started_at,
                "relation": "fork",
                "forked_at": GRANDCHILD_AT,
            }
        ]
        assert store.derived(lineage.plain) == []
        assert store.derived(lineage.replay) == []
        with pytest.raises(st.RunNotFound, match="no run with id 'zzzz'"):
            store.derived("zzzz")


def test_runs_filters_choose_forks_replays_and_derived_runs(lineage: Lineage) -> None:
    source, fork = lineage.source, lineage.fork
    with st.Store.open(lineage.url) as store:
        assert ids(store.runs(forked_from=source)) == [lineage.nested_fork, fork]
        assert ids(store.runs(replay_of=source)) == [lineage.replay]
        every = [lineage.grandchild, lineage.replay, lineage.nested_fork, fork]
        assert ids(store.runs(derived=True)) == every
        assert store.count_runs(derived=True) == len(every)
        assert ids(store.runs(forked_from=fork)) == [lineage.grandchild]
        assert ids(store.runs(derived=True, where="draft.input.tone = formal")) == [fork]
        assert ids(store.runs(derived=True, last=2, offset=1)) == every[1:3]
        assert store.runs(forked_from=source, replay_of=source) == []
        assert store.count_runs(forked_from=source) == 2
        # The id is a bound value, never SQL text.
        assert store.runs(forked_from="x' OR '1'='1") == []
        assert store.runs(replay_of=f"{source}' OR replay_of IS NULL --") == []
        out = io.BytesIO()
        assert store.export(out, "jsonl", "runs", forked_from=source) == 2
        exported = [json.loads(line) for line in out.getvalue().splitlines()]
        assert {r["run_id"] for r in exported} == {lineage.nested_fork, fork}


# --- the command line ---------------------------------------------------------------------


def test_runs_command_filters_by_lineage(lineage_file: Lineage) -> None:
    lineage = lineage_file
    url = lineage.url
    forks = cli_json("runs", "--forked-from", lineage.source[:8], store=url)
    assert [r["run_id"] for r in forks] == [lineage.nested_fork, lineage.fork]
    assert [(r["forked_from"], r["forked_at"]) for r in forks] == [
        (lineage.source, NESTED_FORK_AT),
        (lineage.source, FORK_AT),
    ]
    replays = cli_json("runs", "--replay-of", lineage.source, store=url)
    assert [r["run_id"] for r in replays] == [lineage.replay]
    derived = cli_json("runs", "--derived", store=url)
    assert [r["run_id"] for r in derived] == [
        lineage.grandchild,
        lineage.replay,
        lineage.nested_fork,
        lineage.fork,
    ]
    both = cli_json("runs", "--derived", "--forked-from", lineage.fork, store=url)
    assert [r["run_id"] for r in both] == [lineage.grandchild]
    none = steptrace_cli("runs", "--replay-of", lineage.plain, store=url)
    assert "no matching runs" in none.stdout
    unknown = steptrace_cli("runs", "--forked-from", "zzzz", store=url, returncode=1)
    assert unknown.stderr.strip().splitlines() == [f"error: no run with id 'zzzz' in {url}"]
    jsonl = steptrace_cli(
        "export", "-t", "runs", "--derived", "--replay-of", lineage.source, store=url
    )
    assert [json.loads(line)["run_id"] for line in jsonl.stdout.splitlines()] == [lineage.replay]


def _run_lines(out: str) -> list[str]:
    """``show``'s lines from the run's header to its input (its lineage lines)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    end = next(i for i, line in enumerate(lines) if "input {" in line)
    return [line.lstrip("│├└─ ") for line in lines[start + 1 : end]]


def _code_lines(store: st.Store, run_id: str) -> list[str]:
    """The lines every run recorded by this steptrace has: its code."""
    version = store.run(run_id).code_version
    assert version is not None and version["steptrace"]
    parts = ", ".join(f"{k} {v}" for k, v in sorted(version.items()) if v is not None)
    return [f"entry point {ENTRY_POINT}", f"code version {parts}"]


def test_show_says_where_a_run_came_from_and_what_was_made_from_it(lineage_file: Lineage) -> None:
    lineage = lineage_file
    url = lineage.url
    with st.Store.open(url) as store:
        code = {r: _code_lines(store, r) for r in (lineage.source, lineage.fork, lineage.plain)}
    source = _run_lines(steptrace_cli("show", lineage.source, store=url).stdout)
    assert source == [
        f"resumed {RESUMES} times",
        *code[lineage.source],
        "derived runs:",
        f"{lineage.replay}  replay  ✓ succeeded",
        f"{lineage.nested_fork}  fork at {NESTED_FORK_AT}  ✓ succeeded",
        f"{lineage.fork}  fork at {FORK_AT}  ✓ succeeded",
    ]
    fork = _run_lines(steptrace_cli("show", lineage.fork[:12], store=url).stdout)
    assert fork == [
        f"forked from {lineage.source} at {FORK_AT}",
        *code[lineage.fork],
        "derived runs:",
        f"{lineage.grandchild}  fork at {GRANDCHILD_AT}  ✓ succeeded",
    ]
    replay = _run_lines(steptrace_cli("show", lineage.replay, store=url).stdout)
    assert replay[0] == f"replay of {lineage.source}" and len(replay) == 3
    plain = steptrace_cli("show", lineage.plain, store=url).stdout
    assert _run_lines(plain) == code[lineage.plain]  # made from nothing, nothing made from it
    assert not [word for word in LINEAGE_WORDS if word in plain]


def test_show_json_is_the_run_and_the_runs_made_from_it(lineage_file: Lineage) -> None:
    lineage = lineage_file
    data = cli_json("show", lineage.source, store=lineage.url)
    with st.Store.open(lineage.url) as store:
        expected = store.run(lineage.source).to_dict() | {"derived": store.derived(lineage.source)}
    assert data == json.loads(json.dumps(expected))
    assert [d["run_id"] for d in data["derived"]] == [
        lineage.replay,
        lineage.nested_fork,
        lineage.fork,
    ]
    assert (data["resume_count"], data["entry_point"]) == (RESUMES, ENTRY_POINT)
    assert set(data["code_version"]) == {"steptrace", "package", "git_commit"}
    plain = cli_json("show", lineage.plain, store=lineage.url)
    assert plain["derived"] == [] and plain["forked_from"] is None
