"""Exposing the UI safely, against real ``steptrace ui`` servers on loopback: the token
from a file or the environment (the command line is visible in ``ps``), a login cookie
that names this UI and holds no token, a post-login redirect that never leaves the UI,
the same security headers on errors as on pages, ``HEAD`` wherever ``GET`` works, and
no store password in anything the UI shows.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from steptrace.cli import main as cli_main
from steptrace.cli.ui import ui_token
from tests.support.ui_server import UIServer, start_ui

TOKEN = "file-t0ken-Zq8"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@pytest.fixture(scope="module")
def token_server(ui_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    """The UI with its token read from a file (its first line; the newline dropped)."""
    token_file = tmp_path_factory.mktemp("token") / "ui-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server = start_ui(ui_store, "--token-file", str(token_file))
    yield server
    server.stop()


def _assert_hardened(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.status_code, name)
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp


def _raw_get(
    server: UIServer, target: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """``GET target`` sent as written (no client normalising it): status and headers."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{server.port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_the_token_comes_from_a_file_or_the_environment(
    token_server: UIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with httpx.Client(base_url=token_server.url, timeout=10) as client:
        assert client.get("/api/v1/workflows").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/v1/workflows", headers=bearer).json() == ["triage", "xss_probe"]
    monkeypatch.setenv("STEPTRACE_UI_TOKEN", "from-env")
    assert ui_token(None, None) == "from-env"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\nignored\n")
    assert ui_token(None, token_file) == "from-file"
    assert ui_token("from-flag", None) == "from-flag"

    def refused(*args: str) -> str:
        with pytest.raises(SystemExit) as done:
            cli_main(["ui", "--no-open", *args])
        assert done.value.code == 1
        return capsys.readouterr().err

    assert "not both" in refused("--token", "x", "--token-file", str(token_file))
    (tmp_path / "empty").write_text("\n")
    assert "is empty" in refused("--token-file", str(tmp_path / "empty"))
    assert "cannot read the token file" in refused("--token-file", str(tmp_path / "missing"))
    with pytest.raises(SystemExit):
        cli_main(["ui", "--help"])
    assert "(ps)" in " ".join(capsys.readouterr().out.split())


def test_the_login_cookie_names_this_ui_and_holds_no_token(token_server: UIServer) -> None:
    name = f"steptrace_ui_{token_server.port}"
    with httpx.Client(base_url=token_server.url, timeout=10) as client:
        login = client.get("/runs/abc", params={"token": TOKEN, "x": "1"})
        assert login.status_code == 303 and login.headers["location"] == "/runs/abc?x=1"
        _assert_hardened(login)
        header = login.headers["set-cookie"]
        assert TOKEN not in header
        cookie = SimpleCookie()
        cookie.load(header)
        assert list(cookie) == [name]
        morsel = cookie[name]
        assert morsel["httponly"] and morsel["samesite"] == "strict" and morsel["path"] == "/"
        assert not morsel["secure"]  # plain http: a Secure cookie would not come back
        assert client.get("/api/v1/workflows").status_code == 200  # the cookie works
    with httpx.Client(base_url=token_server.url, timeout=10) as fresh:
        other_port = {f"steptrace_ui_{token_server.port + 1}": morsel.value}
        for cookies in ({name: TOKEN}, other_port, {"steptrace_token": TOKEN}):
            (cookie_name, value), *_ = cookies.items()
            sent = {"Cookie": f"{cookie_name}={value}"}
            assert fresh.get("/api/v1/workflows", headers=sent).status_code == 401
        right = {"Cookie": f"{name}={morsel.value}"}
        assert fresh.get("/api/v1/workflows", headers=right).status_code == 200
    # Behind a TLS proxy on this host (X-Forwarded-Proto from a trusted address):
    status, headers = _raw_get(token_server, f"/?token={TOKEN}", {"X-Forwarded-Proto": "https"})
    assert status == 303
    secure = SimpleCookie()
    secure.load(headers["set-cookie"])
    assert list(secure) == [f"__Host-{name}"] and secure[f"__Host-{name}"]["secure"]


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "//evil.example",
        "/\\evil.example/",
        "/\\/evil.example",
        "///evil.example/x",
        "/%2F%2Fevil.example/",
        "/%5Cevil.example/",
        "/%2F%5Cevil.example",
        "/%5C%5Cevil.example",
        "/%09/evil.example",
        "/%0D%0A//evil.example",
        "/.//evil.example",
        "https://evil.example/",
        "http://evil.example//evil.example",
    ],
)
def test_the_login_redirect_stays_on_the_ui(token_server: UIServer, target: str) -> None:
    separator = "&" if "?" in target else "?"
    status, headers = _raw_get(token_server, f"{target}{separator}token={TOKEN}&keep=1")
    if status != 303:  # refused as a malformed request: no redirect anywhere either
        assert 400 <= status < 500 and "location" not in headers, status
        return
    location = headers["location"]
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert all(ch > " " for ch in location), location
    resolved = urllib.parse.urlsplit(urllib.parse.urljoin(token_server.url + "/", location))
    assert resolved.netloc == f"127.0.0.1:{token_server.port}", location
    assert resolved.query == "keep=1" and TOKEN not in location


