"""The harness of the store-fault scenarios (``fault_scenarios.py``): the workflow
and the call loop that times every call, the ``Fault`` thread that applies, holds and
lifts a fault, reading the store back with the engine's own driver, and the checks of
``st.health()``. Plain functions, no pytest.

``FaultResult.problems()`` lists every broken promise of the contract:

- no call takes more than ``MAX_CALL_S`` (the store is waited on for about 1 s);
- nothing is raised into the application;
- after the fault, every run is stored once with all its spans and log records;
- ``st.health()`` accounts for every record (see ``account_problems``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import steptrace as st
import steptrace.config

MAX_CALL_S = 2.0
RECOVERY_S = 15.0
"""How long a scenario waits, once the fault is lifted, for the records to arrive."""
SPANS_PER_RUN = 3
LOGS_PER_RUN = 1
RECORDS_PER_RUN = 2 + SPANS_PER_RUN
"""What ``st.health()`` counts per run: its start row, its end row and one record per
span (a span's log records travel with it). See ``account_problems``."""
HEALTH_KEYS = frozenset(
    {
        "written",
        "spilled",
        "replayed",
        "quarantined",
        "lost",
        "sanitized",
        "queued",
        "queued_bytes",
        "journal_bytes",
        "state",
        "last_error",
        "store",
    }
)
COUNTERS = ("written", "spilled", "replayed", "quarantined", "lost", "sanitized")
OPTIONAL_COUNTERS = ("recorded", "pending")
"""Counters ``st.health()`` may give beyond the contract's; checked when present."""


class FaultUnavailable(RuntimeError):
    """The fault cannot be made on this machine (e.g. ``mount`` is not permitted)."""


@dataclass
class Call:
    run_id: str | None
    started: float
    ended: float
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


@dataclass
class FaultResult:
    """What one scenario measured. ``problems()`` is empty when the contract held."""

    name: str
    fault_s: float
    warm_calls: list[Call] = field(default_factory=list)
    """Calls before the fault (the first opens and migrates the store): not timed."""
    calls: list[Call] = field(default_factory=list)
    calls_during_fault: int = 0
    expected_runs: set[str] = field(default_factory=set)
    """Runs that must be stored complete, with their spans and logs."""
    present_runs: set[str] = field(default_factory=set)
    """Runs that must at least be stored as ``succeeded`` (the directory scenario)."""
    stored_runs: int = 0
    stored_spans: int = 0
    distinct_spans: int = 0
    stored_logs: int = 0
    missing: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    exact_store: bool = True
    """Whether the store must hold exactly ``expected_runs`` (false when the scenario
    deleted records itself)."""
    health_before: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    expect_spill: bool = True
    recovery_s: float = 0.0
    during: list[str] = field(default_factory=list)
    """Problems with ``st.health()`` while the fault held (the disk scenario)."""

    @property
    def max_latency_s(self) -> float:
        return max((c.latency_s for c in self.calls), default=0.0)

    @property
    def errors(self) -> list[str]:
        return [c.error for c in [*self.warm_calls, *self.calls] if c.error]

    @property
    def lost(self) -> int:
        """Runs that should be stored and are not, or not completely."""
        return len(self.missing) + len(self.incomplete)

    def recorded(self) -> int:
        return RECORDS_PER_RUN * (len(self.warm_calls) + len(self.calls))

    def problems(self) -> list[str]:
        found = []
        if self.errors:
            found.append(f"{len(self.errors)} calls raised into the app: {self.errors[:3]}")
        if self.max_latency_s > MAX_CALL_S:
            slow = sum(c.latency_s > MAX_CALL_S for c in self.calls)
            found.append(
                f"{slow} calls took more than {MAX_CALL_S} s (slowest {self.max_latency_s:.2f} s)"
            )
        if self.calls_during_fault == 0:
            found.append("no call ran while the fault held (the scenario proved nothing)")
        if self.missing:
            found.append(f"{len(self.missing)} runs not stored: {self.missing[:3]}")
        if self.incomplete:
            found.append(f"{len(self.incomplete)} runs incomplete: {self.incomplete[:3]}")
        if self.stored_spans != self.distinct_spans:
            found.append(f"{self.stored_spans - self.distinct_spans} spans stored twice")
        if self.exact_store:
            want = len(self.expected_runs)
            if (self.stored_runs, self.stored_spans, self.stored_logs) != (
                want,
                want * SPANS_PER_RUN,
                want * LOGS_PER_RUN,
            ):
                found.append(
                    f"store holds {self.stored_runs} runs, {self.stored_spans} spans, "
                    f"{self.stored_logs} logs; expected {want}, {want * SPANS_PER_RUN}, "
                    f"{want * LOGS_PER_RUN}"
                )
        found += [f"while the fault held: {p}" for p in self.during]
        found += account_problems(
            self.health_before, self.health, self.recorded(), expect_spill=self.expect_spill
        )
        return found

    def row(self) -> dict[str, Any]:
        """The figures ``scripts/stress.py`` prints."""
        counts = _delta(self.health_before, self.health) if self.health else {}
        return {
            "scenario": self.name,
            "fault_s": self.fault_s,
            "calls": len(self.calls),
            "during": self.calls_during_fault,
            "max_call_s": round(self.max_latency_s, 3),
            "raised": len(self.errors),
            "lost_runs": self.lost,
            "dup_spans": self.stored_spans - self.distinct_spans,
            "recovery_s": round(self.recovery_s, 1),
            **{k: counts.get(k) for k in ("written", "spilled", "replayed", "lost")},
            "ok": not self.problems(),
        }


def _delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, int]:
    """The counters' growth over the scenario (a counter may predate it in the process)."""
    after = after or {}
    before = before or {}
    return {
        k: int(after.get(k) or 0) - int(before.get(k) or 0) for k in (*COUNTERS, *OPTIONAL_COUNTERS)
    }


