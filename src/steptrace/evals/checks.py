"""A step's online checks (``@st.step(checks=[...])``): each evaluator run on the output
of every succeeded attempt, its verdict a ``code`` score (``llm`` for a judge)
on that attempt.

The runtime calls ``Checks.scores`` (``ascores`` in an async step) after the attempt's
span has ended, outside the run (``runtime.outside_run``), and stores the scores with
the span: in the same batch, through the recording writer. Nothing here raises into the
workflow: an evaluator that raises or answers nonsense is a failed score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from steptrace.evals.evaluators import (
    INVALID,
    Evaluator,
    Verdict,
    aevaluate,
    as_evaluator,
    evaluate,
    sampled,
)
from steptrace.store import scores
from steptrace.store.columns import ScoreLine


class Checks:
    """The evaluators of one step (``spec.StepChecks``)."""

    __slots__ = ("evaluators",)

    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self.evaluators = tuple(evaluators)

    def __repr__(self) -> str:
        return f"Checks({', '.join(e.name for e in self.evaluators)})"

    def _due(self, run_id: str) -> list[Evaluator]:
        return [e for e in self.evaluators if e.sample >= 1.0 or sampled(run_id, e.sample)]

    def scores(
        self, output: Any, arguments: dict[str, Any], run_id: str, span_id: str, step: str
    ) -> list[ScoreLine]:
        """The scores of one attempt's output (none for a run no check samples)."""
        return [
            score_line(e, evaluate(e, output=output, input=arguments), run_id, span_id, step)
            for e in self._due(run_id)
        ]

    async def ascores(
        self, output: Any, arguments: dict[str, Any], run_id: str, span_id: str, step: str
    ) -> list[ScoreLine]:
        """``scores`` in an async step: async evaluators are awaited, one after another."""
        return [
            score_line(e, await aevaluate(e, output=output, input=arguments), run_id, span_id, step)
            for e in self._due(run_id)
        ]


def score_line(e: Evaluator, verdict: Verdict, run_id: str, span_id: str, step: str) -> ScoreLine:
    """The ``scores`` row of ``e``'s verdict on the attempt ``span_id`` of ``step`` (a
    verdict whose label cannot be stored is an ``invalid`` one): a check's, or an
    experiment's."""

    def made(v: Verdict) -> ScoreLine:
        return scores.line(
            run_id,
            span_id,
            step,
            e.name,
            v.value,
            label=v.label,
            rationale=v.rationale,
            source=e.source,
            judge_run_id=v.judge_run_id,
        )

    try:
        return made(verdict)
    except ValueError as exc:  # a Verdict built by hand: a label that cannot be stored…
        return made(Verdict.failure(INVALID, f"not a score: {exc}", verdict.judge_run_id))


def step_checks(checks: Sequence[Callable[..., Any] | Evaluator] | None) -> Checks | None:
    """A step's ``checks=`` as ``Checks`` (None for none: a step without checks does no
    work for them). ``TypeError`` for something that is not a list of evaluators,
    ``ValueError`` for two checks of the same name (they would write one score)."""
    if checks is None:
        return None
    if callable(checks) or isinstance(checks, str | bytes) or not isinstance(checks, Sequence):
        raise TypeError(
            f"checks= takes a list of functions (or st.check/st.judge evaluators), "
            f"got {type(checks).__name__}"
        )
    evaluators = [as_evaluator(c) for c in checks]
    seen: set[str] = set()
    for e in evaluators:
        if e.name in seen:
            raise ValueError(
                f"two checks are named {e.name!r}: name one with st.check(fn, name=...)"
            )
        seen.add(e.name)
    return Checks(evaluators) if evaluators else None
