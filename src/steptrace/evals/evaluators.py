"""Evaluators: the functions that score an output, and how one is called.

One protocol serves a step's online checks (``@st.step(checks=[...])``), LLM judges
(``st.judge``) and experiments (evaluators run against a dataset's references):

- An evaluator's parameters named ``output``, ``input`` and ``reference`` are given
  those by name; without a parameter named ``output``, its first positional parameter
  gets the output, whatever its name (so ``def is_polite(text)`` works). ``input`` is
  the step's arguments by parameter name; ``reference`` the expected output, when there
  is one (None online).
- It returns a bool (pass or fail), a number, a category string, ``(value,
  rationale)``, or a ``Verdict``.

``evaluate`` (``aevaluate`` for async evaluators) calls one and never raises: an
exception, or an answer that cannot be a score, is a failed ``Verdict`` (value False,
label ``error`` or ``invalid``, the reason in the rationale). ``Evaluator`` is an
evaluator with its score's name, source and sampling rate (``check``).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from steptrace.record import error_message
from steptrace.store.scores import MAX_NAME, kind_of

ARGUMENTS = ("output", "input", "reference")
"""What an evaluator may be given, by these parameter names."""
ERROR = "error"
"""The label of a score whose evaluator raised."""
INVALID = "invalid"
"""The label of a score whose evaluator answered something that is not a score."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an evaluator said of one output: ``value`` (a bool, a number or a category)
    and, when it gave them, a rationale and a label. A failed evaluation (``failed``)
    has value False and label ``error`` or ``invalid``; ``judge_run_id`` is the run in
    which an LLM judge decided."""

    value: float | bool | str
    rationale: str | None = None
    label: str | None = None
    judge_run_id: str | None = None
    failed: bool = False

    @classmethod
    def failure(cls, label: str, rationale: str, judge_run_id: str | None = None) -> Verdict:
        """A failed evaluation: ``label`` is ``error`` or ``invalid``."""
        return cls(False, rationale, label, judge_run_id, failed=True)


def _describe(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ says nothing more than its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:79] + "…"


def verdict_of(answer: Any) -> Verdict:
    """The ``Verdict`` an evaluator's answer is: a ``Verdict``, ``(value, rationale)`` or
    a value; anything else is ``invalid``, with what it was."""
    if isinstance(answer, Verdict):
        return answer
    rationale = None
    value = answer
    if isinstance(answer, tuple):
        if len(answer) != 2:
            return Verdict.failure(
                INVALID, f"returned a tuple of {len(answer)}, not (value, rationale)"
            )
        value, given = answer
        rationale = None if given is None else str(given)
    try:
        kind_of(value)
    except ValueError as exc:
        item = getattr(value, "item", None)  # numpy's bool_ and scalars
        if callable(item) and type(value).__module__ == "numpy":
            return verdict_of((item(), rationale))
        return Verdict.failure(INVALID, f"returned {_describe(value)}: {exc}")
    return Verdict(value, rationale)


def _raised(exc: BaseException) -> Verdict:
    return Verdict.failure(ERROR, f"raised {type(exc).__name__}: {error_message(exc)}")


class Evaluator:
    """An evaluator with the name its scores take, their ``source`` (``code``, or ``llm``
    for a judge), and the share of runs it checks online (``sample``). Made by
    ``check`` (or ``st.judge``); calling it follows the module's protocol."""

    __slots__ = ("_by_name", "_output_first", "afn", "fn", "name", "sample", "source")

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        sample: float = 1.0,
        source: str = "code",
        afn: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"an evaluator is a callable, got {type(fn).__name__}: {fn!r:.80}")
        if name is None:
            name = getattr(fn, "__name__", None)
            if not isinstance(name, str) or name == "<lambda>":
                raise TypeError(
                    f"{fn!r:.80} has no name to give its scores: st.check(fn, name=...)"
                )
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise ValueError(f"an evaluator's name is 1 to {MAX_NAME} characters, got {name!r}")
        if isinstance(sample, bool) or not isinstance(sample, int | float):
            raise TypeError(f"sample is a number from 0 to 1, got {sample!r}")
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample={sample}: the share of runs checked, from 0 to 1")
        self.fn = fn
        self.afn = afn
        """The coroutine twin of ``fn`` an async step awaits (an LLM judge's), if any."""
        self.name = name
        self.sample = float(sample)
        self.source = source
        self._by_name, self._output_first = _plan(fn, name)

    def __repr__(self) -> str:
        return f"Evaluator({self.name!r}, source={self.source!r}, sample={self.sample})"

    def __call__(self, output: Any, input: Any = None, reference: Any = None) -> Verdict:
        """The ``Verdict`` on ``output`` (``evaluate``): never raises for what ``fn`` does."""
        return evaluate(self, output=output, input=input, reference=reference)

    def call(self, output: Any, input: Any = None, reference: Any = None) -> Any:
        """Call ``fn`` as the protocol says (what it returns, or raises)."""
        return self._invoke(self.fn, output, input, reference)

    def acall(self, output: Any, input: Any = None, reference: Any = None) -> Any:
        """Call ``afn`` when there is one, else ``fn`` (the caller awaits an awaitable)."""
        return self._invoke(self.afn or self.fn, output, input, reference)

    def _invoke(self, fn: Callable[..., Any], output: Any, input: Any, reference: Any) -> Any:
        by_name = self._by_name
        if not by_name:
            return fn(output)
        given = {"output": output, "input": input, "reference": reference}
        kwargs = {n: given[n] for n in by_name}
        return fn(output, **kwargs) if self._output_first else fn(**kwargs)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _plan(fn: Callable[..., Any], name: str) -> tuple[tuple[str, ...], bool]:
    """How to call ``fn``: the arguments it takes by name, and whether the output goes
    first, positionally. ``TypeError`` for a function the protocol cannot call."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: fn(output)
        return (), True
    by_name = [p.name for p in parameters if p.name in ARGUMENTS and p.kind in _NAMED]
    positional = [
        p
        for p in parameters
        if p.kind is inspect.Parameter.POSITIONAL_ONLY
        or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name not in ARGUMENTS)
    ]
    star_args = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    star_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    output_first = "output" not in by_name
    if output_first and not positional and not star_args:
        if not star_kwargs:
            raise TypeError(
                f"evaluator {name!r} takes no output: give it a first parameter, or one "
                "named output"
            )
        output_first = False
        by_name.append("output")
    if star_kwargs:
        by_name += [a for a in ARGUMENTS if a not in by_name and a != "output"]
    first = positional[0] if output_first and positional else None
    for p in parameters:
        if (
            p.default is inspect.Parameter.empty
            and p.kind in (*_POSITIONAL, inspect.Parameter.KEYWORD_ONLY)
            and p is not first
            and p.name not in by_name
        ):
            raise TypeError(
                f"evaluator {name!r}: nothing is given to its parameter {p.name!r} (an "
                "evaluator is given the output, and input and reference by those names)"
            )
    return tuple(by_name), output_first


def as_evaluator(fn: Callable[..., Any] | Evaluator) -> Evaluator:
    """``fn`` as an ``Evaluator`` (named after the function); an ``Evaluator`` as it is.
    ``TypeError`` for something the protocol cannot call."""
    return fn if isinstance(fn, Evaluator) else Evaluator(fn)


def check(
    fn: Callable[..., Any] | Evaluator, *, name: str | None = None, sample: float | None = None
) -> Evaluator:
    """A step check (or any evaluator) with its score's ``name`` (default: the function's
    name) and the share of runs it checks: ``sample=0.1`` checks about one run in ten,
    chosen by the run id (``sampled``), so that a run's checks agree and a run is
    checked or not the same way every time. An evaluator given (an ``st.judge``) is
    renamed or resampled."""
    if isinstance(fn, Evaluator):
        return Evaluator(
            fn.fn,
            name=name or fn.name,
            sample=fn.sample if sample is None else sample,
            source=fn.source,
            afn=fn.afn,
        )
    return Evaluator(fn, name=name, sample=1.0 if sample is None else sample)


def sampled(run_id: str, rate: float) -> bool:
    """Whether a run is among the ``rate`` share that is checked: the first 8 bytes of
    the BLAKE2b digest of its id, as a fraction of 2**64, are below ``rate``. A run
    checked at one rate is checked at every higher one."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(run_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


