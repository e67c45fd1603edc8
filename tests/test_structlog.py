"""structlog configured to go through stdlib logging is captured like any log record."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import steptrace as st

pytestmark = pytest.mark.usefixtures("store_url")  # every test on both backends

structlog = pytest.importorskip("structlog")


@pytest.fixture
def stdlib_structlog() -> Iterator[None]:
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


def test_structlog_lines_in_a_step_are_stored_with_it(stdlib_structlog: None) -> None:
    log = structlog.get_logger("orders")

    @st.step
    def charge(order_id: str) -> None:
        log.info("charged", order_id=order_id, api_key="sk-abcdefghijklmnopqrstuv")

    @st.workflow
    def wf() -> None:
        charge("A-7")

    wf()
    run = st.last_run()
    assert run is not None
    (entry,) = run.steps("charge")[0].logs
    assert entry["logger"] == "orders"
    assert entry["level"] == "INFO"
    assert "event='charged'" in entry["message"] and "order_id='A-7'" in entry["message"]
    assert "sk-abcdefghijklmnopqrstuv" not in entry["message"]
