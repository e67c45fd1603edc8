"""Recovering interrupted durable runs: what ``steptrace recover`` does, usable from Python.

A run of a durable workflow (``@st.workflow(durable=True)``: each step committed before
the next starts) whose process died is marked ``interrupted`` by the next process that
opens the store: at once on the same host (the process is gone), from another host once
its heartbeat has lapsed. ``recover`` finds such runs in the configured store, oldest
first, takes a lease on each (``steptrace.store.leases``: however many recoverers run at
once, on however many machines, each run is resumed by one of them) and resumes it in
place with ``resume``/``aresume``: steps whose records were committed return their
recorded outputs, the rest execute. ``watch`` does that every few seconds until it is
told to stop.

A run that cannot be resumed (its workflow does not import here, its recorded input
cannot be used) is reported as ``skipped`` and its lease given back; it is never raised.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from steptrace.acting import aresume, resume
from steptrace.config import get_config
from steptrace.decorators import RunResult, workflow_spec
from steptrace.errors import ReentryError, RunNotFound
from steptrace.provenance import load_entry_point
from steptrace.record import stored_name
from steptrace.store import Store, leases, writer
from steptrace.store.owner import current as current_owner
from steptrace.store.schema import missing

OutcomeStatus = Literal["succeeded", "failed", "skipped"]


@dataclass(frozen=True)
class Outcome:
    """What recovering one run came to: the resumed run ``succeeded`` or ``failed``
    (``error`` says with what), or it was ``skipped`` (``error`` says why; the run is
    left ``interrupted``)."""

    run_id: str
    workflow: str
    status: OutcomeStatus
    resume_count: int
    """How often the run has been resumed, this time included (for a skipped run: before)."""
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Summary:
    """Counts of outcomes, and how long recovering took."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    _started: float = field(default_factory=time.monotonic, repr=False)

    def add(self, outcome: Outcome) -> None:
        self.runs += 1
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)

    def finish(self) -> Summary:
        self.seconds = round(time.monotonic() - self._started, 3)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def recover(
    *,
    limit: int | None = None,
    workflow: str | None = None,
    exclude: Collection[str] = (),
    stop: threading.Event | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """One pass over the configured store: resume up to ``limit`` (default: all)
    interrupted durable runs, of ``workflow`` only when given, oldest first and one at a
    time; their outcomes. Runs in ``exclude`` are left alone. ``stop``, once set, ends
    the pass after the run in progress; ``on_outcome`` hears of each run as it ends.
    Store errors (an unreachable store) are raised; a run's own are its outcome."""
    url = get_config().store_url()
    if missing(url):
        return []  # no store yet: no runs
    holder = current_owner().id
    name = None if workflow is None else stored_name(workflow)
    skip = set(exclude)
    outcomes: list[Outcome] = []
    with Store.open(url) as store:  # (a store an older steptrace wrote is migrated first)
        # Mark the runs of processes that are gone as interrupted (and write the spill
        # journals they left, which may hold their last committed steps) before looking.
        writer.recover(url, now=True)
        while limit is None or len(outcomes) < limit:
            if stop is not None and stop.is_set():
                break
            # One at a time: no lease waits here for its turn (it could lapse meanwhile),
            # and recoverers running at once share the runs out.
            claimed = leases.claim_interrupted(url, holder, 1, workflow=name, exclude=skip)
            if not claimed:
                break
            outcome = _recover_one(store, url, claimed[0], holder)
            if outcome.status == "skipped":
                skip.add(outcome.run_id)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return outcomes


def watch(
    *,
    interval_s: float = 5.0,
    limit: int | None = None,
    workflow: str | None = None,
    stop: threading.Event,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> Summary:
    """A pass of ``recover`` every ``interval_s`` seconds until ``stop`` is set (the run
    in progress is finished first); the counts of what it did. A run skipped once is
    not tried again by this watcher. A pass that fails (the store is unreachable) is
    handed to ``on_error`` and the next one tried after the interval; the first pass's
    error is raised, as a misconfiguration should be."""
    summary = Summary()
    skipped: set[str] = set()
    first = True
    while not stop.is_set():
        try:
            done = recover(
                limit=limit, workflow=workflow, exclude=skipped, stop=stop, on_outcome=on_outcome
            )
        except Exception as exc:
            if first or on_error is None:
                raise
            on_error(exc)
            done = []
        first = False
        for outcome in done:
            summary.add(outcome)
            if outcome.status == "skipped":
                skipped.add(outcome.run_id)
        stop.wait(interval_s)
    return summary.finish()


def _recover_one(store: Store, url: str, run_id: str, holder: str) -> Outcome:
    started = time.monotonic()
    name, count = "", 0

    def outcome(status: OutcomeStatus, resumes: int, error: str | None = None) -> Outcome:
        seconds = round(time.monotonic() - started, 3)
        return Outcome(run_id, name, status, resumes, seconds, error)

    try:
        record = store.run(run_id)
        name, count = record.workflow, record.resume_count
        fn = load_entry_point(record.entry_point) if record.entry_point else None
        result = _resume(run_id, fn)
    except (ReentryError, RunNotFound) as exc:
        leases.release(url, run_id, holder)
        return outcome("skipped", count, str(exc))
    except Exception as exc:  # not the workflow's (that is the run's outcome): never raised
        leases.release(url, run_id, holder)
        return outcome("skipped", count, f"{type(exc).__name__}: {exc}")
    if result.status != "succeeded":
        error = result.exception
        reason = None if error is None else f"{type(error).__name__}: {error}"
        return outcome("failed", count + 1, reason)
    return outcome("succeeded", count + 1)


def _resume(run_id: str, fn: Callable[..., Any] | None) -> RunResult:
    if fn is not None and _is_async(fn):
        return asyncio.run(aresume(run_id, workflow=fn))
    return resume(run_id, workflow=fn)


def _is_async(fn: Callable[..., Any]) -> bool:
    try:
        return inspect.iscoroutinefunction(workflow_spec(fn).fn)
    except TypeError:  # not a workflow: ``resume`` says so
        return False
