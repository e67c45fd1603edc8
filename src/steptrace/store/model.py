"""What a query returns: a run and its spans as plain data in DESIGN.md's JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import orjson

from steptrace.store.columns import RUN_FIELDS
from steptrace.store.scores import Score


def loads(text: str | bytes | None) -> Any:
    if text is None:
        return None
    if isinstance(text, dict | list):  # PostgreSQL JSONB arrives decoded
        return text
    return orjson.loads(text)


@dataclass
class SpanView:
    span_id: str
    parent_span_id: str | None
    kind: str
    name: str
    attempt: int | None
    status: str
    started_at: str
    ended_at: str | None
    duration_ms: float | None
    input: Any
    output: Any
    error: dict[str, Any] | None
    step_key: str | None = None
    input_hash: str | None = None
    llm: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    scores: list[Score] = field(default_factory=list)
    """The scores on this span attempt (``Store.score``), by name then source."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "kind": self.kind,
            "name": self.name,
            "step_key": self.step_key,
            "attempt": self.attempt,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_ms": self.duration_ms,
            "input": self.input,
            "input_hash": self.input_hash,
            "output": self.output,
            "error": self.error,
            "llm": self.llm,
            "logs": self.logs,
            "attributes": self.attributes,
            "scores": [s.to_dict() for s in self.scores],
        }


class DerivedRun(TypedDict):
    """A run made from another (``Store.derived``): a fork of it or a replay of it."""

    run_id: str
    workflow: str
    status: str
    started_at: str
    relation: Literal["fork", "replay"]
    forked_at: str | None
    """The step key a fork started at (``draft#0``, ``outer#0/inner#1``); None for a
    replay."""


@dataclass
class RunRecord:
    """A stored run. ``to_dict()`` is the shape of ``steptrace show RUN_ID --json``; its
    fields but ``spans``, ``logs`` and ``scores`` are the ``runs`` columns
    ``columns.RUN_FIELDS``."""

    run_id: str
    workflow: str
    status: str
    trace_id: str
    span_id: str
    started_at: str
    ended_at: str | None
    duration_ms: float | None
    input: Any
    output: Any
    error: dict[str, Any] | None
    tags: list[str] = field(default_factory=list)
    parent_trace_id: str | None = None
    parent_span_id: str | None = None
    entry_point: str | None = None
    """``module:qualname`` of the workflow function."""
    code_version: dict[str, Any] | None = None
    forked_from: str | None = None
    """The run this one was forked from (``forked_at``: the step key it was forked at)."""
    forked_at: str | None = None
    replay_of: str | None = None
    """The run this one replays."""
    resume_count: int = 0
    """How often the run was resumed in place."""
    session_id: str | None = None
    """The conversation or user journey the run belongs to."""
    spans: list[SpanView] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    """Log records written in the run outside any step."""
    scores: list[Score] = field(default_factory=list)
    """Every score of the run, by name then source: its own (``span_id`` None) and its
    span attempts' (each also in its ``SpanView.scores``). Filled by ``Store.run`` and
    ``Store.read_runs``, empty in ``Store.runs``' listings."""

    def steps(self, name: str | None = None) -> list[SpanView]:
        """Step-attempt spans, in start order, optionally of one step name."""
        return [s for s in self.spans if s.kind == "step" and (name is None or s.name == name)]

    def children(self, span_id: str) -> list[SpanView]:
        return [s for s in self.spans if s.parent_span_id == span_id]

    def summary(self) -> dict[str, Any]:
        """The run without its spans (the shape of ``steptrace runs --json`` items)."""
        return {name: getattr(self, name) for name in RUN_FIELDS}

    def __getitem__(self, key: str) -> Any:
        """``run["spans"]`` and friends: the keys of ``to_dict()``."""
        return self.to_dict()[key]

    def to_dict(self) -> dict[str, Any]:
        data = self.summary()
        data["logs"] = self.logs
        data["spans"] = [s.to_dict() for s in self.spans]
        data["scores"] = [s.to_dict() for s in self.scores]
        return data
