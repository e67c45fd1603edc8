"""The UI API's response shapes, for its OpenAPI description (``/openapi.json``).

The routes build their JSON themselves (``steptrace.ui.app``); these models only
describe it, so that a client, or a fuzzer checking every response against the
description, knows what to expect. The answers that are the store's own results
(``Store.diff``, ``Store.compare``, ``Store.step_stats``, ``Store.distribution``) are
described from their ``TypedDict``s by ``model_of``: one source for both.

Every error is ``ErrorResponse``: ``{"error": {"code": "...", "message": "..."}}``.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, NotRequired, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from steptrace.query.compare import Comparison
from steptrace.query.diff import RunDiff
from steptrace.query.distribution import Distribution
from steptrace.query.score_columns import ScoreCell
from steptrace.query.sessions import SessionSummary
from steptrace.query.stats import StepStats
from steptrace.store.model import DerivedRun


@functools.cache
def model_of(typed_dict: type) -> type[BaseModel]:
    """A pydantic model describing a ``TypedDict`` (nested ones too), for the OpenAPI
    description. Keys marked ``NotRequired`` are optional. (Pydantic takes only
    ``typing_extensions.TypedDict`` before Python 3.12, and Python 3.11 loses
    ``NotRequired`` under ``from __future__ import annotations``, hence this.)"""
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    fields: dict[str, Any] = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is NotRequired:
            fields[name] = (_described(typing.get_args(hint)[0]), None)
        else:
            fields[name] = (_described(hint), ...)
    model: type[BaseModel] = create_model(
        typed_dict.__name__, __config__=ConfigDict(extra="allow"), **fields
    )
    return model


def _described(hint: Any) -> Any:
    """``hint`` with every ``TypedDict`` in it replaced by its model."""
    if typing.is_typeddict(hint):
        return model_of(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return list[_described(args[0])]  # type: ignore[misc]
    if origin is dict:
        return dict[args[0], _described(args[1])]  # type: ignore[misc,valid-type]
    if origin in (Union, types.UnionType):
        return functools.reduce(lambda a, b: a | b, (_described(a) for a in args))
    return hint


class _Open(BaseModel):
    """A JSON object that may carry more fields than described."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="bad_request, unauthorized, forbidden, not_found, method_not_allowed, "
        "invalid_parameter or internal_error"
    )
    message: str = Field(description="What went wrong, for a person.")


class ErrorResponse(BaseModel):
    """The one shape of every error the UI answers (4xx and 5xx)."""

    error: ErrorDetail


class Config(_Open):
    store: str = Field(description="The store, its password masked.")
    trace_url: str | None
    page_size_max: int


class Totals(_Open):
    steps: int
    attempts: int
    llm_calls: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None


class RunError(_Open):
    type: str | None = None
    message: Any = None


class _RunFields(_Open):
    """What a run row and a run share."""

    run_id: str
    workflow: str
    status: str
    trace_id: str
    span_id: str
    parent_trace_id: str | None
    parent_span_id: str | None
    started_at: str
    ended_at: str | None
    duration_ms: float | None


class RunItem(_RunFields):
    error: RunError | None
    tags: list[str]
    totals: Totals


class RunsPage(_Open):
    runs: list[RunItem]
    limit: int
    offset: int
    has_more: bool


class LightSpanError(_Open):
    type: Any
    message: str
    validation: bool


class _SpanFields(_Open):
    """What every span shape starts with."""

    span_id: str
    parent_span_id: str | None
    kind: str
    name: str
    step_key: str | None
    attempt: int | None
    status: str
    started_at: str
    ended_at: str | None
    duration_ms: float | None


class LightSpan(_SpanFields):
    """A span without values: what the waterfall and the tree need."""

    error: LightSpanError | None
    llm: dict[str, Any] | None
    logs: int = Field(description="How many log records the span has.")


class Span(_SpanFields):
    """A span whole (``Store.run(...).spans[i].to_dict()``)."""

    input: Any
    input_hash: str | None
    output: Any
    error: dict[str, Any] | None
    llm: dict[str, Any] | None
    logs: list[dict[str, Any]]
    attributes: dict[str, Any]


class RootSpan(_Open):
    """The run's own span, asked for by its id."""

    span_id: str
    kind: str = Field(description='Always "run".')
    name: str


class Score(_Open):
    """A stored score (``Store.scores``): on the run (``span_id`` null) or on a span."""

    run_id: str
    span_id: str | None
    step: str | None = Field(description="The scored span's name (null for the run).")
    name: str
    kind: str = Field(description="numeric, boolean or categorical")
    value: float | bool | str | None = Field(description="A number, a bool or the category.")
    label: str | None
    rationale: str | None
    source: str = Field(description="human, code or llm")
    judge_run_id: str | None = Field(description="The run in which an LLM judge decided.")
    created_at: str
    updated_at: str


