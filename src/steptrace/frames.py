"""Where the code now running records: the current run, span and log list.

A context variable, so each thread and each asyncio task sees its own; the runtime sets
it around every run, step and LLM call, and whatever records on the side (log records,
other instrumentation's spans, LLM calls) reads it here.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steptrace.runtime import Run


class Frame:
    """Where the code now running records: its run, its span, its log list; for a step
    attempt, its key and attempt number, and the keys of the steps called in it."""

    __slots__ = (
        "attempt",
        "children",
        "key",
        "kind",
        "last_llm_text",
        "llm_calls",
        "logs",
        "run",
        "span_id",
    )

    def __init__(
        self,
        run: Run,
        span_id: str,
        logs: list[Any],
        kind: str = "run",
        key: str | None = None,
        attempt: int | None = None,
    ) -> None:
        self.run = run
        self.span_id = span_id
        self.logs = logs
        self.kind = kind
        self.key = key
        self.attempt = attempt
        self.last_llm_text: str | None = None
        self.children: dict[str, int] | None = None
        """Steps called in this frame so far: name → how many times."""
        self.llm_calls = 0
        """LLM calls made in this frame so far."""


current_frame: ContextVar[Frame | None] = ContextVar("steptrace_frame", default=None)
"""The ``Frame`` of the step (or run, or LLM call) the current context is inside."""
