"""Experiments in the UI, against a real ``steptrace ui`` over the two experiments of
``support/experiment_data.py`` (four items, one of them changed): the API (the list,
one experiment, two compared) on each engine, and in Chromium the list with each
experiment's figures, two of them picked and compared (the aggregates side by side, the
changed item marked and filtered, each item linked to its run) and one experiment's
items."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

import steptrace as st
from steptrace.evals.experiments import compare, load
from steptrace.ui.app import create_app
from tests.support import experiment_data
from tests.support.experiment_data import CHANGED, Experiments
from tests.support.helpers import screenshot
from tests.support.ui_server import UIServer, data_and_api, start_ui
from tests.ui.test_api_fuzz import CHECKS, EXPERIMENTS, LOOPBACK

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Experiments:
    """The experiments, in a SQLite store (the browser tests' server)."""
    return experiment_data.record(tmp_path_factory.mktemp("ui-experiments") / "exp.db")


@pytest.fixture(scope="module")
def experiments_ui(made: Experiments) -> Iterator[UIServer]:
    server = start_ui(made.url)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def experiments_api(request: pytest.FixtureRequest) -> Iterator[tuple[Experiments, httpx.Client]]:
    """The experiments and a client of a UI over them, on each engine."""
    yield from data_and_api(request, "made", "experiments_ui", experiment_data.record)


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)


def _comparison(made: Experiments) -> dict[str, Any]:
    with st.Store.open(made.url) as store:
        data = compare(store, made.a, made.b).to_dict()
    return json.loads(json.dumps(data))


def _changed_item(comparison: dict[str, Any]) -> dict[str, Any]:
    (item,) = [i for i in comparison["items"] if i["changed"]]
    return item


# --- the API --------------------------------------------------------------------------


def test_the_list_of_experiments_with_their_figures(
    experiments_api: tuple[Experiments, httpx.Client],
) -> None:
    made, api = experiments_api
    listing = api.get("/api/v1/experiments").json()
    assert [e["name"] for e in listing] == [made.b, made.a]  # newest first
    figures = {
        e["name"]: (e["dataset"], e["items"], e["succeeded"], e["failed"], e["status"])
        for e in listing
    }
    assert figures == {
        made.a: ("tickets", 4, 4, 0, "completed"),
        made.b: ("tickets", 4, 4, 0, "completed"),
    }
    means = {e["name"]: e["scores"] for e in listing}
    assert means[made.a] == {
        "exact": {"mean": 1.0, "count": 4, "errors": 0},
        "short": {"mean": 1.0, "count": 4, "errors": 0},
    }
    assert means[made.b] == {
        "exact": {"mean": 0.75, "count": 4, "errors": 0},
        "short": {"mean": 0.75, "count": 4, "errors": 0},
    }
    # The same figures as the experiment's own summary.
    with st.Store.open(made.url) as store:
        summary = load(store, made.b).summary()
    assert {n: s["mean"] for n, s in summary["scores"].items()} == {"exact": 0.75, "short": 0.75}
    assert listing[0]["target"] == "tests.support.experiment_data:route_by_keywords"


def test_two_experiments_compared_and_one_experiment(
    experiments_api: tuple[Experiments, httpx.Client],
) -> None:
    made, api = experiments_api
    body = api.get("/api/v1/experiments/compare", params={"a": made.a, "b": made.b}).json()
    assert body == _comparison(made)
    assert body["aggregate"]["b"]["scores"]["exact"]["mean"] == 0.75
    item = _changed_item(body)
    assert body["changed"] == [item["item_id"]]
    assert (item["input"], item["a"]["output"], item["b"]["output"]) == (
        {"text": CHANGED},
        "billing",
        "accounts",
    )
    one = api.get(f"/api/v1/experiments/{made.b}").json()
    assert [i["output"] for i in one["items"]] == ["billing", "tech", "accounts", "general"]
    assert one["summary"]["items"] == 4


@pytest.mark.parametrize(
    "path",
    ["/api/v1/experiments/nope", "/api/v1/experiments/compare?a=baseline&b=nope"],
)
def test_an_unknown_experiment_is_a_404_naming_the_ones_there_are(
    experiments_api: tuple[Experiments, httpx.Client], path: str
) -> None:
    _, api = experiments_api
    response = api.get(path)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "no experiment named 'nope'" in error["message"] and "baseline" in error["message"]


def test_the_experiment_routes_answer_with_data_within_their_description(
    experiments_api: tuple[Experiments, httpx.Client],
) -> None:
    """What ``test_api_fuzz`` checks of every route, here with experiments to show."""
    made, _ = experiments_api
    values = {"name": made.b, "a": made.a, "b": made.b}
    with st.Store.open(made.url) as store:
        app = create_app(store)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=LOOPBACK)
        asked = []
        for result in schema.get_all_operations():
            operation = result.ok()
            if not operation.path.startswith(EXPERIMENTS):
                continue
            params = {p.name for p in operation.path_parameters}
            case = operation.Case(
                path_parameters={k: v for k, v in values.items() if k in params} or None,
                query={k: v for k, v in values.items() if k in {p.name for p in operation.query}}
                or None,
            )
            response = case.call_and_validate(headers=LOOPBACK, checks=CHECKS)
            assert response.status_code == 200, (operation.path, response.text[:300])
            asked.append(operation.path)
    assert sorted(asked) == [EXPERIMENTS, f"{EXPERIMENTS}/compare", f"{EXPERIMENTS}/{{name}}"]


