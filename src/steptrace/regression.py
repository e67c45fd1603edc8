"""Regression replay: replay many recorded runs of a workflow with today's code and say,
for each, whether it still behaves as recorded (``replay_many``, ``steptrace replay
--workflow W --last N``), and the verdict on one replay (``verdict``, also what
``steptrace replay RUN_ID`` prints).

A verdict compares what the replay *produced* with what its source run produced, step
by step in the source run's order (``steptrace.query.diff`` aligns them): each step's
status, output and error (without its traceback), and the run's own status, output
and error. A step's input, its attempts and its LLM calls are not compared: a changed
prompt is the code change under test, and what matters is whether outputs change.

- ``identical``: no step and nothing of the run produced anything else;
- ``changed``: the first step whose outcome differs (a step only one of them ran
  counts), with its structural changes; ``step`` is None when only the run's own
  output or error differs;
- ``diverged``: today's code called steps in another order (``DivergenceError``) or
  made a call the recording cannot answer under ``strict`` (``ReplayMismatch``);
- ``failed``: the replay raised something else, and does not reproduce the source
  run's own failure;
- ``skipped``: the run could not be replayed at all (``ReentryError`` before it
  started: its input was not recorded in full, its workflow cannot be imported).

``replay_many`` reads the source runs a batch at a time (``Store.read_runs``), records
the replays fire-and-forget (``durable="off"``) and writes each batch with one commit
before reading the replays back: a regression replay is reproducible, so it does not
pay a commit per run.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from steptrace.acting import replay_scope, source_spec
from steptrace.decorators import RunResult, aexecute, execute, workflow_spec
from steptrace.errors import DivergenceError, ReentryError, ReplayMismatch
from steptrace.query.diff import Change, StepDiff, diff_runs
from steptrace.reentry import LLMMode, ToolMode
from steptrace.spec import Spec
from steptrace.store import Store
from steptrace.store.model import RunRecord
from steptrace.store.writer import flush

Outcome = Literal["identical", "changed", "diverged", "failed", "skipped"]
OUTCOMES: tuple[Outcome, ...] = ("identical", "changed", "diverged", "failed", "skipped")

_OUTCOME_PATHS = ("output", "error")
"""The parts of a step the verdict compares (with its status)."""
_NOT_OUTCOME = "error.module"
"""Where an error's class is defined: it moves with the code (a workflow run from a copy
of its module), while the error stays the same."""

BATCH_RUNS = 200
"""Source runs ``replay_many`` reads, replays and writes at a time."""
FLUSH_TIMEOUT_S = 60.0
"""How long ``replay_many`` waits for a batch of replays to be written."""


@dataclass
class Verdict:
    """How one replay compares with its source run (see the module docstring)."""

    source_run_id: str
    replay_run_id: str | None
    """None when the replay could not start."""
    verdict: Outcome
    step: str | None = None
    """The first differing step's key (changed, failed), or the step where today's code
    diverged (diverged)."""
    changes: list[Change] = field(default_factory=list)
    """That step's structural changes (the run's own when ``step`` is None)."""
    message: str | None = None
    """The exception of a diverged or failed replay, as ``Type: message``."""
    llm_recorded: int = 0
    """LLM calls answered from the recording."""
    llm_live: int = 0
    """LLM calls that called the model."""
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    """Calls that had no recorded answer and ran live: ``kind``, ``at``, ``reason``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_run_id": self.source_run_id,
            "replay_run_id": self.replay_run_id,
            "verdict": self.verdict,
            "step": self.step,
            "changes": self.changes,
            "message": self.message,
            "llm_calls": {"recorded": self.llm_recorded, "live": self.llm_live},
            "unmatched": self.unmatched,
        }


