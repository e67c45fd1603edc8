"""Scores: the rows of the ``scores`` table, how a value becomes one, and how one is
written outside the recording writer.

A score targets a run (``span_id`` None) or one span attempt. Its identity is (run,
span, name, source): ``score_id`` is a digest of those, so writing a score again
updates its row in place (``conflict_clause(SCORES)``: the value, label, rationale and
judge run are replaced, ``created_at`` stays).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from steptrace.record import redact_text, stored_form, stored_name
from steptrace.store import admin
from steptrace.store.columns import SCORES, ScoreLine, conflict_clause
from steptrace.store.sqlite import iso_from_ns

Kind = Literal["numeric", "boolean", "categorical"]
Source = Literal["human", "code", "llm"]
SOURCES: tuple[str, ...] = ("human", "code", "llm")
MAX_NAME = 200
MAX_TEXT = 10_000


def score_id(run_id: str, span_id: str | None, name: str, source: str) -> str:
    """The identity of a score: one row per (run, span, name, source)."""
    key = "\x00".join((run_id, span_id or "", name, source)).encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def kind_of(value: Any) -> tuple[Kind, float | None, str | None]:
    """``(kind, value, category)`` of a score's value: a bool is ``boolean`` (1 or 0), a
    finite int or float ``numeric``, a non-empty string ``categorical``. Anything else
    is a ``ValueError`` that says what a score may be."""
    if isinstance(value, bool):
        return "boolean", 1.0 if value else 0.0, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"a score's value must be finite, got {value!r}")
        return "numeric", number, None
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("a categorical score's value must be a non-empty string")
        if len(value) > MAX_NAME:
            raise ValueError(f"a category is at most {MAX_NAME} characters")
        return "categorical", None, value
    raise ValueError(
        f"a score's value is a number, a bool or a category string, "
        f"got {type(value).__name__}: {value!r:.80}"
    )


def line(
    run_id: str,
    span_id: str | None,
    step: str | None,
    name: str,
    value: Any,
    *,
    label: str | None = None,
    rationale: str | None = None,
    source: str = "human",
    judge_run_id: str | None = None,
    at_ns: int | None = None,
) -> ScoreLine:
    """The ``scores`` row of one score, its arguments checked: ``ValueError`` names what
    is wrong with them. A categorical value is its own label (``label`` must then be
    None or the same). The rationale is redacted like any recorded text (a judge's may
    quote the secrets it was shown)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a score needs a name (a non-empty string)")
    if len(name) > MAX_NAME:
        raise ValueError(f"a score's name is at most {MAX_NAME} characters")
    if source not in SOURCES:
        raise ValueError(f"a score's source is one of {', '.join(SOURCES)}, got {source!r}")
    kind, number, category = kind_of(value)
    if category is not None:
        if label is not None and label != category:
            raise ValueError("a categorical score's value is its label: give one of them")
        label = category
    if label is not None and (not isinstance(label, str) or len(label) > MAX_NAME):
        raise ValueError(f"a score's label is a string of at most {MAX_NAME} characters")
    if rationale is not None:
        if not isinstance(rationale, str):
            rationale = str(rationale)
        rationale = stored_form(redact_text(rationale[:MAX_TEXT]))
    name = stored_name(name)
    return ScoreLine(
        score_id=score_id(run_id, span_id, name, source),
        run_id=run_id,
        span_id=span_id,
        step=None if step is None else stored_name(step),
        name=name,
        kind=kind,
        value=number,
        label=None if label is None else stored_name(label),
        rationale=rationale,
        source=source,
        judge_run_id=judge_run_id,
        created_ns=at_ns if at_ns is not None else time.time_ns(),
    )


_COLUMNS = SCORES.names
UPSERT = (
    f"INSERT INTO scores ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)}) {conflict_clause(SCORES)}"
)


def row(score: ScoreLine) -> tuple[Any, ...]:
    """The values of ``UPSERT`` for one score."""
    at = iso_from_ns(score.created_ns)
    return (
        score.score_id,
        score.run_id,
        score.span_id,
        score.step,
        score.name,
        score.kind,
        score.value,
        score.label,
        score.rationale,
        score.source,
        score.judge_run_id,
        at,
        at,
    )


def write(url: str, scores: Sequence[ScoreLine]) -> None:
    """Write ``scores`` in one transaction (an existing score with the same identity is
    updated)."""
    with admin.connect(url) as conn:
        conn.transaction(lambda execute: [execute(UPSERT, row(s)) for s in scores])


def delete(url: str, run_id: str, span_id: str | None, name: str, source: str) -> bool:
    """Remove one score; False when there was none."""
    sid = score_id(run_id, span_id, name, source)
    with admin.connect(url) as conn:
        changed = conn.transaction(
            lambda execute: execute("DELETE FROM scores WHERE score_id = ?", (sid,))
        )
    return changed > 0


@dataclass(frozen=True)
class Score:
    """A stored score (``Store.scores``)."""

    run_id: str
    span_id: str | None
    step: str | None
    name: str
    kind: str
    value: float | bool | str | None
    """As given: a number, a bool, or the category."""
    label: str | None
    rationale: str | None
    source: str
    judge_run_id: str | None
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "span_id": self.span_id,
            "step": self.step,
            "name": self.name,
            "kind": self.kind,
            "value": self.value,
            "label": self.label,
            "rationale": self.rationale,
            "source": self.source,
            "judge_run_id": self.judge_run_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


READ_COLUMNS = (
    "run_id, span_id, step, name, kind, value, label, rationale, source, judge_run_id, "
    "created_at, updated_at"
)


def from_row(r: Sequence[Any]) -> Score:
    """A ``Score`` from a row of ``SELECT {READ_COLUMNS}``."""
    kind = r[4]
    value: float | bool | str | None
    if kind == "boolean":
        value = bool(r[5])
    elif kind == "categorical":
        value = r[6]
    else:
        value = None if r[5] is None else float(r[5])
    return Score(
        run_id=r[0],
        span_id=r[1],
        step=r[2],
        name=r[3],
        kind=kind,
        value=value,
        label=r[6],
        rationale=r[7],
        source=r[8],
        judge_run_id=r[9],
        created_at=r[10],
        updated_at=r[11],
    )
