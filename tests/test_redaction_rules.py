"""Each class of secret the redaction rules cover, through a real run into the SQLite
store and the OTel spans: mappings that are not dicts, objects recorded by their repr,
JSON carried in strings, URL credentials, JWTs and PEM keys, ``name=value`` in free
text (exception messages, chained causes, notes, logs), key names in every spelling,
foreign spans' attributes, and configured rules that could never match.

Secrets are built at run time so that no source line (which a traceback would quote)
holds one literally.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

import steptrace as st
from steptrace.config import ConfigError, get_config
from steptrace.record import input_hash
from steptrace.redaction import Redactor, normalize_key

REDACTED = "[REDACTED]"
log = logging.getLogger("tests.redaction_rules")


def secret(prefix: str = "", n: int = 24) -> str:
    """A unique secret (so a search for it can't match anything else)."""
    return prefix + secrets.token_hex(n)[:n]


def stored_bytes(store_path: Path) -> bytes:
    st.flush()
    return b"".join(f.read_bytes() for f in sorted(store_path.parent.glob(store_path.name + "*")))


def exported_text(spans: dict[str, ReadableSpan]) -> str:
    parts = []
    for span in spans.values():
        parts.append(str(span.status.description))
        for attributes in [span.attributes, *(e.attributes for e in span.events)]:
            parts.extend(f"{k}={v}" for k, v in (attributes or {}).items())
    return "\n".join(parts)


@pytest.fixture
def leaks(
    store_path: Path, exported: Callable[[], dict[str, ReadableSpan]]
) -> Callable[[list[str]], list[str]]:
    """The given secrets found in the store's bytes or the exported spans."""

    def find(hidden: list[str]) -> list[str]:
        where = stored_bytes(store_path) + exported_text(exported()).encode()
        return [s for s in hidden if s.encode() in where]

    return find


def echo_run(value: Any) -> Any:
    """The stored record of a run whose one step returns ``value``."""

    @st.step
    def echo(value: Any) -> Any:
        return value

    @st.workflow
    def wf(value: Any) -> Any:
        return echo(value)

    return st.run(wf, value).record()


# --- structure -----------------------------------------------------------------------


class Settings(Mapping[str, Any]):
    def __init__(self, **values: Any) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclasses.dataclass
class Login:
    user: str
    dbPassword: str


def test_every_mapping_and_header_pairs_are_walked_like_dicts(leaks: Any) -> None:
    hidden = [secret() for _ in range(6)]
    value = {
        "login": Login("ada", hidden[5]),
        "proxy": types.MappingProxyType({"password": hidden[0], "user": "ada"}),
        "user_dict": collections.UserDict({"api_key": hidden[1]}),
        "custom": Settings(client_secret=hidden[2], region="eu"),
        "ordered": collections.OrderedDict(token=hidden[3]),
        "headers": [("Authorization", "Bearer " + hidden[4]), ("Accept", "json")],
    }
    run = echo_run(value)
    assert leaks(hidden) == []
    step = run.steps()[0]
    assert step.output["proxy"] == {"password": REDACTED, "user": "ada"}
    assert step.output["custom"] == {"client_secret": REDACTED, "region": "eu"}
    assert step.output["headers"] == [["Authorization", REDACTED], ["Accept", "json"]]


class Client:
    """An object orjson cannot serialise: stored by its repr."""

    def __init__(self, key: str, host: str) -> None:
        self.key = key
        self.api_key = key
        self.host = host

    def __repr__(self) -> str:
        return f"Client({self.key!r}, host={self.host!r})"


class TalkativeClient:
    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"<TalkativeClient token={self.token}>"


def test_objects_recorded_by_repr_are_redacted_by_attribute_name_and_pattern(
    leaks: Any,
) -> None:
    hidden = [secret(), secret()]
    run = echo_run({"client": Client(hidden[0], "api.test"), "other": TalkativeClient(hidden[1])})
    assert leaks(hidden) == []
    stored = run.steps()[0].output["client"]
    assert stored["__steptrace__"] == "unserializable"
    assert stored["repr"] == f"Client({REDACTED}, host='api.test')"


def test_json_carried_in_strings_is_redacted_structurally(leaks: Any) -> None:
    hidden = [secret(), secret(), secret()]
    arguments = orjson.dumps({"query": "weather", "password": hidden[0]}).decode()
    body = orjson.dumps([{"name": "x", "apiKey": hidden[1]}]).decode()
    nested = orjson.dumps({"inner": orjson.dumps({"token": hidden[2]}).decode()}).decode()
    run = echo_run({"arguments": arguments, "body": body, "nested": nested, "plain": "{not json"})
    assert leaks(hidden) == []
    out = run.steps()[0].output
    assert orjson.loads(out["arguments"]) == {"query": "weather", "password": REDACTED}
    assert out["plain"] == "{not json"


def test_url_credentials_and_secret_query_parameters(leaks: Any) -> None:
    hidden = [secret() for _ in range(5)]
    urls = [
        f"postgresql://app:{hidden[0]}@db.internal:5432/prod",
        f"https://api.example.test/v1?api_key={hidden[1]}&page=2",
        f"redis://:{hidden[2]}@cache:6379/0",
        f"https://x-access-token:{hidden[3]}@git.example.test/org/repo.git",
        f"https://h.test/cb?code=1&access_token={hidden[4]}#frag",
    ]
    run = echo_run({"note": " and ".join(urls)})
    assert leaks(hidden) == []
    note = run.steps()[0].output["note"]
    assert f"postgresql://app:{REDACTED}@db.internal:5432/prod" in note
    assert f"?api_key={REDACTED}&page=2" in note


def test_jwts_pem_blocks_and_provider_keys(leaks: Any) -> None:
    body = "\n".join(secret(n=64) for _ in range(4))
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIx" + secret() + "." + secret(n=43)
    keys = [
        "sk-proj-" + secret(n=40),
        "sk_live_" + secret(n=24),
        "glpat-" + secret(n=20),
        "hf_" + secret(n=34),
        "github_pat_" + secret(n=40),
        "ASIA" + secret(n=16).upper(),
        "SG." + secret(n=22) + "." + secret(n=43),
        "ya29." + secret(n=40),
        "gsk_" + secret(n=40),
    ]
    truncated_pem = "-----BEGIN PRIVATE KEY-----\n" + secret(n=64)
    run = echo_run({"pem": pem, "text": f"token {jwt} here", "keys": keys, "cut": truncated_pem})
    assert leaks([*body.splitlines(), jwt, *keys, truncated_pem.splitlines()[1]]) == []
    out = run.steps()[0].output
    assert out["pem"] == REDACTED
    assert out["keys"] == [REDACTED] * len(keys)


def test_name_value_secrets_in_exceptions_causes_notes_and_logs(leaks: Any) -> None:
    hidden = [secret() for _ in range(7)]

    @st.step
    def connect() -> None:
        log.info(f"connecting with password={hidden[0]} to db")
        log.info("using %s", {"api_key": hidden[1]})
        try:
            raise ConnectionError(f"auth failed: client_secret: '{hidden[2]}'")
        except ConnectionError as cause:
            error = RuntimeError(f"DB_PASSWORD={hidden[3]} rejected")
            error.add_note(f"retry with secret_key = {hidden[4]}")
            try:
                raise error from cause
            except RuntimeError:
                log.exception(f"failed (Authorization: Bearer {hidden[5]})")
                raise

    @st.workflow
    def wf() -> None:
        try:
            connect()
        except RuntimeError:
            raise ValueError(f"passphrase={hidden[6]}") from None

    with pytest.raises(ValueError):
        wf()
    assert leaks(hidden) == []
    run = st.last_run()
    assert run is not None
    logs = [entry["message"] for entry in run.steps()[0].logs]
    # an unquoted value runs to the end of the line: a password may hold spaces
    assert f"connecting with password={REDACTED}" in logs
    assert f"using {{'api_key': '{REDACTED}'}}" in logs


@pytest.mark.parametrize(
    "key",
    [
        "DBPassword",
        "dbPassword",
        "db-password",
        "DB_PASSWORD",
        "dbpassword",
        "secret_key",
        "SECRET_KEY",
        "aws_secret_access_key",
        "passphrase",
        "DATABASE_URL",
        "X-Api-Key",
        "apiKey",
        "privateKey",
        "clientSecret",
        "OPENAI_API_KEY",
        "x-auth-token",
        "Set-Cookie",
        "db.password",
    ],
)
def test_key_names_in_every_spelling(key: str) -> None:
    redactor = Redactor(text=REDACTED, secret_keys=get_config().secret_keys, secret_patterns=())
    assert redactor.is_secret_key(key), normalize_key(key)
    hidden = "hunter2-" + secret(n=8)
    assert redactor.redact_value({key: hidden}) == {key: REDACTED}
    assert hidden not in redactor.redact_text(f"{key}={hidden} and {key}: {hidden}")


@pytest.mark.parametrize(
    "key", ["max_tokens", "token_count", "author", "keyboard", "monkey", "session_count"]
)
def test_ordinary_key_names_are_kept(key: str) -> None:
    redactor = Redactor(text=REDACTED, secret_keys=get_config().secret_keys, secret_patterns=())
    assert not redactor.is_secret_key(key)
    assert redactor.redact_value({key: "visible"}) == {key: "visible"}


def test_custom_rules_camel_case_and_non_ascii_work(leaks: Any) -> None:
    st.configure(
        extra_secret_keys=["customerPin", "pässwort"],
        extra_secret_patterns=[r"acme-[0-9]{8}", r"Schlüssel-[A-Z]{6}"],
    )
    acme = "acme-" + str(secrets.randbelow(10**8)).zfill(8)
    german = "Schlüssel-" + "".join(secrets.choice("ABCDEFGHIJ") for _ in range(6))
    hidden = [secret(), secret()]
    run = echo_run(
        {
            "customer_pin": hidden[0],
            "PÄSSWORT": hidden[1],
            "note": f"ids {acme} and {german.upper()} {german}",
        }
    )
    assert leaks([*hidden, acme, german]) == []
    assert run.steps()[0].output["customer_pin"] == REDACTED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"extra_secret_patterns": ["^acme-[0-9]+$"]}, "anchored"),
        ({"extra_secret_patterns": [r"\Aacme"]}, "anchored"),
        ({"extra_secret_patterns": ["(acme)?"]}, "empty string"),
        ({"extra_secret_patterns": ["acme-[0-9"]}, "not a valid regex"),
        ({"extra_secret_keys": ["--"]}, "names no key"),
        ({"extra_secret_keys": ["*"]}, "names no key"),
    ],
)
def test_custom_rules_that_cannot_work_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        st.configure(**kwargs)


