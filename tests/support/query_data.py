"""A store with known answers, for the query tests (``test_query*.py``,
``test_cli_query.py``).

``record(path)`` runs 3 runs of the ``other`` workflow and then 30 runs of
``triage`` through the public API into a SQLite file; ``PLANS[i]`` says what run
``i`` of ``triage`` does, so a test computes its expected answers from the plans
(``collections.Counter`` and friends), never from the store:

- ``classify`` (retries=2) returns ``{"classification", "confidence", "tags"[, "meta"]}``;
  its first ``failures`` attempts raise, runs 9 and 21 fail it for good (and end
  there), run 25 needs three attempts; ``meta`` is missing every sixth run;
- ``enrich`` runs once or twice (occurrences ``enrich#0``, ``enrich#1``);
- the tool ``lookup``; ``draft`` makes one scripted LLM call with known tokens and
  cost and a three-line reply;
- run 27 is odd: no ``lookup``, an extra ``audit`` step, a slow ``enrich``, a
  tenfold-token ``draft``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import steptrace as st
from tests.support.helpers import recording_into

N_RUNS = 30
N_OTHER = 3
FAILED = (9, 21)
ODD = 27
SLOW_S = 0.05
DRAFTER = "query-drafter"


@dataclass(frozen=True)
class Plan:
    i: int
    label: str
    confidence: float
    meta: dict[str, str] | None
    tags: list[str]
    failures: int
    """Attempts of ``classify`` that raise (3: all of them, the run fails)."""
    enrich_calls: int
    lookup: bool
    audit: bool
    slow: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def failed(self) -> bool:
        return self.failures >= 3

    @property
    def classify_attempts(self) -> int:
        return min(self.failures + 1, 3)

    @property
    def output(self) -> dict[str, Any] | None:
        """The final ``classify`` attempt's output (None when it failed)."""
        if self.failed:
            return None
        out: dict[str, Any] = {
            "classification": self.label,
            "confidence": self.confidence,
            "tags": self.tags,
        }
        if self.meta is not None:
            out["meta"] = self.meta
        return out

    @property
    def reply(self) -> str:
        return f"Dear customer,\nyour ticket {self.i} is a {self.label} case.\nRegards"

    def steps(self) -> list[str]:
        """Step keys in order."""
        if self.failed:
            return ["classify#0"]
        keys = ["classify#0", *(f"enrich#{k}" for k in range(self.enrich_calls))]
        keys += ["lookup#0"] if self.lookup else []
        keys += ["audit#0"] if self.audit else []
        return [*keys, "draft#0"]


def _plan(i: int) -> Plan:
    failures = 3 if i in FAILED else 2 if i == 25 else 1 if i % 4 == 1 else 0
    return Plan(
        i=i,
        label="legal" if i == 7 else ["billing", "billing", "billing", "refund", "shipping"][i % 5],
        confidence=round(0.3 + i / 100, 2),
        meta=None if i % 6 == 5 else {"label": "a" if i % 2 == 0 else "b"},
        tags=["x", "y"] if i % 3 == 0 else ["x"],
        failures=failures,
        enrich_calls=2 if i % 3 == 0 else 1,
        lookup=i != ODD,
        audit=i == ODD,
        slow=i == ODD,
        input_tokens=2000 if i == ODD else 20 + i,
        output_tokens=500 if i == ODD else 5,
        cost_usd=0.5 if i == ODD else round(0.001 * (i + 1), 6),
    )


PLANS = [_plan(i) for i in range(N_RUNS)]
_attempts: dict[int, int] = {}


@st.step(retries=2, backoff=0)
def classify(i: int) -> dict[str, Any]:
    _attempts[i] = _attempts.get(i, 0) + 1
    plan = PLANS[i]
    if _attempts[i] <= plan.failures:
        raise ValueError(f"flaky classifier on ticket {i}")
    out = plan.output
    assert out is not None
    return out


@st.step
def enrich(i: int, k: int) -> dict[str, int]:
    if PLANS[i].slow:
        time.sleep(SLOW_S)
    return {"n": k}


@st.tool
def lookup(order_id: str) -> dict[str, str]:
    return {"order_id": order_id, "status": "shipped"}


@st.step
def audit(i: int) -> dict[str, bool]:
    return {"ok": True}


@st.step
def draft(i: int, label: str) -> str:
    reply = st.llm.chat(f"scripted:{DRAFTER}", [{"role": "user", "content": f"{i}:{label}"}])
    return reply.text


@st.workflow
def triage(i: int) -> dict[str, str]:
    plan = PLANS[i]
    label = classify(i)["classification"]
    for k in range(plan.enrich_calls):
        enrich(i, k)
    if plan.lookup:
        lookup(f"A-{i}")
    if plan.audit:
        audit(i)
    draft(i, label)
    return {"label": label}


@st.step(name="classify")
def classify_other(i: int) -> dict[str, Any]:
    return {"classification": "other", "confidence": 1.0, "tags": []}


@st.workflow(name="other", tags=["nightly"])
def other(i: int) -> None:
    classify_other(i)


def _drafter(messages: Sequence[dict[str, Any]], **params: Any) -> st.llm.Reply:
    i = int(str(messages[-1]["content"]).split(":")[0])
    plan = PLANS[i]
    return st.llm.Reply(
        plan.reply,
        usage=st.llm.Usage(plan.input_tokens, plan.output_tokens),
        cost_usd=plan.cost_usd,
    )


@dataclass(frozen=True)
class Recorded:
    url: str
    """The store: a SQLite file's path or a PostgreSQL URL."""
    backend: str
    run_ids: list[str]
    """``triage`` run ids by plan index."""
    other_ids: list[str]


def record(url: str | Path) -> Recorded:
    """Record the runs into a fresh store at ``url`` and close the writer."""
    url = str(url)
    _attempts.clear()
    with recording_into(url):
        st.llm.script(DRAFTER, _drafter)
        other_ids = [st.run(other, i).run_id for i in range(N_OTHER)]
        run_ids = [st.run(triage, i).run_id for i in range(N_RUNS)]
    backend = "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
    return Recorded(url, backend, run_ids, other_ids)


def percentile(values: Sequence[float], q: float) -> float:
    """NumPy's percentile (linear), computed independently of steptrace."""
    import numpy

    return float(numpy.percentile(numpy.array(values, dtype=float), q * 100))
