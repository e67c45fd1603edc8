"""steptrace: a Python runtime for AI workflows that traces every run at the step level."""

from steptrace import llm
from steptrace.acting import afork, areplay, aresume, fork, replay, resume
from steptrace.config import Config
from steptrace.configure import configure
from steptrace.decorators import RunResult, arun, last_run, run, step, tool, workflow
from steptrace.errors import (
    ConfigError,
    DivergenceError,
    QueryError,
    ReentryError,
    ReplayMismatch,
    RunNotFound,
    SteptraceError,
)
from steptrace.evals.evaluators import check
from steptrace.evals.judge import judge
from steptrace.evals.scoring import score
from steptrace.experimenting import experiment
from steptrace.instrument import instrument
from steptrace.reentry import is_replay
from steptrace.runtime import current_run_id, current_traceparent
from steptrace.spec import Backoff
from steptrace.store import Store
from steptrace.store.model import RunRecord, SpanView
from steptrace.store.writer import flush, health

__all__ = [
    "Backoff",
    "Config",
    "ConfigError",
    "DivergenceError",
    "QueryError",
    "ReentryError",
    "ReplayMismatch",
    "RunNotFound",
    "RunRecord",
    "RunResult",
    "SpanView",
    "SteptraceError",
    "Store",
    "__version__",
    "afork",
    "areplay",
    "aresume",
    "arun",
    "check",
    "configure",
    "current_run_id",
    "current_traceparent",
    "experiment",
    "flush",
    "fork",
    "health",
    "instrument",
    "is_replay",
    "judge",
    "last_run",
    "llm",
    "replay",
    "resume",
    "run",
    "score",
    "step",
    "tool",
    "workflow",
]


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed package's metadata when first asked for
    (not at import: importing steptrace does no work it can avoid)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("steptrace")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'steptrace' has no attribute {name!r}")
