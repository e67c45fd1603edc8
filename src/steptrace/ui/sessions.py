"""The UI API's session routes: the sessions most recently active
(``/api/v1/sessions``) and one session's runs as a conversation
(``/api/v1/sessions/{session_id}``), each run a turn: its input, then its output or
error. ``add_routes`` adds them to the app ``steptrace.ui.app`` makes, with its route
maker (the API prefix, the JSON response class, the documented errors).

A session id is any text, ``/`` included: the route takes the rest of the path.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' parameter
# annotations, whose bounds are ``add_routes``'s arguments, when the routes are made.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query

from steptrace.store import Store
from steptrace.store.model import RunRecord
from steptrace.ui import schema
from steptrace.ui.security import error

TURNS_PAGE_MAX = 100
"""At most this many turns a page: each carries its run's input and output whole."""


def _turn(run: RunRecord) -> dict[str, Any]:
    turn = run.summary()
    if run.error is not None:
        turn["error"] = {"type": run.error.get("type"), "message": run.error.get("message")}
    return turn


def add_routes(
    api_get: Callable[[str, str, Any], Callable[[Any], Any]],
    store: Store,
    page_size_max: int,
    offset_max: int,
) -> None:
    """Add the session routes through ``api_get(path, tag, model)``."""

    @api_get("/sessions", "sessions", schema.SessionsPage)
    def sessions(
        workflow: str | None = None,
        since: Annotated[str | None, Query(description="ISO-8601, or 2h, 7d… before now")] = None,
        until: Annotated[str | None, Query(description="exclusive; ISO-8601 or 2h…")] = None,
        limit: Annotated[int, Query(ge=1, le=page_size_max)] = 50,
        offset: Annotated[int, Query(ge=0, le=offset_max)] = 0,
    ) -> Any:
        """A page of sessions, the one whose last run started most recently first: run
        count, first and last start, runs by status, workflows (``Store.sessions``)."""
        found = store.sessions(
            workflow or None, limit + 1, offset, since=since or None, until=until or None
        )
        return {
            "sessions": found[:limit],
            "limit": limit,
            "offset": offset,
            "has_more": len(found) > limit,
        }

    @api_get("/sessions/{session_id:path}", "sessions", schema.Session)
    def session(
        session_id: str,
        limit: Annotated[int, Query(ge=1, le=TURNS_PAGE_MAX)] = 20,
        offset: Annotated[int, Query(ge=0, le=offset_max)] = 0,
    ) -> Any:
        """A session's runs as turns in start order (each with its input, output and
        error): the latest ``limit`` after skipping the ``offset`` latest;
        ``has_more`` says whether earlier ones exist."""
        total = store.count_runs(session=session_id)
        if not total:
            return error(404, f"no session {session_id!r} in {store.url}")
        found = store.runs(session=session_id, last=limit, offset=offset)
        return {
            "session_id": session_id,
            "runs": [_turn(r) for r in reversed(found)],
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(found) < total,
        }
