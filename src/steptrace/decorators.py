"""The public decorators (``workflow``, ``step``, ``tool``) and running workflows
(``run``/``arun``, ``RunResult``, ``last_run``)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from steptrace import runtime
from steptrace.evals.checks import step_checks
from steptrace.evals.evaluators import Evaluator
from steptrace.runtime import RunScope, run_step_async, run_step_sync
from steptrace.sessions import SessionSource, checked
from steptrace.spec import Backoff, Spec
from steptrace.store.model import RunRecord

if TYPE_CHECKING:
    from steptrace.query.diff import RunDiff

P = ParamSpec("P")
R = TypeVar("R")


def _wrap(spec: Spec) -> Callable[..., Any]:
    fn = spec.fn
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await run_step_async(spec, args, kwargs)

        async_wrapper.__steptrace_spec__ = spec  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run_step_sync(spec, args, kwargs)

    wrapper.__steptrace_spec__ = spec  # type: ignore[attr-defined]
    return wrapper


@overload
def workflow(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def workflow(
    *,
    name: str | None = None,
    tags: Sequence[str] = (),
    durable: bool | str | None = None,
    session: SessionSource | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    tags: Sequence[str] = (),
    durable: bool | str | None = None,
    session: SessionSource | None = None,
) -> Any:
    """Mark a function (sync or async) as a workflow: each top-level call is one run.

    Called inside another run, a workflow is recorded as a step of that run.
    ``durable`` overrides the configured durability for its runs: ``True`` (or
    ``"step"``) commits each step attempt before it returns, ``False`` (or ``"off"``)
    records in the background, ``"run"`` (the default) commits the run before the call
    returns.

    ``session`` puts each run in the session its arguments name: the name of an
    argument, or a dotted path into one (``"ticket.customer_id"``: keys, attributes or
    list indexes), or a function given the arguments by name (``lambda a:
    a["user"].id``). A run whose value is None has no session; one whose value cannot
    be a session id (text, an int or a UUID, at most 256 characters) is logged and
    recorded without one. ``run(..., session_id=…)`` overrides it.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        return _wrap(Spec(f, "workflow", name, tags=tags, durable=durable, session=session))

    return decorate(fn) if fn is not None else decorate


@overload
def step(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float | Backoff = 0.5,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    output: Any = None,
    checks: Sequence[Callable[..., Any] | Evaluator] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float | Backoff = 0.5,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    output: Any = None,
    checks: Sequence[Callable[..., Any] | Evaluator] | None = None,
) -> Any:
    """Mark a function (sync or async) as a step: each attempt is recorded with its
    input, output or error, duration and attempt number.

    ``retries`` extra attempts are made for exceptions matching ``retry_on``, after
    ``backoff`` (seconds, doubled each time, jittered; or a ``Backoff``). With
    ``output=Model`` (any type pydantic validates) the return value is validated,
    from JSON when it is a string, and the validated value is returned; a value
    that fails is kept as the failed attempt's output.

    ``checks`` are evaluators (``fn(output) -> bool | float | category | (value,
    rationale)``, ``st.check(...)``, ``st.judge(...)``) run inside a run on the output
    of each succeeded attempt; each writes a score on that attempt, stored with it. A
    check that raises is a failed score, never the workflow's error.
    """
    evaluators = step_checks(checks)  # a bad checks= fails at decoration

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        return _wrap(Spec(f, "step", name, retries, backoff, retry_on, output, checks=evaluators))

    return decorate(fn) if fn is not None else decorate


