"""Online checks (``@st.step(checks=[...])``, ``st.check``): each evaluator scores the
output of every attempt that produced one, the score is stored with the attempt (in the
same batch, through the recording writer, so it survives the store being down like
the span does) and leaves with its OTel span as a ``gen_ai.evaluation.result`` event.
A check never changes what the workflow does."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest

import steptrace as st
from steptrace.evals.evaluators import Evaluator, Verdict, evaluate, sampled
from steptrace.record import RunState, SpanRecord
from steptrace.store import journal, open_writer
from steptrace.store.columns import ScoreLine
from steptrace.store.scores import line as score_line
from tests.support.evals import reply_workflow
from tests.support.helpers import span_hex

SCORE_FIELDS = ("name", "kind", "value", "label", "rationale", "source", "judge_run_id")


def scores_of(run_id: str) -> dict[str, dict[str, Any]]:
    """The run's stored scores by name, without their times."""
    with st.Store.open() as store:
        found = store.scores(run_id)
    return {s.name: {k: getattr(s, k) for k in SCORE_FIELDS} for s in found}


def score(name: str, kind: str, value: Any, label: Any = None, rationale: Any = None) -> Any:
    return {
        "name": name,
        "kind": kind,
        "value": value,
        "label": label,
        "rationale": rationale,
        "source": "code",
        "judge_run_id": None,
    }


# --- what a check may answer -------------------------------------------------------------


def passes(output: str) -> bool:
    return output.startswith("Dear")


def fails(output: str) -> bool:
    return len(output) > 100


def confidence(text: str) -> float:  # the output goes to the first parameter, any name
    return 0.8


def explained(output: str, input: dict[str, Any]) -> tuple[float, str]:
    return 0.5, f"{len(output)} characters for customer {input['customer']}"


def category(output: str) -> str:
    return "formal"


def raises(output: str) -> bool:
    raise TypeError(f"cannot check {output[:4]!r}")


def junk(output: str) -> list[int]:
    return [1, 2]


def forgot_to_return(output: str) -> None:
    pass


def three(output: str) -> tuple[int, str, str]:
    return 1, "why", "extra"


def nan(output: str) -> float:
    return float("nan")


reply = reply_workflow(
    [
        passes,
        fails,
        confidence,
        explained,
        category,
        raises,
        junk,
        forgot_to_return,
        three,
        nan,
        st.check(lambda output, reference: reference is None, name="no_reference"),
    ]
)


@pytest.mark.usefixtures("runtime_store_url")
def test_each_answer_a_check_can_give_becomes_a_score_on_the_attempt() -> None:
    result = st.run(reply, "Ada")
    assert (result.status, result.output) == ("succeeded", "Dear Ada, thank you.")
    run = result.record()
    (attempt,) = run.spans
    with st.Store.open() as store:
        stored = store.scores(result.run_id)
    assert {(s.span_id, s.step) for s in stored} == {(attempt.span_id, "draft")}
    not_a_score = "a score's value is a number, a bool or a category string"
    assert scores_of(result.run_id) == {
        "passes": score("passes", "boolean", True),
        "fails": score("fails", "boolean", False),
        "confidence": score("confidence", "numeric", 0.8),
        "explained": score("explained", "numeric", 0.5, None, "20 characters for customer Ada"),
        "category": score("category", "categorical", "formal", "formal"),
        "raises": score(
            "raises", "boolean", False, "error", "raised TypeError: cannot check 'Dear'"
        ),
        "junk": score(
            "junk", "boolean", False, "invalid", f"returned [1, 2]: {not_a_score}, got list: [1, 2]"
        ),
        "forgot_to_return": score(
            "forgot_to_return",
            "boolean",
            False,
            "invalid",
            f"returned None: {not_a_score}, got NoneType: None",
        ),
        "three": score(
            "three", "boolean", False, "invalid", "returned a tuple of 3, not (value, rationale)"
        ),
        "nan": score(
            "nan",
            "boolean",
            False,
            "invalid",
            "returned nan: a score's value must be finite, got nan",
        ),
        "no_reference": score("no_reference", "boolean", True),
    }


