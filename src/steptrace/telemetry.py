"""OpenTelemetry: the tracer steptrace records with, and SDK set-up for applications.

steptrace is a library: it only uses the OpenTelemetry API, so spans go to
whatever ``TracerProvider`` the application installed. The store's ids *are*
the OTel ids. When no SDK is installed the API hands out non-recording spans
with no ids of their own; steptrace then makes W3C-shaped ids itself.

Installing the SDK (for steptrace's own command, or ``st.configure(otel_sdk=True)``)
is ``steptrace.otlp``'s job.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from steptrace.record import LLMUsage, SpanRecord, counters, encode, pipeline
from steptrace.redaction import Redactor

log = logging.getLogger("steptrace")
_tracer: Tracer | None = None
_random = random.Random()


def tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        # Before an application installs a provider this is a proxy that starts
        # delegating once one is set, so caching it is safe.
        _tracer = trace.get_tracer("steptrace", package_version())
    return _tracer


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("steptrace")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def span_ids(span: Span, parent: Any = None) -> tuple[str, str]:
    """``(trace_id, span_id)`` as hex for a span; made up when the span has none."""
    ctx = span.get_span_context()
    if ctx.is_valid and span.is_recording():
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    if ctx.is_valid:  # a non-recording span carries its parent's ids
        return format(ctx.trace_id, "032x"), format(_random.getrandbits(64) or 1, "016x")
    return format(_random.getrandbits(128) or 1, "032x"), format(
        _random.getrandbits(64) or 1, "016x"
    )


def context_from_traceparent(traceparent: str) -> Any:
    """An OTel context whose parent is the span a W3C ``traceparent`` names.

    Raises ``ValueError`` for a malformed header (the caller's mistake, told at once).
    """
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        raise ValueError(
            f"traceparent {traceparent!r} is not a W3C trace context header "
            "('00-<32 hex trace id>-<16 hex span id>-<2 hex flags>')"
        )
    return ctx


def new_run_id() -> str:
    """32 random hex digits. Not uuid4: os.urandom can cost hundreds of microseconds
    per call in sandboxed kernels, and run ids need uniqueness, not secrecy."""
    return format(_random.getrandbits(128), "032x")


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
        from steptrace.config import get_config
        from steptrace.runtime import current_frame

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


def redact_sdk_span(span: Any) -> None:
    """Redact an ending SDK span's attributes, event attributes and status text in place
    (they are frozen for the instrumentation by then, not yet read by exporters)."""
    redactor = pipeline().redactor
    if redactor is None:
        return
    for holder in (span, *(getattr(span, "_events", None) or ())):
        attributes = getattr(getattr(holder, "_attributes", None), "_dict", None)
        if isinstance(attributes, dict):
            for key, value in list(attributes.items()):
                redacted = redact_attribute(redactor, key, value)
                if redacted != value:
                    attributes[key] = redacted
                    counters.add("redacted")
    status = getattr(span, "_status", None)
    description = getattr(status, "description", None)
    if status is not None and isinstance(description, str) and description:
        redacted_text = redactor.redact_text(description)
        if redacted_text != description:
            from opentelemetry.trace import Status

            span._status = Status(status.status_code, redacted_text)


def redact_attribute(redactor: Redactor, key: str, value: Any) -> Any:
    """An OpenTelemetry attribute value with its secrets replaced (same type)."""
    if redactor.is_secret_key(key):
        return tuple(redactor.text for _ in value) if isinstance(value, tuple) else redactor.text
    if isinstance(value, str):
        return redactor.redact_value(value)
    if isinstance(value, tuple) and any(isinstance(v, str) for v in value):
        return tuple(redactor.redact_value(v) if isinstance(v, str) else v for v in value)
    return value


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
    from steptrace.llm.prices import cost_usd

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
