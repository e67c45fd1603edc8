"""Acting on a recorded run: resume in place, fork from a step, replay with recorded LLM
and tool calls, divergence, async and concurrent steps — on a SQLite file and on
PostgreSQL. The workflows live at module level, so each run's recorded entry point
(``tests.test_reentry:…``) imports them again, as it would in a user's project."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pydantic
import pytest

import steptrace as st
from tests.support.helpers import span_hex

pytestmark = pytest.mark.usefixtures("store_url")  # a SQLite file, then PostgreSQL

calls: Counter[str] = Counter()
"""How often each step, tool and model ran for real in this test."""
knobs: dict[str, Any] = {}
"""What a test changes in the workflows' code between recording and re-entering."""
received: list[Any] = []


@pytest.fixture(autouse=True)
def _clean() -> None:
    calls.clear()
    knobs.clear()
    received.clear()


class Label(pydantic.BaseModel):
    label: str
    score: float


def _judge(messages: list[dict[str, Any]], **params: Any) -> str:
    calls["model"] += 1
    text = messages[-1]["content"]
    return (
        '{"label": "refund", "score": 0.9}'
        if "refund" in text
        else '{"label": "other", "score": 0.1}'
    )


st.llm.script("reentry", _judge)


@st.step(output=Label)
def classify(text: str) -> Label:
    calls["classify"] += 1
    prompt = knobs.get("prompt", "Classify: {text}")
    return st.llm.chat(
        model="scripted:reentry", messages=[{"role": "user", "content": prompt.format(text=text)}]
    ).text


@st.step
def draft(label: Label, text: str) -> str:
    calls["draft"] += 1
    received.append({"label": label, "text": text, "is_replay": st.is_replay()})
    if knobs.get("draft_fails"):
        raise RuntimeError("draft broke")
    return f"[{label.label}] {text}"


@st.tool(side_effects=True)
def send(to: str, body: str) -> dict[str, Any]:
    calls["send"] += 1
    return {"sent": True, "to": to, "chars": len(body)}


@st.step
def audit(body: str) -> int:
    calls["audit"] += 1
    return len(body)


@st.workflow(durable=True)
def triage(text: str) -> dict[str, Any]:
    label = classify(text)
    if knobs.get("reordered"):
        size = audit(text)
        body = draft(label, text)
    else:
        body = draft(label, text)
        size = audit(body)
    receipt = send("a@example.com", body)
    return {"label": label.label, "body": body, "size": size, "sent": receipt["sent"]}


def _failed_at_draft() -> st.RunResult:
    knobs["draft_fails"] = True
    result = st.run(triage, "please refund me")
    assert result.status == "failed"
    knobs.pop("draft_fails")
    calls.clear()
    received.clear()
    return result


def _keys(run: st.RunRecord, kind: str = "step") -> list[tuple[str | None, int | None, str]]:
    return [(s.step_key, s.attempt, s.status) for s in run.spans if s.kind == kind]


# --- resume ---------------------------------------------------------------------------


def test_resume_continues_in_place_without_executing_finished_steps() -> None:
    failed = _failed_at_draft()
    result = st.resume(failed.run_id)
    assert result.status == "succeeded", result.exception
    assert result.run_id == failed.run_id
    assert result.output == {
        "label": "refund",
        "body": "[refund] please refund me",
        "size": 25,
        "sent": True,
    }
    # classify (and its model call) came from the record; the rest ran
    assert calls == Counter({"draft": 1, "audit": 1, "send": 1})
    run = result.record()
    assert run.status == "succeeded" and run.resume_count == 1 and run.error is None
    assert _keys(run) == [
        ("classify#0", 1, "succeeded"),
        ("draft#0", 1, "failed"),
        ("draft#0", 2, "succeeded"),  # attempts appended after the recorded ones
        ("audit#0", 1, "succeeded"),
    ]
    (incarnation,) = [s for s in run.spans if s.kind == "other"]
    assert (incarnation.name, incarnation.attempt, incarnation.parent_span_id) == (
        "resume",
        1,
        run.span_id,
    )
    new = [
        s for s in run.spans if s.kind in ("step", "tool") and s.started_at > incarnation.started_at
    ]
    assert {s.parent_span_id for s in new} == {incarnation.span_id}
    # the draft step received the recorded label, as a Label again
    assert received[0]["label"] == Label(label="refund", score=0.9)
    assert received[0]["is_replay"] is True


def test_resume_refuses_a_run_that_succeeded_and_names_fork_instead() -> None:
    done = st.run(triage, "hello")
    with pytest.raises(st.ReentryError, match=r"succeeded.*steptrace fork"):
        st.resume(done.run_id)
    with pytest.raises(st.RunNotFound):
        st.resume("no-such-run")


