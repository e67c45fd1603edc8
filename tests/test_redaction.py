"""Redaction on by default (issue 2, point 4): secrets in arguments, outputs, LLM
messages, errors and logs are replaced before they reach the store or an exporter.

The secrets are built at run time so that no source line (which a traceback would
quote) contains them literally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import steptrace as st
from steptrace.record import counters
from tests.support.helpers import is_postgres, raw_sql

pytestmark = pytest.mark.usefixtures("store_url")  # every test on both backends

REDACTED = "[REDACTED]"
OPENAI_KEY = "sk-" + "proj" + "Q7x9" * 10
ANTHROPIC_KEY = "sk-ant-" + "api03-" + "Zz81" * 8
PASSWORD = "hunter2" + "-correct-horse-battery"
BEARER_TOKEN = "eyJhbGciOiJIUzI1NiJ9" + ".c2VjcmV0LXBheWxvYWQ.sig"
BASIC_CREDENTIALS = "dXNlcjpw" + "YXNzd29yZA=="
SESSION_COOKIE = "sess" + "ion=4f1c0ffee" + "deadbeef"
OUTPUT_TOKEN = "tok" + "-output-secret-9931"
LOG_TOKEN = "logbearer" + "Token123456789"
VISIBLE = "visible-" + "marker-value"

ALL_SECRETS = [
    OPENAI_KEY,
    ANTHROPIC_KEY,
    PASSWORD,
    BEARER_TOKEN,
    BASIC_CREDENTIALS,
    SESSION_COOKIE,
    OUTPUT_TOKEN,
    LOG_TOKEN,
]

log = logging.getLogger("tests.redaction")


@pytest.fixture
def warning_logs() -> Iterator[None]:
    """Make sure WARNING records are created whatever the root logger's level."""
    previous = log.level
    log.setLevel(logging.INFO)
    yield
    log.setLevel(previous)


def _attribute_text(value: Any) -> str:
    if isinstance(value, str | bytes):
        return value if isinstance(value, str) else value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return " ".join(_attribute_text(v) for v in value)
    return str(value)


def _exported_attribute_text(exporter: InMemorySpanExporter) -> str:
    parts: list[str] = []
    st.flush()  # the writer ends spans once their values are redacted
    for span in exporter.get_finished_spans():
        parts.append(span.name)
        for key, value in (span.attributes or {}).items():
            parts.append(f"{key}={_attribute_text(value)}")
        for event in span.events:
            for key, value in (event.attributes or {}).items():
                parts.append(f"{key}={_attribute_text(value)}")
    return "\n".join(parts)


def _store_bytes(store_path: Path) -> bytes:
    """Every byte SQLite wrote for the store: the file, its WAL and shared memory; on
    PostgreSQL, every row of every table as text."""
    st.flush()
    configured = os.environ.get("STEPTRACE_STORE", "")
    if is_postgres(configured):
        rows = [
            row
            for table in ("runs", "spans", "llm_calls", "logs")
            for row in raw_sql(configured, f"SELECT t::text FROM {table} t")
        ]
        assert rows
        return "\n".join(str(r[0]) for r in rows).encode()
    files = sorted(store_path.parent.glob(store_path.name + "*"))
    assert store_path in files
    return b"".join(f.read_bytes() for f in files)


def _secret_workflow() -> Any:
    st.llm.script(
        "redact",
        lambda messages, **params: f"reply mentions Bearer {BEARER_TOKEN} and {ANTHROPIC_KEY}",
    )

    @st.step
    def call_api(
        url: str, api_key: str, password: str, headers: dict[str, Any], note: str
    ) -> dict[str, Any]:
        log.warning("calling %s with Authorization: Bearer %s", url, LOG_TOKEN)
        return {
            "status": 200,
            "session_token": OUTPUT_TOKEN,
            "echo": f"used key {api_key}",
            "visible": VISIBLE,
        }

    @st.step
    def ask_model(question: str) -> str:
        reply = st.llm.chat(
            model="scripted:redact",
            messages=[
                {"role": "system", "content": f"Use the key {OPENAI_KEY} for lookups."},
                {"role": "user", "content": question},
            ],
            api_key=OPENAI_KEY,
            max_tokens=64,
        )
        return reply.text

    @st.workflow
    def wf(user: str, password: str) -> dict[str, Any]:
        api_result = call_api(
            "https://api.example.test/v1",
            api_key=OPENAI_KEY,
            password=password,
            headers={
                "Authorization": f"Basic {BASIC_CREDENTIALS}",
                "X-Request": VISIBLE,
                "nested": {"Cookie": SESSION_COOKIE},
            },
            note=f"caller said Bearer {BEARER_TOKEN}",
        )
        answer = ask_model(f"what does {ANTHROPIC_KEY} unlock?")
        return {"api": api_result, "answer": answer, "user": user}

    return wf


