"""Store faults, one scenario each: the store locked, down, hung, deleted or full while
workflows keep running in this process. Plain functions, no pytest: the store-fault
tests (``test_store_faults.py``) run them briefly, ``scripts/stress.py`` for long.

Every scenario runs the same workflow (three steps, one log record) in a loop in the
calling thread while another thread (``fault_harness.Fault``) applies the fault, holds
it and lifts it; then a few more calls; then it waits (bounded) for what was recorded
to reach the store and returns a ``FaultResult`` (see ``fault_harness``): the slowest
call, what was raised into the application, what the store holds (read with the
engine's own driver, not steptrace), and ``st.health()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.fault_harness import (
    RECOVERY_S,
    Fault,
    FaultResult,
    FaultUnavailable,
    account_problems,
    call,
    configured,
    drive,
    finish,
    health,
    make_workflow,
    warm_up,
)

__all__ = [
    "FaultResult",
    "FaultUnavailable",
    "disk_full",
    "postgres_hung",
    "postgres_stopped",
    "sqlite_dir_deleted",
    "sqlite_locked",
]

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


def sqlite_locked(
    workdir: Path, hold_s: float, recovery_timeout_s: float = RECOVERY_S
) -> FaultResult:
    """Another process holds the SQLite store under ``BEGIN EXCLUSIVE`` for ``hold_s``:
    no write can commit. Calls go on at their pace; the records wait in the journal and
    are all written once the lock is gone."""
    workdir.mkdir(parents=True, exist_ok=True)
    url = str(workdir / "steptrace.db")
    result = FaultResult("sqlite locked", hold_s)
    lockers: list[subprocess.Popen[str]] = []

    def lock() -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        lockers.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "locked":
            raise RuntimeError(f"the locking process said {line!r}")

    def unlock() -> None:
        for proc in lockers:
            with proc:
                proc.communicate("release\n", timeout=60)

    with configured(url, workdir / "spill"):
        wf = make_workflow()
        first = warm_up(wf, result)
        drive(wf, result, Fault(lock, unlock, hold_s), first=first)
        return finish(url, result, recovery_timeout_s)


def postgres_stopped(
    server: Any, workdir: Path, hold_s: float, recovery_timeout_s: float = RECOVERY_S
) -> FaultResult:
    """The PostgreSQL server (a ``pg_server.PostgresServer`` of the caller's own) is shut down
    for ``hold_s`` and started again: connections are refused meanwhile."""
    result = FaultResult("postgresql stopped", hold_s)
    with configured(server.url, workdir / "spill"):
        wf = make_workflow()
        first = warm_up(wf, result)
        drive(wf, result, Fault(server.pause, server.resume, hold_s), first=first)
        return finish(server.url, result, recovery_timeout_s)


def server_pids(datadir: str) -> list[int]:
    """The postmaster's pid (from ``postmaster.pid``), then its children's."""
    postmaster = int(Path(datadir, "postmaster.pid").read_text().split()[0])
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == postmaster:
            children.append(int(entry))
    return [postmaster, *children]


def postgres_hung(
    server: Any, workdir: Path, hold_s: float, recovery_timeout_s: float = RECOVERY_S
) -> FaultResult:
    """The PostgreSQL server hangs for ``hold_s``: SIGSTOP to the postmaster and every
    backend, then SIGCONT. Connections stay open and connecting seems to work, but no
    statement returns: only a timeout of steptrace's own can notice."""
    result = FaultResult("postgresql hung", hold_s)
    stopped: list[int] = []

    def hang() -> None:
        for pid in server_pids(server.datadir):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    def wake() -> None:
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    with configured(server.url, workdir / "spill"):
        wf = make_workflow()
        first = warm_up(wf, result)
        drive(wf, result, Fault(hang, wake, hold_s), first=first)
        return finish(server.url, result, recovery_timeout_s)


def sqlite_dir_deleted(
    workdir: Path, after_s: float, recovery_timeout_s: float = RECOVERY_S
) -> FaultResult:
    """The SQLite store's directory is deleted (``rm -rf``) while runs go on, which
    then go on ``after_s``. Runs that began after the deletion must be in the store
    recreated at the same path, complete; runs that ended after it must be there too.
    (What was committed before the deletion went with the directory.)"""
    store_dir = workdir / "store"
    url = str(store_dir / "steptrace.db")
    result = FaultResult("sqlite dir deleted", after_s, exact_store=False, expect_spill=False)

    def delete() -> None:
        time.sleep(0.2)  # runs are going on
        shutil.rmtree(store_dir, ignore_errors=True)

    with configured(url, workdir / "spill"):
        wf = make_workflow()
        first = warm_up(wf, result)
        fault = Fault(delete, None, after_s)
        drive(wf, result, fault, first=first)
        deleted = fault.applied_at
        assert deleted is not None
        result.expected_runs = {c.run_id for c in result.calls if c.run_id and c.started > deleted}
        result.present_runs = {c.run_id for c in result.calls if c.run_id and c.ended > deleted}
        finish(url, result, recovery_timeout_s)
        if not os.path.exists(url):
            result.missing.append("(the store was not recreated)")
        return result


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def disk_full(
    workdir: Path,
    hold_s: float,
    *,
    size: str = "4m",
    recovery_timeout_s: float = RECOVERY_S,
) -> FaultResult:
    """The SQLite store lives on a small tmpfs (``size``) that runs fill up; calls go on
    ``hold_s`` with the disk full, then the file system is grown (``remount``) and
    everything recorded must arrive. While full, ``st.health()`` must account for every
    record recorded so far (``during`` in ``problems``). Needs ``mount`` (root)."""
    mnt = workdir / "disk"
    mnt.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise FaultUnavailable(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    url = str(mnt / "steptrace.db")
    result = FaultResult("disk full", hold_s)
    try:
        with configured(url, workdir / "spill"):
            wf = make_workflow(payload_chars=16_000)
            i = warm_up(wf, result)
            deadline = time.monotonic() + 60
            while _free_bytes(mnt) > 64 * 1024 and time.monotonic() < deadline:
                result.calls.append(call(wf, i))
                i += 1
            if _free_bytes(mnt) > 64 * 1024:
                raise RuntimeError(f"the {size} disk never filled ({_free_bytes(mnt)} B free)")
            full_at = time.monotonic()
            while time.monotonic() < full_at + hold_s:
                result.calls.append(call(wf, i))
                i += 1
            result.calls_during_fault = sum(c.started >= full_at for c in result.calls)
            result.during = account_problems(
                result.health_before,
                health(),
                result.recorded(),
                expect_spill=True,
                settled=False,
            )
            subprocess.run(
                ["mount", "-o", "remount,size=256m", str(mnt)], check=True, capture_output=True
            )
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                result.calls.append(call(wf, i))
                i += 1
            return finish(url, result, recovery_timeout_s)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
