"""Regression replay from Python (``steptrace.regression``): the verdict on each replay
of recorded runs after a code change, and what it reads them with (``Store.read_runs``,
``Store.runs(originals=True)``), on SQLite and PostgreSQL.

The workflows below are found again by their recorded entry point
(``tests.test_regression:…``); a "code change" is ``BEHAVIOUR``, which their steps
read, changed between recording and replaying.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import steptrace as st
import steptrace.store
from steptrace import regression
from steptrace.provenance import EntryPointError, load_entry_point
from steptrace.regression import Report, Verdict, replay_many, verdict

BEHAVIOUR: dict[str, Any] = {"refund_queue": "billing", "explode_on": None, "prompt": "{}"}

TEXTS = ("I want my money back", "where is my parcel", "money back now", "reset password", "hi")
REFUNDS = {0, 2}
"""The texts the model labels ``refund``."""


def _model(messages: list[dict[str, Any]], **params: Any) -> str:
    return "refund" if "money back" in messages[-1]["content"] else "question"


@st.step
def normalize(text: str) -> str:
    return " ".join(text.lower().split())


@st.step
def classify(text: str) -> str:
    prompt = BEHAVIOUR["prompt"].format(text)
    return st.llm.chat(
        model="scripted:regression", messages=[{"role": "user", "content": prompt}]
    ).text


@st.step
def route(label: str) -> dict[str, str]:
    if BEHAVIOUR["explode_on"] == label:
        raise RuntimeError(f"no route for {label}")
    return {"queue": BEHAVIOUR["refund_queue"] if label == "refund" else "support"}


@st.workflow
def triage(text: str) -> str:
    label = classify(normalize(text))
    return route(label)["queue"]


@st.workflow
async def atriage(text: str) -> str:
    label = classify(normalize(text))
    return route(label)["queue"]


@pytest.fixture(autouse=True)
def _behaviour(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in list(BEHAVIOUR.items()):
        monkeypatch.setitem(BEHAVIOUR, key, value)
    st.llm.script("regression", _model)
    yield


def record(store_url: str) -> list[str]:
    """The five runs of ``triage``, oldest first."""
    st.configure(store=store_url)
    ids = [st.run(triage, text).run_id for text in TEXTS]
    assert st.flush()
    return ids


def by_source(report: Report) -> dict[str, Verdict]:
    return {v.source_run_id: v for v in report.verdicts}


# --- reading many runs --------------------------------------------------------------------


def test_read_runs_reads_what_run_reads_in_the_order_given(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = record(store_url)
    BEHAVIOUR["explode_on"] = "question"
    failed = st.run(triage, "oops")  # an error on a step
    assert failed.status == "failed"
    wanted = [ids[3], failed.run_id, ids[0], "0" * 32, ids[3]]
    monkeypatch.setattr(steptrace.store, "READ_RUNS_BATCH", 2)  # several batches
    with st.Store.open(store_url) as store:
        many = store.read_runs(wanted)
        one_by_one = [store.run(r) for r in (ids[3], failed.run_id, ids[0])]
    assert [r.run_id for r in many] == [ids[3], failed.run_id, ids[0]]  # unknown, repeat: out
    assert [r.to_dict() for r in many] == [r.to_dict() for r in one_by_one]
    llm = [s for s in many[0].spans if s.kind == "llm"]
    assert llm and llm[0].llm is not None and llm[0].llm["response"] == "question"
    assert many[1].spans[-1].error is not None


def test_runs_can_leave_out_forks_and_replays(store_url: str) -> None:
    ids = record(store_url)
    forked = st.fork(ids[0], "route")
    replayed = st.replay(ids[1])
    assert forked.status == replayed.status == "succeeded"
    with st.Store.open(store_url) as store:
        everything = {r.run_id for r in store.runs("triage", last=100)}
        originals = [r.run_id for r in store.runs("triage", last=100, originals=True)]
        assert store.count_runs("triage", originals=True) == 5
    assert {forked.run_id, replayed.run_id} <= everything
    assert originals == ids[::-1]


# --- verdicts -------------------------------------------------------------------------------


def test_a_code_change_is_reported_at_the_first_step_it_changes(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = record(store_url)
    BEHAVIOUR["refund_queue"] = "refunds"
    monkeypatch.setattr(regression, "BATCH_RUNS", 2)  # three batches
    seen: list[Verdict] = []
    report = replay_many("triage", last=10, on_verdict=seen.append)
    assert [v.source_run_id for v in report.verdicts] == ids[::-1]  # newest first
    assert seen == report.verdicts
    verdicts = by_source(report)
    for i, run_id in enumerate(ids):
        v = verdicts[run_id]
        assert v.llm_recorded == 1 and v.llm_live == 0 and v.unmatched == []
        if i in REFUNDS:
            assert (v.verdict, v.step) == ("changed", "route#0")
            assert v.changes == [
                {"path": "output.queue", "change": "changed", "a": "billing", "b": "refunds"}
            ]
        else:
            assert (v.verdict, v.step, v.changes) == ("identical", None, [])
    assert report.summary() == {
        "runs": 5,
        "identical": 3,
        "changed": 2,
        "diverged": 0,
        "failed": 0,
        "skipped": 0,
        "changed_at": {"route#0": 2},
    }
    assert (
        report.summary_line() == "3 identical, 2 changed (at step route#0: 2), 0 diverged, 0 failed"
    )
    assert not report.ok
    # The replays are runs of triage too, never replayed in turn.
    BEHAVIOUR["refund_queue"] = "billing"
    again = replay_many("triage", last=10)
    assert [v.source_run_id for v in again.verdicts] == ids[::-1]
    assert again.ok and again.summary()["identical"] == 5


def test_failed_and_diverged_replays(store_url: str) -> None:
    ids = record(store_url)
    BEHAVIOUR["explode_on"] = "refund"
    report = replay_many("triage", last=5, where="route.output.queue = billing")
    assert {v.source_run_id for v in report.verdicts} == {ids[i] for i in REFUNDS}
    for v in report.verdicts:
        assert (v.verdict, v.step) == ("failed", "route#0")
        assert v.message == "RuntimeError: no route for refund"
        assert v.replay_run_id is not None
    # A prompt that no longer matches the recording: live and flagged, or under strict a
    # divergence.
    BEHAVIOUR["explode_on"] = None
    BEHAVIOUR["prompt"] = "Classify: {}"
    loose = replay_many("triage", last=1)
    (v,) = loose.verdicts
    # the prompt is the change under test; the model's answer, and every output, stayed
    assert (v.verdict, v.step) == ("identical", None)
    assert v.llm_live == 1 and v.llm_recorded == 0
    assert v.unmatched == [{"kind": "llm", "at": "classify#0", "reason": "the prompt changed"}]
    strict = replay_many("triage", last=2, strict=True)
    assert [(v.verdict, v.step) for v in strict.verdicts] == [("diverged", "classify#0")] * 2
    assert all("ReplayMismatch" in (v.message or "") for v in strict.verdicts)
    assert strict.summary_line() == "0 identical, 0 changed, 2 diverged, 0 failed"


def test_a_run_that_cannot_be_replayed_is_skipped_not_failed(store_url: str) -> None:
    st.configure(store=store_url)
    plain = st.run(triage, "where is my parcel")
    secret = st.run(triage, "my key is sk-live-0123456789abcdef0123456789abcdef, refund it")
    assert plain.status == secret.status == "succeeded"
    report = replay_many("triage", last=2)
    verdicts = by_source(report)
    assert verdicts[plain.run_id].verdict == "identical"
    skipped = verdicts[secret.run_id]
    assert (skipped.verdict, skipped.replay_run_id) == ("skipped", None)
    assert "a secret in it was redacted" in (skipped.message or "")
    assert report.summary_line() == "1 identical, 0 changed, 0 diverged, 0 failed, 1 skipped"
    assert report.ok  # counted, not failed
    only_skipped = replay_many("triage", last=1)  # the newest: the one with the secret
    assert [v.verdict for v in only_skipped.verdicts] == ["skipped"] and not only_skipped.ok


def test_a_failure_the_source_had_too_is_identical(store_url: str) -> None:
    st.configure(store=store_url)
    BEHAVIOUR["explode_on"] = "question"
    source = st.run(triage, "where is my parcel")
    assert source.status == "failed"
    replayed = st.replay(source.run_id)
    with st.Store.open(store_url) as store:
        v = verdict(store.run(source.run_id), store.run(replayed.run_id), replayed.exception)
    assert (v.verdict, v.message) == ("identical", None)
    # replayed from a copy of the workflow's module, the error's class lives elsewhere
    with st.Store.open(store_url) as store:
        moved = store.run(replayed.run_id)
    for error in [moved.error, *(s.error for s in moved.spans if s.error)]:
        assert error is not None
        error["module"] = "a_copy_of_the_module"
    with st.Store.open(store_url) as store:
        assert verdict(store.run(source.run_id), moved, replayed.exception).verdict == "identical"
    BEHAVIOUR["explode_on"] = None  # now it succeeds: the run changed
    report = replay_many("triage", status="failed")
    (changed,) = report.verdicts
    assert (changed.verdict, changed.step) == ("changed", "route#0")
    assert changed.changes == [
        {"path": "status", "change": "changed", "a": "failed", "b": "succeeded"},
        {"path": "output", "change": "changed", "a": None, "b": {"queue": "support"}},
        {
            "path": "error",
            "change": "changed",
            "a": {"type": "RuntimeError", "module": "builtins", "message": "no route for question"},
            "b": None,
        },
    ]


def test_replay_many_replays_an_async_workflow_and_takes_the_workflow_given() -> None:
    ids = [st.run(triage, text).run_id for text in TEXTS[:2]]
    import asyncio

    asyncio.run(st.arun(atriage, TEXTS[0]))
    report = replay_many("atriage")
    assert [v.verdict for v in report.verdicts] == ["identical"]
    # The workflow given replaces the recorded entry point; it must be a workflow of
    # the runs' name.
    BEHAVIOUR["refund_queue"] = "refunds"
    given = replay_many(triage)
    assert [v.source_run_id for v in given.verdicts] == ids[::-1]
    assert [v.verdict for v in given.verdicts] == ["identical", "changed"]
    with pytest.raises(st.ReentryError, match=r"not a @steptrace\.workflow"):
        replay_many(normalize)


def test_an_entry_point_that_cannot_be_imported_says_to_give_it() -> None:
    with pytest.raises(EntryPointError, match="--entry module:function"):
        load_entry_point("__main__:triage")
    with pytest.raises(EntryPointError, match="--entry module:function"):
        load_entry_point("tests.test_regression:renamed")


def test_the_steps_a_fork_reused_are_the_same_in_its_diff() -> None:
    source = st.run(triage, TEXTS[0])
    fork = st.fork(source.run_id, "route")
    steps = {s["key"]: s for s in fork.diff()["steps"]}
    # classify#0 is a copy of the recorded attempt, without the LLM call it made.
    with st.Store.open() as store:
        copy = store.run(fork.run_id).steps("classify")[0]
    assert "steptrace.reused_from" in copy.attributes
    assert {key: s["changed"] for key, s in steps.items()} == {
        "normalize#0": False,
        "classify#0": False,
        "route#0": False,
    }
