"""Logs (issue 2, point 5): stdlib ``logging`` records emitted while a step runs are
stored with that step (ts, level, logger, message, exception text), from any logger
and any thread carrying the step's context, with no handler set up by the user."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from tests.support.helpers import parse_ts, run_python

pytestmark = pytest.mark.usefixtures("runtime_store_url")  # in memory and on PostgreSQL


@pytest.fixture
def user_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of the test's own; its level is left alone (NOTSET) unless a test sets it,
    and restored afterwards."""
    logger = logging.getLogger(f"tests.logs.{request.node.name}")
    previous = logger.level
    yield logger
    logger.setLevel(previous)


@pytest.fixture
def root_at_warning() -> Iterator[logging.Logger]:
    """The root logger at its default level (WARNING), as after logging.basicConfig()."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.WARNING)
    yield root
    root.setLevel(previous)


def test_log_records_in_a_step_are_stored_with_that_step(user_logger: logging.Logger) -> None:
    user_logger.setLevel(logging.INFO)

    @st.step
    def work(n: int) -> int:
        user_logger.info("working on %d", n)
        user_logger.warning("careful with %s", "that")
        return n

    @st.step
    def quiet() -> None:
        return None

    @st.workflow
    def wf() -> None:
        work(3)
        quiet()

    wf()
    run = st.last_run()
    assert run is not None
    (work_span,) = run.steps("work")
    assert [(e["level"], e["logger"], e["message"]) for e in work_span.logs] == [
        ("INFO", user_logger.name, "working on 3"),
        ("WARNING", user_logger.name, "careful with that"),
    ]
    for entry in work_span.logs:
        assert parse_ts(work_span.started_at) <= parse_ts(entry["ts"])
        assert parse_ts(entry["ts"]) <= parse_ts(work_span.ended_at or "")
    assert run.steps("quiet")[0].logs == []


def test_warning_in_a_step_is_stored_without_any_logging_setup(
    user_logger: logging.Logger,
) -> None:
    @st.step
    def work() -> None:
        user_logger.warning("disk almost full")

    @st.workflow
    def wf() -> None:
        work()

    wf()
    run = st.last_run()
    assert run is not None
    (entry,) = run.steps()[0].logs
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "WARNING",
        user_logger.name,
        "disk almost full",
    )


def test_info_in_a_step_is_stored_when_root_has_a_handler(
    user_logger: logging.Logger, root_at_warning: logging.Logger
) -> None:
    assert root_at_warning.handlers  # pytest's own capture handlers

    @st.step
    def work() -> None:
        user_logger.info("step started")

    @st.workflow
    def wf() -> None:
        work()

    wf()
    run = st.last_run()
    assert run is not None
    assert [e["message"] for e in run.steps()[0].logs] == ["step started"]


def test_info_in_a_step_is_stored_in_a_process_with_no_logging_config(tmp_path: Path) -> None:
    store = tmp_path / "logs.db"
    proc = run_python(
        """
        import logging
        import steptrace as st

        log = logging.getLogger("app.worker")

        @st.step
        def work():
            log.info("info from the step")
            log.debug("debug is below the default level")

        @st.workflow
        def wf():
            work()

        wf()
        run = st.last_run()
        print([(e["level"], e["logger"], e["message"]) for e in run.steps()[0].logs])
        """,
        store,
    )
    assert proc.stdout.strip() == "[('INFO', 'app.worker', 'info from the step')]"
    assert "info from the step" not in proc.stderr  # what is printed does not change


def test_exception_text_is_stored_for_log_exception(user_logger: logging.Logger) -> None:
    @st.step
    def work() -> str:
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            user_logger.exception("division failed")
        return "handled"

    @st.workflow
    def wf() -> str:
        return work()

    assert wf() == "handled"
    run = st.last_run()
    assert run is not None
    (entry,) = run.steps()[0].logs
    assert entry["level"] == "ERROR"
    assert entry["message"] == "division failed"
    assert "Traceback (most recent call last)" in entry["exception"]
    assert "ZeroDivisionError: division by zero" in entry["exception"]


def test_logs_from_a_thread_carrying_the_steps_context(user_logger: logging.Logger) -> None:
    other = logging.getLogger("tests.logs.other-library")

    def background(n: int) -> None:
        user_logger.warning("from thread %d", n)
        other.error("library error in thread %d", n)

    @st.step
    def fan_out() -> None:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(background, n))
            for n in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @st.workflow
    def wf() -> None:
        fan_out()

    wf()
    run = st.last_run()
    assert run is not None
    entries = sorted((e["logger"], e["message"]) for e in run.steps()[0].logs)
    assert entries == [
        ("tests.logs.other-library", "library error in thread 0"),
        ("tests.logs.other-library", "library error in thread 1"),
        (user_logger.name, "from thread 0"),
        (user_logger.name, "from thread 1"),
    ]


def test_logs_from_a_thread_without_the_context_are_not_attached(
    user_logger: logging.Logger,
) -> None:
    @st.step
    def work() -> None:
        t = threading.Thread(target=user_logger.warning, args=("no context here",))
        t.start()
        t.join()
        user_logger.warning("in the step")

    @st.workflow
    def wf() -> None:
        work()

    wf()
    run = st.last_run()
    assert run is not None
    assert [e["message"] for e in run.steps()[0].logs] == ["in the step"]


def test_logs_outside_steps_but_inside_the_workflow_are_kept_with_the_run(
    user_logger: logging.Logger, db: Any
) -> None:
    @st.step
    def work() -> None:
        user_logger.warning("inside the step")

    @st.workflow
    def wf() -> None:
        user_logger.warning("before the step")
        work()
        user_logger.error("after the step")

    wf()
    run = st.last_run()
    assert run is not None
    assert [e["message"] for e in run.steps()[0].logs] == ["inside the step"]
    rows = db(
        "SELECT span_id, level, logger, message FROM logs WHERE run_id = ? ORDER BY seq",
        (run.run_id,),
    )
    root_rows = [r for r in rows if r[0] == run.span_id]
    assert [(r[1], r[2], r[3]) for r in root_rows] == [
        ("WARNING", user_logger.name, "before the step"),
        ("ERROR", user_logger.name, "after the step"),
    ]


def test_logs_outside_any_run_are_not_stored(user_logger: logging.Logger, db: Any) -> None:
    @st.workflow
    def wf() -> None:
        user_logger.warning("inside")

    user_logger.warning("before any run")
    wf()
    user_logger.warning("after the run")
    st.flush()
    assert [r[0] for r in db("SELECT message FROM logs")] == ["inside"]


def test_logs_of_concurrent_async_steps_stay_with_their_step(
    user_logger: logging.Logger,
) -> None:
    @st.step
    async def work(n: int) -> int:
        user_logger.warning("start %d", n)
        await asyncio.sleep(0.001 * (3 - n))
        user_logger.warning("end %d", n)
        return n

    @st.workflow
    async def wf() -> list[int]:
        return list(await asyncio.gather(work(0), work(1), work(2)))

    assert asyncio.run(wf()) == [0, 1, 2]
    run = st.last_run()
    assert run is not None
    for span in run.steps("work"):
        n = span.input["n"]
        assert [e["message"] for e in span.logs] == [f"start {n}", f"end {n}"]


def test_steptrace_own_loggers_are_not_captured(user_logger: logging.Logger) -> None:
    @st.step
    def work() -> None:
        logging.getLogger("steptrace.internal").warning("about steptrace itself")
        user_logger.warning("user")

    @st.workflow
    def wf() -> None:
        work()

    wf()
    run = st.last_run()
    assert run is not None
    assert [e["logger"] for e in run.steps()[0].logs] == [user_logger.name]


def test_capture_logs_false_in_a_fresh_process(tmp_path: Path) -> None:
    proc = run_python(
        """
        import logging
        import steptrace as st

        st.configure(capture_logs=False)

        @st.step
        def work():
            logging.getLogger("app").warning("not captured")

        @st.workflow
        def wf():
            work()

        wf()
        print(st.last_run().steps()[0].logs)
        """,
        tmp_path / "nocapture.db",
    )
    assert proc.stdout.strip() == "[]"


def test_capture_settings_apply_after_the_first_run(user_logger: logging.Logger) -> None:
    @st.step
    def work() -> None:
        user_logger.warning("warning")

    @st.workflow
    def wf() -> None:
        work()

    wf()  # the first run of the process (or not): capture is installed by now
    st.configure(capture_logs=False)
    wf()
    run = st.last_run()
    assert run is not None
    assert run.steps()[0].logs == []
