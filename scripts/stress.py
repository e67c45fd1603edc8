#!/usr/bin/env python3
"""The long versions of the kill and store-fault tests, with figures.

Kill trials: for each engine (SQLite; PostgreSQL on a throwaway server on 127.0.0.1)
and each variant (SIGKILL, SIGTERM, SIGTERM with the application's own handler, a
durable workflow under SIGKILL, four busy threads under SIGKILL and SIGTERM), ``--trials``
trials (default 20): a workload process killed at a random moment, its store checked
(see ``tests/support/kill_trials.py``). Store faults at full length (see
``tests/support/fault_scenarios.py``): SQLite locked 20 s, PostgreSQL stopped 90 s, PostgreSQL
hung 30 s, the store directory deleted, a full disk (needs root for ``mount``).

Resume trials (``--only resume``): for each engine, ``--trials`` durable runs (sync and
async) in child processes killed by SIGKILL at random moments, in batches of
``--resume-batch`` processes at once, each batch then recovered by ``steptrace recover``
(see ``tests/support/resume_trials.py``): counts of runs completed, of steps committed
before the kill and executed again (must be 0), of steps the kill caught between their
side effect and their commit.

Prints a table per part and exits 1 when anything was lost. It tests the ``src/`` of
the checkout it lives in (or the ``src`` directory ``STEPTRACE_SRC`` names), touches
only loopback and temporary directories, and stops by itself (``--deadline-s``,
default one hour, on top of each step's own timeouts).

    .venv/bin/python -m scripts.stress                 # everything (about 15 minutes)
    .venv/bin/python -m scripts.stress --only kill --trials 50 --engines sqlite
    .venv/bin/python -m scripts.stress --only resume --trials 50

(from the repository's root: it uses the tests' ``tests.support`` package)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(os.environ.get("STEPTRACE_SRC") or ROOT / "src")
# The steptrace under test: this checkout's (or STEPTRACE_SRC's), not an installed one.
sys.path.insert(0, str(SRC))

from tests.support import fault_scenarios, kill_trials, pg_server, resume_trials  # noqa: E402

KILL_CASES: tuple[tuple[str, signal.Signals], ...] = (
    ("plain", signal.SIGKILL),
    ("plain", signal.SIGTERM),
    ("handler", signal.SIGTERM),
    ("durable", signal.SIGKILL),
    ("threads", signal.SIGKILL),
    ("threads", signal.SIGTERM),
)


class WarningCounter(logging.Handler):
    """Counts steptrace's own warnings (a store that is down says so on every retry)
    instead of printing them; ``--verbose`` prints them too."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.verbose:
            print(f"    steptrace: {record.getMessage()[:300]}", flush=True)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


WARNINGS = WarningCounter(verbose=False)


