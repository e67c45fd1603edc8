"""The web UI's server: a read-only JSON API under ``/api/v1`` over a ``Store``, and
the pages (one HTML shell, plain JS and CSS from ``static/``) that use it.

Every route is a ``GET`` (and ``HEAD``): nothing the UI does writes to the store.
Values leave the server as JSON and the pages put them into the DOM as text, never as
markup; a Content-Security-Policy that allows only the UI's own scripts is a second
fence. Who may ask, the headers every answer carries and the one shape of errors are
``steptrace.ui.security``'s; the responses' shapes for ``/openapi.json`` are
``steptrace.ui.schema``'s.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Annotated, Any, TypeVar, cast

import orjson
from fastapi import FastAPI, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from steptrace.masking import mask_url
from steptrace.store import Store
from steptrace.store.model import RunRecord, SpanView
from steptrace.ui import evaluation, schema, sessions
from steptrace.ui.security import error, install

API = "/api/v1"
PAGE_SIZE_MAX = 500
OFFSET_MAX = 1_000_000_000
"""Every integer parameter has a bound: PostgreSQL refuses one beyond a bigint."""
_RUN_CACHE_SIZE = 16
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schema.ErrorResponse, "description": description}
    for status, description in (
        (400, "A malformed filter, field or time, or a NUL in the address."),
        (401, "A token is required (the UI was started with one)."),
        (403, "Without a token, the request was not addressed to a loopback name."),
        (404, "No such run (or span, or unambiguous id prefix)."),
        (422, "A parameter out of its range or of the wrong type."),
        (500, "The UI failed (its log has the detail)."),
    )
}


class _Json(JSONResponse):
    """A JSON response serialised by orjson (stored values are plain JSON already; what
    orjson does not know, such as a set, is converted as FastAPI would)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=jsonable_encoder, option=orjson.OPT_NON_STR_KEYS)


def _ok(model: Any) -> dict[int | str, dict[str, Any]]:
    """The documented responses of a route answering ``model``."""
    return {200: {"model": model, "description": "Successful Response"}, **_ERRORS}


class _Assets(StaticFiles):
    """The pages' scripts and styles. Asked for at the version the shell names (a hash
    of them all), an answer may be kept by the browser: a page loaded again asks the
    server only for the shell and the data, and a changed UI has a new version, so new
    addresses. Asked for otherwise, an answer is ``no-store`` as everything else is."""

    def __init__(self, *, directory: str, version: str) -> None:
        super().__init__(directory=directory)
        self._query = f"v={version}".encode()

    async def get_response(self, path: str, scope: MutableMapping[str, Any]) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200 and scope.get("query_string") == self._query:
            response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
        return response


