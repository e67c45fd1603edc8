"""Fixtures for the web UI's tests: a real store filled by real workflows (the demo,
run by ``steptrace demo``, and a workflow whose values are markup), a real
``steptrace ui`` server on loopback in a subprocess, and Debian's Chromium driven by
Playwright.

The store and the server are made once per session: they are read-only to the UI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import steptrace as st
from tests.support.ui_server import UIServer, env_without_otel, start_ui

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
DEMO_RUNS = 30

XSS_WORKFLOW = """
import logging
import steptrace as st

st.llm.script("xss", ["<b onmouseover=alert(6)>bold</b> <script>alert(7)</script>"])

@st.step
def render(text: str) -> dict:
    logging.getLogger("xss").warning("log <img src=x onerror=alert(3)>")
    return {"html": "<script>alert(1)</script>", "img": "<img src=x onerror=alert(2)>",
            "<i>key</i>": text}

@st.step
def ask(text: str) -> str:
    return st.llm.chat("scripted:xss", [
        {"role": "system", "content": "<script>alert(4)</script>"},
        {"role": "user", "content": "<img src=x onerror=alert(5)>"},
    ]).text

@st.step
def explode(text: str) -> None:
    raise ValueError("<img src=x onerror=alert(8)> went wrong")

@st.workflow
def xss_probe(text: str) -> dict:
    out = render(text)
    ask(text)
    explode(text)
    return out

run = st.run(xss_probe, "<svg onload=alert(9)>", session_id="<i onmouseover=alert(10)>xss</i>")
st.score(run.run_id, "<i>markup</i>", 0.5, rationale="<img src=x onerror=alert(10)>")
"""


def fill_store(store: Path | str) -> None:
    """The demo's runs (``steptrace demo --runs 30``) and one run of ``xss_probe``,
    whose inputs, outputs, prompts, logs, errors, session id and score are markup."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "steptrace",
            "--store",
            str(store),
            "demo",
            "--runs",
            str(DEMO_RUNS),
        ],
        env=env_without_otel(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    probe = subprocess.run(
        [sys.executable, "-c", XSS_WORKFLOW],
        env=dict(env_without_otel(), STEPTRACE_STORE=str(store)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


@pytest.fixture(scope="session")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store filled by ``fill_store``."""
    path = tmp_path_factory.mktemp("ui") / "steptrace.db"
    fill_store(path)
    return path


@pytest.fixture(scope="session")
def ui_server(ui_store: Path) -> Iterator[UIServer]:
    server = start_ui(ui_store, "--trace-url", "http://jaeger.invalid:16686/trace/{trace_id}")
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def api_server(request: pytest.FixtureRequest) -> Iterator[UIServer]:
    """The UI over the same kind of data on each backend: the session's SQLite server,
    or one over a PostgreSQL database filled the same way."""
    if request.param == "sqlite":
        yield request.getfixturevalue("ui_server")
        return
    url: str = request.getfixturevalue("new_postgres_database")()
    fill_store(url)
    server = start_ui(url, "--trace-url", "http://jaeger.invalid:16686/trace/{trace_id}")
    yield server
    server.stop()


@pytest.fixture
def api(api_server: UIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, timeout=10) as client:
        yield client


@pytest.fixture
def store(ui_store: Path) -> Iterator[st.Store]:
    """The SQLite UI's store (the browser tests' server), read through the public API
    to compute expected answers."""
    with st.Store.open(str(ui_store)) as s:
        yield s


@pytest.fixture
def api_store(api_server: UIServer) -> Iterator[st.Store]:
    """The store behind ``api`` (either backend), read through the public API."""
    with st.Store.open(str(api_server.store)) as s:
        yield s


# --- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright. Skipped where it cannot start,
    except under CI (CI=true), where that is a failure."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if in_ci:
            pytest.fail(f"playwright is not installed: {exc}")
        pytest.skip(f"playwright is not installed: {exc}")
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test.sh does)"
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            if in_ci:
                pytest.fail(f"Chromium did not start: {exc}")
            pytest.skip(f"Chromium did not start: {exc}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (light colour scheme, a laptop-sized window) that fails the test on
    any JavaScript error or dialog (an ``alert`` from injected markup would be one)."""
    context = browser.new_context(viewport={"width": 1500, "height": 920}, color_scheme="light")
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.type} {dialog.message}")
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.problems = problems
    yield pg
    context.close()
    assert problems == [], problems
