"""Hostile text in every place a query takes text from outside — workflow and step
names, tags, field paths, ``--where`` values — on both engines, through the Python
API, the command line and the UI's JSON API.

Every value and JSON path reaches the engine as a bound parameter, so a query means
the same whatever the server's settings: the PostgreSQL database here reads string
literals the old way (``standard_conforming_strings=off``, ``backslash_quote=on``,
set as database defaults, so every connection steptrace makes has them), where a
quote escaped with a backslash ends a literal that Python quoted. A hostile name
or value that was recorded is found exactly (NUL and lone surrogates as the store
holds them, a long name as it was cut), one that was not finds nothing, and no
table is dropped or changed.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
import steptrace.config
from steptrace.cli import main
from steptrace.query.where import QueryError
from steptrace.record import stored_form, stored_name
from tests.support.helpers import BACKENDS, is_postgres, raw_sql

HOSTILE = {
    "quote": "it's",
    "backslash": "C:\\temp\\",
    "drop_table": "'; DROP TABLE runs; --",
    "escaped_quote": "\\' OR 1=1 --",
    "double_quote": 'say "hi"',
    "dollar": "$$ $q$ ; $$",
    "unicode": "ünï©ødé ✓ \u2028 𝄞",
    "nul": "nul\x00byte",
    "long": "'" + "L" * 3000 + "\\",
}
"""Names (and values, tags, keys) by what they try."""
PATHABLE = {k: h for k, h in HOSTILE.items() if '"' not in h}
"""Those a field path can name (a path cannot hold a double quote)."""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Hostile:
    url: str
    backend: str
    run_ids: dict[str, str]
    """The run of each hostile name (workflow = step = tag = that text)."""
    keys_run: str
    """The run whose ``keys`` step output has every pathable text as a key."""
    plain_run: str


def _record(url: str) -> Hostile:
    steptrace.config.reset()
    st.configure(store=url)
    run_ids: dict[str, str] = {}
    for kind, text in HOSTILE.items():

        @st.step(name=text)
        def hostile_step(value: str) -> dict[str, Any]:
            return {"label": value, "kind": value}

        @st.workflow(name=text, tags=[text])
        def hostile_workflow(value: str) -> None:
            hostile_step(value)

        run_ids[kind] = st.run(hostile_workflow, text).run_id

    @st.step
    def keys() -> dict[str, str]:
        return {text: kind for kind, text in PATHABLE.items()}

    @st.step
    def plain() -> dict[str, str]:
        return {"label": "plain"}

    @st.workflow(name="keys")
    def keys_workflow() -> None:
        keys()

    @st.workflow(name="plain", tags=["plain"])
    def plain_workflow() -> None:
        plain()

    keys_run = st.run(keys_workflow).run_id
    plain_run = st.run(plain_workflow).run_id
    assert st.flush()
    steptrace.config.reset()
    backend = "postgresql" if is_postgres(url) else "sqlite"
    return Hostile(url, backend, run_ids, keys_run, plain_run)


@pytest.fixture(scope="module", params=BACKENDS)
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    if request.param == "sqlite":
        return _record(str(tmp_path_factory.mktemp("hostile") / "hostile.db"))
    url: str = request.getfixturevalue("new_postgres_database")()
    database = urllib.parse.urlsplit(url).path.lstrip("/")
    for setting, value in (("standard_conforming_strings", "off"), ("backslash_quote", "on")):
        raw_sql(url, f"ALTER DATABASE {database} SET {setting} = {value}")
    # the defaults are what a new session gets: what every connection steptrace opens has
    assert raw_sql(url, "SHOW standard_conforming_strings") == [("off",)]
    assert raw_sql(url, "SELECT E'a\\'b' = 'a''b'") == [(True,)]
    return _record(url)


@pytest.fixture
def store(hostile: Hostile) -> Iterator[st.Store]:
    with st.Store.open(hostile.url) as s:
        yield s


def _fingerprint(url: str) -> list[Any]:
    """The store's tables and their row counts."""
    if is_postgres(url):
        tables = raw_sql(
            url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
    else:
        tables = raw_sql(url, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
    return [(t, raw_sql(url, f"SELECT count(*) FROM {t}")) for (t,) in tables]


@pytest.fixture
def unchanged(hostile: Hostile) -> Iterator[None]:
    """The test must leave every table and row count as it found them."""
    before = _fingerprint(hostile.url)
    assert ("runs", [(len(HOSTILE) + 2,)]) in before
    yield
    assert _fingerprint(hostile.url) == before


@pytest.mark.usefixtures("unchanged")
def test_names_tags_and_values_are_found_exactly(store: st.Store, hostile: Hostile) -> None:
    for kind, text in HOSTILE.items():
        run_id = hostile.run_ids[kind]
        assert [r.run_id for r in store.runs(workflow=text)] == [run_id], kind
        assert [r.run_id for r in store.runs(tag=text)] == [run_id], kind
        assert store.runs(workflow="?" + text) == [], kind
        assert store.runs(tag=text[:-1]) == [], kind
        found = store.runs(where=f"run.workflow = {_json(text)}")
        assert [r.run_id for r in found] == [run_id], kind
        assert store.runs(where=f"run.workflow = {_json(' ' + text)}") == [], kind
        if kind in PATHABLE:  # the step's name is the head of the --where target
            target = f'"{text}".output.label'
            found = store.runs(where=f"{target} = {_json(text)}")
            assert [r.run_id for r in found] == [run_id], kind
            assert store.runs(where=f"{target} = {_json(text + 'x')}") == [], kind
            contains = store.runs(where=f"{target} ~ {_json(text[1:4])}")
            assert run_id in [r.run_id for r in contains], kind
            assert store.runs(where=f"{target} != {_json(text)}") == [], kind
        else:
            with pytest.raises(QueryError, match="bad field path"):
                store.runs(where=f'"{text}".output.label = 1')

        dist = store.distribution(text, "label")
        assert dist["values"] == [{"value": stored_form(text), "count": 1, "share": 1.0}], kind
        assert store.distribution("x" + text, "label")["occurrences"] == 0, kind
        stats = store.step_stats(text)
        assert [(s["step"], s["count"]) for s in stats] == [(stored_name(text), 1)], kind
        assert len(store.step_durations(text)) == 1, kind
        assert store.step_durations("x" + text) == [], kind
        with pytest.raises(st.RunNotFound):
            store.run(text)


@pytest.mark.usefixtures("unchanged")
def test_field_paths_with_hostile_keys(store: st.Store, hostile: Hostile) -> None:
    for kind, text in PATHABLE.items():
        dist = store.distribution("keys", f'"{text}"')
        assert dist["values"] == [{"value": kind, "count": 1, "share": 1.0}], kind
        assert store.distribution("keys", f'"{text}x"')["missing"] == 1, kind
        found = store.runs(where=f'keys.output."{text}" = {_json(kind)}')
        assert [r.run_id for r in found] == [hostile.keys_run], kind
        assert store.runs(where=f'keys.output."{text}" = "nope"') == [], kind
        assert store.runs(where=f'keys.output."{text}x" = {_json(kind)}') == [], kind
    with pytest.raises(QueryError):
        store.distribution("keys", '"say "hi""')
    # a path that cannot be indexed (its SQL would have to spell it out) is refused
    with pytest.raises(QueryError, match="cannot index"):
        store.index_field("keys", f'"{HOSTILE["drop_table"]}"')


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``steptrace ARGV`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.usefixtures("unchanged")
def test_the_command_line(hostile: Hostile, capsys: pytest.CaptureFixture[str]) -> None:
    url = hostile.url
    for kind in ("drop_table", "escaped_quote", "backslash", "nul", "long"):
        text = HOSTILE[kind]
        code, out, err = _cli(
            capsys,
            "--store",
            url,
            "runs",
            "--workflow",
            text,
            "--tag",
            text,
            "--where",
            f'"{text}".output.label = {_json(text)}',
            "--json",
        )
        assert code == 0, err
        assert [r["run_id"] for r in json.loads(out)] == [hostile.run_ids[kind]], kind
        code, out, err = _cli(capsys, "--store", url, "dist", text, "label", "--json")
        assert code == 0, err
        assert json.loads(out)["values"][0]["value"] == stored_form(text), kind
        code, out, err = _cli(capsys, "--store", url, "stats", text, "--json")
        assert code == 0, err
        assert [s["count"] for s in json.loads(out)] == [1], kind
        code, out, err = _cli(
            capsys, "--store", url, "export", "-t", "steps", "--step", text, "-w", text
        )
        assert code == 0, err
        assert [json.loads(line)["output"]["label"] for line in out.splitlines()] == [
            stored_form(text)
        ], kind
    code, out, err = _cli(
        capsys, "--store", url, "runs", "--where", 'run.workflow = "\\\' OR 1=1 --x"', "--json"
    )
    assert (code, json.loads(out)) == (0, [])
    code, _, err = _cli(capsys, "--store", url, "show", HOSTILE["drop_table"])
    assert code == 1 and err.startswith("error: no run with id"), err
    code, _, err = _cli(capsys, "--store", url, "dist", "keys", '"a"b"')
    assert code == 1 and "bad field path" in err and "Traceback" not in err, err


@pytest.mark.usefixtures("unchanged")
def test_the_ui_api(store: st.Store, hostile: Hostile) -> None:
    from fastapi.testclient import TestClient

    from steptrace.ui import create_app

    with TestClient(create_app(store), base_url="http://127.0.0.1") as client:
        for kind, text in HOSTILE.items():
            page = client.get(
                "/api/v1/runs",
                params={"workflow": text, "tag": text, "where": f"run.workflow = {_json(text)}"},
            )
            if "\x00" in text:  # the UI refuses a NUL anywhere in the address
                assert page.status_code == 400, (kind, page.text)
                assert page.json()["error"]["code"] == "bad_request"
                continue
            assert page.status_code == 200, (kind, page.text)
            assert [r["run_id"] for r in page.json()["runs"]] == [hostile.run_ids[kind]], kind
            missing = client.get("/api/v1/runs", params={"tag": text + "'"})
            assert missing.status_code == 200 and missing.json()["runs"] == [], kind
            dist = client.get("/api/v1/distribution", params={"step": text, "field": "label"})
            assert dist.status_code == 200, (kind, dist.text)
            assert dist.json()["values"][0]["value"] == stored_form(text), kind
            if kind in PATHABLE:
                keyed = client.get(
                    "/api/v1/distribution", params={"step": "keys", "field": f'"{text}"'}
                )
                assert keyed.json()["values"][0]["value"] == kind, (kind, keyed.text)
            stats = client.get("/api/v1/stats", params={"workflow": text})
            assert [s["count"] for s in stats.json()] == [1], (kind, stats.text)
            histogram = client.get("/api/v1/histogram", params={"step": text})
            assert histogram.status_code == 200, (kind, histogram.text)
            unknown = client.get(f"/api/v1/runs/{urllib.parse.quote(text, safe='')}")
            assert unknown.status_code == 404, (kind, unknown.text)
        bad = client.get("/api/v1/runs", params={"where": "x.output.y = \"'); DROP TABLE runs"})
        assert bad.status_code in (200, 400), bad.text
        assert set(client.get("/api/v1/workflows").json()) == {
            stored_name(t) for t in HOSTILE.values()
        } | {"keys", "plain"}


def test_a_field_index_spells_out_only_safe_text(tmp_path: Path) -> None:
    """The one place SQL text is built from a name and a path: the field indexes' own
    SQL (by time and by value). Only a strict character set is spelled out; the index
    then serves ``dist``."""
    from steptrace.query.indexes import field_index_sql, value_index_sql
    from steptrace.store.dialect import POSTGRESQL, SQLITE

    for dialect in (SQLITE, POSTGRESQL):
        for make in (field_index_sql, value_index_sql):
            name, sql = make(dialect, "classify", "meta.label")
            assert "'classify'" in sql and name in sql
            for step, field in (
                (HOSTILE["quote"], "label"),
                ("classify", f'"{HOSTILE["backslash"]}"'),
                ("classify", f'"{HOSTILE["dollar"]}"'),
                (HOSTILE["nul"], "label"),
            ):
                with pytest.raises(QueryError, match="cannot index"):
                    make(dialect, step, field)
