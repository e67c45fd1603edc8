"""Experiments (``st.experiment``, ``steptrace experiment …``): today's code of a step
run over a dataset of recorded occurrences, each output scored against its reference,
and two experiments compared — on a SQLite file and on PostgreSQL. The workflows live
at module level, so the recorded entry point (``tests.test_experiments:…``) finds the
step again, as it would in a user's project."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.errors import EvaluationError
from steptrace.evals import datasets, experiments
from steptrace.evals.evaluators import Evaluator
from steptrace.experimenting import exact, experiment
from steptrace.store import StoreReader
from tests.support.helpers import cli_in_process, steptrace_cli

on_both = pytest.mark.usefixtures("store_url")
"""A SQLite file, then PostgreSQL (the command-line tests read a SQLite file only: the
API they go through is tested on both)."""

calls: Counter[str] = Counter()
"""How often the model and the steps ran for real in this test."""
active = {"now": 0, "most": 0}
_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _clean() -> None:
    calls.clear()
    active.update(now=0, most=0)


def _answer(messages: list[dict[str, Any]], **params: Any) -> str:
    calls["model"] += 1
    return "refund" if "refund" in messages[-1]["content"] else "question"


st.llm.script("experiments", _answer)


def _label(text: str) -> dict[str, str]:
    reply = st.llm.chat(
        model="scripted:experiments", messages=[{"role": "user", "content": f"Label: {text}"}]
    )
    return {"label": reply.text}


@st.step
def classify(text: str) -> dict[str, str]:
    calls["classify"] += 1
    return _label(text)


@st.step
def draft(label: dict[str, str], text: str) -> str:
    calls["draft"] += 1
    return f"[{label['label']}] {text}"


@st.workflow
def triage(text: str) -> str:
    return draft(classify(text), text)


WRONG = {2, 5, 8, 11, 14}
"""The tickets the changed step gets wrong."""
TEXTS = [f"ticket {i}: " + ("refund please" if i % 3 == 0 else "how do I") for i in range(20)]


def classify_v2(text: str) -> dict[str, str]:
    """Today's changed code: wrong on exactly the five tickets of ``WRONG``."""
    number = int(text.split(":")[0].split()[1])
    return {"label": "other"} if number in WRONG else _label(text)


def classify_breaks(text: str) -> dict[str, str]:
    if text.startswith(("ticket 3:", "ticket 4:")):
        raise RuntimeError(f"cannot read {text[:9]}")
    return _label(text)


def classify_slowly(text: str) -> dict[str, str]:
    with _lock:
        active["now"] += 1
        active["most"] = max(active["most"], active["now"])
    time.sleep(0.01)
    try:
        return _label(text)
    finally:
        with _lock:
            active["now"] -= 1


def classify_interrupted(text: str) -> dict[str, str]:
    if text.startswith("ticket 4:"):
        raise KeyboardInterrupt
    return _label(text)


def _record(n: int = 20) -> list[datasets.DatasetItem]:
    for text in TEXTS[:n]:
        triage(text)
    assert st.flush()
    with st.Store.open() as store:
        assert len(datasets.add(store, "tickets", "classify").added) == n
        return datasets.items(store, "tickets")


