"""Scores as data, on each engine: the upsert rule, the three kinds through
``Store.run`` and ``Store.scores``, score targets and what is refused, ``--where
score.NAME …`` filters, the aggregates (``Store.score_stats``, ``Store.distribution(step,
"score.NAME")``), and the commands (``score``, ``scores``, ``show``, ``runs --where``,
``dist``, ``stats --scores``, ``sql``, ``export --table scores``), run in this process.

The read-only tests share one store per engine (``scored``): four runs of ``triage``
with known scores; the tests that write scores take a fresh store (``store_url``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.cli import main
from steptrace.config import get_config
from steptrace.query import where as where_module
from steptrace.store import migrate_store
from tests.support.helpers import BACKENDS, reader_url, recording_into


@st.step
def classify(text: str) -> str:
    return "refund" if "refund" in text else "other"


@st.step
def draft(label: str) -> str:
    return f"about {label}"


@st.step
def part(n: int) -> int:
    return n


@st.workflow
def triage(text: str, parts: int = 0) -> str:
    for n in range(parts):
        part(n)
    return draft(classify(text))


@dataclass
class Scored:
    """Runs r0..r3 (started in that order) and their scores:

    - r0: run helpful 0.9 (human); classify correct true (code), tone polite (llm)
    - r1: run helpful 0.3 (human); classify correct false (code), tone rude (llm);
      draft helpful 0.2 (llm)
    - r2: run helpful 0.6 (human) and 0.1 (llm); classify correct true (code); draft
      tone rude (llm)
    - r3: none (it calls ``part`` 17 times: two of its span ids share a first digit)
    """

    url: str
    runs: list[str]
    """r0..r3."""


def _span(store: st.Store, run_id: str, step: str) -> str:
    return store.run(run_id).steps(step)[0].span_id


def _record_scored(url: str) -> Scored:
    with recording_into(url):
        runs = [st.run(triage, f"text {n}").run_id for n in range(3)]
        runs.append(st.run(triage, "text 3", parts=17).run_id)
    r0, r1, r2, _ = runs
    with st.Store.open(url) as store:
        c0, c1, c2 = (_span(store, r, "classify") for r in (r0, r1, r2))
        store.score(r0, "helpful", 0.9)
        store.score(f"{r0}/{c0}", "correct", True, source="code")
        store.score(c0, "tone", "polite", source="llm")
        store.score(r1, "helpful", 0.3)
        store.score(f"{r1}/{c1}", "correct", False, source="code")
        store.score(c1, "tone", "rude", source="llm", rationale="curt")
        store.score(_span(store, r1, "draft"), "helpful", 0.2, source="llm")
        store.score(r2, "helpful", 0.6)
        store.score(r2, "helpful", 0.1, source="llm")
        store.score(c2, "correct", True, source="code")
        store.score(_span(store, r2, "draft"), "tone", "rude", source="llm")
    return Scored(url, runs)


@pytest.fixture(scope="module", params=BACKENDS)
def scored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """``Scored``'s runs, recorded once per module and engine (only read)."""
    if request.param == "sqlite":
        return _record_scored(str(tmp_path_factory.mktemp("scores") / "scores.db"))
    return _record_scored(request.getfixturevalue("new_postgres_database")())


def _one_run(url: str, parts: int = 0) -> str:
    with recording_into(url):
        return st.run(triage, "a refund please", parts=parts).run_id


