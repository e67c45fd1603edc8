"""A run's lineage in the UI, against a real ``steptrace ui`` over the runs of
``support/lineage_data.py``: the API's ``derived`` runs (on each engine),
and in Chromium the links between a run and its source and derived runs, the one-click
diff against the source, and "fork from here" — the command and the Python call, made
from the step's recorded input and remade as it is edited."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import steptrace as st
from tests.support import lineage_data
from tests.support.helpers import raw_sql, screenshot
from tests.support.lineage_data import FORK_AT, NESTED_FORK_AT, Lineage
from tests.support.ui_server import UIServer, start_ui

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> Lineage:
    """The runs with lineage, in a SQLite store (the browser tests' server)."""
    return lineage_data.record(tmp_path_factory.mktemp("ui-lineage") / "lineage.db")


@pytest.fixture(scope="module")
def lineage_ui(lineage: Lineage) -> Iterator[UIServer]:
    server = start_ui(lineage.url)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lineage_api(request: pytest.FixtureRequest) -> Iterator[tuple[Lineage, UIServer]]:
    """The runs with lineage and a UI over them, on each engine."""
    if request.param == "sqlite":
        yield request.getfixturevalue("lineage"), request.getfixturevalue("lineage_ui")
        return
    runs = lineage_data.record(request.getfixturevalue("new_postgres_database")())
    server = start_ui(runs.url)
    yield runs, server
    server.stop()


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)


def _run(runs: Lineage, run_id: str) -> st.RunRecord:
    with st.Store.open(runs.url) as store:
        return store.run(run_id)


def _shell_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _command(run_id: str, step: str, value: Any) -> str:
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return f"steptrace fork {run_id} --from {step} --input {_shell_quoted(compact)}"


def _python(run_id: str, step: str, value: Any) -> str:
    literal = json.dumps(value, ensure_ascii=False)  # no true/false/null in these inputs
    return f"st.fork({json.dumps(run_id)}, from_step={json.dumps(step)}, input={literal})"


# --- the API --------------------------------------------------------------------------


def test_a_run_answers_with_the_runs_made_from_it(
    lineage_api: tuple[Lineage, UIServer],
) -> None:
    runs, server = lineage_api
    with httpx.Client(base_url=server.url, timeout=10) as api, st.Store.open(runs.url) as store:
        body = api.get(f"/api/v1/runs/{runs.source}").json()
        assert body["derived"] == json.loads(json.dumps(store.derived(runs.source)))
        assert [d["run_id"] for d in body["derived"]] == [
            runs.replay,
            runs.nested_fork,
            runs.fork,
        ]
        source = store.run(runs.source)
        assert (body["resume_count"], body["code_version"]) == (2, source.code_version)
        fork = api.get(f"/api/v1/runs/{runs.fork[:10]}").json()
        assert (fork["forked_from"], fork["forked_at"]) == (runs.source, FORK_AT)
        assert [d["run_id"] for d in fork["derived"]] == [runs.grandchild]
        whole = api.get(f"/api/v1/runs/{runs.source}", params={"values": "true"}).json()
        assert whole["derived"] == body["derived"]
        # A run already read (and kept: it is finished) shows a fork made since.
        assert api.get(f"/api/v1/runs/{runs.plain}").json()["derived"] == []
        raw_sql(
            runs.url,
            "UPDATE runs SET replay_of = ? WHERE run_id = ?",
            (runs.plain, runs.grandchild),
        )
        try:
            later = api.get(f"/api/v1/runs/{runs.plain}").json()["derived"]
            assert [(d["run_id"], d["relation"]) for d in later] == [(runs.grandchild, "replay")]
        finally:
            raw_sql(
                runs.url, "UPDATE runs SET replay_of = NULL WHERE run_id = ?", (runs.grandchild,)
            )


# --- the browser ----------------------------------------------------------------------


