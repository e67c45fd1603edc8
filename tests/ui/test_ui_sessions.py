"""Sessions in the UI, against a real ``steptrace ui`` over the runs of
``support/session_data.py``: the API's session routes (on each engine, behind a token
on SQLite), and in Chromium a session's page — its runs as a conversation, in start
order, linking to each run and back — the sessions list and the run page's session
line. The session's id holds a slash and markup; its values hold markup."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import steptrace as st
from tests.support import session_data
from tests.support.helpers import screenshot
from tests.support.session_data import MESSAGES, OTHER, SESSION, Sessions
from tests.support.ui_server import UIServer, start_ui

TIMEOUT_MS = 15_000
TOKEN = "sessions-t0ken"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PATH = "/sessions/" + urllib.parse.quote(SESSION, safe="")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Sessions:
    """The runs with sessions, in a SQLite store (the browser tests' server)."""
    return session_data.record(tmp_path_factory.mktemp("ui-sessions") / "sessions.db")


@pytest.fixture(scope="module")
def sessions_ui(sessions: Sessions) -> Iterator[UIServer]:
    server = start_ui(sessions.url, "--token", TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sessions_api(request: pytest.FixtureRequest) -> Iterator[tuple[Sessions, httpx.Client]]:
    """The runs with sessions and a client of a UI over them, on each engine."""
    if request.param == "sqlite":
        server = request.getfixturevalue("sessions_ui")
        with httpx.Client(base_url=server.url, headers=BEARER, timeout=10) as client:
            yield request.getfixturevalue("sessions"), client
        return
    runs = session_data.record(request.getfixturevalue("new_postgres_database")())
    server = start_ui(runs.url)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield runs, client
    server.stop()


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)


# --- the API --------------------------------------------------------------------------


def test_a_session_answers_with_its_runs_as_turns_in_start_order(
    sessions_api: tuple[Sessions, httpx.Client],
) -> None:
    runs, api = sessions_api
    body = api.get(f"/api/v1{PATH}").json()
    assert (body["session_id"], body["total"], body["has_more"]) == (SESSION, 3, False)
    assert [t["run_id"] for t in body["runs"]] == list(runs.turns)
    assert [t["input"] for t in body["runs"]] == [{"user": SESSION, "message": m} for m in MESSAGES]
    first, failed, last = body["runs"]
    assert (first["status"], first["output"]) == ("succeeded", f"echo: {MESSAGES[0]}")
    assert failed["status"] == "failed" and failed["output"] is None
    assert failed["error"] == {"type": "RuntimeError", "message": "the answering service is down"}
    assert last["output"] == {"reply": "echo: thanks", "mood": "glad"}
    assert {t["session_id"] for t in body["runs"]} == {SESSION}
    with st.Store.open(runs.url) as store:
        assert first["started_at"] == store.run(runs.turns[0]).started_at

    # A page is the latest turns; the next offset gives the earlier ones.
    latest = api.get(f"/api/v1{PATH}", params={"limit": 2}).json()
    assert [t["run_id"] for t in latest["runs"]] == list(runs.turns[1:])
    assert (latest["total"], latest["has_more"]) == (3, True)
    earlier = api.get(f"/api/v1{PATH}", params={"limit": 2, "offset": 2}).json()
    assert [t["run_id"] for t in earlier["runs"]] == [runs.turns[0]]
    assert earlier["has_more"] is False

    missing = api.get("/api/v1/sessions/" + urllib.parse.quote("ada/help", safe=""))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert "ada/help" in missing.json()["error"]["message"]
    too_many = api.get(f"/api/v1{PATH}", params={"limit": 101})
    assert too_many.status_code == 422

    listed = api.get("/api/v1/sessions").json()
    assert [(s["session_id"], s["runs"]) for s in listed["sessions"]] == [(OTHER, 1), (SESSION, 3)]
    assert listed["sessions"][1]["statuses"] == {"succeeded": 2, "failed": 1}
    assert listed["has_more"] is False
    page = api.get("/api/v1/sessions", params={"limit": 1}).json()
    assert [s["session_id"] for s in page["sessions"]] == [OTHER] and page["has_more"] is True
    in_list = api.get("/api/v1/runs", params={"session": SESSION}).json()["runs"]
    assert [r["run_id"] for r in in_list] == list(reversed(runs.turns))


def test_the_session_routes_keep_the_ui_s_rules(sessions_ui: UIServer, sessions: Sessions) -> None:
    with httpx.Client(base_url=sessions_ui.url, timeout=10) as client:
        for path in ("/api/v1/sessions", f"/api/v1{PATH}", "/sessions", PATH):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "unauthorized"
            got, head = client.get(path, headers=BEARER), client.head(path, headers=BEARER)
            assert got.status_code == head.status_code == 200, path
            assert head.content == b"" and got.content
            for name in ("content-security-policy", "x-content-type-options", "cache-control"):
                assert got.headers[name] == head.headers[name], (path, name)
            assert got.headers["cache-control"] == "no-store"
        posted = client.post(f"/api/v1{PATH}", headers=BEARER)
        assert posted.status_code == 405
        nul = client.get("/api/v1/sessions/a%00b", headers=BEARER)
        assert nul.status_code == 400 and nul.json()["error"]["code"] == "bad_request"


# --- the browser ----------------------------------------------------------------------


def _login(page: Any, server: UIServer, path: str) -> None:
    page.goto(f"{server.url}{path}{'&' if '?' in path else '?'}token={TOKEN}")
    _ready(page)


def test_a_session_reads_as_a_conversation_linking_to_its_runs(
    page: Any, sessions_ui: UIServer, sessions: Sessions
) -> None:
    _login(page, sessions_ui, PATH)
    assert page.locator("#session-id").inner_text() == SESSION
    turns = page.locator("#conversation .turn")
    assert turns.evaluate_all("ts => ts.map(t => t.dataset.run)") == list(sessions.turns)
    said = page.locator("#conversation .bubble.in .says")
    assert said.evaluate_all("ss => ss.map(s => s.textContent)") == list(MESSAGES)
    assert turns.nth(0).locator(".bubble.out .says").inner_text() == f"echo: {MESSAGES[0]}"
    assert turns.nth(1).get_attribute("data-status") == "failed"
    assert (
        turns.nth(1)
        .locator(".bubble.err")
        .inner_text()
        .endswith("RuntimeError the answering service is down")
    )
    last_answer = turns.nth(2).locator(".bubble.out")
    assert last_answer.locator(".says").inner_text() == "echo: thanks"
    assert last_answer.locator(".says").get_attribute("data-field") == "reply"
    assert page.locator("#earlier-turns").is_hidden()
    # Markup in the session's id and values stayed text.
    made = "() => [...document.querySelectorAll('img, b')].map(e => e.outerHTML)"
    assert page.evaluate(made) == ["<b>3</b>"]  # the run count, the page's own
    screenshot(page, "session.png")

    turns.nth(1).locator("a.run-link").click()
    page.wait_for_url(f"**/runs/{sessions.turns[1]}", timeout=TIMEOUT_MS)
    _ready(page)
    line = page.locator("#session-line")
    assert line.inner_text() == f"session {SESSION}"
    line.locator("a.session-link").click()
    page.wait_for_url(f"**{PATH}", timeout=TIMEOUT_MS)
    _ready(page)
    assert page.locator("#conversation .turn").count() == 3


def test_earlier_turns_load_above_the_latest(
    page: Any, sessions_ui: UIServer, sessions: Sessions
) -> None:
    _login(page, sessions_ui, "/")
    # Twenty turns a page: pages of one show the paging in a session of three.
    page.route(
        "**/api/v1/sessions/*",
        lambda route: route.continue_(url=route.request.url.replace("limit=20", "limit=1")),
    )
    page.goto(f"{sessions_ui.url}{PATH}")
    _ready(page)
    turns = page.locator("#conversation .turn")
    assert turns.evaluate_all("ts => ts.map(t => t.dataset.run)") == [sessions.turns[2]]
    more = page.locator("#earlier-turns")
    assert more.inner_text() == "Earlier runs (2 more)"
    more.click()
    page.wait_for_function("() => document.querySelectorAll('#conversation .turn').length == 2")
    assert more.inner_text() == "Earlier runs (1 more)"
    more.click()
    page.wait_for_function("() => document.querySelectorAll('#conversation .turn').length == 3")
    assert turns.evaluate_all("ts => ts.map(t => t.dataset.run)") == list(sessions.turns)
    assert more.is_hidden()


def test_the_sessions_page_lists_the_latest_first_and_opens_one(
    page: Any, sessions_ui: UIServer, sessions: Sessions
) -> None:
    _login(page, sessions_ui, "/sessions")
    rows = page.locator("#sessions tbody tr")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.session)") == [OTHER, SESSION]
    assert rows.nth(1).locator("td").nth(1).inner_text() == "3"
    assert rows.nth(1).locator("td").nth(4).inner_text() == "2 succeeded, 1 failed"
    assert page.locator(".top nav a.on").inner_text() == "Sessions"
    rows.nth(1).locator("a").click()
    page.wait_for_url(f"**{PATH}", timeout=TIMEOUT_MS)
    _ready(page)
    assert page.locator("#conversation .turn").count() == 3
    # The runs list filtered by the session, from the session's page.
    page.click("text=as a list of runs")
    page.wait_for_selector("#runs tr[data-run]", timeout=TIMEOUT_MS)
    shown = page.locator("#runs tr[data-run]").evaluate_all("rs => rs.map(r => r.dataset.run)")
    assert shown == list(reversed(sessions.turns))
    assert page.input_value("input[name=session]") == SESSION