def test_character_classes_with_carets_are_not_anchors() -> None:
    st.configure(extra_secret_patterns=[r"acme-[^\s]{8}", r"cost\$[0-9]+"])


def test_input_hash_is_of_the_redacted_input(store_path: Path) -> None:
    """Two inputs that differ only in a redacted secret hash alike: the hash can't be
    used to test guesses of the secret."""

    @st.step
    def login(user: str, password: str) -> str:
        return user

    @st.workflow
    def wf(password: str) -> str:
        return login("ada", password)

    first = st.run(wf, "hunter2")
    second = st.run(wf, "correct-horse")
    hashes = [run.record().steps()[0].input_hash for run in (first, second)]
    assert hashes[0] == hashes[1]
    redacted = orjson.dumps({"user": "ada", "password": REDACTED})
    assert hashes[0] == input_hash(redacted)
    assert hashes[0] != input_hash(orjson.dumps({"user": "ada", "password": "hunter2"}))


def test_foreign_span_attributes_are_redacted_before_any_exporter(
    leaks: Any, exported: Callable[[], dict[str, ReadableSpan]]
) -> None:
    hidden = [secret() for _ in range(4)]
    tracer = trace.get_tracer("tests.other-instrumentation")

    @st.step
    def fetch() -> None:
        with tracer.start_as_current_span(
            "GET",
            attributes={
                "url.full": f"https://u:{hidden[0]}@api.test/x?api_key={hidden[1]}",
                "http.request.header.authorization": ("Bearer " + hidden[2],),
                "http.response.status_code": 200,
            },
        ) as span:
            span.add_event("exception", {"exception.message": f"password={hidden[3]}"})

    @st.workflow
    def wf() -> None:
        fetch()

    wf()
    assert leaks(hidden) == []
    [span] = [s for s in exported().values() if s.name == "GET"]
    assert span.attributes is not None
    assert span.attributes["http.request.header.authorization"] == (REDACTED,)
    assert span.attributes["http.response.status_code"] == 200


