"""Acting on a recorded run: ``resume`` it in place, ``fork`` it from a step, ``replay``
it with recorded LLM and tool calls (``steptrace.reentry`` says how each step, tool and
LLM call is matched).

Each reads the run from the configured store, finds its workflow by the recorded entry
point (``module:qualname``, importable from the current directory or ``sys.path``;
``workflow=`` gives it explicitly), calls it again with the recorded input, and returns
a ``RunResult``. Errors of the request itself (no such run, a run that cannot be
resumed, a workflow that cannot be imported, a step the run does not have) raise
``ReentryError`` (or ``RunNotFound``) before anything runs; what goes wrong while the
workflow runs (a ``DivergenceError``, a ``ReplayMismatch``, the workflow's own errors)
is the run's outcome, in ``RunResult.exception`` as for ``run``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from steptrace.config import get_config
from steptrace.decorators import RunResult, aexecute, execute, workflow_spec
from steptrace.errors import ReentryError
from steptrace.provenance import load_entry_point
from steptrace.reentry import (
    LLM_MODES,
    TOOL_MODES,
    LLMMode,
    Mode,
    Recording,
    Reentry,
    ToolMode,
    call_arguments,
)
from steptrace.runtime import RunScope
from steptrace.spec import Spec
from steptrace.store import Store, leases
from steptrace.store.model import RunRecord
from steptrace.store.owner import current as current_owner

log = logging.getLogger(__name__)


def _source(run_id: str, workflow: Callable[..., Any] | None) -> tuple[RunRecord, Spec]:
    with Store.open() as store:
        record = store.run(run_id)
    return record, source_spec(record, workflow)


def source_spec(record: RunRecord, workflow: Callable[..., Any] | None = None) -> Spec:
    """The ``Spec`` of the workflow that re-enters ``record``: ``workflow`` when given,
    else the one at the run's recorded entry point; ``ReentryError`` when there is none
    or it is not a workflow of the run's name."""
    if workflow is None:
        if not record.entry_point:
            raise ReentryError(
                f"run {record.run_id} has no recorded entry point (recorded by an older "
                "steptrace): give the workflow explicitly (workflow=…, --entry module:function)"
            )
        workflow = load_entry_point(record.entry_point)
    try:
        spec = workflow_spec(workflow)
    except TypeError as exc:
        raise ReentryError(f"{exc} (the entry point of run {record.run_id})") from None
    if spec.name != record.workflow:
        raise ReentryError(
            f"run {record.run_id} is a run of {record.workflow!r}, not of {spec.name!r}"
        )
    return spec


def _prepare(
    record: RunRecord, spec: Spec, mode: Mode, *, asynchronous: bool, **options: Any
) -> tuple[Reentry, list[Any], dict[str, Any]]:
    is_async = inspect.iscoroutinefunction(spec.fn)
    if is_async and not asynchronous:
        raise TypeError(f"{spec.name} is async: use `await steptrace.a{mode}(...)`")
    if asynchronous and not is_async:
        raise TypeError(f"{spec.name} is not async: use `steptrace.{mode}(...)`")
    args, kwargs = call_arguments(spec, record.input)
    return Reentry(mode, Recording(record), **options), args, kwargs


# --- resume -------------------------------------------------------------------------------


def _resumable(
    run_id: str, workflow: Callable[..., Any] | None, *, asynchronous: bool
) -> tuple[RunRecord, Spec, Reentry, list[Any], dict[str, Any]]:
    record, spec = _source(run_id, workflow)
    _check_resumable(record)
    reentry, args, kwargs = _prepare(record, spec, "resume", asynchronous=asynchronous)
    return record, spec, reentry, args, kwargs


def _check_resumable(record: RunRecord) -> None:
    if record.status == "succeeded":
        raise ReentryError(
            f"run {record.run_id} succeeded: there is nothing to resume; to run steps of it "
            f"again, fork it: steptrace fork {record.run_id} --from STEP"
        )
    if record.status == "running":
        raise ReentryError(
            f"run {record.run_id} is still running (its process is alive, or on another "
            "host its heartbeat has not lapsed yet): it can be resumed once it has failed or "
            "been interrupted"
        )


