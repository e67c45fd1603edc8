"""Nothing lost to poison: no text or value, from user code or from a model provider,
makes the store lose a record, its own or another run's.

Property tests (hypothesis) put arbitrary text — lone surrogates, NUL, control
characters, quotes, huge strings, incompressible long strings — and arbitrary JSON-ish
values into every field a run has: workflow, step and tool names, tags, inputs and
outputs (keys and values), exception types and messages, logger names and log
messages, OpenTelemetry span names and attribute keys, scripted model names, params,
replies, finish reasons and tool calls, and the model, content, finish reason and tool
calls an OpenAI-compatible server on loopback sends to the real ``openai`` SDK. Each
example records clean runs on both sides of the poisoned one, flushes, and counts the
rows by SQL with the engine's own driver: every run, span, LLM call and log record
recorded is stored, text as text the engine accepts (lone surrogates and NUL read back
as U+FFFD). A record the store still refuses (here: a trigger the test adds) is
quarantined alone: every other record of the batch is stored, and ``st.health()``
counts it. Both backends: a SQLite file and a PostgreSQL server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as hs
from opentelemetry import trace

import steptrace as st
from steptrace.llm import Reply, ToolCall
from tests.support.helpers import is_postgres, raw_sql
from tests.support.openai_server import Answer, FakeOpenAI

Query = Callable[..., list[tuple[Any, ...]]]

HEALTH_KEYS = {
    "written",
    "spilled",
    "replayed",
    "quarantined",
    "lost",
    "sanitized",
    "queued",
    "queued_bytes",
    "journal_bytes",
    "state",
    "last_error",
    "store",
}

pytestmark = pytest.mark.filterwarnings(
    # a failing example's huge strings: hypothesis warns that their repr is long
    "ignore:Generating overly large repr"
)

SETTINGS = settings(
    # 15 generated examples a property in the suite (each records several runs and waits
    # for the store); STEPTRACE_POISON_EXAMPLES=200 searches longer.
    max_examples=int(os.environ.get("STEPTRACE_POISON_EXAMPLES", "15")),
    deadline=None,
    # Each example writes several runs and waits for the store: shrinking a failure
    # takes minutes, so it is opt-in (STEPTRACE_POISON_SHRINK=1) while debugging.
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("STEPTRACE_POISON_SHRINK") else []),
    database=None,  # no .hypothesis/ directory in the checkout
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one store per test, shared by its examples
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --- durability levels --------------------------------------------------------------------


def _supports_durable() -> bool:
    return "durable" in inspect.signature(st.configure).parameters


LEVELS = ("off", "run", "step") if _supports_durable() else (None,)
"""The durability levels the core offers; ``None`` (a core without them) is the
fire-and-forget writer of old, i.e. ``off``."""


def set_durability(level: str | None) -> None:
    if level is not None:
        st.configure(durable=level)  # type: ignore[call-arg]


def health() -> dict[str, Any]:
    """``st.health()``, checked for the keys the contract names."""
    report: dict[str, Any] = st.health()  # type: ignore[attr-defined]
    assert set(report) >= HEALTH_KEYS, sorted(HEALTH_KEYS - set(report))
    return report


# --- text and values ----------------------------------------------------------------------

SPECIAL_CHARS = (
    "\x00",
    "\udcff",  # b"\xff".decode("utf-8", "surrogateescape")
    "\ud800",
    "\udfff",
    "\ud83d",  # half of a pair
    "\ufffd",
    "\x01",
    "\x1b",
    "\x7f",
    "\u2028",
    "\ufeff",
    "\n",
    "\r",
    "\t",
    "%",
    "'",
    '"',
    "\\",
    "😀",
    "\U0010ffff",
)
SPECIAL_STRINGS = ("%s", "%(name)s", "\\u0000", '{"', "\ud83d\ude00", "'; --", "\r\n")
"""Pieces that mean something to a formatter, a JSON reader or SQL."""

_char = hs.one_of(
    hs.characters(),  # every category but Cs
    hs.characters(categories=["Cs"]),  # lone surrogates, which hypothesis leaves out by default
    hs.characters(max_codepoint=0x1F),  # NUL and the other C0 controls
    hs.sampled_from(SPECIAL_CHARS),
)
_small_text = hs.lists(hs.one_of(_char, hs.sampled_from(SPECIAL_STRINGS)), max_size=24).map("".join)


def _incompressible(seed: int, size: int) -> str:
    rng = random.Random(seed)
    return "".join(
        chr(rng.choice((rng.randrange(0x20, 0xD800), rng.randrange(0, 0x20), 0xDCFF)))
        for _ in range(size)
    )


_huge_text = hs.one_of(
    # large and repetitive: 64 K .. 1.2 M characters (the default value cap is 1 MiB)
    hs.builds(
        lambda unit, size: ((unit or "\x00") * (size // max(1, len(unit)) + 1))[:size],
        _small_text,
        hs.integers(64_000, 1_200_000),
    ),
    # a few KB nothing compresses (over PostgreSQL's 2,704-byte index entry limit)
    hs.builds(_incompressible, hs.integers(0, 2**32), hs.integers(2_800, 6_000)),
)

TEXT = hs.integers(0, 15).flatmap(lambda n: _huge_text if n == 15 else _small_text)
"""Any text; one in sixteen is huge."""
NAME = TEXT.filter(bool)
"""Non-empty text (a name that is empty falls back to the function's name)."""
NO_SURROGATES = hs.text(alphabet=hs.characters(), min_size=1, max_size=24)
"""Text an HTTP client can send: it encodes to UTF-8 (NUL and controls included)."""
TYPE_NAME = hs.text(
    alphabet=hs.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=24
)
"""What ``type()`` takes as a class name (no surrogates, no NUL)."""

VALUE = hs.recursive(
    hs.none()
    | hs.booleans()
    | hs.integers()  # unbounded: past 64 bits too
    | hs.floats()  # NaN and infinities too
    | TEXT,
    lambda children: (
        hs.lists(children, max_size=4)
        | hs.dictionaries(hs.one_of(_small_text, hs.integers()), children, max_size=4)
    ),
    max_leaves=10,
)
"""Arbitrary JSON-ish values: keys and strings of any text."""


def is_poison(text: str) -> bool:
    return any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in text)