def _pending(before: dict[str, Any] | None, after: dict[str, Any]) -> int:
    """Records waiting in the spill journal."""
    d = _delta(before, after)
    return d["pending"] if "pending" in after else d["spilled"] - d["replayed"]


def account_problems(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    recorded: int,
    *,
    expect_spill: bool,
    settled: bool = True,
) -> list[str]:
    """What is wrong with ``st.health()`` once the scenario is over.

    The units (one place to change them): counts are in records, ``RECORDS_PER_RUN``
    per run; ``written`` counts every record that reached the store by any route
    (``replayed`` ones too); ``pending`` (or, where absent, ``spilled - replayed``) is
    what waits in the journal, ``queued`` what waits in memory. So ``written + lost +
    quarantined + pending + queued`` is every record this process recorded (and equals
    ``recorded`` where health gives it); after recovery (``settled``) ``written`` is
    all of them. Nothing may be lost, quarantined or sanitized: the values are clean
    and every fault is one the journal rides out.
    """
    if after is None:
        return ["st.health() is missing"]
    found = []
    absent = HEALTH_KEYS - after.keys()
    if absent:
        found.append(f"st.health() lacks {sorted(absent)}")
        return found
    d = _delta(before, after)
    pending = _pending(before, after)
    if "recorded" in after and d["recorded"] != recorded:
        found.append(f"health says {d['recorded']} records were recorded, not {recorded}")
    total = d["written"] + d["lost"] + d["quarantined"] + pending + int(after["queued"])
    if total != recorded:
        found.append(
            f"health accounts for {total} records (written {d['written']} + lost {d['lost']} "
            f"+ quarantined {d['quarantined']} + journal {pending} + queued {after['queued']})"
            f", {recorded} were recorded"
        )
    if d["lost"] or d["quarantined"] or d["sanitized"]:
        found.append(f"health counts losses: {d}")
    if expect_spill and d["spilled"] <= 0:
        found.append(f"the fault spilled nothing to the journal: {d}")
    if settled and (pending or after["queued"]):
        found.append(f"after recovery, {pending} records still journaled, {after['queued']} queued")
    return found


# --- the workflow and the call loop ---------------------------------------------------


def make_workflow(payload_chars: int = 64) -> Callable[[int], dict[str, Any]]:
    """Three steps and a log record; ``payload_chars`` sizes the values it records."""
    log = logging.getLogger("faults.workload")
    # Recorded by steptrace (it hooks the record factory), printed nowhere.
    log.addHandler(logging.NullHandler())
    log.propagate = False

    @st.step
    def prepare(i: int) -> dict[str, Any]:
        return {"i": i, "text": _text(i, payload_chars)}

    @st.step
    def work(doc: dict[str, Any]) -> int:
        time.sleep(0.005)
        log.warning("working on %d", doc["i"])
        return len(doc["text"])

    @st.step
    def summarize(i: int, size: int) -> dict[str, Any]:
        return {"i": i, "size": size, "text": _text(i + 1, payload_chars)}

    @st.workflow(name="faults")
    def faults(i: int) -> dict[str, Any]:
        size = work(prepare(i))
        return {"run_id": st.current_run_id(), **summarize(i, size)}

    return faults


def _text(seed: int, chars: int) -> str:
    """Words that neither compress nor look like secrets."""
    import random

    rng = random.Random(seed)
    words = ("alpha", "brook", "cinder", "delta", "ember", "fjord", "grove", "harbor")
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(words) + str(rng.randrange(1000))
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:chars]


def call(wf: Callable[[int], dict[str, Any]], i: int) -> Call:
    started = time.monotonic()
    try:
        run_id = wf(i)["run_id"]
    except BaseException as exc:  # whatever reaches the application is the finding
        return Call(None, started, time.monotonic(), f"{type(exc).__name__}: {exc}")
    return Call(run_id, started, time.monotonic())