def test_secrets_are_redacted_in_arguments_outputs_llm_calls_and_logs(
    warning_logs: None,
) -> None:
    wf = _secret_workflow()
    result = wf("ada", password=PASSWORD)
    # the workflow itself sees the real values
    assert result["api"]["session_token"] == OUTPUT_TOKEN
    assert OPENAI_KEY in result["api"]["echo"]
    assert BEARER_TOKEN in result["answer"]

    run = st.last_run()
    assert run is not None
    assert run.input == {"user": "ada", "password": REDACTED}

    (call_api,) = run.steps("call_api")
    assert call_api.input["api_key"] == REDACTED
    assert call_api.input["password"] == REDACTED
    assert call_api.input["headers"]["Authorization"] == REDACTED
    assert call_api.input["headers"]["nested"]["Cookie"] == REDACTED
    assert call_api.input["headers"]["X-Request"] == VISIBLE  # the rest is kept
    assert call_api.input["url"] == "https://api.example.test/v1"
    assert call_api.input["note"] == f"caller said Bearer {REDACTED}"
    assert call_api.output["session_token"] == REDACTED
    assert call_api.output["echo"] == f"used key {REDACTED}"
    assert call_api.output["status"] == 200
    (entry,) = call_api.logs
    assert entry["message"] == (
        f"calling https://api.example.test/v1 with Authorization: Bearer {REDACTED}"
    )

    (ask,) = run.steps("ask_model")
    assert ask.input == {"question": f"what does {REDACTED} unlock?"}
    assert ask.output == f"reply mentions Bearer {REDACTED} and {REDACTED}"
    (llm_span,) = run.children(ask.span_id)
    assert llm_span.llm is not None
    assert llm_span.llm["messages"] == [
        {"role": "system", "content": f"Use the key {REDACTED} for lookups."},
        {"role": "user", "content": f"what does {REDACTED} unlock?"},
    ]
    assert llm_span.llm["response"] == f"reply mentions Bearer {REDACTED} and {REDACTED}"
    assert llm_span.llm["params"] == {"api_key": REDACTED, "max_tokens": 64}

    assert run.output["api"]["session_token"] == REDACTED
    assert run.output["user"] == "ada"

    text = str(run.to_dict())
    for secret in ALL_SECRETS:
        assert secret not in text, secret


def test_secrets_never_reach_exported_span_attributes(
    warning_logs: None, span_exporter: InMemorySpanExporter
) -> None:
    wf = _secret_workflow()
    wf("ada", password=PASSWORD)
    text = _exported_attribute_text(span_exporter)
    assert VISIBLE in text  # the scan does look at the values
    assert REDACTED in text
    for secret in ALL_SECRETS:
        assert secret not in text, secret


def test_secrets_never_reach_the_stored_bytes(warning_logs: None, store_path: Path) -> None:
    wf = _secret_workflow()
    wf("ada", password=PASSWORD)
    raw = _store_bytes(store_path)
    assert VISIBLE.encode() in raw  # the scan does see stored values
    for secret in ALL_SECRETS:
        assert secret.encode() not in raw, secret


def test_exception_messages_and_tracebacks_are_redacted(store_path: Path) -> None:
    @st.step
    def connect(dsn: str) -> None:
        raise ConnectionError(f"auth failed for key {OPENAI_KEY}")

    @st.workflow
    def wf() -> None:
        connect("db://host")

    with pytest.raises(ConnectionError) as info:
        wf()
    assert OPENAI_KEY in str(info.value)  # the exception itself is untouched
    run = st.last_run()
    assert run is not None
    for error in (run.error, run.steps()[0].error):
        assert error is not None
        assert error["message"] == f"auth failed for key {REDACTED}"
        assert OPENAI_KEY not in error["traceback"]
        assert REDACTED in error["traceback"]
    assert OPENAI_KEY.encode() not in _store_bytes(store_path)


def test_exception_messages_are_redacted_in_exported_span_status(
    span_exporter: InMemorySpanExporter,
) -> None:
    @st.step
    def connect() -> None:
        raise ConnectionError(f"auth failed for key {OPENAI_KEY}")

    @st.workflow
    def wf() -> None:
        connect()

    with pytest.raises(ConnectionError):
        wf()
    st.flush()
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2
    descriptions = [s.status.description or "" for s in spans]
    assert all("ConnectionError" in d for d in descriptions)
    for description in descriptions:
        assert OPENAI_KEY not in description