@on_both
def test_acceptance_a_right_on_all_b_on_15_compare_lists_the_5(store_url: str) -> None:
    items = _record()
    a = experiment("A", "tickets")  # the step found through the runs' entry point
    assert a.status == "completed" and a.mode == "step"
    assert a.target == "tests.test_experiments:classify"
    assert a.params == {"concurrency": 1, "llm": "live"} and a.evaluators == ["exact"]
    assert a.summary()["scores"] == {"exact": {"mean": 1.0, "count": 20, "errors": 0, "labels": {}}}
    assert (a.summary()["items"], a.summary()["succeeded"], a.summary()["failed"]) == (20, 20, 0)
    assert a.summary()["input_tokens"] > 0 and a.summary()["output_tokens"] > 0

    b = experiment("B", "tickets", classify_v2)
    assert b.summary()["scores"]["exact"]["mean"] == 0.75
    assert b.summary()["scores"]["exact"]["count"] == 20

    with st.Store.open() as store:
        comparison = experiments.compare(store, "A", "B")
        expected = [items[i].item_id for i in sorted(WRONG)]
        assert comparison.changed == expected
        data = comparison.to_dict()
        assert data["changed"] == expected
        assert [i["item_id"] for i in data["items"]] == [i.item_id for i in items]
        assert data["aggregate"]["a"]["scores"]["exact"]["mean"] == 1.0
        assert data["aggregate"]["b"]["scores"]["exact"]["mean"] == 0.75
        wrong = data["items"][2]
        assert wrong["changed"] and wrong["input"] == {"text": TEXTS[2]}
        assert wrong["reference"] == {"label": "question"}
        assert wrong["a"]["scores"]["exact"]["value"] is True
        assert wrong["b"]["scores"]["exact"]["value"] is False
        assert wrong["diff"] == [
            {"path": "output.label", "change": "changed", "a": "question", "b": "other"}
        ]
        assert not data["items"][0]["changed"] and data["items"][0]["diff"] == []

        # every execution is a run of its own, tagged, with its step recorded as in
        # production and the score on the step's attempt
        assert store.count_runs(tag="experiment:A") == 20
        assert store.count_runs(tag="experiment:B") == 20
        first = a.items[0]
        assert first.run_id is not None and first.span_id is not None
        run = store.run(first.run_id)
        assert run.workflow == "experiment:classify" and run.tags == ["experiment:A"]
        assert run.input == {"text": TEXTS[0]} and run.forked_from is None
        step = next(s for s in run.spans if s.span_id == first.span_id)
        assert (step.name, step.step_key, step.output) == ("classify", "classify#0", first.output)
        assert [s.kind for s in run.spans if s.parent_span_id == step.span_id] == ["llm"]
        (score,) = store.scores(first.run_id)
        assert (score.span_id, score.name, score.value, score.source, score.step) == (
            first.span_id,
            "exact",
            True,
            "code",
            "classify",
        )
        assert [e.name for e in experiments.experiments(store)] == ["B", "A"]

    # the same code judged by one more evaluator: nothing changed (a score only one
    # side has is not a change), and the extra evaluator is reported for C alone
    always = st.check(lambda output: True, name="always")
    experiment("C", "tickets", classify_v2, evaluators=[exact, always])
    with st.Store.open() as store:
        same = experiments.compare(store, "B", "C")
        assert same.changed == []
        data = same.to_dict()
        assert data["aggregate"]["a"]["scores"]["always"]["count"] == 0
        assert data["aggregate"]["b"]["scores"]["always"]["mean"] == 1.0


@on_both
def test_evaluators_that_raise_are_failed_scores_and_the_experiment_goes_on() -> None:
    _record(6)

    def picky(output: dict[str, str], reference: Any) -> bool:
        if output["label"] == "refund":
            raise ValueError("refunds are hard")
        return output == reference

    def nothing(output: Any) -> Any:
        return None

    def explained(output: Any, *, reference: Any, input: Any) -> tuple[float, str]:
        return 0.5, f"{input['text'][:8]} vs {reference['label']}"

    async def agrees(output: Any, reference: Any) -> bool:
        await asyncio.sleep(0)
        return bool(output == reference)

    judge = Evaluator(lambda output: (0.9, "reads well"), name="judge", source="llm")
    e = experiment("judged", "tickets", evaluators=[picky, nothing, explained, agrees, judge])
    assert e.status == "completed"
    assert e.evaluators == ["picky", "nothing", "explained", "agrees", "judge"]
    assert e.summary()["scores"]["agrees"]["mean"] == 1.0
    assert e.items[0].scores["judge"].source == "llm"
    assert e.items[0].scores["judge"].value == 0.9
    scores = e.summary()["scores"]
    assert scores["picky"] == {"mean": 1.0, "count": 4, "errors": 2, "labels": {}}
    assert scores["nothing"] == {"mean": None, "count": 0, "errors": 6, "labels": {}}
    assert scores["explained"] == {"mean": 0.5, "count": 6, "errors": 0, "labels": {}}
    refund = e.items[0].scores
    assert refund["picky"].error and refund["picky"].value is False
    assert (refund["picky"].label, refund["picky"].rationale) == (
        "error",
        "raised ValueError: refunds are hard",
    )
    assert refund["picky"].to_dict()["value"] is None and refund["picky"].to_dict()["error"]
    assert refund["nothing"].error and refund["nothing"].label == "invalid"
    assert (refund["nothing"].rationale or "").startswith(
        "returned None: a score's value is a number, a bool"
    )
    assert refund["explained"].rationale == "ticket 0 vs refund"
    with st.Store.open() as store:  # the failed evaluation is a false score on the span
        (stored,) = store.scores(e.items[0].run_id, name="picky")
        failed = StoreReader(store).rows(
            f"SELECT count(*) FROM scores s WHERE {experiments.failed_score_sql('s')}"
        )
    assert (stored.value, stored.label, stored.kind) == (False, "error", "boolean")
    assert failed[0][0] == 2 + 6  # picky's, nothing's
    with pytest.raises(EvaluationError, match="has no name to give its scores"):
        experiment("anonymous", "tickets", evaluators=[lambda output: True])
    with pytest.raises(EvaluationError, match="two evaluators are named 'picky'"):
        experiment("twice", "tickets", evaluators=[picky, picky])


