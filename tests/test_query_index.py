"""Field indexes (``steptrace index``, issue 16): ``--where`` answers the same runs, in
the same order, with a field's by-value index as without it, and uses the index when
the value is rare; ``distribution`` reads every shape of value exactly, with and
without the by-time index. On a SQLite file and on PostgreSQL, over the runs of
``support/pick_data.py``, whose answers are computed from their plans."""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import steptrace as st
from steptrace.query import indexes
from steptrace.query.indexes import listed_runs, value_index_name
from steptrace.query.where import RunFilter, parse_path
from steptrace.store.postgres import placeholders
from tests.support.helpers import BACKENDS, record_on_backend
from tests.support.pick_data import MISSING, N_RUNS, Picks, final_values, record
from tests.support.query_data import percentile

FIELDS = ("kind", "n", "meta.tag", "list[0]", "input.user")
"""The fields indexed (``steptrace index pick FIELD``)."""

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

SERVED = [
    "pick.output.kind = rare",
    "pick.kind = apple",
    "pick.kind < b",
    "pick.kind >= cherry",
    "pick.kind > berry",
    "pick.n = 42",
    'pick.n = "42"',
    "pick.n > 7",
    "pick.n <= 2.5",
    "pick.n >= 9",
    "pick.n = 3.5",
    "pick.meta.tag = t2",
    "pick.list[0] = 3",
    "pick.input.user = u3",
    "pick.input.user < u2",
]
"""Predicates a by-value index serves: a text or a number compared by = < <= > >=."""
NOT_SERVED = [
    "pick.kind != apple",
    "pick.kind ~ err",
    "pick.n = true",
    "pick.n = null",
    "pick.n != 42",
    "pick.attempts > 1",
]


@pytest.fixture(scope="module", params=BACKENDS)
def picks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Picks:
    return record_on_backend(request, tmp_path_factory, record, "picks")


@pytest.fixture
def store(picks: Picks) -> Iterator[st.Store]:
    with st.Store.open(picks.url) as s:
        yield s
        for field in FIELDS:
            s.drop_field_index("pick", field)


def expected_runs(picks: Picks, text: str) -> list[str]:
    """The runs ``text`` (one of ``SERVED``) holds for, newest first, from the plans: a
    call's final value compares as the same type (a bare number also equals its text)."""
    target, op, raw = next(
        (text.partition(f" {op} ")[0], op, text.partition(f" {op} ")[2])
        for op in ("<=", ">=", "=", "<", ">")
        if f" {op} " in text
    )
    path = parse_path(target)[1:]
    column = "input" if path[0] == "input" else "output"
    path = path[1:] if path[0] in ("input", "output") else path
    try:
        wanted = json.loads(raw)
        bare = False
    except json.JSONDecodeError:
        wanted, bare = raw, True

    def holds(x: Any) -> bool:
        if x is MISSING or isinstance(x, bool) or x is None:
            return False
        if isinstance(wanted, str):
            return isinstance(x, str) and _OPS[op](x, wanted)
        if isinstance(x, int | float):
            return _OPS[op](x, wanted)
        return bare and op == "=" and x == raw

    matching = [i for i in range(N_RUNS) if any(map(holds, final_values(i, column, path)))]
    return [picks.run_ids[i] for i in reversed(matching)]


def answers(store: st.Store, text: str) -> tuple[list[list[str]], int]:
    """Pages of runs (several sizes and offsets, with other filters too) and the count."""
    pages = [
        [r.run_id for r in store.runs(where=text, last=last, offset=offset)]
        for last, offset in ((3, 0), (50, 0), (7, 5), (200, 0))
    ]
    pages.append([r.run_id for r in store.runs(where=[text, "pick.kind != cherry"], last=9)])
    pages.append([r.run_id for r in store.runs(status="succeeded", where=text, last=20)])
    return pages, store.count_runs(where=text)