@dataclass
class Report:
    """The verdicts of a regression replay, newest source run first."""

    workflow: str
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No replay changed, diverged or failed, and at least one was identical (runs
        that could not be replayed are counted, not failed)."""
        verdicts = {v.verdict for v in self.verdicts}
        return "identical" in verdicts and verdicts <= {"identical", "skipped"}

    def summary(self) -> dict[str, Any]:
        """Counts by verdict, and the changed runs counted by their first differing
        step (``changed_at``, most runs first; ``(run)`` for the run's own output)."""
        counts = Counter(v.verdict for v in self.verdicts)
        at = Counter(v.step or "(run)" for v in self.verdicts if v.verdict == "changed")
        return {
            "runs": len(self.verdicts),
            **{outcome: counts[outcome] for outcome in OUTCOMES},
            "changed_at": dict(at.most_common()),
        }

    def summary_line(self) -> str:
        """``3 identical, 2 changed (at step classify#0: 2), 0 diverged, 0 failed``."""
        s = self.summary()
        changed = f"{s['changed']} changed"
        if s["changed_at"]:
            where = ", ".join(f"{step}: {n}" for step, n in s["changed_at"].items())
            changed += f" (at step {where})"
        rest = f"{s['diverged']} diverged, {s['failed']} failed"
        if s["skipped"]:
            rest += f", {s['skipped']} skipped"
        return f"{s['identical']} identical, {changed}, {rest}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "runs": [v.to_dict() for v in self.verdicts],
            "summary": self.summary(),
        }


# --- one verdict --------------------------------------------------------------------


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def verdict(
    source: RunRecord, replay: RunRecord | None, exception: BaseException | None = None
) -> Verdict:
    """The verdict on ``replay`` (None: it could not start) of the run ``source``;
    ``exception`` is what the replay raised (``RunResult.exception``)."""
    if replay is None:
        reason = _described(exception) if exception is not None else "the replay did not run"
        return Verdict(source.run_id, None, "skipped", message=reason)
    found = Verdict(source.run_id, replay.run_id, "identical")
    _count_calls(replay, found)
    if isinstance(exception, DivergenceError | ReplayMismatch):
        found.verdict = "diverged"
        if isinstance(exception, DivergenceError):
            found.step = exception.step
        else:
            found.step = _mismatched_at(replay)
        found.message = _described(exception)
        return found
    diff = diff_runs(source, replay)
    first: StepDiff | None = None
    first_changes: list[Change] = []
    for step in diff["steps"]:
        first_changes = _outcome_changes(step)
        if first_changes:
            first = step
            break
    run_changes = _outcomes(diff["run"]["changes"])
    run_changed = bool(run_changes) or source.status != replay.status
    if first is None and not run_changed:
        return found  # (a failure the source run had too, reproduced)
    if first is not None:
        found.step = first["key"]
        found.changes = first_changes
    else:
        status = {"a": source.status, "b": replay.status}
        found.changes = _status_changes(status, None) + run_changes
    if exception is not None:
        found.verdict, found.message = "failed", _described(exception)
    else:
        found.verdict = "changed"
    return found


def _outcome_changes(step: StepDiff) -> list[Change]:
    """What a step produced differently: its status, output and error (all of it for a
    step only one run has)."""
    if step["only_in"] is not None:
        side = "a" if step["only_in"] == "a" else "b"
        return [{"path": "step", "change": "removed" if side == "a" else "added"}]
    changes = _status_changes(step["status"], None)
    changes += _outcomes(step["changes"])
    return changes


def _outcomes(changes: list[Change]) -> list[Change]:
    return [
        c for c in changes if c["path"].startswith(_OUTCOME_PATHS) and c["path"] != _NOT_OUTCOME
    ]


def _mismatched_at(replay: RunRecord) -> str | None:
    """The step whose call had no recorded answer under ``strict``."""
    keys = {s.span_id: s.step_key for s in replay.spans}
    for span in replay.spans:
        if (span.error or {}).get("type") == "ReplayMismatch":
            return span.step_key or keys.get(span.parent_span_id or "")
    return None


def _status_changes(status: Any, attempts: Any) -> list[Change]:
    changes: list[Change] = []
    for name, pair in (("status", status), ("attempts", attempts)):
        if pair is not None and pair["a"] != pair["b"]:
            changes.append({"path": name, "change": "changed", "a": pair["a"], "b": pair["b"]})
    return changes


def _count_calls(replay: RunRecord, into: Verdict) -> None:
    keys = {s.span_id: s.step_key for s in replay.spans}
    for span in replay.spans:
        attributes = span.attributes
        if span.kind == "llm":
            if attributes.get("steptrace.replay.answer") == "recorded":
                into.llm_recorded += 1
            else:
                into.llm_live += 1
        if attributes.get("steptrace.replay.unmatched"):
            at = span.step_key or keys.get(span.parent_span_id or "") or "the workflow"
            into.unmatched.append(
                {
                    "kind": span.kind,
                    "at": at,
                    "reason": attributes.get("steptrace.replay.reason"),
                }
            )


