"""Retries and validation (issue 2, point 2): one span per attempt, validation failures
keep the offending value, ``retry_on`` and ``Backoff``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
from typing import Any

import pydantic
import pytest

import steptrace as st
from tests.support.helpers import parse_ts

pytestmark = pytest.mark.usefixtures("runtime_store_url")  # in memory and on PostgreSQL


class Label(pydantic.BaseModel):
    label: str
    confidence: float


def _flaky(failures: int, exc: type[Exception] = ConnectionError) -> Any:
    """A function failing ``failures`` times (a fresh exception each time), then returning."""
    raised: list[Exception] = []

    def fn(x: int) -> int:
        if len(raised) < failures:
            raised.append(exc(f"attempt {len(raised) + 1} failed"))
            raise raised[-1]
        return x * 2

    fn.raised = raised  # type: ignore[attr-defined]
    return fn


def test_each_attempt_is_its_own_span_with_attempt_status_duration_and_error(
    exported: Any,
) -> None:
    impl = _flaky(2)
    flaky = st.step(retries=3, backoff=0.001)(impl)

    @st.workflow
    def wf() -> int:
        return flaky(5)

    assert wf() == 10
    run = st.last_run()
    assert run is not None
    attempts = run.steps("fn")
    assert [(s.attempt, s.status) for s in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert len({s.span_id for s in attempts}) == 3
    for s in attempts:
        assert s.parent_span_id == run.span_id
        assert s.duration_ms is not None and s.duration_ms >= 0
        assert s.input == {"x": 5}
    for n, s in enumerate(attempts[:2], start=1):
        assert s.error is not None
        assert s.error["type"] == "ConnectionError"
        assert s.error["message"] == f"attempt {n} failed"
        assert "ConnectionError" in s.error["traceback"]
        assert not s.error.get("validation")
        assert s.output is None
    assert attempts[2].error is None
    assert attempts[2].output == 10
    # attempts follow one another
    for before, after in itertools.pairwise(attempts):
        assert parse_ts(before.ended_at or "") <= parse_ts(after.started_at)

    spans = exported()
    otel_attempts = sorted(
        (s.attributes["steptrace.step.attempt"], span_id)
        for span_id, s in spans.items()
        if s.name == "fn"
    )
    assert [a for a, _ in otel_attempts] == [1, 2, 3]
    assert {span_id for _, span_id in otel_attempts} == {s.span_id for s in attempts}


def test_exhausted_retries_raise_the_last_exception_unchanged() -> None:
    impl = _flaky(10)
    flaky = st.step(retries=2, backoff=0.001)(impl)

    @st.workflow
    def wf() -> int:
        return flaky(1)

    with pytest.raises(ConnectionError) as info:
        wf()
    assert info.value is impl.raised[-1]
    assert len(impl.raised) == 3
    run = st.last_run()
    assert run is not None
    assert run.status == "failed"
    assert [(s.attempt, s.status) for s in run.steps()] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    last_error = run.steps()[-1].error
    assert last_error is not None and last_error["message"] == "attempt 3 failed"


def test_no_retries_by_default() -> None:
    impl = _flaky(1)
    once = st.step(impl)

    @st.workflow
    def wf() -> int:
        return once(1)

    with pytest.raises(ConnectionError):
        wf()
    assert len(impl.raised) == 1
    run = st.last_run()
    assert run is not None
    assert [s.attempt for s in run.steps()] == [1]


def test_output_model_failure_keeps_the_raw_text_and_says_validation() -> None:
    st.llm.script("retry-json", ['{"label": "spam"}', '{"label": "spam", "confidence": 0.9}'])

    @st.step(retries=1, backoff=0.001, output=Label)
    def classify(text: str) -> str:
        reply = st.llm.chat(
            model="scripted:retry-json", messages=[{"role": "user", "content": text}]
        )
        return reply.text

    @st.workflow
    def wf(text: str) -> Label:
        return classify(text)

    result = wf("buy now")
    assert isinstance(result, Label)
    assert result == Label(label="spam", confidence=0.9)

    run = st.last_run()
    assert run is not None
    first, second = run.steps("classify")
    assert (first.attempt, first.status) == (1, "failed")
    assert first.output == '{"label": "spam"}'  # the offending raw value, as returned
    assert first.error is not None
    assert first.error["type"] == "ValidationError"
    assert first.error["validation"] is True
    assert "confidence" in first.error["message"]
    assert (second.attempt, second.status) == (2, "succeeded")
    assert second.output == {"label": "spam", "confidence": 0.9}
    assert run.output == {"label": "spam", "confidence": 0.9}


def test_output_model_failure_keeps_a_non_string_raw_value() -> None:
    @st.step(output=Label)
    def make() -> dict[str, Any]:
        return {"label": 3, "confidence": "high"}

    @st.workflow
    def wf() -> Any:
        return make()

    with pytest.raises(pydantic.ValidationError):
        wf()
    run = st.last_run()
    assert run is not None
    (attempt,) = run.steps()
    assert attempt.status == "failed"
    assert attempt.output == {"label": 3, "confidence": "high"}
    assert attempt.error is not None and attempt.error["validation"] is True
    assert run.error is not None and run.error["type"] == "ValidationError"


def test_output_type_adapter_for_non_models() -> None:
    @st.step(output=list[int])
    def numbers() -> str:
        return "[1, 2, 3]"

    @st.workflow
    def wf() -> list[int]:
        return numbers()

    assert wf() == [1, 2, 3]
    run = st.last_run()
    assert run is not None
    assert run.steps()[0].output == [1, 2, 3]


def test_step_raising_validation_error_after_llm_call_keeps_the_llm_text() -> None:
    st.llm.script("retry-raw", ["not json at all", '{"label": "ok", "confidence": 1}'])

    @st.step(retries=1, backoff=0.001)
    def classify() -> Label:
        reply = st.llm.chat(model="scripted:retry-raw", messages=[{"role": "user", "content": "?"}])
        return Label.model_validate_json(reply.text)

    @st.workflow
    def wf() -> Label:
        return classify()

    assert wf() == Label(label="ok", confidence=1)
    run = st.last_run()
    assert run is not None
    first, second = run.steps("classify")
    assert first.status == "failed"
    assert first.output == "not json at all"
    assert first.error is not None
    assert first.error["type"] == "ValidationError"
    assert first.error["validation"] is True
    assert second.status == "succeeded"
    assert second.output == {"label": "ok", "confidence": 1.0}


def test_step_raising_validation_error_without_llm_call_keeps_pydantic_input() -> None:
    @st.step
    def parse(raw: dict[str, Any]) -> Label:
        return Label.model_validate(raw)

    @st.workflow
    def wf() -> Label:
        return parse(["not", "a", "dict"])  # type: ignore[arg-type]

    with pytest.raises(pydantic.ValidationError):
        wf()
    run = st.last_run()
    assert run is not None
    (attempt,) = run.steps()
    assert attempt.output == ["not", "a", "dict"]
    assert attempt.error is not None and attempt.error["validation"] is True


def test_retry_on_limits_which_exceptions_retry() -> None:
    transient = _flaky(1, exc=TimeoutError)
    permanent = _flaky(1, exc=PermissionError)
    retry_transient = st.step(name="transient", retries=3, backoff=0.001, retry_on=TimeoutError)(
        transient
    )
    retry_permanent = st.step(name="permanent", retries=3, backoff=0.001, retry_on=TimeoutError)(
        permanent
    )

    @st.workflow
    def wf() -> int:
        value = retry_transient(1)
        with contextlib.suppress(PermissionError):
            retry_permanent(1)
        return value

    assert wf() == 2
    run = st.last_run()
    assert run is not None
    assert [(s.attempt, s.status) for s in run.steps("transient")] == [
        (1, "failed"),
        (2, "succeeded"),
    ]
    assert [(s.attempt, s.status) for s in run.steps("permanent")] == [(1, "failed")]
    assert len(permanent.raised) == 1


def test_retry_on_accepts_a_tuple_and_validation_errors_follow_it() -> None:
    calls: list[int] = []

    @st.step(retries=2, backoff=0.001, retry_on=(KeyError,), output=int)
    def never_int() -> str:
        calls.append(1)
        return "not an int"

    @st.workflow
    def wf() -> int:
        return never_int()

    with pytest.raises(pydantic.ValidationError):
        wf()
    assert len(calls) == 1  # ValidationError is not a KeyError: no retry


def test_async_retries() -> None:
    attempts: list[int] = []

    @st.step(retries=2, backoff=0.001)
    async def flaky() -> str:
        attempts.append(1)
        await asyncio.sleep(0)
        if len(attempts) < 3:
            raise ConnectionResetError("reset")
        return "done"

    @st.workflow
    async def wf() -> str:
        return await flaky()

    assert asyncio.run(wf()) == "done"
    run = st.last_run()
    assert run is not None
    assert [(s.attempt, s.status) for s in run.steps()] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert run.steps()[0].error is not None
    assert run.steps()[0].error["type"] == "ConnectionResetError"


def test_async_output_validation_failure_keeps_raw_value() -> None:
    @st.step(output=Label, retries=1, backoff=0.001)
    async def make() -> str:
        return "{}"

    @st.workflow
    async def wf() -> Label:
        return await make()

    with pytest.raises(pydantic.ValidationError):
        asyncio.run(wf())
    run = st.last_run()
    assert run is not None
    assert [(s.attempt, s.output) for s in run.steps()] == [(1, "{}"), (2, "{}")]
    assert all(s.error and s.error["validation"] for s in run.steps())


def test_negative_retries_are_rejected() -> None:
    with pytest.raises(ValueError, match="retries"):
        st.step(retries=-1)(lambda: None)


# --- backoff -------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = st.Backoff(initial_s=0.1, multiplier=3.0, max_s=0.5, jitter=False)
    assert [backoff.delay_s(n) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.3, 0.5, 0.5])


def test_backoff_jitter_stays_within_half_and_full_delay() -> None:
    backoff = st.Backoff(initial_s=1.0, multiplier=2.0, max_s=30.0, jitter=True)
    delays = [backoff.delay_s(2) for _ in range(200)]
    assert all(1.0 <= d <= 2.0 for d in delays)
    assert statistics.pstdev(delays) > 0  # actually jittered


def test_backoff_delays_are_waited_between_attempts() -> None:
    impl = _flaky(2)
    flaky = st.step(retries=2, backoff=st.Backoff(initial_s=0.03, multiplier=2.0, jitter=False))(
        impl
    )

    @st.workflow
    def wf() -> int:
        return flaky(1)

    wf()
    run = st.last_run()
    assert run is not None
    a1, a2, a3 = run.steps()
    gap1 = (parse_ts(a2.started_at) - parse_ts(a1.ended_at or "")).total_seconds()
    gap2 = (parse_ts(a3.started_at) - parse_ts(a2.ended_at or "")).total_seconds()
    assert gap1 >= 0.03
    assert gap2 >= 0.06


def test_float_backoff_is_the_initial_delay() -> None:
    impl = _flaky(1)
    flaky = st.step(retries=1, backoff=0.02)(impl)

    @st.workflow
    def wf() -> int:
        return flaky(1)

    wf()
    run = st.last_run()
    assert run is not None
    a1, a2 = run.steps()
    gap = (parse_ts(a2.started_at) - parse_ts(a1.ended_at or "")).total_seconds()
    assert gap >= 0.01  # equal jitter: at least half of 0.02 s
