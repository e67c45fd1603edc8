"""The runtime behind the decorators: the run context, spans, retries and validation.

A run is the call of a ``@workflow`` function. While it runs, a context variable
holds the current *frame* (the run and the span being recorded); every
``@step`` attempt, ``@tool`` call and LLM call pushes a frame of its own, so
nesting, threads started with ``contextvars.copy_context`` and asyncio tasks
all find their parent. Each finished span becomes one ``SpanRecord`` handed to
the store's writer queue and one OpenTelemetry span with the same ids.

Outside a workflow, steps and tools are plain calls (retries and output
validation still apply), unless ``configure(record_steps_outside_workflow=True)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import orjson
import pydantic
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span

from steptrace import logs as log_capture
from steptrace.config import get_config
from steptrace.frames import Frame, current_frame
from steptrace.otel import conventions
from steptrace.otel.foreign import ensure_collector
from steptrace.otel.tracing import (
    context_from_traceparent,
    new_run_id,
    new_span_id,
    provider_installed,
    span_ids,
    tracer,
)
from steptrace.record import (
    RunState,
    SpanRecord,
    encode,
    error_json,
    error_message,
    redact_text,
    to_json,
)
from steptrace.spec import Spec, StepChecks
from steptrace.store.sqlite import ns_from_iso
from steptrace.store.writer import Sink, get_sink

if TYPE_CHECKING:
    from steptrace.reentry import Decision, Reentry

log = logging.getLogger("steptrace")

# --- run context --------------------------------------------------------------------


class Run:
    """The live state of one run."""

    __slots__ = ("_lock", "durable", "reentry", "sink", "state", "tool_calls")

    def __init__(
        self, state: RunState, sink: Sink, durable: str, reentry: Reentry | None = None
    ) -> None:
        self.state = state
        self.sink = sink
        self.durable = durable
        """``"run"``, ``"step"`` or ``"off"``: when its records are committed."""
        self.reentry = reentry
        """How this run re-enters a recorded one (resume, fork, replay), or None."""
        self._lock = threading.Lock()
        self.tool_calls: list[Any] = []
        """Tool calls models asked for that no ``@tool`` has executed yet."""

    def offer_tool_calls(self, calls: Sequence[Any]) -> None:
        with self._lock:
            self.tool_calls.extend(calls)

    def claim_tool_call(self, name: str, arguments: dict[str, Any]) -> str | None:
        """The id of the pending tool call that this ``@tool`` call executes: the oldest
        one of that name whose arguments equal the call's, else the oldest of that name."""
        if not self.tool_calls:
            return None
        with self._lock:
            same_name = [c for c in self.tool_calls if c.name == name]
            if not same_name:
                return None
            chosen = next((c for c in same_name if c.arguments == arguments), same_name[0])
            self.tool_calls.remove(chosen)
            return str(chosen.id)

    def next_key(self, parent: Frame, name: str) -> tuple[str, int]:
        """The stable key of a step called in ``parent`` — ``name#n`` for its n-th call
        there, under the parent step's key (``outer#0/inner#1``) — and its position among
        the steps called in ``parent``."""
        with self._lock:
            counts = parent.children
            if counts is None:
                counts = parent.children = {}
            position = sum(counts.values())
            n = counts.get(name, 0)
            counts[name] = n + 1
        key = f"{name}#{n}" if parent.key is None else f"{parent.key}/{name}#{n}"
        return key, position


_last_run_id: str | None = None


def _current_logs() -> list[Any] | None:
    frame = current_frame.get()
    return None if frame is None else frame.logs


def last_run_id() -> str | None:
    """The id of the last run that finished in this process."""
    return _last_run_id


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span the caller is in (a step, tool or LLM call,
    or the run), to propagate the trace outwards (a queued job, another service);
    None outside a run."""
    frame = current_frame.get()
    if frame is None:
        return None
    return f"00-{frame.run.state.trace_id}-{frame.span_id}-01"


def current_run_id() -> str | None:
    """The id of the run the caller is inside, or None."""
    frame = current_frame.get()
    return None if frame is None else frame.run.state.run_id


_NO_TRACE = otel_context.Context()


@contextlib.contextmanager
def outside_run() -> Iterator[None]:
    """Run the block as if no run were in progress: it records nothing into the current
    run (a workflow called in it is a run of its own, not a step), and an OTel span it
    starts begins a trace of its own. What a step's checks and an LLM judge run in."""
    token = current_frame.set(None)
    otel_token = otel_context.attach(_NO_TRACE)
    try:
        yield
    finally:
        otel_context.detach(otel_token)
        current_frame.reset(token)


