"""OTLP export for applications: the SDK set-up steptrace does for its own command
and for ``st.configure(otel_sdk=True)``, and an export queue that never holds up a
workflow.

steptrace itself only uses the OpenTelemetry API; this module is for processes that
want steptrace to install the SDK. Spans go through :class:`ExportQueue`: a bounded
queue (spans that do not fit are dropped and *counted*, never waited for) drained by
one thread that exports batches. A dead or slow collector costs that thread's time,
not the workflow's. Drops are reported: a warning on the ``steptrace`` logger once
per interval, a row in the store's ``otel_export`` table, and a line from the
``steptrace`` command at exit. The store keeps every span regardless, and
``steptrace export-otlp`` re-sends them.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor

from steptrace.errors import ConfigError
from steptrace.masking import header_secrets, mask_headers, mask_text, mask_url, url_secrets

log = logging.getLogger("steptrace")

_THREAD_NAME = "steptrace-otlp"


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


@dataclass
class ExportCounts:
    """Spans handed to the exporter and spans lost, since start or since a report."""

    exported: int = 0
    queue_full: int = 0
    """Dropped because the queue was full (the collector could not keep up, or is
    failing: then only one batch is kept for the next attempt)."""
    failed: int = 0
    """In batches the exporter could not deliver (refused, timed out, rejected)."""
    unsent_at_exit: int = 0
    """Still queued when the process had to stop waiting at shutdown."""
    last_error: str | None = None

    @property
    def dropped(self) -> int:
        return self.queue_full + self.failed + self.unsent_at_exit

    def describe(self) -> str:
        parts = [
            f"{count:,} {what}"
            for count, what in (
                (self.queue_full, "queue full"),
                (self.failed, "export failed"),
                (self.unsent_at_exit, "unconfirmed at exit"),
            )
            if count
        ]
        text = ", ".join(parts)
        return f"{text}; last error: {self.last_error}" if self.last_error else text


class _QuietFromExportThread(logging.Filter):
    """The OTLP exporters log every failed batch; from our thread those become the
    queue's periodic report instead (the last message is kept as its reason)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_message: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.current_thread().name.startswith(_THREAD_NAME):
            if self.last_message is None:  # the first is the cause; later ones are retries
                try:
                    self.last_message = _gist(record.getMessage())
                except Exception:
                    self.last_message = _gist(str(record.msg))
            return False
        return True


_quiet = _QuietFromExportThread()
_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^\"')]+")


def _gist(message: str) -> str:
    """The useful part of an exporter's message (``[Errno 111] Connection refused``
    rather than three lines of urllib3), credentials masked (urllib3 echoes the URL)."""
    found = _OS_ERROR.search(message)
    return found.group(0).strip() if found else mask_text(message)[:200]


def _quieten_exporter_loggers() -> None:
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("opentelemetry.exporter"):
            logger = logging.getLogger(name)
            if _quiet not in logger.filters:
                logger.addFilter(_quiet)


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


