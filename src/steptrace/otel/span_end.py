"""A stored record's way out to OpenTelemetry: its span ended.

The hot path starts a span and leaves it open; once the writer has redacted the
record's values (``record.finish_record_values``) and the record is durable, ``end_spans`` gives the
span the attributes and status ``steptrace.otel.conventions`` makes of the record, its log
records and the scores its step's checks gave it (``gen_ai.evaluation.result`` events),
both as OTel log records when a logs exporter is set up, else as span events, and ends
it with the record's own timestamps. ``export_scores`` sends scores given after their
span ended (``st.score``) as log records, when a logs exporter is set up.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import SpanContext, TraceFlags

from steptrace.config import get_config
from steptrace.otel import conventions
from steptrace.record import RunState, SpanRecord

log = logging.getLogger("steptrace")

_END_CHUNK = 256


def end_spans(records: Sequence[RunState | SpanRecord]) -> None:
    """Give each record's OTel span its attributes and status (``steptrace.otel.conventions``,
    from the redacted record) and end it (after the record is stored). Children come
    before their parents: spans are ended in the order they finished."""
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
        facts = conventions.facts_from_record(rec)
        span.set_attributes(conventions.span_attributes(facts, openinference=openinference))
        if rec.logs:
            if emit_log is not None:
                _emit_logs(emit_log, span, rec.logs)
            else:  # no logs exporter: logs travel with their span as events
                for ts, level, logger, message, exc_text in rec.logs:
                    event = conventions.log_event_attributes(level, logger, message, exc_text)
                    span.add_event("log", event, timestamp=ts)
        if isinstance(rec, SpanRecord) and rec.scores:
            for score in rec.scores:
                attributes = conventions.evaluation_attributes(score)
                if emit_log is not None:
                    _emit_evaluation(
                        emit_log, span.get_span_context(), attributes, score.created_ns
                    )
                else:  # at the span's end: the checks ran once the attempt had ended
                    span.add_event(conventions.EVALUATION_EVENT, attributes, timestamp=rec.end_ns)
        if facts.error is not None:
            status = conventions.span_status(facts)
            span.set_status(status.status_code, status.description)
        span.end(end_time=rec.end_ns)
        rec.otel = None
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
        from steptrace.otel.tracing import package_version

        _emitter = (provider, provider.get_logger("steptrace", package_version()))
    return _emitter[1]


def _emit_logs(emitter: Any, span: Any, logs: list[Any]) -> None:
    """Each captured record as an OTel log record with its step's trace and span ids
    (already redacted at capture)."""
    from opentelemetry._logs import LogRecord, SeverityNumber

    ctx = span.get_span_context()
    for ts, level, logger, message, exc_text in logs:
        attributes = conventions.log_record_attributes(logger, exc_text)
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


def _emit_evaluation(
    emitter: Any, ctx: SpanContext, attributes: dict[str, Any], at_ns: int
) -> None:
    """One ``gen_ai.evaluation.result`` event as an OTel log record with the evaluated
    span's ids."""
    from opentelemetry._logs import LogRecord, SeverityNumber

    fields: dict[str, Any] = {
        "timestamp": at_ns,
        "trace_id": ctx.trace_id,
        "span_id": ctx.span_id,
        "trace_flags": ctx.trace_flags,
        "severity_text": "INFO",
        "severity_number": SeverityNumber.INFO,
        "attributes": attributes,
    }
    try:
        record = LogRecord(event_name=conventions.EVALUATION_EVENT, **fields)
    except TypeError:  # an API older than log records with an event name (< 1.35)
        record = LogRecord(
            **{**fields, "attributes": {**attributes, "event.name": conventions.EVALUATION_EVENT}}
        )
    emitter.emit(record)


def export_scores(
    scores: Sequence[conventions.ScoreFacts], trace_id: str, span_id: str, at_ns: int
) -> bool:
    """Scores given after their span ended (``st.score``): ``gen_ai.evaluation.result``
    log records with the span's ``trace_id`` and ``span_id``, when the process has an SDK
    ``LoggerProvider`` (a logs exporter); else nothing. Never raises; True when sent
    (to the provider's processors, which export in the background)."""
    try:
        emitter = _log_emitter()
        if emitter is None:
            return False
        ctx = SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(TraceFlags.SAMPLED))
        for score in scores:
            _emit_evaluation(emitter, ctx, conventions.evaluation_attributes(score), at_ns)
    except Exception:  # telemetry never costs the caller its score
        log.debug("steptrace: could not export a score", exc_info=True)
        return False
    return True


def exports_logs() -> bool:
    """Whether OTel log records leave this process (an SDK ``LoggerProvider`` is set)."""
    return _log_emitter() is not None
