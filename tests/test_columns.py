"""The column table (``steptrace.store.columns``) against the schema the migrations
create, on a real SQLite file and a real PostgreSQL database; and every written column
stored from its record, the same on both engines."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import orjson
import pytest

from steptrace.record import LLMUsage, RunState, SpanRecord
from steptrace.store import migrate_store, open_writer
from steptrace.store.columns import RUNS, TABLES, WRITTEN, ScoreLine, Table
from tests.support.helpers import is_postgres, raw_sql

SQLITE_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "DOUBLE PRECISION", "json": "TEXT"}
POSTGRES_TYPES = {"text": "text", "integer": "integer", "real": "double precision", "json": "jsonb"}


def _declared(table: Table, types: dict[str, str]) -> list[tuple[str, str, bool]]:
    return [(c.name, types[c.type], c.nullable) for c in table.columns]


def _sqlite_schema(path: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        found: dict[str, Any] = {}
        for kind, name in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ):
            # SQLite lets a primary key other than an INTEGER one hold NULL; the writer
            # never gives it one.
            columns = [
                (r[1], r[2], not (r[3] or r[5])) for r in conn.execute(f"PRAGMA table_info({name})")
            ]
            unique = [
                tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index[1]})"))
                for index in conn.execute(f"PRAGMA index_list({name})")
                if index[2]
            ]
            found[name] = (kind == "view", columns, unique)
        return found
    finally:
        conn.close()


def _postgres_schema(url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, kind in raw_sql(
        url,
        "SELECT table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_%'",
    ):
        columns = raw_sql(
            url,
            "SELECT column_name, data_type, is_nullable = 'YES', collation_name "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            (name,),
        )
        unique = raw_sql(
            url,
            "SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i "
            "CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indisunique AND i.indrelid = to_regclass(?) GROUP BY i.indexrelid",
            (str(name),),
        )
        found[str(name)] = (kind == "VIEW", columns, [tuple(u[0]) for u in unique])
    return found


def test_the_column_table_is_the_schema_the_migrations_create(store_url: str) -> None:
    """Every table and view, column for column, in order: name, type, NULL or not, and
    the key a write conflicts on (PostgreSQL: text compared byte by byte)."""
    migrate_store(store_url)
    postgres = is_postgres(store_url)
    found = _postgres_schema(store_url) if postgres else _sqlite_schema(store_url)
    assert sorted(found) == sorted(t.name for t in TABLES)
    for table in TABLES:
        view, columns, unique = found[table.name]
        assert view == table.view, table.name
        if postgres:
            declared = _declared(table, POSTGRES_TYPES)
            got = [(n, t, null) for n, t, null, _ in columns]
            collations = {n: collation for n, t, _, collation in columns if t == "text"}
            if not table.view:
                assert set(collations.values()) == {"C"}, table.name
        else:
            declared = _declared(table, SQLITE_TYPES)
            got = columns
        if table.view:
            # A view's columns are NULL or not as the rows they come from; SQLite names
            # no type for an expression.
            declared = [(n, t, True) for n, t, _ in declared]
            got = [(n, t or d, True) for (n, t, _), (_, d, _) in zip(got, declared, strict=False)]
        assert got == declared, table.name
        if table.key:
            assert table.key in unique, table.name


T0 = 1_700_000_000_123_456_789


def _records() -> tuple[list[RunState], list[SpanRecord]]:
    """A run with a step and an LLM call in it, every stored attribute set; the run's
    start row and end row in one batch."""
    run = RunState(
        "run-1",
        "triage",
        "a" * 32,
        "b" * 16,
        T0,
        parent_trace_id="c" * 32,
        parent_span_id="d" * 16,
        input=orjson.dumps({"ticket": 7}),
        tags=orjson.dumps(["nightly"]),
        owner="owner-1",
        entry_point="app.flows:triage",
        code_version=orjson.dumps({"steptrace": "1"}),
        forked_from="run-0",
        forked_at="classify#0",
        replay_of=None,
        resume_count=1,
        durability="step",
        session_id="chat-7",
    )
    # The end row without input or tags: the stored run keeps its start row's.
    ended = dataclasses.replace(
        run,
        input=None,
        tags=None,
        status="succeeded",
        end_ns=T0 + 9_000_000,
        output=orjson.dumps({"reply": "ok"}),
        error=orjson.dumps({"type": "None"}),
        logs=[(T0 + 1_000, "INFO", "app", "run log", None)],
    )
    step = SpanRecord(
        "run-1",
        "e" * 16,
        "b" * 16,
        "step",
        "classify",
        T0 + 1_000_000,
        attempt=2,
        key="classify#0",
        end_ns=T0 + 4_000_000,
        status="failed",
        input=orjson.dumps({"text": "hi"}),
        input_hash="f" * 32,
        output=orjson.dumps("raw"),
        error=orjson.dumps({"type": "ValueError"}),
        attributes=orjson.dumps({"k": "v"}),
        logs=[(T0 + 2_000_000, "WARNING", "app.step", "careful", "Traceback …")],
        scores=[
            ScoreLine(
                "s" * 32,
                "run-1",
                "e" * 16,
                "classify",
                "polite",
                "numeric",
                0.5,
                "meh",
                "why",
                "llm",
                "run-9",
                T0 + 5_000_000,
            )
        ],
    )
    llm = SpanRecord(
        "run-1",
        "1" * 16,
        "e" * 16,
        "llm",
        "chat triage",
        T0 + 2_000_000,
        end_ns=T0 + 3_000_000,
        status="succeeded",
        input=orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        output=orjson.dumps("billing"),
        llm=LLMUsage(
            "scripted",
            "triage",
            input_tokens=31,
            output_tokens=9,
            cost_usd=0.25,
            params=orjson.dumps({"temperature": 0}),
            cached_input_tokens=4,
            reasoning_tokens=2,
            finish_reason="stop",
            response_model="triage-1",
            time_to_first_chunk_ms=1.5,
            tool_calls=orjson.dumps([{"name": "lookup"}]),
            incomplete=True,
        ),
    )
    return [run, ended], [step, llm]


EXPECTED: dict[str, list[dict[str, Any]]] = {
    "runs": [
        {
            "run_id": "run-1",
            "workflow": "triage",
            "status": "succeeded",
            "trace_id": "a" * 32,
            "span_id": "b" * 16,
            "parent_trace_id": "c" * 32,
            "parent_span_id": "d" * 16,
            "started_at": "2023-11-14T22:13:20.123456Z",
            "ended_at": "2023-11-14T22:13:20.132456Z",
            "duration_ms": 9.0,
            "input": {"ticket": 7},
            "output": {"reply": "ok"},
            "error": {"type": "None"},
            "tags": ["nightly"],
            "owner": "owner-1",
            "entry_point": "app.flows:triage",
            "code_version": {"steptrace": "1"},
            "forked_from": "run-0",
            "forked_at": "classify#0",
            "replay_of": None,
            "resume_count": 1,
            "durability": "step",
            "lease_owner": None,
            "lease_until": None,
            "session_id": "chat-7",
        }
    ],
    "spans": [
        {
            "span_id": "e" * 16,
            "run_id": "run-1",
            "parent_span_id": "b" * 16,
            "kind": "step",
            "name": "classify",
            "step_key": "classify#0",
            "attempt": 2,
            "status": "failed",
            "started_at": "2023-11-14T22:13:20.124456Z",
            "ended_at": "2023-11-14T22:13:20.127456Z",
            "duration_ms": 3.0,
            "input": {"text": "hi"},
            "output": "raw",
            "error": {"type": "ValueError"},
            "attributes": {"k": "v"},
            "input_hash": "f" * 32,
        },
        {
            "span_id": "1" * 16,
            "run_id": "run-1",
            "parent_span_id": "e" * 16,
            "kind": "llm",
            "name": "chat triage",
            "step_key": None,
            "attempt": None,
            "status": "succeeded",
            "started_at": "2023-11-14T22:13:20.125456Z",
            "ended_at": "2023-11-14T22:13:20.126456Z",
            "duration_ms": 1.0,
            "input": {"messages": [{"role": "user", "content": "hi"}]},
            "output": "billing",
            "error": None,
            "attributes": None,
            "input_hash": None,
        },
    ],
    "llm_calls": [
        {
            "span_id": "1" * 16,
            "run_id": "run-1",
            "provider": "scripted",
            "model": "triage",
            "input_tokens": 31,
            "output_tokens": 9,
            "cost_usd": 0.25,
            "params": {"temperature": 0},
            "cached_input_tokens": 4,
            "reasoning_tokens": 2,
            "finish_reason": "stop",
            "response_model": "triage-1",
            "time_to_first_chunk_ms": 1.5,
            "tool_calls": [{"name": "lookup"}],
            "incomplete": 1,
            "parent_span_id": "e" * 16,
        }
    ],
    "logs": [
        {
            "run_id": "run-1",
            "span_id": "b" * 16,
            "seq": 0,
            "ts": "2023-11-14T22:13:20.123457Z",
            "level": "INFO",
            "logger": "app",
            "message": "run log",
            "exception": None,
            "attributes": None,
        },
        {
            "run_id": "run-1",
            "span_id": "e" * 16,
            "seq": 0,
            "ts": "2023-11-14T22:13:20.125456Z",
            "level": "WARNING",
            "logger": "app.step",
            "message": "careful",
            "exception": "Traceback …",
            "attributes": None,
        },
    ],
    "scores": [
        {
            "score_id": "s" * 32,
            "run_id": "run-1",
            "span_id": "e" * 16,
            "step": "classify",
            "name": "polite",
            "kind": "numeric",
            "value": 0.5,
            "label": "meh",
            "rationale": "why",
            "source": "llm",
            "judge_run_id": "run-9",
            "created_at": "2023-11-14T22:13:20.128456Z",
            "updated_at": "2023-11-14T22:13:20.128456Z",
        }
    ],
}


def _stored(url: str, table: Table) -> list[dict[str, Any]]:
    names = table.names
    rows = raw_sql(url, f"SELECT {', '.join(names)} FROM {table.name} ORDER BY span_id")
    return [
        {
            n: orjson.loads(v) if table.column(n).json and isinstance(v, str) else v
            for n, v in zip(names, row, strict=True)
        }
        for row in rows
    ]


def test_every_written_column_is_stored_from_its_record(store_url: str) -> None:
    """One batch with a run's start and end rows, a step with a score, an LLM call and
    logs: each column holds what its record said (the run's input and tags from its
    start row), and a start row written again afterwards changes nothing (the guard)."""
    runs, spans = _records()
    writer = open_writer(store_url)
    try:
        writer.write(runs, spans)
        writer.write([runs[0]], [])
    finally:
        writer.close()
    for table in WRITTEN:
        expected = sorted(EXPECTED[table.name], key=lambda row: str(row["span_id"]))
        assert _stored(store_url, table) == expected, table.name


@pytest.mark.parametrize("batches", ["one", "two"])
@pytest.mark.parametrize("order", ["start-then-end", "end-then-start"])
def test_a_run_written_twice_merges_the_same_in_one_batch_or_two(
    store_url: str, batches: str, order: str
) -> None:
    """The start row then the end row: the end row's columns, the start row's input and
    tags. The other way round, the start row changes nothing (the guard): the run keeps
    what its end row said."""
    runs, _ = _records()
    if order == "end-then-start":
        runs.reverse()
    writer = open_writer(store_url)
    try:
        if batches == "one":
            writer.write(runs, [])
        else:
            for run in runs:
                writer.write([run], [])
    finally:
        writer.close()
    expected = dict(EXPECTED["runs"][0])
    if order == "end-then-start":
        expected.update(input=None, tags=None)
    assert _stored(store_url, RUNS) == [expected]
