"""How one run differs from the usual: the run against the last N successful runs of
its workflow (``Store.compare``, ``steptrace compare``).

Steps are matched by key (``classify#0``) and judged on their final attempt.
Findings, each with a ``score`` (0..1) by which they are ranked, highest first:

- ``failed`` — the run failed (score 1.0), a step's final attempt failed (0.95);
- ``missing_step`` — a step that ran in at least half the baseline runs did not
  run (0.6 + 0.3 × that share);
- ``extra_step`` — a step that ran in under 1% of the baseline runs (0.8);
- ``new_value`` / ``rare_value`` — an output field's value never seen in the
  baseline (0.8), or seen in under 1% of its occurrences (0.6), or a field the
  baseline never had (``new_value``). Only *categorical* fields are judged:
  those whose baseline values repeat (at most one distinct value per two
  occurrences, and 50 at most), so ids, free text and measurements are not
  flagged;
- ``more_attempts`` — more attempts than the baseline's p95 (0.5 + 0.1 per
  attempt over, at most 0.8);
- ``slow`` — a final attempt slower than the baseline's p95 for that step, by 1 ms
  at least (0.3 + 0.2 × log2 of the ratio, at most 0.9);
- ``cost`` — tokens or cost of the step's LLM calls (all attempts) above the
  baseline's p95 (0.25 + 0.2 × log2 of the ratio, at most 0.85).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, cast

import orjson

from steptrace.query.diff import occurrences
from steptrace.query.distribution import Reader, check_last, json_key, percentile, runs_window
from steptrace.store.model import RunRecord

RARE_SHARE = 0.01
MISSING_SHARE = 0.5
EXTRA_SHARE = 0.01
CATEGORIES_MAX = 50
"""A field with more distinct values than this in the baseline (or more than one per
two occurrences) is a measurement or an id, not a category: its values are not
judged."""
SLOW_MIN_EXCESS_MS = 1.0
"""A step is slow only when it takes at least this much longer than the baseline's
p95: a 40 µs step taking 100 µs is noise, not a finding."""


class Finding(TypedDict):
    step: str | None
    key: str | None
    kind: str
    """slow, rare_value, new_value, missing_step, extra_step, more_attempts, cost, failed"""
    detail: str
    score: float
    path: NotRequired[str]
    value: NotRequired[Any]
    baseline_count: NotRequired[int]
    baseline_share: NotRequired[float]
    duration_ms: NotRequired[float]
    baseline_p95_ms: NotRequired[float]
    ratio: NotRequired[float]
    attempts: NotRequired[int]
    baseline_p95_attempts: NotRequired[float]
    tokens: NotRequired[int]
    baseline_p95_tokens: NotRequired[float]
    cost_usd: NotRequired[float]
    baseline_p95_cost_usd: NotRequired[float]
    error: NotRequired[Any]


class Comparison(TypedDict):
    run_id: str
    workflow: str
    status: str
    baseline: int
    """The baseline asked for."""
    baseline_runs: int
    """The successful runs found for it (fewer when the store holds fewer)."""
    findings: list[Finding]


@dataclass
class _KeyBaseline:
    """What the baseline runs did at one step key."""

    runs: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    outputs: int = 0
    """Succeeded final attempts whose output was looked at."""
    present: Counter[str] = field(default_factory=Counter)
    values: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of the leaves of a JSON value; objects are walked, arrays and
    scalars are leaves. A non-object output is one leaf with the path ``""``."""
    if isinstance(value, dict) and value:
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            out.extend(leaves(item, f"{path}.{key}" if path else str(key)))
        return out
    return [(path, value)]


def _field_name(path: str) -> str:
    return f"output.{path}" if path else "output"


