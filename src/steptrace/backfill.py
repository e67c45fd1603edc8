"""Re-send stored runs to an OTLP endpoint with their original ids and timestamps.

For a backend added later, or runs recorded while the collector was down. The
spans are rebuilt from the store (already redacted) by ``steptrace.otel.conventions``,
which live export uses too: the same names, kinds, attributes and statuses;
values capped at ``export_value_bytes``; log records as ``log`` events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, TraceFlags

from steptrace.config import get_config
from steptrace.masking import mask_url
from steptrace.otel import conventions
from steptrace.store.model import RunRecord, SpanView
from steptrace.store.sqlite import ns_from_iso

_BATCH = 512
_SCOPE = InstrumentationScope("steptrace")


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), False, TraceFlags(1))


def _events(logs: Iterable[dict[str, Any]]) -> list[Event]:
    return [
        Event(
            "log",
            conventions.log_event_attributes(
                entry.get("level", ""),
                entry.get("logger", ""),
                entry.get("message", ""),
                entry.get("exception"),
            ),
            timestamp=ns_from_iso(entry.get("ts")),
        )
        for entry in logs
    ]


def _readable_span(
    run: RunRecord,
    span: SpanView | None,
    parent: SpanContext | None,
    resource: Resource,
    openinference: bool,
    links: Sequence[Link] = (),
) -> ReadableSpan:
    facts = conventions.facts_from_stored(run, span)
    if span is None:
        name, span_id, started_at, ended_at, logs = (
            conventions.span_name("run", run.workflow),
            run.span_id,
            run.started_at,
            run.ended_at,
            run.logs,
        )
    else:
        name = (
            span.name
            if span.kind in ("llm", "other")
            else conventions.span_name(span.kind, span.name)
        )
        span_id, started_at, ended_at, logs = (
            span.span_id,
            span.started_at,
            span.ended_at,
            span.logs,
        )
    attributes = conventions.span_attributes(facts, openinference=openinference)
    attributes["steptrace.backfill"] = True
    return ReadableSpan(
        name=name,
        context=_context(run.trace_id, span_id),
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=_events(logs),
        links=links,
        kind=conventions.span_kind(facts.kind),
        status=conventions.span_status(facts),
        start_time=ns_from_iso(started_at),
        end_time=ns_from_iso(ended_at) or ns_from_iso(started_at),
        instrumentation_scope=_SCOPE,
    )


def readable_spans(
    run: RunRecord, resource: Resource, *, openinference: bool | None = None
) -> list[ReadableSpan]:
    """The run as OTel spans with its stored ids and timestamps, named and attributed
    by ``steptrace.otel.conventions`` as live export does (``openinference``: the
    configuration's by default), plus ``steptrace.backfill=true``."""
    if openinference is None:
        openinference = get_config().openinference
    root_parent = (
        _context(run.parent_trace_id, run.parent_span_id)
        if run.parent_trace_id and run.parent_span_id
        else None
    )
    spans = [_readable_span(run, None, root_parent, resource, openinference)]
    last_attempt: dict[str, str] = {}  # step key -> span id of its latest attempt
    for span in run.spans:
        parent = _context(run.trace_id, span.parent_span_id or run.span_id)
        links: list[Link] = []
        if span.step_key is not None and span.kind in ("step", "tool"):
            # A retry links to the attempt before it ("follows from"), as live.
            previous = last_attempt.get(span.step_key)
            if previous is not None and (span.attempt or 1) > 1:
                links.append(Link(_context(run.trace_id, previous)))
            last_attempt[span.step_key] = span.span_id
        spans.append(_readable_span(run, span, parent, resource, openinference, links))
    return spans


def traces_endpoint(endpoint: str) -> str:
    """``…/v1/traces`` for a base OTLP/HTTP endpoint (left alone when already there); a
    query (``?api_key=…``) stays after the path."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/traces"):
        path += "/v1/traces"
    return urlunsplit(parts._replace(path=path))


def export_runs(
    runs: Sequence[RunRecord], endpoint: str, headers: dict[str, str] | None = None
) -> int:
    """Send the runs to an OTLP/HTTP endpoint; returns the number of spans sent.

    Raises ``RuntimeError`` when the endpoint does not accept them.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(
            "export-otlp needs the OTLP exporter: pip install 'steptrace[otlp]'"
        ) from exc
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(endpoint=traces_endpoint(endpoint), headers=headers)
    resource = Resource.create()
    sent = 0
    try:
        batch: list[ReadableSpan] = []
        for run in runs:
            batch.extend(readable_spans(run, resource))
            while len(batch) >= _BATCH or (batch and run is runs[-1]):
                chunk, batch = batch[:_BATCH], batch[_BATCH:]
                if exporter.export(chunk) is not SpanExportResult.SUCCESS:
                    shown = mask_url(traces_endpoint(endpoint))
                    raise RuntimeError(
                        f"the OTLP endpoint {shown} did not accept the spans ({sent} sent before)"
                    )
                sent += len(chunk)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    return sent