@pytest.mark.parametrize("few_per_run", [indexes.FEW_PER_RUN, 1])
def test_indexed_where_lists_the_same_runs_in_the_same_order(
    store: st.Store, picks: Picks, few_per_run: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 1 attempt per run the page needs, a page of N runs is chosen among those
    the index lists when fewer than N attempts hold the value, else run by run, newest
    first (the pages below take both ways); counts always use the list."""
    monkeypatch.setattr(indexes, "FEW_PER_RUN", few_per_run)
    before = {text: answers(store, text) for text in SERVED + NOT_SERVED}
    for text in SERVED:
        expected = expected_runs(picks, text)
        assert expected, text  # every predicate holds for some runs
        assert before[text][0][3] == expected, text
        assert before[text][1] == len(expected), text
    for field in FIELDS:
        store.index_field("pick", field)
    exists = store.engine.index_exists
    assert set(listed_runs(store._reader, SERVED, need=None, exists=exists)) == set(SERVED)
    listed = listed_runs(store._reader, SERVED, need=30, exists=exists)
    if few_per_run == 1:
        assert "pick.output.kind = rare" in listed and len(listed) < len(SERVED), listed
    else:
        assert set(listed) == set(SERVED)
    assert not listed_runs(store._reader, NOT_SERVED, need=None, exists=exists)
    after = {text: answers(store, text) for text in SERVED + NOT_SERVED}
    assert after == before


def test_a_rare_value_is_looked_up_in_the_by_value_index(store: st.Store) -> None:
    """The page query reads the runs listed by the index (on PostgreSQL after the
    statistics autovacuum gathers, and kept from scanning a table this small)."""
    name = value_index_name("pick", "kind")
    store.index_field("pick", "kind")
    runs = RunFilter.of(where="pick.kind = rare")
    listed = listed_runs(store._reader, runs.where, need=5, exists=store.engine.index_exists)
    conds, params = runs.sql(store.dialect, listed=listed)
    sql = f"SELECT run_id FROM runs WHERE {' AND '.join(conds)} ORDER BY started_at DESC LIMIT 5"
    if store.dialect.name == "sqlite":
        plan = " ".join(r[3] for r in store.engine.rows(f"EXPLAIN QUERY PLAN {sql}", params))
        assert f"USING INDEX {name} (name=? AND <expr>=?)" in plan, plan
    else:
        import psycopg

        with psycopg.connect(store.engine.dsn, autocommit=True) as conn:
            conn.execute("ANALYZE spans")  # what autovacuum does: the index's statistics
            conn.execute("SET enable_seqscan = off")
            rows = conn.execute(f"EXPLAIN {placeholders(sql)}".encode(), params)
            plan = "\n".join(r[0] for r in rows)
        assert name in plan, plan


def test_indexing_and_dropping_a_field_makes_and_removes_both_indexes(store: st.Store) -> None:
    assert store.index_field("pick", "meta.tag") == indexes.field_index_name("pick", "meta.tag")
    by_value = value_index_name("pick", "meta.tag")
    assert store.engine.index_exists(by_value)
    assert store.drop_field_index("pick", "meta.tag")
    assert not store.engine.index_exists(by_value)
    assert not store.drop_field_index("pick", "meta.tag")


# --- distribution ------------------------------------------------------------------------


def expected_distribution(picks: Picks, field: str, last: int) -> dict[str, Any]:
    path = parse_path(field) if field != "." else []
    column = "input" if path[:1] == ["input"] else "output"
    path = path[1:] if column == "input" else path
    values = [
        v for i in range(N_RUNS - min(last, N_RUNS), N_RUNS) for v in final_values(i, column, path)
    ]
    texts = Counter(
        json.dumps(v, sort_keys=True, separators=(",", ":")) for v in values if v is not MISSING
    )
    numbers = sorted(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
    return {
        "runs": min(last, N_RUNS),
        "occurrences": len(values),
        "missing": sum(v is MISSING for v in values),
        "values": [
            {"value": json.loads(t), "count": n, "share": n / len(values)}
            for t, n in sorted(texts.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "numeric": (
            numbers
            and {
                "count": len(numbers),
                "min": numbers[0],
                "p50": percentile(numbers, 0.5),
                "p95": percentile(numbers, 0.95),
                "max": numbers[-1],
                "mean": sum(numbers) / len(numbers),
            }
        )
        or None,
    }


@pytest.mark.parametrize("field", ["kind", "n", "meta.tag", "list[1]", "list", "meta", "."])
def test_distribution_of_every_shape_of_value(store: st.Store, picks: Picks, field: str) -> None:
    """Texts, numbers (42 and 42.0 apart, the text "42" apart), true, null, objects,
    arrays, absent fields, outputs that are not objects; retried calls (the final
    attempt counts), second calls and nested calls; over a few runs and over all."""
    for last in (1, 7, 40, 1000):
        got = store.distribution("pick", field, last=last)
        want = expected_distribution(picks, field, last)
        assert {k: got[k] for k in want} == want, (field, last)  # type: ignore[literal-required]
        assert store.distribution("pick", field, last=last, workflow="picking") == {
            **got,
            "workflow": "picking",
        }


def test_distribution_of_an_input_field_and_with_the_field_indexed(
    store: st.Store, picks: Picks
) -> None:
    plain = store.distribution("pick", "input.user", last=30)
    want = expected_distribution(picks, "input.user", 30)
    assert {k: plain[k] for k in want} == want  # type: ignore[literal-required]
    for field in ("kind", "input.user"):
        before = [store.distribution("pick", field, last=n) for n in (1, 7, 1000)]
        store.index_field("pick", field)
        assert [store.distribution("pick", field, last=n) for n in (1, 7, 1000)] == before