def test_a_step_without_checks_has_none_and_a_bad_checks_list_fails_at_decoration() -> None:
    def plain(x: int) -> int:
        return x

    assert st.step(plain).__steptrace_spec__.checks is None  # type: ignore[attr-defined]
    assert st.step(checks=[])(plain).__steptrace_spec__.checks is None  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="checks= takes a list"):
        st.step(checks=passes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two checks are named 'passes'"):
        st.step(checks=[passes, passes])
    with pytest.raises(TypeError, match="no name to give its scores"):
        st.step(checks=[lambda output: True])
    with pytest.raises(ValueError, match="sample=2: the share of runs checked"):
        st.check(passes, sample=2)
    with pytest.raises(TypeError, match="nothing is given to its parameter 'threshold'"):
        st.check(lambda output, threshold: True, name="t")
    with pytest.raises(TypeError, match="takes no output"):
        st.check(lambda *, input: True, name="t")


def test_the_protocol_passes_output_input_and_reference_by_name() -> None:
    def graded(answer: str, *, reference: str, input: dict[str, Any]) -> tuple[bool, str]:
        return answer == reference, f"{input['q']}: {answer} vs {reference}"

    def kwargs_only(**seen: Any) -> str:
        return ",".join(sorted(seen))

    assert evaluate(graded, output="4", input={"q": "2+2"}, reference="4") == Verdict(
        True, "2+2: 4 vs 4"
    )
    assert evaluate(kwargs_only, output=1).value == "input,output,reference"
    assert evaluate(len, output="abc").value == 3  # a builtin: fn(output)
    length = st.check(len, name="length")
    assert isinstance(length, Evaluator) and length("abc") == Verdict(3)


# --- sampling -------------------------------------------------------------------------


def _fraction(run_id: str) -> float:
    """The documented rule, computed here on its own: BLAKE2b-64 of the id over 2**64."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def test_sampling_is_decided_by_the_run_id() -> None:
    ids = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(2000)]
    for rate in (0.0, 0.1, 0.5, 1.0):
        chosen = [i for i in ids if sampled(i, rate)]
        assert chosen == [i for i in ids if _fraction(i) < rate]
        assert abs(len(chosen) - rate * len(ids)) <= 0.05 * len(ids)
    # a run checked at one rate is checked at every higher one
    assert {i for i in ids if sampled(i, 0.1)} <= {i for i in ids if sampled(i, 0.5)}


half_a = st.check(passes, name="half_a", sample=0.5)
half_b = st.check(confidence, name="half_b", sample=0.5)


sampled_flow = reply_workflow([half_a, half_b, st.check(passes, name="never", sample=0.0), passes])


@pytest.mark.usefixtures("runtime_store_url")
def test_a_sampled_check_scores_the_runs_its_rate_chooses_and_checks_of_a_run_agree() -> None:
    run_ids = [st.run(sampled_flow, f"c{i}").run_id for i in range(24)]
    with st.Store.open() as store:
        stored = store.scores()
    names: dict[str, set[str]] = {r: set() for r in run_ids}
    for s in stored:
        names[s.run_id].add(s.name)
    expected = {
        r: {"passes", "half_a", "half_b"} if _fraction(r) < 0.5 else {"passes"} for r in run_ids
    }
    assert names == expected
    assert 0 < sum(len(v) == 3 for v in expected.values()) < len(run_ids)


# --- attempts ---------------------------------------------------------------------------


class Label(pydantic.BaseModel):
    label: str


def looks_like_json(output: Any) -> tuple[bool, str]:
    return isinstance(output, Label) or str(output).startswith("{"), type(output).__name__


def _flaky_labeller() -> Callable[[str], Any]:
    answers = iter([ConnectionError("down"), "not json", '{"label": "refund"}'])

    def label(text: str) -> Any:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return label


@pytest.mark.usefixtures("runtime_store_url")
def test_each_succeeded_attempt_is_scored_the_failed_ones_are_not() -> None:
    labeller = st.step(retries=2, backoff=0.0, output=Label, checks=[looks_like_json])(
        _flaky_labeller()
    )

    @st.workflow
    def triage(text: str) -> str:
        return labeller(text).label

    result = st.run(triage, "refund please")
    assert result.output == "refund"
    attempts = result.record().spans
    assert [(s.attempt, s.status) for s in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    with st.Store.open() as store:
        by_span = {s.span_id: (s.value, s.rationale) for s in store.scores(result.run_id)}
    # attempt 1 raised; attempt 2's raw output failed validation (a check is a function
    # of the step's output, and a rejected answer is none: it would only raise); 3 passed
    assert by_span == {attempts[2].span_id: (True, "Label")}


async def async_check(output: str) -> tuple[float, str]:
    await asyncio.sleep(0)
    return 0.25, "awaited"


@pytest.mark.usefixtures("runtime_store_url")
def test_an_async_step_awaits_its_async_checks_a_sync_step_runs_them_outside_a_loop() -> None:
    @st.step(checks=[async_check, passes])
    async def adraft(customer: str) -> str:
        await asyncio.sleep(0)
        return f"Dear {customer}"

    @st.workflow
    async def areply(customer: str) -> str:
        return await adraft(customer)

    result = asyncio.run(st.arun(areply, "Ada"))
    assert result.output == "Dear Ada"
    assert scores_of(result.run_id) == {
        "async_check": score("async_check", "numeric", 0.25, None, "awaited"),
        "passes": score("passes", "boolean", True),
    }

    # a sync step: run to completion, unless an event loop runs in its thread
    result = st.run(reply_workflow([async_check]), "Ada")
    assert scores_of(result.run_id)["async_check"]["value"] == 0.25
    sync_reply = reply_workflow([async_check])

    @st.workflow
    async def calls_a_sync_step(customer: str) -> str:
        return sync_reply(customer)

    result = asyncio.run(st.arun(calls_a_sync_step, "Ada"))
    assert scores_of(result.run_id)["async_check"] == score(
        "async_check",
        "boolean",
        False,
        "invalid",
        "returned an awaitable inside a running event loop: an async evaluator runs on "
        "an async step (or aevaluate)",
    )


# --- checks run outside the run -------------------------------------------------------------


@st.step
def lookup(x: str) -> str:
    return x


def peeks(output: str) -> tuple[bool, str]:
    # What a check calls is not recorded in the run (nor shifts its step keys).
    lookup(output)
    st.llm.script("peek", ["seen"])
    reply = st.llm.chat(model="scripted:peek", messages=[{"role": "user", "content": output}])
    return st.current_run_id() is None, f"{reply.text}, replay={st.is_replay()}"


@st.step(checks=[peeks])
def first(x: str) -> str:
    return x.upper()


@st.step(checks=[passes])
def second(x: str) -> str:
    return f"Dear {x}"


@st.workflow
def two_steps(x: str) -> str:
    return second(first(x))


@pytest.mark.usefixtures("runtime_store_url")
def test_a_check_records_nothing_into_the_run_and_a_fork_checks_what_it_runs_again() -> None:
    result = st.run(two_steps, "ada")
    run = result.record()
    assert [(s.kind, s.name, s.step_key) for s in run.spans] == [
        ("step", "first", "first#0"),
        ("step", "second", "second#0"),
    ]
    assert scores_of(result.run_id)["peeks"]["rationale"] == "seen, replay=False"
    assert scores_of(result.run_id)["peeks"]["value"] is True

    forked = st.fork(result.run_id, from_step="second#0")
    assert forked.output == "Dear ADA"
    with st.Store.open() as store:
        again = store.scores(forked.run_id)
    # first#0 is the recorded copy (not run again, not checked); second#0 ran and was.
    (second_attempt,) = [s for s in forked.record().spans if s.name == "second"]
    assert [(s.name, s.span_id, s.value) for s in again] == [
        ("passes", second_attempt.span_id, True)
    ]


# --- the writer ---------------------------------------------------------------------------


def _scored(value: float, at_ns: int) -> SpanRecord:
    rec = SpanRecord("run-1", "a" * 16, "b" * 16, "step", "draft", 1_000, attempt=1, end_ns=2_000)
    rec.status = "succeeded"
    rec.scores = [
        score_line(
            "run-1",
            "a" * 16,
            "draft",
            "tone",
            value,
            rationale=f"v{value}",
            source="code",
            at_ns=at_ns,
        )
    ]
    return rec


def test_a_score_written_again_updates_its_row(runtime_store_url: str) -> None:
    """Same run, span, name and source: one row, the new value, the first time kept (a
    batch replayed from the journal writes it again; ``st.score`` may correct it)."""
    t0 = 1_700_000_000_000_000_000
    writer = open_writer(runtime_store_url)
    try:
        writer.write([RunState("run-1", "reply", "c" * 32, "b" * 16, 1_000)], [_scored(0.2, t0)])
        writer.write([], [_scored(0.7, t0 + 5_000_000_000)])
    finally:
        writer.close()
    with st.Store.open(runtime_store_url) as store:
        (found,) = store.scores("run-1")
    assert (found.value, found.rationale) == (0.7, "v0.7")
    assert found.created_at == "2023-11-14T22:13:20.000000Z"
    assert found.updated_at == "2023-11-14T22:13:25.000000Z"


def test_scores_travel_through_the_spill_journal() -> None:
    line = ScoreLine(
        "s" * 32, "r", "a" * 16, "draft", "tone", "numeric", 0.5, None, "why", "code", None, 7
    )
    rec = SpanRecord("r", "a" * 16, None, "step", "draft", 1, end_ns=2, scores=[line])
    plain = SpanRecord("r", "c" * 16, None, "step", "other", 1, end_ns=2)
    _, spans, _ = journal.decode_batch(journal.encode_batch([], [rec, plain]))
    assert [s.scores for s in spans] == [[line], None]
    # a frame from before scores existed (three parts a span) still reads
    old = orjson.loads(journal.encode_batch([], [plain]))
    old["spans"] = [entry[:3] for entry in old["spans"]]
    _, spans, _ = journal.decode_batch(orjson.dumps(old))
    assert spans[0].scores is None and spans[0].name == "other"


def test_a_checks_score_survives_a_locked_store(tmp_path: Path) -> None:
    """The store cannot be written (another connection holds SQLite's write lock): the
    run returns at once, its records and the check's score go to the spill journal, and
    are written when the lock is gone."""
    url = str(tmp_path / "locked.db")
    st.configure(store=url)
    st.run(reply, "warm-up")
    locker = sqlite3.connect(url, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        result = st.run(reply, "Ada")
        assert time.monotonic() - started < 2.5
        assert st.health()["spilled"] > 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    deadline = time.monotonic() + 15
    while st.health()["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
    health = st.health()
    assert (health["pending"], health["lost"]) == (0, 0) and health["replayed"] > 0
    assert scores_of(result.run_id)["passes"] == score("passes", "boolean", True)
    assert len(scores_of(result.run_id)) == 11


# --- OpenTelemetry ----------------------------------------------------------------------------


def leaky(output: str) -> tuple[bool, str]:
    return False, "it quoted sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"


exported_flow = reply_workflow([passes, confidence, category, leaky])


@pytest.mark.usefixtures("runtime_store_url")
def test_scores_are_evaluation_events_on_the_step_span_secrets_redacted(exported: Any) -> None:
    """No OTel logs exporter in this process: the events travel on the step's span."""
    result = st.run(exported_flow, "Ada")
    (attempt,) = result.record().spans
    spans = exported()
    step_span = spans[attempt.span_id]
    events = {e.attributes["gen_ai.evaluation.name"]: e for e in step_span.events}
    assert {e.name for e in step_span.events} == {"gen_ai.evaluation.result"}
    common = {"steptrace.score.source": "code", "steptrace.run.id": result.run_id}
    assert dict(events["passes"].attributes) == {
        "gen_ai.evaluation.name": "passes",
        "gen_ai.evaluation.score.value": 1.0,
        "gen_ai.evaluation.score.label": "pass",
        **common,
    }
    assert dict(events["confidence"].attributes) == {
        "gen_ai.evaluation.name": "confidence",
        "gen_ai.evaluation.score.value": 0.8,
        **common,
    }
    assert dict(events["category"].attributes) == {
        "gen_ai.evaluation.name": "category",
        "gen_ai.evaluation.score.label": "formal",
        **common,
    }
    assert dict(events["leaky"].attributes) == {
        "gen_ai.evaluation.name": "leaky",
        "gen_ai.evaluation.score.value": 0.0,
        "gen_ai.evaluation.score.label": "fail",
        "gen_ai.evaluation.explanation": "it quoted [REDACTED]",
        **common,
    }
    assert scores_of(result.run_id)["leaky"]["rationale"] == "it quoted [REDACTED]"  # stored so
    assert all(e.timestamp == step_span.end_time for e in step_span.events)
    assert span_hex(step_span) == attempt.span_id
