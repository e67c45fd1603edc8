"""Diff two runs step by step (``Store.diff``, ``steptrace diff``).

Steps are aligned by their key — name and occurrence, ``classify#0`` — never by
span id, so the second call of ``classify`` in one run meets the second call in
the other. For each aligned step the diff gives status, attempts and the
duration of the final attempt on both sides, and a structural JSON diff of the
final attempts' inputs, outputs, errors (without tracebacks) and LLM calls
(model, params, messages, response): one change per differing leaf, addressed
by a path such as ``output.classification`` or ``llm[0].messages[1].content``.
Long or multi-line strings also get a line diff. Steps only one run has are
listed as such, in the order the runs met them. A step a fork reused is a copy of
its recorded attempt: its LLM calls and its number of attempts are not compared.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any, NotRequired, TypedDict

import orjson

from steptrace.store.model import RunRecord, SpanView

LONG_STRING = 120
"""Strings longer than this (or with a newline) are also diffed line by line."""


class Change(TypedDict):
    path: str
    change: str
    """``changed``, ``added`` (only in b) or ``removed`` (only in a)."""
    a: NotRequired[Any]
    b: NotRequired[Any]
    lines: NotRequired[list[str]]
    """For long strings: a unified diff of their lines (without file headers)."""


class Pair(TypedDict):
    a: Any
    b: Any


class Durations(TypedDict):
    a: float | None
    b: float | None
    delta: float | None


class StepDiff(TypedDict):
    step: str
    key: str
    kind: str
    only_in: str | None
    """``"a"`` or ``"b"`` for a step one run has and the other not."""
    status: Pair
    attempts: Pair
    duration_ms: Durations
    """Of the final attempt."""
    changed: bool
    """Status, attempts or content differ (durations always do)."""
    changes: list[Change]


class RunSide(TypedDict):
    run_id: str
    workflow: str
    status: str
    started_at: str
    duration_ms: float | None


class RunDiff(TypedDict):
    a: RunSide
    b: RunSide
    run: dict[str, Any]
    """``status``, ``duration_ms`` and ``changes`` of the runs' own input/output/error."""
    steps: list[StepDiff]
    summary: dict[str, int]


# --- structural JSON diff -------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON leaves: 1 and 1.0 are, True and 1 are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def json_diff(a: Any, b: Any, path: str = "") -> list[Change]:
    """The leaf-level differences from ``a`` to ``b`` (JSON values)."""
    if _same_text(a, b):
        return []
    return list(_walk(a, b, path))


def _same_text(a: Any, b: Any) -> bool:
    """``a`` and ``b`` serialise to the same JSON, keys sorted: then no leaf differs
    (the converse does not hold: ``1`` and ``1.0`` are the same leaf). One C call each
    where the walk makes several Python calls per leaf: most steps of two runs of one
    workflow are the same."""
    try:
        return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            b, option=orjson.OPT_SORT_KEYS
        )
    except (TypeError, orjson.JSONEncodeError):  # not JSON values: leave it to the walk
        return False


def _walk(a: Any, b: Any, path: str) -> Iterator[Change]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            sub = _join(path, key)
            if key not in b:
                yield {"path": sub, "change": "removed", "a": a[key]}
            elif key not in a:
                yield {"path": sub, "change": "added", "b": b[key]}
            else:
                yield from _walk(a[key], b[key], sub)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = _join(path, i)
            if i >= len(b):
                yield {"path": sub, "change": "removed", "a": a[i]}
            elif i >= len(a):
                yield {"path": sub, "change": "added", "b": b[i]}
            else:
                yield from _walk(a[i], b[i], sub)
        return
    if _same(a, b):
        return
    change: Change = {"path": path, "change": "changed", "a": a, "b": b}
    if isinstance(a, str) and isinstance(b, str) and _long(a, b):
        change["lines"] = line_diff(a, b)
    yield change


def _long(a: str, b: str) -> bool:
    return "\n" in a or "\n" in b or max(len(a), len(b)) > LONG_STRING


def line_diff(a: str, b: str) -> list[str]:
    """A unified diff of two texts' lines, without the ``---``/``+++`` header."""
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=2))
    return lines[2:]


# --- runs -----------------------------------------------------------------------------


class _Step:
    """One occurrence of a step in a run: its attempts and final attempt."""

    def __init__(self, key: str, attempts: list[SpanView], llm: list[SpanView]) -> None:
        self.key = key
        self.attempts = attempts
        self.final = attempts[-1]
        self.llm = llm


