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
from steptrace.ui.app import create_app

EXAMPLES = 8
"""Generated requests per operation and kind (valid, invalid, on a real run): the whole
run stays within seconds per engine."""
LOOPBACK = {"host": "127.0.0.1"}
HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy")


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


def _real_values(store: st.Store) -> dict[str, Any]:
    """Strategies for the parameters that name things in the store, by name: runs (ids
    and id prefixes) and their spans, steps and output fields that exist."""
    runs = [store.run(r.run_id) for r in store.runs(last=5)]
    ids = [r.run_id for r in runs] + [r.run_id[:8] for r in runs]
    spans = [s.span_id for r in runs for s in r.spans] + [r.span_id for r in runs]
    steps = sorted({s.name for r in runs for s in r.steps()})
    return {
        "run_id": hs.sampled_from(ids),
        "a": hs.sampled_from(ids),
        "b": hs.sampled_from(ids),
        "span_id": hs.sampled_from(spans),
        "step": hs.sampled_from(steps),
        "field": hs.sampled_from(["category", "urgency", "input.ticket", "missing"]),
        "workflow": hs.sampled_from([runs[0].workflow]),
    }


def _on_real_data(operation: Any, real: dict[str, Any]) -> Any:
    """Requests whose store-naming parameters name real things (the rest generated)."""
    path = {p.name for p in operation.path_parameters} & set(real)
    query = {p.name for p in operation.query} & set(real)
    chosen = hs.fixed_dictionaries({name: real[name] for name in path | query})
    return chosen.flatmap(
        lambda values: operation.as_strategy(
            path_parameters={k: v for k, v in values.items() if k in path} or None,
            query={k: v for k, v in values.items() if k in query} or None,
        )
    )


def test_no_request_makes_the_api_fail(api_store: st.Store) -> None:
    _answered.clear()
    app = create_app(api_store, trace_url="http://jaeger.invalid:16686/trace/{trace_id}")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=LOOPBACK)
    real = _real_values(api_store)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        strategies = [operation.as_strategy(), _on_real_data(operation, real)]
        if list(operation.query):  # path parameters are any text: nothing is invalid
            strategies.append(
                operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
            )
        for strategy in strategies:
            _run(strategy)
    # Every operation was asked, and answered with data at least once.
    assert {op.path for op in operations} == set(_answered)
    assert all(200 in codes for codes in _answered.values()), _answered


def test_a_nul_in_the_address_is_a_400(api_store: st.Store) -> None:
    """PostgreSQL takes no NUL in text: the API refuses one before the store sees it."""
    client = TestClient(create_app(api_store), base_url="http://127.0.0.1")
    run_id = api_store.runs(last=1)[0].run_id
    for path in (
        "/api/v1/runs?workflow=%00",
        "/api/v1/runs?tag=a%00b",
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
        422: "/api/v1/runs?limit=0",
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
