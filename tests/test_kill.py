"""Nothing lost when the process is killed: real workload processes, real signals.

Each test runs ``STEPTRACE_KILL_TRIALS`` trials (default 3; ``scripts/stress.py`` runs
20 and more) on each engine. A trial starts a workload process that loops calling a
workflow (three steps, a tool, an LLM call, two log records, small random sleeps) and prints
each run's id once the call has returned; at a random moment the test sends the signal,
waits for the process to end and opens the store as any reader would
(``Store.open(url)``). It then holds that:

- every printed run is stored as ``succeeded`` with exactly its five spans and two log
  records (a call that returned was committed), and no span is stored twice;
- no run is left ``running``: runs that were in flight show ``interrupted`` (the
  process is dead; the reader on the same host sees it at once);
- the process ended the way it would have without steptrace: by the signal (exit
  status ``-SIGKILL``/``-SIGTERM``), or with the application's own SIGTERM handler's
  ``SystemExit(3)`` when it has one; and within 5 s of the signal (writing what was
  recorded must not stall the exit).

The signal comes at a random moment after the first run returned, so over many trials
it lands in every phase: inside a step, between steps, during a commit, between runs.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import kill_trials
from tests.support.kill_trials import TrialResult

ENGINES = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def _reader_spill_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test process only reads; it must not touch the user's own spill directory.
    monkeypatch.setenv("STEPTRACE_SPILL_DIR", str(tmp_path / "reader-spill"))


@pytest.fixture(params=ENGINES)
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[int], str]:
    """A new, empty store for trial ``n``: a SQLite file in the trial's directory or a
    new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return lambda n: str(tmp_path / f"trial{n}" / "steptrace.db")
    create: Callable[[], str] = request.getfixturevalue("new_postgres_database")
    return lambda n: create()


def _engine(url: str) -> str:
    return "postgresql" if url.startswith("postgresql://") else "sqlite"


def _trials(
    tmp_path: Path, fresh_store: Callable[[int], str], variant: str, sig: signal.Signals
) -> list[TrialResult]:
    rng = random.Random()
    results = []
    for n in range(kill_trials.trials_from_env()):
        url = fresh_store(n)
        results.append(
            kill_trials.run_trial(
                tmp_path / f"trial{n}",
                url,
                engine=_engine(url),
                variant=variant,
                sig=sig,
                rng=rng,
            )
        )
    return results


def _assert_all_ok(results: list[TrialResult]) -> None:
    failed = [r.explain() for r in results if not r.ok]
    assert not failed, f"{len(failed)} of {len(results)} trials lost something:\n" + "\n".join(
        failed
    )


def test_sigkill_loses_no_run_whose_call_returned(
    tmp_path: Path, fresh_store: Callable[[int], str]
) -> None:
    """SIGKILL: no code of the process runs after the signal, so what a returned call
    recorded must already be committed; runs cut short read as ``interrupted``, also
    through ``steptrace runs --json``."""
    results = _trials(tmp_path, fresh_store, "plain", signal.SIGKILL)
    _assert_all_ok(results)
    first = results[0]  # its store, read again by the command line
    statuses = kill_trials.cli_statuses(first.store_url, tmp_path / "trial0")
    assert "running" not in statuses.values(), statuses
    assert all(statuses.get(run_id) == "succeeded" for run_id in first.printed_runs)


def test_sigterm_flushes_and_the_process_still_dies_by_sigterm(
    tmp_path: Path, fresh_store: Callable[[int], str]
) -> None:
    """SIGTERM, no handler of the application's: steptrace writes what is recorded, as
    at a normal exit, then the process dies by SIGTERM (exit status -15) as it would
    have without steptrace."""
    _assert_all_ok(_trials(tmp_path, fresh_store, "plain", signal.SIGTERM))


def test_sigterm_chains_to_the_applications_handler(
    tmp_path: Path, fresh_store: Callable[[int], str]
) -> None:
    """SIGTERM with the application's own handler (it raises ``SystemExit(3)``): the
    handler runs (exit status 3) and nothing is lost; the run the ``SystemExit`` cut
    short may read ``failed`` or ``interrupted``, never ``running``."""
    _assert_all_ok(_trials(tmp_path, fresh_store, "handler", signal.SIGTERM))


def test_durable_steps_survive_sigkill(tmp_path: Path, fresh_store: Callable[[int], str]) -> None:
    """``@st.workflow(durable=True)``: each step is committed before it returns, so
    every step printed after it returned is stored, in finished and in killed runs
    alike (a killed run is in the store, ``interrupted``, with its finished steps)."""
    _assert_all_ok(_trials(tmp_path, fresh_store, "durable", signal.SIGKILL))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_busy_multithreaded_process_loses_nothing(
    tmp_path: Path, fresh_store: Callable[[int], str], sig: signal.Signals
) -> None:
    """Four threads calling the workflow at once (commits in groups, runs in flight in
    every thread): the same guarantees when the signal comes."""
    _assert_all_ok(_trials(tmp_path, fresh_store, "threads", sig))
