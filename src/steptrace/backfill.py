"""Re-send stored runs to an OTLP endpoint with their original ids and timestamps.

For a backend added later, or runs recorded while the collector was down. The
spans are rebuilt from the store (already redacted) with the same names and
attributes a live run exports: steptrace's, GenAI's and OpenInference's; values
capped at ``export_value_bytes``; log records as ``log`` events.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from steptrace.masking import mask_url
from steptrace.record import for_export
from steptrace.store.model import RunRecord, SpanView

_BATCH = 512


def _ns(iso: str | None) -> int | None:
    if not iso:
        return None
    moment = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(moment.utctimetuple()) * 1_000_000_000 + moment.microsecond * 1000


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), False, TraceFlags(1))


def _json(value: Any) -> str:
    return for_export(orjson.dumps(value))


def _flat(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attribute values OTLP can carry: primitives as they are, the rest as JSON."""
    return {
        k: v if isinstance(v, str | bool | int | float) else _json(v)
        for k, v in attributes.items()
        if v is not None
    }


def _events(logs: Iterable[dict[str, Any]]) -> list[Event]:
    events = []
    for entry in logs:
        attributes = {
            "log.severity": entry.get("level", ""),
            "log.logger": entry.get("logger", ""),
            "log.message": entry.get("message", ""),
        }
        if entry.get("exception"):
            attributes["exception.stacktrace"] = entry["exception"]
        events.append(Event("log", attributes, timestamp=_ns(entry.get("ts"))))
    return events


def _status(status: str, error: dict[str, Any] | None) -> Status:
    if status == "failed":
        message = f"{(error or {}).get('type', 'Error')}: {(error or {}).get('message', '')}"
        return Status(StatusCode.ERROR, message)
    return Status(StatusCode.UNSET)


def _span_attributes(run: RunRecord, span: SpanView) -> tuple[str, SpanKind, dict[str, Any]]:
    attributes: dict[str, Any] = {"steptrace.run.id": run.run_id, "steptrace.backfill": True}
    if span.kind == "llm" and span.llm is not None:
        llm = span.llm
        attributes |= {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": llm.get("provider"),
            "gen_ai.request.model": llm.get("model"),
            "gen_ai.response.model": llm.get("response_model"),
            "gen_ai.usage.input_tokens": llm.get("input_tokens"),
            "gen_ai.usage.output_tokens": llm.get("output_tokens"),
            "gen_ai.input.messages": _json(llm.get("messages") or []),
            "gen_ai.output.messages": _json(
                [{"role": "assistant", "content": llm.get("response")}]
            ),
            "steptrace.llm.cost_usd": llm.get("cost_usd"),
            "openinference.span.kind": "LLM",
            "llm.model_name": llm.get("response_model") or llm.get("model"),
            "llm.token_count.prompt": llm.get("input_tokens"),
            "llm.token_count.completion": llm.get("output_tokens"),
            "input.value": _json(span.input),
            "output.value": _json(span.output),
        }
        return span.name, SpanKind.CLIENT, attributes
    if span.kind in ("step", "tool"):
        attributes |= {
            "steptrace.step.key": span.step_key,
            "steptrace.step.attempt": span.attempt,
            "steptrace.step.input": _json(span.input),
            "steptrace.step.output": _json(span.output),
            "openinference.span.kind": "TOOL" if span.kind == "tool" else "CHAIN",
            "input.value": _json(span.input),
            "output.value": _json(span.output),
        }
        if span.kind == "tool":
            attributes |= {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": span.name,
                "gen_ai.tool.call.id": span.attributes.get("gen_ai.tool.call.id"),
                "tool.name": span.name,
            }
            return f"execute_tool {span.name}", SpanKind.INTERNAL, attributes
        return span.name, SpanKind.INTERNAL, attributes
    return span.name, SpanKind.INTERNAL, attributes | span.attributes


def readable_spans(run: RunRecord, resource: Resource) -> list[ReadableSpan]:
    """The run as OTel spans with its stored ids and timestamps."""
    scope = InstrumentationScope("steptrace")
    root_parent = (
        _context(run.parent_trace_id, run.parent_span_id)
        if run.parent_trace_id and run.parent_span_id
        else None
    )
    spans = [
        ReadableSpan(
            name=f"invoke_workflow {run.workflow}",
            context=_context(run.trace_id, run.span_id),
            parent=root_parent,
            resource=resource,
            attributes=_flat(
                {
                    "gen_ai.operation.name": "invoke_workflow",
                    "steptrace.run.id": run.run_id,
                    "steptrace.workflow.name": run.workflow,
                    "steptrace.run.input": _json(run.input),
                    "steptrace.run.output": _json(run.output),
                    "steptrace.backfill": True,
                    "openinference.span.kind": "CHAIN",
                    "input.value": _json(run.input),
                    "output.value": _json(run.output),
                }
            ),
            events=_events(run.logs),
            kind=SpanKind.INTERNAL,
            status=_status(run.status, run.error),
            start_time=_ns(run.started_at),
            end_time=_ns(run.ended_at) or _ns(run.started_at),
            instrumentation_scope=scope,
        )
    ]
    for span in run.spans:
        name, kind, attributes = _span_attributes(run, span)
        spans.append(
            ReadableSpan(
                name=name,
                context=_context(run.trace_id, span.span_id),
                parent=_context(run.trace_id, span.parent_span_id or run.span_id),
                resource=resource,
                attributes=_flat(attributes),
                events=_events(span.logs),
                kind=kind,
                status=_status(span.status, span.error),
                start_time=_ns(span.started_at),
                end_time=_ns(span.ended_at) or _ns(span.started_at),
                instrumentation_scope=scope,
            )
        )
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
