"""Spans of other instrumentation made inside a run (an HTTP client's, an SDK's own
GenAI spans), recorded in the run's tree and redacted before any exporter sees them.

A span processor on the application's SDK provider: ``on_start`` runs on the thread
that starts the span, so the current frame (``steptrace.frames``) says which run and
step it belongs to; ``on_end`` hands the record to that run's writer.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from steptrace.config import get_config
from steptrace.frames import current_frame
from steptrace.otel.tracing import redact_sdk_span
from steptrace.prices import cost_usd
from steptrace.record import LLMUsage, SpanRecord, encode


class RunSpanCollector:
    """A span processor that stores spans made *inside a run* by other instrumentation
    (an HTTP client's, an SDK's own GenAI instrumentation) in the run's tree: kind
    ``llm`` when they carry ``gen_ai.*`` attributes, else ``other``.

    ``on_start`` runs on the thread that starts the span, so the current steptrace
    frame says which run and step it belongs to; ``on_end`` hands the record to that
    run's writer. steptrace's own spans are skipped.
    """

    def __init__(self) -> None:
        self._runs: dict[int, Any] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        scope = getattr(span, "instrumentation_scope", None)
        if scope is not None and scope.name == "steptrace":
            return
        frame = current_frame.get()
        if frame is None or not get_config().capture_foreign_spans:
            return
        if len(self._runs) < 100_000:
            # An SDK's own GenAI span under one of our LLM spans is the same call: keep
            # it as `other` (its HTTP detail) so the call is not counted twice.
            self._runs[span.context.span_id] = (frame.run, frame.span_id, frame.kind == "llm")

    def on_end(self, span: Any) -> None:
        entry = self._runs.pop(span.context.span_id, None)
        if entry is None:
            return
        run, frame_span_id, under_llm = entry
        try:
            run.sink.put(foreign_record(span, run.state.run_id, frame_span_id, under_llm))
        except Exception:  # never raise into the instrumentation that ended the span
            logging.getLogger("steptrace").warning(
                "steptrace: could not record a span", exc_info=True
            )

    def shutdown(self) -> None:
        self._runs.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _on_ending(self, span: Any) -> None:
        """Redact a run's foreign span before any exporter sees it: SDKs since 1.35 call
        this on every processor before ``on_end`` hands the span to exporters."""
        if span.context.span_id in self._runs:
            try:
                redact_sdk_span(span)
            except Exception:  # never raise into the instrumentation that ended the span
                logging.getLogger("steptrace").warning(
                    "steptrace: could not redact a span", exc_info=True
                )


def foreign_record(
    span: Any, run_id: str, frame_span_id: str, under_llm: bool = False
) -> SpanRecord:
    from opentelemetry.trace import StatusCode

    attributes = dict(span.attributes or {})
    parent = span.parent
    record = SpanRecord(
        run_id=run_id,
        span_id=format(span.context.span_id, "016x"),
        parent_span_id=format(parent.span_id, "016x") if parent is not None else frame_span_id,
        kind="llm"
        if not under_llm and any(k.startswith("gen_ai.") for k in attributes)
        else "other",
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
    )
    failed = span.status.status_code == StatusCode.ERROR
    record.status = "failed" if failed else "succeeded"
    if failed:
        record.error = encode(
            {"type": attributes.get("error.type", "Error"), "message": span.status.description}
        )
    record.attributes = encode(attributes)
    if record.kind == "llm":
        record.llm = _llm_usage(attributes)
    return record


def _llm_usage(attributes: dict[str, Any]) -> LLMUsage:
    def number(*keys: str) -> int | None:
        for key in keys:
            value = attributes.get(key)
            if isinstance(value, int):
                return value
        return None

    provider = str(attributes.get("gen_ai.provider.name") or attributes.get("gen_ai.system") or "")
    model = str(
        attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model") or ""
    )
    usage = LLMUsage(
        provider=provider or "unknown",
        model=model or "unknown",
        input_tokens=number("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        output_tokens=number("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    )
    usage.cost_usd = cost_usd(usage.provider, usage.model, usage.input_tokens, usage.output_tokens)
    return usage


_collector = RunSpanCollector()
_collector_on: Any = None


def ensure_collector() -> None:
    """Add the collector to the application's SDK provider (once per provider)."""
    global _collector_on
    provider = trace.get_tracer_provider()
    if provider is _collector_on:
        return
    add = getattr(provider, "add_span_processor", None)
    if add is None:  # no SDK installed: nothing records spans at all
        return
    _collector_on = provider
    add(_collector)
