"""The process's write path: records go onto a queue, a background thread writes them.

Recording a step only appends to a deque (no lock, no system call, no thread
wake-up: waking the writer per record would cost the application a thread switch
per step). The writer wakes every 100 ms, or at once when the backlog is large or
someone waits for a flush, and writes what is queued in one transaction, so a
busy process writes thousands of steps per commit and other processes see a
finished run within a second. ``flush()`` waits until
everything queued so far is written (read-your-own-writes for ``Store`` in the
same process); an ``atexit`` hook flushes at normal exit. A write that fails
for a reason other than a lock is reported on the ``steptrace`` logger and
counted, never raised into user code.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import sys
import threading
import time
from typing import Any

import orjson
from opentelemetry.trace import StatusCode

from steptrace.config import ConfigError, get_config
from steptrace.record import RunState, SpanRecord, finish_values, for_export

log = logging.getLogger("steptrace")

_BATCH_MAX = 5000
_WAKE_BACKLOG = 2000
_HIGH_WATER = 50_000
"""Records queued at which recording waits for the writer (memory stays bounded)."""
_END_CHUNK = 256
_INTERVAL_S = 0.1
_EXIT_FLUSH_TIMEOUT_S = 30.0


class Sink:
    """Owns the queue, the writer thread and the backend connection for one store."""

    def __init__(self, url: str) -> None:
        from steptrace.store import open_writer  # the backend chosen by URL scheme

        self.url = url
        self.backend = open_writer(url)
        self.queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self.failed_batches = 0
        self.dropped_records = 0
        self.written_records = 0
        self.backpressure_waits = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="steptrace-writer", daemon=True)
        self._thread.start()

    # -- hot path ---------------------------------------------------------------
    def put(self, item: RunState | SpanRecord) -> None:
        queue = self.queue
        queue.append(item)
        if len(queue) > _WAKE_BACKLOG:
            self._wake.set()
            if len(queue) > _HIGH_WATER:
                self._backpressure()

    def _backpressure(self) -> None:
        """Wait (a little at a time) while the writer is far behind: the workflow slows
        to what the store can take instead of memory growing without bound."""
        self.backpressure_waits += 1
        deadline = time.monotonic() + 30.0
        while len(self.queue) > _HIGH_WATER // 2 and self._thread.is_alive():
            if time.monotonic() > deadline:
                log.warning("steptrace: the store writer is stalled; recording goes on")
                return
            time.sleep(0.005)

    # -- control ----------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued before this call is written."""
        if self._closed or not self._thread.is_alive():
            return False
        done = threading.Event()
        self.queue.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = _EXIT_FLUSH_TIMEOUT_S) -> None:
        if self._closed:
            return
        flushed = self.flush(timeout_s)
        self._closed = True
        self.queue.append(None)
        self._wake.set()
        self._thread.join(timeout_s if flushed else 0.5)
        if not flushed:
            log.warning(
                "steptrace: could not write all records to %s before exit (%d still queued)",
                self.url,
                len(self.queue),
            )

    # -- writer thread ----------------------------------------------------------
    def _loop(self) -> None:
        q = self.queue
        stop = False
        while not stop:
            self._wake.wait(_INTERVAL_S)
            self._wake.clear()
            while q and not stop:
                runs: list[RunState] = []
                spans: list[SpanRecord] = []
                events: list[threading.Event] = []
                for _ in range(min(len(q), _BATCH_MAX)):
                    item = q.popleft()
                    if isinstance(item, SpanRecord):
                        spans.append(item)
                    elif isinstance(item, RunState):
                        runs.append(item)
                    elif isinstance(item, threading.Event):
                        events.append(item)
                    elif item is None:
                        stop = True
                if runs or spans:
                    self._write(runs, spans)
                for event in events:
                    event.set()
        self.backend.close()

    def _write(self, runs: list[RunState], spans: list[SpanRecord]) -> None:
        try:
            finish_batch(runs, spans)
        except Exception:  # never lose the batch to a bug in the export path
            log.warning("steptrace: failed to finish a batch for export", exc_info=True)
        try:
            self.backend.write(runs, spans)
            self.written_records += len(runs) + len(spans)
        except Exception as exc:
            self.failed_batches += 1
            self.dropped_records += len(runs) + len(spans)
            log.warning(
                "steptrace: failed to write %d records to %s: %s: %s",
                len(runs) + len(spans),
                self.url,
                type(exc).__name__,
                exc,
            )


def finish_batch(runs: list[RunState], spans: list[SpanRecord]) -> None:
    """Redact and cap the values the hot path only serialised (one scan for the whole
    batch), then give each OTel span its value attributes and end it. Children come
    before their parents: spans are ended before runs, in the order they finished."""
    records: list[RunState | SpanRecord] = [*spans, *runs]
    targets: list[tuple[RunState | SpanRecord, str, bytes]] = []
    for rec in records:
        if rec.raw:
            if rec.input is not None:
                targets.append((rec, "input", rec.input))
            if rec.output is not None:
                targets.append((rec, "output", rec.output))
    if targets:
        done = finish_values([value for _, _, value in targets])
        for (rec, name, _), value in zip(targets, done, strict=True):
            setattr(rec, name, value)
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


_sink_lock = threading.Lock()
_sink: Sink | None = None


def get_sink() -> Sink:
    """The process's sink for the configured store, opened (and migrated) on first use.

    Raises ``ConfigError`` when the configured store cannot be opened.
    """
    global _sink
    sink = _sink
    if sink is not None:
        return sink
    with _sink_lock:
        if _sink is None:
            url = get_config().store_url()
            from steptrace.store.schema import open_error

            try:
                _sink = Sink(url)
                # Registered now, not at import: atexit runs hooks last-in first-out, so
                # this flush (which ends the last OTel spans) runs before the shutdown
                # hook of a TracerProvider the application created before its first run.
                atexit.unregister(_flush_at_exit)
                atexit.register(_flush_at_exit)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(open_error(url, exc)) from exc
        return _sink


def current_sink() -> Sink | None:
    return _sink


def flush(timeout_s: float = 10.0) -> bool:
    """Write everything recorded so far in this process. True when done in time."""
    sink = _sink
    return True if sink is None else sink.flush(timeout_s)


def close_sink() -> None:
    global _sink
    with _sink_lock:
        sink, _sink = _sink, None
    if sink is not None:
        sink.close()


def _after_fork_in_child() -> None:
    # The writer thread does not survive fork; what the parent queued is the parent's.
    global _sink
    _sink = None


def _flush_at_exit() -> None:
    started = time.monotonic()
    close_sink()
    elapsed = time.monotonic() - started
    if elapsed > 1.0:
        log.info("steptrace: flushed records at exit in %.1fs", elapsed)


os.register_at_fork(after_in_child=_after_fork_in_child)