# --- spans --------------------------------------------------------------------------


class ActiveSpan:
    """A span being recorded: the record, its OTel span and the context tokens."""

    __slots__ = ("frame", "otel", "otel_token", "record", "token")

    def __init__(
        self,
        parent: Frame,
        kind: str,
        name: str,
        otel_name: str,
        attempt: int | None,
        key: str | None,
        links: Sequence[Link] | None = None,
    ) -> None:
        run = parent.run
        start_ns = time.time_ns()
        span: Span | None = None
        if provider_installed():
            span = tracer().start_span(
                otel_name,
                start_time=start_ns,
                kind=conventions.span_kind(kind),
                links=links,
            )
            _, span_id = span_ids(span)
        else:
            # No provider: an API span would record nothing and be the run's (a step's
            # OTel context would be the run's anyway), so none is made; the ids are ours.
            span_id = new_span_id()
        self.otel = span
        self.record = SpanRecord(
            run.state.run_id, span_id, parent.span_id, kind, name, start_ns, attempt, key
        )
        self.record.logs = []
        self.record.session_id = run.state.session_id
        self.frame = Frame(run, span_id, self.record.logs, kind, key, attempt)
        self.token = current_frame.set(self.frame)
        self.otel_token = (
            None if span is None else otel_context.attach(trace.set_span_in_context(span))
        )

    def detach(self) -> None:
        if self.otel_token is not None:
            otel_context.detach(self.otel_token)
        current_frame.reset(self.token)

    def finish(self, error: BaseException | None = None) -> None:
        """End the span now and hand the record to the writer."""
        self.record.end_ns = time.time_ns()
        self.hand_over(error)

    def hand_over(self, error: BaseException | None = None) -> None:
        """Hand the ended record to the writer, which redacts what is still raw, stores
        the record and ends the OTel span (with the record's timestamps)."""
        record = self.record
        _defer_span(record, self.otel, error)
        self.frame.run.sink.put(record)


def _defer_span(
    record: SpanRecord | RunState,
    span: Span | None,
    error: BaseException | None,
) -> None:
    """Leave the OTel span to the writer thread: its attributes (made of the record by
    ``steptrace.otel.conventions``) wait for the redaction the writer does for a whole batch
    at once."""
    end_ns = record.end_ns
    if span is None:
        return
    if not span.is_recording():
        span.end(end_time=end_ns)
        return
    record.otel = span
    if error is not None:
        message = redact_text(f"{type(error).__name__}: {error_message(error)}")
        # error.type is the stored error's type (``error_json``), so a span re-sent
        # from the store says the same.
        record.otel_error = (type(error).__name__, message)


def fail_span(active: ActiveSpan, exc: BaseException, *, raw: Any = None, validation: bool) -> None:
    """Mark the span failed with the exception (and the raw output a failed validation
    kept)."""
    record = active.record
    record.status = "failed"
    record.error = error_json(exc, validation=validation)
    if raw is not None:
        record.output = to_json(raw) if record.raw else encode(raw)


def _raw_output(frame: Frame, exc: BaseException) -> Any:
    """The value that failed validation inside a step: the last LLM text of the attempt,
    else the whole input pydantic was given when it reports one."""
    if frame.last_llm_text is not None:
        return frame.last_llm_text
    if isinstance(exc, pydantic.ValidationError):
        for error in exc.errors(include_url=False):
            if error.get("loc") == ():
                return error.get("input")
    return None


# --- the attempt loop, shared by sync and async -------------------------------------


