"""``Store.diff`` and ``Store.compare`` (issue 4) on the store of known runs
(``query_data``): steps aligned by name and occurrence, structural changes by path,
and ranked findings against a baseline — expectations from the run plans."""

from __future__ import annotations

from typing import Any

import pytest

import steptrace as st
from steptrace.query.diff import json_diff, line_diff, merged_order
from steptrace.query.where import QueryError
from tests.support.query_data import FAILED, N_RUNS, ODD, PLANS, SLOW_S, Recorded

KINDS = {
    "slow",
    "rare_value",
    "new_value",
    "missing_step",
    "extra_step",
    "more_attempts",
    "cost",
    "failed",
}


def changes(step: dict[str, Any]) -> dict[str, tuple[str, Any, Any]]:
    return {c["path"]: (c["change"], c.get("a"), c.get("b")) for c in step["changes"]}


# --- the structural diff ----------------------------------------------------------------


def test_json_diff_paths_and_kinds() -> None:
    a = {"x": 1, "y": {"z": [1, 2, 3]}, "gone": True, "same": {"k": [1]}, "t": 1}
    b = {"x": 2, "y": {"z": [1, 5]}, "new": None, "same": {"k": [1]}, "t": True}
    got = {(c["path"], c["change"], c.get("a"), c.get("b")) for c in json_diff(a, b)}
    assert got == {
        ("x", "changed", 1, 2),
        ("y.z[1]", "changed", 2, 5),
        ("y.z[2]", "removed", 3, None),
        ("gone", "removed", True, None),
        ("new", "added", None, None),
        ("t", "changed", 1, True),  # a bool is not a number
    }
    assert json_diff(1, 1.0) == []
    assert json_diff({"a": [1]}, {"a": {"0": 1}})[0]["path"] == "a"


def test_long_strings_are_diffed_by_line() -> None:
    a = "line one\nline two\nline three"
    b = "line one\nline 2\nline three"
    (change,) = json_diff({"text": a}, {"text": b})
    assert change["lines"] == line_diff(a, b)
    assert "-line two" in change["lines"] and "+line 2" in change["lines"]
    assert not any(line.startswith(("---", "+++")) for line in change["lines"])
    (short,) = json_diff("a", "b")
    assert "lines" not in short


