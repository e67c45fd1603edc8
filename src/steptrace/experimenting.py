"""Running an experiment (``st.experiment``, ``steptrace experiment NAME``): today's code
of a step over every item of a dataset, each output judged by evaluators against the
item's reference. It sits above ``acting`` (it forks runs) and beside ``regression``;
``steptrace.evals`` holds what it reads and writes (datasets, experiments' rows,
evaluators).

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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from steptrace.acting import fork_scope, source_spec
from steptrace.decorators import aexecute, execute
from steptrace.decorators import step as step_decorator
from steptrace.errors import EvaluationError, ReentryError, RunNotFound
from steptrace.evals import datasets
from steptrace.evals.checks import score_line
from steptrace.evals.datasets import DatasetItem, check_name
from steptrace.evals.evaluators import Evaluator, Verdict, as_evaluator, evaluate, loop_running
from steptrace.evals.experiments import (
    Experiment,
    ExperimentItem,
    ItemScore,
    create,
    exists,
    finish,
    load,
    write_items,
)
from steptrace.provenance import code_version, load_entry_point
from steptrace.query.diff import json_diff
from steptrace.reentry import LLM_MODES, LLMMode, Recording, Reentry, call_arguments
from steptrace.runtime import RunScope
from steptrace.spec import Spec
from steptrace.store import Store
from steptrace.store.columns import ScoreLine
from steptrace.store.model import RunRecord, SpanView
from steptrace.store.sqlite import ns_from_iso
from steptrace.store.writer import flush

FLUSH_TIMEOUT_S = 60.0
"""How long an experiment waits for a batch of its runs to be written."""
CONCLUDE_EVERY_S = 0.25
CONCLUDE_ITEMS = 200
"""Finished items are concluded (their runs committed and read back, judged, written)
together: at least every ``CONCLUDE_EVERY_S`` seconds, or every ``CONCLUDE_ITEMS``."""
RESERVED: tuple[str, ...] = ("compare", "list", "rm", "run", "show")
"""Names an experiment may not have: the ``steptrace experiment`` subcommands."""
TAG_PREFIX = "experiment:"
"""Runs an experiment makes carry the tag ``experiment:{name}``; in step mode their
workflow is ``experiment:{step}``."""

# --- evaluators -----------------------------------------------------------------------


def exact(output: Any, reference: Any) -> bool:
    """The built-in evaluator: the output equals the reference as JSON (structurally:
    key order aside, ``1 == 1.0``, ``True != 1``)."""
    return not json_diff(output, reference)


def _score_lines(
    run_id: str, span_id: str, step: str, verdicts: Sequence[tuple[Evaluator, Verdict]]
) -> tuple[list[ScoreLine], dict[str, ItemScore]]:
    lines = [score_line(e, verdict, run_id, span_id, step) for e, verdict in verdicts]
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
        self.spec = Spec(fn, "workflow", f"{TAG_PREFIX}{spec.name}")
        self.tags = (f"{TAG_PREFIX}{name}",)
        self.key = f"{spec.name}#0"
        """The step's key in each run (the run's one top-level call)."""

    def scope(self, item: DatasetItem, *, asynchronous: bool) -> tuple[RunScope, Any, Any]:
        recording = None
        if self.llm == "recorded":
            source = _source_run(self.store, item, "--llm recorded answers from it")
            recording = _step_recording(source, item.step_key or f"{item.step}#0", self.key)
        args, kwargs = call_arguments(self.step, item.input)
        scope = RunScope(self.spec, tuple(args), kwargs, tags=self.tags, durable="off")
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
        name = run.entry_point.partition(":")[0]
        if name != "__main__":  # a script's steps are found in this process's script
            try:
                load_entry_point(run.entry_point)
            except ReentryError as exc:
                raise EvaluationError(
                    f"cannot find step {step!r} through the entry point {run.entry_point} "
                    f"of run {run.run_id} ({exc}): {hint}"
                ) from None
        module = sys.modules[name]
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
        self.tags = (f"{TAG_PREFIX}{name}",)
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
                found = source_spec(record)
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
        return fork_scope(
            record,
            spec,
            key,
            item.input,
            self.llm,
            asynchronous=asynchronous,
            tags=self.tags,
            durable="off",
        )

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


@dataclass(frozen=True)
class _Executed:
    """An item whose run has finished (or could not start: ``problem``)."""

    item: DatasetItem
    run_id: str | None
    problem: BaseException | None = None


class _Running:
    """One experiment being run: its target, evaluators and store.

    Workers execute items (``start``), recording each run fire-and-forget; the thread
    that drives them concludes what has finished in batches (``conclude``: one commit
    of the runs, one read of them, one transaction for the items and their scores),
    while the workers go on with the next items."""

    def __init__(
        self,
        store: Store,
        name: str,
        target: _Target,
        evaluators: Sequence[Evaluator],
    ) -> None:
        self.store = store
        self.name = name
        self.target = target
        self.evaluators = evaluators

    def start(self, item: DatasetItem) -> _Executed:
        try:
            scope, args, kwargs = self.target.scope(item, asynchronous=False)
        except (EvaluationError, ReentryError, TypeError, ValueError) as exc:
            return _Executed(item, None, exc)
        return _Executed(item, execute(scope, list(args), kwargs).run_id)

    async def astart(self, item: DatasetItem) -> _Executed:
        try:
            scope, args, kwargs = self.target.scope(item, asynchronous=True)
        except (EvaluationError, ReentryError, TypeError, ValueError) as exc:
            return _Executed(item, None, exc)
        return _Executed(item, (await aexecute(scope, list(args), kwargs)).run_id)

    def conclude(self, batch: Sequence[_Executed]) -> list[ExperimentItem]:
        """Write the batch's runs, read them back, judge each step's output, and write
        the items with their scores in one transaction."""
        ids = [e.run_id for e in batch if e.run_id is not None]
        if ids:
            flush(timeout_s=FLUSH_TIMEOUT_S)
        runs = {r.run_id: r for r in self.store.read_runs(ids)}
        done: list[tuple[ExperimentItem, list[ScoreLine]]] = []
        for executed in batch:
            done.append(self._judged(executed, runs.get(executed.run_id or "")))
        write_items(self.store, self.name, done)
        return [found for found, _ in done]

    def _judged(
        self, executed: _Executed, run: RunRecord | None
    ) -> tuple[ExperimentItem, list[ScoreLine]]:
        item = executed.item
        if executed.run_id is None:
            return _not_started(item, executed.problem or RuntimeError("not started")), []
        if run is None:
            problem = RuntimeError(
                f"run {executed.run_id} was not written to the store in time "
                "(see `steptrace status`)"
            )
            return _not_started(item, problem), []
        attempts = self.target.attempts(run, item)
        found = _outcome(run, item, attempts)
        if found.status != "succeeded" or found.run_id is None or found.span_id is None:
            return found, []
        judged = [
            (e, evaluate(e, output=found.output, input=item.input, reference=item.reference))
            for e in self.evaluators
        ]
        lines, shown = _score_lines(found.run_id, found.span_id, attempts[-1].name, judged)
        return dataclasses.replace(found, scores=shown), lines

    # --- many items ---------------------------------------------------------------------

    def threads(
        self,
        items: Sequence[DatasetItem],
        concurrency: int,
        on_item: Callable[[ExperimentItem], None],
    ) -> None:
        """Run the items on ``concurrency`` threads. Interrupted (Ctrl-C, or a step that
        raised ``KeyboardInterrupt``), it starts no more, lets those running finish and
        concludes them before the interrupt goes on."""
        todo = iter(items)
        finished: list[_Executed] = []
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="steptrace-experiment"
        ) as pool:
            running: set[concurrent.futures.Future[_Executed]] = set()

            def feed() -> None:
                while len(running) < concurrency:
                    item = next(todo, None)
                    if item is None:
                        return
                    running.add(pool.submit(self.start, item))

            try:
                feed()
                due = time.monotonic() + CONCLUDE_EVERY_S
                while running:
                    done, running = concurrent.futures.wait(
                        running,
                        timeout=max(0.0, due - time.monotonic()),
                        return_when=concurrent.futures.FIRST_COMPLETED,
                    )
                    _collect(done, finished)
                    feed()  # the workers go on while a batch is concluded
                    if finished and (
                        not running or len(finished) >= CONCLUDE_ITEMS or time.monotonic() >= due
                    ):
                        for result in self.conclude(finished):
                            on_item(result)
                        finished = []
                        due = time.monotonic() + CONCLUDE_EVERY_S
            except BaseException:
                for future in running:
                    future.cancel()
                concurrent.futures.wait(running)
                _collect((f for f in running if not f.cancelled()), finished, quiet=True)
                if finished:
                    self.conclude(finished)
                raise

    async def tasks(
        self,
        items: Sequence[DatasetItem],
        concurrency: int,
        on_item: Callable[[ExperimentItem], None],
    ) -> None:
        """Run the items as tasks, ``concurrency`` at a time, concluding what finished on
        a thread while the others go on; cancelled, the tasks still running are
        cancelled (their runs recorded as failed) and those done concluded."""
        gate = asyncio.Semaphore(concurrency)

        async def one(item: DatasetItem) -> _Executed:
            async with gate:
                return await self.astart(item)

        running = {asyncio.ensure_future(one(item)) for item in items}
        finished: list[_Executed] = []
        try:
            due = time.monotonic() + CONCLUDE_EVERY_S
            while running:
                done, running = await asyncio.wait(
                    running,
                    timeout=max(0.0, due - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                _collect(done, finished)
                if finished and (
                    not running or len(finished) >= CONCLUDE_ITEMS or time.monotonic() >= due
                ):
                    for result in await asyncio.to_thread(self.conclude, finished):
                        on_item(result)
                    finished = []
                    due = time.monotonic() + CONCLUDE_EVERY_S
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if finished:
                await asyncio.to_thread(self.conclude, finished)


def _collect(done: Any, into: list[_Executed], *, quiet: bool = False) -> None:
    """The results of finished futures or tasks, added to ``into``; the first
    ``BaseException`` one raised (a ``KeyboardInterrupt`` in a step) is raised once all
    are in (``quiet``: dropped)."""
    stop: BaseException | None = None
    for future in done:
        try:
            into.append(future.result())
        except BaseException as exc:
            stop = stop or exc
    if stop is not None and not quiet:
        raise stop


# --- the experiment -------------------------------------------------------------------


def _evaluators(given: Sequence[Callable[..., Any] | Evaluator]) -> list[Evaluator]:
    """The evaluators (``[exact]`` when none is given), each callable by the protocol and
    named apart: ``EvaluationError`` otherwise."""
    try:
        found = [as_evaluator(fn) for fn in (given or [exact])]
    except (TypeError, ValueError) as exc:
        raise EvaluationError(str(exc)) from None
    names = [e.name for e in found]
    for name in names:
        if names.count(name) > 1:
            raise EvaluationError(
                f"two evaluators are named {name!r}: their scores would collide "
                "(rename one: st.check(fn, name=...))"
            )
    return found


def new_name(store: Store, name: str) -> str:
    """``name`` as stored, for a new experiment: ``EvaluationError`` for a name that
    cannot be one, is a subcommand of ``steptrace experiment``, or is taken."""
    name = check_name(name, "experiment")
    if name in RESERVED:
        raise EvaluationError(
            f"an experiment cannot be named {name!r}: it is a subcommand of `steptrace experiment`"
        )
    if exists(store, name):
        raise EvaluationError(
            f"an experiment named {name!r} exists already: give another name, or "
            f"remove it first (steptrace experiment rm {name})"
        )
    return name


def experiment(
    name: str,
    dataset: str,
    step: Callable[..., Any] | None = None,
    *,
    evaluators: Sequence[Callable[..., Any] | Evaluator] = (),
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
        name = new_name(store, name)
        items = datasets.items(store, dataset)
        if not items:
            raise EvaluationError(f"dataset {dataset!r} has no items: nothing to run")
        target: _Target = (
            _ForkTarget(store, name, items, llm)
            if from_step
            else _StepTarget(store, name, items, step, llm)
        )
        if target.is_async and loop_running():
            raise EvaluationError(
                f"{target.target} is async and an event loop is running in this thread: "
                "run the experiment from a thread of its own "
                "(await asyncio.to_thread(st.experiment, …))"
            )
        create(
            store,
            {
                "name": name,
                "dataset": items[0].dataset,
                "target": target.target,
                "mode": target.mode,
                "evaluators": [e.name for e in judges],
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
