"""Sessions: runs grouped by the conversation or user journey they belong to
(``runs.session_id``).

``sessions`` lists the sessions most recently active (``Store.sessions``, ``steptrace
sessions``): each with how many runs it has, when the first and the last started, the
last end, its runs by status and its workflows. A session's runs themselves are
``Store.runs(session=…)``. Both read the ``runs_session`` index (migration
``0007_evaluation``): grouping walks it once, in session order.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict

from steptrace.query.distribution import Reader
from steptrace.query.where import RunFilter


class SessionSummary(TypedDict):
    """A session as ``Store.sessions`` lists it (of the runs the filters chose)."""

    session_id: str
    runs: int
    first_started_at: str
    """When its first run started (ISO-8601 UTC)."""
    last_started_at: str
    """When its last run started: sessions are listed by it, newest first."""
    last_ended_at: str | None
    """When its last finished run ended (None while none has)."""
    statuses: dict[str, int]
    """Its runs by status, in this order: ``succeeded``, ``failed``, ``running``,
    ``interrupted``."""
    workflows: list[str]
    """The workflows of its runs, sorted."""


_STATUS_ORDER = {"succeeded": 0, "failed": 1, "running": 2, "interrupted": 3}


def _conditions(
    reader: Reader,
    workflow: str | None,
    since: str | dt.datetime | None,
    until: str | dt.datetime | None,
) -> tuple[str, list[Any]]:
    conds, params = RunFilter.of(workflow, since=since, until=until).sql(reader.dialect)
    return " AND ".join(["runs.session_id IS NOT NULL", *conds]), params


def sessions(
    reader: Reader,
    workflow: str | None = None,
    last: int = 20,
    offset: int = 0,
    *,
    since: str | dt.datetime | None = None,
    until: str | dt.datetime | None = None,
) -> list[SessionSummary]:
    """The ``last`` sessions whose latest run started most recently (after skipping
    ``offset``), counting the runs of ``workflow`` started in ``[since, until)`` only."""
    where, params = _conditions(reader, workflow, since, until)
    # Grouped from the index alone (unless a filter needs the rows); the page's own
    # sessions are then read whole.
    rows = reader.rows(
        "SELECT runs.session_id, count(*), min(runs.started_at), max(runs.started_at) "
        f"FROM runs WHERE {where} GROUP BY runs.session_id "
        "ORDER BY max(runs.started_at) DESC, runs.session_id LIMIT ? OFFSET ?",
        [*params, last, offset],
    )
    found: dict[str, SessionSummary] = {
        str(r[0]): {
            "session_id": str(r[0]),
            "runs": int(r[1]),
            "first_started_at": str(r[2]),
            "last_started_at": str(r[3]),
            "last_ended_at": None,
            "statuses": {},
            "workflows": [],
        }
        for r in rows
    }
    if not found:
        return []
    marks = ", ".join("?" for _ in found)
    for session_id, name, status, count, ended_at in reader.rows(
        "SELECT runs.session_id, runs.workflow, runs.status, count(*), max(runs.ended_at) "
        f"FROM runs WHERE {where} AND runs.session_id IN ({marks}) "
        "GROUP BY runs.session_id, runs.workflow, runs.status",
        [*params, *found],
    ):
        summary = found[str(session_id)]
        last_ended = summary["last_ended_at"]
        if ended_at is not None and (last_ended is None or str(ended_at) > last_ended):
            summary["last_ended_at"] = str(ended_at)
        statuses = summary["statuses"]
        statuses[str(status)] = statuses.get(str(status), 0) + int(count)
        if name not in summary["workflows"]:
            summary["workflows"].append(str(name))
    for summary in found.values():
        summary["workflows"].sort()
        summary["statuses"] = dict(
            sorted(summary["statuses"].items(), key=lambda item: _STATUS_ORDER.get(item[0], 9))
        )
    return list(found.values())


def count_sessions(
    reader: Reader,
    workflow: str | None = None,
    *,
    since: str | dt.datetime | None = None,
    until: str | dt.datetime | None = None,
) -> int:
    """How many sessions ``sessions`` with the same filters would list without a limit."""
    where, params = _conditions(reader, workflow, since, until)
    rows = reader.rows(f"SELECT count(DISTINCT runs.session_id) FROM runs WHERE {where}", params)
    return int(rows[0][0])
