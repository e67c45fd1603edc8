"""Scores in the UI, against a real ``steptrace ui`` over the runs of
``support/score_data.py``: the API (a run's scores, the score names, the score columns
of a page of runs) on each engine, and in Chromium the run's scores under its header,
the badges of scored spans, a span's scores in its detail with the link to the judge's
run, and score columns in the runs table, filled by one request for the page."""

from __future__ import annotations

import json
import shlex
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import steptrace as st
from tests.support import score_data
from tests.support.helpers import recording_into, screenshot
from tests.support.score_data import RATIONALE, Scored
from tests.support.ui_server import UIServer, data_and_api, start_ui

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """The scored runs, in a SQLite store (the browser tests' server)."""
    return score_data.record(tmp_path_factory.mktemp("ui-scores") / "scores.db")


@pytest.fixture(scope="module")
def scores_ui(scored: Scored) -> Iterator[UIServer]:
    server = start_ui(scored.url)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scores_api(request: pytest.FixtureRequest) -> Iterator[tuple[Scored, httpx.Client]]:
    """The scored runs and a client of a UI over them, on each engine."""
    yield from data_and_api(request, "scored", "scores_ui", score_data.record)


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)


# --- the API --------------------------------------------------------------------------


def test_a_run_answers_with_its_scores_and_its_spans(
    scores_api: tuple[Scored, httpx.Client],
) -> None:
    runs, api = scores_api
    body = api.get(f"/api/v1/runs/{runs.graded[:10]}").json()
    with st.Store.open(runs.url) as store:
        expected = [s.to_dict() for s in store.scores(runs.graded)]
    assert body["scores"] == json.loads(json.dumps(expected))
    first, second = runs.spans(runs.graded)
    by_name = {s["name"]: s for s in body["scores"]}
    assert set(by_name) == {"accuracy", "relevance", "tone"}
    accuracy, relevance, tone = by_name["accuracy"], by_name["relevance"], by_name["tone"]
    assert (accuracy["span_id"], accuracy["value"], accuracy["source"]) == (None, 0.9, "human")
    assert accuracy["rationale"] == RATIONALE
    assert (relevance["span_id"], relevance["step"], relevance["value"]) == (first, "answer", 0.5)
    assert (tone["span_id"], tone["kind"], tone["value"], tone["label"]) == (
        second,
        "categorical",
        "polite",
        "polite",
    )
    assert (tone["source"], tone["judge_run_id"]) == ("llm", runs.judge)
    assert api.get(f"/api/v1/runs/{runs.plain}").json()["scores"] == []


def test_the_score_names_and_the_score_columns_of_a_page(
    scores_api: tuple[Scored, httpx.Client],
) -> None:
    runs, api = scores_api
    assert api.get("/api/v1/scores/names").json() == ["accuracy", "passed", "relevance", "tone"]
    ids = [runs.graded, runs.disputed, runs.by_spans, runs.checked, runs.plain]
    params = [("run", i) for i in ids] + [("name", n) for n in ("accuracy", "passed", "tone")]
    cells = api.get("/api/v1/scores/columns", params=params).json()
    assert list(cells) == ids

    def cell(of: str, kind: str, value: Any, label: Any, source: Any, count: int) -> Any:
        return {
            "of": of,
            "kind": kind,
            "value": value,
            "label": label,
            "source": source,
            "count": count,
        }

    assert cells[runs.graded] == {
        "accuracy": cell("run", "numeric", 0.9, None, "human", 1),
        "passed": None,
        "tone": cell("spans", "categorical", None, "polite", None, 1),
    }
    # Two sources scored the run: the judge's (llm) shows before the check's (code).
    assert cells[runs.disputed]["accuracy"] == cell("run", "numeric", 0.6, None, "llm", 1)
    # No run-level score: the mean of its two spans' (1 and 0.5).
    assert cells[runs.by_spans]["accuracy"] == cell("spans", "numeric", 0.75, None, None, 2)
    assert cells[runs.checked] == {
        "accuracy": None,
        "passed": cell("spans", "boolean", 0.5, None, None, 2),
        "tone": None,
    }
    assert cells[runs.plain] == {"accuracy": None, "passed": None, "tone": None}


