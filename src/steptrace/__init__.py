"""steptrace: a Python runtime for AI workflows that traces every run at the step level."""

from steptrace import llm
from steptrace.config import Config, ConfigError, configure
from steptrace.decorators import RunResult, arun, last_run, run, step, tool, workflow
from steptrace.instrument import instrument
from steptrace.runtime import current_run_id, current_traceparent
from steptrace.spec import Backoff
from steptrace.store import RunNotFound, Store
from steptrace.store.model import RunRecord, SpanView
from steptrace.store.writer import flush, health

__all__ = [
    "Backoff",
    "Config",
    "ConfigError",
    "RunNotFound",
    "RunRecord",
    "RunResult",
    "SpanView",
    "Store",
    "arun",
    "configure",
    "current_run_id",
    "current_traceparent",
    "flush",
    "health",
    "instrument",
    "last_run",
    "llm",
    "run",
    "step",
    "tool",
    "workflow",
]
