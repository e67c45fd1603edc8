"""Datasets built from recorded step occurrences (``steptrace.evals.datasets`` and
``steptrace dataset …``): filters, ``--last``, adding an occurrence once, skipping
values that were not recorded whole, listing, showing, removing, exporting and
correcting items — on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

import steptrace as st
from steptrace.errors import EvaluationError, QueryError
from steptrace.evals import datasets
from tests.support.helpers import cli_in_process

on_both = pytest.mark.usefixtures("store_url")
"""A SQLite file, then PostgreSQL (the command-line tests read a SQLite file only: the
API they go through is tested on both)."""


def _answer(messages: list[dict[str, Any]], **params: Any) -> str:
    text = messages[-1]["content"]
    return "billing" if "invoice" in text else "other"


st.llm.script("datasets", _answer)


@st.step
def classify(text: str) -> str:
    if "broken" in text:
        raise ValueError("cannot classify")
    return st.llm.chat(model="scripted:datasets", messages=[{"role": "user", "content": text}]).text


@st.step
def route(label: str) -> str:
    return f"queue-{label}"


@st.workflow
def triage(text: str) -> str:
    return route(classify(text))


@st.workflow
def intake(text: str) -> str:
    return classify(text)


@st.step
def login(user: str, password: str) -> str:
    return f"session for {user}"


@st.step
def opaque(n: int) -> Any:
    return object()  # stored as a placeholder


@st.workflow
def awkward(n: int) -> str:
    login("ann", "hunter2-very-secret")
    opaque(n)
    return "done"


TEXTS = ["invoice 1", "hello 2", "invoice 3", "hello 4", "invoice 5", "hello 6"]


def _record() -> None:
    for text in TEXTS:
        triage(text)
    intake("invoice 7")
    st.run(triage, "broken 8")
    assert st.flush()


@on_both
def test_add_takes_final_succeeded_attempts_oldest_first() -> None:
    _record()
    with st.Store.open() as store:
        added = datasets.add(store, "all", "classify")
        assert (added.matched, len(added.added), added.existing, added.skipped) == (7, 7, 0, [])
        items = datasets.items(store, "all")
    assert [i.input for i in items] == [{"text": t} for t in [*TEXTS, "invoice 7"]]
    assert [i.reference for i in items] == [
        "billing",
        "other",
        "billing",
        "other",
        "billing",
        "other",
        "billing",
    ]
    assert [i.recorded_output for i in items] == [i.reference for i in items]
    assert [i.seq for i in items] == list(range(1, 8))
    assert all(i.step == "classify" and i.step_key == "classify#0" for i in items)
    assert [i.item_id for i in items] == [
        datasets.item_id("all", i.source_span_id or "") for i in items
    ]
    assert all(len(i.item_id) == 16 and not i.corrected for i in items)


@on_both
def test_filters_on_the_step_itself_on_the_run_and_last() -> None:
    _record()
    with st.Store.open() as store:
        own = datasets.add(store, "billing", "classify", where="classify.output = billing")
        assert len(own.added) == 4
        assert {i.reference for i in datasets.items(store, "billing")} == {"billing"}
        run_level = datasets.add(store, "r", "classify", where="run.input.text ~ hello")
        assert [i.input["text"] for i in datasets.items(store, "r")] == [
            "hello 2",
            "hello 4",
            "hello 6",
        ]
        other_step = datasets.add(
            store, "o", "classify", where="route.output = queue-other", workflow="triage"
        )
        assert len(other_step.added) == 3
        of_intake = datasets.add(store, "i", "classify", workflow="intake")
        assert [i.input["text"] for i in datasets.items(store, "i")] == ["invoice 7"]
        datasets.add(store, "last", "classify", last=2)
        assert [i.input["text"] for i in datasets.items(store, "last")] == ["hello 6", "invoice 7"]
        failed = datasets.add(store, "failures", "classify", status="failed")
        (item,) = datasets.items(store, "failures")
        assert item.input == {"text": "broken 8"} and item.reference is None
        anyway = datasets.add(store, "any", "classify", status="any")
        assert len(anyway.added) == 8
        with pytest.raises(QueryError):
            datasets.add(store, "bad", "classify", where="classify.output ~ 3")
    assert of_intake.matched == 1 and failed.matched == 1 and len(run_level.added) == 3


@on_both
def test_adding_the_same_occurrences_again_stores_them_once() -> None:
    _record()
    with st.Store.open() as store:
        first = datasets.add(store, "d", "classify", last=3)
        again = datasets.add(store, "d", "classify")
        assert (len(first.added), first.existing) == (3, 0)
        assert (again.matched, len(again.added), again.existing) == (7, 4, 3)
        items = datasets.items(store, "d")
        assert len(items) == 7 and len({i.source_span_id for i in items}) == 7
        assert [i.seq for i in items] == list(range(1, 8))
        assert datasets.dataset(store, "d").items == 7
        with pytest.raises(EvaluationError, match="holds occurrences of step 'classify'"):
            datasets.add(store, "d", "route")


@on_both
def test_placeholders_and_redacted_secrets_are_skipped_with_the_reason() -> None:
    awkward(1)
    assert st.flush()
    with st.Store.open() as store:
        secret = datasets.add(store, "logins", "login")
        placeholder = datasets.add(store, "opaque", "opaque")
        assert datasets.datasets(store) == []  # nothing added: no dataset made
    assert secret.added == [] and len(secret.skipped) == 1
    assert secret.skipped[0].reason == "its input cannot be used: a secret in it was redacted"
    assert placeholder.added == [] and len(placeholder.skipped) == 1
    assert placeholder.skipped[0].reason.startswith(
        "its output cannot be a reference: it was stored as a placeholder"
    )


@on_both
def test_runs_made_by_experiments_and_fork_copies_are_not_production() -> None:
    from steptrace.experimenting import experiment

    _record()
    with st.Store.open() as store:
        datasets.add(store, "d", "classify")
    experiment("again", "d")
    with st.Store.open() as store:
        source = store.runs(workflow="triage", status="succeeded", last=1)[0]
    st.fork(source.run_id, "route")  # its classify is a copy of the recorded one
    assert st.flush()
    with st.Store.open() as store:
        again = datasets.add(store, "d", "classify", status="any")
        assert (again.matched, len(again.added)) == (8, 1)  # the failed one only


@on_both
def test_correct_rm_and_errors() -> None:
    _record()
    with st.Store.open() as store:
        datasets.add(store, "d", "classify")
        items = datasets.items(store, "d")
        fixed = datasets.correct(store, "d", items[1].item_id[:6], {"label": "x"}, by="ann")
        assert fixed.reference == {"label": "x"} and fixed.recorded_output == "other"
        assert fixed.corrected_by == "ann" and fixed.corrected and fixed.corrected_at
        assert datasets.dataset(store, "d").corrected == 1
        with pytest.raises(EvaluationError, match="redacted"):
            datasets.correct(store, "d", items[1].item_id, {"password": "p"})
        with pytest.raises(EvaluationError, match="has no item 'zz'"):
            datasets.item(store, "d", "zz")
        assert datasets.remove(store, "d", [items[0].item_id, items[2].item_id[:8]]) == 2
        assert [i.item_id for i in datasets.items(store, "d")] == [
            i.item_id for i in items if i not in (items[0], items[2])
        ]
        assert datasets.remove(store, "d") == 5
        assert datasets.datasets(store) == []
        with pytest.raises(EvaluationError, match="no dataset named 'd'"):
            datasets.items(store, "d")
        with pytest.raises(EvaluationError, match="a non-empty string"):
            datasets.add(store, " ", "classify")


@on_both
def test_export_jsonl_and_json(tmp_path: Path) -> None:
    _record()
    with st.Store.open() as store:
        datasets.add(store, "d", "classify", last=2)
        buffer = io.BytesIO()
        assert datasets.export(store, "d", buffer) == 2
        lines = [orjson.loads(line) for line in buffer.getvalue().splitlines()]
        assert [line["input"] for line in lines] == [{"text": "hello 6"}, {"text": "invoice 7"}]
        assert set(lines[0]) >= {"item_id", "reference", "recorded_output", "source_run_id"}
        assert datasets.export(store, "d", tmp_path / "d.json", "json") == 2
        doc = json.loads((tmp_path / "d.json").read_text())
        assert doc["name"] == "d" and doc["step"] == "classify" and len(doc["items"]) == 2
        with pytest.raises(EvaluationError, match="unknown format"):
            datasets.export(store, "d", buffer, "csv")


def test_command_line(capsys: pytest.CaptureFixture[str], store_path: Path) -> None:
    _record()

    def dataset(*args: str) -> tuple[int, str, str]:
        return cli_in_process(capsys, "--store", str(store_path), "dataset", *args)

    code, out, _ = dataset(
        "add", "tickets", "--step", "classify", "--where", "classify.output = billing"
    )
    assert code == 0
    assert "added 4 item(s) to dataset tickets (0 already in it, 0 skipped" in out
    code, out, _ = dataset("add", "tickets", "--step", "classify", "--json")
    added = json.loads(out)
    assert (added["added"], added["existing"], added["skipped"]) == (3, 4, 0)
    code, out, _ = dataset("list", "--json")
    assert [(d["name"], d["step"], d["items"]) for d in json.loads(out)] == [
        ("tickets", "classify", 7)
    ]
    code, out, _ = dataset("show", "tickets", "--json")
    first = json.loads(out)["items"][0]["item_id"]
    code, out, _ = dataset(
        "correct", "tickets", first[:8], "--reference", '"refund"', "--by", "bob"
    )
    assert code == 0 and f"corrected {first[:8]} of dataset tickets" in out
    code, out, _ = dataset("show", "tickets")
    assert code == 0 and "7 item(s), 1 corrected" in out and "★" in out
    assert first[:8] in out and "refund" in out
    code, out, _ = dataset("export", "tickets")
    exported = [json.loads(line) for line in out.splitlines()]
    assert exported[0]["reference"] == "refund" and exported[0]["corrected_by"] == "bob"
    code, out, _ = dataset("rm", "tickets", first)
    assert code == 0 and out == "removed 1 item(s) from dataset tickets\n"
    code, _, err = dataset("correct", "tickets", first, "--reference", "{not json")
    assert code == 1 and "--reference is not valid JSON" in err
    code, _, err = dataset("add", "x", "--step", "nope")
    assert code == 1 and "no step named 'nope'" in err
    code, _, err = dataset("show", "nope")
    assert code == 2 and err.startswith("error: no dataset named 'nope'")
    code, out, _ = dataset("rm", "tickets")
    assert code == 0 and out == "removed dataset tickets (6 item(s))\n"