class OutOfTime(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise OutOfTime("the stress run hit its deadline")


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print(flush=True)


_db_numbers = iter(range(1_000_000))


def trial_store(engine: str, workdir: Path, server: pg_server.PostgresServer | None) -> str:
    """A new, empty store for one trial: a SQLite file in ``workdir``, or a new database
    on ``server``."""
    if engine == "sqlite":
        return str(workdir / "steptrace.db")
    assert server is not None
    return pg_server.create_database(server.url, f"stress_{os.getpid()}_{next(_db_numbers)}")


def kill_part(
    work: Path, engines: list[str], trials: int, server: pg_server.PostgresServer | None
) -> tuple[list[dict[str, Any]], list[str]]:
    rng = random.Random()
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for engine in engines:
        for variant, sig in KILL_CASES:
            row: dict[str, Any] = {
                "engine": engine,
                "variant": variant,
                "signal": sig.name,
                "trials": 0,
                "failed": 0,
                "printed": 0,
                "missing": 0,
                "incomplete": 0,
                "left_running": 0,
                "missing_steps": 0,
                "bad_exit": 0,
                "slow_exit": 0,
                "max_exit_s": 0.0,
                "interrupted": 0,
                "seconds": 0.0,
            }
            started = time.monotonic()
            for n in range(trials):
                workdir = work / f"kill-{engine}-{variant}-{sig.name}-{n}"
                url = trial_store(engine, workdir, server)
                result = kill_trials.run_trial(
                    workdir, url, engine=engine, variant=variant, sig=sig, rng=rng
                )
                row["trials"] += 1
                row["failed"] += not result.ok
                row["printed"] += len(result.printed_runs)
                row["missing"] += len(result.missing)
                row["incomplete"] += len(result.incomplete)
                row["left_running"] += len(result.left_running)
                row["missing_steps"] += len(result.missing_steps)
                row["bad_exit"] += result.exit_status != result.expected_status
                exit_s = result.exit_s if result.exit_s is not None else float("inf")
                row["slow_exit"] += exit_s > kill_trials.MAX_EXIT_S
                row["max_exit_s"] = round(max(row["max_exit_s"], exit_s), 2)
                row["interrupted"] += result.statuses.get("interrupted", 0)
                if not result.ok:
                    failures.append(result.explain())
                shutil.rmtree(workdir, ignore_errors=True)
            row["seconds"] = round(time.monotonic() - started, 1)
            rows.append(row)
            print(
                f"  {engine} {variant} {sig.name}: {row['failed']} of {trials} trials failed",
                flush=True,
            )
    return rows, failures


def resume_part(
    work: Path,
    engines: list[str],
    trials: int,
    batch: int,
    server: pg_server.PostgresServer | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    rng = random.Random()
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for engine in engines:
        total = resume_trials.TrialCounts()
        started = time.monotonic()
        for first in range(0, trials, batch):
            size = min(batch, trials - first)
            workdir = work / f"resume-{engine}-{first}"
            url = trial_store(engine, workdir, server)
            kinds = [("sync", "async")[n % 2] for n in range(size)]
            killed = resume_trials.kill_children(workdir, url, kinds, rng)
            try:
                resume_trials.recover_once(url, workdir)
            except RuntimeError as exc:
                failures.append(f"{engine}: {exc}")
            counts = resume_trials.check(workdir, url, killed)
            total.add(counts)
            failures += [f"{engine}: {problem}" for problem in counts.problems]
            shutil.rmtree(workdir, ignore_errors=True)
        row = {"engine": engine, **total.row(), "seconds": round(time.monotonic() - started, 1)}
        rows.append(row)
        print(
            f"  {engine}: {total.completed} of {total.trials} runs completed, "
            f"{total.re_executed} committed steps executed again",
            flush=True,
        )
    return rows, failures


def fault_part(
    work: Path, engines: list[str], seconds: dict[str, float]
) -> tuple[list[dict[str, Any]], list[str]]:
    scenarios: list[tuple[str, Callable[[Path], fault_scenarios.FaultResult]]] = []
    recovery_s = seconds["recovery"]
    if "sqlite" in engines:
        scenarios += [
            (
                "sqlite locked",
                lambda d: fault_scenarios.sqlite_locked(d, seconds["lock"], recovery_s),
            ),
            (
                "sqlite dir deleted",
                lambda d: fault_scenarios.sqlite_dir_deleted(d, seconds["deleted"], recovery_s),
            ),
            (
                "disk full",
                lambda d: fault_scenarios.disk_full(
                    d, seconds["disk"], size="4m", recovery_timeout_s=recovery_s
                ),
            ),
        ]
    if "postgresql" in engines:

        def stopped(d: Path) -> fault_scenarios.FaultResult:
            with pg_server.start() as server:
                return fault_scenarios.postgres_stopped(server, d, seconds["pg_down"], recovery_s)

        def hung(d: Path) -> fault_scenarios.FaultResult:
            with pg_server.start() as server:
                return fault_scenarios.postgres_hung(server, d, seconds["pg_hung"], recovery_s)

        scenarios += [("postgresql stopped", stopped), ("postgresql hung", hung)]
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for name, scenario in scenarios:
        workdir = work / name.replace(" ", "-")
        WARNINGS.take()
        try:
            result = scenario(workdir)
        except fault_scenarios.FaultUnavailable as exc:
            rows.append({"scenario": name, "ok": f"skipped: {exc}"})
            continue
        row = result.row() | {"st_warnings": WARNINGS.take()}
        rows.append(row)
        problems = result.problems()
        if problems:
            failures.append(f"{name}: " + "; ".join(problems))
        print(f"  {name}: {'ok' if row['ok'] else 'FAILED'}", flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("kill", "faults", "resume"))
    parser.add_argument(
        "--trials", type=int, default=20, help="kill trials per case; resume trials per engine"
    )
    parser.add_argument(
        "--resume-batch", type=int, default=10, help="resume trials' processes killed at once"
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--lock-s", type=float, default=20.0)
    parser.add_argument("--pg-down-s", type=float, default=90.0)
    parser.add_argument("--pg-hung-s", type=float, default=30.0)
    parser.add_argument("--deleted-s", type=float, default=10.0)
    parser.add_argument("--disk-s", type=float, default=10.0)
    parser.add_argument(
        "--recovery-s", type=float, default=120.0, help="wait at most this for records to arrive"
    )
    parser.add_argument("--deadline-s", type=int, default=3600)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--verbose", action="store_true", help="print steptrace's warnings")
    args = parser.parse_args()
    WARNINGS.verbose = args.verbose
    st_log = logging.getLogger("steptrace")
    st_log.addHandler(WARNINGS)
    st_log.propagate = False
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(args.deadline_s)
    work = Path(tempfile.mkdtemp(prefix="steptrace-stress-"))
    os.environ["STEPTRACE_SPILL_DIR"] = str(work / "reader-spill")  # never the user's
    import steptrace

    print(f"steptrace from {Path(steptrace.__file__).parent}; work in {work}\n", flush=True)
    figures: dict[str, Any] = {}
    failures: list[str] = []
    try:
        if args.only in (None, "kill"):
            print(f"== kill trials ({args.trials} per case)", flush=True)
            with contextmanager_or_none("postgresql" in engines) as server:
                rows, failed = kill_part(work, engines, args.trials, server)
            figures["kill"] = rows
            failures += failed
            print_table(rows)
        if args.only in (None, "resume"):
            print(f"== resume trials ({args.trials} per engine)", flush=True)
            with contextmanager_or_none("postgresql" in engines) as server:
                rows, failed = resume_part(work, engines, args.trials, args.resume_batch, server)
            figures["resume"] = rows
            failures += failed
            print_table(rows)
        if args.only in (None, "faults"):
            print("== store faults", flush=True)
            seconds = {
                "lock": args.lock_s,
                "pg_down": args.pg_down_s,
                "pg_hung": args.pg_hung_s,
                "deleted": args.deleted_s,
                "disk": args.disk_s,
                "recovery": args.recovery_s,
            }
            rows, failed = fault_part(work, engines, seconds)
            figures["faults"] = rows
            failures += failed
            print_table(rows)
    except OutOfTime as exc:
        failures.append(str(exc))
    finally:
        signal.alarm(0)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if failures:
        print(f"== {len(failures)} failures")
        for failure in failures:
            print(failure[:4000])
        return 1
    print("== nothing lost")
    return 0


@contextmanager
def contextmanager_or_none(wanted: bool) -> Iterator[pg_server.PostgresServer | None]:
    if not wanted:
        yield None
        return
    with pg_server.start() as server:
        yield server


if __name__ == "__main__":
    sys.exit(main())