@pytest.mark.parametrize(
    "query",
    [
        "name=accuracy",  # no run
        "run=x",  # no name
        "run=x&" + "&".join(f"name=n{i}" for i in range(21)),  # more names than columns
        "&".join(f"run=r{i}" for i in range(201)) + "&name=accuracy",  # more than a page
    ],
)
def test_score_columns_refuse_what_is_out_of_bounds(
    scores_api: tuple[Scored, httpx.Client], query: str
) -> None:
    _, api = scores_api
    response = api.get(f"/api/v1/scores/columns?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"


# --- the browser ----------------------------------------------------------------------


def test_the_run_page_shows_the_scores_of_the_run_and_of_each_span(
    page: Any, scores_ui: UIServer, scored: Scored, tmp_path: Path
) -> None:
    first, second = scored.spans(scored.graded)
    with st.Store.open(scored.url) as store:
        root = store.run(scored.graded).span_id
    page.goto(f"{scores_ui.url}/runs/{scored.graded}")
    _ready(page)
    # The run's own score, under the header: exactly what was given.
    row = page.locator("#run-score-table tr[data-score='accuracy']")
    cells = row.locator("td").all_inner_texts()
    assert cells[:4] == ["accuracy", "0.9", "human", RATIONALE]  # markup shown as text
    assert page.locator("#run-score-table tbody tr").count() == 1
    assert "1 on the run, 2 on its spans" in page.locator("#run-scores").inner_text()
    # A badge on each scored row of the tree, none on the others.
    badges = page.eval_on_selector_all(
        ".wf-row .pill.scored",
        "bs => bs.map(b => [b.closest('.wf-row').dataset.span, b.textContent])",
    )
    assert badges == [
        [root, "accuracy 0.9"],
        [first, "relevance 0.5"],
        [second, "tone polite"],
    ]
    # A span's scores in its detail; the judge's score links to the judge's run.
    page.click(f".wf-row[data-span='{second}']")
    page.wait_for_selector("#span-scores", timeout=TIMEOUT_MS)
    tone = page.locator("#span-scores tr[data-score='tone']").locator("td").all_inner_texts()
    assert tone[:3] == ["tone", "polite", f"llm · judge run {scored.judge[:8]}"]
    assert page.locator("#span-scores tbody tr").count() == 1
    # "Score this": the command and the Python call that give the span a score.
    page.click("#score-toggle")
    page.fill("#score-name", "correct")
    page.fill("#score-value", "false")
    page.fill("#score-rationale", "it's rude")
    target = f"{scored.graded}/{second}"
    command = page.locator("#score-command").text_content()
    assert command == f"steptrace score {target} correct false --rationale 'it'\\''s rude'"
    assert shlex.split(command)[2:] == [target, "correct", "false", "--rationale", "it's rude"]
    python = page.locator("#score-python").text_content()
    assert python == f'st.score("{target}", "correct", False, rationale="it\'s rude")'
    screenshot(page, "run-scores.png")
    # The call does what it says, on a copy of the store.
    copy = tmp_path / "copy.db"
    with sqlite3.connect(scored.url) as source, sqlite3.connect(copy) as dest:
        source.backup(dest)
    with recording_into(str(copy)):
        given = eval(python, {"st": st})  # the page's text, run as Python
    assert (given.run_id, given.span_id, given.name, given.value) == (
        scored.graded,
        second,
        "correct",
        False,
    )
    assert (given.rationale, given.source) == ("it's rude", "human")
    page.fill("#score-value", " ")
    assert page.locator("#score-error").text_content().startswith("give a value")
    assert page.locator("#score-command").is_hidden()
    page.click(f".wf-row[data-span='{first}']")
    page.wait_for_selector("#span-scores tr[data-score='relevance']", timeout=TIMEOUT_MS)
    relevance = page.locator("#span-scores tr[data-score='relevance'] td").all_inner_texts()
    assert relevance[:3] == ["relevance", "0.5", "code"]
    page.click(f".wf-row[data-span='{second}']")
    page.click("#span-scores a.judge-link")
    page.wait_for_url(f"**/runs/{scored.judge}", timeout=TIMEOUT_MS)
    _ready(page)
    assert page.locator("h1").inner_text().startswith("judge")


def test_score_columns_in_the_runs_table_come_with_one_request(
    page: Any, scores_ui: UIServer, scored: Scored
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/" in r.url else None)
    page.goto(f"{scores_ui.url}/?workflow=qa&score=accuracy&score=passed")
    _ready(page)
    page.wait_for_selector("#runs td.score-cell:not(:text-is('…'))", timeout=TIMEOUT_MS)

    def column(name: str) -> dict[str, str]:
        pairs = page.eval_on_selector_all(
            f"#runs tbody tr[data-run] td.score-cell[data-score='{name}']",
            "tds => tds.map(td => [td.closest('tr').dataset.run, td.textContent])",
        )
        return dict(pairs)

    assert column("accuracy") == {
        scored.graded: "0.9",
        scored.disputed: "0.6",
        scored.by_spans: "0.75",
        scored.checked: "–",
        scored.plain: "–",
    }
    assert column("passed") == {
        scored.graded: "–",
        scored.disputed: "–",
        scored.by_spans: "–",
        scored.checked: "50% pass",
        scored.plain: "–",
    }
    heads = page.eval_on_selector_all("#runs th.score-col", "ths => ths.map(t => t.dataset.score)")
    assert heads == ["accuracy", "passed"]
    # One request for the whole page: every shown run, every column.
    columns = [u for u in asked if "/api/v1/scores/columns" in u]
    assert len(columns) == 1, columns
    query = httpx.URL(columns[0]).params
    assert sorted(query.get_list("run")) == sorted(column("accuracy"))
    assert query.get_list("name") == ["accuracy", "passed"]
    assert not [u for u in asked if "/api/v1/runs/" in u]  # nothing asked run by run
    screenshot(page, "runs-score-columns.png")

    # The picker adds a column of a name in the store; a header's button removes one.
    offered = page.eval_on_selector_all("#score-column option", "os => os.map(o => o.value)")
    assert offered == ["", "relevance", "tone"]
    page.select_option("#score-column", "tone")
    page.wait_for_selector("#runs th.score-col[data-score='tone']", timeout=TIMEOUT_MS)
    page.wait_for_selector("#runs td.score-cell[data-score='tone']:text-is('polite')")
    assert column("tone")[scored.graded] == "polite"
    assert "score=accuracy&score=passed&score=tone" in page.url
    page.click("#runs th.score-col[data-score='accuracy'] button.drop-col")
    page.wait_for_url("**/?workflow=qa&score=passed&score=tone", timeout=TIMEOUT_MS)
    _ready(page)
    heads = page.eval_on_selector_all("#runs th.score-col", "ths => ths.map(t => t.dataset.score)")
    assert heads == ["passed", "tone"]