# --- many runs ----------------------------------------------------------------------


class _Workflows:
    """The workflow that replays each source run, imported once per entry point."""

    def __init__(self, given: Callable[..., Any] | None) -> None:
        self.given = given
        self._found: dict[str | None, Spec | ReentryError] = {}

    def spec(self, source: RunRecord) -> Spec:
        key = None if self.given is not None else source.entry_point
        found = self._found.get(key)
        if found is None:
            try:
                found = source_spec(source, self.given)
            except ReentryError as exc:
                found = exc
            self._found[key] = found
        if isinstance(found, ReentryError):
            raise found
        return found


def replay_many(
    workflow: str | Callable[..., Any],
    last: int = 100,
    where: str | Sequence[str] | None = None,
    *,
    status: str | None = "succeeded",
    llm: LLMMode = "recorded",
    tools: ToolMode = "recorded",
    strict: bool = False,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> Report:
    """Replay the last ``last`` runs of ``workflow`` (its name, or the ``@workflow``
    function to replay them with instead of their recorded entry point) that match
    ``where`` (the predicates of ``Store.runs``) and ``status`` (None: any), newest
    first, leaving out runs forked or replayed from another (their reused steps and
    answered calls are copies), and return every verdict.
    ``on_verdict`` is called with each verdict as it is made. A workflow that cannot
    be imported for the newest run, or a malformed filter, raises before anything
    runs (``ReentryError``, ``QueryError``)."""
    given: Callable[..., Any] | None = None
    if isinstance(workflow, str):
        name = workflow
    else:
        given = workflow
        try:
            name = workflow_spec(workflow).name
        except TypeError as exc:
            raise ReentryError(str(exc)) from None
    workflows = _Workflows(given)
    report = Report(name)
    with Store.open() as store:
        ids = [r.run_id for r in store.runs(name, status, last=last, where=where, originals=True)]
        loop: asyncio.AbstractEventLoop | None = None
        try:
            for at in range(0, len(ids), BATCH_RUNS):
                sources = store.read_runs(ids[at : at + BATCH_RUNS])
                if at == 0 and sources:
                    workflows.spec(sources[0])  # raises: nothing can be replayed
                results: list[tuple[RunRecord, RunResult | None, BaseException | None]] = []
                for source in sources:
                    try:
                        spec = workflows.spec(source)
                        if inspect.iscoroutinefunction(spec.fn):
                            loop = loop or asyncio.new_event_loop()
                            replay = _areplay(source, spec, llm, tools, strict)
                            result = loop.run_until_complete(replay)
                        else:
                            scope, args, kwargs = replay_scope(
                                source, spec, llm, tools, strict, asynchronous=False, durable="off"
                            )
                            result = execute(scope, args, kwargs)
                    except ReentryError as exc:  # (before the replay started)
                        results.append((source, None, exc))
                        continue
                    results.append((source, result, result.exception))
                flush(timeout_s=FLUSH_TIMEOUT_S)  # one commit for the batch
                for v in _verdicts(store, results):
                    report.verdicts.append(v)
                    if on_verdict is not None:
                        on_verdict(v)
        finally:
            if loop is not None:
                loop.close()
    return report


async def _areplay(
    source: RunRecord, spec: Spec, llm: LLMMode, tools: ToolMode, strict: bool
) -> RunResult:
    # The run starts in the task that runs it (its context holds the run's frame).
    scope, args, kwargs = replay_scope(
        source, spec, llm, tools, strict, asynchronous=True, durable="off"
    )
    return await aexecute(scope, args, kwargs)


def _verdicts(
    store: Store, results: list[tuple[RunRecord, RunResult | None, BaseException | None]]
) -> Iterator[Verdict]:
    replays = {r.run_id: r for r in store.read_runs([r.run_id for _, r, _ in results if r])}
    for source, result, exception in results:
        if result is None:
            yield verdict(source, None, exception)
            continue
        replay = replays.get(result.run_id)
        if replay is None:
            yield Verdict(
                source.run_id,
                result.run_id,
                "failed",
                message="the replay run was not written to the store in time (see "
                "`steptrace status`)",
            )
            continue
        yield verdict(source, replay, exception)