class Run(_RunFields):
    input: Any
    output: Any
    error: dict[str, Any] | None
    tags: list[str]
    logs: list[dict[str, Any]]
    spans: list[LightSpan] | list[Span] = Field(
        description="Light spans, or whole ones with `values=true`."
    )
    totals: Totals
    trace_link: str | None
    derived: list[model_of(DerivedRun)] = Field(  # type: ignore[valid-type]
        description="The runs made from this one (its forks and replays), newest first."
    )


class Bin(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: float = Field(alias="from")
    to: float
    count: int


class Histogram(_Open):
    step: str
    workflow: str | None
    count: int
    bins: list[Bin]


def score_columns_model() -> Any:
    """``/scores/columns``: per run id, per score name, a figure or null."""
    return dict[str, dict[str, model_of(ScoreCell) | None]]  # type: ignore[misc]


def diff_model() -> type[BaseModel]:
    return model_of(RunDiff)


def compare_model() -> type[BaseModel]:
    return model_of(Comparison)


def stats_model() -> Any:
    return list[model_of(StepStats)]  # type: ignore[misc]


def distribution_model() -> type[BaseModel]:
    return model_of(Distribution)


# --- sessions (``steptrace.ui.sessions``) ---------------------------------------------


class SessionsPage(_Open):
    sessions: list[model_of(SessionSummary)]  # type: ignore[valid-type]
    limit: int
    offset: int
    has_more: bool


class Turn(_RunFields):
    """One run of a session: its input, then its output or error."""

    session_id: str
    input: Any
    output: Any
    error: RunError | None
    tags: list[str]


class Session(_Open):
    session_id: str
    runs: list[Turn] = Field(description="The page's runs in start order.")
    total: int = Field(description="How many runs the session has.")
    limit: int
    offset: int = Field(description="How many of its latest runs the page skipped.")
    has_more: bool = Field(description="Whether earlier runs exist (the next offset).")


# -- experiments (``steptrace.evals.experiments``, ``steptrace.evals.overview``) -------


class ExperimentHeader(_Open):
    name: str
    dataset: str
    target: str = Field(description="module:qualname of the step (or the workflow) it ran")
    mode: str = Field(description="step or from-step")
    evaluators: list[str]
    params: dict[str, Any]
    code_version: dict[str, Any] | None
    status: str = Field(description="running, completed, interrupted or failed")
    started_at: str
    ended_at: str | None


class ScoreMean(_Open):
    mean: float | None = Field(description="Over the numeric and boolean values (true = 1).")
    count: int = Field(description="How many values the mean is of.")
    errors: int = Field(description="Failed evaluations.")


class ExperimentSummary(ExperimentHeader):
    items: int
    succeeded: int
    failed: int
    scores: dict[str, ScoreMean] = Field(description="By score name, its evaluators first.")


class ScoreAggregate(ScoreMean):
    labels: dict[str, int] = Field(description="How many items got each category.")


class Latency(_Open):
    p50: float | None
    mean: float | None


class ExperimentAggregate(_Open):
    items: int
    succeeded: int
    failed: int
    cost_usd: float | None
    input_tokens: int
    output_tokens: int
    latency_ms: Latency = Field(description="Of the succeeded items' steps.")
    scores: dict[str, ScoreAggregate]


class ItemScore(_Open):
    value: float | bool | str | None
    label: str | None
    rationale: str | None
    source: str
    error: bool = Field(description="The evaluation failed (its message is the rationale).")


class ItemRun(_Open):
    """One item as one experiment ran it."""

    run_id: str | None
    span_id: str | None
    status: str
    output: Any
    error: dict[str, Any] | None
    duration_ms: float | None
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    scores: dict[str, ItemScore]


class ExperimentItem(ItemRun):
    item_id: str


class Experiment(ExperimentHeader):
    summary: ExperimentAggregate
    items: list[ExperimentItem] = Field(description="In dataset order.")


class ItemComparison(_Open):
    item_id: str
    input: Any
    reference: Any
    changed: bool
    a: ItemRun | None = Field(description="null: A did not run the item.")
    b: ItemRun | None
    diff: list[dict[str, Any]] = Field(description="How B's output differs from A's.")


class ExperimentComparison(_Open):
    a: ExperimentHeader
    b: ExperimentHeader
    evaluators: list[str]
    aggregate: dict[str, ExperimentAggregate] = Field(description='"a" and "b".')
    items: list[ItemComparison]
    changed: list[str] = Field(description="The ids of the items whose outcome changed.")
