"""A store's or an OTLP endpoint's credentials are shown nowhere: not in the command
line's messages and errors (psycopg's and libpq's text included), the writer's
warnings, ``steptrace.health()``, ``steptrace status``, the demo's summary, the
``otel_export`` table or ``export-otlp``'s messages.

The commands are the real ``steptrace`` in subprocesses (started together: they are
independent), against a PostgreSQL port nothing listens on, a malformed URL, and the
session's real server with a role that needs a password, given the wrong one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import steptrace as st
import steptrace.config
from steptrace.cli import main as cli_main
from steptrace.masking import (
    MASK,
    header_secrets,
    is_secret_name,
    mask_headers,
    mask_text,
    mask_url,
    url_secrets,
)
from tests.support.helpers import clean_env
from tests.support.loopback import free_port

PW_USERINFO = "s3cretPW"
PW_QUERY = "s3cretPW2"
DEAD = f"postgresql://ada:{PW_USERINFO}@127.0.0.1:1/steptrace?sslmode=disable&password={PW_QUERY}"
"""A PostgreSQL URL with a password twice (the query's wins in libpq), on a dead port."""
SECRETS = (PW_USERINFO, PW_QUERY)

WORKFLOW = """
import steptrace as st

@st.step
def double(x: int) -> int:
    return 2 * x

@st.workflow
def wf(x: int) -> int:
    return double(x)
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(STEPTRACE_SPILL_DIR=str(tmp_path / "spill"), **extra)
    return env


def _commands(
    tmp_path: Path, commands: list[list[str]], env: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``steptrace ARGS`` for each of ``commands`` at once; their results in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "steptrace", *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    done = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``steptrace ARGS`` in this process: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as done:
        cli_main(list(args))
    out, err = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 0), out, err


def _assert_hidden(text: str, secrets: tuple[str, ...] = SECRETS) -> None:
    for secret in secrets:
        assert secret not in text, text


# --- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (DEAD, "postgresql://ada:****@127.0.0.1:1/steptrace?sslmode=disable&password=****"),
        ("postgresql://u:p%40ss1@h/db", "postgresql://u:****@h/db"),
        ("postgresql://u:pa#ss1@h/db", "postgresql://u:****@h/db"),  # as libpq reads it
        ("postgresql://u:pass1@[::1/db", "postgresql://u:****@[::1/db"),  # unparseable
        (
            "postgresql://u@h/db?sslpassword=keyPW1&passfile=/p&sslkey=/k",
            "postgresql://u@h/db?sslpassword=****&passfile=/p&sslkey=/k",
        ),
        (
            "http://h:4318/v1/traces?api_key=KEY1&x=1#frag",
            "http://h:4318/v1/traces?api_key=****&x=1#frag",
        ),
        (
            "https://h/t?X-Amz-Signature=sig1&X-Amz-Credential=cred1&max_tokens=3",
            "https://h/t?X-Amz-Signature=****&X-Amz-Credential=****&max_tokens=3",
        ),
        ("/home/me/.steptrace/steptrace.db", "/home/me/.steptrace/steptrace.db"),
        ("http://jaeger:16686/trace/{trace_id}", "http://jaeger:16686/trace/{trace_id}"),
    ],
    ids=lambda value: value.split("?")[0][:40],
)
def test_mask_url_hides_passwords_and_secret_parameters(url: str, shown: str) -> None:
    masked = mask_url(url)
    assert masked == shown
    for secret in url_secrets(url):
        assert secret not in masked
    assert mask_url(masked) == masked  # masking twice changes nothing


def test_secret_names_and_free_text() -> None:
    secret = ["password", "sslpassword", "token", "api_key", "X-Api-Key", "sig", "key"]
    plain = ["passfile", "sslkey", "max_tokens", "input_tokens", "user", "authSource", "host"]
    assert all(is_secret_name(n) for n in secret)
    assert not any(is_secret_name(n) for n in plain)
    conninfo = "host=h password='it\\'s \\\\ ''x' user=u sslpassword=abc dbname=d"
    assert mask_text(conninfo) == "host=h password='****' user=u sslpassword=**** dbname=d"
    echoed = 'invalid percent-encoded token: "s3c%zzret"'
    assert "s3c%zzret" not in mask_text(echoed, url_secrets("postgresql://u:s3c%zzret@h/d"))
    line = "Authorization: Bearer abcdefghij, see http://u:pw@h:1/x?token=t."
    assert mask_text(line) == "Authorization: ****, see http://u:****@h:1/x?token=****."
    headers = "authorization=Bearer tok3n-value,x-honeycomb-team=hcKEY123"
    assert mask_headers(headers) == {"authorization": MASK, "x-honeycomb-team": MASK}
    assert {"tok3n-value", "hcKEY123"} <= set(header_secrets(headers))


# --- commands against a store that cannot be reached ---------------------------------


def test_no_command_shows_the_store_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_escape = f"postgresql://ada:{PW_USERINFO}%zz@127.0.0.1:1/steptrace"  # libpq echoes it
    bad_host = f"postgresql://ada:{PW_USERINFO}@[::1/steptrace"  # libpq echoes the URL
    commands = [
        ["--store", DEAD, "runs"],
        ["--store", DEAD, "status", "--json"],
        ["--store", DEAD, "migrate"],
        ["--store", DEAD, "--debug", "runs"],
        ["--store", DEAD, "ui", "--no-open", "--port", str(free_port())],
        ["--store", bad_escape, "runs"],
        ["--store", bad_host, "status"],
    ]
    results = [_main(capsys, *args) for args in commands]
    for code, out, err in results:
        assert code == 1, err
        _assert_hidden(out + err)
        assert any(line.startswith("error: ") for line in err.splitlines()), err
    runs, status, migrate, debug, ui, escape, host = (err for _, _, err in results)
    for err in (runs, status, debug, ui):
        assert "postgresql://ada:****@127.0.0.1:1/steptrace?sslmode=disable&password=****" in err
    assert "Connection refused" in migrate
    assert "Traceback" in debug  # --debug shows the traceback, masked
    assert '"****"' in escape  # libpq's complaint, its quote of the password masked
    assert "postgresql://ada:****@[::1/steptrace" in host


def test_the_writer_and_health_do_not_show_it(caplog: pytest.LogCaptureFixture) -> None:
    st.configure(store=DEAD)

    @st.workflow
    def wf() -> int:
        return 1

    with caplog.at_level(logging.DEBUG, logger="steptrace"):
        assert wf() == 1
        health = st.health()
        steptrace.config.reset()  # closes the writer: its line at exit
    assert health["state"] == "spilling" and health["pending"] == 2
    assert health["store"] == mask_url(DEAD)
    assert "Connection refused" in health["last_error"]
    assert "cannot open the store" in caplog.text and "records written to" in caplog.text
    _assert_hidden(caplog.text + json.dumps(health))
    with pytest.raises(st.ConfigError) as caught:
        st.Store.open(DEAD)
    _assert_hidden(str(caught.value))


# --- a real server that refuses the password -----------------------------------------


@pytest.fixture(scope="module")
def password_role(postgres_server: str) -> Iterator[Callable[[str], str]]:
    """A role on the session's server that must log in with a password over TCP (a line
    put first in its pg_hba.conf, through SQL); gives its URL with a given password."""
    role, password = "steptrace_pw_role", "right-Pa55word"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        row = is_super.fetchone()
        if not row or not row[0]:
            pytest.skip("needs a superuser to edit pg_hba.conf")
        hba_row = conn.execute("SHOW hba_file").fetchone()
        assert hba_row is not None
        hba = str(hba_row[0])
        text_row = conn.execute("SELECT pg_read_file(%s)", [hba]).fetchone()
        assert text_row is not None
        original = str(text_row[0])
        if "\\" in original:
            pytest.skip("pg_hba.conf holds a backslash: COPY would change it")

        def write(text: str) -> None:
            lines = [line.replace("\t", " ") for line in text.splitlines()]
            rows = sql.SQL(", ").join(sql.SQL("({})").format(sql.Literal(x)) for x in lines)
            conn.execute(
                sql.SQL("COPY (SELECT * FROM (VALUES {}) AS t(line)) TO {}").format(
                    rows, sql.Literal(hba)
                )
            )
            conn.execute("SELECT pg_reload_conf()")

        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        write(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
        try:
            parts = urllib.parse.urlsplit(postgres_server)

            def url(given: str) -> str:
                netloc = f"{role}:{given}@{parts.hostname}:{parts.port}"
                return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

            with psycopg.connect(url(password)):  # the role works with the right one
                pass
            yield url
        finally:
            write(original)
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_wrong_password_on_a_real_server_is_not_shown(
    tmp_path: Path, password_role: Callable[[str], str]
) -> None:
    wrong = "Wr0ngPassw0rd"
    url = password_role(wrong) + f"?application_name=x&password={wrong}x"
    (tmp_path / "flows.py").write_text(WORKFLOW)
    secrets = (wrong,)
    # Real processes: the writer opens the store, and the command's log handler masks.
    results = _commands(
        tmp_path,
        [["run", "flows:wf", "--input", '{"x": 2}'], ["--debug", "status"]],
        _env(tmp_path, STEPTRACE_STORE=url),
    )
    for result in results:
        assert result.returncode == 1, result.stderr
        assert "password authentication failed" in result.stderr, result.stderr
        _assert_hidden(result.stdout + result.stderr, secrets)
    with pytest.raises(st.ConfigError, match="password authentication failed") as caught:
        st.Store.open(url)
    _assert_hidden(str(caught.value), secrets)


# --- OTLP ---------------------------------------------------------------------------------

OTLP_SECRETS = ("otlpPW1", "otlpKEY1", "otlpTOKEN1", "otlpKEY2", "otlpPW3", "otlpKEY3", "otlpTOK3")


def test_otlp_endpoint_and_headers_are_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "app.db"
    otlp_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otlpuser:otlpPW1@127.0.0.1:1/?api_key=otlpKEY1",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer otlpTOKEN1,x-honeycomb-team=otlpKEY2",
        "STEPTRACE_EXPORT_EXIT_TIMEOUT_S": "1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",  # export-otlp's exporter gives up after a second
    }
    # A real process: the export queue's warnings and its line at exit, through the
    # command's own log handler.
    (demo,) = _commands(
        tmp_path, [["--store", str(store), "demo", "--runs", "2"]], _env(tmp_path, **otlp_env)
    )
    assert demo.returncode == 0, demo.stderr
    assert "spans were not exported" in demo.stderr
    assert "sent to http://otlpuser:****@127.0.0.1:1/?api_key=****" in demo.stdout
    for name, value in otlp_env.items():
        monkeypatch.setenv(name, value)
    export = ["--store", str(store), "export-otlp", "--last", "1"]
    status = _main(capsys, "--store", str(store), "status")
    status_json = _main(capsys, "--store", str(store), "status", "--json")
    resend = _main(
        capsys,
        *export,
        "--endpoint",
        "http://u:otlpPW3@127.0.0.1:1/v1/traces?token=otlpKEY3",
        "--header",
        "authorization=Bearer otlpTOK3",
    )
    bad_header = _main(capsys, *export, "--header", "authorization: Bearer otlpTOK3")
    assert status[0] == status_json[0] == 0, status
    otlp = json.loads(status_json[1])["otlp"]
    assert otlp["endpoints"] == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otlpuser:****@127.0.0.1:1/?api_key=****"
    }
    assert otlp["headers"] == {"authorization": "****", "x-honeycomb-team": "****"}
    assert "headers authorization=****, x-honeycomb-team=****" in status[1]
    assert resend[0] == 1 and "cannot be reached" in resend[2]
    assert "http://u:****@127.0.0.1:1/v1/traces?token=****" in resend[2]
    assert bad_header[0] == 1 and "use KEY=VALUE" in bad_header[2]
    conn = sqlite3.connect(store)
    try:
        reports = conn.execute("SELECT target, last_error FROM otel_export").fetchall()
    finally:
        conn.close()
    assert reports and all(target.startswith("http://otlpuser:****@") for target, _ in reports)
    shown = [demo.stdout, demo.stderr, *status[1:], *status_json[1:], *resend[1:], *bad_header[1:]]
    _assert_hidden("".join(shown) + json.dumps(reports), OTLP_SECRETS)