# --- the browser ----------------------------------------------------------------------


def test_the_list_then_two_experiments_compared(
    page: Any, experiments_ui: UIServer, made: Experiments
) -> None:
    expected = _comparison(made)
    page.goto(experiments_ui.url + "/")
    _ready(page)
    page.click(".top nav a[data-nav='experiments']")
    page.wait_for_selector("#experiments", timeout=TIMEOUT_MS)
    rows = page.eval_on_selector_all(
        "#experiments tbody tr",
        "rs => rs.map(r => [...r.querySelectorAll('td')].slice(1).map(td => td.innerText))",
    )
    module = experiment_data.__name__
    assert [r[:-1] for r in rows] == [  # the last: when it started
        [
            made.b,
            "tickets",
            f"{module}:route_by_keywords",
            "4",
            "4",
            "0",
            "completed",
            "0.75",
            "0.75",
        ],
        [made.a, "tickets", f"{module}:route", "4", "4", "0", "completed", "1", "1"],
    ]
    means = page.eval_on_selector_all(
        "#experiments td.exp-score",
        "tds => tds.map(td => [td.closest('tr').dataset.experiment, td.dataset.score,"
        " td.innerText])",
    )
    assert means == [
        [made.b, "exact", "0.75"],
        [made.b, "short", "0.75"],
        [made.a, "exact", "1"],
        [made.a, "short", "1"],
    ]
    screenshot(page, "experiments.png")

    # Tick both: the older one is A.
    page.check(f"#experiments tr[data-experiment='{made.b}'] input[type=checkbox]")
    page.check(f"#experiments tr[data-experiment='{made.a}'] input[type=checkbox]")
    page.click("#compare-picked")
    page.wait_for_selector("#exp-aggregate", timeout=TIMEOUT_MS)
    _ready(page)
    assert page.url.endswith(f"/experiments/compare?a={made.a}&b={made.b}")

    def metric(name: str) -> list[str]:
        return page.locator(f"#exp-aggregate tr[data-metric='{name}'] td").all_inner_texts()

    assert metric("score:exact") == ["exact mean", "1", "0.75", "−0.25"]
    assert metric("score:short") == ["short mean", "1", "0.75", "−0.25"]
    assert metric("items") == ["items", "4", "4", ""]
    assert metric("succeeded") == ["succeeded", "4", "4", ""]
    assert metric("failed") == ["failed", "0", "0", ""]
    assert metric("cost") == ["cost", "–", "–", ""]
    aggregate = expected["aggregate"]
    for name, key in (("latency p50", "p50"), ("latency mean", "mean")):
        shown = page.eval_on_selector_all(
            f"#exp-aggregate tr[data-metric='{name}'] td[data-value]",
            "tds => tds.map(td => Number(td.dataset.value))",
        )
        assert shown == [aggregate["a"]["latency_ms"][key], aggregate["b"]["latency_ms"][key]]

    # Every item in dataset order; the changed one marked, with both outputs and scores.
    items = page.eval_on_selector_all("#exp-items tbody tr", "rs => rs.map(r => r.dataset.item)")
    assert items == [i["item_id"] for i in expected["items"]]
    changed = _changed_item(expected)
    marked = page.eval_on_selector_all("#exp-items tr.changed", "rs => rs.map(r => r.dataset.item)")
    assert marked == [changed["item_id"]]
    row = page.locator(f"#exp-items tr[data-item='{changed['item_id']}'] td")
    cells = [t.strip() for t in row.all_inner_texts()]
    assert cells[1:] == [
        '{"text":"invoice is wrong"}',
        "billing",
        "↗ billing",
        "exact true\nshort true",
        "↗ accounts",
        "exact false\nshort false",
    ]
    assert "1 of 4" in page.locator("#changed-count").inner_text()
    screenshot(page, "experiments-compare.png", full_page=True)

    page.check("#only-changed")
    assert page.locator("#exp-items tbody tr").count() == 1
    assert "changed=1" in page.url
    # The item links to the run that executed it in B, at the judged step.
    page.click(f"#exp-items tr[data-item='{changed['item_id']}'] td:nth-child(6) a.run-link")
    page.wait_for_selector("#detail .title", timeout=TIMEOUT_MS)
    assert page.url.endswith(f"/runs/{changed['b']['run_id']}#span={changed['b']['span_id']}")
    assert page.locator(f".wf-row.sel[data-span='{changed['b']['span_id']}']").count() == 1
    scores = page.locator("#span-scores tbody tr").evaluate_all(
        "rs => rs.map(r => [r.dataset.score, r.children[1].innerText])"
    )
    assert sorted(scores) == [["exact", "false"], ["short", "false"]]


def test_one_experiment_lists_its_items(
    page: Any, experiments_ui: UIServer, made: Experiments
) -> None:
    page.goto(f"{experiments_ui.url}/experiments/{made.b}")
    _ready(page)
    outputs = page.locator("#experiment-items td.out").all_inner_texts()
    assert outputs == ["billing", "tech", "accounts", "general"]
    facts = page.locator(".runhead .facts").inner_text()
    assert "items 4" in facts and "exact 0.75" in facts and "short 0.75" in facts
