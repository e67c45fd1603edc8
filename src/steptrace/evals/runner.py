"""Running an experiment (``st.experiment``, ``steptrace experiment NAME``): today's code
of a step over every item of a dataset, each output judged by evaluators against the
item's reference.

Two modes:

- ``step`` (the default): each item is one new run of the workflow
  ``experiment:{step}`` that calls the step once, with the item's recorded input; the
  step's attempts, LLM calls and logs are recorded as in production. The step is the
  one given, else the function of the dataset's step name found in the module of the
  source runs' recorded entry point.
- ``from-step``: each item is a fork of its source run at the item's step
  (``steptrace.acting.fork_scope``): the steps before it return their recorded
  outputs, the step runs with the item's input and everything after it runs live.

LLM calls are live, or with ``llm="recorded"`` answered from the item's source run as a
fork or replay answers them (``steptrace.reentry``): by place and prompt hash, a call
without a recorded answer running live. Every run an experiment makes is tagged
``experiment:{name}``. Items run ``concurrency`` at a time: on threads for a sync step,
as tasks on one event loop for an async one. A step that raises fails its item and
the experiment goes on; an evaluator that raises is a failed evaluation
(``steptrace.evals.experiments``), never the end of the experiment; Ctrl-C marks the
experiment ``interrupted``, with the items done so far kept.

Evaluators are called with the stored (JSON) forms of the output and of the item's
reference and input (``evaluate``); they return a bool, a number, a category string,
or ``(value, rationale)``. Without evaluators an experiment uses ``exact``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from steptrace.acting import fork_scope, source_spec
from steptrace.decorators import aexecute, execute
from steptrace.decorators import step as step_decorator
from steptrace.errors import EvaluationError, ReentryError, RunNotFound
from steptrace.evals import datasets
from steptrace.evals.datasets import DatasetItem, check_name
from steptrace.evals.experiments import (
    ERROR_LABEL,
    ERROR_PREFIX,
    Experiment,
    ExperimentItem,
    ItemScore,
    create,
    exists,
    finish,
    load,
    write_item,
)
from steptrace.provenance import code_version, load_entry_point
from steptrace.query.diff import json_diff
from steptrace.reentry import LLM_MODES, LLMMode, Recording, Reentry, call_arguments
from steptrace.runtime import RunScope
from steptrace.spec import Spec
from steptrace.store import Store, scores
from steptrace.store.columns import ScoreLine
from steptrace.store.model import RunRecord, SpanView
from steptrace.store.sqlite import ns_from_iso

RESERVED: tuple[str, ...] = ("compare", "list", "rm", "run", "show")
"""Names an experiment may not have: the ``steptrace experiment`` subcommands."""
TAG_PREFIX = "experiment:"
"""Runs an experiment makes carry the tag ``experiment:{name}``; in step mode their
workflow is ``experiment:{step}``."""

Evaluator = Callable[..., Any]


# --- evaluators -----------------------------------------------------------------------


def exact(output: Any, reference: Any) -> bool:
    """The built-in evaluator: the output equals the reference as JSON (structurally:
    key order aside, ``1 == 1.0``, ``True != 1``)."""
    return not json_diff(output, reference)


def evaluator_name(fn: Evaluator) -> str:
    """The score name an evaluator writes: its ``name`` attribute, else its ``__name__``."""
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(getattr(fn, "__name__", type(fn).__name__))


def evaluator_source(fn: Evaluator) -> str:
    """``llm`` for a judge (an evaluator whose ``source`` attribute says so), else
    ``code``."""
    return "llm" if getattr(fn, "source", None) == "llm" else "code"


@dataclass(frozen=True)
class Evaluation:
    """What one evaluator said of one output: a value (and rationale), or the error."""

    value: Any
    rationale: str | None = None
    error: str | None = None


def evaluate(fn: Evaluator, *, output: Any, input: Any = None, reference: Any = None) -> Evaluation:
    """Call ``fn`` with the output (its first parameter, or one named ``output``) and,
    when it takes them by name, ``reference`` and ``input``; its return value as an
    ``Evaluation``. Never raises: an evaluator that raises, or returns something that is
    not a score, is an ``Evaluation`` with ``error``."""
    try:
        result = _call(fn, output, input, reference)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        rationale = None
        if isinstance(result, tuple) and len(result) == 2:
            result, rationale = result
            rationale = None if rationale is None else str(rationale)
        scores.kind_of(result)  # ValueError for what cannot be a score
        return Evaluation(result, rationale)
    except Exception as exc:
        return Evaluation(None, error=f"{type(exc).__name__}: {exc}")


async def _awaited(result: Any) -> Any:
    return await result


def _call(fn: Evaluator, output: Any, input: Any, reference: Any) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: the output only
        return fn(output)
    anything = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {
        name: value
        for name, value in (("reference", reference), ("input", input))
        if name in params or anything
    }
    if "output" in params:
        return fn(output=output, **kwargs)
    return fn(output, **kwargs)


def _score_lines(
    run_id: str, span_id: str, step: str, named: Sequence[tuple[str, str, Evaluation]]
) -> tuple[list[ScoreLine], dict[str, ItemScore]]:
    lines: list[ScoreLine] = []
    for name, source, found in named:
        if found.error is None:
            try:
                lines.append(
                    scores.line(
                        run_id,
                        span_id,
                        step,
                        name,
                        found.value,
                        rationale=found.rationale,
                        source=source,
                    )
                )
                continue
            except ValueError as exc:
                found = Evaluation(None, error=f"ValueError: {exc}")
        lines.append(
            scores.line(
                run_id,
                span_id,
                step,
                name,
                ERROR_LABEL,
                rationale=ERROR_PREFIX + str(found.error),
                source=source,
            )
        )
    shown = {
        line.name: ItemScore(
            line.label
            if line.kind == "categorical"
            else (bool(line.value) if line.kind == "boolean" else line.value),
            line.label,
            line.rationale,
            line.source,
        )
        for line in lines
    }
    return lines, shown


# --- what runs one item ---------------------------------------------------------------


def _not_started(item: DatasetItem, exc: BaseException) -> ExperimentItem:
    return ExperimentItem(
        item.item_id,
        None,
        None,
        "failed",
        None,
        {"type": type(exc).__name__, "message": str(exc)},
        None,
        None,
        None,
        None,
    )


def _tagged(spec: Spec, tag: str, name: str | None = None) -> Spec:
    """A workflow ``Spec`` for ``spec.fn`` whose runs also carry ``tag``."""
    return Spec(
        spec.fn, "workflow", name or spec.name, tags=(*spec.tags, tag), durable=spec.durable
    )


class _Target:
    """How an experiment runs one item, and which attempts of the run are its step."""

    mode: str
    target: str
    fn: Callable[..., Any]
    is_async: bool

    def scope(self, item: DatasetItem, *, asynchronous: bool) -> tuple[RunScope, Any, Any]:
        raise NotImplementedError

    def attempts(self, run: RunRecord, item: DatasetItem) -> list[SpanView]:
        raise NotImplementedError


def _source_run(store: Store, item: DatasetItem, why: str) -> RunRecord:
    if item.source_run_id is None:
        raise EvaluationError(f"item {item.item_id} has no source run: {why}")
    try:
        return store.run(item.source_run_id)
    except RunNotFound:
        raise EvaluationError(
            f"the source run {item.source_run_id} of item {item.item_id} is no longer in the "
            f"store: {why}"
        ) from None


def _final_attempts(spans: Sequence[SpanView], key: str) -> list[SpanView]:
    found = [
        s
        for s in spans
        if s.step_key == key
        and s.kind in ("step", "tool")
        and "steptrace.reused_from" not in s.attributes
    ]
    return sorted(found, key=lambda s: s.attempt or 0)


class _StepTarget(_Target):
    """Step mode: a run ``experiment:{step}`` per item, calling the step once."""

    mode = "step"

    def __init__(
        self, store: Store, name: str, items: Sequence[DatasetItem], fn: Any, llm: str
    ) -> None:
        self.store = store
        self.llm = llm
        if fn is None:
            fn = _step_of_source(store, items)
        spec = getattr(fn, "__steptrace_spec__", None)
        if not isinstance(spec, Spec):
            if not callable(fn):
                raise EvaluationError(f"the step to run must be a function, not {fn!r}")
            fn = step_decorator(name=items[0].step)(fn)
            spec = fn.__steptrace_spec__
        self.fn = fn
        self.step = spec
        self.target = spec.entry_point
        self.is_async = inspect.iscoroutinefunction(spec.fn)
        wrapper = Spec(fn, "workflow", f"{TAG_PREFIX}{spec.name}")
        self.spec = _tagged(wrapper, f"{TAG_PREFIX}{name}")
        self.key = f"{spec.name}#0"
        """The step's key in each run (the run's one top-level call)."""

    def scope(self, item: DatasetItem, *, asynchronous: bool) -> tuple[RunScope, Any, Any]:
        recording = None
        if self.llm == "recorded":
            source = _source_run(self.store, item, "--llm recorded answers from it")
            recording = _step_recording(source, item.step_key or f"{item.step}#0", self.key)
        args, kwargs = call_arguments(self.step, item.input)
        scope = RunScope(self.spec, tuple(args), kwargs)
        if recording is not None:
            # LLM calls answered from the source run, where the step is re-keyed as this
            # run's; the run is not a fork of it (its workflow is another), so the
            # re-entry is attached once the run has started as a new one.
            scope.run.reentry = Reentry("fork", recording, from_step=self.key, llm="recorded")
        return scope, args, kwargs

    def attempts(self, run: RunRecord, item: DatasetItem) -> list[SpanView]:
        return _final_attempts(run.spans, self.key)


def _step_recording(source: RunRecord, key: str, new_key: str) -> Recording:
    """The source run's occurrence ``key`` (its attempts, the steps inside it and their
    LLM calls) as the recording of a run in which it is ``new_key``."""
    spans: list[SpanView] = []
    inside: set[str] = set()
    for span in source.spans:
        k = span.step_key
        if k is not None and (k == key or k.startswith(key + "/")):
            spans.append(dataclasses.replace(span, step_key=new_key + k[len(key) :]))
            inside.add(span.span_id)
    spans += [s for s in source.spans if s.kind == "llm" and s.parent_span_id in inside]
    spans.sort(key=lambda s: s.started_at)
    return Recording(dataclasses.replace(source, spans=spans))


def _step_of_source(store: Store, items: Sequence[DatasetItem]) -> Any:
    """The function of the dataset's step in the module of the newest source run's
    entry point that is still in the store."""
    step = items[0].step
    hint = "give the step to run (--step module:function, step=…)"
    for item in reversed(items):
        try:
            run = _source_run(store, item, hint)
        except EvaluationError:
            continue
        if not run.entry_point:
            break
        try:
            load_entry_point(run.entry_point)
        except ReentryError as exc:
            raise EvaluationError(f"{exc}; or {hint}") from None
        module = sys.modules[run.entry_point.partition(":")[0]]
        for value in vars(module).values():
            spec = getattr(value, "__steptrace_spec__", None)
            if isinstance(spec, Spec) and spec.kind != "workflow" and spec.name == step:
                return value
        raise EvaluationError(
            f"module {module.__name__!r} (of the entry point {run.entry_point}) has no step "
            f"named {step!r}: {hint}"
        )
    raise EvaluationError(f"no source run of dataset items tells where step {step!r} is: {hint}")


class _ForkTarget(_Target):
    """From-step mode: a fork of each item's source run at the item's step."""

    mode = "from-step"

    def __init__(self, store: Store, name: str, items: Sequence[DatasetItem], llm: str) -> None:
        self.store = store
        self.llm = llm
        self.tag = f"{TAG_PREFIX}{name}"
        self._specs: dict[str | None, Spec | ReentryError] = {}
        first: Spec | None = None
        problem: Exception | None = None
        for item in items:
            try:
                first = self._spec(_source_run(store, item, "--from-step forks it"))
                break
            except (EvaluationError, ReentryError) as exc:
                problem = problem or exc
        if first is None:
            raise EvaluationError(f"no item's source run can be forked: {problem}")
        self.fn = first.fn
        self.target = first.entry_point
        self.is_async = inspect.iscoroutinefunction(first.fn)

    def _spec(self, record: RunRecord) -> Spec:
        found = self._specs.get(record.entry_point)
        if found is None:
            try:
                found = _tagged(source_spec(record), self.tag)
            except ReentryError as exc:
                found = exc
            self._specs[record.entry_point] = found
        if isinstance(found, ReentryError):
            raise found
        return found

    def scope(self, item: DatasetItem, *, asynchronous: bool) -> tuple[RunScope, Any, Any]:
        record = _source_run(self.store, item, "--from-step forks it")
        spec = self._spec(record)
        key = item.step_key or f"{item.step}#0"
        return fork_scope(record, spec, key, item.input, self.llm, asynchronous=asynchronous)

    def attempts(self, run: RunRecord, item: DatasetItem) -> list[SpanView]:
        return _final_attempts(run.spans, item.step_key or f"{item.step}#0")


# --- one item, start to end -----------------------------------------------------------


def _descendants(run: RunRecord, roots: set[str]) -> Iterator[SpanView]:
    children: dict[str | None, list[SpanView]] = {}
    for span in run.spans:
        children.setdefault(span.parent_span_id, []).append(span)
    todo = list(roots)
    while todo:
        for span in children.get(todo.pop(), ()):
            yield span
            todo.append(span.span_id)


def _outcome(run: RunRecord, item: DatasetItem, attempts: list[SpanView]) -> ExperimentItem:
    """The item as the run executed it: its step's final attempt, the time from its first
    attempt's start to its last's end, and the tokens and cost of every LLM call made in
    its attempts (retries and nested steps included)."""
    if not attempts:
        error = run.error or {"type": "ExperimentError", "message": "the step did not run"}
        return ExperimentItem(
            item.item_id, run.run_id, None, "failed", None, error, None, None, None, None
        )
    final = attempts[-1]
    start = ns_from_iso(attempts[0].started_at)
    end = max((ns_from_iso(a.ended_at) or 0) for a in attempts)
    duration = (end - start) / 1e6 if start is not None and end else None
    costs: list[float] = []
    tokens_in = tokens_out = 0
    for span in _descendants(run, {a.span_id for a in attempts}):
        if span.kind == "llm" and span.llm is not None:
            if span.llm.get("cost_usd") is not None:
                costs.append(float(span.llm["cost_usd"]))
            tokens_in += span.llm.get("input_tokens") or 0
            tokens_out += span.llm.get("output_tokens") or 0
    return ExperimentItem(
        item.item_id,
        run.run_id,
        final.span_id,
        "succeeded" if final.status == "succeeded" else "failed",
        final.output,
        final.error,
        duration,
        sum(costs) if costs else None,
        tokens_in,
        tokens_out,
    )


class _Running:
    """One experiment being run: its target, evaluators and store."""

    def __init__(
        self,
        store: Store,
        name: str,
        target: _Target,
        evaluators: Sequence[tuple[str, str, Evaluator]],
    ) -> None:
        self.store = store
        self.name = name
        self.target = target
        self.evaluators = evaluators

    def item(self, item: DatasetItem) -> ExperimentItem:
        try:
            scope, args, kwargs = self.target.scope(item, asynchronous=False)
        except (EvaluationError, ReentryError, TypeError, ValueError) as exc:
            return self.done(item, None, exc)
        result = execute(scope, list(args), kwargs)
        return self.done(item, result.run_id)

    async def aitem(self, item: DatasetItem) -> ExperimentItem:
        try:
            scope, args, kwargs = self.target.scope(item, asynchronous=True)
        except (EvaluationError, ReentryError, TypeError, ValueError) as exc:
            return await asyncio.to_thread(self.done, item, None, exc)
        result = await aexecute(scope, list(args), kwargs)
        return await asyncio.to_thread(self.done, item, result.run_id)

    def done(
        self, item: DatasetItem, run_id: str | None, problem: BaseException | None = None
    ) -> ExperimentItem:
        """Read the item's run back, judge its output, and write the item with its scores."""
        step = item.step
        if run_id is None:
            found = _not_started(item, problem or RuntimeError("not started"))
        else:
            try:
                run = self.store.run(run_id)
            except RunNotFound:
                found = _not_started(
                    item,
                    RuntimeError(
                        f"run {run_id} was not written to the store in time "
                        "(see `steptrace status`)"
                    ),
                )
            else:
                attempts = self.target.attempts(run, item)
                found = _outcome(run, item, attempts)
                step = attempts[-1].name if attempts else step
        lines: list[ScoreLine] = []
        if found.status == "succeeded" and found.run_id and found.span_id:
            judged = [
                (
                    n,
                    source,
                    evaluate(fn, output=found.output, input=item.input, reference=item.reference),
                )
                for n, source, fn in self.evaluators
            ]
            lines, shown = _score_lines(found.run_id, found.span_id, step, judged)
            found = dataclasses.replace(found, scores=shown)
        write_item(self.store, self.name, found, lines)
        return found

    # --- many items ---------------------------------------------------------------------

    def threads(
        self,
        items: Sequence[DatasetItem],
        concurrency: int,
        on_item: Callable[[ExperimentItem], None],
    ) -> None:
        """Run the items on ``concurrency`` threads; a KeyboardInterrupt starts no more and
        lets those running finish (and be written) before it is raised."""
        todo = iter(items)
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="steptrace-experiment"
        ) as pool:
            running: set[concurrent.futures.Future[ExperimentItem]] = set()
            try:
                for item in todo:
                    running.add(pool.submit(self.item, item))
                    if len(running) >= concurrency:
                        done, running = concurrent.futures.wait(
                            running, return_when=concurrent.futures.FIRST_COMPLETED
                        )
                        for future in done:
                            on_item(future.result())
                for future in concurrent.futures.as_completed(running):
                    on_item(future.result())
            except BaseException:
                for future in running:
                    future.cancel()
                raise

    async def tasks(
        self,
        items: Sequence[DatasetItem],
        concurrency: int,
        on_item: Callable[[ExperimentItem], None],
    ) -> None:
        """Run the items as tasks, ``concurrency`` at a time; cancelled, the tasks still
        running are cancelled (their runs recorded as failed) and awaited."""
        gate = asyncio.Semaphore(concurrency)

        async def one(item: DatasetItem) -> ExperimentItem:
            async with gate:
                return await self.aitem(item)

        started = [asyncio.ensure_future(one(item)) for item in items]
        try:
            for next_done in asyncio.as_completed(started):
                on_item(await next_done)
        finally:
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)