def _claim(record: RunRecord) -> str:
    holder = current_owner().id
    if not leases.claim(get_config().store_url(), record.run_id, holder):
        raise ReentryError(
            f"run {record.run_id} is being resumed by another process (it holds the lease)"
        )
    return holder


def resume(run_id: str, *, workflow: Callable[..., Any] | None = None) -> RunResult:
    """Continue a failed or interrupted run in place (same ``run_id``): steps whose
    succeeded record matches (key and input hash) return their recorded outputs without
    executing; the rest execute, their attempts appended to the run."""
    record, spec, reentry, args, kwargs = _resumable(run_id, workflow, asynchronous=False)
    holder = _claim(record)
    try:
        return execute(RunScope(spec, tuple(args), kwargs, reentry=reentry), args, kwargs)
    finally:
        _release(record.run_id, holder)


async def aresume(run_id: str, *, workflow: Callable[..., Any] | None = None) -> RunResult:
    """``resume`` for an async workflow."""
    record, spec, reentry, args, kwargs = _resumable(run_id, workflow, asynchronous=True)
    holder = _claim(record)
    try:
        scope = RunScope(spec, tuple(args), kwargs, reentry=reentry)
        return await aexecute(scope, args, kwargs)
    finally:
        _release(record.run_id, holder)


def _release(run_id: str, holder: str) -> None:
    """Give the lease back; a store that cannot be reached now costs the run nothing (its
    outcome is recorded or spilled) and the lease lapses by itself."""
    try:
        leases.release(get_config().store_url(), run_id, holder)
    except Exception as exc:
        log.warning(
            "steptrace: could not give back the lease on run %s (%s); it lapses in %.0f s",
            run_id,
            exc,
            leases.LEASE_S,
        )


# --- fork ---------------------------------------------------------------------------------


def step_key(record: RunRecord, from_step: str) -> str:
    """The recorded step key ``from_step`` names (``draft`` means ``draft#0``), or a
    ``ReentryError`` listing the run's steps."""
    key = from_step if "#" in from_step.rpartition("/")[2] else f"{from_step}#0"
    keys = list(
        dict.fromkeys(s.step_key for s in record.spans if s.kind in ("step", "tool") and s.step_key)
    )
    if key not in keys:
        raise ReentryError(
            f"run {record.run_id} has no step {key!r}; its steps: {', '.join(keys) or 'none'}"
        )
    return key


def _check_step_input(record: RunRecord, key: str, input: dict[str, Any]) -> None:
    """Refuse, before anything runs, an input naming arguments the step did not have."""
    recorded = next(s.input for s in record.spans if s.step_key == key)
    if not isinstance(recorded, dict) or set(recorded) == {"args", "kwargs"}:
        return  # recorded unbound: the call itself will say
    unknown = sorted(set(input) - set(recorded))
    if unknown:
        raise ReentryError(
            f"step {key} has no argument {', '.join(map(repr, unknown))}; its arguments: "
            f"{', '.join(sorted(recorded)) or 'none'}"
        )


def _fork(
    run_id: str,
    from_step: str,
    input: Any,
    llm: str,
    workflow: Callable[..., Any] | None,
    *,
    asynchronous: bool,
) -> tuple[RunScope, list[Any], dict[str, Any]]:
    if llm not in LLM_MODES:
        raise ReentryError(f"llm={llm!r}: must be one of {', '.join(LLM_MODES)}")
    if input is not None and not isinstance(input, dict):
        raise ReentryError(
            'input must be an object of the step\'s arguments by name, e.g. {"ticket": {...}}'
        )
    record, spec = _source(run_id, workflow)
    return fork_scope(record, spec, from_step, input, llm, asynchronous=asynchronous)


def fork_scope(
    record: RunRecord,
    spec: Spec,
    from_step: str,
    input: dict[str, Any] | None = None,
    llm: str = "live",
    *,
    asynchronous: bool,
) -> tuple[RunScope, list[Any], dict[str, Any]]:
    """A started fork of the run ``record`` (read already) from ``from_step`` by the
    workflow ``spec`` (``source_spec``), and the arguments to call it with (``execute``
    or ``aexecute`` runs it): what ``fork`` does once it has read the run."""
    key = step_key(record, from_step)
    if input:
        _check_step_input(record, key, input)
    reentry, args, kwargs = _prepare(
        record, spec, "fork", asynchronous=asynchronous, from_step=key, step_input=input, llm=llm
    )
    return RunScope(spec, tuple(args), kwargs, reentry=reentry), args, kwargs


