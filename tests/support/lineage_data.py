"""A store whose runs have known lineage, for what shows it (``test_lineage.py``, the
UI's ``test_ui_lineage.py``).

``record(url)`` runs the ``ticket`` workflow six times through the public API, then
sets the lineage columns of those runs as the runtime sets them when it forks, replays
or resumes a run (with the engine's own driver: test set-up, the store's columns as
migration ``0006_lineage`` made them):

- ``source``: resumed twice, with its entry point and code version; its input text
  holds a single quote (``I'd``), and so does its ``draft`` step's input;
- ``fork`` of ``source`` at ``draft#0``, ``nested_fork`` of it at a nested step's key
  (``outer#0/inner#1``), ``replay`` of it;
- ``grandchild``: a fork of ``fork`` (at ``classify#0``), not of ``source``;
- ``plain``: a run made from nothing, with nothing made from it.

The runs start in that order, so newest first is the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import steptrace as st
from tests.support.helpers import is_postgres, raw_sql, recording_into

SOURCE_TEXT = "I'd like a refund"
ENTRY_POINT = "tests.support.lineage_data:ticket"
CODE_VERSION = {"steptrace": "0.1.0", "package": "2.3.1", "git": "1a2b3c4d"}
FORK_AT = "draft#0"
NESTED_FORK_AT = "outer#0/inner#1"
GRANDCHILD_AT = "classify#0"
RESUMES = 2


@st.step
def classify(text: str) -> str:
    return "refund" if "refund" in text else "other"


@st.step
def inner(n: int) -> int:
    return n * 2


@st.step
def outer(n: int) -> int:
    return inner(n) + inner(n + 1)


@st.step
def draft(ticket: dict[str, Any], tone: str) -> str:
    return f"[{tone}] {ticket['label']}: {ticket['text']}"


@st.workflow
def ticket(text: str, tone: str = "warm") -> str:
    label = classify(text)
    outer(len(text))
    return draft({"text": text, "label": label}, tone)


@dataclass(frozen=True)
class Lineage:
    url: str
    """The store: a SQLite file's path or a PostgreSQL URL."""
    source: str
    fork: str
    nested_fork: str
    replay: str
    grandchild: str
    plain: str


def record(url: str | Path) -> Lineage:
    """Record the runs into a fresh store at ``url``, close the writer, then set their
    lineage."""
    url = str(url)
    with recording_into(url):
        ids = [
            st.run(ticket, SOURCE_TEXT).run_id,
            st.run(ticket, SOURCE_TEXT, tone="formal").run_id,
            st.run(ticket, SOURCE_TEXT).run_id,
            st.run(ticket, SOURCE_TEXT).run_id,
            st.run(ticket, "a question").run_id,
            st.run(ticket, "something else").run_id,
        ]
    runs = Lineage(url, *ids)
    json = "CAST(? AS jsonb)" if is_postgres(url) else "?"
    raw_sql(
        url,
        f"UPDATE runs SET resume_count = ?, entry_point = ?, code_version = {json} "
        "WHERE run_id = ?",
        (RESUMES, ENTRY_POINT, orjson.dumps(CODE_VERSION).decode(), runs.source),
    )
    for run_id, source, at in (
        (runs.fork, runs.source, FORK_AT),
        (runs.nested_fork, runs.source, NESTED_FORK_AT),
        (runs.grandchild, runs.fork, GRANDCHILD_AT),
    ):
        raw_sql(
            url,
            "UPDATE runs SET forked_from = ?, forked_at = ? WHERE run_id = ?",
            (source, at, run_id),
        )
    raw_sql(url, "UPDATE runs SET replay_of = ? WHERE run_id = ?", (runs.source, runs.replay))
    return runs
