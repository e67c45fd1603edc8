"""A store whose runs have known lineage, for what shows it (``test_lineage.py``, the
UI's ``test_ui_lineage.py``).

``record(url)`` makes the runs through the public API — ``st.run``, ``st.resume``,
``st.fork``, ``st.replay`` — on the ``ticket`` workflow below (the runs' entry point
imports it again):

- ``source``: fails in ``draft`` twice and is resumed twice, the second time to
  success; its input text holds a single quote (``I'd``), and so does its ``draft``
  step's input;
- ``fork`` of ``source`` at ``draft#0`` (with ``tone`` ``formal``), ``nested_fork`` of it
  at a nested step (``outer#0/inner#1``), ``replay`` of it;
- ``grandchild``: a fork of ``fork`` (at ``classify#0``), not of ``source``;
- ``plain``: a run made from nothing, with nothing made from it.

The runs start in that order, so newest first is the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import steptrace as st
from tests.support.helpers import recording_into

SOURCE_TEXT = "I'd like a refund"
ENTRY_POINT = "tests.support.lineage_data:ticket"
FORK_AT = "draft#0"
NESTED_FORK_AT = "outer#0/inner#1"
GRANDCHILD_AT = "classify#0"
RESUMES = 2

_draft_failures = [0]
"""How many more calls of ``draft`` fail (the source run's, until it is resumed)."""


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
    if _draft_failures[0]:
        _draft_failures[0] -= 1
        raise RuntimeError("the drafting service is down")
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


def _ok(result: st.RunResult) -> str:
    assert result.status == "succeeded", result.exception
    return result.run_id


def record(url: str | Path) -> Lineage:
    """Make the runs in a fresh store at ``url`` and close the writer."""
    url = str(url)
    with recording_into(url):
        _draft_failures[0] = RESUMES  # the run and its first resume fail
        first = st.run(ticket, SOURCE_TEXT)
        assert first.status == "failed"
        assert st.resume(first.run_id).status == "failed"
        source = _ok(st.resume(first.run_id))
        fork = _ok(st.fork(source, FORK_AT, input={"tone": "formal"}))
        runs = Lineage(
            url,
            source,
            fork,
            _ok(st.fork(source, NESTED_FORK_AT)),
            _ok(st.replay(source)),
            _ok(st.fork(fork, GRANDCHILD_AT)),
            _ok(st.run(ticket, "something else")),
        )
    return runs
