"""``st.score``: a score on a recorded run or span attempt, written to the store (and
sent to OpenTelemetry as a ``gen_ai.evaluation.result`` log record when the process
exports log records)."""

from __future__ import annotations

import time

from steptrace.otel import span_end
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
    (``RUN/SPAN``, ``RUN/STEP`` with a step key or a step name the run ran once, or a
    span id): ``value`` is a number, a bool or a category string;
    ``source`` is ``human``, ``code`` or ``llm``. Scoring the same target again with the
    same name and source updates the score in place. Written at once to the configured
    store (or ``store``); returns the stored score.

    Raises ``ValueError`` for a value, name or source that cannot be a score and
    ``RunNotFound`` for a target the store does not have."""
    with Store.open(store) as opened:
        written = opened.score(target, name, value, label=label, rationale=rationale, source=source)
        export(opened, written)
    return written


def export(store: Store, written: Score) -> bool:
    """Send a score given after the fact to OpenTelemetry: a ``gen_ai.evaluation.result``
    log record carrying the scored span's trace and span ids (the run's root span for a
    run's score), when the process has a logs exporter. Never raises; True when sent."""
    if not span_end.exports_logs():
        return False
    try:
        rows = store.sql("SELECT trace_id, span_id FROM runs WHERE run_id = ?", [written.run_id])
    except Exception:  # the score is written: its telemetry is not worth an error
        return False
    if not rows:
        return False
    trace_id, root = rows[0]["trace_id"], rows[0]["span_id"]
    return span_end.export_scores([written], trace_id, written.span_id or root, time.time_ns())
