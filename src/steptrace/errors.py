"""The errors steptrace raises to its callers, under one base.

``except steptrace.SteptraceError`` catches every one of them; each also derives from
the built-in error its case is an instance of (a bad configuration is a
``ValueError``, a missing run a ``LookupError``), so code written against those keeps
working. Telemetry failures are never raised into a workflow: these are the errors
of configuring steptrace and of asking the store questions.
"""

from __future__ import annotations


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


__all__ = [
    "ConfigError",
    "ProviderNotInstalled",
    "QueryError",
    "RunNotFound",
    "SchemaTooNew",
    "SteptraceError",
]