def test_lineage_links_a_run_to_its_source_and_its_derived_runs(
    page: Any, lineage_ui: UIServer, lineage: Lineage
) -> None:
    page.goto(f"{lineage_ui.url}/runs/{lineage.fork}")
    _ready(page)
    source_line = page.locator("#lineage .lin[data-relation='fork']")
    assert source_line.text_content().startswith(f"forked from {lineage.source[:8]} at {FORK_AT}")
    assert page.locator("#derived-runs li").evaluate_all("ls => ls.map(l => l.dataset.run)") == [
        lineage.grandchild
    ]
    page.click("#lineage a.source-link")
    page.wait_for_url(f"**/runs/{lineage.source}", timeout=TIMEOUT_MS)
    _ready(page)
    assert page.locator("#lineage .lin[data-relation]").count() == 0  # made from nothing
    assert page.locator("#resumed").inner_text() == "resumed 2 times"
    assert page.locator("#entry-point").inner_text() == lineage_data.ENTRY_POINT
    version = _run(lineage, lineage.source).code_version
    assert version is not None
    shown = ", ".join(f"{k} {v}" for k, v in sorted(version.items()) if v is not None)
    assert page.locator("#code-version").inner_text() == shown
    items = page.locator("#derived-runs li")
    assert items.evaluate_all("ls => ls.map(l => l.dataset.run)") == [
        lineage.replay,
        lineage.nested_fork,
        lineage.fork,
    ]
    assert [items.nth(i).locator(".pill").inner_text() for i in range(3)] == [
        "replay",
        f"fork at {NESTED_FORK_AT}",
        f"fork at {FORK_AT}",
    ]
    assert all("succeeded" in items.nth(i).locator(".st").inner_text() for i in range(3))
    screenshot(page, "run-lineage.png")
    items.nth(0).locator("a").click()
    page.wait_for_url(f"**/runs/{lineage.replay}", timeout=TIMEOUT_MS)
    _ready(page)
    replay_line = page.locator("#lineage .lin[data-relation='replay']")
    assert replay_line.text_content().startswith(f"replay of {lineage.source[:8]}")
    assert page.locator("#derived-runs").count() == 0
    page.goto(f"{lineage_ui.url}/runs/{lineage.plain}")
    _ready(page)
    # Made from nothing, nothing made from it: its code only.
    assert page.locator("#lineage .lin[data-relation], #derived-runs, #resumed").count() == 0
    assert page.locator("#entry-point").inner_text() == lineage_data.ENTRY_POINT


@pytest.mark.parametrize("relation", ["fork", "replay"])
def test_a_derived_run_diffs_against_its_source_in_one_click(
    page: Any, lineage_ui: UIServer, lineage: Lineage, relation: str
) -> None:
    derived = lineage.fork if relation == "fork" else lineage.replay
    with st.Store.open(lineage.url) as store:
        summary = store.diff(lineage.source, derived)["summary"]
    page.goto(f"{lineage_ui.url}/runs/{derived}")
    _ready(page)
    page.click(f"#lineage .lin[data-relation='{relation}'] a.diff-source")
    page.wait_for_selector("#diff", timeout=TIMEOUT_MS)
    assert f"a={lineage.source}" in page.url and f"b={derived}" in page.url
    shown = page.locator("#diff-summary").inner_text()
    assert f"steps {summary['steps']}" in shown and f"changed {summary['changed']}" in shown
    sides = page.locator("#diff .hd a").evaluate_all("as => as.map(a => a.textContent)")
    assert sides == [lineage.source[:8], derived[:8]]


def _open_fork(page: Any, url: str, run: st.RunRecord, step_key: str) -> st.SpanView:
    """The run's page with a step's detail and its "fork from here" panel open."""
    span = [s for s in run.spans if s.step_key == step_key][-1]  # the final attempt
    page.goto(f"{url}/runs/{run.run_id}#span={span.span_id}")
    page.wait_for_selector("#fork-toggle", timeout=TIMEOUT_MS)
    assert page.locator("#fork-panel").is_hidden()
    page.click("#fork-toggle")
    page.wait_for_selector("#fork-panel", state="visible", timeout=TIMEOUT_MS)
    return span


