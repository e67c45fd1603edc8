"""OpenTelemetry's side of a stored record: its span's value attributes, then its end.

The hot path starts a span and leaves it open; once the writer has redacted the
record's values (``finish_values``) and the record is durable, ``end_spans`` gives the
span its (capped) value attributes, OpenInference attributes, its log records (as OTel
log records when a logs exporter is set up, else as span events) and ends it with the
record's own timestamps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry.trace import StatusCode

from steptrace.config import get_config
from steptrace.record import (
    RunState,
    SpanRecord,
    cap_value,
    for_export,
    input_hash,
    make_storable,
    redact_values,
)

_END_CHUNK = 256


def finish_values(records: Sequence[RunState | SpanRecord]) -> None:
    """Redact and cap the values the hot path only serialised (one scan for the whole
    batch), and make every text field storable: what must happen before a record is
    stored or spilled."""
    targets: list[tuple[RunState | SpanRecord, str, bytes]] = []
    for rec in records:
        if rec.raw:
            if rec.input is not None:
                targets.append((rec, "input", rec.input))
            if rec.output is not None:
                targets.append((rec, "output", rec.output))
    if targets:
        done = redact_values([value for _, _, value in targets])
        for (rec, name, _), value in zip(targets, done, strict=True):
            if name == "input" and isinstance(rec, SpanRecord) and rec.kind in ("step", "tool"):
                rec.input_hash = input_hash(value)  # of the redacted input
            setattr(rec, name, cap_value(value))
    for rec in records:
        make_storable(rec)


def end_spans(records: Sequence[RunState | SpanRecord]) -> None:
    """Give each record's OTel span its value attributes and end it (after the record is
    stored). Children come before their parents: spans are ended in the order they
    finished."""
    openinference = get_config().openinference
    emit_log = _log_emitter()
    for n, rec in enumerate(records, 1):
        span = rec.otel
        if span is None:
            continue
        if n % _END_CHUNK == 0:
            # Let the span processor's thread take the GIL and drain its queue: ending
            # thousands of spans at once would overflow a default BatchSpanProcessor.
            time.sleep(0)
        attributes = rec.otel_attributes or {}
        input_value = output_value = None
        if rec.raw:
            prefix = "steptrace.run." if isinstance(rec, RunState) else "steptrace.step."
            input_value = attributes[prefix + "input"] = for_export(rec.input)
            output_value = attributes[prefix + "output"] = for_export(rec.output)
        if openinference:
            add_openinference(attributes, rec, input_value, output_value)
        span.set_attributes(attributes)
        if rec.logs:
            if emit_log is not None:
                _emit_logs(emit_log, span, rec.logs)
            else:  # no logs exporter: logs travel with their span as events
                for ts, level, logger, message, exc_text in rec.logs:
                    event = {"log.severity": level, "log.logger": logger, "log.message": message}
                    if exc_text:
                        event["exception.stacktrace"] = exc_text
                    span.add_event("log", event, timestamp=ts)
        if rec.otel_error is not None:
            error_type, message = rec.otel_error
            span.set_status(StatusCode.ERROR, message)
            span.set_attribute("error.type", error_type)
        span.end(end_time=rec.end_ns)
        rec.otel = rec.otel_attributes = None
    for rec in records:
        rec.raw = False


_SEVERITY = {"DEBUG": 5, "INFO": 9, "WARNING": 13, "ERROR": 17, "CRITICAL": 21}
_emitter: tuple[Any, Any] | None = None


def _log_emitter() -> Any | None:
    """The OTel logger step log records go to when the process has an SDK
    ``LoggerProvider`` (a logs exporter is configured), else ``None``."""
    global _emitter
    # Only when the SDK's logs module is loaded already: importing it (as at exit,
    # after interpreter shutdown began) is not something a writer may do.
    sdk_logs = sys.modules.get("opentelemetry.sdk._logs")
    api_logs = sys.modules.get("opentelemetry._logs")
    if sdk_logs is None or api_logs is None:
        return None
    provider = api_logs.get_logger_provider()
    if not isinstance(provider, sdk_logs.LoggerProvider):
        return None
    if _emitter is None or _emitter[0] is not provider:
        from steptrace.telemetry import _version

        _emitter = (provider, provider.get_logger("steptrace", _version()))
    return _emitter[1]


def _emit_logs(emitter: Any, span: Any, logs: list[Any]) -> None:
    """Each captured record as an OTel log record with its step's trace and span ids
    (already redacted at capture)."""
    from opentelemetry._logs import LogRecord, SeverityNumber

    ctx = span.get_span_context()
    for ts, level, logger, message, exc_text in logs:
        attributes = {"logger.name": logger}
        if exc_text:
            attributes["exception.stacktrace"] = exc_text
        emitter.emit(
            LogRecord(
                timestamp=ts,
                trace_id=ctx.trace_id,
                span_id=ctx.span_id,
                trace_flags=ctx.trace_flags,
                severity_text=level,
                severity_number=SeverityNumber(_SEVERITY.get(level, 9)),
                body=message,
                attributes=attributes,
            )
        )


_OI_KIND = {"step": "CHAIN", "tool": "TOOL", "llm": "LLM"}
_OI_MESSAGES = 20


def add_openinference(
    attributes: dict[str, Any],
    rec: RunState | SpanRecord,
    input_value: str | None,
    output_value: str | None,
) -> None:
    """OpenInference attributes, so Phoenix and friends show runs and steps as CHAIN,
    LLM calls as LLM and tools as TOOL, with their inputs and outputs."""
    kind = "CHAIN" if isinstance(rec, RunState) else _OI_KIND.get(rec.kind, "CHAIN")
    attributes["openinference.span.kind"] = kind
    llm = None if isinstance(rec, RunState) else rec.llm
    if llm is not None:
        input_value = for_export(rec.input)
        output_value = for_export(rec.output)
        attributes["llm.model_name"] = llm.response_model or llm.model
        attributes["llm.provider"] = llm.provider
        if llm.input_tokens is not None:
            attributes["llm.token_count.prompt"] = llm.input_tokens
        if llm.output_tokens is not None:
            attributes["llm.token_count.completion"] = llm.output_tokens
        if llm.input_tokens is not None and llm.output_tokens is not None:
            attributes["llm.token_count.total"] = llm.input_tokens + llm.output_tokens
        messages = (orjson.loads(rec.input or b"{}") or {}).get("messages") or []
        for i, message in enumerate(messages[:_OI_MESSAGES]):
            if isinstance(message, dict):
                content = message.get("content")
                prefix = f"llm.input_messages.{i}.message."
                attributes[prefix + "role"] = str(message.get("role", ""))
                attributes[prefix + "content"] = (
                    content if isinstance(content, str) else orjson.dumps(content).decode()
                )
    elif kind == "TOOL":
        attributes["tool.name"] = rec.name if isinstance(rec, SpanRecord) else ""
    if input_value is not None:
        attributes["input.value"] = input_value
        attributes["input.mime_type"] = "application/json"
    if output_value is not None:
        attributes["output.value"] = output_value
        attributes["output.mime_type"] = "application/json"
