"""A store with two experiments over one dataset, for the UI's experiments pages
(``tests/ui/test_ui_experiments.py``).

``record(url)`` runs the ``triage`` workflow below on four tickets (its ``route`` step
sends each to a queue), makes the dataset ``tickets`` of the four ``route``
occurrences, and runs two experiments over it through ``steptrace.experimenting``:

- ``baseline`` runs ``route`` as recorded: every output equals its reference;
- ``keywords`` runs ``route_by_keywords``, which sends the third ticket (``CHANGED``)
  elsewhere: three outputs equal their references, one does not.

Both are judged by ``exact`` (the default) and ``short`` (true for an output of at most
7 characters). The experiments start in that order, so newest first is the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import steptrace as st
from steptrace.evals import datasets
from steptrace.experimenting import exact, experiment
from tests.support.helpers import recording_into

TICKETS = ("refund my order", "the app crashes", "invoice is wrong", "hello there")
CHANGED = "invoice is wrong"
"""The ticket ``route_by_keywords`` routes differently."""


def _queue(text: str) -> str:
    if "refund" in text or "invoice" in text:
        return "billing"
    return "tech" if "crash" in text else "general"


@st.step
def route(text: str) -> str:
    return _queue(text)


@st.workflow
def triage(text: str) -> str:
    return route(text)


def route_by_keywords(text: str) -> str:
    """``route``, but an invoice goes to the accounts queue."""
    return "accounts" if "invoice" in text else _queue(text)


def short(output: Any, reference: Any) -> bool:
    return len(str(output)) <= 7


@dataclass(frozen=True)
class Experiments:
    url: str
    a: str
    b: str
    dataset: str


def record(url: str | Path) -> Experiments:
    """Make the runs, the dataset and the two experiments in a fresh store at ``url``."""
    url = str(url)
    with recording_into(url):
        for text in TICKETS:
            assert st.run(triage, text).status == "succeeded"
        st.flush()
        with st.Store.open(url) as store:
            added = datasets.add(store, "tickets", "route")
        assert len(added.added) == len(TICKETS), added
        experiment("baseline", "tickets", route, evaluators=[exact, short])
        experiment("keywords", "tickets", route_by_keywords, evaluators=[exact, short])
    return Experiments(url, "baseline", "keywords", "tickets")