def test_fork_from_here_gives_the_command_with_the_steps_input(
    page: Any, lineage_ui: UIServer, lineage: Lineage
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lineage_ui.url)
    run = _run(lineage, lineage.source)
    span = _open_fork(page, lineage_ui.url, run, FORK_AT)
    assert span.input == {
        "ticket": {"text": "I'd like a refund", "label": "refund"},
        "tone": "warm",
    }
    assert json.loads(page.input_value("#fork-input")) == span.input
    command = page.locator("#fork-command").text_content()
    assert command == _command(run.run_id, FORK_AT, span.input)
    assert "'I'\\''d like a refund'" not in command  # the quote inside the one quoted word
    assert "I'\\''d like" in command
    # What a POSIX shell makes of it: the arguments, the input exactly as recorded.
    argv = shlex.split(command)
    assert argv[:6] == ["steptrace", "fork", run.run_id, "--from", FORK_AT, "--input"]
    assert json.loads(argv[6]) == span.input and len(argv) == 7
    assert page.locator("#fork-python").text_content() == _python(run.run_id, FORK_AT, span.input)
    page.click("#fork-copy")
    assert page.evaluate("() => navigator.clipboard.readText()") == command
    assert page.locator("#fork-error").text_content() == ""
    screenshot(page, "fork-from-here.png")


def test_a_nested_step_is_forked_by_its_path(
    page: Any, lineage_ui: UIServer, lineage: Lineage
) -> None:
    run = _run(lineage, lineage.source)
    inner = _open_fork(page, lineage_ui.url, run, NESTED_FORK_AT)
    assert inner.name == "inner"
    command = page.locator("#fork-command").text_content()
    assert command == _command(run.run_id, NESTED_FORK_AT, inner.input)
    assert shlex.split(command)[4] == "outer#0/inner#1"
    # An LLM call or the run itself is no step: nothing to fork from.
    page.click(".wf-row[data-kind='run']")
    page.wait_for_selector("#detail [data-section='Input']", timeout=TIMEOUT_MS)
    assert page.locator("#fork-toggle").count() == 0


def test_editing_the_input_remakes_the_command_and_bad_json_says_why(
    page: Any, lineage_ui: UIServer, lineage: Lineage
) -> None:
    run = _run(lineage, lineage.fork)
    span = _open_fork(page, lineage_ui.url, run, FORK_AT)
    edited = {"ticket": {"text": "it's 'quoted' twice", "label": "other"}, "tone": "dry"}
    page.fill("#fork-input", json.dumps(edited, indent=4))
    command = page.locator("#fork-command").text_content()
    assert command == _command(run.run_id, FORK_AT, edited)
    assert json.loads(shlex.split(command)[6]) == edited
    assert page.locator("#fork-python").text_content() == _python(run.run_id, FORK_AT, edited)

    page.fill("#fork-input", '{"ticket": {"text": "half')
    error = page.locator("#fork-error").text_content()
    assert error.startswith("not valid JSON: ")
    assert page.locator("#fork-command").is_hidden()
    assert page.locator("#fork-command").text_content() == ""
    assert page.locator("#fork-python").text_content() == ""
    assert page.locator("#fork-copy").is_disabled()
    page.fill("#fork-input", '["a list"]')
    assert "must be a JSON object" in page.locator("#fork-error").text_content()
    assert page.locator("#fork-command").text_content() == ""

    # Typed keys edit the input: j, k and the arrows do not move the selection.
    page.fill("#fork-input", "")
    page.focus("#fork-input")
    page.keyboard.type('{"tone": "jk"}')
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowDown")
    assert page.locator(".wf-row.sel").get_attribute("data-span") == span.span_id
    assert page.locator("#fork-error").text_content() == ""
    assert page.locator("#fork-command").is_visible()
    assert page.locator("#fork-command").text_content() == _command(
        run.run_id, FORK_AT, {"tone": "jk"}
    )