def _baseline(db: Reader, workflow: str, run_id: str, n: int) -> tuple[int, dict[str, Any]]:
    d = db.dialect
    window, params = runs_window(d, workflow, status="succeeded", exclude=True)
    params = [*params, run_id, n]
    steps = db.rows(
        f"WITH r AS MATERIALIZED ({window}) "
        "SELECT s.run_id, s.span_id, s.step_key, s.attempt, s.status, s.duration_ms, s.output "
        f"FROM r {d.ordered_join} spans s ON s.run_id = r.run_id AND s.step_key IS NOT NULL",
        params,
    )
    llm = db.rows(
        f"WITH r AS MATERIALIZED ({window}) "
        "SELECT l.run_id, l.parent_span_id, l.input_tokens, l.output_tokens, l.cost_usd "
        f"FROM r {d.ordered_join} llm_calls l ON l.run_id = r.run_id",
        params,
    )
    (n_runs,) = db.rows(f"WITH r AS MATERIALIZED ({window}) SELECT count(*) FROM r", params)[0]
    owner: dict[str, tuple[str, str]] = {}
    finals: dict[tuple[str, str], tuple[int, str, float | None, Any]] = {}
    for rid, span_id, key, attempt, status, duration, output in steps:
        owner[span_id] = (rid, key)
        previous = finals.get((rid, key))
        if previous is None or attempt > previous[0]:
            finals[(rid, key)] = (attempt, status, duration, output)
    spend: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for _rid, parent, tokens_in, tokens_out, cost in llm:
        occurrence = owner.get(parent)
        if occurrence is not None:
            total = spend[occurrence]
            total[0] += (tokens_in or 0) + (tokens_out or 0)
            total[1] += cost or 0.0
            total[2] += 1 if cost is not None else 0
    by_key: dict[str, _KeyBaseline] = defaultdict(_KeyBaseline)
    for (rid, key), (attempt, status, duration, output) in finals.items():
        base = by_key[key]
        base.runs.add(rid)
        base.attempts.append(attempt)
        if duration is not None:
            base.durations.append(duration)
        tokens, cost, costed = spend.get((rid, key), (0.0, 0.0, 0.0))
        base.tokens.append(tokens)
        if costed:
            base.costs.append(cost)
        if status == "succeeded" and output is not None:
            base.outputs += 1
            value = orjson.loads(output) if isinstance(output, str | bytes) else output
            for path, leaf in leaves(value):
                base.present[path] += 1
                base.values[path][json_key(leaf)] += 1
    for base in by_key.values():
        base.durations.sort()
        base.attempts.sort()
        base.tokens.sort()
        base.costs.sort()
    return int(n_runs), by_key


def _ratio_score(ratio: float, floor: float, cap: float) -> float:
    return round(min(cap, floor + 0.2 * math.log2(max(ratio, 1.0))), 4)


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def compare_run(db: Reader, run_id: str, baseline: int = 100) -> Comparison:
    """Findings, most important first, on how the run differs from the last
    ``baseline`` successful runs of its workflow (the run itself left out)."""
    check_last(baseline, "baseline")
    run = db.run(run_id)
    n_runs, by_key = _baseline(db, run.workflow, run.run_id, baseline)
    findings: list[tuple[float, int, Finding]] = []

    def add(order: int, finding: dict[str, Any]) -> None:
        findings.append((finding["score"], order, cast(Finding, finding)))

    if run.status == "failed":
        error = run.error or {}
        add(
            -1,
            {
                "step": None,
                "key": None,
                "kind": "failed",
                "detail": f"the run failed: {error.get('type')}: {error.get('message', '')}",
                "score": 1.0,
                "error": {k: v for k, v in error.items() if k != "traceback"},
            },
        )
    steps = occurrences(run)
    spend = _run_spend(run, steps)
    for order, (key, occ) in enumerate(steps.items()):
        final = occ.final
        base = by_key.get(key)
        runs_share = len(base.runs) / n_runs if base and n_runs else 0.0
        common: dict[str, Any] = {"step": final.name, "key": key}
        if final.status != "succeeded":
            error = final.error or {}
            add(
                order,
                {
                    **common,
                    "kind": "failed",
                    "detail": f"failed after {len(occ.attempts)} attempt(s): "
                    f"{error.get('type')}: {error.get('message', '')}",
                    "score": 0.95,
                    "attempts": len(occ.attempts),
                    "error": {k: v for k, v in error.items() if k != "traceback"},
                },
            )
        if n_runs and runs_share < EXTRA_SHARE:
            add(
                order,
                {
                    **common,
                    "kind": "extra_step",
                    "detail": "never ran in the baseline"
                    if not base
                    else f"ran in {runs_share:.1%} of the baseline runs",
                    "score": 0.8,
                    "baseline_share": runs_share,
                },
            )
        if base is None:
            continue
        p95_attempts = percentile(base.attempts, 0.95)
        attempts = len(occ.attempts)
        if p95_attempts is not None and attempts > p95_attempts:
            add(
                order,
                {
                    **common,
                    "kind": "more_attempts",
                    "detail": f"{attempts} attempts; the baseline's p95 is {p95_attempts:g} "
                    f"(max {base.attempts[-1]})",
                    "score": round(min(0.8, 0.5 + 0.1 * (attempts - p95_attempts)), 4),
                    "attempts": attempts,
                    "baseline_p95_attempts": p95_attempts,
                },
            )
        p95_ms = percentile(base.durations, 0.95)
        if (
            p95_ms is not None
            and final.duration_ms is not None
            and final.duration_ms - p95_ms >= SLOW_MIN_EXCESS_MS
        ):
            ratio = final.duration_ms / p95_ms if p95_ms > 0 else math.inf
            add(
                order,
                {
                    **common,
                    "kind": "slow",
                    "detail": f"took {_ms(final.duration_ms)}, {ratio:.1f}× the baseline's "
                    f"p95 of {_ms(p95_ms)}",
                    "score": _ratio_score(ratio, 0.3, 0.9),
                    "duration_ms": final.duration_ms,
                    "baseline_p95_ms": p95_ms,
                    "ratio": ratio,
                },
            )
        cost_finding = _cost_finding(common, spend.get(key), base)
        if cost_finding is not None:
            add(order, dict(cost_finding))
        if final.status == "succeeded":
            for finding in _value_findings(common, final.output, base):
                add(order, finding)
    for order, (key, base) in enumerate(by_key.items(), start=len(steps)):
        share = len(base.runs) / n_runs if n_runs else 0.0
        if key not in steps and share >= MISSING_SHARE:
            add(
                order,
                {
                    "step": key.rpartition("/")[2].rsplit("#", 1)[0],
                    "key": key,
                    "kind": "missing_step",
                    "detail": f"did not run; it ran in {share:.0%} of the baseline runs",
                    "score": round(0.6 + 0.3 * share, 4),
                    "baseline_share": share,
                },
            )
    findings.sort(key=lambda f: (-f[0], f[1]))
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "status": run.status,
        "baseline": baseline,
        "baseline_runs": n_runs,
        "findings": [f for _, _, f in findings],
    }