def _assets_version(static: Traversable) -> str:
    """A hash of the files under ``static``: a new one whenever any of them changes."""
    digest = hashlib.sha256()
    for item in sorted(static.iterdir(), key=lambda item: item.name):
        if item.is_file():
            digest.update(item.name.encode() + b"\0" + item.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _versioned_shell(shell: bytes, version: str) -> bytes:
    """The page shell with its scripts and styles asked for at ``version``."""
    return re.sub(rb'"(/static/[\w.-]+)"', rb'"\1?v=' + version.encode() + rb'"', shell)


class _Runs:
    """Finished runs read whole once and kept (a few), so selecting span after span of a
    large run does not read it again; running runs are always read afresh."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, RunRecord] = OrderedDict()

    def get(self, run_id: str) -> RunRecord:
        full = self._store.resolve(run_id)
        with self._lock:
            run = self._cache.get(full)
            if run is not None:
                self._cache.move_to_end(full)
                return run
        run = self._store.run(full)
        if run.status not in ("running", "interrupted"):  # an interrupted run may yet end
            with self._lock:
                self._cache[full] = run
                while len(self._cache) > _RUN_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return run


_LIGHT_LLM = (
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "time_to_first_chunk_ms",
    "finish_reason",
    "incomplete",
)


def _light_span(span: SpanView) -> dict[str, Any]:
    """What the waterfall and the tree need of a span: no values, no messages."""
    error = span.error
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "kind": span.kind,
        "name": span.name,
        "step_key": span.step_key,
        "attempt": span.attempt,
        "status": span.status,
        "started_at": span.started_at,
        "ended_at": span.ended_at,
        "duration_ms": span.duration_ms,
        "error": None
        if error is None
        else {
            "type": error.get("type"),
            "message": str(error.get("message", ""))[:300],
            "validation": bool(error.get("validation")),
        },
        "llm": None if span.llm is None else {k: span.llm.get(k) for k in _LIGHT_LLM},
        "logs": len(span.logs),
    }


def _totals(run: RunRecord) -> dict[str, Any]:
    keyed = [s for s in run.spans if s.step_key is not None]
    calls = [s.llm for s in run.spans if s.llm is not None]
    costs = [c["cost_usd"] for c in calls if c.get("cost_usd") is not None]
    tokens_in = [c["input_tokens"] for c in calls if c.get("input_tokens") is not None]
    tokens_out = [c["output_tokens"] for c in calls if c.get("output_tokens") is not None]
    return {
        "steps": len({s.step_key for s in keyed}),
        "attempts": len(keyed),
        "llm_calls": len(calls),
        "input_tokens": sum(tokens_in) if tokens_in else None,
        "output_tokens": sum(tokens_out) if tokens_out else None,
        "cost_usd": sum(costs) if costs else None,
    }


def _histogram(durations: list[float], bins: int) -> dict[str, Any]:
    """Counts of ``durations`` in ``bins`` equal bins on a log scale (latencies spread
    over orders of magnitude), from the smallest to the largest."""
    if not durations:
        return {"count": 0, "bins": []}
    low, high = min(durations), max(durations)
    lo, hi = math.log10(max(low, 1e-3)), math.log10(max(high, 1e-3))
    if hi - lo < 1e-9:
        return {
            "count": len(durations),
            "bins": [{"from": low, "to": high, "count": len(durations)}],
        }
    width = (hi - lo) / bins
    counts = [0] * bins
    for d in durations:
        i = int((math.log10(max(d, 1e-3)) - lo) / width)
        counts[min(max(i, 0), bins - 1)] += 1
    edges = [10 ** (lo + i * width) for i in range(bins + 1)]
    return {
        "count": len(durations),
        "bins": [{"from": edges[i], "to": edges[i + 1], "count": counts[i]} for i in range(bins)],
    }


_Route = TypeVar("_Route", bound=Callable[..., Any])


def create_app(
    store: Store,
    *,
    token: str | None = None,
    trace_url: str | None = None,
    port: int | None = None,
) -> FastAPI:
    """The UI over ``store`` (shared by the request threads; the caller closes it).
    With ``token``, every request must carry it; ``trace_url`` is a template such as
    ``http://jaeger:16686/trace/{trace_id}`` for links to an external trace viewer;
    ``port`` (the one it listens on) names its login cookie."""
    app = FastAPI(
        title="steptrace UI",
        version="1",
        summary="Read-only JSON API over a steptrace store: runs, a run's spans, diff, "
        "compare, step statistics, distributions.",
        description='Every error is `{"error": {"code": "...", "message": "..."}}`.',
        docs_url=None,  # the interactive docs load their assets from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install(app, token=token, port=port)
    runs_cache = _Runs(store)
    static = resources.files("steptrace.ui") / "static"
    version = _assets_version(static)
    shell = _versioned_shell((static / "index.html").read_bytes(), version)

    def page() -> HTMLResponse:
        return HTMLResponse(shell)

    pages = ("/", "/runs/{run_id}", "/diff", "/compare/{run_id}", "/stats", *evaluation.PAGES)
    for path in (*pages, "/sessions", "/sessions/{session_id:path}"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    app.mount("/static", _Assets(directory=str(static), version=version), name="static")

    # -- API ---------------------------------------------------------------------------

    def api_get(path: str, tag: str, model: Any) -> Callable[[_Route], _Route]:
        """A JSON GET route under the API prefix, its 200 described by ``model``."""
        route = app.get(
            f"{API}{path}",
            tags=[tag],
            response_class=_Json,
            response_model=None,
            responses=_ok(model),
        )

        def register(endpoint: _Route) -> _Route:
            route(_answered_by_orjson(endpoint))
            return endpoint

        return register

    @api_get("/config", "ui", schema.Config)
    def config() -> Any:
        """What the pages need to know of the server: the store (its password masked)
        and the trace link template."""
        shown = mask_url(trace_url) if trace_url else None
        return {"store": mask_url(store.url), "trace_url": shown, "page_size_max": PAGE_SIZE_MAX}

    sessions.add_routes(api_get, store, PAGE_SIZE_MAX, OFFSET_MAX)

    @api_get("/workflows", "runs", list[str])
    def workflows() -> Any:
        """The workflow names that have runs, sorted."""
        return store.workflows()

    @api_get("/runs", "runs", schema.RunsPage)
    def runs(
        workflow: str | None = None,
        status: str | None = None,
        since: Annotated[str | None, Query(description="ISO-8601, or 2h, 7d… before now")] = None,
        until: Annotated[str | None, Query(description="exclusive; ISO-8601 or 2h…")] = None,
        tag: Annotated[list[str] | None, Query(description="every one given")] = None,
        where: Annotated[
            list[str] | None,
            Query(description="step predicates as `steptrace runs --where`, all must hold"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = 50,
        offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
        session: Annotated[str | None, Query(description="a session's exact id")] = None,
    ) -> Any:
        """A page of runs, newest first, each with its step, attempt, token and cost totals;
        ``has_more`` says whether a next page exists."""
        found = store.runs(
            workflow=workflow or None,
            status=status or None,
            last=limit + 1,
            offset=offset,
            since=since or None,
            until=until or None,
            tag=[t for t in tag or [] if t] or None,
            where=[w for w in where or [] if w.strip()] or None,
            session=session or None,
        )
        page_runs = found[:limit]
        totals = store.run_totals([r.run_id for r in page_runs])
        items = []
        for r in page_runs:
            item = r.summary()
            # The listing shows no values: keep the page small whatever the runs hold.
            del item["input"], item["output"]
            if r.error is not None:
                item["error"] = {"type": r.error.get("type"), "message": r.error.get("message")}
            item["totals"] = totals[r.run_id]
            items.append(item)
        return {"runs": items, "limit": limit, "offset": offset, "has_more": len(found) > limit}

    @api_get("/runs/{run_id}", "runs", schema.Run)
    def run(
        run_id: str,
        values: Annotated[
            bool, Query(description="include each span's values, messages and logs")
        ] = False,
    ) -> Any:
        """A run (id or unique prefix) with its spans in start order, and the runs made
        from it (``derived``: its forks and replays, newest first). Without ``values``
        the spans are light (no input, output, messages or logs): fetch one span whole
        from ``/runs/{run_id}/spans/{span_id}``."""
        record = runs_cache.get(run_id)
        if values:
            data = record.to_dict()
        else:
            data = record.summary()
            data["logs"] = record.logs
            data["spans"] = [_light_span(s) for s in record.spans]
        data["totals"] = _totals(record)
        data["trace_link"] = _trace_link(trace_url, record)
        # Read afresh, not kept with the run: a finished run may be forked or scored
        # at any time.
        data["derived"] = store.derived(record.run_id)
        data["scores"] = [score.to_dict() for score in store.scores(record.run_id)]
        return data

    @api_get("/runs/{run_id}/spans/{span_id}", "runs", schema.Span | schema.RootSpan)
    def span(run_id: str, span_id: str) -> Any:
        """One span of a run, whole: input, output, error with traceback, LLM call
        (messages, params, response, tool calls), logs and attributes."""
        record = runs_cache.get(run_id)
        for s in record.spans:
            if s.span_id == span_id:
                return s.to_dict()
        if span_id == record.span_id:
            return {"span_id": record.span_id, "kind": "run", "name": record.workflow}
        return error(404, f"no span {span_id!r} in run {record.run_id}")

    @api_get("/diff", "questions", schema.diff_model())
    def diff(a: str, b: str) -> Any:
        """How run ``b`` differs from run ``a``, step by step (``Store.diff``)."""
        return store.diff(a, b)

    @api_get("/runs/{run_id}/compare", "questions", schema.compare_model())
    def compare(run_id: str, baseline: Annotated[int, Query(ge=1, le=10_000)] = 100) -> Any:
        """The run against the last ``baseline`` successful runs of its workflow:
        ranked findings (``Store.compare``)."""
        return store.compare(run_id, baseline)

    @api_get("/stats", "questions", schema.stats_model())
    def stats(
        workflow: str | None = None, last: Annotated[int, Query(ge=1, le=100_000)] = 1000
    ) -> Any:
        """Per step over the last ``last`` runs: count, failure and retry rates,
        p50/p95/p99 duration, tokens, cost (``Store.step_stats``)."""
        return store.step_stats(workflow or None, last)

    @api_get("/distribution", "questions", schema.distribution_model())
    def distribution(
        step: str,
        field: str,
        workflow: str | None = None,
        last: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> Any:
        """Values of an output field (``input.x`` for the input) of a step over the last
        ``last`` runs that ran it (``Store.distribution``)."""
        return store.distribution(step, field, last, workflow or None)

    @api_get("/histogram", "questions", schema.Histogram)
    def histogram(
        step: str,
        workflow: str | None = None,
        last: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        bins: Annotated[int, Query(ge=2, le=100)] = 24,
    ) -> Any:
        """Durations of the step's last ``last`` attempts in ``bins`` log-scale bins."""
        durations = store.step_durations(step, workflow or None, last)
        return {"step": step, "workflow": workflow or None} | _histogram(durations, bins)

    evaluation.add_routes(store, api_get)
    return app


def _answered_by_orjson(endpoint: _Route) -> _Route:
    """``endpoint`` answering a ``_Json`` response itself. Given plain data, FastAPI
    would first copy it through ``jsonable_encoder``, value by value: 80 ms for the
    light tree of a 2,000-span run, against 1.5 ms for orjson to serialise it."""

    @functools.wraps(endpoint)  # FastAPI reads the parameters through __wrapped__
    def answer(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        return result if isinstance(result, Response) else _Json(result)

    return cast(_Route, answer)


def _trace_link(template: str | None, run: RunRecord) -> str | None:
    if not template:
        return None
    values = {"trace_id": run.trace_id, "span_id": run.span_id, "run_id": run.run_id}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError):
        return None
