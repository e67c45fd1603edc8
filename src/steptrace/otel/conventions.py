"""The OpenTelemetry conventions: one record becomes one span's name, kind, attributes
and status here, and nowhere else.

Both ways a span leaves steptrace go through this module: live export (the writer's
``span_end.end_spans``, once a record's values are redacted) and ``export-otlp``
(``backfill``, from the stored rows). Each first describes its record as
``SpanFacts`` (``facts_from_record`` for a live ``SpanRecord``/``RunState``,
``facts_from_stored`` for a stored ``RunRecord``/``SpanView``); ``span_attributes``
then gives the same attributes for the same facts: GenAI semantic conventions
(``gen_ai.*``), steptrace's own (``steptrace.*``) and, when enabled, OpenInference's.
A score becomes the attributes of a ``gen_ai.evaluation.result`` event here too
(``evaluation_attributes``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from opentelemetry.trace import SpanKind, Status, StatusCode

from steptrace.record import RunState, SpanRecord, for_export, pipeline

if TYPE_CHECKING:
    from steptrace.store.model import RunRecord, SpanView

_OI_KIND = {"run": "CHAIN", "step": "CHAIN", "tool": "TOOL", "llm": "LLM"}
_OI_MESSAGES = 20
"""At most this many prompt messages as ``llm.input_messages.*`` attributes."""
_REQUEST_PARAMS = {
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "top_p": "top_p",
    "seed": "seed",
    "max_output_tokens": "max_tokens",
}
"""Call parameters exported as ``gen_ai.request.<name>`` (numbers only)."""
_JSON = "application/json"


def span_name(kind: str, name: str) -> str:
    """The span name of a workflow run (``kind="run"``), step or tool; an LLM span's
    name is ``llm_span_name``'s."""
    if kind == "run":
        return f"invoke_workflow {name}"
    if kind == "tool":
        return f"execute_tool {name}"
    return name


def llm_span_name(operation: str, model: str) -> str:
    """``chat {model}``: an LLM call's span name (also its stored name)."""
    return f"{operation} {model}"


def span_kind(kind: str) -> SpanKind:
    """An LLM call is a client of a remote service; everything else is internal."""
    return SpanKind.CLIENT if kind == "llm" else SpanKind.INTERNAL


@dataclasses.dataclass(slots=True)
class SpanFacts:
    """What the conventions need to know of one record, whichever side it comes from.

    ``input``/``output`` are the stored (redacted, capped) JSON; ``llm`` has the keys of
    a stored span's ``llm`` (``SpanView.llm``); ``error`` is (error type, status text).
    """

    kind: str
    """``run``, ``step``, ``tool``, ``llm`` or ``other`` (a foreign span)."""
    name: str
    run_id: str
    status: str
    input: bytes | None = None
    output: bytes | None = None
    key: str | None = None
    attempt: int | None = None
    tool_call_id: str | None = None
    llm: dict[str, Any] | None = None
    error: tuple[str, str] | None = None
    stored_attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    lineage: dict[str, Any] = dataclasses.field(default_factory=dict)
    """A run's ``steptrace.run.*`` lineage attributes (entry point, source, resumes)."""
    session_id: str | None = None
    """The run's session: ``gen_ai.conversation.id`` on each of its spans."""


def _lineage(
    entry_point: str | None,
    forked_from: str | None,
    forked_at: str | None,
    replay_of: str | None,
    resume_count: int,
) -> dict[str, Any]:
    lineage: dict[str, Any] = {
        "steptrace.run.entry_point": entry_point,
        "steptrace.run.forked_from": forked_from,
        "steptrace.run.forked_at": forked_at,
        "steptrace.run.replay_of": replay_of,
        "steptrace.run.resume_count": resume_count or None,
    }
    return {k: v for k, v in lineage.items() if v is not None}


