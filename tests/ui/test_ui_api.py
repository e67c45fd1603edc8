"""The UI's JSON API over HTTP, against a real ``steptrace ui`` server and a store the
demo filled; expected answers come from ``st.Store`` (the same questions asked
directly), and the address and token rules from real servers and commands."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

import steptrace as st
from steptrace.ui import check_bind, is_loopback
from tests.support.loopback import free_port
from tests.support.ui_server import STEPTRACE, env_without_otel, start_ui


@pytest.fixture
def store(api_store: st.Store) -> st.Store:
    """Here the store is the one behind ``api``: SQLite and PostgreSQL."""
    return api_store


def test_runs_page_is_newest_first_with_totals(api: httpx.Client, store: st.Store) -> None:
    body = api.get("/api/v1/runs", params={"limit": 10}).json()
    expected = store.runs(last=10)
    assert [r["run_id"] for r in body["runs"]] == [r.run_id for r in expected]
    assert body["has_more"] is True
    first = store.run(body["runs"][0]["run_id"])
    totals = body["runs"][0]["totals"]
    steps = [s for s in first.spans if s.step_key]
    assert totals["steps"] == len({s.step_key for s in steps})
    assert totals["attempts"] == len(steps)
    llm = [s.llm for s in first.spans if s.llm]
    assert totals["llm_calls"] == len(llm)
    assert totals["input_tokens"] == sum(c["input_tokens"] for c in llm)
    assert "input" not in body["runs"][0] and "output" not in body["runs"][0]


def test_runs_page_pages_and_filters(api: httpx.Client, store: st.Store) -> None:
    page2 = api.get("/api/v1/runs", params={"limit": 7, "offset": 7}).json()
    assert [r["run_id"] for r in page2["runs"]] == [r.run_id for r in store.runs(last=7, offset=7)]
    failed = api.get("/api/v1/runs", params={"status": "failed", "limit": 100}).json()["runs"]
    assert failed and {r["status"] for r in failed} == {"failed"}
    assert len(failed) == len(store.runs(status="failed", last=100))
    where = ["classify.attempts > 1", "classify.output.category != billing"]
    got = api.get("/api/v1/runs", params={"where": where, "limit": 100}).json()["runs"]
    assert [r["run_id"] for r in got] == [r.run_id for r in store.runs(where=where, last=100)]
    assert got and all(r["totals"]["attempts"] > r["totals"]["steps"] for r in got)
    only = api.get("/api/v1/runs", params={"workflow": "xss_probe"}).json()["runs"]
    assert [r["workflow"] for r in only] == ["xss_probe"]
    assert api.get("/api/v1/workflows").json() == ["triage", "xss_probe"]
    future = api.get("/api/v1/runs", params={"since": "2999-01-01"}).json()
    assert future["runs"] == [] and future["has_more"] is False


def test_a_malformed_filter_is_a_400_with_the_reason(api: httpx.Client) -> None:
    resp = api.get("/api/v1/runs", params={"where": "classify.output.category"})
    assert resp.status_code == 400
    assert "classify.output.category" in resp.json()["error"]["message"]
    assert api.get("/api/v1/runs", params={"since": "yesterday-ish"}).status_code == 400
    assert api.get("/api/v1/runs", params={"limit": 0}).status_code == 422


def test_run_is_light_and_a_span_is_whole(api: httpx.Client, store: st.Store) -> None:
    run = store.runs(status="failed", last=1)[0]
    record = store.run(run.run_id)
    body = api.get(f"/api/v1/runs/{run.run_id[:10]}").json()  # a prefix is enough
    assert body["run_id"] == run.run_id
    assert [s["span_id"] for s in body["spans"]] == [s.span_id for s in record.spans]
    assert all("input" not in s and "output" not in s for s in body["spans"])
    assert body["trace_link"] == f"http://jaeger.invalid:16686/trace/{record.trace_id}"
    llm = next(s for s in record.spans if s.llm)
    detail = api.get(f"/api/v1/runs/{run.run_id}/spans/{llm.span_id}").json()
    assert detail == llm.to_dict()
    whole = api.get(f"/api/v1/runs/{run.run_id}", params={"values": "true"}).json()
    assert whole["spans"] == [s.to_dict() for s in record.spans]
    assert api.get("/api/v1/runs/ffffffffffff").status_code == 404
    missing = api.get(f"/api/v1/runs/{run.run_id}/spans/0000000000000000")
    assert missing.status_code == 404


def test_questions_answer_as_the_store_does(api: httpx.Client, store: st.Store) -> None:
    a, b = (r.run_id for r in store.runs(workflow="triage", last=2))
    assert api.get("/api/v1/diff", params={"a": a, "b": b}).json() == store.diff(a, b)
    assert api.get(f"/api/v1/runs/{a}/compare", params={"baseline": 20}).json() == store.compare(
        a, 20
    )
    assert api.get("/api/v1/stats", params={"workflow": "triage"}).json() == store.step_stats(
        "triage"
    )
    dist = api.get("/api/v1/distribution", params={"step": "classify", "field": "category"})
    assert dist.json() == store.distribution("classify", "category")
    hist = api.get("/api/v1/histogram", params={"step": "classify", "bins": 5}).json()
    durations = store.step_durations("classify")
    assert hist["count"] == len(durations) == sum(b["count"] for b in hist["bins"])
    assert len(hist["bins"]) == 5
    assert hist["bins"][0]["from"] == pytest.approx(min(durations))
    assert hist["bins"][-1]["to"] == pytest.approx(max(durations))
    bad = api.get("/api/v1/distribution", params={"step": "classify", "field": "a..b"})
    assert bad.status_code == 400


def test_run_totals_and_durations_are_store_methods(store: st.Store) -> None:
    runs = store.runs(workflow="triage", last=30)
    totals = store.run_totals([r.run_id for r in runs] + ["no-such-run"])
    assert totals["no-such-run"]["attempts"] == 0
    for r in runs:
        record = store.run(r.run_id)
        keyed = Counter(s.step_key for s in record.spans if s.step_key)
        assert totals[r.run_id]["steps"] == len(keyed)
        assert totals[r.run_id]["attempts"] == sum(keyed.values())
    attempts = [s for r in runs for s in store.run(r.run_id).steps("classify")]
    assert sorted(store.step_durations("classify", "triage", last=1000)) == sorted(
        s.duration_ms for s in attempts
    )
    assert len(store.step_durations("classify", last=3)) == 3
    assert store.step_durations("classify", "xss_probe") == []


def test_openapi_describes_the_api(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/spans/{span_id}",
        "/api/v1/diff",
        "/api/v1/runs/{run_id}/compare",
        "/api/v1/stats",
        "/api/v1/distribution",
        "/api/v1/histogram",
    } <= paths
    assert all(set(ops) == {"get"} for ops in spec["paths"].values())


def test_read_only_and_hardened_headers(api: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert api.request(method, "/api/v1/runs").status_code == 405
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert api.get("/static/app.js").status_code == 200
    assert api.get("/docs").status_code == 404  # the interactive docs would need a CDN


def test_a_foreign_host_name_is_refused_without_a_token(ui_server: object) -> None:
    """DNS rebinding: a page on evil.example resolving its name to 127.0.0.1."""
    url = ui_server.url  # type: ignore[attr-defined]
    assert httpx.get(url + "/api/v1/config", headers={"Host": "evil.example"}).status_code == 403
    assert httpx.get(url + "/api/v1/config", headers={"Host": "localhost:1"}).status_code == 200


def test_binding_beyond_loopback_without_a_token_is_refused(ui_store: Path) -> None:
    port = str(free_port())
    proc = subprocess.run(
        [
            *STEPTRACE,
            "ui",
            "--store",
            str(ui_store),
            "--host",
            "0.0.0.0",
            "--port",
            port,
            "--no-open",
        ],
        env=env_without_otel(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: refusing to serve the UI on 0.0.0.0 without a token")
    assert "--token" in proc.stderr and "STEPTRACE_UI_TOKEN" in proc.stderr
    with pytest.raises(st.ConfigError, match="without a token"):
        check_bind("192.168.1.20", None)
    check_bind("192.168.1.20", "t0ken")
    check_bind("::1", None)
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_with_a_token_every_request_must_carry_it(ui_store: Path) -> None:
    env = env_without_otel() | {"STEPTRACE_UI_TOKEN": "s3cret-token"}
    server = start_ui(ui_store, "--host", "0.0.0.0", env=env)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for path in ("/", "/api/v1/runs", "/static/app.js", "/openapi.json"):
                assert client.get(path).status_code == 401, path
            wrong = client.get("/api/v1/runs", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            bearer = {"Authorization": "Bearer s3cret-token"}
            assert client.get("/api/v1/runs", headers=bearer).status_code == 200
            # A link with ?token= sets an HttpOnly cookie and drops the token from the URL.
            link = client.get("/runs/abc", params={"token": "s3cret-token", "x": "1"})
            assert link.status_code == 303
            assert link.headers["location"] == "/runs/abc?x=1"
            assert "httponly" in link.headers["set-cookie"].lower()
            assert client.get("/api/v1/workflows").json() == ["triage", "xss_probe"]
        with httpx.Client(base_url=server.url, timeout=10) as fresh:  # no cookie
            assert fresh.get("/api/v1/runs", params={"token": "nope"}).status_code == 401
    finally:
        out = server.stop()
    assert f"http://127.0.0.1:{server.port}/?token=s3cret-token" in out


def test_without_the_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from steptrace.cli import main\n"
        f"main(['ui', '--store', {str(tmp_path / 'x.db')!r}, '--no-open'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env_without_otel(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert "pip install 'steptrace[ui]'" in proc.stderr


def test_a_port_in_use_is_one_error_line(ui_store: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*STEPTRACE, "ui", "--store", str(ui_store), "--port", str(port), "--no-open"],
            env=env_without_otel(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "--port" in proc.stderr and proc.stdout == ""