def test_a_resumed_run_diverging_from_the_recording_names_the_step_and_the_fork() -> None:
    knobs["draft_fails"] = True
    failed = st.run(triage, "refund please")
    knobs.clear()
    knobs["reordered"] = True  # today's code calls audit before draft
    result = st.resume(failed.run_id)
    assert result.status == "failed"
    error = result.exception
    assert isinstance(error, st.DivergenceError)
    assert (error.step, error.position, error.recorded) == ("audit#0", 2, "draft#0")
    message = str(error)
    assert "'audit#0'" in message and "step 2" in message and "'draft#0'" in message
    assert f"steptrace fork {failed.run_id} --from draft#0" in message
    assert calls["audit"] == 0  # nothing past the divergence ran
    assert result.record().error["type"] == "DivergenceError"


# --- fork -----------------------------------------------------------------------------


def test_fork_reuses_steps_before_runs_the_edited_step_and_everything_after() -> None:
    source = st.run(triage, "please refund me")
    calls.clear()
    received.clear()
    result = st.fork(source.run_id, "draft", input={"text": "EDITED"})
    assert result.status == "succeeded", result.exception
    assert result.run_id != source.run_id and result.source_run_id == source.run_id
    assert calls == Counter({"draft": 1, "audit": 1, "send": 1})  # nothing before draft ran
    assert received == [
        {"label": Label(label="refund", score=0.9), "text": "EDITED", "is_replay": True}
    ]
    run = result.record()
    assert (run.forked_from, run.forked_at, run.replay_of) == (source.run_id, "draft#0", None)
    (copy,) = run.steps("classify")
    original = source.record().steps("classify")[0]
    assert copy.attributes["steptrace.reused_from"] == f"{source.run_id}/{original.span_id}"
    assert (copy.input, copy.output, copy.input_hash) == (
        original.input,
        original.output,
        original.input_hash,
    )
    assert run.steps("draft")[0].input["text"] == "EDITED"
    changed = [s["key"] for s in result.diff()["steps"] if s["changed"]]
    assert changed == ["draft#0", "audit#0", "send#0"]


def test_fork_refuses_a_step_the_run_does_not_have_or_an_argument_it_did_not_take() -> None:
    source = st.run(triage, "x")
    with pytest.raises(st.ReentryError, match=r"no step 'drafting#0'.*classify#0"):
        st.fork(source.run_id, "drafting")
    with st.Store.open() as store:
        before = store.count_runs("triage")
    with pytest.raises(st.ReentryError, match=r"no argument 'txt'; its arguments: label, text"):
        st.fork(source.run_id, "draft", input={"txt": "typo"})
    with st.Store.open() as store:
        assert store.count_runs("triage") == before  # refused before anything ran


@st.step
def inner(n: int) -> int:
    calls[f"inner{n}"] += 1
    return n * 10


@st.step
def outer(n: int) -> int:
    calls["outer"] += 1
    return inner(n) + inner(n + 1)


@st.workflow
def nested(n: int) -> int:
    return outer(n)


def test_fork_from_a_nested_step_runs_its_ancestors_and_reuses_its_earlier_siblings() -> None:
    source = st.run(nested, 1)
    assert [s.step_key for s in source.record().steps()] == [
        "outer#0",
        "outer#0/inner#0",
        "outer#0/inner#1",
    ]
    calls.clear()
    result = st.fork(source.run_id, "outer#0/inner#1", input={"n": 5})
    assert result.status == "succeeded" and result.output == 10 + 50
    assert calls == Counter({"outer": 1, "inner5": 1})


# --- replay ---------------------------------------------------------------------------


def test_replay_answers_every_llm_and_tool_call_from_the_recording() -> None:
    source = st.run(triage, "please refund me")
    calls.clear()
    result = st.replay(source.run_id)
    assert result.status == "succeeded" and result.output == source.output
    assert calls["model"] == 0 and calls["send"] == 0  # no live calls, no side effect
    assert calls["classify"] == calls["draft"] == calls["audit"] == 1  # steps all ran
    run = result.record()
    assert run.replay_of == source.run_id
    (llm,) = [s for s in run.spans if s.kind == "llm"]
    assert llm.attributes["steptrace.replay.answer"] == "recorded"
    assert llm.llm is not None and llm.llm["cost_usd"] == 0.0
    (tool,) = [s for s in run.spans if s.kind == "tool"]
    assert tool.attributes["steptrace.replay.answer"] == "recorded"
    assert not [s for s in result.diff()["steps"] if s["changed"]]


def test_a_changed_prompt_runs_live_and_is_flagged_and_fails_under_strict() -> None:
    source = st.run(triage, "please refund me")
    knobs["prompt"] = "Label this ticket: {text}"
    calls.clear()
    result = st.replay(source.run_id)
    assert result.status == "succeeded"
    assert calls["model"] == 1
    (llm,) = [s for s in result.record().spans if s.kind == "llm"]
    assert llm.attributes["steptrace.replay.unmatched"] is True
    assert llm.attributes["steptrace.replay.reason"] == "the prompt changed"
    strict = st.replay(source.run_id, strict=True)
    assert strict.status == "failed"
    assert isinstance(strict.exception, st.ReplayMismatch)
    assert "the prompt changed" in str(strict.exception)


