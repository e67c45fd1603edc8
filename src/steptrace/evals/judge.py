"""``st.judge``: an LLM as an evaluator, judging an output by a rubric.

A judge sends the model a prompt made of the rubric, the output (and the input and the
reference when it is given them) and reads back one JSON object, ``{"score": …,
"rationale": …}``, whose score must be on the judge's scale. Each judgement is recorded
as a run of its own (workflow ``judge:{name}``, tagged ``judge``), even when the judge
runs as a step's check inside another run: the run holds the prompt and the model's
answer, and the score names it (``judge_run_id``). The values shown to the model are
redacted like everything steptrace records.

A judge is an ``Evaluator`` (source ``llm``): a step's check (``checks=[st.judge(...)]``,
``st.check(st.judge(...), sample=0.1)``) or an experiment's evaluator. In an async step
it awaits the model (``st.llm.achat``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from steptrace import llm
from steptrace.evals.evaluators import ERROR, INVALID, Evaluator, Verdict
from steptrace.record import encode, error_message
from steptrace.runtime import RunScope, outside_run
from steptrace.spec import Spec

RAW_ANSWER_CHARS = 2000
"""How much of a malformed answer a failed score's rationale quotes."""


class JudgeAnswerError(ValueError):
    """The judge model's answer is not a score on the judge's scale (the judge's run
    fails with it; the score is ``invalid``)."""