def evaluate(
    fn: Callable[..., Any] | Evaluator, *, output: Any, input: Any = None, reference: Any = None
) -> Verdict:
    """Call an evaluator on ``output`` (and ``input``, ``reference``, to the parameters
    that name them) and return its ``Verdict``. Never raises for what the evaluator does:
    an exception is a failed verdict labelled ``error``, an answer that is not a score
    one labelled ``invalid``, each with the reason as its rationale. An async evaluator
    is run to completion (``asyncio.run``) when no event loop runs in this thread; inside
    one it needs ``aevaluate``. ``TypeError`` for a callable the protocol cannot call."""
    evaluator = as_evaluator(fn)
    try:
        answer = evaluator.call(output, input, reference)
        if inspect.isawaitable(answer):
            if loop_running():
                close = getattr(answer, "close", None)
                if callable(close):
                    close()  # never awaited: no "coroutine was never awaited" warning
                return Verdict.failure(
                    INVALID,
                    "returned an awaitable inside a running event loop: an async "
                    "evaluator runs on an async step (or aevaluate)",
                )
            answer = asyncio.run(_awaited(answer))
    except Exception as exc:
        return _raised(exc)
    return verdict_of(answer)


def loop_running() -> bool:
    """Whether an event loop runs in this thread (then nothing may ``asyncio.run``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _awaited(answer: Awaitable[Any]) -> Any:
    return await answer


async def aevaluate(
    fn: Callable[..., Any] | Evaluator, *, output: Any, input: Any = None, reference: Any = None
) -> Verdict:
    """The async twin of ``evaluate``: an async evaluator (or an ``st.judge``'s async
    twin) is awaited; a plain one is called."""
    evaluator = as_evaluator(fn)
    try:
        answer = evaluator.acall(output, input, reference)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:
        return _raised(exc)
    return verdict_of(answer)
