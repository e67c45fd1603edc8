"""OpenTelemetry: the tracer steptrace records with, and SDK set-up for applications.

steptrace is a library: it only uses the OpenTelemetry API, so spans go to
whatever ``TracerProvider`` the application installed. The store's ids *are*
the OTel ids. When no SDK is installed the API hands out non-recording spans
with no ids of their own; steptrace then makes W3C-shaped ids itself.

Installing the SDK (for steptrace's own command, or ``st.configure(otel_sdk=True)``)
is ``steptrace.otel.otlp``'s job.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from steptrace.record import counters, pipeline
from steptrace.redaction import Redactor

log = logging.getLogger("steptrace")
_tracer: Tracer | None = None
_random = random.Random()
# A forked child reseeds: it would otherwise mint the very run, trace and span ids its
# parent mints.
os.register_at_fork(after_in_child=_random.seed)


def tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        # Before an application installs a provider this is a proxy that starts
        # delegating once one is set, so caching it is safe.
        _tracer = trace.get_tracer("steptrace", package_version())
    return _tracer


def provider_installed() -> bool:
    """Whether an application installed a tracer provider (the SDK's, or another): until
    one is, spans started through the API record nothing, and steptrace starts none."""
    return not isinstance(trace.get_tracer_provider(), _NO_PROVIDER)


_NO_PROVIDER = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def new_span_id() -> str:
    """16 random hex digits, never all zero (W3C's invalid id). Random, not consecutive:
    consecutive ids (a third fewer pages per run's commit) share their first 12 digits,
    so the short ids the UI and the commands show and accept would be ambiguous."""
    return format(_random.getrandbits(64) or 1, "016x")


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
        return format(ctx.trace_id, "032x"), new_span_id()
    return format(_random.getrandbits(128) or 1, "032x"), new_span_id()


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
