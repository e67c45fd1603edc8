"""No fault of the store stalls a workflow or loses a record.

Each test runs one scenario of ``fault_scenarios.py`` in this process: the workflow is
called in a loop while another thread (or process) locks, stops, hangs, deletes or
fills the store, then lifts the fault. The test holds that

- no call took more than 2 s (steptrace waits on the store about 1 s, then spills
  to its journal in ``STEPTRACE_SPILL_DIR``) and none raised;
- once the store is back, every run is in it exactly once, with all its spans and log
  records (counted with the engine's own driver);
- ``st.health()`` accounts for every record: something was ``spilled`` and all of it
  ``replayed``, nothing ``lost``.

Fault durations are short here; ``scripts/stress.py`` runs the long ones. They can be
set with ``STEPTRACE_FAULT_LOCK_S``, ``STEPTRACE_FAULT_PG_DOWN_S``,
``STEPTRACE_FAULT_PG_HUNG_S`` and ``STEPTRACE_FAULT_DISK_S``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import fault_scenarios, pg_server
from tests.support.fault_scenarios import FaultResult


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _assert_held(result: FaultResult) -> None:
    problems = result.problems()
    assert not problems, f"{result.name}: {result.row()}\n" + "\n".join(problems)


def test_a_locked_sqlite_store_neither_stalls_nor_loses(tmp_path: Path) -> None:
    """Another process holds the SQLite file under ``BEGIN EXCLUSIVE`` (suite: 4 s)."""
    hold_s = _seconds("STEPTRACE_FAULT_LOCK_S", 4.0)
    _assert_held(fault_scenarios.sqlite_locked(tmp_path, hold_s))


def test_a_stopped_postgres_server_neither_stalls_nor_loses(
    tmp_path: Path, own_server: pg_server.PostgresServer
) -> None:
    """The PostgreSQL server is shut down, then started again (suite: 6 s down)."""
    hold_s = _seconds("STEPTRACE_FAULT_PG_DOWN_S", 6.0)
    _assert_held(fault_scenarios.postgres_stopped(own_server, tmp_path, hold_s))


def test_a_hung_postgres_server_neither_stalls_nor_loses(
    tmp_path: Path, own_server: pg_server.PostgresServer
) -> None:
    """The PostgreSQL server and its backends are SIGSTOPped, then SIGCONTed (suite:
    5 s): open connections hang rather than fail."""
    hold_s = _seconds("STEPTRACE_FAULT_PG_HUNG_S", 5.0)
    _assert_held(fault_scenarios.postgres_hung(own_server, tmp_path, hold_s))


def test_a_deleted_sqlite_directory_is_recreated(tmp_path: Path) -> None:
    """``rm -rf`` of the store's directory while runs go on: the store is recreated at
    its path and every run that ended after the deletion is in it (those that began
    after it complete)."""
    _assert_held(fault_scenarios.sqlite_dir_deleted(tmp_path, 2.0))


def test_a_full_disk_neither_raises_nor_loses(tmp_path: Path) -> None:
    """The SQLite store on a 4 MB tmpfs that the runs fill: nothing raised, calls
    stay fast, ``st.health()`` accounts for every record while the disk is full, and
    once the file system grows everything is written."""
    try:
        result = fault_scenarios.disk_full(
            tmp_path, _seconds("STEPTRACE_FAULT_DISK_S", 1.5), size="4m"
        )
    except fault_scenarios.FaultUnavailable as exc:
        pytest.skip(f"a full disk needs a tmpfs mount (run as root): {exc}")
    _assert_held(result)