@on_both
def test_a_step_that_raises_fails_its_item_only() -> None:
    items = _record(6)
    e = experiment("breaks", "tickets", classify_breaks)
    assert e.status == "completed"
    summary = e.summary()
    assert (summary["succeeded"], summary["failed"]) == (4, 2)
    assert summary["scores"]["exact"] == {"mean": 1.0, "count": 4, "errors": 0, "labels": {}}
    failed = [i for i in e.items if i.status == "failed"]
    assert [i.item_id for i in failed] == [items[3].item_id, items[4].item_id]
    assert failed[0].error is not None and failed[0].error["type"] == "RuntimeError"
    assert failed[0].error["message"] == "cannot read ticket 3:"
    assert failed[0].scores == {} and failed[0].output is None and failed[0].run_id
    experiment("fine", "tickets", classify)
    with st.Store.open() as store:
        assert store.run(failed[0].run_id).status == "failed"
        assert experiments.compare(store, "fine", "breaks").changed == [
            items[3].item_id,
            items[4].item_id,
        ]


@on_both
def test_llm_recorded_answers_from_the_recording_with_no_live_call() -> None:
    _record(6)
    recorded_calls = calls["model"]
    e = experiment("replayed", "tickets", llm="recorded", concurrency=3)
    assert calls["model"] == recorded_calls  # not one live call
    assert calls["classify"] == 6 + 6  # today's code ran
    assert e.summary()["scores"]["exact"]["mean"] == 1.0
    with st.Store.open() as store:
        run = store.run(e.items[0].run_id or "")
    (llm,) = [s for s in run.spans if s.kind == "llm"]
    assert llm.attributes["steptrace.replay.answer"] == "recorded"
    assert run.forked_from is None and run.replay_of is None
    live = experiment("live", "tickets")
    assert calls["model"] == recorded_calls + 6 and live.summary()["scores"]["exact"]["mean"] == 1.0


@on_both
def test_concurrency_8_gives_what_1_gives() -> None:
    _record()
    one = experiment("one", "tickets", classify_slowly, concurrency=1)
    assert active["most"] == 1
    eight = experiment("eight", "tickets", classify_slowly, concurrency=8)
    assert active["most"] > 1
    assert [(i.item_id, i.status, i.output) for i in one.items] == [
        (i.item_id, i.status, i.output) for i in eight.items
    ]
    assert one.summary()["scores"] == eight.summary()["scores"]
    with st.Store.open() as store:
        assert experiments.compare(store, "one", "eight").changed == []
        assert store.count_runs(tag="experiment:eight") == 20


@on_both
def test_from_step_forks_each_source_run_at_its_step() -> None:
    items = _record(4)
    before = calls["draft"]
    e = experiment("forked", "tickets", from_step=True)
    assert e.mode == "from-step" and e.target == "tests.test_experiments:triage"
    assert e.summary()["scores"]["exact"]["mean"] == 1.0
    assert calls["draft"] == before + 4  # the workflow ran on from the step
    with st.Store.open() as store:
        for item, done in zip(items, e.items, strict=True):
            run = store.run(done.run_id or "")
            assert run.forked_from == item.source_run_id and run.forked_at == "classify#0"
            assert run.tags == ["experiment:forked"] and run.workflow == "triage"
            assert run.output == f"[{item.reference['label']}] {item.input['text']}"
    with pytest.raises(EvaluationError, match="give no step"):
        experiment("both", "tickets", classify, from_step=True)


@st.step
async def aclassify(text: str) -> dict[str, str]:
    with _lock:
        active["now"] += 1
        active["most"] = max(active["most"], active["now"])
    await asyncio.sleep(0.01)
    with _lock:
        active["now"] -= 1
    return {"label": "refund" if "refund" in text else "question"}


@st.workflow
async def atriage(text: str) -> dict[str, str]:
    return await aclassify(text)


@on_both
def test_an_async_step_runs_as_tasks_on_one_loop() -> None:
    for text in TEXTS[:8]:
        asyncio.run(atriage(text))
    assert st.flush()
    with st.Store.open() as store:
        datasets.add(store, "async", "aclassify")
    active.update(now=0, most=0)
    e = experiment("async", "async", concurrency=4)
    assert e.target == "tests.test_experiments:aclassify"
    assert e.summary()["scores"]["exact"] == {"mean": 1.0, "count": 8, "errors": 0, "labels": {}}
    assert 1 < active["most"] <= 4


