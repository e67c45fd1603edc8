"""The in-memory store (``memory://``) and ``steptrace.testing``: the same answers as a
SQLite file for the same runs, nothing on disk, each ``memory_store()`` empty, the
user's SQL kept from writing, and clear errors for what cannot work."""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.store import memory
from steptrace.store.retention import prune
from steptrace.testing import memory_store

_seen: set[int] = set()


@st.step
def classify(text: str) -> dict[str, Any]:
    logging.getLogger("mem-triage").warning("classifying %d chars", len(text))
    reply = st.llm.chat("scripted:mem-triage", [{"role": "user", "content": text}])
    return {"classification": reply.text, "length": len(text)}


@st.step(retries=1)
def flaky(n: int) -> int:
    if n % 3 == 0 and n not in _seen:
        _seen.add(n)
        raise ValueError(f"first attempt of {n} fails")
    return n * 2


@st.workflow
def triage(text: str, n: int) -> dict[str, Any]:
    return {"c": classify(text)["classification"], "f": flaky(n)}


def _record_runs() -> None:
    _seen.clear()
    st.llm.script("mem-triage", ["billing", "shipping", "billing", "other"])
    for i in range(8):
        triage(f"ticket {i}", i)


def _normalised(run: st.RunRecord) -> list[tuple[Any, ...]]:
    """What a run holds, without its ids and times (which differ between recordings)."""
    return [
        (
            s.kind,
            s.name,
            s.attempt,
            s.status,
            s.input,
            s.output,
            s.error,
            [log["message"] for log in s.logs],
            (s.llm or {}).get("input_tokens"),
        )
        for s in run.spans
    ]


def _answers(store: st.Store) -> dict[str, Any]:
    runs = store.runs(last=100)
    stats = [(s["step"], s["count"], s["attempts"], s["retried"]) for s in store.step_stats()]
    csv = io.BytesIO()
    store.export(csv, format="csv", table="steps")
    return {
        "statuses": sorted(r.status for r in runs),
        "runs": sorted(
            (r.input["text"], r.output["c"], r.output["f"], _normalised(store.run(r.run_id)))
            for r in runs
        ),
        "distribution": store.distribution("classify", "classification")["values"],
        "stats": sorted(stats),
        "where": len(store.runs(where="flaky.attempts > 1")),
        "sql": store.sql("SELECT name, count(*) AS n FROM spans GROUP BY name ORDER BY name"),
        "csv_rows": csv.getvalue().count(b"\n"),
    }


def test_a_memory_store_answers_as_a_sqlite_file_does(tmp_path: Path) -> None:
    st.configure(store=str(tmp_path / "file.db"))
    _record_runs()
    with st.Store.open() as store:
        on_file = _answers(store)
    st.config.reset()
    with memory_store() as store:
        _record_runs()
        in_memory = _answers(store)
    assert in_memory == on_file
    assert in_memory["statuses"] == ["succeeded"] * 8
    assert in_memory["where"] == 3  # runs 0, 3 and 6 retried


def test_memory_store_writes_nothing_to_disk_and_starts_empty(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    with memory_store() as store:
        _record_runs()
        assert len(store.runs(last=100)) == 8
    with memory_store() as store:
        assert store.runs() == []
        triage("one more", 1)
        assert len(store.runs()) == 1
    assert list(tmp_path.iterdir()) == []  # no default store file, no journal


def test_the_store_is_dropped_on_exit_and_reading_it_afterwards_says_why() -> None:
    with memory_store("mine") as store:
        triage("x", 1)
        assert store.url == "memory://mine"
        with st.Store.open("memory://mine") as other:
            assert other.runs()[0].workflow == "triage"
        last = st.last_run()
        assert last is not None and last.steps("flaky")[-1].output == 2
    assert not memory.exists("memory://mine")
    with pytest.raises(st.ConfigError, match="no in-memory store 'memory://mine' in this process"):
        st.Store.open("memory://mine")


def test_the_users_sql_cannot_write_and_the_writer_still_can() -> None:
    with memory_store() as store:
        triage("before", 1)
        for statement in (
            "DELETE FROM runs",
            "UPDATE spans SET output = NULL",
            "ATTACH DATABASE 'x.db' AS x",
            "PRAGMA query_only=OFF",
        ):
            with pytest.raises(st.QueryError):
                store.sql(statement)
        triage("after", 2)  # the connection was handed back writable
        assert [r.input["text"] for r in store.runs()] == ["after", "before"]


def test_readers_never_see_half_a_batch_while_threads_record() -> None:
    """Threads record while a reader counts: every run it sees has all its spans (the
    writer and the readers take turns on the one connection)."""
    with memory_store() as store:
        st.llm.script("mem-triage", ["billing"])
        stop = threading.Event()

        def record() -> None:
            i = 0
            while not stop.is_set():
                triage(f"t{i}", i)
                i += 1

        threads = [threading.Thread(target=record) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for _ in range(30):
                rows = store.sql(
                    "SELECT r.run_id, count(s.span_id) AS n FROM runs r "
                    "LEFT JOIN spans s ON s.run_id = r.run_id "
                    "WHERE r.status = 'succeeded' GROUP BY r.run_id"
                )
                assert all(r["n"] >= 3 for r in rows), rows
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert store.count_runs() == len(store.runs(last=100_000))


def test_prune_works_on_a_memory_store() -> None:
    with memory_store() as store:
        _record_runs()
        result = prune(store.url, older_than="0s")
        assert result.runs == 8
        assert store.runs() == []


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:", ":memory:"])
def test_a_private_in_memory_sqlite_store_is_refused_with_the_way_out(url: str) -> None:
    with pytest.raises(st.ConfigError, match=r"memory://NAME"):
        st.configure(store=url)