secret_text = hs.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=30)
json_leaf = hs.one_of(
    hs.none(), hs.booleans(), hs.integers(-(2**63), 2**63 - 1), hs.text(max_size=20)
)
json_values = hs.recursive(
    json_leaf,
    lambda inner: (
        hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
secret_key = hs.sampled_from(
    ["password", "api_key", "Authorization", "clientSecret", "DB_PASSWORD", "x-api-key"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values, key=secret_key, hidden=secret_text, where=hs.integers(0, 3))
def test_a_secret_under_a_secret_key_never_survives(
    data: Any, key: str, hidden: str, where: int
) -> None:
    """Property: wherever a secret-keyed value sits in arbitrary JSON (a dict, a JSON
    string inside it, a header pair, a ``name=value`` text), it is gone."""
    hidden = "s3cr3t" + hidden
    carriers: list[Any] = [
        {key: hidden},
        orjson.dumps({key: hidden}).decode(),
        [[key, hidden]],
        f"{key}={hidden}",
    ]
    value = {"data": data, "carrier": carriers[where]}
    redactor = Redactor(
        text=REDACTED,
        secret_keys=get_config().secret_keys,
        secret_patterns=get_config().secret_patterns,
    )
    redacted, _ = redactor.redact_json(orjson.dumps(value))
    assert hidden.encode() not in redacted
    assert orjson.loads(redacted)["data"] == redactor.redact_value(data)