class Fault(threading.Thread):
    """Applies a fault, holds it ``hold_s`` (0: a one-off act), lifts it."""

    def __init__(
        self, apply: Callable[[], None], lift: Callable[[], None] | None, hold_s: float
    ) -> None:
        super().__init__(name="fault", daemon=True)
        self._apply, self._lift, self.hold_s = apply, lift, hold_s
        self.applied_at: float | None = None
        self.lifted_at: float | None = None
        self.error: BaseException | None = None
        self.applied = threading.Event()

    def run(self) -> None:
        try:
            self._apply()
            self.applied_at = time.monotonic()
            self.applied.set()
            time.sleep(self.hold_s)
        except BaseException as exc:
            self.error = exc
        finally:
            self.applied.set()
            try:
                if self._lift is not None:
                    self._lift()
            except BaseException as exc:
                self.error = self.error or exc
            self.lifted_at = time.monotonic()


def drive(
    wf: Callable[[int], dict[str, Any]],
    result: FaultResult,
    fault: Fault,
    *,
    first: int,
    after_s: float = 0.5,
) -> None:
    """Call ``wf`` in a loop from the moment the fault starts to be made until
    ``after_s`` after it was lifted; every call lands in ``result.calls``."""
    i = first
    fault.start()
    while fault.is_alive():
        result.calls.append(call(wf, i))
        i += 1
    if fault.error is not None:
        raise RuntimeError(f"the fault could not be made: {fault.error!r}") from fault.error
    end = time.monotonic() + after_s
    while time.monotonic() < end:
        result.calls.append(call(wf, i))
        i += 1
    assert fault.applied_at is not None and fault.lifted_at is not None
    result.calls_during_fault = sum(
        fault.applied_at <= c.started < fault.lifted_at for c in result.calls
    )


# --- reading the store with the engine's own driver -----------------------------------


def store_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the store at ``url``, read with psycopg or sqlite3 (read-only:
    never creates a SQLite file). A missing SQLite file has no rows."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            return list(conn.execute(sql.encode()).fetchall())
    if not os.path.exists(url):
        return []
    conn = sqlite3.connect(f"file:{url}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def read_back(url: str, result: FaultResult, timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until every run the scenario expects is stored
    complete, then fill in the store's counts."""
    started = time.monotonic()
    while True:
        runs = {str(r): str(s) for r, s in store_rows(url, "SELECT run_id, status FROM runs")}
        spans = {
            str(r): (int(n), int(d))
            for r, n, d in store_rows(
                url, "SELECT run_id, count(*), count(DISTINCT span_id) FROM spans GROUP BY run_id"
            )
        }
        logs = {
            str(r): int(n)
            for r, n in store_rows(url, "SELECT run_id, count(*) FROM logs GROUP BY run_id")
        }
        missing = sorted(
            r for r in result.expected_runs | result.present_runs if runs.get(r) != "succeeded"
        )
        incomplete = sorted(
            f"{r}: {spans.get(r, (0, 0))[0]} spans, {logs.get(r, 0)} logs"
            for r in result.expected_runs
            if r in runs
            and (spans.get(r, (0, 0))[0] != SPANS_PER_RUN or logs.get(r, 0) != LOGS_PER_RUN)
        )
        if (not missing and not incomplete) or time.monotonic() - started > timeout_s:
            break
        time.sleep(0.2)
    result.recovery_s = time.monotonic() - started
    result.missing, result.incomplete = missing, incomplete
    result.stored_runs = len(runs)
    result.stored_spans = sum(n for n, _ in spans.values())
    result.distinct_spans = sum(d for _, d in spans.values())
    result.stored_logs = sum(logs.values())


def health() -> dict[str, Any] | None:
    """``st.health()``, or None where this steptrace has none."""
    fn = getattr(st, "health", None)
    return dict(fn()) if fn is not None else None


def settle(result: FaultResult, timeout_s: float) -> None:
    """Wait until ``st.health()`` shows nothing queued or journaled (bounded), and keep
    its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        h = health()
        pending = h is not None and bool(
            int(h.get("queued") or 0) or _pending(result.health_before, h)
        )
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    result.health = h


@contextlib.contextmanager
def configured(store_url: str, spill_dir: Path) -> Iterator[None]:
    """steptrace writing to ``store_url``, spilling to ``spill_dir``; reset after."""
    old = os.environ.get("STEPTRACE_SPILL_DIR")
    os.environ["STEPTRACE_SPILL_DIR"] = str(spill_dir)
    steptrace.config.reset()
    st.configure(store=store_url)
    try:
        yield
    finally:
        steptrace.config.reset()
        if old is None:
            os.environ.pop("STEPTRACE_SPILL_DIR", None)
        else:
            os.environ["STEPTRACE_SPILL_DIR"] = old


def warm_up(wf: Callable[[int], dict[str, Any]], result: FaultResult, n: int = 3) -> int:
    """A few runs before the fault (the store is open and migrated); the next index."""
    result.health_before = health()
    for i in range(n):
        result.warm_calls.append(call(wf, i))
    return n


def finish(url: str, result: FaultResult, recovery_timeout_s: float) -> FaultResult:
    """Read the store back once what was recorded had time to arrive."""
    if result.exact_store:
        calls = [*result.warm_calls, *result.calls]
        result.expected_runs = {c.run_id for c in calls if c.run_id}
    read_back(url, result, recovery_timeout_s)
    settle(result, 10.0)
    return result
