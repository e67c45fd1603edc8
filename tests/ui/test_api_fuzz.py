"""The UI's API cannot be made to fail: schemathesis generates requests from its
OpenAPI description (``/openapi.json``), valid and invalid ones, and every answer must
be no 5xx, within the description (status code, content type, body schema), carry the
security headers, and, for an error, have the one shape
``{"error": {"code": "...", "message": "..."}}``.

Run in-process against the ASGI app (the same ``create_app`` ``steptrace ui`` serves)
over each engine's store of demo runs; run ids and span ids are also drawn from the
store, so that the paths that need a real run are exercised past "not found".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as hs
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

import steptrace as st
from steptrace.store.schema import migrate_store
from steptrace.ui.app import create_app

EXAMPLES = int(os.environ.get("STEPTRACE_FUZZ_EXAMPLES", "8"))
"""Generated requests per operation and kind (valid, invalid, on real data): the whole
run stays within seconds per engine. Raise it to search longer (hundreds find more)."""
LOOPBACK = {"host": "127.0.0.1"}
HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy")
EXPERIMENTS = "/api/v1/experiments"


_answered: dict[str, set[int]] = {}
"""The status codes each operation answered, in the current test."""


@schemathesis.check
def one_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every answer has the security headers; every error is exactly
    ``{"error": {"code": str, "message": str}}``."""
    _answered.setdefault(case.operation.path, set()).add(response.status_code)
    headers = {k.lower() for k in response.headers}
    missing = [h for h in (*HEADERS, "cache-control") if h not in headers]
    if missing:
        raise AssertionError(f"{response.status_code} without {missing}")
    if response.status_code < 400:
        return None
    body = response.json()
    if set(body) != {"error"} or set(body["error"]) != {"code", "message"}:
        raise AssertionError(f"error of another shape: {body}")
    if not all(isinstance(body["error"][k], str) for k in ("code", "message")):
        raise AssertionError(f"error fields are not text: {body}")
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    one_error_shape,
]


def _run(strategy: Any) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        case.call_and_validate(headers=LOOPBACK, checks=CHECKS)

    check()


def _real_values(store: st.Store) -> Any:
    """Values for the parameters that name things in the store, by name, drawn together
    so that they match: a run (its id or an id prefix) and one of its spans, another
    run, a step it ran and an output field; and a session."""
    runs = [store.run(r.run_id) for r in store.runs(last=5)]
    sessions = [s["session_id"] for s in store.sessions()]

    def of(run: Any) -> Any:
        steps = sorted({s.name for s in run.steps()}) or ["classify"]
        return hs.fixed_dictionaries(
            {
                "run_id": hs.sampled_from([run.run_id, run.run_id[:8]]),
                "span_id": hs.sampled_from([run.span_id, *(s.span_id for s in run.spans)]),
                "a": hs.just(run.run_id),
                "b": hs.sampled_from([r.run_id for r in runs]),
                "step": hs.sampled_from(steps),
                "field": hs.sampled_from(["category", "urgency", "input.ticket", "missing"]),
                "workflow": hs.just(run.workflow),
                "session_id": hs.sampled_from(sessions),
                "run": hs.just([r.run_id for r in runs]),
                "name": hs.sampled_from([["<i>markup</i>"], ["<i>markup</i>", "missing"]]),
            }
        )

    return hs.sampled_from(runs).flatmap(of)


def _named(operation: Any, values: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """``values`` split into the operation's path and query parameters it names."""
    path = {p.name for p in operation.path_parameters}
    query = {p.name for p in operation.query}
    return {
        "path_parameters": {k: v for k, v in values.items() if k in path} or None,
        "query": {k: v for k, v in values.items() if k in query} or None,
    }


def test_no_request_makes_the_api_fail(api_store: st.Store) -> None:
    _answered.clear()
    app = create_app(api_store, trace_url="http://jaeger.invalid:16686/trace/{trace_id}")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=LOOPBACK)
    real = _real_values(api_store)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        strategies = [
            operation.as_strategy(),
            real.flatmap(lambda values, op=operation: op.as_strategy(**_named(op, values))),
        ]
        if list(operation.query):  # path parameters are any text: nothing is invalid
            strategies.append(
                operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
            )
        for strategy in strategies:
            _run(strategy)
    assert {op.path for op in operations} == set(_answered)  # every operation was asked


def test_every_operation_answers_with_data(api_store: st.Store) -> None:
    """Asked about a run that exists (and its first span, its first step), every
    operation answers 200 within its description: the fuzzing above reached past
    "not found"."""
    app = create_app(api_store)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=LOOPBACK)
    run = api_store.run(api_store.runs(last=1, workflow="triage")[0].run_id)
    values = {
        "run_id": run.run_id,
        "span_id": run.spans[0].span_id,
        "a": run.run_id,
        "b": api_store.runs(last=2, workflow="triage")[1].run_id,
        "step": run.steps()[0].name,
        "field": "category",
        "workflow": run.workflow,
        "session_id": api_store.sessions(last=1)[0]["session_id"],
        "run": [run.run_id],
        "name": ["<i>markup</i>"],
    }
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(EXPERIMENTS):
            continue  # this store has none: test_ui_experiments asks them with data
        case = operation.Case(**_named(operation, values))
        response = case.call_and_validate(headers=LOOPBACK, checks=CHECKS)
        assert response.status_code == 200, (operation.path, response.text[:300])


def test_a_nul_in_the_address_is_a_400(api_store: st.Store) -> None:
    """PostgreSQL takes no NUL in text: the API refuses one before the store sees it."""
    client = TestClient(create_app(api_store), base_url="http://127.0.0.1")
    run_id = api_store.runs(last=1)[0].run_id
    for path in (
        "/api/v1/runs?workflow=%00",
        "/api/v1/runs?tag=a%00b",
        "/api/v1/runs?tag=a%00b&tag=c",  # not only the last value of a repeated one
        f"/api/v1/runs/{run_id}%00",
        "/api/v1/distribution?step=classify&field=cat%00egory",
    ):
        response = client.get(path)
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("status", [404, 422, 400])
def test_errors_have_one_shape(api_store: st.Store, status: int) -> None:
    client = TestClient(create_app(api_store), base_url="http://127.0.0.1")
    path = {
        404: "/api/v1/runs/ffffffffffffffff",
        422: "/api/v1/runs?offset=99999999999999999999",  # beyond PostgreSQL's bigint
        400: "/api/v1/runs?where=classify.output.category",
    }[status]
    response = client.get(path)
    assert response.status_code == status
    code = {404: "not_found", 422: "invalid_parameter", 400: "bad_request"}[status]
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"code", "message"}


def test_an_unexpected_failure_is_a_500_of_the_same_shape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store closed under the UI: the answer is a 500 of the one shape, with the
    headers and without the traceback, which goes to the log instead."""
    migrate_store(str(tmp_path / "closed.db"))  # reading a store never creates one
    store = st.Store.open(str(tmp_path / "closed.db"))
    client = TestClient(create_app(store), base_url="http://127.0.0.1")
    assert client.get("/api/v1/workflows").json() == []
    store.close()
    with caplog.at_level(logging.ERROR, logger="steptrace"):
        response = client.get("/api/v1/workflows")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "Traceback" not in response.text and "closed" not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "GET /api/v1/workflows failed" in caplog.text and "Traceback" in caplog.text