@on_both
def test_ctrl_c_leaves_the_experiment_interrupted_with_the_items_done() -> None:
    items = _record(8)
    with pytest.raises(KeyboardInterrupt):
        experiment("stopped", "tickets", classify_interrupted)
    with st.Store.open() as store:
        e = experiments.load(store, "stopped")
    assert e.status == "interrupted" and e.ended_at is not None
    assert [i.item_id for i in e.items] == [i.item_id for i in items[:4]]


@on_both
def test_requests_that_cannot_be_run_are_refused_before_anything_runs() -> None:
    items = _record(2)
    experiment("taken", "tickets")
    for name, kwargs, message in [
        ("taken", {}, "an experiment named 'taken' exists already"),
        ("compare", {}, "cannot be named 'compare'"),
        ("x", {"dataset": "nope"}, "no dataset named 'nope'"),
        ("x", {"concurrency": 0}, "concurrency must be a positive number"),
        ("x", {"llm": "maybe"}, "llm='maybe'"),
    ]:
        with pytest.raises(EvaluationError, match=message):
            experiment(name, **{"dataset": "tickets", **kwargs})
    with st.Store.open() as store:
        datasets.remove(store, "tickets", [i.item_id for i in items])
        with pytest.raises(EvaluationError, match="has no items"):
            experiment("empty", "tickets")
        assert [e.name for e in experiments.experiments(store)] == ["taken"]
        assert experiments.remove(store, "taken") == 2
        with pytest.raises(EvaluationError, match="no experiment named 'taken'"):
            experiments.load(store, "taken")


def test_command_line(capsys: pytest.CaptureFixture[str], store_path: Path) -> None:
    store_url = str(store_path)
    items = _record()
    experiment("A", "tickets")
    # `experiment NAME` records runs, then shuts the OpenTelemetry SDK down as a command
    # line does on exit: in a process of its own.
    proc = steptrace_cli(
        "experiment",
        "B",
        "--dataset",
        "tickets",
        "--step",
        "tests.test_experiments:classify_v2",
        "--evaluator",
        "exact",
        "-c",
        "4",
        "--json",
        store=store_url,
    )
    b = json.loads(proc.stdout)
    assert b["name"] == "B" and b["status"] == "completed" and b["mode"] == "step"
    assert b["params"] == {"concurrency": 4, "llm": "live"}
    assert b["target"] == "tests.test_experiments:classify_v2"
    assert b["summary"]["scores"]["exact"]["mean"] == 0.75
    assert [i["item_id"] for i in b["items"]] == [i.item_id for i in items]
    base = ["--store", store_url, "experiment"]
    code, out, _ = cli_in_process(capsys, *base, "compare", "A", "B", "--json")
    assert json.loads(out)["changed"] == [items[i].item_id for i in sorted(WRONG)]
    code, out, _ = cli_in_process(capsys, *base, "compare", "A", "B")
    assert code == 0 and "5 of 20 item(s) changed" in out
    assert re.search(r"exact +1\.000 \(20 scored\) +0\.750 \(20 scored\) +-0\.250\n", out)
    assert f"~ {items[2].item_id[:8]}  exact true → false" in out
    assert "~ output.label: question → other" in out
    code, out, _ = cli_in_process(capsys, *base, "list", "--json")
    assert [e["name"] for e in json.loads(out)] == ["B", "A"]
    code, out, _ = cli_in_process(capsys, *base, "show", "B")
    assert code == 0
    assert "experiment B  ✓ completed  20 item(s): 20 succeeded, 0 failed" in out
    assert "exact          0.750 (20 scored)" in out
    assert f"{items[2].item_id[:8]}  ✓ succeeded" in out and "exact=false" in out
    code, _, err = cli_in_process(capsys, *base, "show", "nope")
    assert code == 2 and err.startswith("error: no experiment named 'nope'")
    code, _, err = cli_in_process(capsys, *base, "compare", "--dataset", "tickets")
    assert code == 2 and "No such option: --dataset" in err
    for refused, message in [
        (["run", "compare", "--dataset", "tickets"], "cannot be named 'compare'"),
        (["B", "--dataset", "tickets"], "an experiment named 'B' exists already"),
        (["C", "--dataset", "nope"], "no dataset named 'nope'"),
        (["C", "--dataset", "tickets", "--step", "nomodule"], "'nomodule' is not MODULE:FUNC"),
    ]:
        code, _, err = cli_in_process(capsys, *base, *refused)
        assert code == 2 and message in err, err
    code, out, _ = cli_in_process(capsys, *base, "rm", "B")
    assert code == 0 and "removed experiment B (20 item(s))" in out
