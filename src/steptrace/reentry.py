"""Re-entering a recorded run: resume it in place, fork it from a step, replay it.

A run being re-entered carries a ``Reentry`` (``Run.reentry``): the source run's
recording (``Recording``) and what to do at each step, tool and LLM call of today's
code. Steps are identified by their key, a path of ``name#occurrence`` within each
parent (``outer#0/inner#1``), and by the hash of their redacted input:

- **resume** (same run): a step whose key has a succeeded attempt with the same input
  hash returns that attempt's output without executing (nothing is recorded again);
  any other executes, its attempts numbered after the recorded ones.
- **fork** (a new run): steps the recording started before ``from_step`` (its
  ancestors aside) return their recorded outputs, recorded in the new run as copies
  marked ``steptrace.reused_from``; ``from_step`` executes with its recorded input or
  the one given, and every step after it executes.
- **replay** (a new run): every step executes; LLM calls (and tools, unless asked)
  are answered from the recording, matched by their place (step key, attempt, order)
  and the hash of the prompt. A call with no match runs live and is flagged
  (``steptrace.replay.unmatched``), or fails under ``strict``. A tool marked
  ``side_effects=True`` is never executed by a replay unless ``tools="all"``.

Resume and replay check that today's code calls steps in the recorded order (steps
that ran concurrently may swap places): ``DivergenceError`` otherwise, naming the step
and its position, and saying how to fork instead.
"""

from __future__ import annotations

import functools
import threading
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import orjson
import pydantic

from steptrace.config import get_config
from steptrace.errors import DivergenceError, ReentryError, ReplayMismatch
from steptrace.frames import current_frame
from steptrace.record import MARKER, encode, input_hash, redact_values
from steptrace.store.model import RunRecord, SpanView

if TYPE_CHECKING:
    from steptrace.frames import Frame
    from steptrace.llm.types import Reply
    from steptrace.spec import Spec

Mode = Literal["resume", "fork", "replay"]
LLMMode = Literal["live", "recorded"]
ToolMode = Literal["recorded", "live", "all"]

LLM_MODES: tuple[str, ...] = ("live", "recorded")
TOOL_MODES: tuple[str, ...] = ("recorded", "live", "all")


def is_replay() -> bool:
    """True inside a run that re-enters a recording (resumed, forked or replayed)."""
    frame = current_frame.get()
    return frame is not None and frame.run.reentry is not None


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def prompt_hash(model: str, messages: Any) -> str:
    """The hash of a prompt as stored (redacted), key order aside."""
    return input_hash(_canonical({"model": model, "messages": messages}))


def not_whole(value: Any) -> str | None:
    """Why a stored value cannot stand for the value it was made of (a placeholder for
    an unserialisable, truncated or binary value; a redacted secret), or None."""
    if isinstance(value, dict):
        if MARKER in value:
            return f"it was stored as a placeholder ({value[MARKER]})"
        for item in value.values():
            reason = not_whole(item)
            if reason:
                return reason
    elif isinstance(value, list):
        for item in value:
            reason = not_whole(item)
            if reason:
                return reason
    elif isinstance(value, str) and get_config().redaction_text in value:
        return "a secret in it was redacted"
    return None


# --- values back from the recording ---------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _resolved_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    # Under `from __future__ import annotations` each call evaluates every annotation's
    # text again: once per function is enough (a failure is not cached: raised).
    return typing.get_type_hints(fn)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return _resolved_hints(fn)
    except Exception:  # forward references that do not resolve: values stay JSON
        return {}


@functools.lru_cache(maxsize=512)
def _adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    # Building an adapter costs far more than validating with it (~200 us against a few
    # for an int), and every re-entered run converts its workflow's arguments again.
    return pydantic.TypeAdapter(hint)


def convert(value: Any, hint: Any) -> Any:
    """A recorded JSON value as the annotated type (a pydantic model, a dataclass, a
    datetime…), else as it is."""
    if hint is None or hint is Any:
        return value
    try:
        try:
            adapter = _adapter(hint)
        except TypeError:  # a hint that cannot be a cache key
            adapter = pydantic.TypeAdapter(hint)
        return adapter.validate_python(value)
    except Exception:
        return value


class _NotReusable(Exception):
    pass