def fork(
    run_id: str,
    from_step: str,
    input: dict[str, Any] | None = None,
    llm: LLMMode = "live",
    *,
    workflow: Callable[..., Any] | None = None,
) -> RunResult:
    """A new run of today's code from ``from_step`` (``name#N``, nested ``outer#0/inner#1``;
    ``name`` means ``name#0``): steps the source run started before it return their
    recorded outputs, ``from_step`` runs with its recorded input (its arguments in
    ``input`` replaced by those given), and everything after runs live. ``llm="recorded"``
    answers LLM calls from the source run where their prompts still match."""
    scope, args, kwargs = _fork(run_id, from_step, input, llm, workflow, asynchronous=False)
    return execute(scope, args, kwargs)


async def afork(
    run_id: str,
    from_step: str,
    input: dict[str, Any] | None = None,
    llm: LLMMode = "live",
    *,
    workflow: Callable[..., Any] | None = None,
) -> RunResult:
    """``fork`` for an async workflow."""
    scope, args, kwargs = _fork(run_id, from_step, input, llm, workflow, asynchronous=True)
    return await aexecute(scope, args, kwargs)


# --- replay -------------------------------------------------------------------------------


def _replay(
    run_id: str,
    llm: str,
    tools: str,
    strict: bool,
    workflow: Callable[..., Any] | None,
    *,
    asynchronous: bool,
) -> tuple[RunScope, list[Any], dict[str, Any]]:
    _check_replay_modes(llm, tools)
    record, spec = _source(run_id, workflow)
    return replay_scope(record, spec, llm, tools, strict, asynchronous=asynchronous)


def _check_replay_modes(llm: str, tools: str) -> None:
    if llm not in LLM_MODES:
        raise ReentryError(f"llm={llm!r}: must be one of {', '.join(LLM_MODES)}")
    if tools not in TOOL_MODES:
        raise ReentryError(f"tools={tools!r}: must be one of {', '.join(TOOL_MODES)}")


def replay_scope(
    record: RunRecord,
    spec: Spec,
    llm: str = "recorded",
    tools: str = "recorded",
    strict: bool = False,
    *,
    asynchronous: bool,
    durable: str | None = None,
) -> tuple[RunScope, list[Any], dict[str, Any]]:
    """A started replay of the run ``record`` (read already) by the workflow ``spec``
    (``source_spec``), and the arguments to call it with (``execute`` or ``aexecute``
    runs it): what ``replay`` does once it has read the run. ``durable`` overrides the
    workflow's durability for the replay run (a regression replay of many runs
    records them fire-and-forget, then flushes once)."""
    _check_replay_modes(llm, tools)
    reentry, args, kwargs = _prepare(
        record, spec, "replay", asynchronous=asynchronous, llm=llm, tools=tools, strict=strict
    )
    scope = RunScope(spec, tuple(args), kwargs, reentry=reentry, durable=durable)
    return scope, args, kwargs


def replay(
    run_id: str,
    llm: LLMMode = "recorded",
    tools: ToolMode = "recorded",
    strict: bool = False,
    *,
    workflow: Callable[..., Any] | None = None,
) -> RunResult:
    """A new run of today's code on the source run's input, every step executing, LLM
    calls (and tools: ``tools="live"`` executes those without side effects, ``"all"``
    every one) answered from the source run's recording by place and prompt hash. A
    call with no recorded answer runs live and is flagged; ``strict=True`` fails the run
    instead. ``RunResult.diff()`` compares it with the source."""
    scope, args, kwargs = _replay(run_id, llm, tools, strict, workflow, asynchronous=False)
    return execute(scope, args, kwargs)


async def areplay(
    run_id: str,
    llm: LLMMode = "recorded",
    tools: ToolMode = "recorded",
    strict: bool = False,
    *,
    workflow: Callable[..., Any] | None = None,
) -> RunResult:
    """``replay`` for an async workflow."""
    scope, args, kwargs = _replay(run_id, llm, tools, strict, workflow, asynchronous=True)
    return await aexecute(scope, args, kwargs)