def _run_spend(run: RunRecord, steps: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """Tokens and cost (None when unknown) of each step's LLM calls, all attempts."""
    key_of = {span.span_id: key for key, occ in steps.items() for span in occ.attempts}
    spend: dict[str, tuple[float, float | None]] = {}
    for span in run.spans:
        key = key_of.get(span.parent_span_id or "")
        if span.kind != "llm" or key is None or span.llm is None:
            continue
        tokens, cost = spend.get(key, (0.0, None))
        tokens += (span.llm.get("input_tokens") or 0) + (span.llm.get("output_tokens") or 0)
        if span.llm.get("cost_usd") is not None:
            cost = (cost or 0.0) + span.llm["cost_usd"]
        spend[key] = (tokens, cost)
    return spend


def _cost_finding(
    common: dict[str, Any], spent: tuple[float, float | None] | None, base: _KeyBaseline
) -> Finding | None:
    if spent is None:
        return None
    tokens, cost = spent
    p95_tokens = percentile(base.tokens, 0.95)
    p95_cost = percentile(base.costs, 0.95)
    ratios: list[float] = []
    parts: list[str] = []
    if p95_tokens is not None and tokens > p95_tokens:
        ratios.append(tokens / p95_tokens if p95_tokens > 0 else math.inf)
        parts.append(f"{tokens:,.0f} tokens vs the baseline's p95 of {p95_tokens:,.0f}")
    if cost is not None and p95_cost is not None and cost > p95_cost:
        ratios.append(cost / p95_cost if p95_cost > 0 else math.inf)
        parts.append(f"${cost:.4f} vs the baseline's p95 of ${p95_cost:.4f}")
    if not ratios:
        return None
    finding = cast(
        Finding,
        {
            **common,
            "kind": "cost",
            "detail": "; ".join(parts),
            "score": _ratio_score(max(ratios), 0.25, 0.85),
            "ratio": max(ratios),
            "tokens": int(tokens),
        },
    )
    if p95_tokens is not None:
        finding["baseline_p95_tokens"] = p95_tokens
    if cost is not None:
        finding["cost_usd"] = cost
    if p95_cost is not None:
        finding["baseline_p95_cost_usd"] = p95_cost
    return finding


def _value_findings(
    common: dict[str, Any], output: Any, base: _KeyBaseline
) -> list[dict[str, Any]]:
    if base.outputs == 0:
        return []
    out: list[dict[str, Any]] = []
    for path, value in leaves(output):
        name = _field_name(path)
        present = base.present.get(path, 0)
        if present == 0:
            out.append(
                {
                    **common,
                    "kind": "new_value",
                    "detail": f"{name} is new: no baseline run has it",
                    "score": 0.8,
                    "path": name,
                    "value": value,
                    "baseline_count": 0,
                    "baseline_share": 0.0,
                }
            )
            continue
        seen = base.values[path]
        if len(seen) > min(present / 2, CATEGORIES_MAX):  # not categorical
            continue
        count = seen.get(json_key(value), 0)
        share = count / present
        shown = orjson.dumps(value).decode()
        if count == 0:
            out.append(
                {
                    **common,
                    "kind": "new_value",
                    "detail": f"{name} = {shown}: never seen in {present} baseline occurrences",
                    "score": 0.8,
                    "path": name,
                    "value": value,
                    "baseline_count": 0,
                    "baseline_share": 0.0,
                }
            )
        elif share < RARE_SHARE:
            out.append(
                {
                    **common,
                    "kind": "rare_value",
                    "detail": f"{name} = {shown}: {share:.1%} of {present} baseline occurrences",
                    "score": 0.6,
                    "path": name,
                    "value": value,
                    "baseline_count": count,
                    "baseline_share": share,
                }
            )
    return out