def facts_from_record(rec: RunState | SpanRecord) -> SpanFacts:
    """The facts of a live record whose values the writer has redacted already."""
    if isinstance(rec, RunState):
        lineage = _lineage(
            rec.entry_point, rec.forked_from, rec.forked_at, rec.replay_of, rec.resume_count
        )
        return SpanFacts(
            "run",
            rec.workflow,
            rec.run_id,
            rec.status,
            rec.input,
            rec.output,
            error=rec.otel_error,
            lineage=lineage,
            session_id=rec.session_id,
        )
    stored = orjson.loads(rec.attributes) if rec.attributes else {}
    facts = SpanFacts(
        rec.kind,
        rec.name,
        rec.run_id,
        rec.status,
        rec.input,
        rec.output,
        rec.key,
        rec.attempt,
        stored.get("gen_ai.tool.call.id"),
        error=rec.otel_error,
        stored_attributes=stored,
        session_id=rec.session_id,
    )
    llm = rec.llm
    if llm is not None and rec.kind == "llm":
        prompt = orjson.loads(rec.input) if rec.input else None
        facts.llm = {
            "provider": llm.provider,
            "model": llm.model,
            "messages": prompt.get("messages") if isinstance(prompt, dict) else None,
            "params": orjson.loads(llm.params) if llm.params else {},
            "response": orjson.loads(rec.output) if rec.output else None,
            "input_tokens": llm.input_tokens,
            "output_tokens": llm.output_tokens,
            "cost_usd": llm.cost_usd,
            "cached_input_tokens": llm.cached_input_tokens,
            "reasoning_tokens": llm.reasoning_tokens,
            "finish_reason": llm.finish_reason,
            "response_model": llm.response_model,
            "time_to_first_chunk_ms": llm.time_to_first_chunk_ms,
            "tool_calls": orjson.loads(llm.tool_calls) if llm.tool_calls else [],
            "incomplete": llm.incomplete,
        }
    return facts


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _stored_error(status: str, error: dict[str, Any] | None) -> tuple[str, str] | None:
    if status != "failed":
        return None
    error = error or {}
    error_type = str(error.get("type") or "Error")
    return error_type, f"{error_type}: {error.get('message', '')}"


def facts_from_stored(run: RunRecord, span: SpanView | None = None) -> SpanFacts:
    """The facts of a stored run's root span (``span=None``) or of one of its spans."""
    if span is None:
        return SpanFacts(
            "run",
            run.workflow,
            run.run_id,
            run.status,
            _dumps(run.input),
            _dumps(run.output),
            error=_stored_error(run.status, run.error),
            lineage=_lineage(
                run.entry_point, run.forked_from, run.forked_at, run.replay_of, run.resume_count
            ),
            session_id=run.session_id,
        )
    return SpanFacts(
        span.kind,
        span.name,
        run.run_id,
        span.status,
        _dumps(span.input),
        _dumps(span.output),
        span.step_key,
        span.attempt,
        span.attributes.get("gen_ai.tool.call.id"),
        span.llm if span.kind == "llm" else None,
        _stored_error(span.status, span.error),
        span.attributes,
        session_id=run.session_id,
    )