def occurrences(run: RunRecord) -> dict[str, _Step]:
    """The run's step occurrences by key, in the order they started."""
    by_key: dict[str, list[SpanView]] = {}
    llm_in: dict[str | None, list[SpanView]] = {}
    for span in run.spans:
        if span.step_key is not None and span.kind in ("step", "tool"):
            by_key.setdefault(span.step_key, []).append(span)
        if span.kind == "llm":
            llm_in.setdefault(span.parent_span_id, []).append(span)
    out: dict[str, _Step] = {}
    for key, attempts in by_key.items():
        attempts.sort(key=lambda s: s.attempt or 0)
        final = attempts[-1]
        out[key] = _Step(key, attempts, llm_in.get(final.span_id, []))
    return out


def _error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {k: v for k, v in error.items() if k != "traceback"}


def _llm_view(span: SpanView) -> dict[str, Any]:
    llm = span.llm or {}
    return {
        "model": llm.get("model"),
        "params": llm.get("params"),
        "messages": llm.get("messages"),
        "response": span.output,
    }


def _content(step: _Step, *, llm: bool = True) -> dict[str, Any]:
    final = step.final
    content = {"input": final.input, "output": final.output, "error": _error(final.error)}
    if llm:
        content["llm"] = [_llm_view(s) for s in step.llm]
    return content


def _reused(step: _Step | None) -> bool:
    """A fork's copy of a recorded step (``steptrace.reused_from``): it made no LLM calls
    and has one attempt, whatever the recorded one made and had."""
    return step is not None and "steptrace.reused_from" in step.final.attributes


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _step_diff(key: str, a: _Step | None, b: _Step | None) -> StepDiff:
    some = a or b
    assert some is not None
    final_a = a.final if a else None
    final_b = b.final if b else None
    changes: list[Change] = []
    reused = _reused(a) or _reused(b)
    if a is not None and b is not None:
        changes = json_diff(_content(a, llm=not reused), _content(b, llm=not reused))
    status: Pair = {
        "a": final_a.status if final_a else None,
        "b": final_b.status if final_b else None,
    }
    attempts: Pair = {"a": len(a.attempts) if a else None, "b": len(b.attempts) if b else None}
    duration_a = final_a.duration_ms if final_a else None
    duration_b = final_b.duration_ms if final_b else None
    return {
        "step": some.final.name,
        "key": key,
        "kind": some.final.kind,
        "only_in": None if a and b else ("a" if a else "b"),
        "status": status,
        "attempts": attempts,
        "duration_ms": {"a": duration_a, "b": duration_b, "delta": _delta(duration_a, duration_b)},
        "changed": bool(changes)
        or status["a"] != status["b"]
        or (attempts["a"] != attempts["b"] and not reused),
        "changes": changes,
    }


def merged_order(a: list[str], b: list[str]) -> list[str]:
    """Keys of both runs: a's order, each key only b has placed after the key b ran
    before it (and after the keys only a has there: removed before added)."""
    order = list(a)
    in_b = set(b)
    previous: str | None = None
    for key in b:
        if key not in order:
            at = order.index(previous) + 1 if previous is not None else 0
            while at < len(order) and order[at] not in in_b:
                at += 1
            order.insert(at, key)
        previous = key
    return order


def _side(run: RunRecord) -> RunSide:
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "status": run.status,
        "started_at": run.started_at,
        "duration_ms": run.duration_ms,
    }


def diff_runs(a: RunRecord, b: RunRecord) -> RunDiff:
    """How run ``b`` differs from run ``a``."""
    steps_a, steps_b = occurrences(a), occurrences(b)
    steps = [
        _step_diff(key, steps_a.get(key), steps_b.get(key))
        for key in merged_order(list(steps_a), list(steps_b))
    ]
    run_changes = json_diff(
        {"input": a.input, "output": a.output, "error": _error(a.error)},
        {"input": b.input, "output": b.output, "error": _error(b.error)},
    )
    return {
        "a": _side(a),
        "b": _side(b),
        "run": {
            "status": {"a": a.status, "b": b.status},
            "duration_ms": {
                "a": a.duration_ms,
                "b": b.duration_ms,
                "delta": _delta(a.duration_ms, b.duration_ms),
            },
            "changes": run_changes,
        },
        "steps": steps,
        "summary": {
            "steps": len(steps),
            "changed": sum(s["changed"] and s["only_in"] is None for s in steps),
            "same": sum(not s["changed"] and s["only_in"] is None for s in steps),
            "only_in_a": sum(s["only_in"] == "a" for s in steps),
            "only_in_b": sum(s["only_in"] == "b" for s in steps),
        },
    }
