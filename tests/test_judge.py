"""LLM judges (``st.judge``): a model asked to score an output by a rubric. Each
judgement is a run of its own that holds the prompt and the answer, named by the score
(``judge_run_id``); a malformed answer is a failed score. Also: scores leaving as
``gen_ai.evaluation.result`` log records at a real OTLP collector, for a check's scores
and for scores given afterwards (``st.score``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import steptrace as st
from steptrace.evals.evaluators import Verdict, aevaluate, evaluate
from steptrace.evals.judge import Judge
from tests.support.evals import reply_workflow
from tests.support.helpers import clean_env
from tests.support.otlp_collector import http_collector

SYSTEM = (
    "You are an evaluator. Judge the output below by the rubric. Answer with one JSON "
    'object and nothing else: {"score": <score>, "rationale": "<why, in one or two '
    'sentences>"}, where the score is '
)
RUBRIC = "Is the reply kind to the customer?"
SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"


def answering(score: Any, rationale: str = "warm and polite") -> list[dict[str, Any]]:
    """Script ``scripted:judge`` to answer ``score``; returns the prompts it is sent."""
    prompts: list[dict[str, Any]] = []

    def respond(messages: list[dict[str, Any]], **params: Any) -> str:
        prompts.append({"messages": messages, "params": params})
        return json.dumps({"score": score, "rationale": rationale})

    st.llm.script("judge", respond)
    return prompts


kind = st.judge("scripted:judge", RUBRIC, name="kind", scale=(1, 5), params={"temperature": 0})


reply = reply_workflow([kind])


@pytest.mark.usefixtures("runtime_store_url")
def test_a_judge_scores_a_step_and_its_decision_is_a_run_of_its_own() -> None:
    prompts = answering(4)
    result = st.run(reply, "Ada")
    assert result.output == "Dear Ada, thank you."
    with st.Store.open() as store:
        run = store.run(result.run_id)
        (found,) = store.scores(result.run_id)
        judged = store.run(found.judge_run_id or "")
    (attempt,) = run.spans  # nothing of the judge's is in the judged run
    assert (found.span_id, found.name, found.kind, found.value) == (
        attempt.span_id,
        "kind",
        "numeric",
        4.0,
    )
    assert (found.rationale, found.source, found.label) == ("warm and polite", "llm", None)

    # the judge's run: a root run of its own, in a trace of its own
    assert judged.run_id != run.run_id
    assert (judged.workflow, judged.status, judged.tags) == ("judge:kind", "succeeded", ["judge"])
    assert judged.trace_id != run.trace_id and judged.parent_span_id is None
    assert judged.input == {
        "output": "Dear Ada, thank you.",
        "input": {"customer": "Ada"},
        "reference": None,
    }
    assert judged.output == {"score": 4.0, "rationale": "warm and polite"}
    (call,) = judged.spans
    expected_messages = [
        {"role": "system", "content": SYSTEM + "a number from 1 to 5."},
        {
            "role": "user",
            "content": f"Rubric:\n{RUBRIC}\n\nInput:\n"
            '{"customer":"Ada"}\n\nOutput:\nDear Ada, thank you.',
        },
    ]
    assert call.kind == "llm" and call.parent_span_id == judged.span_id
    assert call.llm is not None
    assert call.llm["messages"] == expected_messages
    assert call.llm["response"] == '{"score": 4, "rationale": "warm and polite"}'
    assert call.llm["params"] == {"temperature": 0}
    assert prompts == [{"messages": expected_messages, "params": {"temperature": 0}}]


@pytest.mark.usefixtures("runtime_store_url")
def test_a_malformed_answer_is_a_failed_score_quoting_it_and_a_failed_judge_run() -> None:
    st.llm.script("judge", ["I'd say it is kind, four out of five."])
    result = st.run(reply, "Ada")
    assert result.status == "succeeded"
    with st.Store.open() as store:
        (found,) = store.scores(result.run_id)
        judged = store.run(found.judge_run_id or "")
    assert (found.kind, found.value, found.label, found.source) == (
        "boolean",
        False,
        "invalid",
        "llm",
    )
    assert found.rationale == (
        'the answer is not a JSON object {"score": …, "rationale": …}: '
        "I'd say it is kind, four out of five."
    )
    assert (judged.workflow, judged.status) == ("judge:kind", "failed")
    assert judged.error is not None and judged.error["type"] == "JudgeAnswerError"
    assert judged.spans[0].llm is not None
    assert judged.spans[0].llm["response"] == "I'd say it is kind, four out of five."


def test_answers_are_read_on_the_judges_scale() -> None:
    numeric = Judge("scripted:judge", RUBRIC, "kind", scale=(1, 5))
    assert numeric.read('```json\n{"score": "5", "rationale": "lovely"}\n```') == {
        "score": 5.0,
        "rationale": "lovely",
    }
    with pytest.raises(ValueError, match="the score 7 is not a number from 1 to 5"):
        numeric.read('{"score": 7}')
    with pytest.raises(ValueError, match="the score True is not a number from 1 to 5"):
        numeric.read('{"score": true}')
    passed = Judge("scripted:judge", RUBRIC, "kind", scale=bool)
    assert passed.read('{"score": "PASS"}') == {"score": True, "rationale": None}
    assert passed.read('Sure: {"score": false, "rationale": "curt"}') == {
        "score": False,
        "rationale": "curt",
    }
    tone = Judge("scripted:judge", RUBRIC, "tone", scale=["formal", "casual"])
    assert tone.read('{"score": " Casual "}')["score"] == "casual"
    with pytest.raises(ValueError, match='the score \'rude\' is not one of "formal", "casual"'):
        tone.read('{"score": "rude"}')
    for bad, error in [
        ((5, 1), ValueError),
        ("12", TypeError),
        ([1], TypeError),
        ((0, float("inf")), ValueError),
    ]:
        with pytest.raises(error):
            Judge("scripted:judge", RUBRIC, "x", scale=bad)
    with pytest.raises(ValueError, match="must be 'provider:name'"):
        st.judge("gpt-4o", RUBRIC, name="x")
    with pytest.raises(ValueError, match="needs a rubric"):
        st.judge("openai:gpt-4o", " ", name="x")


@pytest.mark.usefixtures("runtime_store_url")
def test_a_judge_as_an_experiment_evaluator_sees_the_reference_and_redacted_values() -> None:
    prompts = answering(0.0, "wrong amount")
    judge = st.judge("scripted:judge", "Does it match the reference?", name="match")
    verdict = evaluate(judge, output=f"refund 30 EUR, key {SECRET}", reference="refund 40 EUR")
    assert (verdict.value, verdict.rationale, verdict.failed) == (0.0, "wrong amount", False)
    assert verdict.judge_run_id is not None
    (prompt,) = prompts
    assert prompt["messages"][1]["content"] == (
        "Rubric:\nDoes it match the reference?\n\nOutput:\nrefund 30 EUR, key [REDACTED]\n\n"
        "Reference (the expected output):\nrefund 40 EUR"
    )
    with st.Store.open() as store:
        judged = store.run(verdict.judge_run_id)
    assert judged.workflow == "judge:match" and judged.status == "succeeded"


@pytest.mark.usefixtures("runtime_store_url")
def test_a_judge_whose_model_fails_is_an_error_score_and_async_steps_await_the_judge() -> None:
    missing = st.judge("scripted:nobody", RUBRIC, name="kind")
    verdict = evaluate(missing, output="hi")
    assert verdict.failed and verdict.label == "error"
    assert verdict.rationale is not None
    assert verdict.rationale.startswith("raised LookupError: no script for model 'scripted:nobody'")
    assert verdict.judge_run_id is not None

    answering(5)

    @st.step(checks=[kind])
    async def adraft(customer: str) -> str:
        return f"Dear {customer}"

    @st.workflow
    async def areply(customer: str) -> str:
        return await adraft(customer)

    result = asyncio.run(st.arun(areply, "Ada"))
    with st.Store.open() as store:
        (found,) = store.scores(result.run_id)
        judged = store.run(found.judge_run_id or "")
    assert (found.value, found.source) == (5.0, "llm")
    assert judged.workflow == "judge:kind" and judged.spans[0].kind == "llm"
    assert asyncio.run(aevaluate(kind, output="Dear Bo")).value == 5.0


def test_a_sampled_judge_keeps_its_name_and_source() -> None:
    sampled = st.check(kind, sample=0.25)
    assert (sampled.name, sampled.source, sampled.sample) == ("kind", "llm", 0.25)
    renamed = st.check(kind, name="kindness")
    assert (renamed.name, renamed.sample) == ("kindness", 1.0)
    assert Verdict.failure("invalid", "x").failed


# --- OpenTelemetry: log records at a real collector -------------------------------------------

APP = textwrap.dedent(
    f"""
    import json, sys
    import steptrace as st

    st.configure(otlp_endpoint=sys.argv[1], otlp_logs=True)
    st.llm.script("judge", [json.dumps({{"score": 4, "rationale": "kind; it quotes {SECRET}"}})])

    def short(output):
        return len(output) < 100

    @st.step(checks=[short, st.judge("scripted:judge", "Is it kind?", name="kind", scale=(1, 5))])
    def draft(customer):
        return f"Dear {{customer}}"

    @st.workflow
    def reply(customer):
        return draft(customer)

    result = st.run(reply, "Ada")
    run = result.record()
    step = run.spans[0]
    st.score(f"{{result.run_id}}/{{step.span_id}}", "helpful", 0.9, rationale="a human said so")
    st.score(result.run_id, "resolved", True)
    print(json.dumps({{"trace": run.trace_id, "root": run.span_id, "step": step.span_id,
                      "run": result.run_id}}))
    """
)


def test_scores_leave_as_evaluation_log_records_with_the_scored_spans_ids(tmp_path: Path) -> None:
    """A process with a logs exporter: a check's scores and scores given afterwards are
    ``gen_ai.evaluation.result`` log records carrying the scored span's ids."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = clean_env(STEPTRACE_STORE=str(tmp_path / "app.db"), OTEL_SERVICE_NAME="app")
    with http_collector() as collector:
        proc = subprocess.run(
            [sys.executable, str(script), collector.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        ids = json.loads(proc.stdout)
        # the command line too, exporting log records as the standard variables say
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_LOGS_EXPORTER": "otlp"}
        cli = subprocess.run(
            [sys.executable, "-m", "steptrace", "score", ids["run"], "by_cli", "true"],
            env=env | otel,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
    events = {
        r["attributes"]["gen_ai.evaluation.name"]: r
        for r in collector.logs()
        if r["event_name"] == "gen_ai.evaluation.result"
    }
    assert sorted(events) == ["by_cli", "helpful", "kind", "resolved", "short"]
    assert (events["by_cli"]["trace_id"], events["by_cli"]["span_id"]) == (
        ids["trace"],
        ids["root"],
    )
    assert events["by_cli"]["attributes"]["gen_ai.evaluation.score.label"] == "pass"
    for name in ("short", "kind", "helpful"):
        assert (events[name]["trace_id"], events[name]["span_id"]) == (ids["trace"], ids["step"])
    assert (events["resolved"]["trace_id"], events["resolved"]["span_id"]) == (
        ids["trace"],
        ids["root"],
    )
    judge_run = events["kind"]["attributes"].pop("steptrace.score.judge_run_id")
    assert events["kind"]["attributes"] == {
        "gen_ai.evaluation.name": "kind",
        "gen_ai.evaluation.score.value": 4.0,
        "gen_ai.evaluation.explanation": "kind; it quotes [REDACTED]",
        "steptrace.score.source": "llm",
        "steptrace.run.id": ids["run"],
    }
    assert events["helpful"]["attributes"] == {
        "gen_ai.evaluation.name": "helpful",
        "gen_ai.evaluation.score.value": 0.9,
        "gen_ai.evaluation.explanation": "a human said so",
        "steptrace.score.source": "human",
        "steptrace.run.id": ids["run"],
    }
    assert events["resolved"]["attributes"]["gen_ai.evaluation.score.label"] == "pass"
    assert events["short"]["attributes"]["gen_ai.evaluation.score.value"] == 1.0
    assert all(r["severity_number"] == 9 and r["scope"] == "steptrace" for r in events.values())

    spans = {s["span_id"]: s for s in collector.spans()}
    assert spans[ids["step"]]["events"] == []  # they left as log records, not span events
    judge_spans = [s for s in spans.values() if s["name"] == "invoke_workflow judge:kind"]
    assert len(judge_spans) == 1 and judge_spans[0]["trace_id"] != ids["trace"]
    assert judge_spans[0]["attributes"]["steptrace.run.id"] == judge_run