class Scale:
    """What a judge's score may be: a number in ``[low, high]``, a bool (pass or fail),
    or one of a few categories."""

    def __init__(self, scale: Any) -> None:
        self.low = self.high = 0.0
        self.categories: tuple[str, ...] = ()
        self.boolean = scale is bool
        if self.boolean:
            return
        if not isinstance(scale, Sequence) or isinstance(scale, str | bytes) or len(scale) < 2:
            raise TypeError(
                f"scale is (low, high), bool, or a list of categories, got {scale!r:.80}"
            )
        if all(isinstance(c, str) and c.strip() for c in scale):
            self.categories = tuple(scale)
            return
        if len(scale) == 2 and all(_is_number(v) for v in scale) and scale[0] < scale[1]:
            self.low, self.high = float(scale[0]), float(scale[1])
            return
        raise ValueError(
            f"scale={scale!r:.80}: (low, high) with low < high, bool, or non-empty categories"
        )

    def describe(self) -> str:
        if self.boolean:
            return "true when the output meets the rubric, else false"
        if self.categories:
            return "one of " + ", ".join(orjson.dumps(c).decode() for c in self.categories)
        return f"a number from {_number(self.low)} to {_number(self.high)}"

    def read(self, score: Any) -> float | bool | str:
        """The score an answer gave, on this scale; ``JudgeAnswerError`` otherwise."""
        if self.boolean:
            if isinstance(score, bool):
                return score
            word = str(score).strip().lower()
            if word in ("true", "pass", "yes", "1"):
                return True
            if word in ("false", "fail", "no", "0"):
                return False
            raise JudgeAnswerError(f"the score {score!r:.80} is not true or false")
        if self.categories:
            for category in self.categories:
                if isinstance(score, str) and score.strip().lower() == category.lower():
                    return category
            raise JudgeAnswerError(f"the score {score!r:.80} is not {self.describe()}")
        number = _as_number(score)
        if number is None or not self.low <= number <= self.high:
            raise JudgeAnswerError(f"the score {score!r:.80} is not {self.describe()}")
        return number


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _as_number(score: Any) -> float | None:
    if _is_number(score):
        return float(score)
    if isinstance(score, str):
        try:
            number = float(score.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _shown(value: Any) -> str:
    """A value as the judge is shown it: redacted and capped as stored, text as text."""
    data = encode(value)
    shown = orjson.loads(data)
    return shown if isinstance(shown, str) else data.decode()


def _json_object(text: str) -> Any:
    """The JSON object an answer holds: all of it, or the part between its first ``{``
    and its last ``}`` (models wrap JSON in prose or code fences)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        return orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError:
        return None


class Judge:
    """The callable behind ``st.judge``: ``judge(output, input=None, reference=None)``
    returns a ``Verdict`` (``ajudge`` awaits the model). Each call is a run of its own."""

    def __init__(
        self,
        model: str,
        rubric: str,
        name: str,
        scale: Any = (0.0, 1.0),
        params: Mapping[str, Any] | None = None,
    ) -> None:
        provider, sep, model_name = model.partition(":")
        if not sep or not provider or not model_name:
            raise ValueError(f"model {model!r} must be 'provider:name', e.g. 'openai:gpt-4o-mini'")
        if not isinstance(rubric, str) or not rubric.strip():
            raise ValueError("a judge needs a rubric: what makes an output good")
        self.model = model
        self.rubric = rubric
        self.name = name
        self.scale = Scale(scale)
        self.params = dict(params or {})
        workflow = f"judge:{name}"
        # Off: the judge's run is committed with whatever commits next (the judged run,
        # when the judge is a check), rather than holding the step for a commit of its own.
        self.spec = Spec(self.decide, "workflow", workflow, tags=("judge",), durable="off")
        self.aspec = Spec(self.adecide, "workflow", workflow, tags=("judge",), durable="off")

    def __repr__(self) -> str:
        return f"Judge({self.name!r}, model={self.model!r})"

    def messages(self, output: Any, input: Any = None, reference: Any = None) -> list[Any]:
        """The prompt: instructions and scale, then the rubric and the values judged."""
        system = (
            "You are an evaluator. Judge the output below by the rubric. Answer with one "
            'JSON object and nothing else: {"score": <score>, "rationale": "<why, in one '
            f'or two sentences>"}}, where the score is {self.scale.describe()}.'
        )
        parts = [f"Rubric:\n{self.rubric}"]
        if input is not None:
            parts.append(f"Input:\n{_shown(input)}")
        parts.append(f"Output:\n{_shown(output)}")
        if reference is not None:
            parts.append(f"Reference (the expected output):\n{_shown(reference)}")
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    def read(self, text: str) -> dict[str, Any]:
        """The score and rationale of the model's answer; ``JudgeAnswerError`` naming what
        is wrong with it."""
        found = _json_object(text.strip())
        if not isinstance(found, dict) or "score" not in found:
            raise JudgeAnswerError('the answer is not a JSON object {"score": …, "rationale": …}')
        rationale = found.get("rationale")
        return {
            "score": self.scale.read(found["score"]),
            "rationale": None if rationale is None else str(rationale),
        }

    # -- the judge's run ----------------------------------------------------------------
    def decide(self, output: Any, input: Any = None, reference: Any = None) -> dict[str, Any]:
        """The judge's workflow: one model call, its answer read."""
        reply = llm.chat(self.model, self.messages(output, input, reference), **self.params)
        return self._read(reply.text)

    async def adecide(
        self, output: Any, input: Any = None, reference: Any = None
    ) -> dict[str, Any]:
        reply = await llm.achat(self.model, self.messages(output, input, reference), **self.params)
        return self._read(reply.text)

    def _read(self, text: str) -> dict[str, Any]:
        try:
            return self.read(text)
        except JudgeAnswerError as exc:
            raise JudgeAnswerError(f"{exc}: {text[:RAW_ANSWER_CHARS]}") from None

    def __call__(self, output: Any, input: Any = None, reference: Any = None) -> Verdict:
        values = {"output": output, "input": input, "reference": reference}
        with outside_run():
            scope = RunScope(self.spec, (), values)
            run_id = scope.run.state.run_id
            try:
                answer = self.decide(**values)
            except Exception as exc:
                scope.finish(error=exc)
                return _failed(exc, run_id)
            except BaseException as exc:
                scope.finish(error=exc)
                raise
            scope.finish(answer)
        return Verdict(answer["score"], answer["rationale"], judge_run_id=run_id)

    async def ajudge(self, output: Any, input: Any = None, reference: Any = None) -> Verdict:
        """The async twin of calling the judge."""
        values = {"output": output, "input": input, "reference": reference}
        with outside_run():
            scope = RunScope(self.aspec, (), values)
            run_id = scope.run.state.run_id
            try:
                answer = await self.adecide(**values)
            except Exception as exc:
                await scope.afinish(error=exc)
                return _failed(exc, run_id)
            except BaseException as exc:
                await scope.afinish(error=exc)
                raise
            await scope.afinish(answer)
        return Verdict(answer["score"], answer["rationale"], judge_run_id=run_id)


def _failed(exc: Exception, run_id: str) -> Verdict:
    if isinstance(exc, JudgeAnswerError):
        return Verdict.failure(INVALID, str(exc), run_id)
    return Verdict.failure(ERROR, f"raised {type(exc).__name__}: {error_message(exc)}", run_id)


def judge(
    model: str,
    rubric: str,
    *,
    name: str,
    scale: Any = (0.0, 1.0),
    params: Mapping[str, Any] | None = None,
) -> Evaluator:
    """An evaluator that asks ``model`` (``provider:name``, e.g. ``"openai:gpt-4o-mini"``
    or ``"scripted:judge"``) to judge an output by ``rubric``. Its scores are named
    ``name``, with source ``llm``; ``scale`` is ``(low, high)`` (a number, the default
    0 to 1), ``bool`` (pass or fail) or a list of categories; ``params`` go to the model
    (e.g. ``{"temperature": 0}``).

    Each judgement is a run of its own (workflow ``judge:{name}``, tagged ``judge``),
    whose id the score keeps as ``judge_run_id``: open it to see the prompt and the
    answer. An answer that is not ``{"score": …, "rationale": …}`` on the scale is a
    failed score (label ``invalid``, the answer in its rationale); a model call that
    raises one labelled ``error``. Use it as a check (``checks=[st.judge(...)]``; sample
    it with ``st.check(st.judge(...), sample=0.1)``) or as an experiment's evaluator."""
    made = Judge(model, rubric, name, scale, params)
    return Evaluator(made, name=name, source="llm", afn=made.ajudge)