def test_merged_order_places_keys_one_run_has_after_their_predecessor() -> None:
    assert merged_order(["a", "b", "d"], ["a", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]
    assert merged_order([], ["x", "y"]) == ["x", "y"]
    assert merged_order(["x"], ["w", "x"]) == ["w", "x"]


# --- Store.diff -------------------------------------------------------------------------


def test_diff_aligns_steps_by_name_and_occurrence(store: st.Store, data: Recorded) -> None:
    a, b = PLANS[2], PLANS[3]  # billing, one enrich  vs  refund, two enrich calls
    d = store.diff(data.run_ids[2], data.run_ids[3][:12])
    assert d["a"]["run_id"] == data.run_ids[2] and d["b"]["run_id"] == data.run_ids[3]
    steps = {s["key"]: s for s in d["steps"]}
    assert [s["key"] for s in d["steps"]] == b.steps()  # a's keys are a subset, in order
    assert steps["enrich#1"]["only_in"] == "b"
    assert steps["enrich#1"]["status"] == {"a": None, "b": "succeeded"}
    classify = steps["classify#0"]
    assert classify["only_in"] is None and classify["changed"]
    assert changes(classify) == {
        "input.i": ("changed", 2, 3),
        "output.classification": ("changed", a.label, b.label),
        "output.confidence": ("changed", a.confidence, b.confidence),
        "output.tags[1]": ("added", None, "y"),
        "output.meta.label": ("changed", "a", "b"),
    }
    assert classify["attempts"] == {"a": 1, "b": 1}
    durations = classify["duration_ms"]
    assert durations["delta"] == pytest.approx(durations["b"] - durations["a"])
    draft = changes(steps["draft#0"])
    assert draft["llm[0].messages[0].content"] == ("changed", "2:billing", "3:refund")
    assert draft["llm[0].response"] == ("changed", a.reply, b.reply)
    assert draft["output"] == ("changed", a.reply, b.reply)
    response = next(c for c in steps["draft#0"]["changes"] if c["path"] == "llm[0].response")
    assert "-your ticket 2 is a billing case." in response["lines"]
    assert "+your ticket 3 is a refund case." in response["lines"]
    assert changes(steps["lookup#0"])["input.order_id"] == ("changed", "A-2", "A-3")
    assert d["run"]["changes"] == [
        {"path": "input.i", "change": "changed", "a": 2, "b": 3},
        {"path": "output.label", "change": "changed", "a": a.label, "b": b.label},
    ]
    assert d["summary"] == {
        "steps": len(b.steps()),
        "changed": len(a.steps()),
        "same": 0,
        "only_in_a": 0,
        "only_in_b": 1,
    }


def test_diff_of_retried_failed_and_identical_runs(store: st.Store, data: Recorded) -> None:
    retried = store.diff(data.run_ids[1], data.run_ids[2])
    classify = retried["steps"][0]
    assert classify["attempts"] == {"a": PLANS[1].classify_attempts, "b": 1}
    assert classify["changed"]

    failed = store.diff(data.run_ids[FAILED[0]], data.run_ids[8])
    assert failed["run"]["status"] == {"a": "failed", "b": "succeeded"}
    steps = {s["key"]: s for s in failed["steps"]}
    assert steps["classify#0"]["status"] == {"a": "failed", "b": "succeeded"}
    assert steps["classify#0"]["attempts"] == {"a": 3, "b": 1}
    assert changes(steps["classify#0"])["error"][:2] == (
        "changed",
        {"type": "ValueError", "module": "builtins", "message": "flaky classifier on ticket 9"},
    )
    assert {k for k, s in steps.items() if s["only_in"] == "b"} == set(PLANS[8].steps()[1:])

    same = store.diff(data.run_ids[4], data.run_ids[4])
    assert same["summary"]["changed"] == 0 and same["run"]["changes"] == []
    assert all(not s["changed"] and s["changes"] == [] for s in same["steps"])


def test_diff_of_an_unknown_run(store: st.Store, data: Recorded) -> None:
    with pytest.raises(st.RunNotFound):
        store.diff(data.run_ids[0], "nope")


# --- Store.compare ----------------------------------------------------------------------


def by_kind(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in result["findings"]:
        assert f["kind"] in KINDS and f["detail"]
        out.setdefault(f["kind"], []).append(f)
    return out


def successful_others(i: int) -> int:
    return sum(not p.failed and p.i != i for p in PLANS)


def test_compare_flags_a_value_the_baseline_never_had(store: st.Store, data: Recorded) -> None:
    result = store.compare(data.run_ids[7])
    assert result["run_id"] == data.run_ids[7] and result["baseline"] == 100
    assert result["baseline_runs"] == successful_others(7)
    found = by_kind(result)
    # (a step a millisecond slower than usual, on a busy machine, would be a finding)
    assert set(found) - {"slow"} == {"new_value"}, result["findings"]
    (new,) = found["new_value"]
    assert (new["step"], new["key"], new["path"], new["value"]) == (
        "classify",
        "classify#0",
        "output.classification",
        "legal",
    )
    assert new["baseline_count"] == 0
    # confidence differs in every run: not categorical, not flagged


def test_compare_finds_missing_extra_slow_and_costly_steps(store: st.Store, data: Recorded) -> None:
    odd = PLANS[ODD]
    found = by_kind(store.compare(data.run_ids[ODD]))
    assert [(f["key"], f["baseline_share"]) for f in found["missing_step"]] == [("lookup#0", 1.0)]
    assert [f["key"] for f in found["extra_step"]] == ["audit#0"]
    slow = {f["key"]: f for f in found["slow"]}
    assert {f"enrich#{k}" for k in range(odd.enrich_calls)} <= set(slow)
    enrich = slow["enrich#0"]
    assert enrich["duration_ms"] >= SLOW_S * 1000 and enrich["ratio"] > 1
    assert enrich["duration_ms"] > enrich["baseline_p95_ms"]
    (cost,) = found["cost"]
    assert cost["key"] == "draft#0"
    assert cost["tokens"] == odd.input_tokens + odd.output_tokens
    assert cost["cost_usd"] == pytest.approx(odd.cost_usd)
    baseline_tokens = sorted(
        p.input_tokens + p.output_tokens for p in PLANS if not p.failed and p.i != ODD
    )
    assert cost["baseline_p95_tokens"] < odd.input_tokens
    assert cost["baseline_p95_tokens"] <= baseline_tokens[-1]


def test_compare_finds_more_attempts_than_usual(store: st.Store, data: Recorded) -> None:
    result = store.compare(data.run_ids[25])
    found = by_kind(result)
    (more,) = found["more_attempts"]
    assert (more["key"], more["attempts"], more["baseline_p95_attempts"]) == ("classify#0", 3, 2)
    assert "failed" not in found


def test_compare_a_failed_run_ranks_the_failure_first(store: st.Store, data: Recorded) -> None:
    result = store.compare(data.run_ids[FAILED[1]], baseline=5)
    assert result["status"] == "failed" and result["baseline_runs"] == 5
    findings = result["findings"]
    assert [(f["kind"], f["key"]) for f in findings[:2]] == [
        ("failed", None),
        ("failed", "classify#0"),
    ]
    assert findings[0]["error"]["type"] == "ValueError"
    # baseline: runs 25..29; enrich#1 ran in one of them only (run 27)
    missing = {f["key"] for f in findings if f["kind"] == "missing_step"}
    assert missing == {"enrich#0", "lookup#0", "draft#0"}
    scores = [f["score"] for f in findings]
    assert scores == sorted(scores, reverse=True)


def test_compare_with_a_baseline_of_no_runs(tmp_path: Any) -> None:
    @st.step
    def only(x: int) -> dict[str, int]:
        return {"x": x}

    @st.workflow
    def lonely(x: int) -> None:
        only(x)

    run_id = st.run(lonely, 1).run_id
    with st.Store.open() as store:
        result = store.compare(run_id, baseline=10)
        assert result["baseline_runs"] == 0 and result["findings"] == []
        with pytest.raises(QueryError):
            store.compare(run_id, baseline=0)


def test_compare_flags_values_rare_in_a_large_baseline() -> None:
    values = iter(["rare"] + ["common"] * 150 + ["rare", "brand-new"])

    @st.step
    def pick() -> dict[str, str]:
        return {"v": next(values)}

    @st.workflow
    def flip() -> None:
        pick()

    for _ in range(151):
        st.run(flip)
    rare_run = st.run(flip).run_id
    new_run = st.run(flip).run_id
    with st.Store.open() as store:
        rare = by_kind(store.compare(rare_run, baseline=200))
        (finding,) = rare["rare_value"]
        assert finding["value"] == "rare" and finding["baseline_count"] == 1
        # the baseline: every other successful run, the newer one included
        assert finding["baseline_share"] == pytest.approx(1 / 152)
        assert set(rare) == {"rare_value"}
        new = by_kind(store.compare(new_run, baseline=200))
        assert [f["value"] for f in new["new_value"]] == ["brand-new"]
        # with a baseline of 100, one occurrence in 100 is not under 1%
        assert "rare_value" not in by_kind(store.compare(rare_run, baseline=100))


def test_compare_baseline_leaves_out_failed_runs_and_the_run_itself(
    store: st.Store, data: Recorded
) -> None:
    assert store.compare(data.run_ids[0], baseline=1000)["baseline_runs"] == successful_others(0)
    assert store.compare(data.run_ids[N_RUNS - 1], baseline=3)["baseline_runs"] == 3