def output_value(spec: Spec, stored: Any) -> Any:
    """A recorded output as the step returns it: validated by its ``output=`` model, else
    converted to its return annotation. ``_NotReusable`` when it cannot be."""
    reason = not_whole(stored)
    if reason:
        raise _NotReusable(reason)
    if spec.adapter is not None:
        try:
            return spec.adapter.validate_python(stored)
        except pydantic.ValidationError as exc:
            raise _NotReusable("the recorded output no longer validates") from exc
    return convert(stored, _hints(spec.fn).get("return"))


def call_arguments(spec: Spec, arguments: Any) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments that call ``spec.fn`` as the recorded arguments
    (a JSON object by parameter name) say, each converted to its annotation."""
    if not isinstance(arguments, dict):
        raise ReentryError(f"the recorded input of {spec.name} is not an object of arguments")
    reason = not_whole(arguments)
    if reason:
        raise ReentryError(
            f"the recorded input of {spec.name} cannot be used: {reason}; give the input "
            "explicitly (fork --input), or record such values in full (max_value_bytes, "
            "redaction rules)"
        )
    params = spec.signature.parameters
    if set(arguments) == {"args", "kwargs"} and not {"args", "kwargs"} & set(params):
        return list(arguments["args"]), dict(arguments["kwargs"])  # recorded unbound
    hints = _hints(spec.fn)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    unknown = set(arguments) - set(params)
    if unknown:
        raise ReentryError(
            f"{spec.name} has no parameter {', '.join(sorted(unknown))} "
            f"(its parameters: {', '.join(params)})"
        )
    for name, param in params.items():
        if name not in arguments:
            continue
        value = convert(arguments[name], hints.get(name))
        if param.kind is param.POSITIONAL_ONLY:
            args.append(value)
        elif param.kind is param.VAR_POSITIONAL:
            args.extend(value)
        elif param.kind is param.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[name] = value
    return args, kwargs


# --- the recording ---------------------------------------------------------------------


class _Occurrence:
    __slots__ = ("attempts", "end", "start")

    def __init__(self, span: SpanView) -> None:
        self.attempts = [span]
        self.start = span.started_at
        self.end = span.ended_at or span.started_at

    def add(self, span: SpanView) -> None:
        self.attempts.append(span)
        self.end = max(self.end, span.ended_at or span.started_at)

    def succeeded(self, digest: str | None) -> SpanView | None:
        """The last succeeded attempt with this input hash."""
        for span in reversed(self.attempts):
            if span.status == "succeeded" and span.input_hash == digest:
                return span
        return None

    @property
    def last_attempt(self) -> int:
        return max((s.attempt or 0) for s in self.attempts)


def parent_key(key: str) -> str:
    return key.rpartition("/")[0]


class Recording:
    """A recorded run as re-entry reads it: step occurrences by key (their attempts in
    start order), the keys under each parent in the order they started, and LLM calls
    by the step attempt they were made in."""

    def __init__(self, run: RunRecord) -> None:
        self.run = run
        self.steps: dict[str, _Occurrence] = {}
        self.order: dict[str, list[str]] = {}
        owner_of: dict[str, tuple[str, int | None]] = {}
        for span in run.spans:  # in start order
            key = span.step_key
            if span.kind not in ("step", "tool") or key is None:
                continue
            owner_of[span.span_id] = (key, span.attempt)
            occurrence = self.steps.get(key)
            if occurrence is None:
                self.steps[key] = _Occurrence(span)
                self.order.setdefault(parent_key(key), []).append(key)
            else:
                occurrence.add(span)
        self.llm: dict[tuple[str | None, int | None], list[SpanView]] = {}
        for span in run.spans:
            if span.kind == "llm":
                place = owner_of.get(span.parent_span_id or "", (None, None))
                self.llm.setdefault(place, []).append(span)

    def started_before(self, a: str, b: str) -> bool:
        return self.steps[a].start < self.steps[b].start

    def overlapped(self, a: str, b: str) -> bool:
        x, y = self.steps[a], self.steps[b]
        return x.start < y.end and y.start < x.end


# --- one re-entered run -----------------------------------------------------------------


class Decision:
    """What a step call of today's code does: return ``value`` (recorded) instead of
    executing, with ``copy`` the recorded attempt to record a copy of (or None); or,
    ``live``, execute with ``flag`` among its span's attributes."""

    __slots__ = ("copy", "flag", "live", "value")

    def __init__(
        self, value: Any, copy: SpanView | None, flag: dict[str, Any], live: bool = False
    ) -> None:
        self.value = value
        self.copy = copy
        self.flag = flag
        self.live = live


