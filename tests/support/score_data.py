"""A store whose runs have known scores, for the UI's score views
(``tests/ui/test_ui_scores.py``).

``record(url)`` runs the ``qa`` workflow below five times (each run answers two
questions: two ``answer`` spans) and one ``judge`` run, then scores them through
``Store.score``:

- ``graded``: ``accuracy`` 0.9 on the run (human, with a rationale); ``relevance`` 0.5 on
  its first ``answer`` (code); ``tone`` ``polite`` on its second ``answer`` (llm, decided
  in the ``judge`` run);
- ``disputed``: ``accuracy`` on the run from two sources, 0.4 (code) and 0.6 (llm);
- ``by_spans``: ``accuracy`` 1 and 0.5 on its two ``answer`` spans, none on the run;
- ``checked``: ``passed`` true and false on its two spans;
- ``plain``: no score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import steptrace as st
from tests.support.helpers import recording_into

RATIONALE = "right, and <b>cited</b> its source"
"""Markup in a rationale: the UI shows it as text."""


@st.step
def answer(question: str) -> str:
    return f"the answer to {question}"


@st.workflow
def qa(topic: str) -> list[str]:
    return [answer(f"{topic} one"), answer(f"{topic} two")]


@st.step
def decide(text: str) -> str:
    return "polite"


@st.workflow
def judge(text: str) -> str:
    return decide(text)


@dataclass(frozen=True)
class Scored:
    url: str
    graded: str
    disputed: str
    by_spans: str
    checked: str
    plain: str
    judge: str

    def spans(self, run_id: str) -> list[str]:
        """The span ids of the run's two ``answer`` steps, in order."""
        with st.Store.open(self.url) as store:
            return [s.span_id for s in store.run(run_id).steps("answer")]


def record(url: str | Path) -> Scored:
    """Make and score the runs in a fresh store at ``url``."""
    url = str(url)
    with recording_into(url):
        made = [st.run(qa, t) for t in ("graded", "disputed", "spans", "checked", "plain")]
        made.append(st.run(judge, "the answer to graded two"))
    assert [r.status for r in made] == ["succeeded"] * 6, [r.exception for r in made]
    runs = Scored(url, *(r.run_id for r in made))
    with st.Store.open(url) as store:
        first, second = runs.spans(runs.graded)
        store.score(runs.graded, "accuracy", 0.9, rationale=RATIONALE)
        store.score(f"{runs.graded}/{first}", "relevance", 0.5, source="code")
        judged = runs.judge
        store.score(f"{runs.graded}/{second}", "tone", "polite", source="llm", judge_run_id=judged)
        store.score(runs.disputed, "accuracy", 0.4, source="code")
        store.score(runs.disputed, "accuracy", 0.6, source="llm")
        for span, value in zip(runs.spans(runs.by_spans), (1, 0.5), strict=True):
            store.score(f"{runs.by_spans}/{span}", "accuracy", value, source="code")
        for span, passed in zip(runs.spans(runs.checked), (True, False), strict=True):
            store.score(f"{runs.checked}/{span}", "passed", passed, source="code")
    return runs