def test_secret_shaped_dict_keys_are_redacted(
    store_path: Path, span_exporter: InMemorySpanExporter
) -> None:
    @st.step
    def cache(entries: dict[str, str], token: str) -> int:
        return len(entries)

    @st.workflow
    def wf() -> int:
        return cache({OPENAI_KEY: "user-1"}, token="t")

    assert wf() == 1
    assert OPENAI_KEY not in _exported_attribute_text(span_exporter)
    assert OPENAI_KEY.encode() not in _store_bytes(store_path)


def test_key_matching_is_case_and_style_insensitive_but_not_greedy() -> None:
    @st.step
    def configure_client(settings: dict[str, Any]) -> None:
        return None

    @st.workflow
    def wf() -> None:
        configure_client(
            {
                "apiKey": "v1" + "-abc",
                "X-Api-Key": "v2" + "-abc",
                "OPENAI_API_KEY": "v3" + "-abc",
                "db_password": "v4" + "-abc",
                "client-secret": "v5" + "-abc",
                "refresh_token": "v6" + "-abc",
                "max_tokens": 256,
                "input_tokens": 10,
                "tokenizer": "cl100k",
                "author": "someone",
                "empty_password": None,
            }
        )

    wf()
    run = st.last_run()
    assert run is not None
    settings = run.steps()[0].input["settings"]
    for key in ("apiKey", "X-Api-Key", "OPENAI_API_KEY", "db_password", "client-secret"):
        assert settings[key] == REDACTED, key
    assert settings["refresh_token"] == REDACTED
    assert settings["max_tokens"] == 256
    assert settings["input_tokens"] == 10
    assert settings["tokenizer"] == "cl100k"
    assert settings["author"] == "someone"
    assert settings["empty_password"] is None


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("AKIA" + "ABCDEFGHIJKLMNOP", id="aws"),
        pytest.param("ghp_" + "a" * 36, id="github"),
        pytest.param("xoxb-" + "1234567890-abc", id="slack"),
        pytest.param("AIza" + "B" * 35, id="google"),
        pytest.param("sk-ant-" + "x" * 20, id="anthropic"),
        pytest.param("bearer " + "lowercase.token.value", id="bearer-lowercase"),
    ],
)
def test_provider_shaped_strings_are_redacted_anywhere(secret: str) -> None:
    # an auth scheme is kept in sight, its credentials are not
    shown = "bearer " + REDACTED if secret.startswith("bearer ") else REDACTED

    @st.step
    def echo(text: str) -> str:
        return text

    @st.workflow
    def wf() -> str:
        return echo(f"before {secret} after")

    wf()
    run = st.last_run()
    assert run is not None
    assert run.steps()[0].input == {"text": f"before {shown} after"}
    assert run.steps()[0].output == f"before {shown} after"


def test_redactions_are_counted() -> None:
    before = counters.snapshot()["redacted"]

    @st.step
    def s(password: str) -> None:
        return None

    @st.workflow
    def wf() -> None:
        s(PASSWORD)

    wf()
    st.flush()  # step values are redacted by the writer thread
    assert counters.snapshot()["redacted"] > before


def test_extra_secret_keys_and_patterns_are_configurable(store_path: Path) -> None:
    st.configure(extra_secret_keys=["ssn"], extra_secret_patterns=[r"ACME-\d{6}"])
    acme = "ACME-" + "123456"

    @st.step
    def enroll(ssn: str, note: str, api_key: str) -> str:
        return note

    @st.workflow
    def wf() -> str:
        return enroll("078-05-1120", f"customer id {acme}", OPENAI_KEY)

    wf()
    run = st.last_run()
    assert run is not None
    step_input = run.steps()[0].input
    assert step_input == {"ssn": REDACTED, "note": f"customer id {REDACTED}", "api_key": REDACTED}
    assert acme.encode() not in _store_bytes(store_path)


def test_secret_rules_can_be_replaced() -> None:
    st.configure(secret_keys=["pin"], secret_patterns=[r"PIN\d{4}"])

    @st.step
    def s(pin: str, password: str, note: str) -> None:
        return None

    @st.workflow
    def wf() -> None:
        s("1234", "plain", "code PIN9876 and " + OPENAI_KEY)

    wf()
    run = st.last_run()
    assert run is not None
    assert run.steps()[0].input == {
        "pin": REDACTED,
        "password": "plain",  # no longer a secret key
        "note": f"code {REDACTED} and {OPENAI_KEY}",
    }