@overload
def tool(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def tool(
    *, name: str | None = None, side_effects: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    side_effects: bool = False,
) -> Any:
    """Mark a function (sync or async) as a tool: each call is recorded with its
    request (the arguments) and response (the return value).

    ``side_effects=True`` marks a tool that changes the world (sends, pays, writes): a
    replay never executes it again, answering from the recording (or failing when the
    recording has no answer), unless asked with ``tools="all"``.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        return _wrap(Spec(f, "tool", name, side_effects=side_effects))

    return decorate(fn) if fn is not None else decorate


# --- running and results ------------------------------------------------------------


@dataclass
class RunResult:
    """What ``run()`` (and ``resume``, ``fork``, ``replay``) return: the run's id and
    outcome, whether it succeeded or not; for a derived run, the run it came from."""

    run_id: str
    status: str
    output: Any = None
    exception: BaseException | None = None
    source_run_id: str | None = None
    """The run this one was forked from or replays (None for a new or resumed run)."""

    def record(self) -> RunRecord:
        """The stored run (a ``RunRecord``), read from the configured store."""
        from steptrace.store import Store

        with Store.open() as store:
            return store.run(self.run_id)

    def diff(self) -> RunDiff:
        """The step-by-step diff of the source run (a) against this one (b): what a fork
        or a replay changed. ``ValueError`` for a run that has no source."""
        from steptrace.store import Store

        if self.source_run_id is None:
            raise ValueError(f"run {self.run_id} was not forked or replayed: it has no source")
        with Store.open() as store:
            return store.diff(self.source_run_id, self.run_id)


def workflow_spec(fn: Callable[..., Any]) -> Spec:
    """The ``Spec`` of a ``@workflow`` function; ``TypeError`` for anything else."""
    spec = getattr(fn, "__steptrace_spec__", None)
    if not isinstance(spec, Spec) or spec.kind != "workflow":
        raise TypeError(f"{getattr(fn, '__name__', fn)!r} is not a @steptrace.workflow")
    return spec


def run(
    workflow: Callable[..., Any],
    /,
    *args: Any,
    traceparent: str | None = None,
    session_id: str | None = None,
    tags: Sequence[str] = (),
    **kwargs: Any,
) -> RunResult:
    """Run a workflow as a new run and return its ``RunResult``. The workflow's
    exception is not raised: it is in ``.exception``. For ``async`` workflows use
    ``await arun(...)``.

    The run options are not passed to the workflow. ``traceparent`` (a W3C header
    carried in a message, a job, another service's request) makes the run a child of
    that span, in that trace. ``session_id`` puts the run in that session (a
    conversation, a user journey: text, an int or a UUID, at most 256 characters),
    instead of the one its workflow's ``session`` rule finds. ``tags`` are added to the
    workflow's for this run. A malformed option raises before the run starts.
    """
    spec = workflow_spec(workflow)
    if inspect.iscoroutinefunction(spec.fn):
        raise TypeError(f"{spec.name} is async: use `await steptrace.arun(...)`")
    scope = _new_run(spec, args, kwargs, traceparent, session_id, tags)
    return execute(scope, args, kwargs)


def _new_run(
    spec: Spec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    traceparent: str | None,
    session_id: str | None,
    tags: Sequence[str],
) -> RunScope:
    """A new run started with the run options, checked first."""
    return RunScope(
        spec,
        args,
        kwargs,
        traceparent,
        session_id=checked(session_id),
        tags=run_tags(tags),
    )


def run_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """The tags given for a run, checked: a list of strings (``TypeError`` otherwise)."""
    given = tuple(tags) if isinstance(tags, Iterable) and not isinstance(tags, str) else None
    if given is None or not all(isinstance(t, str) for t in given):
        raise TypeError(f"tags must be a list of strings, not {tags!r}")
    return given


def execute(scope: RunScope, args: Sequence[Any], kwargs: dict[str, Any]) -> RunResult:
    """Call the workflow of a started run and finish the run: its ``RunResult``."""
    reentry = scope.run.reentry
    source = None if reentry is None or reentry.mode == "resume" else reentry.source_id
    run_id = scope.run.state.run_id
    try:
        output = scope.spec.fn(*args, **kwargs)
    except Exception as exc:
        scope.finish(error=exc)
        return RunResult(run_id, "failed", None, exc, source)
    except BaseException as exc:
        scope.finish(error=exc)
        raise
    scope.finish(output)
    return RunResult(run_id, "succeeded", output, None, source)


async def aexecute(scope: RunScope, args: Sequence[Any], kwargs: dict[str, Any]) -> RunResult:
    """``execute`` for an async workflow."""
    reentry = scope.run.reentry
    source = None if reentry is None or reentry.mode == "resume" else reentry.source_id
    run_id = scope.run.state.run_id
    try:
        output = await scope.spec.fn(*args, **kwargs)
    except Exception as exc:
        await scope.afinish(error=exc)
        return RunResult(run_id, "failed", None, exc, source)
    except BaseException as exc:
        await scope.afinish(error=exc)
        raise
    await scope.afinish(output)
    return RunResult(run_id, "succeeded", output, None, source)


async def arun(
    workflow: Callable[..., Awaitable[Any]],
    /,
    *args: Any,
    traceparent: str | None = None,
    session_id: str | None = None,
    tags: Sequence[str] = (),
    **kwargs: Any,
) -> RunResult:
    """The async twin of ``run``."""
    spec = workflow_spec(workflow)
    scope = _new_run(spec, args, kwargs, traceparent, session_id, tags)
    return await aexecute(scope, args, kwargs)


def last_run() -> RunRecord | None:
    """The last run that finished in this process, read back from the store (a
    ``RunRecord``), or None."""
    from steptrace.config import get_config
    from steptrace.store import RunNotFound, Store
    from steptrace.store.schema import missing

    last_run_id = runtime.last_run_id()
    if last_run_id is None or missing(get_config().store_url()):
        return None  # (recorded into another store since)
    with Store.open() as store:
        try:
            return store.run(last_run_id)
        except RunNotFound:  # recorded into another store since
            return None
