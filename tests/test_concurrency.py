"""Concurrency (issue 2, point 1): steps run concurrently with asyncio.gather and in
threads started through contextvars.copy_context, each with the right parent and its
own input; concurrent runs stay apart."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import steptrace as st
from tests.support.helpers import parent_hex

pytestmark = pytest.mark.usefixtures("store_url")  # every test on both backends


def test_asyncio_gather_steps_have_the_right_parent_and_their_own_input() -> None:
    st.llm.script("conc-echo", lambda messages, **params: messages[-1]["content"].upper())

    @st.step
    async def shout(word: str, delay_s: float) -> str:
        await asyncio.sleep(delay_s)  # finish in reverse order of start
        reply = await st.llm.achat(
            model="scripted:conc-echo", messages=[{"role": "user", "content": word}]
        )
        return reply.text

    @st.workflow
    async def wf(words: list[str]) -> list[str]:
        n = len(words)
        return list(await asyncio.gather(*(shout(w, 0.002 * (n - i)) for i, w in enumerate(words))))

    words = ["alpha", "beta", "gamma", "delta"]
    assert asyncio.run(wf(words)) == [w.upper() for w in words]
    run = st.last_run()
    assert run is not None
    steps = run.steps("shout")
    assert sorted(s.input["word"] for s in steps) == sorted(words)
    assert {s.parent_span_id for s in steps} == {run.span_id}
    assert len({s.step_key for s in steps}) == 4
    for step in steps:
        assert step.output == step.input["word"].upper()
        (llm_span,) = run.children(step.span_id)
        assert llm_span.llm is not None
        assert llm_span.llm["messages"][0]["content"] == step.input["word"]
        assert llm_span.output == step.output


def test_gather_inside_a_step_nests_under_that_step() -> None:
    @st.step
    async def leaf(n: int) -> int:
        await asyncio.sleep(0.001 * (3 - n))
        return n * n

    @st.step
    async def branch(name: str) -> list[int]:
        return list(await asyncio.gather(leaf(1), leaf(2)))

    @st.workflow
    async def wf() -> list[list[int]]:
        return list(await asyncio.gather(branch("left"), branch("right")))

    assert asyncio.run(wf()) == [[1, 4], [1, 4]]
    run = st.last_run()
    assert run is not None
    branches = {s.input["name"]: s for s in run.steps("branch")}
    assert set(branches) == {"left", "right"}
    for b in branches.values():
        assert b.parent_span_id == run.span_id
        children = run.children(b.span_id)
        assert sorted((c.name, c.input["n"], c.output) for c in children) == [
            ("leaf", 1, 1),
            ("leaf", 2, 4),
        ]


def test_threads_started_with_copy_context_have_the_right_parent_and_input(
    exported: Any,
) -> None:
    barrier = threading.Barrier(4)

    @st.step
    def work(item: int) -> int:
        barrier.wait(timeout=5)  # all four really run at the same time
        return item * 100

    @st.step
    def fan_out(items: list[int]) -> list[int]:
        results: dict[int, int] = {}

        def target(i: int) -> None:
            results[i] = work(i)

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(target, i)) for i in items
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [results[i] for i in items]

    @st.workflow
    def wf() -> list[int]:
        return fan_out([1, 2, 3, 4])

    assert wf() == [100, 200, 300, 400]
    run = st.last_run()
    assert run is not None
    (parent,) = run.steps("fan_out")
    works = run.steps("work")
    assert sorted((s.input["item"], s.output) for s in works) == [
        (1, 100),
        (2, 200),
        (3, 300),
        (4, 400),
    ]
    assert {s.parent_span_id for s in works} == {parent.span_id}
    assert sorted(s.step_key or "" for s in works) == [f"fan_out#0/work#{n}" for n in range(4)]
    spans = exported()
    for s in works:
        assert parent_hex(spans[s.span_id]) == parent.span_id


def test_thread_pool_with_copied_context_per_task() -> None:
    @st.tool
    def fetch(page: int) -> dict[str, int]:
        return {"page": page}

    @st.workflow
    def wf() -> list[dict[str, int]]:
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(contextvars.copy_context().run, fetch, p) for p in range(6)]
            return [f.result() for f in futures]

    assert wf() == [{"page": p} for p in range(6)]
    run = st.last_run()
    assert run is not None
    tools = [s for s in run.spans if s.kind == "tool"]
    assert sorted(s.input["page"] for s in tools) == list(range(6))
    assert all(s.output == {"page": s.input["page"]} for s in tools)
    assert {s.parent_span_id for s in tools} == {run.span_id}


def test_concurrent_runs_in_threads_stay_apart() -> None:
    barrier = threading.Barrier(6)

    @st.step
    def work(n: int) -> int:
        barrier.wait(timeout=5)
        return n + 1

    @st.workflow
    def wf(n: int) -> int:
        return work(n)

    results: dict[int, st.RunResult] = {}

    def one(n: int) -> None:
        results[n] = st.run(wf, n)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len({r.run_id for r in results.values()}) == 6
    with st.Store.open() as store:
        for n, result in results.items():
            run = store.run(result.run_id)
            assert run.input == {"n": n}
            assert run.output == n + 1
            (step,) = run.steps()
            assert step.input == {"n": n}
            assert step.parent_span_id == run.span_id


def test_concurrent_async_runs_stay_apart() -> None:
    @st.step
    async def work(n: int) -> int:
        await asyncio.sleep(0.001 * (5 - n))
        return -n

    @st.workflow
    async def wf(n: int) -> int:
        return await work(n)

    async def main() -> list[st.RunResult]:
        return list(await asyncio.gather(*(st.arun(wf, n) for n in range(5))))

    results = asyncio.run(main())
    assert [r.output for r in results] == [0, -1, -2, -3, -4]
    with st.Store.open() as store:
        for n, result in enumerate(results):
            run = store.run(result.run_id)
            assert run.input == {"n": n}
            assert [(s.input, s.output) for s in run.steps()] == [({"n": n}, -n)]
            assert run.steps()[0].parent_span_id == run.span_id