def test_redact_false_stores_values_as_they_are(warning_logs: None) -> None:
    st.configure(redact=False)

    @st.step
    def s(api_key: str) -> str:
        log.warning("token Bearer %s", LOG_TOKEN)
        return api_key

    @st.workflow
    def wf() -> str:
        return s(OPENAI_KEY)

    wf()
    run = st.last_run()
    assert run is not None
    (span,) = run.steps()
    assert span.input == {"api_key": OPENAI_KEY}
    assert span.output == OPENAI_KEY
    assert span.logs[0]["message"] == f"token Bearer {LOG_TOKEN}"


def test_invalid_secret_pattern_fails_at_configure() -> None:
    with pytest.raises(st.ConfigError, match="not a valid regex"):
        st.configure(extra_secret_patterns=["(unclosed"])


def test_configured_pattern_with_alternation_is_applied() -> None:
    st.configure(extra_secret_patterns=[r"ACME-\d{6}|ZETA-\d{6}"])
    zeta = "ZETA-" + "654321"

    @st.step
    def echo(text: str) -> str:
        return text

    @st.workflow
    def wf() -> str:
        return echo(f"customer {zeta}")

    wf()
    run = st.last_run()
    assert run is not None
    assert run.steps()[0].input == {"text": f"customer {REDACTED}"}


def test_bearer_token_after_a_tab_is_redacted_in_values() -> None:
    @st.step
    def echo(header: str) -> str:
        return header

    @st.workflow
    def wf() -> str:
        return echo(f"Bearer\t{BEARER_TOKEN}")

    wf()
    run = st.last_run()
    assert run is not None
    assert BEARER_TOKEN not in str(run.steps()[0].input)


def test_configured_pattern_cannot_corrupt_the_stored_json() -> None:
    st.configure(extra_secret_patterns=[r"PIN:\S+"])

    @st.step
    def unlock(note: str, attempts: int) -> str:
        return "ok"

    @st.workflow
    def wf() -> str:
        return unlock("PIN:" + "4321", attempts=3)

    assert wf() == "ok"
    run = st.last_run()
    assert run is not None
    assert run.steps()[0].input == {"note": REDACTED, "attempts": 3}


def test_validation_error_text_does_not_leak_keyed_secrets(store_path: Path) -> None:
    import pydantic

    class Login(pydantic.BaseModel):
        user: str
        email: str

    short_password = "hunter2" + "-xyz"  # pydantic elides the middle of long input reprs

    @st.step(output=Login)
    def parse() -> dict[str, str]:
        return {"user": "ada", "password": short_password}

    @st.workflow
    def wf() -> Login:
        return parse()

    with pytest.raises(pydantic.ValidationError):
        wf()
    run = st.last_run()
    assert run is not None
    (attempt,) = run.steps()
    assert attempt.output == {"user": "ada", "password": REDACTED}  # the value is redacted
    assert short_password.encode() not in _store_bytes(store_path)  # ...not the error text


# --- the batch scan -------------------------------------------------------------------


def _scan_cases() -> Any:
    from hypothesis import strategies as hs

    from steptrace.record import pipeline

    redactor = pipeline().redactor
    assert redactor is not None
    word = hs.sampled_from(redactor.words)
    cased = word.flatmap(
        lambda w: hs.lists(hs.booleans(), min_size=len(w), max_size=len(w)).map(
            lambda ups: "".join(c.upper() if u else c for c, u in zip(w, ups, strict=True))
        )
    )
    filler = hs.text(alphabet="abcdefgh ijk_-./:", max_size=12)
    piece = hs.one_of(filler, cased)
    value = hs.lists(piece, max_size=6).map(lambda parts: "".join(parts).encode())
    return hs.lists(value, min_size=1, max_size=8)


def test_the_batch_scan_flags_exactly_the_values_holding_a_hint_word() -> None:
    """Whatever the values, each is flagged iff it holds one of the words in any case
    (words inside words, several in one value, a word at a value's edge)."""
    from hypothesis import given, settings

    from steptrace.record import pipeline

    redactor = pipeline().redactor
    assert redactor is not None and not redactor.always

    @settings(max_examples=300, deadline=None)
    @given(_scan_cases())
    def check(values: list[bytes]) -> None:
        expected = [
            any(w.encode() in v.lower() for w in redactor.words)
            or any(p.search(v) for p in redactor._raw_prefilters)
            for v in values
        ]
        assert redactor.suspects(values) == expected

    check()