def span_attributes(facts: SpanFacts, *, openinference: bool) -> dict[str, Any]:
    """The span's attributes, values capped at the export size (``export_value_bytes``)."""
    attributes: dict[str, Any]
    if facts.kind == "other":  # another instrumentation's span: its own attributes
        attributes = {
            k: v if isinstance(v, str | bool | int | float) else for_export(_dumps(v))
            for k, v in facts.stored_attributes.items()
            if v is not None
        }
        attributes["steptrace.run.id"] = facts.run_id
        return attributes
    attributes = {"steptrace.run.id": facts.run_id}
    input_value = for_export(facts.input)
    output_value = for_export(facts.output)
    if facts.kind == "run":
        attributes["gen_ai.operation.name"] = "invoke_workflow"
        attributes["steptrace.workflow.name"] = facts.name
        attributes["steptrace.run.input"] = input_value
        attributes["steptrace.run.output"] = output_value
        attributes.update(facts.lineage)
    elif facts.kind == "llm":
        _llm_attributes(attributes, facts)
        _replay_attributes(attributes, facts)
    else:
        if facts.key is not None:
            attributes["steptrace.step.key"] = facts.key
        if facts.attempt is not None:
            attributes["steptrace.step.attempt"] = facts.attempt
        attributes["steptrace.step.input"] = input_value
        attributes["steptrace.step.output"] = output_value
        if facts.kind == "tool":
            attributes["gen_ai.operation.name"] = "execute_tool"
            attributes["gen_ai.tool.name"] = facts.name
            if facts.tool_call_id is not None:
                attributes["gen_ai.tool.call.id"] = facts.tool_call_id
        _replay_attributes(attributes, facts)
    if facts.session_id is not None:
        attributes["gen_ai.conversation.id"] = facts.session_id
    if facts.error is not None:
        attributes["error.type"] = facts.error[0]
    if openinference:
        _openinference(attributes, facts, input_value, output_value)
    return attributes


_REPLAY_ATTRIBUTES = (
    "steptrace.reused_from",
    "steptrace.replay.answer",
    "steptrace.replay.source_span_id",
    "steptrace.replay.unmatched",
    "steptrace.replay.reason",
)


def _replay_attributes(attributes: dict[str, Any], facts: SpanFacts) -> None:
    """How a re-entered run's span came to be: reused, answered from the recording, or
    run live without a recorded match."""
    stored = facts.stored_attributes
    for name in _REPLAY_ATTRIBUTES:
        value = stored.get(name)
        if isinstance(value, str | bool | int | float):
            attributes[name] = value


def span_status(facts: SpanFacts) -> Status:
    """ERROR with the error's type and (redacted) message for a failed record."""
    if facts.error is None:
        return Status(StatusCode.UNSET)
    return Status(StatusCode.ERROR, facts.error[1])