class _Call:
    """One call of a step or tool inside a run: its key and input, then its attempts."""

    __slots__ = (
        "active",
        "arguments",
        "flag",
        "input_json",
        "key",
        "parent",
        "position",
        "spec",
        "tool_call_id",
        "unchecked",
    )

    def __init__(self, spec: Spec, parent: Frame, args: tuple[Any, ...], kw: dict[str, Any]):
        self.spec = spec
        self.parent = parent
        run = parent.run
        self.key, self.position = run.next_key(parent, spec.name)
        arguments = self.arguments = spec.bind(args, kw)
        self.input_json = to_json(arguments)  # redacted (and hashed) later, by the writer
        self.active: ActiveSpan | None = None
        self.unchecked: tuple[ActiveSpan, Any] | None = None
        """A succeeded attempt whose output the step's checks have yet to score: the
        loop runs them (``check``/``acheck``), then the record goes to the writer."""
        self.flag: dict[str, Any] | None = None
        self.tool_call_id = (
            run.claim_tool_call(spec.name, orjson.loads(self.input_json))
            if spec.kind == "tool" and run.tool_calls
            else None
        )

    def begin(self, attempt: int) -> None:
        spec = self.spec
        kind = "tool" if spec.kind == "tool" else "step"
        # A retry links to the attempt before it (a span link: "follows from").
        previous = self.active
        links = (
            None
            if previous is None or previous.otel is None
            else [Link(previous.otel.get_span_context())]
        )
        active = ActiveSpan(self.parent, kind, spec.name, spec.otel_name, attempt, self.key, links)
        record = active.record
        record.input = self.input_json
        record.raw = True
        if self.tool_call_id is not None or self.flag:
            attributes = dict(self.flag or {})
            if self.tool_call_id is not None:
                attributes["gen_ai.tool.call.id"] = self.tool_call_id
            record.attributes = encode(attributes)
        self.active = active

    def reenter(
        self, reentry: Reentry, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Decision | None, int, tuple[Any, ...], dict[str, Any]]:
        """What the call does in a re-entered run: a recorded ``Decision`` (return its
        value), or execute from this attempt number with these arguments."""
        decision = reentry.step(self.spec, self.key, self.position, self.input_json)
        if decision is not None:
            if not decision.live:
                return decision, 0, args, kwargs
            self.flag = decision.flag
        new_args, new_kwargs = reentry.fork_arguments(self.spec, self.key, args, kwargs)
        if new_args is not args or new_kwargs is not kwargs:
            self.arguments = self.spec.bind(tuple(new_args), new_kwargs)
            self.input_json = to_json(self.arguments)
        return None, reentry.first_attempt(self.key), tuple(new_args), new_kwargs

    def recorded(self, decision: Decision) -> Any:
        """Return a recorded value instead of executing; a fork records a copy of the
        recorded attempt (marked ``steptrace.reused_from``)."""
        source = decision.copy
        if source is not None:
            kind = "tool" if self.spec.kind == "tool" else "step"
            active = ActiveSpan(
                self.parent, kind, self.spec.name, self.spec.otel_name, source.attempt, self.key
            )
            record = active.record
            record.input = orjson.dumps(source.input)
            record.input_hash = source.input_hash
            record.output = orjson.dumps(source.output)
            record.attributes = encode(decision.flag)
            record.status = "succeeded"
            active.detach()
            active.finish()
        return decision.value

    def succeed(self, result: Any) -> Any:
        active = cast(ActiveSpan, self.active)
        try:
            value = self.spec.validate(result)
        except pydantic.ValidationError as exc:
            active.detach()
            self._record_failure(exc, raw=result, validation=True)
            raise
        active.detach()
        record = active.record
        record.status = "succeeded"
        record.output = to_json(value)
        self._finish(active, value)
        return value

    def fail(self, exc: BaseException) -> None:
        active = cast(ActiveSpan, self.active)
        active.detach()
        validation = isinstance(exc, pydantic.ValidationError)
        raw = _raw_output(active.frame, exc) if validation else None
        self._record_failure(exc, raw=raw, validation=validation)

    def _record_failure(self, exc: BaseException, *, raw: Any, validation: bool) -> None:
        active = cast(ActiveSpan, self.active)
        fail_span(active, exc, raw=raw, validation=validation)
        # A failed attempt is not checked, not even one whose raw output failed
        # validation: a check is a function of the step's output, and that is none.
        active.finish(exc)

    def _finish(self, active: ActiveSpan, output: Any) -> None:
        """End the succeeded attempt; its record goes to the writer now, or, when the
        step has checks, once they have scored its output."""
        if self.spec.checks is None:
            active.finish()
            return
        active.record.end_ns = time.time_ns()  # the checks' time is not the step's
        self.unchecked = (active, output)

    def check(self) -> None:
        """Run the step's checks on the ended attempt's output (outside the run: what
        they call is not recorded in it) and hand the record, scores and all, over."""
        active, output = cast(tuple[ActiveSpan, Any], self.unchecked)
        self.unchecked = None
        record = active.record
        checks = cast(StepChecks, self.spec.checks)
        # outside_run(), without a generator's cost on every attempt of a checked step
        token = current_frame.set(None)
        otel_token = otel_context.attach(_NO_TRACE)
        try:
            lines = checks.scores(
                output, self.arguments, record.run_id, record.span_id, record.name
            )
            record.scores = lines or None
        except Exception:  # a bug of ours: the attempt is recorded all the same
            log.warning("steptrace: the checks of %s failed", record.name, exc_info=True)
        finally:
            otel_context.detach(otel_token)
            current_frame.reset(token)
            active.hand_over()

    async def acheck(self) -> None:
        """``check`` in an async step: async checks are awaited."""
        active, output = cast(tuple[ActiveSpan, Any], self.unchecked)
        self.unchecked = None
        record = active.record
        checks = cast(StepChecks, self.spec.checks)
        try:
            with outside_run():
                lines = await checks.ascores(
                    output, self.arguments, record.run_id, record.span_id, record.name
                )
            record.scores = lines or None
        except Exception:
            log.warning("steptrace: the checks of %s failed", record.name, exc_info=True)
        finally:
            active.hand_over()

    def retry_delay(self, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before the ``attempt``-th try's next, or None when this was the
        last (a replay does not wait)."""
        spec = self.spec
        if attempt >= spec.max_attempts or not isinstance(exc, spec.retry_on):
            return None
        reentry = self.parent.run.reentry
        if reentry is not None and reentry.mode == "replay":
            return 0.0
        return spec.backoff.delay_s(attempt)


def run_step_sync(spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a decorated function: a step inside a run, a run of its own for a workflow
    (or a step called outside one, when configured), else the plain call."""
    parent = current_frame.get()
    if parent is None:
        if spec.kind == "workflow" or get_config().record_steps_outside_workflow:
            return _workflow_sync(spec, args, kwargs)
        return _untraced_sync(spec, args, kwargs)
    call = _Call(spec, parent, args, kwargs)
    run = parent.run
    first = 1
    if run.reentry is not None:
        decision, first, args, kwargs = call.reenter(run.reentry, args, kwargs)
        if decision is not None:
            value = call.recorded(decision)
            if run.durable == "step" and decision.copy is not None:
                run.sink.commit()
            return value
    attempt = first
    while True:
        call.begin(attempt)
        try:
            result = spec.fn(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            if run.durable == "step":
                run.sink.commit()
            delay = call.retry_delay(exc, attempt - first + 1)
            if delay is None:
                raise
            time.sleep(delay)
            attempt += 1
            continue
        try:
            value = call.succeed(result)
        except pydantic.ValidationError as exc:
            if run.durable == "step":
                run.sink.commit()
            delay = call.retry_delay(exc, attempt - first + 1)
            if delay is None:
                raise
            time.sleep(delay)
            attempt += 1
            continue
        if call.unchecked is not None:
            call.check()
        if run.durable == "step":
            run.sink.commit()
        return value


async def run_step_async(spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``run_step_sync`` for a coroutine function."""
    parent = current_frame.get()
    if parent is None:
        if spec.kind == "workflow" or get_config().record_steps_outside_workflow:
            return await _workflow_async(spec, args, kwargs)
        return await _untraced_async(spec, args, kwargs)
    call = _Call(spec, parent, args, kwargs)
    run = parent.run
    first = 1
    if run.reentry is not None:
        decision, first, args, kwargs = call.reenter(run.reentry, args, kwargs)
        if decision is not None:
            value = call.recorded(decision)
            if run.durable == "step" and decision.copy is not None:
                await run.sink.acommit()
            return value
    attempt = first
    while True:
        call.begin(attempt)
        try:
            result = await spec.fn(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            if run.durable == "step":
                await run.sink.acommit()
            delay = call.retry_delay(exc, attempt - first + 1)
            if delay is None:
                raise
            await asyncio.sleep(delay)
            attempt += 1
            continue
        try:
            value = call.succeed(result)
        except pydantic.ValidationError as exc:
            if run.durable == "step":
                await run.sink.acommit()
            delay = call.retry_delay(exc, attempt - first + 1)
            if delay is None:
                raise
            await asyncio.sleep(delay)
            attempt += 1
            continue
        if call.unchecked is not None:
            await call.acheck()
        if run.durable == "step":
            await run.sink.acommit()
        return value


def _untraced_sync(spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    attempt = 1
    while True:
        try:
            return spec.validate(spec.fn(*args, **kwargs))
        except Exception as exc:
            if attempt >= spec.max_attempts or not isinstance(exc, spec.retry_on):
                raise
            time.sleep(spec.backoff.delay_s(attempt))
            attempt += 1


async def _untraced_async(spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    attempt = 1
    while True:
        try:
            return spec.validate(await spec.fn(*args, **kwargs))
        except Exception as exc:
            if attempt >= spec.max_attempts or not isinstance(exc, spec.retry_on):
                raise
            await asyncio.sleep(spec.backoff.delay_s(attempt))
            attempt += 1


# --- runs ---------------------------------------------------------------------------


class RunScope:
    """Starts a run (root span, ``runs`` row) and finishes it.

    A run that re-enters a recording (``reentry``) records where it came from: a fork
    or replay is a new run whose root span links to the source run's; a resumed run
    keeps its id, trace and root span, and its new incarnation is a ``resume`` span
    under the root (the OTel span of that incarnation, with the run's new outcome).
    ``durable`` (a level) overrides the workflow's and the configured durability.

    ``session_id`` (checked by the caller) puts the run in that session; a new run
    without one takes the session its workflow's rule finds in its arguments, a resumed
    run keeps its own, and a fork or replay has none unless given. ``tags`` are added
    to the workflow's.
    """

    __slots__ = ("incarnation", "otel", "otel_token", "run", "spec", "token")

    def __init__(
        self,
        spec: Spec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        traceparent: str | None = None,
        reentry: Reentry | None = None,
        *,
        durable: str | None = None,
        session_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        sink = get_sink()
        # ConfigError before any span
        durable = durable or spec.durable or get_config().durability()
        log_capture.install(_current_logs)
        if get_config().capture_foreign_spans:
            ensure_collector()
        start_ns = time.time_ns()
        self.incarnation: SpanRecord | None = None
        if reentry is not None and reentry.mode == "resume":
            state, span = self._resume(spec, reentry, start_ns)
        else:
            state, span = self._start(
                spec, args, kwargs, traceparent, reentry, start_ns, session_id
            )
            state.tags = _tags(spec.tags, tags)
        state.entry_point = spec.entry_point
        state.code_version = spec.code_version()
        state.durability = durable
        state.logs = []
        self.spec = spec
        self.otel = span
        self.run = Run(state, sink, durable, reentry)
        sink.begin_run(state)
        frame_span = state.span_id if self.incarnation is None else self.incarnation.span_id
        if self.incarnation is not None or durable == "step":
            # Running (again), at once: a resumed run is not taken by a recoverer
            # meanwhile, and a durable run killed inside its first step is in the store
            # (interrupted), to be resumed, rather than lost.
            sink.commit()
        self.token = current_frame.set(Frame(self.run, frame_span, state.logs))
        self.otel_token = otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def _start(
        spec: Spec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        traceparent: str | None,
        reentry: Reentry | None,
        start_ns: int,
        session_id: str | None,
    ) -> tuple[RunState, Span]:
        # The parent: a W3C traceparent carried in from elsewhere, else the active span.
        parent = None if traceparent is None else context_from_traceparent(traceparent)
        parent_ctx = trace.get_current_span(parent).get_span_context()
        links = None
        if reentry is not None:
            source = reentry.recording.run
            relation = "forked_from" if reentry.mode == "fork" else "replay_of"
            links = [
                Link(
                    _span_context(source.trace_id, source.span_id),
                    {"steptrace.link.type": relation, "steptrace.run.id": source.run_id},
                )
            ]
        span = tracer().start_span(spec.otel_name, context=parent, start_time=start_ns, links=links)
        trace_id, span_id = span_ids(span)
        arguments = spec.bind(args, kwargs)
        state = RunState(
            run_id=new_run_id(),
            workflow=spec.name,
            trace_id=trace_id,
            span_id=span_id,
            start_ns=start_ns,
            input=to_json(arguments),
            raw=True,
            session_id=session_id,
        )
        if session_id is None and spec.session is not None and reentry is None:
            state.session_id = spec.session.session_of(arguments)
        if parent_ctx.is_valid:
            state.parent_trace_id = format(parent_ctx.trace_id, "032x")
            state.parent_span_id = format(parent_ctx.span_id, "016x")
            state.trace_id = state.parent_trace_id
        if reentry is not None:
            if reentry.mode == "fork":
                state.forked_from = reentry.source_id
                state.forked_at = reentry.from_step
            else:
                state.replay_of = reentry.source_id
        return state, span

    def _resume(self, spec: Spec, reentry: Reentry, start_ns: int) -> tuple[RunState, Span]:
        source = reentry.recording.run
        root = trace.set_span_in_context(
            trace.NonRecordingSpan(_span_context(source.trace_id, source.span_id))
        )
        span = tracer().start_span(spec.otel_name, context=root, start_time=start_ns)
        _, span_id = span_ids(span)
        state = RunState(
            run_id=source.run_id,
            workflow=source.workflow,
            trace_id=source.trace_id,
            span_id=source.span_id,
            start_ns=ns_from_iso(source.started_at) or start_ns,
            parent_trace_id=source.parent_trace_id,
            parent_span_id=source.parent_span_id,
            raw=True,
            resume_count=source.resume_count + 1,
            forked_from=source.forked_from,
            forked_at=source.forked_at,
            replay_of=source.replay_of,
            session_id=source.session_id,
        )
        self.incarnation = SpanRecord(
            source.run_id,
            span_id,
            source.span_id,
            "other",
            "resume",
            start_ns,
            attempt=state.resume_count,
            attributes=encode({"steptrace.run.resume_count": state.resume_count}),
        )
        return state, span

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Record the run's end and, unless it is fire-and-forget, commit it: when this
        returns, the run is in the store (or, while the store is down, the journal)."""
        self._record_end(result, error)
        if self.run.durable != "off":
            self.run.sink.commit()

    async def afinish(self, result: Any = None, error: BaseException | None = None) -> None:
        """``finish`` for an async workflow: the commit does not block the event loop."""
        self._record_end(result, error)
        if self.run.durable != "off":
            await self.run.sink.acommit()

    def _record_end(self, result: Any, error: BaseException | None) -> None:
        global _last_run_id
        otel_context.detach(self.otel_token)
        current_frame.reset(self.token)
        state = self.run.state
        state.end_ns = time.time_ns()
        if error is None:
            state.status = "succeeded"
            state.output = to_json(result)
        else:
            state.status = "failed"
            state.error = error_json(error, validation=isinstance(error, pydantic.ValidationError))
        _defer_span(state, self.otel, error)
        incarnation = self.incarnation
        if incarnation is not None:  # its OTel span is the run's, ended above
            incarnation.end_ns = state.end_ns
            incarnation.status = state.status
            incarnation.error = state.error
            self.run.sink.put(incarnation)
        self.run.sink.end_run(state)
        _last_run_id = state.run_id


def _tags(workflow_tags: Sequence[str], run_tags: Sequence[str]) -> bytes | None:
    """A new run's stored tags: its workflow's, then those given for the run, each once."""
    if not run_tags:
        return encode(list(workflow_tags)) if workflow_tags else None
    return encode(list(dict.fromkeys((*workflow_tags, *run_tags))))


def _span_context(trace_id: str, span_id: str) -> trace.SpanContext:
    return trace.SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=trace.TraceFlags(1)
    )


def _workflow_sync(spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    scope = RunScope(spec, args, kwargs)
    try:
        # A step recorded as a one-step run goes through its attempt loop inside the run.
        result = (
            spec.fn(*args, **kwargs)
            if spec.kind == "workflow"
            else run_step_sync(spec, args, kwargs)
        )
    except BaseException as exc:
        scope.finish(error=exc)
        raise
    scope.finish(result)
    return result


async def _workflow_async(spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    scope = RunScope(spec, args, kwargs)
    try:
        if spec.kind == "workflow":
            result = await spec.fn(*args, **kwargs)
        else:
            result = await run_step_async(spec, args, kwargs)
    except BaseException as exc:
        await scope.afinish(error=exc)
        raise
    await scope.afinish(result)
    return result