def sanitized(text: str, way: str = "each") -> str:
    """``text`` with NUL replaced by U+FFFD and lone surrogates replaced one of three
    ways: ``each`` by one U+FFFD; ``pairs`` the same, but a high surrogate followed by a
    low one read as the pair's character; ``bytes`` by one U+FFFD per byte of its UTF-8
    form (three: ``encode("utf-8", "surrogatepass")`` then ``decode("utf-8", "replace")``)."""
    text = text.replace("\x00", "\ufffd")
    if way == "bytes":
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if way == "pairs":
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return "".join("\ufffd" if is_poison(c) else c for c in text)


WAYS = ("each", "pairs", "bytes")


def storable(text: str) -> set[str]:
    """What ``text`` may read back as from the store."""
    return {sanitized(text, way) for way in WAYS}


def assert_clean(value: Any, where: str) -> None:
    """No NUL and no lone surrogate in a stored value (JSON text is read as JSON)."""
    if isinstance(value, str):
        poisoned = is_poison(value)
        assert not poisoned, f"{where} holds NUL or a lone surrogate: {value[:200]!r}"
        if value[:1] in ("{", "[", '"'):
            try:
                parsed = json.loads(value)
            except ValueError:
                return
            assert_clean(parsed, f"a string in the JSON of {where}")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_clean(key, where)
            assert_clean(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            assert_clean(item, where)


# --- what one example records -------------------------------------------------------------


@dataclass(frozen=True)
class FromServer:
    """What the loopback OpenAI server answers, and how it is asked."""

    request_model: str
    prompt: str
    text: str
    model: str
    finish_reason: str
    call_id: str
    tool_name: str
    arguments: str
    stream: bool


@dataclass(frozen=True)
class Poison:
    workflow_name: str
    tag: str
    step_name: str
    tool_name: str
    span_name: str
    attribute_key: str
    attribute_value: str
    logger_name: str
    log_message: str
    error_type: str
    error_message: str
    model_name: str
    param_key: str
    prompt: str
    reply_text: str
    reply_model: str
    finish_reason: str
    call_id: str
    key: str
    value: Any
    fails: bool
    server: FromServer | None

    def texts(self) -> Iterator[str]:
        for name, item in vars(self).items():
            if isinstance(item, str):
                yield item
            elif name == "server" and item is not None:
                yield from (t for t in vars(item).values() if isinstance(t, str))


FROM_SERVER = hs.builds(
    FromServer,
    request_model=NO_SURROGATES,
    prompt=NO_SURROGATES,
    text=TEXT,
    model=TEXT,
    finish_reason=TEXT,
    call_id=TEXT,
    tool_name=TEXT,
    arguments=TEXT,
    stream=hs.booleans(),
)

POISON = hs.builds(
    Poison,
    workflow_name=NAME,
    tag=TEXT,
    step_name=NAME,
    tool_name=NAME,
    span_name=TEXT,
    attribute_key=NAME,
    attribute_value=TEXT,
    logger_name=TEXT,
    log_message=TEXT,
    error_type=TYPE_NAME,
    error_message=TEXT,
    model_name=NAME,
    param_key=TEXT.filter(lambda k: k not in ("model", "messages")),
    prompt=TEXT,
    reply_text=TEXT,
    reply_model=TEXT,
    finish_reason=TEXT,
    call_id=TEXT,
    key=TEXT,
    value=VALUE,
    fails=hs.booleans(),
    server=hs.none() | FROM_SERVER,
)

BAD = "\udcff\x00\ud800"
EVERYTHING_POISONED = Poison(
    workflow_name=f"wf{BAD}",
    tag=f"tag{BAD}",
    step_name=f"step{BAD}",
    tool_name=f"tool{BAD}",
    span_name=f"span{BAD}",
    attribute_key=f"attr{BAD}",
    attribute_value=f"value{BAD}",
    logger_name=f"logger{BAD}",
    log_message=f"message %s {BAD}",
    error_type="Error\u2028Type",
    error_message=f"boom{BAD}",
    model_name=f"model{BAD}",
    param_key=f"param{BAD}",
    prompt=f"prompt{BAD}",
    reply_text=f"reply{BAD}",
    reply_model=f"reply-model{BAD}",
    finish_reason=f"finish{BAD}",
    call_id=f"call{BAD}",
    key=f"key{BAD}",
    value={f"k{BAD}": [f"v{BAD}", 2**80, float("nan"), {BAD: None}], 1: "\x00" * 3},
    fails=True,
    server=FromServer(
        request_model="gpt\x00",
        prompt="hi\x00",
        text=f"content{BAD}",
        model=f"served{BAD}",
        finish_reason=f"stop{BAD}",
        call_id=f"id{BAD}",
        tool_name=f"fn{BAD}",
        arguments=f'{{"a": "{BAD}"',
        stream=False,
    ),
)


HUGE_NAMES = dataclasses.replace(
    EVERYTHING_POISONED,
    workflow_name="\x00" * 64_000,  # compresses, but not below the index entry limit
    step_name=_incompressible(1, 4_000),
    tool_name="t" * 300_000,
    span_name=_incompressible(2, 3_000),
    logger_name=_incompressible(3, 3_000),
    model_name=_incompressible(4, 3_000),
    reply_model="m" * 100_000,
)
"""Names past PostgreSQL's 2,704-byte index entry limit (the engine refuses such a row)."""


@dataclass
class Expected:
    """Rows a run must have: spans, LLM calls and log records from ``poison.*`` loggers."""

    status: str
    spans: int
    llm_calls: int
    logs: int


def record_poisoned(p: Poison, client: openai.OpenAI, server: FakeOpenAI) -> tuple[str, Expected]:
    """Run one workflow carrying ``p`` in every field; its run id and expected rows."""
    logger = logging.getLogger("poison." + p.logger_name)
    tracer = trace.get_tracer("tests.poison")
    error_type = type(p.error_type, (Exception,), {})

    def lookup(value: Any) -> Any:
        return value

    tool = st.tool(name=p.tool_name)(lookup)

    def gather(value: Any) -> Any:
        logger.warning(p.log_message)
        with tracer.start_as_current_span(p.span_name) as span:  # a foreign span
            span.set_attribute(p.attribute_key, p.attribute_value)
        return {p.key: tool(value), "sent": value}

    gather_step = st.step(name=p.step_name)(gather)

    def respond(messages: Any, **params: Any) -> Reply:
        return Reply(
            text=p.reply_text,
            model=p.reply_model,
            finish_reason=p.finish_reason,
            tool_calls=(ToolCall(p.call_id, p.tool_name, {p.key: p.value}),),
        )

    st.llm.script(p.model_name, respond)

    @st.step
    def ask(prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        return st.llm.chat(f"scripted:{p.model_name}", messages, **{p.param_key: p.value}).text

    @st.step
    def explode(message: str) -> None:
        raise error_type(message)

    @st.step
    def ask_server(s: FromServer) -> str:
        server.answer(
            Answer(
                text=s.text,
                model=s.model,
                finish_reason=s.finish_reason,
                tool_calls=[(s.call_id, s.tool_name, s.arguments)],
            )
        )
        messages: Any = [{"role": "user", "content": s.prompt}]
        try:
            if s.stream:
                chunks = client.chat.completions.create(
                    model=s.request_model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reply = client.chat.completions.create(model=s.request_model, messages=messages)
            return reply.choices[0].message.content or ""
        except Exception as exc:  # recorded on the LLM span either way
            return f"the SDK raised {type(exc).__name__}"

    def body(value: Any) -> Any:
        out = gather_step(value)
        ask(p.prompt)
        with contextlib.suppress(error_type):
            explode(p.error_message)
        if p.server is not None:
            ask_server(p.server)
        if p.fails:
            raise error_type(p.error_message)
        return out

    workflow = st.workflow(name=p.workflow_name, tags=[p.tag])(body)
    result = st.run(workflow, p.value)
    assert result.status == ("failed" if p.fails else "succeeded")
    spans = 6 + (2 if p.server is not None else 0)  # gather, tool, foreign, ask, llm, explode
    llm_calls = 1 + (1 if p.server is not None else 0)
    return result.run_id, Expected(result.status, spans, llm_calls, 1)


def neighbours(count: int) -> list[tuple[str, Expected]]:
    """``count`` clean runs: a step that logs, an LLM call."""
    st.llm.script("neighbour", ["fine"])
    logger = logging.getLogger("poison.neighbour")

    @st.step
    def prepare(i: int) -> dict[str, Any]:
        logger.warning("neighbour %d", i)
        return {"i": i, "pad": "x" * 200}

    @st.workflow(name="neighbour")
    def neighbour(i: int) -> str:
        prepare(i)
        return st.llm.chat("scripted:neighbour", [{"role": "user", "content": f"#{i}"}]).text

    out = []
    for i in range(count):
        result = st.run(neighbour, i)
        out.append((result.run_id, Expected("succeeded", 2, 1, 1)))
    return out


def stored(db: Query, run_ids: list[str]) -> dict[str, Expected]:
    """What the store holds for these runs, counted by SQL."""
    marks = ", ".join("?" for _ in run_ids)
    ids = tuple(run_ids)
    found = {
        run_id: Expected(status, 0, 0, 0)
        for run_id, status in db(f"SELECT run_id, status FROM runs WHERE run_id IN ({marks})", ids)
    }
    for table, extra, params in (
        ("spans", "", ()),
        ("llm_calls", "", ()),
        ("logs", " AND logger LIKE ?", ("poison.%",)),
    ):
        sql = (
            f"SELECT run_id, count(*) FROM {table} WHERE run_id IN ({marks}){extra} GROUP BY run_id"
        )
        for run_id, n in db(sql, ids + params):
            found.setdefault(run_id, Expected("(no run row)", 0, 0, 0))
            setattr(found[run_id], table, n)
    return found


def rows(store_url: str, table: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """Every column of ``table``'s rows for these runs, by column name, read with the
    engine's own driver (PostgreSQL's JSONB as its text, as SQLite gives JSON)."""
    marks = ", ".join("?" for _ in run_ids)
    sql = f"SELECT * FROM {table} WHERE run_id IN ({marks})"
    if is_postgres(store_url):
        import psycopg
        from psycopg.types.string import TextLoader

        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.adapters.register_loader("jsonb", TextLoader)
            cursor = conn.execute(sql.replace("?", "%s").encode(), tuple(run_ids))
            names = [c.name for c in cursor.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    conn = sqlite3.connect(store_url)
    try:
        cursor = conn.execute(sql, tuple(run_ids))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        conn.close()


def check_text(stored_text: str, given: str, what: str) -> None:
    """A name or message reads back as given, poison replaced (short text only: a huge
    one may be capped)."""
    if len(given) <= 200:
        assert stored_text in storable(given), f"{what}: {stored_text!r} from {given!r}"


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def client(openai_server: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0) as sdk:
        yield st.instrument(sdk)


# --- the properties -----------------------------------------------------------------------


@SETTINGS
@given(p=POISON, level=hs.sampled_from(LEVELS))
@example(p=EVERYTHING_POISONED, level=LEVELS[0])
@example(p=HUGE_NAMES, level=LEVELS[0])
def test_poison_in_any_field_loses_no_record(
    store_url: str,
    db: Query,
    client: openai.OpenAI,
    openai_server: FakeOpenAI,
    p: Poison,
    level: str | None,
) -> None:
    """Whatever text or value a run carries, in whichever field: that run and the clean
    runs recorded beside it are stored whole (every span, LLM call and log record), its
    text reads back without NUL or lone surrogates, and nothing is counted lost."""
    set_durability(level)
    before = health() if hasattr(st, "health") else None
    expected = dict(neighbours(3))
    poisoned_id, poisoned = record_poisoned(p, client, openai_server)
    expected[poisoned_id] = poisoned
    expected.update(neighbours(3))
    assert st.flush(timeout_s=30), st.health()

    assert stored(db, list(expected)) == expected

    tables = {t: rows(store_url, t, [poisoned_id]) for t in ("runs", "spans", "llm_calls", "logs")}
    for table, found in tables.items():
        for row in found:
            for column, cell in row.items():
                assert_clean(cell, f"{table}.{column}")
    (run,) = tables["runs"]
    check_text(run["workflow"], p.workflow_name, "workflow name")
    tags = json.loads(run["tags"]) if isinstance(run["tags"], str) else run["tags"]
    if len(p.tag) <= 200:
        assert len(tags) == 1 and tags[0] in storable(p.tag), tags
    names = {row["name"] for row in tables["spans"]}
    for given_name, what in ((p.step_name, "step"), (p.tool_name, "tool"), (p.span_name, "span")):
        if len(given_name) <= 200 and given_name:
            assert names & storable(given_name), f"{what} name {given_name!r} not in {names!r}"
    poisoned_logs = [r for r in tables["logs"] if r["logger"].startswith("poison.")]
    (log_row,) = poisoned_logs
    check_text(log_row["logger"], "poison." + p.logger_name, "logger name")
    check_text(log_row["message"], p.log_message, "log message")

    after = health()
    assert after["lost"] == (before["lost"] if before else 0)
    assert after["queued"] == 0
    if any(is_poison(t) for t in p.texts()):
        assert after["sanitized"] > (before["sanitized"] if before else 0)


@SETTINGS
@given(values=hs.lists(VALUE, min_size=1, max_size=6), level=hs.sampled_from(LEVELS))
@example(
    values=["\x00" * 5, {f"k{BAD}": [BAD, 2**70, None]}, BAD, {1: BAD}, [float("inf"), "\ud83d"]],
    level=LEVELS[0],
)
def test_arbitrary_values_in_many_runs_are_all_stored(
    store_url: str, db: Query, values: list[Any], level: str | None
) -> None:
    """Arbitrary JSON-ish values as inputs, outputs, dict keys and exception messages of
    several runs recorded back to back: every run and step attempt is stored, with the
    status it ended with, and each output is the value itself — the same structure, its
    text with U+FFFD for NUL and lone surrogates — not a placeholder for it."""
    set_durability(level)

    @st.step
    def echo(value: Any) -> Any:
        return {"echo": value}

    @st.step
    def refuse(value: Any) -> None:
        raise ValueError(value)

    @st.workflow(name="values")
    def wf(value: Any, fail: bool) -> Any:
        out = echo(value)
        if fail:
            refuse(value)
        return out

    expected = {}
    for i, value in enumerate(values):
        fail = i % 2 == 1
        result = st.run(wf, value, fail)
        expected[result.run_id] = Expected(result.status, 2 if fail else 1, 0, 0)
        assert result.status == ("failed" if fail else "succeeded")
    assert st.flush(timeout_s=30), st.health()
    assert stored(db, list(expected)) == expected
    for table in ("runs", "spans"):
        for row in rows(store_url, table, list(expected)):
            for column, cell in row.items():
                assert_clean(cell, f"{table}.{column}")
    outputs = {
        row["run_id"]: row["output"]
        for row in rows(store_url, "spans", list(expected))
        if row["name"] == "echo"
    }
    for run_id, value in zip(expected, values, strict=True):
        readable = [as_stored(value, way) for way in WAYS]
        if UNCHECKABLE not in readable:
            output = json.loads(outputs[run_id])
            assert any(same(output, {"echo": r}) for r in readable), first_difference(
                output, {"echo": readable[0]}
            )


def same(got: Any, want: Any) -> bool:
    """JSON equality, numbers compared as numbers (an engine may print a large float
    without its exponent, which reads back as an int)."""
    number = (int, float)
    if isinstance(got, number) and isinstance(want, number):
        if isinstance(got, bool) or isinstance(want, bool):
            return got is want
        return got == want or float(got) == float(want)
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    return type(got) is type(want) and got == want


def first_difference(got: Any, want: Any, path: str = "") -> str:
    """Where two JSON values first differ, for a readable failure."""
    if isinstance(got, dict) and isinstance(want, dict):
        if set(got) != set(want):
            return f"at {path or '/'}: stored {got!r:.500} != expected {want!r:.500}"
        for key in want:
            if not same(got[key], want[key]):
                return first_difference(got[key], want[key], f"{path}/{key!r}")
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if not same(g, w):
                return first_difference(g, w, f"{path}/{i}")
    return f"at {path or '/'}: stored {got!r:.300} != expected {want!r:.300}"


UNCHECKABLE = object()
"""A value whose stored form this test does not predict."""


def _secret_key(key: str) -> bool:
    from steptrace.config import DEFAULT_SECRET_KEYS

    key = key.lower().replace("-", "_")
    return any(key == k or key.endswith("_" + k) for k in DEFAULT_SECRET_KEYS)


def as_stored(value: Any, way: str) -> Any:
    """What ``value`` reads back as from the store: JSON (NaN and infinities as null,
    integers past 64 bits as their digits, keys as text) with NUL and lone surrogates
    replaced; ``UNCHECKABLE`` when a cap, the redaction or two keys becoming one would
    change it."""
    if isinstance(value, str):
        if len(value) > 10_000:
            return UNCHECKABLE
        return sanitized(value, way)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        items = [as_stored(v, way) for v in value]
        return UNCHECKABLE if any(i is UNCHECKABLE for i in items) else items
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, int) and as_stored(key, way) != key:
                return UNCHECKABLE  # a key past 64 bits: the value is kept as a placeholder
            text = as_stored(key if isinstance(key, str) else str(key), way)
            stored_item = as_stored(item, way)
            if UNCHECKABLE in (text, stored_item) or text in out or _secret_key(text):
                return UNCHECKABLE
            out[text] = stored_item
        return out
    return UNCHECKABLE


# --- a record the store refuses -----------------------------------------------------------

SENTINEL = "reject-me-0d1f"


def refuse_sentinel_spans(store_url: str) -> None:
    """Make the store itself refuse any span row whose output holds ``SENTINEL``: a
    trigger, so the failure is the engine's, after steptrace made the text storable."""
    if is_postgres(store_url):
        raw_sql(
            store_url,
            f"""CREATE FUNCTION refuse_sentinel() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.output::text LIKE '%{SENTINEL}%' THEN
                    RAISE EXCEPTION 'poisoned by the test';
                END IF;
                RETURN NEW;
            END $$""",
        )
        raw_sql(
            store_url,
            "CREATE TRIGGER refuse_sentinel BEFORE INSERT OR UPDATE ON spans "
            "FOR EACH ROW EXECUTE FUNCTION refuse_sentinel()",
        )
        return
    for event in ("INSERT", "UPDATE"):
        raw_sql(
            store_url,
            f"CREATE TRIGGER refuse_sentinel_{event.lower()} BEFORE {event} ON spans "
            f"WHEN CAST(NEW.output AS TEXT) LIKE '%{SENTINEL}%' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END",
        )


@pytest.mark.parametrize("level", ["off", "run", "step"])
def test_a_record_the_store_refuses_is_quarantined_alone(
    store_url: str, db: Query, level: str
) -> None:
    """Many runs written together, one of whose step records the store refuses: every
    other record is stored (that run's row and other steps included), the refused one
    is quarantined (absent, or a placeholder without the value), counted once in
    ``st.health()["quarantined"]``, and nothing is counted lost. The workflow that
    produced it returns normally, under each durability level."""
    if level != "off" or _supports_durable():
        set_durability(level)

    @st.step
    def first(i: int) -> dict[str, Any]:
        return {"i": i, "pad": "y" * 500}

    @st.step
    def second(i: int, poisoned: bool) -> dict[str, Any]:
        return {"i": i, "note": SENTINEL if poisoned else "fine", "big": "z" * (i % 7) * 10_000}

    @st.workflow(name="batch")
    def wf(i: int, poisoned: bool) -> int:
        first(i)
        second(i, poisoned)
        return i

    @st.workflow(name="warm-up")
    def warm_up() -> None:
        first(-1)

    warm_up()  # the store exists, migrated, before the trigger goes in
    assert st.flush(timeout_s=30)
    refuse_sentinel_spans(store_url)
    before = health() if hasattr(st, "health") else None

    results: dict[int, str] = {}
    poisoned_index = 137
    lock = threading.Lock()

    def record(indices: range) -> None:
        for i in indices:
            result = st.run(wf, i, i == poisoned_index)
            assert result.status == "succeeded"
            with lock:
                results[i] = result.run_id

    threads = 1 if level == "off" else 4
    per = 300 // threads
    workers = [
        threading.Thread(target=record, args=(range(t * per, (t + 1) * per),))
        for t in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert st.flush(timeout_s=30), st.health()

    poisoned_id = results[poisoned_index]
    expected = {run_id: Expected("succeeded", 2, 0, 0) for run_id in results.values()}
    found = stored(db, list(results.values()))
    missing = len(expected) - len(found)
    assert poisoned_id in found, "the refused span's run lost its run row"
    poisoned = found.pop(poisoned_id)
    del expected[poisoned_id]
    assert found == expected, f"{missing} of {len(results)} runs missing"
    assert poisoned.status == "succeeded"
    assert poisoned.spans in (1, 2)  # the refused span: absent, or its placeholder
    (kept_first,) = db(
        "SELECT count(*) FROM spans WHERE run_id = ? AND name = 'first'", (poisoned_id,)
    )
    assert kept_first == (1,)
    refused = db("SELECT output FROM spans WHERE run_id = ? AND name = 'second'", (poisoned_id,))
    assert all(SENTINEL not in str(output) for (output,) in refused)

    after = health()
    assert after["quarantined"] - (before["quarantined"] if before else 0) == 1
    assert after["lost"] == (before["lost"] if before else 0)
    assert after["queued"] == 0