class ExportQueue(SpanProcessor):
    """A span processor: bounded queue, one export thread, every drop counted.

    Sized for bursts (``OTEL_BSP_MAX_QUEUE_SIZE``, default 20,000 spans); batches of
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512) every ``OTEL_BSP_SCHEDULE_DELAY`` ms
    (500) or sooner when a batch is full. ``shutdown`` waits at most
    ``STEPTRACE_EXPORT_EXIT_TIMEOUT_S`` (5 s) for a collector, then counts what is
    left as unsent instead of holding the process.
    """

    def __init__(
        self,
        exporter: Any,
        *,
        target: str,
        secrets: Sequence[str] = (),
        max_queue_size: int | None = None,
        max_batch_size: int | None = None,
        schedule_delay_s: float | None = None,
        report_interval_s: float | None = None,
        exit_timeout_s: float | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.exporter = exporter
        self.report = report
        """Where a window's drops are recorded (``store.engines.record_export_report``,
        given by whoever configures the SDK); None: they are only logged."""
        self.target = mask_url(target)
        """Where spans go, as messages show it (credentials masked)."""
        self.secrets = tuple(secrets)
        """The endpoint's and headers' secret values: masked in every error kept."""
        self.max_queue_size = max_queue_size or int(_env_number("OTEL_BSP_MAX_QUEUE_SIZE", 20_000))
        self.max_batch_size = max_batch_size or int(
            _env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
        )
        self.schedule_delay_s = schedule_delay_s or (
            _env_number("OTEL_BSP_SCHEDULE_DELAY", 500) / 1000
        )
        self.report_interval_s = report_interval_s or _env_number(
            "STEPTRACE_EXPORT_REPORT_INTERVAL_S", 60
        )
        self.exit_timeout_s = exit_timeout_s or _env_number("STEPTRACE_EXPORT_EXIT_TIMEOUT_S", 5)
        self.provider: Any = None
        """The provider it was added to by ``configure_sdk`` (None when added by hand)."""
        self.totals = ExportCounts()
        self._window = ExportCounts()
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._failing = False
        self._in_flight = 0
        self._abandoned = False
        self._lock = threading.Lock()  # counters only; never held while exporting
        self._last_report = time.monotonic()
        _quieten_exporter_loggers()
        self._thread = threading.Thread(target=self._loop, name=_THREAD_NAME, daemon=True)
        self._thread.start()
        os.register_at_fork(after_in_child=self._restart_after_fork)

    # -- span processor interface (called on the thread that ends the span) -------------
    def on_end(self, span: Any) -> None:
        if self._stopping or not span.context.trace_flags.sampled:
            return
        queue = self._queue
        # While the collector fails, keep one batch for the next attempt and drop the
        # rest at once: holding thousands of spans for a dead endpoint only costs memory
        # (and the garbage collector's time); the store has every span.
        failing = self._failing or _quiet.last_message is not None  # retrying now
        limit = self.max_batch_size if failing else self.max_queue_size
        if len(queue) >= limit:
            self._count(queue_full=1)
            return
        queue.append(span)
        if len(queue) >= self.max_batch_size:
            self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stopping

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._stopping or not self._thread.is_alive():
            return False
        flush = _Flush()
        self._queue.append(flush)
        self._wake.set()
        return flush.done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Send what is queued, waiting at most ``exit_timeout_s``; report the rest."""
        if self._stopping:
            return
        flushed = self._flush_unless_failing(self.exit_timeout_s)
        self._stopping = True
        self._wake.set()
        if not flushed:
            # Interrupts the exporter's retry wait, so the thread gives up promptly.
            self._shutdown_exporter()
        self._thread.join(1.0 if not flushed else self.exit_timeout_s)
        unsent = sum(1 for item in self._queue if not isinstance(item, _Flush))
        self._queue.clear()
        with self._lock:
            if self._thread.is_alive() and self._in_flight:
                # A batch the collector has not answered for: the process will not wait.
                unsent += self._in_flight
                self._in_flight = 0
                self._abandoned = True
        if unsent:
            self._count(unsent_at_exit=unsent)
        if flushed:
            self._shutdown_exporter()
        self._report(final=True)

    def _flush_unless_failing(self, timeout_s: float) -> bool:
        """Like ``force_flush``, but stop waiting as soon as the collector has failed
        (a refused connection would otherwise hold the exit for the exporter's retries)."""
        if not self._thread.is_alive():
            return False
        flush = _Flush()
        self._queue.append(flush)
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while not flush.done.wait(0.05):
            if time.monotonic() > deadline or self._failing or _quiet.last_message:
                return False
        return True

    # -- export thread -------------------------------------------------------------------
    def _loop(self) -> None:
        queue = self._queue
        while not self._stopping:
            self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            while queue and not self._stopping:
                batch: list[Any] = []
                flushes: list[_Flush] = []
                while queue and len(batch) < self.max_batch_size:
                    item = queue.popleft()
                    (flushes if isinstance(item, _Flush) else batch).append(item)
                if batch:
                    self._export(batch)
                for flush in flushes:
                    flush.done.set()
            if time.monotonic() - self._last_report >= self.report_interval_s:
                self._report()

    def _export(self, batch: Sequence[Any]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        _quiet.last_message = None
        self._in_flight = len(batch)
        try:
            ok = self.exporter.export(batch) == SpanExportResult.SUCCESS
            error = None if ok else (_quiet.last_message or "the exporter reported failure")
        except Exception as exc:  # an exporter must not kill the thread
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if error is not None:
            error = mask_text(error, self.secrets)
        self._failing = not ok
        with self._lock:
            if self._abandoned:  # already counted as unsent by shutdown
                return
            self._in_flight = 0
        if ok:
            self._count(exported=len(batch))
        else:
            self._count(failed=len(batch), error=error)

    def _count(
        self,
        *,
        exported: int = 0,
        queue_full: int = 0,
        failed: int = 0,
        unsent_at_exit: int = 0,
        error: str | None = None,
    ) -> None:
        with self._lock:
            for counts in (self.totals, self._window):
                counts.exported += exported
                counts.queue_full += queue_full
                counts.failed += failed
                counts.unsent_at_exit += unsent_at_exit
                if error:
                    counts.last_error = error

    def _report(self, final: bool = False) -> None:
        """Once per interval (and at shutdown): warn and record if anything was dropped."""
        with self._lock:
            window, self._window = self._window, ExportCounts()
            now = time.monotonic()
            seconds, self._last_report = now - self._last_report, now
        if not window.dropped:
            return
        log.warning(
            "steptrace: %s spans were not exported to %s %s (%s). "
            "The store has them: re-send with `steptrace export-otlp --since ... --endpoint ...`",
            f"{window.dropped:,}",
            self.target,
            "by exit" if final else f"in the last {seconds:.0f} s",
            window.describe(),
        )
        if self.report is None:
            return
        try:
            self.report(self._report_row(window, seconds))
        except Exception as exc:  # reporting must not fail the export thread
            from steptrace.config import get_config

            secrets = url_secrets(get_config().store_url())
            log.warning(
                "steptrace: could not record the export report: %s",
                mask_text(str(exc), secrets),
            )

    def _report_row(self, window: ExportCounts, seconds: float) -> dict[str, Any]:
        return {
            "reported_at": datetime.now(UTC).isoformat(),
            "process": f"{socket.gethostname()}:{os.getpid()}",
            "target": self.target,
            "interval_s": round(seconds, 3),
            "exported": window.exported,
            "dropped_queue_full": window.queue_full,
            "dropped_failed": window.failed,
            "dropped_at_exit": window.unsent_at_exit,
            "last_error": window.last_error,
        }

    def _shutdown_exporter(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception as exc:
            log.debug("steptrace: exporter shutdown failed: %s", exc)

    def _restart_after_fork(self) -> None:
        # The thread does not survive fork; the parent's queue is the parent's.
        self._queue = collections.deque()
        self._window = ExportCounts()
        self.totals = ExportCounts()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        if not self._stopping:
            self._thread = threading.Thread(target=self._loop, name=_THREAD_NAME, daemon=True)
            self._thread.start()


_queues: list[ExportQueue] = []


def export_counts() -> ExportCounts:
    """Totals over this process's export queues (what the CLI reports at exit)."""
    total = ExportCounts()
    for queue in _queues:
        counts = queue.totals
        total.exported += counts.exported
        total.queue_full += counts.queue_full
        total.failed += counts.failed
        total.unsent_at_exit += counts.unsent_at_exit
        total.last_error = counts.last_error or total.last_error
    return total


# -- SDK set-up ----------------------------------------------------------------------------
def configure_sdk(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    logs: bool | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Install an SDK ``TracerProvider`` from the standard ``OTEL_*`` variables, with an
    OTLP exporter behind an :class:`ExportQueue` when an endpoint is configured (the
    arguments override the variables). Returns the provider. ``report`` records each
    window's drops (steptrace passes ``store.engines.record_export_report``: the store's
    ``otel_export`` table).

    If the process already has an SDK provider it is kept: an explicit ``endpoint``
    then adds an exporter to it, else nothing changes. Raises ``ConfigError`` for an
    exporter that cannot be used (unknown protocol, package not installed).
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return current
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n]
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    want_otlp = endpoint is not None or "otlp" in names or (env_endpoint and "none" not in names)
    protocol = protocol or _protocol("TRACES")
    exporter = _exporter("traces", protocol, endpoint, headers) if want_otlp else None
    if isinstance(current, TracerProvider):
        if exporter is not None and endpoint is not None:
            _add_queue(current, exporter, protocol, endpoint, headers, report)
        return current
    provider = TracerProvider(resource=Resource.create())
    if exporter is not None:
        _add_queue(provider, exporter, protocol, endpoint, headers, report)
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    if logs if logs is not None else _logs_wanted():
        _configure_logs(provider.resource, endpoint, headers)
    return provider


def _add_queue(
    provider: Any,
    exporter: Any,
    protocol: str,
    endpoint: str | None,
    headers: Mapping[str, str] | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    target = mask_url(_describe_target(exporter, protocol, endpoint))
    for queue in _queues:
        if queue.provider is provider and queue.target == target and not queue.stopped:
            return  # configured twice with the same endpoint: export once
    queue = ExportQueue(
        exporter, target=target, secrets=export_secrets(endpoint, headers), report=report
    )
    queue.provider = provider
    _queues.append(queue)
    provider.add_span_processor(queue)


def export_secrets(
    endpoint: str | None = None, headers: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The secret values of the OTLP configuration (the endpoint's password and secret
    parameters, every header value; given or from the ``OTEL_EXPORTER_OTLP_*``
    variables), for ``steptrace.masking.mask_text``."""
    found: list[str] = []
    for name in _HEADER_VARIABLES:
        found += header_secrets(os.environ.get(name))
    found += header_secrets(headers)
    for name in _ENDPOINT_VARIABLES:
        found += url_secrets(os.environ.get(name))
    found += url_secrets(endpoint)
    return tuple(dict.fromkeys(found))


_ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
)
_HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")


def describe_config() -> dict[str, Any]:
    """The OTLP export the ``OTEL_*`` variables configure, as ``steptrace status`` shows
    it: each endpoint variable's URL with its credentials masked, the protocol, and the
    header names (every value ``****``)."""
    headers: dict[str, str] = {}
    for name in _HEADER_VARIABLES:
        headers.update(mask_headers(os.environ.get(name)))
    return {
        "endpoints": {
            name: mask_url(os.environ[name]) for name in _ENDPOINT_VARIABLES if os.environ.get(name)
        },
        "protocol": _protocol("TRACES"),
        "headers": headers,
    }


def _describe_target(exporter: Any, protocol: str, endpoint: str | None) -> str:
    where = getattr(exporter, "_endpoint", None) or endpoint or "the OTLP endpoint"
    return f"{where} ({protocol})"


def _protocol(signal: str) -> str:
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    return protocol.strip().lower()


def _signal_url(endpoint: str, path: str) -> str:
    """A base endpoint (``http://host:4318``) gets the signal's path, as the spec says for
    ``OTEL_EXPORTER_OTLP_ENDPOINT``; a URL that already has a path is used as given. A
    query (``?api_key=…``) stays after the path."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(endpoint)
    if parts.path.strip("/"):
        return endpoint
    return urlunsplit(parts._replace(path=path))


_EXPORTERS = {
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "otlp"),
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "otlp-grpc"),
    ("logs", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "otlp"),
    ("logs", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "otlp-grpc"),
}
_CLASS = {"traces": "OTLPSpanExporter", "logs": "OTLPLogExporter"}


def _exporter(
    signal: str, protocol: str, endpoint: str | None, headers: Mapping[str, str] | None
) -> Any:
    """The standard OTLP exporter for a signal and protocol; ``ConfigError`` when the
    protocol is unknown or its package is not installed."""
    import importlib

    found = _EXPORTERS.get((signal, protocol))
    if found is None:
        raise ConfigError(
            f"OTLP protocol {protocol!r} (OTEL_EXPORTER_OTLP_PROTOCOL or otlp_protocol=) is not "
            "supported: use http/protobuf (the default) or grpc"
        )
    module_name, extra = found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"OTLP {signal} export over {protocol} is configured but its exporter is not "
            f"installed: pip install 'steptrace[{extra}]'"
        ) from exc
    kwargs: dict[str, Any] = {"headers": dict(headers) if headers else None}
    if protocol == "grpc":
        kwargs.update(endpoint=endpoint, insecure=_insecure(endpoint))
    else:
        kwargs["endpoint"] = _signal_url(endpoint, f"/v1/{signal}") if endpoint else None
    return getattr(module, _CLASS[signal])(**kwargs)


def _insecure(endpoint: str | None) -> bool | None:
    if endpoint is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_INSECURE and the scheme
    return not endpoint.startswith("https://")


def _logs_wanted() -> bool:
    names = [n.strip().lower() for n in os.environ.get("OTEL_LOGS_EXPORTER", "").split(",") if n]
    return "otlp" in names or bool(os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))


def _configure_logs(resource: Any, endpoint: str | None, headers: Mapping[str, str] | None) -> None:
    """A LoggerProvider with an OTLP log exporter: step log records then leave as OTel
    log records carrying their step's trace and span ids (instead of span events)."""
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    if isinstance(_logs.get_logger_provider(), LoggerProvider):
        return
    exporter = _exporter("logs", _protocol("LOGS"), endpoint, headers)
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    _logs.set_logger_provider(provider)


def shutdown_sdk() -> None:
    """Export what is queued (bounded wait) and stop: the CLI's exit."""
    from opentelemetry import _logs

    for provider in (trace.get_tracer_provider(), _logs.get_logger_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            shutdown()
