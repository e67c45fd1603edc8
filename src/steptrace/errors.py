"""The errors steptrace raises to its callers, under one base.

``except steptrace.SteptraceError`` catches every one of them; each also derives from
the built-in error its case is an instance of (a bad configuration is a
``ValueError``, a missing run a ``LookupError``), so code written against those keeps
working. Telemetry failures are never raised into a workflow: these are the errors
of configuring steptrace and of asking the store questions.
"""

from __future__ import annotations

from typing import Any


class SteptraceError(Exception):
    """The base of every error steptrace raises to its callers."""


class ConfigError(SteptraceError, ValueError):
    """Raised at start-up when steptrace is configured in a way it cannot run with."""


class QueryError(SteptraceError, ValueError):
    """A query the store cannot answer as asked: a malformed filter, field path or SQL,
    or a write attempted through ``Store.sql``."""


class RunNotFound(SteptraceError, LookupError):
    """No run matches the id or prefix given (or a prefix matches several)."""


class SchemaTooNew(SteptraceError, RuntimeError):
    """The store was migrated by a newer steptrace than this one."""


class ProviderNotInstalled(SteptraceError, ImportError):
    """An LLM provider's SDK (``openai``, ``anthropic``) is not installed."""


class ReentryError(SteptraceError, RuntimeError):
    """A recorded run cannot be resumed, forked or replayed as asked (it succeeded
    already, its workflow cannot be imported, its input was not recorded in full…)."""


class DivergenceError(ReentryError):
    """Today's code calls steps in another order than the recorded run did: raised at
    the step where it diverged (``step``, its 1-based ``position`` in its parent, and
    the step the recording has there)."""

    def __init__(self, message: str, *, step: str, position: int, recorded: str) -> None:
        super().__init__(message)
        self.step = step
        self.position = position
        self.recorded = recorded

    def __reduce__(self) -> tuple[Any, ...]:
        return (_divergence, (str(self), self.step, self.position, self.recorded))


def _divergence(message: str, step: str, position: int, recorded: str) -> DivergenceError:
    return DivergenceError(message, step=step, position=position, recorded=recorded)


class ReplayMismatch(ReentryError):
    """A replayed call has no recorded answer and may not run live (``strict=True``, or
    a tool with ``side_effects=True``)."""


class EvaluationError(SteptraceError, ValueError):
    """A dataset or experiment request that cannot be carried out as asked: an unknown
    dataset, item or experiment, a name that is taken, a step that cannot be found."""


__all__ = [
    "ConfigError",
    "DivergenceError",
    "EvaluationError",
    "ProviderNotInstalled",
    "QueryError",
    "ReentryError",
    "ReplayMismatch",
    "RunNotFound",
    "SchemaTooNew",
    "SteptraceError",
]
