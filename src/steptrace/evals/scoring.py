"""``st.score``: a score on a recorded run or span attempt, written to the store."""

from __future__ import annotations

from steptrace.store import Store
from steptrace.store.scores import Score


def score(
    target: str,
    name: str,
    value: float | bool | str,
    *,
    label: str | None = None,
    rationale: str | None = None,
    source: str = "human",
    store: str | None = None,
) -> Score:
    """Score a run (``target`` = its id or an unambiguous prefix) or one span attempt
    (``RUN/SPAN`` or a span id): ``value`` is a number, a bool or a category string;
    ``source`` is ``human``, ``code`` or ``llm``. Scoring the same target again with the
    same name and source updates the score in place. Written at once to the configured
    store (or ``store``); returns the stored score.

    Raises ``ValueError`` for a value, name or source that cannot be a score and
    ``RunNotFound`` for a target the store does not have."""
    with Store.open(store) as opened:
        return opened.score(target, name, value, label=label, rationale=rationale, source=source)
