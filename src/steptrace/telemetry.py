"""OpenTelemetry: the tracer steptrace records with, and SDK set-up for applications.

steptrace is a library: it only uses the OpenTelemetry API, so spans go to
whatever ``TracerProvider`` the application installed. The store's ids *are*
the OTel ids. When no SDK is installed the API hands out non-recording spans
with no ids of their own; steptrace then makes W3C-shaped ids itself.

``configure_sdk()`` is for applications (steptrace's CLI and demo): it installs an
SDK provider from the standard ``OTEL_*`` variables, with an OTLP exporter only
when one is configured.
"""

from __future__ import annotations

import os
import random
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from steptrace.config import ConfigError

_tracer: Tracer | None = None
_random = random.Random()


def tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        # Before an application installs a provider this is a proxy that starts
        # delegating once one is set, so caching it is safe.
        _tracer = trace.get_tracer("steptrace", _version())
    return _tracer


def _version() -> str:
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


def new_run_id() -> str:
    """32 random hex digits. Not uuid4: os.urandom can cost hundreds of microseconds
    per call in sandboxed kernels, and run ids need uniqueness, not secrecy."""
    return format(_random.getrandbits(128), "032x")


def configure_sdk() -> None:
    """Install an SDK TracerProvider honouring the ``OTEL_*`` variables, unless the
    process already has one. For applications only (the CLI, the demo).

    Raises ``ConfigError`` when an exporter is configured that cannot be used.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    provider = TracerProvider(resource=Resource.create())
    exporters: list[SpanExporter] = []
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n]
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if "otlp" in names or (endpoint and "none" not in names):
        exporters.append(_otlp_exporter())
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(ConsoleSpanExporter())
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _otlp_exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported yet: "
            "use http/protobuf (the default)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            "an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT) but the OTLP "
            "exporter is not installed: pip install 'steptrace[otlp]'"
        ) from exc
    return OTLPSpanExporter()