# --- the experiment -------------------------------------------------------------------


def _evaluators(given: Sequence[Evaluator]) -> list[tuple[str, str, Evaluator]]:
    named = [(evaluator_name(fn), evaluator_source(fn), fn) for fn in (given or [exact])]
    for _, _, fn in named:
        if not callable(fn):
            raise EvaluationError(f"an evaluator is a function, not {fn!r}")
    seen: set[str] = set()
    for n, _, _ in named:
        if n in seen:
            raise EvaluationError(f"two evaluators are named {n!r}: their scores would collide")
        seen.add(n)
    return named


def experiment(
    name: str,
    dataset: str,
    step: Callable[..., Any] | None = None,
    *,
    evaluators: Sequence[Evaluator] = (),
    concurrency: int = 1,
    llm: LLMMode = "live",
    from_step: bool = False,
    on_item: Callable[[ExperimentItem], None] | None = None,
) -> Experiment:
    """Run today's code of a step over every item of ``dataset`` and judge each output
    against the item's reference: the stored ``Experiment``, with its items.

    ``step`` is the function to run (default: the dataset's step, found in the module of
    the source runs' entry point); ``from_step=True`` forks each item's source run at
    its step instead, running the workflow from there. ``evaluators`` (default
    ``[exact]``) each write a score named after them on the step's attempt; ``llm``
    ``"recorded"`` answers LLM calls from the source runs; ``concurrency`` items run at
    a time. ``on_item`` is called with each item once written. Runs are recorded into
    the configured store, which holds the dataset. ``EvaluationError`` before anything
    runs for a name that is taken, an unknown or empty dataset, a step that cannot be
    found; a ``KeyboardInterrupt`` leaves the experiment ``interrupted``."""
    name = check_name(name, "experiment")
    if name in RESERVED:
        raise EvaluationError(
            f"an experiment cannot be named {name!r}: it is a subcommand of `steptrace experiment`"
        )
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise EvaluationError(f"concurrency must be a positive number, not {concurrency!r}")
    if llm not in LLM_MODES:
        raise EvaluationError(f"llm={llm!r}: must be one of {', '.join(LLM_MODES)}")
    if from_step and step is not None:
        raise EvaluationError(
            "from_step runs each source run's own workflow from the step: give no step"
        )
    judges = _evaluators(evaluators)
    with Store.open() as store:
        items = datasets.items(store, dataset)
        if not items:
            raise EvaluationError(f"dataset {dataset!r} has no items: nothing to run")
        if exists(store, name):
            raise EvaluationError(
                f"an experiment named {name!r} exists already: give another name, or "
                f"remove it first (steptrace experiment rm {name})"
            )
        target: _Target = (
            _ForkTarget(store, name, items, llm)
            if from_step
            else _StepTarget(store, name, items, step, llm)
        )
        create(
            store,
            {
                "name": name,
                "dataset": items[0].dataset,
                "target": target.target,
                "mode": target.mode,
                "evaluators": [n for n, _, _ in judges],
                "params": {"concurrency": concurrency, "llm": llm},
                "code_version": code_version(target.fn),
            },
        )
        running = _Running(store, name, target, judges)
        status = "failed"
        try:
            report = on_item or (lambda _: None)
            if target.is_async:
                asyncio.run(running.tasks(items, concurrency, report))
            else:
                running.threads(items, concurrency, report)
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            finish(store, name, status)
        return load(store, name)
