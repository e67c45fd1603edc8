"""Scores as columns of a run listing (the UI's runs table): the score names in the store
(``Store.score_names``), and one figure per run and score name for a page of runs,
read with one query (``Store.score_columns``).

A run's figure for a name is its run-level score of that name when it has one (of
several sources, the ``human`` one first, then ``llm``, then ``code``: a person's word
overrides a judge's, a judge's a check's). Otherwise it sums up the run's span scores
of that name: the mean of their values (for booleans, the share that passed), or,
when they are all categories, the most common category (ties: the first in sort order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal, TypedDict

from steptrace.query.distribution import Reader
from steptrace.record import stored_name

SOURCE_RANK = {"human": 0, "llm": 1, "code": 2}
"""Which run-level score of a name shows when several sources gave one."""
NAMES_MAX = 500
"""The most score names ``score_names`` lists."""
COLUMNS_MAX = 20
"""The most score names ``score_columns`` takes at once."""


class ScoreCell(TypedDict):
    of: Literal["run", "spans"]
    """Where the figure comes from: the run's own score, or its spans' scores."""
    kind: str
    """``numeric``, ``boolean`` or ``categorical`` (spans of mixed kinds: ``numeric``
    when any has a value)."""
    value: float | None
    """The run's value, or the mean of its spans' values (None for a category)."""
    label: str | None
    """The run score's label, or the spans' most common category."""
    source: str | None
    """The run score's source (None for spans)."""
    count: int
    """How many scores the figure sums up (1 for a run's own)."""


def score_names(reader: Reader, limit: int = NAMES_MAX) -> list[str]:
    """The distinct score names in the store, sorted (at most ``limit``). A skip scan of
    the ``(name, value, run_id)`` index: one index seek per name."""
    rows = reader.rows(
        "WITH RECURSIVE n(name, k) AS ("
        "SELECT min(name), 1 FROM scores "
        "UNION ALL SELECT (SELECT min(name) FROM scores WHERE name > n.name), k + 1 "
        "FROM n WHERE n.name IS NOT NULL AND k < ?) "
        "SELECT name FROM n WHERE name IS NOT NULL",
        [int(limit)],
    )
    return [str(r[0]) for r in rows]


def score_columns(
    reader: Reader, run_ids: Sequence[str], names: Sequence[str]
) -> dict[str, dict[str, ScoreCell | None]]:
    """Per run id, per score name: the run's figure (see the module's docstring), or
    None when the run has no score of that name. One query for every run and name."""
    ids = list(dict.fromkeys(run_ids))
    wanted = list(dict.fromkeys(stored_name(n) for n in names))
    out: dict[str, dict[str, ScoreCell | None]] = {r: dict.fromkeys(wanted) for r in ids}
    if not ids or not wanted:
        return out
    run_marks = ", ".join("?" for _ in ids)
    name_marks = ", ".join("?" for _ in wanted)
    # Driven by the (run_id, …) index, a page's worth of rows: SQLite would
    # otherwise read every score of those names through the name indexes.
    name = reader.dialect.unindexed("name")
    rows = reader.rows(
        "SELECT run_id, name, span_id, kind, value, label, source FROM scores "
        f"WHERE run_id IN ({run_marks}) AND {name} IN ({name_marks})",
        [*ids, *wanted],
    )
    own: dict[tuple[str, str], list[tuple[str, str, float | None, str | None]]] = {}
    spans: dict[tuple[str, str], list[tuple[str, float | None, str | None]]] = {}
    for run_id, name, span_id, kind, value, label, source in rows:
        number = None if value is None else float(value)
        if span_id is None:
            own.setdefault((run_id, name), []).append((source, kind, number, label))
        else:
            spans.setdefault((run_id, name), []).append((kind, number, label))
    for (run_id, name), given in own.items():
        source, kind, number, label = min(given, key=lambda g: SOURCE_RANK.get(g[0], 9))
        out[run_id][name] = {
            "of": "run",
            "kind": kind,
            "value": number,
            "label": label,
            "source": source,
            "count": 1,
        }
    for (run_id, name), scored in spans.items():
        if out[run_id][name] is None:
            out[run_id][name] = _of_spans(scored)
    return out


def _of_spans(scored: list[tuple[str, float | None, str | None]]) -> ScoreCell:
    numbers = [number for _, number, _ in scored if number is not None]
    kinds = {kind for kind, _, _ in scored}
    if numbers:
        return {
            "of": "spans",
            "kind": "boolean" if kinds == {"boolean"} else "numeric",
            "value": sum(numbers) / len(numbers),
            "label": None,
            "source": None,
            "count": len(numbers),
        }
    labels = Counter(label for _, _, label in scored if label is not None)
    top = min(labels.items(), key=lambda item: (-item[1], item[0]))[0] if labels else None
    return {
        "of": "spans",
        "kind": "categorical",
        "value": None,
        "label": top,
        "source": None,
        "count": len(scored),
    }
