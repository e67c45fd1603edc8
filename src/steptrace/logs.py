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
    appended to it. Idempotent."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        config = get_config()
        if not config.capture_logs:
            return
        min_level = config.log_level
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            logs = current_logs()
            if logs is not None and record.levelno >= min_level:
                name = record.name
                if not (name == "steptrace" or name.startswith("steptrace.")):
                    logs.append(_entry(record))
            return record

        logging.setLogRecordFactory(factory)
        root = logging.getLogger()
        if not root.handlers and root.level > min_level and root.level == logging.WARNING:
            # Unconfigured logging: records below WARNING are never even created, so
            # lower the root level. Output is unchanged: Python's last-resort handler
            # prints WARNING and above only.
            root.setLevel(min_level)
        _installed = True


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