def _cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    """``steptrace --store URL ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["--store", url, *args])
    out, err = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err


# --- writing: the upsert rule, kinds, targets, refusals ---------------------------------------


def test_the_same_name_and_source_on_a_target_is_one_score_updated_in_place(
    store_url: str,
) -> None:
    run_id = _one_run(store_url)
    with st.Store.open(store_url) as store:
        first = store.score(run_id, "helpful", 0.4, rationale="meh")
        time.sleep(0.002)
        second = st.score(run_id[:10], "helpful", 0.8, label="good", store=store_url)
        assert store.scores(run_id) == [second]
        assert (second.value, second.label, second.rationale) == (0.8, "good", None)
        assert second.created_at == first.created_at
        assert second.updated_at > first.updated_at
        judged = store.score(run_id, "helpful", 0.5, source="llm")
        assert {(s.source, s.value) for s in store.scores(run_id)} == {
            ("human", 0.8),
            ("llm", 0.5),
        }
        assert store.scores(run_id, source="llm") == [judged]
        assert store.delete_score(run_id, "helpful") is True
        assert store.delete_score(run_id, "helpful") is False
        assert [s.source for s in store.scores(run_id)] == ["llm"]


def test_the_three_kinds_round_trip_through_the_run_and_the_scores(store_url: str) -> None:
    run_id = _one_run(store_url)
    with st.Store.open(store_url) as store:
        span_id = _span(store, run_id, "classify")
        store.score(run_id, "helpful", 0.75, label="good", rationale="clear")
        store.score(span_id, "correct", True, source="code")
        store.score(span_id, "tone", "polite", source="llm")
        record = store.run(run_id[:12])
        data = record.to_dict()
    assert set(data) == {*record.summary(), "logs", "spans", "scores"}
    by_name = {s["name"]: s for s in data["scores"]}
    assert [s["name"] for s in data["scores"]] == ["correct", "helpful", "tone"]
    helpful, correct, tone = by_name["helpful"], by_name["correct"], by_name["tone"]
    assert (helpful["kind"], helpful["value"], helpful["label"]) == ("numeric", 0.75, "good")
    assert (helpful["span_id"], helpful["step"], helpful["rationale"]) == (None, None, "clear")
    assert (correct["kind"], correct["value"], correct["label"]) == ("boolean", True, None)
    assert (tone["kind"], tone["value"], tone["label"]) == ("categorical", "polite", "polite")
    assert (correct["span_id"], correct["step"], tone["source"]) == (span_id, "classify", "llm")
    spans = {s["name"]: s for s in data["spans"]}
    assert [s["name"] for s in spans["classify"]["scores"]] == ["correct", "tone"]
    assert spans["draft"]["scores"] == []
    assert set(spans["draft"]) >= {"span_id", "logs", "attributes", "scores"}
    with st.Store.open(store_url) as store:
        assert {s.name: s.value for s in store.scores(run_id, span_id="")} == {"helpful": 0.75}
        assert [s.to_dict() for s in store.scores(step="classify", name="correct")] == [correct]
        (read,) = store.read_runs([run_id])
    assert read.to_dict()["scores"] == data["scores"]


def test_a_target_is_a_run_prefix_run_slash_span_or_a_span_id(store_url: str) -> None:
    run_id = _one_run(store_url, parts=17)
    with st.Store.open(store_url) as store:
        record = store.run(run_id)
        span_id = _span(store, run_id, "draft")
        assert store.target(run_id[:8]) == (run_id, None, None)
        assert store.target(f"{run_id[:8]}/{span_id[:6]}") == (run_id, span_id, "draft")
        assert store.target(span_id) == (run_id, span_id, "draft")
        # The root span is the run.
        assert store.target(record.span_id) == (run_id, None, None)
        assert store.target(f"{run_id}/{record.span_id}") == (run_id, None, None)
        firsts = [s.span_id[0] for s in record.spans]
        shared = next(c for c in firsts if firsts.count(c) > 1)  # 19 spans, 16 digits
        with pytest.raises(st.RunNotFound, match=r"span id prefix .* is ambiguous"):
            store.target(f"{run_id}/{shared}")
        with pytest.raises(st.RunNotFound, match="no run with id 'nope'"):
            store.score("nope", "helpful", 1)
        with pytest.raises(st.RunNotFound, match="has no span or step 'ffffffffffffffff0'"):
            store.score(f"{run_id}/ffffffffffffffff0", "helpful", 1)
        # A step key, or the name of a step the run ran once: its last attempt.
        assert store.target(f"{run_id[:8]}/draft") == (run_id, span_id, "draft")
        assert store.target(f"{run_id[:8]}/draft#0") == (run_id, span_id, "draft")
        (part3,) = [s.span_id for s in record.spans if s.step_key == "part#3"]
        assert store.target(f"{run_id}/part#3") == (run_id, part3, "part")
        with pytest.raises(st.RunNotFound, match=r"more than once: name the occurrence \(part#0, "):
            store.target(f"{run_id}/part")
        with pytest.raises(st.RunNotFound, match="has no span or step 'part#17'"):
            store.target(f"{run_id}/part#17")
        _one_run(store_url)
        with pytest.raises(st.RunNotFound, match="ambiguous"):
            store.score("", "helpful", 1)
        assert store.scores() == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (None, "a number, a bool or a category string"),
        ([1, 2], "a number, a bool or a category string"),
        ({"a": 1}, "a number, a bool or a category string"),
        ("  ", "non-empty"),
    ],
)
def test_a_value_that_cannot_be_a_score_is_refused(value: Any, message: str) -> None:
    run_id = _one_run(get_config().store_url())
    with st.Store.open() as store:
        with pytest.raises(ValueError, match=message):
            store.score(run_id, "helpful", value)
        with pytest.raises(ValueError, match="source is one of human, code, llm"):
            store.score(run_id, "helpful", 1, source="bot")
        with pytest.raises(ValueError, match="needs a name"):
            store.score(run_id, "", 1)
        assert store.scores() == []


# --- --where score.NAME ---------------------------------------------------------------------

WHERE_CASES: list[tuple[str | list[str], list[int]]] = [
    ("score.helpful < 0.5", [2, 1]),
    ("score.helpful <= 0.2", [2, 1]),  # r1 by its draft step's score
    ("score.helpful > 0.5", [2, 0]),
    ("score.helpful = 0.9", [0]),
    ("score.helpful != 0.9", [2, 1]),
    ("score.correct = true", [2, 0]),
    ("score.correct = false", [1]),
    ("score.correct != true", [1]),
    ('score.tone = "rude"', [2, 1]),  # r2 by its draft step's score
    ("score.tone = polite", [0]),
    ("score.tone != rude", [0]),
    ("score.tone ~ ud", [2, 1]),
    ("score.tone !~ ud", [0]),
    ("score.helpful exists", [2, 1, 0]),
    ("score.helpful missing", [3]),
    ("score.nothing exists", []),
    ("score.nothing < 1", []),
    (["score.correct = true", "score.helpful > 0.5"], [2, 0]),
    (["score.tone = rude", "classify.output = other"], [2, 1]),
]


@pytest.mark.parametrize("few", [True, False], ids=["few-scores", "many-scores"])
def test_where_score_chooses_the_runs_with_such_a_score(
    scored: Scored, few: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not few:  # every predicate checks run by run, as past FEW_SCORES matches
        monkeypatch.setattr(where_module, "FEW_SCORES", 1)
    with st.Store.open(scored.url) as store:
        for where, expected in WHERE_CASES:
            found = [r.run_id for r in store.runs(where=where)]
            assert found == [scored.runs[i] for i in expected], where
            assert store.count_runs(where=where) == len(expected), where
        page = store.runs(where="score.helpful exists", last=1, offset=1)
        assert [r.run_id for r in page] == [scored.runs[1]]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("score.helpful = null", "a score compares with a number, true/false or a label"),
        ("score.helpful = [1]", "a score compares with a number"),
        ("score.correct < true", "can only be compared with = or !="),
        ("score.helpful ~ 1", "~ needs a text value"),
        ("score.helpful <", "has no value"),
    ],
)
def test_a_malformed_score_predicate_is_a_query_error(where: str, message: str) -> None:
    with st.Store.open(str(_empty_store())) as store, pytest.raises(st.QueryError, match=message):
        store.runs(where=where)


def _empty_store() -> Path:
    url = Path(get_config().store_url())
    migrate_store(str(url))
    return url


# --- aggregates -----------------------------------------------------------------------------


def test_score_stats_per_step_and_name(scored: Scored) -> None:
    with st.Store.open(scored.url) as store:
        every = store.score_stats(last=None)
        window = store.score_stats(last=2)  # r3 and r2
        human = store.score_stats("triage", source="human")
        one = store.score_stats(step="classify", name="correct", last=None)
    keys = [(s["step"], s["name"], s["kind"], s["count"]) for s in every]
    assert keys == [
        (None, "helpful", "numeric", 4),
        ("classify", "correct", "boolean", 3),
        ("classify", "tone", "categorical", 2),
        ("draft", "helpful", "numeric", 1),
        ("draft", "tone", "categorical", 1),
    ]
    run_helpful, correct, tone, draft_helpful, _ = every
    assert run_helpful["mean"] == pytest.approx(0.475, abs=1e-12)
    assert run_helpful["labels"] == []
    assert correct["mean"] == pytest.approx(2 / 3, abs=1e-12)
    assert tone["mean"] is None
    assert tone["labels"] == [
        {"label": "polite", "count": 1, "share": 0.5},
        {"label": "rude", "count": 1, "share": 0.5},
    ]
    assert draft_helpful["mean"] == pytest.approx(0.2, abs=1e-12)
    assert [(s["step"], s["name"], s["count"]) for s in window] == [
        (None, "helpful", 2),
        ("classify", "correct", 1),
        ("draft", "tone", 1),
    ]
    assert window[0]["mean"] == pytest.approx(0.35, abs=1e-12)
    assert [(s["step"], s["count"]) for s in human] == [(None, 3)]
    assert human[0]["mean"] == pytest.approx(0.6, abs=1e-12)
    assert one == [every[1]]


def test_the_distribution_of_a_score(scored: Scored) -> None:
    with st.Store.open(scored.url) as store:
        tone = store.distribution("classify", "score.tone")
        correct = store.distribution("classify", "score.correct", last=2)
        run_helpful = store.distribution("run", "score.helpful", last=2)
        human = store.score_distribution(None, "helpful", source="human")
        nothing = store.distribution("draft", "score.correct")
    assert tone == {
        "step": "classify",
        "field": "score.tone",
        "workflow": None,
        "last": 1000,
        "runs": 2,
        "occurrences": 2,
        "missing": 0,
        "values": [
            {"value": "polite", "count": 1, "share": 0.5},
            {"value": "rude", "count": 1, "share": 0.5},
        ],
        "numeric": None,
    }
    assert (correct["runs"], correct["values"]) == (
        2,
        [{"value": False, "count": 1, "share": 0.5}, {"value": True, "count": 1, "share": 0.5}],
    )
    # The last 2 runs with a run-level helpful are r2 (0.6 and 0.1) and r1 (0.3).
    assert (run_helpful["step"], run_helpful["runs"], run_helpful["occurrences"]) == ("run", 2, 3)
    numeric = run_helpful["numeric"]
    assert numeric is not None
    assert (numeric["count"], numeric["min"], numeric["p50"], numeric["max"]) == (3, 0.1, 0.3, 0.6)
    assert numeric["mean"] == pytest.approx(1 / 3, abs=1e-12)
    assert [v["value"] for v in human["values"]] == [0.3, 0.6, 0.9]
    assert (nothing["runs"], nothing["occurrences"], nothing["values"]) == (0, 0, [])


# --- the command line -------------------------------------------------------------------------


def test_score_and_scores_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # A SQLite file: the commands write and read through the Store API tested above on
    # both engines.
    store_url = get_config().store_url()
    run_id = _one_run(store_url)
    with st.Store.open(store_url) as store:
        span_id = _span(store, run_id, "classify")
    code, out, _ = _cli(capsys, store_url, "score", run_id[:8], "helpful", "0.5", "--json")
    assert code == 0
    assert {k: json.loads(out)[k] for k in ("run_id", "span_id", "kind", "value")} == {
        "run_id": run_id,
        "span_id": None,
        "kind": "numeric",
        "value": 0.5,
    }
    code, out, _ = _cli(
        capsys, store_url, "score", span_id, "correct", "TRUE", "--source", "code",
        "--rationale", "matches the reference",
    )  # fmt: skip
    assert code == 0
    assert out.startswith("scored classify (") and "correct = true (code)" in out
    _cli(capsys, store_url, "score", f"{run_id}/{span_id}", "tone", "rude", "--source", "llm")
    _cli(capsys, store_url, "score", run_id, "grade", "3", "--type", "categorical")
    code, out, _ = _cli(capsys, store_url, "scores", run_id[:8], "--json")
    listed = {s["name"]: (s["kind"], s["value"], s["source"]) for s in json.loads(out)}
    assert listed == {
        "helpful": ("numeric", 0.5, "human"),
        "correct": ("boolean", True, "code"),
        "tone": ("categorical", "rude", "llm"),
        "grade": ("categorical", "3", "human"),
    }
    code, out, _ = _cli(capsys, store_url, "scores", "--step", "classify", "--format", "csv")
    lines = out.splitlines()
    assert lines[0].startswith("run_id,span_id,step,name,kind,value,label,rationale,source")
    assert len(lines) == 3
    code, out, _ = _cli(capsys, store_url, "scores", "--name", "tone")
    assert code == 0 and "rude" in out and "helpful" not in out
    # --delete takes back the score of one source.
    code, out, _ = _cli(capsys, store_url, "score", run_id, "grade", "--delete")
    assert (code, out.strip()) == (0, f"deleted the human score 'grade' on run {run_id[:8]}")
    code, _, err = _cli(capsys, store_url, "score", run_id, "grade", "--delete")
    assert (code, err.strip()) == (1, f"error: no human score 'grade' on run {run_id[:8]}")
    code, out, _ = _cli(
        capsys, store_url, "score", span_id, "tone", "--delete", "--source", "llm", "--json"
    )
    assert json.loads(out)["deleted"] is True


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("helpful", "nan"), 2, "must be a finite number, not 'nan'"),
        (("helpful", "1e999"), 2, "must be a finite number"),
        (("helpful", "x", "--type", "numeric"), 2, "a numeric score is a number, not 'x'"),
        (("helpful", "2", "--type", "boolean"), 2, "a boolean score is true or false"),
        (("tone", "rude", "--label", "nice"), 2, "a categorical score's value is its label"),
        (("helpful",), 2, "give a VALUE"),
        (("helpful", "1", "--delete"), 2, "--delete takes TARGET and NAME"),
    ],
)
def test_score_command_refuses_a_bad_value_with_exit_code_2(
    args: tuple[str, ...], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = get_config().store_url()
    run_id = _one_run(url)
    got, out, err = _cli(capsys, url, "score", run_id, *args)
    assert (got, out) == (code, "")
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    with st.Store.open(url) as store:
        assert store.scores() == []


def test_score_command_on_an_unknown_target_exits_with_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = get_config().store_url()
    run_id = _one_run(url)
    code, _, err = _cli(capsys, url, "score", "0000nope", "helpful", "1")
    assert (code, err.strip()) == (1, f"error: no run with id '0000nope' in {url}")
    code, _, err = _cli(capsys, url, "score", f"{run_id}/zz", "helpful", "1")
    assert code == 1 and "has no span or step 'zz'" in err


def test_show_prints_the_scores_of_the_run_and_of_each_step(
    scored: Scored, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    r1 = scored.runs[1]
    code, out, _ = _cli(capsys, scored.url, "show", r1)
    assert code == 0
    lines = [line.strip("│├└─ ") for line in out.splitlines()]
    run_score = lines.index("score helpful = 0.3 (human)")
    classify_at = next(i for i, line in enumerate(lines) if line.startswith("✓ step classify"))
    draft_at = next(i for i, line in enumerate(lines) if line.startswith("✓ step draft"))
    assert run_score < lines.index('input {"text":"text 1","parts":0}') < classify_at
    assert lines[classify_at + 1 : classify_at + 3] == [
        "score correct = false (code)",
        "score tone = rude (llm) — curt",
    ]
    assert lines[draft_at + 1] == "score helpful = 0.2 (llm)"
    code, out, _ = _cli(capsys, scored.url, "show", r1, "--json")
    data = json.loads(out)
    assert [(s["name"], s["source"]) for s in data["scores"]] == [
        ("correct", "code"),
        ("helpful", "human"),
        ("helpful", "llm"),
        ("tone", "llm"),
    ]


def test_runs_dist_and_stats_commands_read_scores(
    scored: Scored, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, scored.url, "runs", "--where", "score.tone = rude", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [scored.runs[2], scored.runs[1]]
    code, out, _ = _cli(capsys, scored.url, "dist", "classify", "score.correct", "--json")
    assert json.loads(out)["values"] == [
        {"value": True, "count": 2, "share": 2 / 3},
        {"value": False, "count": 1, "share": 1 / 3},
    ]
    code, out, _ = _cli(capsys, scored.url, "dist", "run", "score.helpful")
    assert code == 0
    assert (
        out.splitlines()[0]
        == "run.score.helpful  over all 3 runs with this score (1,000 asked for), 4 scores"
    )
    assert "numeric n=4  min 0.1  p50 0.45  p95 0.855  max 0.9  mean 0.475" in out
    code, _, err = _cli(capsys, scored.url, "dist", "nosuchstep", "score.correct")
    assert code == 1 and "no step named 'nosuchstep'" in err
    code, out, _ = _cli(capsys, scored.url, "stats", "--scores", "--json")
    data = json.loads(out)
    assert {s["step"] for s in data["steps"]} == {"classify", "draft", "part"}
    assert [(s["step"], s["name"], s["count"]) for s in data["scores"]][:2] == [
        (None, "helpful", 4),
        ("classify", "correct", 3),
    ]
    code, out, _ = _cli(capsys, scored.url, "stats", "--scores")
    assert code == 0 and "scores given in the same runs" in out
    assert any(
        line.split()[:4] == ["classify", "correct", "boolean", "3"] for line in out.splitlines()
    )
    code, out, _ = _cli(capsys, scored.url, "stats", "--scores", "--format", "csv")
    assert out.splitlines()[0] == "step,name,kind,count,mean,labels"


def test_scores_are_tables_for_sql_and_export(
    scored: Scored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    query = (
        "SELECT name, source, count(*) AS n FROM scores GROUP BY name, source ORDER BY name, source"
    )
    code, out, err = _cli(capsys, reader_url(scored.url), "sql", query, "--json")
    assert code == 0, err
    assert json.loads(out) == [
        {"name": "correct", "source": "code", "n": 3},
        {"name": "helpful", "source": "human", "n": 3},
        {"name": "helpful", "source": "llm", "n": 2},
        {"name": "tone", "source": "llm", "n": 3},
    ]
    with st.Store.open(reader_url(scored.url)) as store:
        rows = store.sql("SELECT kind, value, label FROM scores WHERE name = 'tone' ORDER BY label")
    assert rows == [
        {"kind": "categorical", "value": None, "label": "polite"},
        {"kind": "categorical", "value": None, "label": "rude"},
        {"kind": "categorical", "value": None, "label": "rude"},
    ]
    target = tmp_path / "scores.jsonl"
    code, _, err = _cli(
        capsys, scored.url, "export", "--table", "scores", "--where", "score.correct = false",
        "--output", str(target),
    )  # fmt: skip
    assert code == 0 and err.strip() == f"wrote 4 row(s) of scores to {target}"
    exported = [json.loads(line) for line in target.read_text().splitlines()]
    assert {r["run_id"] for r in exported} == {scored.runs[1]}
    assert list(exported[0])[:6] == ["run_id", "score_id", "span_id", "step", "name", "kind"]
    with st.Store.open(scored.url) as store:
        assert store.export(tmp_path / "x.csv", "csv", "scores", step="draft") == 2