class Reentry:
    """How today's code re-enters one recorded run (``Run.reentry``)."""

    def __init__(
        self,
        mode: Mode,
        recording: Recording,
        *,
        from_step: str | None = None,
        step_input: dict[str, Any] | None = None,
        llm: LLMMode = "live",
        tools: ToolMode = "recorded",
        strict: bool = False,
    ) -> None:
        self.mode = mode
        self.recording = recording
        self.source_id = recording.run.run_id
        self.from_step = from_step
        self.step_input = step_input
        self.llm = llm
        self.tools = tools
        self.strict = strict
        self.fork_reached = False
        self._lock = threading.Lock()
        self.recorded_calls = 0
        self.live_calls = 0
        self.unmatched: list[dict[str, Any]] = []

    # --- steps and tools -------------------------------------------------------------

    def step(self, spec: Spec, key: str, position: int, input_json: bytes) -> Decision | None:
        """Called before a step or tool executes: a ``Decision`` to return a recorded
        value instead, or None to execute (``DivergenceError`` when the order broke)."""
        recording = self.recording
        if self.mode != "fork":
            self._check_order(key, position)
        occurrence = recording.steps.get(key)
        if self.mode == "fork":
            return self._fork_step(spec, key, input_json, occurrence)
        if self.mode == "resume":
            if occurrence is None:
                return None
            return self._reuse(spec, occurrence, input_json, copy=False)
        # replay: steps execute; tools are answered from the recording unless asked
        if spec.kind != "tool" or self.tools == "all":
            return None
        if self.tools == "live" and not spec.side_effects:
            return None
        decision = None if occurrence is None else self._reuse(spec, occurrence, input_json)
        if decision is not None:
            decision.flag["steptrace.replay.answer"] = "recorded"
            return decision
        reason = "no recorded call of this tool with this input"
        if spec.side_effects:
            raise ReplayMismatch(
                f"tool {key} (side_effects=True) was not executed by the replay of run "
                f"{self.source_id}: {reason}; replay with tools='all' to execute it"
            )
        self._unmatched("tool", key, reason)
        flag = {"steptrace.replay.unmatched": True, "steptrace.replay.reason": reason}
        return Decision(None, None, flag, live=True)

    def _fork_step(
        self, spec: Spec, key: str, input_json: bytes, occurrence: _Occurrence | None
    ) -> Decision | None:
        from_step = self.from_step
        assert from_step is not None
        if self.fork_reached or occurrence is None or from_step not in self.recording.steps:
            return None
        if key == from_step:
            with self._lock:
                self.fork_reached = True
            return None
        if from_step.startswith(key + "/") or not self.recording.started_before(key, from_step):
            return None  # an ancestor of the fork point, or after it
        return self._reuse(spec, occurrence, input_json)

    def _reuse(
        self, spec: Spec, occurrence: _Occurrence, input_json: bytes, *, copy: bool = True
    ) -> Decision | None:
        digest = input_hash(redact_values([input_json])[0])
        span = occurrence.succeeded(digest)
        if span is None:
            return None
        try:
            value = output_value(spec, span.output)
        except _NotReusable:
            return None
        return Decision(
            value,
            span if copy else None,
            {"steptrace.reused_from": f"{self.source_id}/{span.span_id}"},
        )

    def first_attempt(self, key: str) -> int:
        """The attempt number today's first attempt of ``key`` gets: after the recorded
        ones when resuming in place, else 1."""
        if self.mode != "resume":
            return 1
        occurrence = self.recording.steps.get(key)
        return 1 if occurrence is None else occurrence.last_attempt + 1

    def fork_arguments(
        self, spec: Spec, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments the fork step is called with: today's, with the given input's
        arguments in place of theirs."""
        if key != self.from_step or self.step_input is None:
            return args, kwargs
        try:
            bound = spec.signature.bind(*args, **kwargs)
        except TypeError:
            return args, kwargs
        override_args, override_kwargs = call_arguments(spec, self.step_input)
        if override_args:
            names = [n for n, p in spec.signature.parameters.items() if p.kind is p.POSITIONAL_ONLY]
            for name, value in zip(names, override_args, strict=False):
                bound.arguments[name] = value
        for name, value in override_kwargs.items():
            bound.arguments[name] = value
        return bound.args, bound.kwargs

    def _check_order(self, key: str, position: int) -> None:
        recorded = self.recording.order.get(parent_key(key), ())
        if position >= len(recorded) or recorded[position] == key:
            return
        expected = recorded[position]
        if key in self.recording.steps and self.recording.overlapped(key, expected):
            return  # they ran concurrently: either may start first
        where = parent_key(key) or "the workflow"
        raise DivergenceError(
            f"run {self.source_id} diverged at step {key!r}: today's code calls it as step "
            f"{position + 1} of {where}, where the recording has {expected!r}. The code "
            f"changed since the run was recorded; to run today's code from there, fork "
            f"instead: steptrace fork {self.source_id} --from {expected}",
            step=key,
            position=position + 1,
            recorded=expected,
        )

    # --- LLM calls ----------------------------------------------------------------------

    def llm_answer(
        self, frame: Frame, index: int, provider: str, model: str, messages: Sequence[Any]
    ) -> tuple[Reply | None, dict[str, Any]]:
        """The recorded reply to the ``index``-th LLM call of the step attempt ``frame``
        (or None: call the model), and the attributes that say so."""
        if self.llm != "recorded":
            with self._lock:
                self.live_calls += 1
            return None, {}
        place = (frame.key, frame.attempt) if frame.key is not None else (None, None)
        recorded = self.recording.llm.get(place, ())
        stored_messages = orjson.loads(encode({"messages": list(messages)}))["messages"]
        digest = prompt_hash(model, stored_messages)
        span = recorded[index] if index < len(recorded) else None
        if span is None:
            reason = "no recorded call at this place"
        elif span.status not in ("succeeded", "incomplete") or span.llm is None:
            reason = "the recorded call failed"
        elif prompt_hash(str(span.llm.get("model")), _messages(span)) != digest:
            reason = "the prompt changed"
        else:
            with self._lock:
                self.recorded_calls += 1
            return _reply(span, provider), {
                "steptrace.replay.answer": "recorded",
                "steptrace.replay.source_span_id": span.span_id,
            }
        where = f"{frame.key or 'the workflow'} (attempt {frame.attempt or 1}, call {index + 1})"
        if self.strict:
            raise ReplayMismatch(
                f"LLM call {model} in {where} has no recorded answer in run "
                f"{self.source_id}: {reason}"
            )
        self._unmatched("llm", where, reason)
        with self._lock:
            self.live_calls += 1
        return None, {"steptrace.replay.unmatched": True, "steptrace.replay.reason": reason}

    def _unmatched(self, kind: str, where: str, reason: str) -> None:
        if self.strict:
            raise ReplayMismatch(f"{kind} call in {where}: {reason} (run {self.source_id})")
        with self._lock:
            self.unmatched.append({"kind": kind, "at": where, "reason": reason})


def _messages(span: SpanView) -> Any:
    prompt = span.input
    return prompt.get("messages") if isinstance(prompt, dict) else None


def _reply(span: SpanView, provider: str) -> Reply:
    from steptrace.llm.types import Reply, ToolCall, Usage

    llm = span.llm or {}
    text = span.output if isinstance(span.output, str) else orjson.dumps(span.output).decode()
    calls = tuple(
        ToolCall(id=str(c.get("id")), name=str(c.get("name")), arguments=c.get("arguments") or {})
        for c in llm.get("tool_calls") or ()
        if isinstance(c, dict)
    )
    return Reply(
        text=text,
        usage=Usage(
            input_tokens=llm.get("input_tokens"),
            output_tokens=llm.get("output_tokens"),
            cached_input_tokens=llm.get("cached_input_tokens"),
            reasoning_tokens=llm.get("reasoning_tokens"),
        ),
        model=str(llm.get("response_model") or llm.get("model") or ""),
        provider=provider,
        finish_reason=llm.get("finish_reason"),
        cost_usd=0.0,
        tool_calls=calls,
    )
