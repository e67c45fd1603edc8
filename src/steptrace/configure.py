"""``configure``: change the process configuration, and install the OpenTelemetry SDK's
exporter when asked.

It sits above ``steptrace.config`` (which holds the configuration and knows nothing
above it) and ``steptrace.otel.otlp`` (the SDK set-up), so neither needs the other.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from steptrace.config import Config, apply, durability_level, get_config
from steptrace.errors import ConfigError


def configure(
    *,
    store: str | None = None,
    max_value_bytes: int | None = None,
    export_value_bytes: int | None = None,
    redact: bool | None = None,
    secret_keys: Sequence[str] | None = None,
    extra_secret_keys: Sequence[str] = (),
    secret_patterns: Sequence[str] | None = None,
    extra_secret_patterns: Sequence[str] = (),
    capture_logs: bool | None = None,
    log_level: int | str | None = None,
    capture_foreign_spans: bool | None = None,
    openinference: bool | None = None,
    record_steps_outside_workflow: bool | None = None,
    auto_migrate: bool | None = None,
    durable: bool | str | None = None,
    otel_sdk: bool = False,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_headers: dict[str, str] | None = None,
    otlp_logs: bool | None = None,
) -> Config:
    """Set the process configuration; arguments left out keep their current value.

    ``otel_sdk=True`` (implied by ``otlp_endpoint``) installs the OpenTelemetry SDK as
    steptrace's own command does: a ``TracerProvider`` from the standard ``OTEL_*``
    variables, exporting over OTLP (HTTP/protobuf, or ``otlp_protocol="grpc"``) through
    a bounded queue that never blocks the workflow and counts what it drops;
    ``otlp_logs=True`` (or ``OTEL_LOGS_EXPORTER=otlp``) also exports step log records
    as OTel log records. An SDK provider the application installed is kept (an
    explicit endpoint adds an exporter to it).

    Raises ``ConfigError`` at once for values steptrace cannot work with.
    """
    current = get_config()
    given: dict[str, Any] = {
        "store": store,
        "max_value_bytes": max_value_bytes,
        "export_value_bytes": export_value_bytes,
        "redact": redact,
        "capture_logs": capture_logs,
        "openinference": openinference,
        "capture_foreign_spans": capture_foreign_spans,
        "record_steps_outside_workflow": record_steps_outside_workflow,
        "auto_migrate": auto_migrate,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    keys = tuple(secret_keys) if secret_keys is not None else current.secret_keys
    changes["secret_keys"] = (*keys, *extra_secret_keys)
    patterns = tuple(secret_patterns) if secret_patterns is not None else current.secret_patterns
    changes["secret_patterns"] = (*patterns, *extra_secret_patterns)
    if log_level is not None:
        level = logging.getLevelName(log_level) if isinstance(log_level, str) else log_level
        if not isinstance(level, int):
            raise ConfigError(f"log_level={log_level!r} is not a logging level name")
        changes["log_level"] = level
    if durable is not None:
        changes["durable"] = durability_level(durable)
    new = dataclasses.replace(current, **changes).validate()
    if otel_sdk or otlp_endpoint is not None or otlp_protocol is not None:
        from steptrace.otel.otlp import configure_sdk
        from steptrace.store.engines import record_export_report

        configure_sdk(
            endpoint=otlp_endpoint,
            protocol=otlp_protocol,
            headers=otlp_headers,
            logs=otlp_logs,
            report=record_export_report,
        )
    return apply(new)


__all__ = ["configure"]
