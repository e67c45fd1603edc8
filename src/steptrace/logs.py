"""Capture of stdlib ``logging`` records emitted while a step runs.

The capture hooks the log record factory rather than adding a handler to the
root logger, so it sees records from every logger (whatever their handlers or
``propagate``), in every thread that carries the step's context, and leaves
``logging.basicConfig()`` working as before (it only configures a root logger
with no handlers). It is installed by the first run, never at import.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from steptrace.config import get_config
from steptrace.record import redact_text

LogEntry = tuple[int, str, str, str, str | None]
"""(ts_ns, level, logger, message, exception text)"""

_lock = threading.Lock()
_installed = False


def install(current_logs: Callable[[], list[LogEntry] | None]) -> None:
    """Start capturing: each record created while ``current_logs()`` returns a list is
    appended to it. Called at the start of every run; installs the hook once."""
    global _installed
    if _installed:
        lower_root_level()
        return
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            logs = current_logs()
            if logs is not None:
                config = get_config()  # read per record: configure() may change it
                name = record.name
                if (
                    config.capture_logs
                    and record.levelno >= config.log_level
                    and not (name == "steptrace" or name.startswith("steptrace."))
                ):
                    logs.append(_entry(record))
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
    lower_root_level()


def lower_root_level() -> None:
    """Make records at the capture level exist at all, without changing what prints.

    Below the root logger's level (WARNING by default) loggers never create a
    record. So the root is lowered to the capture level, and each root handler
    without a level of its own gets the root's old level, keeping its output the
    same. (A handler added later without a level sees the lower level.)
    """
    config = get_config()
    if not config.capture_logs:
        return
    root = logging.getLogger()
    old = root.level
    if old <= config.log_level:
        return
    for handler in root.handlers:
        if handler.level == logging.NOTSET:
            handler.setLevel(old)
    root.setLevel(config.log_level)


def _entry(record: logging.LogRecord) -> LogEntry:
    try:
        message = record.getMessage()
    except Exception:  # bad %-args must not break the user's logging call
        message = str(record.msg)
    exc_text: str | None = None
    if record.exc_info and record.exc_info[0] is not None:
        exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)))
    return (
        int(record.created * 1e9),
        record.levelname,
        record.name,
        redact_text(message),
        exc_text,
    )
