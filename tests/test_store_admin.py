"""Schema versions and retention on both backends (issue 6, points 4 and 5): automatic
migration on first use (and with it off, a clear refusal until ``steptrace migrate``),
an upgrade from the oldest schema, a newer schema refused, ``steptrace migrate`` and
``steptrace prune`` as real subprocesses."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.store.migrations import MIGRATIONS
from tests.support.helpers import clean_env, is_postgres, raw_sql

ROOT = Path(__file__).resolve().parents[1]
NAMES = [m.name for m in MIGRATIONS]


def _workflow() -> Any:
    @st.step
    def double(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * 2

    @st.step
    def ask(x: int) -> str:
        logging.getLogger("admin").info("asking about %d", x)
        return st.llm.chat("scripted:admin", [{"role": "user", "content": str(x)}]).text

    @st.workflow
    def wf(x: int) -> str:
        double(x)
        return ask(x)

    st.llm.script("admin", ["fine"])
    return wf


def cli(
    *args: str, store: str, returncode: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = clean_env()
    proc = subprocess.run(
        [sys.executable, "-m", "steptrace", *args],
        cwd=ROOT,
        env={**base, "STEPTRACE_STORE": store, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == returncode, proc.stderr
    return proc


def _dialect(url: str) -> str:
    return "postgresql" if is_postgres(url) else "sqlite"


def _create_at(url: str, n_migrations: int) -> None:
    """A store as an older steptrace left it: the first ``n_migrations`` applied."""
    raw_sql(url, "CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration in MIGRATIONS[:n_migrations]:
        for statement in migration.sql(_dialect(url)):
            raw_sql(url, statement)
        raw_sql(url, "INSERT INTO _migrations VALUES (?, 'then')", (migration.name,))


def _applied(url: str) -> list[str]:
    return [str(r[0]) for r in raw_sql(url, "SELECT name FROM _migrations ORDER BY name")]


# --- migrations ---------------------------------------------------------------------------


def test_first_use_creates_the_schema_and_records_every_migration(store_url: str) -> None:
    assert _workflow()(2) == "fine"
    st.flush()
    assert _applied(store_url) == NAMES
    assert raw_sql(store_url, "SELECT count(*) FROM runs") == [(1,)]
    assert raw_sql(store_url, "SELECT count(*) FROM spans WHERE kind = 'step'") == [(2,)]


def test_a_store_at_the_oldest_schema_is_upgraded_keeping_its_runs(store_url: str) -> None:
    _create_at(store_url, 1)
    raw_sql(
        store_url,
        "INSERT INTO runs (run_id, workflow, status, trace_id, span_id, started_at) "
        "VALUES ('old', 'legacy', 'succeeded', 't', 's', '2026-01-01T00:00:00.000000Z')",
    )
    _workflow()(1)
    with st.Store.open(store_url) as store:
        assert store.run("old").workflow == "legacy"
        assert sorted(r.workflow for r in store.runs()) == ["legacy", "wf"]
    assert _applied(store_url) == NAMES


def test_migrate_command_applies_what_is_pending_then_says_current(store_url: str) -> None:
    _create_at(store_url, 1)
    first = cli("migrate", store=store_url).stdout
    assert [line.split()[1] for line in first.splitlines() if line.startswith("applied")] == (
        NAMES[1:]
    )
    second = cli("migrate", "--json", store=store_url).stdout
    assert json.loads(second)["applied"] == []
    assert "schema is current" in cli("migrate", store=store_url).stdout
    assert _applied(store_url) == NAMES


def test_with_automatic_migration_off_a_store_behind_is_refused_until_migrated(
    store_url: str,
) -> None:
    _create_at(store_url, 2)
    st.configure(auto_migrate=False)
    wf = _workflow()
    with pytest.raises(st.ConfigError, match=r"0003_query.*run `steptrace migrate`"):
        wf(1)
    with pytest.raises(st.ConfigError, match="steptrace migrate"):
        st.Store.open(store_url)
    assert _applied(store_url) == NAMES[:2]  # nothing was changed
    assert "applied 0003_query" in cli("migrate", store=store_url).stdout
    assert wf(1) == "fine"
    st.flush()
    assert raw_sql(store_url, "SELECT count(*) FROM runs") == [(1,)]


def test_the_environment_variable_turns_automatic_migration_off(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPTRACE_AUTO_MIGRATE", "0")
    with pytest.raises(st.ConfigError, match="automatic migration is off"):
        _workflow()(1)
    monkeypatch.setenv("STEPTRACE_AUTO_MIGRATE", "1")
    assert _workflow()(1) == "fine"


def test_a_store_migrated_by_a_newer_steptrace_is_refused(store_url: str) -> None:
    _workflow()(1)
    st.flush()
    st.configure(store=store_url)  # closes the writer
    raw_sql(store_url, "INSERT INTO _migrations VALUES ('0099_from_the_future', 'x')")
    with pytest.raises(st.ConfigError, match=r"newer steptrace.*0099_from_the_future"):
        _workflow()(2)
    proc = cli("migrate", store=store_url, returncode=1)
    assert "0099_from_the_future" in proc.stderr and "upgrade steptrace" in proc.stderr
    assert raw_sql(store_url, "SELECT count(*) FROM runs") == [(1,)]  # nothing written


# --- prune ------------------------------------------------------------------------------


def _age(url: str, run_ids: list[str], days: int) -> None:
    """Move runs ``days`` into the past (the test's own SQL, as time would)."""
    when = f"2020-01-{days:02d}T00:00:00.000000Z"
    for run_id in run_ids:
        raw_sql(url, "UPDATE runs SET started_at = ? WHERE run_id = ?", (when, run_id))


def _counts(url: str, run_ids: list[str]) -> dict[str, int]:
    marks = ", ".join("?" * len(run_ids))
    out = {}
    for table in ("runs", "spans", "llm_calls", "logs"):
        ((n,),) = raw_sql(
            url, f"SELECT count(*) FROM {table} WHERE run_id IN ({marks})", tuple(run_ids)
        )
        out[table] = int(n)  # type: ignore[call-overload]
    return out


def test_prune_deletes_old_runs_with_everything_they_own(store_url: str) -> None:
    wf = _workflow()
    old_ok = [st.run(wf, i).run_id for i in range(7)]
    old_failed = [st.run(wf, -1 - i).run_id for i in range(2)]
    recent = [st.run(wf, 100 + i).run_id for i in range(3)]
    st.flush()
    _age(store_url, old_ok + old_failed, 1)
    old = old_ok + old_failed
    before = _counts(store_url, old)
    # per succeeded run: the run, 2 steps + 1 LLM span, 1 LLM call, 1 log record
    assert before == {"runs": 9, "spans": 7 * 3 + 2, "llm_calls": 7, "logs": 7}

    dry = json.loads(
        cli("prune", "--older-than", "30d", "--dry-run", "--json", store=store_url).stdout
    )
    assert (dry["runs"], dry["spans"], dry["llm_calls"], dry["logs"]) == (9, 23, 7, 7)
    assert _counts(store_url, old) == before  # nothing deleted

    kept = cli("prune", "--older-than", "30d", "--keep-failed", "--batch", "3", store=store_url)
    assert "deleted 7 runs" in kept.stdout and "21 spans" in kept.stdout
    assert "3 transaction(s)" in kept.stdout
    assert _counts(store_url, old_ok) == {"runs": 0, "spans": 0, "llm_calls": 0, "logs": 0}
    assert _counts(store_url, old_failed) == {"runs": 2, "spans": 2, "llm_calls": 0, "logs": 0}

    from steptrace.store.retention import prune

    result = prune(store_url, "30d", workflow="elsewhere")
    assert result.runs == 0
    result = prune(store_url, "30d", workflow="wf")
    assert (result.runs, result.spans) == (2, 2)
    assert _counts(store_url, recent) == {"runs": 3, "spans": 9, "llm_calls": 3, "logs": 3}
    with st.Store.open(store_url) as store:
        assert sorted(r.run_id for r in store.runs()) == sorted(recent)


def test_prune_rejects_a_malformed_age_without_touching_the_store(tmp_path: Path) -> None:
    store = str(tmp_path / "untouched.db")
    proc = cli("prune", "--older-than", "a while", store=store, returncode=1)
    assert "--older-than" in proc.stderr and "not a time" in proc.stderr
    assert not os.path.exists(store)