def test_errors_carry_the_headers_of_pages_and_head_works(
    token_server: UIServer, ui_server: UIServer
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=token_server.url, timeout=10) as client:
        for path in ("/", "/api/v1/runs", "/static/app.js", "/openapi.json"):
            refused = client.get(path)
            assert refused.status_code == 401
            _assert_hardened(refused)
            assert refused.json()["error"]["code"] == "unauthorized"
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert client.head(path).status_code == 401
            _assert_hardened(client.head(path))
        for path in ("/", "/runs/abc", "/static/app.js", "/api/v1/runs", "/openapi.json"):
            got, head = client.get(path, headers=bearer), client.head(path, headers=bearer)
            assert got.status_code == head.status_code == 200, path
            assert head.content == b"" and got.content
            for name in ("content-type", "content-length", "content-security-policy"):
                assert head.headers[name] == got.headers[name], (path, name)
            _assert_hardened(got)
        missing = client.get("/api/v1/runs/ffffffffffff", headers=bearer)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        _assert_hardened(missing)
        posted = client.post("/api/v1/runs", headers=bearer)
        assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
        _assert_hardened(posted)
    with httpx.Client(base_url=ui_server.url, timeout=10) as client:  # no token
        foreign = client.get("/api/v1/config", headers={"Host": "evil.example"})
        assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden"
        _assert_hardened(foreign)
        assert client.head("/api/v1/config", headers={"Host": "evil.example"}).status_code == 403


def test_only_the_pages_scripts_and_styles_at_their_version_may_be_kept(
    ui_server: UIServer,
) -> None:
    """The shell names each script and style at a version (a hash of them all); asked
    for so, they may be cached; anything else (the store's content) is ``no-store``."""
    with httpx.Client(base_url=ui_server.url, timeout=10) as client:
        shell = client.get("/runs/abc")
        _assert_hardened(shell)
        assets = re.findall(r'"(/static/[\w.-]+)\?v=([0-9a-f]{16})"', shell.text)
        names = sorted(path.rsplit("/", 1)[1] for path, _ in assets)
        assert names == [
            "app.css",
            "app.js",
            "evaluation.css",
            "experiments.js",
            "lineage.js",
            "scores.js",
            "sessions.css",
            "sessions.js",
            "waterfall.js",
        ]
        assert len({version for _, version in assets}) == 1
        for path, version in assets:
            kept = client.get(path, params={"v": version})
            assert kept.status_code == 200 and kept.content
            assert kept.headers["cache-control"] == "private, max-age=31536000, immutable"
            for name in ("x-content-type-options", "content-security-policy"):
                assert kept.headers[name] == shell.headers[name]
            _assert_hardened(client.get(path))  # not at the version: no-store
            _assert_hardened(client.get(path, params={"v": "0" * 16}))
        _assert_hardened(client.get("/api/v1/runs"))
        assert client.get("/static/nothing.js", params={"v": assets[0][1]}).status_code == 404


def test_the_ui_shows_no_store_password(new_postgres_database: Callable[[], str]) -> None:
    """The session's server lets the role in without a password, so the URL can carry
    one (twice) that the UI must never show."""
    url = new_postgres_database().replace("//postgres@", "//postgres:uiSecretPW1@")
    url += "?sslmode=disable&password=uiSecretPW2"
    trace = "http://viewer:traceSecret1@jaeger.invalid/trace/{trace_id}?api_key=traceSecret2"
    server = start_ui(url, "--trace-url", trace)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            config = client.get("/api/v1/config").json()
            missing = client.get("/api/v1/runs/nope")
            shown = [json.dumps(config), missing.text, client.get("/").text]
    finally:
        banner = server.stop()
    assert config["store"].startswith("postgresql://postgres:****@127.0.0.1:")
    assert config["store"].endswith("?sslmode=disable&password=****")
    assert config["trace_url"] == (
        "http://viewer:****@jaeger.invalid/trace/{trace_id}?api_key=****"
    )
    assert missing.status_code == 404 and "postgres:****@" in missing.text
    assert "postgresql://postgres:****@" in banner
    for secret in ("uiSecretPW1", "uiSecretPW2", "traceSecret1", "traceSecret2"):
        assert secret not in "".join(shown) + banner