def test_a_side_effect_tool_is_never_executed_by_a_replay_unless_asked() -> None:
    source = st.run(triage, "please refund me")
    calls.clear()
    assert st.replay(source.run_id, tools="live").status == "succeeded"
    assert calls["send"] == 0  # "live" executes tools without side effects only
    assert st.replay(source.run_id, tools="all").status == "succeeded"
    assert calls["send"] == 1
    # a changed body has no recorded send: the replay refuses to send it
    knobs["prompt"] = "Label: {text}"
    st.llm.script("reentry", lambda messages, **p: '{"label": "billing", "score": 0.5}')
    try:
        result = st.replay(source.run_id)
    finally:
        st.llm.script("reentry", _judge)
    assert result.status == "failed" and isinstance(result.exception, st.ReplayMismatch)
    assert "side_effects=True" in str(result.exception)
    assert calls["send"] == 1


@st.step(retries=2, backoff=5.0, output=Label)
def strict_label(text: str) -> Label:
    calls["strict_label"] += 1
    return st.llm.chat(model="scripted:flaky", messages=[{"role": "user", "content": text}]).text


@st.workflow
def flaky(text: str) -> str:
    return strict_label(text).label


def test_a_replay_reproduces_retries_from_the_recording_without_waiting() -> None:
    st.llm.script("flaky", ["not json", '{"label": "ok", "score": 1}'])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("steptrace.spec.Backoff.delay_s", lambda self, attempt: 0.0)
        source = st.run(flaky, "t")
    assert source.status == "succeeded"
    st.llm.script("flaky", lambda messages, **p: pytest.fail("a live model call"))
    result = st.replay(source.run_id)  # a 5 s backoff would make this slow
    assert result.status == "succeeded" and result.output == "ok"
    assert _keys(result.record()) == [
        ("strict_label#0", 1, "failed"),
        ("strict_label#0", 2, "succeeded"),
    ]


# --- async and concurrent ---------------------------------------------------------------


@st.step
async def score(part: str) -> str:
    calls[f"score:{part}"] += 1
    reply = await st.llm.achat(
        model="scripted:reentry", messages=[{"role": "user", "content": f"{part} refund"}]
    )
    return reply.text


@st.step
async def combine(parts: list[str]) -> int:
    calls["combine"] += 1
    if knobs.get("combine_fails"):
        raise RuntimeError("combine broke")
    return len(parts)


@st.workflow(durable=True)
async def fan(parts: list[str]) -> int:
    scored = await asyncio.gather(*(score(p) for p in parts))
    return await combine(scored)


def _run_async(coroutine: Any) -> Any:
    """``asyncio.run`` on a thread of its own: a test run before this one may have left
    an event loop running on this thread (Playwright's sync API does)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_async_concurrent_steps_resume_and_replay() -> None:
    knobs["combine_fails"] = True
    failed = _run_async(st.arun(fan, ["a", "b", "c"]))
    assert failed.status == "failed"
    knobs.clear()
    calls.clear()
    with pytest.raises(TypeError, match="aresume"):
        st.resume(failed.run_id)
    resumed = _run_async(st.aresume(failed.run_id))
    assert resumed.status == "succeeded" and resumed.output == 3
    assert calls == Counter({"combine": 1})  # the gathered steps were not run again
    calls.clear()
    replayed = _run_async(st.areplay(failed.run_id))
    assert replayed.status == "succeeded" and calls["model"] == 0
    assert sum(calls[f"score:{p}"] for p in "abc") == 3


# --- what a run records for re-entry ------------------------------------------------------


def test_every_run_records_its_entry_point_and_code_version() -> None:
    run = st.run(triage, "x").record()
    assert run.entry_point == "tests.test_reentry:triage"
    version = run.code_version
    assert version is not None and version["steptrace"] == st.__version__
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
    )
    if head.returncode == 0:  # run from a git work tree (CI's clone is one)
        assert version["git_commit"] == head.stdout.strip()


def test_a_workflow_whose_input_was_not_recorded_in_full_cannot_be_re_entered() -> None:
    source = st.run(triage, {"api_key": "sk-live-0123456789abcdef0123456789abcdef"})
    assert source.record().input == {"text": {"api_key": "[REDACTED]"}}
    with pytest.raises(st.ReentryError, match="redacted"):
        st.replay(source.run_id)


def test_derived_runs_link_to_their_source_in_opentelemetry(
    exported: Any,
) -> None:
    source = st.run(triage, "please refund me")
    fork = st.fork(source.run_id, "audit")
    spans = exported()
    source_run, fork_run = source.record(), fork.record()
    root = spans[fork_run.span_id]
    assert root.attributes is not None
    assert root.attributes["steptrace.run.forked_from"] == source.run_id
    assert root.attributes["steptrace.run.forked_at"] == "audit#0"
    (link,) = root.links
    assert span_hex(link) == source_run.span_id
    assert format(link.context.trace_id, "032x") == source_run.trace_id
    assert link.attributes is not None and link.attributes["steptrace.link.type"] == "forked_from"
    (copy,) = fork_run.steps("draft")
    assert spans[copy.span_id].attributes["steptrace.reused_from"].startswith(source.run_id)