def _llm_attributes(attributes: dict[str, Any], facts: SpanFacts) -> None:
    llm = facts.llm or {}
    attributes["gen_ai.operation.name"] = "chat"
    attributes["gen_ai.provider.name"] = llm.get("provider") or "unknown"
    attributes["gen_ai.request.model"] = llm.get("model") or "unknown"
    attributes["gen_ai.input.messages"] = for_export(_dumps(llm.get("messages") or []))
    params = llm.get("params") or {}
    for key, name in _REQUEST_PARAMS.items():
        value = params.get(key) if isinstance(params, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[f"gen_ai.request.{name}"] = value
    if facts.status == "failed":
        return
    if llm.get("response_model"):
        attributes["gen_ai.response.model"] = llm["response_model"]
    message: dict[str, Any] = {"role": "assistant", "content": llm.get("response")}
    if llm.get("tool_calls"):
        message["tool_calls"] = llm["tool_calls"]
    attributes["gen_ai.output.messages"] = for_export(_dumps([message]))
    for key, column in (
        ("gen_ai.usage.input_tokens", "input_tokens"),
        ("gen_ai.usage.output_tokens", "output_tokens"),
        ("gen_ai.usage.cache_read.input_tokens", "cached_input_tokens"),
        ("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
    ):
        if llm.get(column) is not None:
            attributes[key] = llm[column]
    if llm.get("finish_reason"):
        attributes["gen_ai.response.finish_reasons"] = (llm["finish_reason"],)
    if llm.get("time_to_first_chunk_ms") is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = llm["time_to_first_chunk_ms"] / 1000
    if llm.get("cost_usd") is not None:
        attributes["steptrace.llm.cost_usd"] = llm["cost_usd"]
    if llm.get("incomplete"):
        attributes["steptrace.llm.incomplete"] = True


def _openinference(
    attributes: dict[str, Any], facts: SpanFacts, input_value: str, output_value: str
) -> None:
    """OpenInference attributes, so Phoenix and friends show runs and steps as CHAIN,
    LLM calls as LLM and tools as TOOL, with their inputs and outputs."""
    kind = _OI_KIND.get(facts.kind, "CHAIN")
    attributes["openinference.span.kind"] = kind
    if facts.session_id is not None:
        attributes["session.id"] = facts.session_id
    llm = facts.llm
    if llm is not None:
        attributes["llm.model_name"] = llm.get("response_model") or llm.get("model") or "unknown"
        attributes["llm.provider"] = llm.get("provider") or "unknown"
        prompt_tokens, completion_tokens = llm.get("input_tokens"), llm.get("output_tokens")
        if prompt_tokens is not None:
            attributes["llm.token_count.prompt"] = prompt_tokens
        if completion_tokens is not None:
            attributes["llm.token_count.completion"] = completion_tokens
        if prompt_tokens is not None and completion_tokens is not None:
            attributes["llm.token_count.total"] = prompt_tokens + completion_tokens
        for i, message in enumerate((llm.get("messages") or [])[:_OI_MESSAGES]):
            if isinstance(message, dict):
                content = message.get("content")
                prefix = f"llm.input_messages.{i}.message."
                attributes[prefix + "role"] = str(message.get("role", ""))
                attributes[prefix + "content"] = (
                    content if isinstance(content, str) else orjson.dumps(content).decode()
                )
    elif kind == "TOOL":
        attributes["tool.name"] = facts.name
    attributes["input.value"] = input_value
    attributes["input.mime_type"] = _JSON
    attributes["output.value"] = output_value
    attributes["output.mime_type"] = _JSON


def log_event_attributes(
    level: str, logger: str, message: str, exc_text: str | None
) -> dict[str, str]:
    """A step's log record as the attributes of a ``log`` span event (when no OTel logs
    exporter takes it)."""
    attributes = {"log.severity": level, "log.logger": logger, "log.message": message}
    if exc_text:
        attributes["exception.stacktrace"] = exc_text
    return attributes


def log_record_attributes(logger: str, exc_text: str | None) -> dict[str, str]:
    """The attributes of a step's log record sent as an OTel log record."""
    attributes = {"logger.name": logger}
    if exc_text:
        attributes["exception.stacktrace"] = exc_text
    return attributes


EVALUATION_EVENT = "gen_ai.evaluation.result"
"""The GenAI semantic conventions' event for the result of evaluating an output: a span
event on the evaluated span, or a log record (an event) with its trace and span ids."""


class ScoreFacts(Protocol):
    """What an evaluation event says of a score: a ``ScoreLine`` being written, or a
    stored ``Score``."""

    @property
    def run_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def value(self) -> float | bool | str | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def rationale(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def judge_run_id(self) -> str | None: ...


def evaluation_attributes(score: ScoreFacts) -> dict[str, Any]:
    """A score as the attributes of a ``gen_ai.evaluation.result`` event: its name, its
    value (a number; 1 or 0 for pass or fail) and label (the category; ``pass`` or
    ``fail`` for a boolean score without one), the rationale as the explanation (already
    redacted, capped at the export size), and steptrace's own: the source, the judge's
    run, the run."""
    attributes: dict[str, Any] = {"gen_ai.evaluation.name": score.name}
    if score.kind != "categorical" and score.value is not None:
        attributes["gen_ai.evaluation.score.value"] = float(score.value)
    label = score.label
    if label is None and score.kind == "boolean":
        label = "pass" if score.value else "fail"
    if label is not None:
        attributes["gen_ai.evaluation.score.label"] = label
    if score.rationale:
        limit = pipeline().export_limit
        rationale = score.rationale
        if len(rationale) > limit:
            rationale = rationale[:limit] + f"…[truncated, {len(score.rationale)} characters]"
        attributes["gen_ai.evaluation.explanation"] = rationale
    attributes["steptrace.score.source"] = score.source
    if score.judge_run_id:
        attributes["steptrace.score.judge_run_id"] = score.judge_run_id
    attributes["steptrace.run.id"] = score.run_id
    return attributes
