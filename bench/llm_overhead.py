"""Per-call cost of recording an LLM call made through a provider SDK, network excluded.

Each case calls the real SDK against an in-process transport (``httpx2.MockTransport``:
the openai SDK's HTTP library) that answers a fixed completion, so what is left is the
SDK's own work plus steptrace's. Every call runs inside a step of a workflow, once with
a plain client ("bare": only the step is recorded) and once with ``st.instrument(client)``
(each call is also an LLM span), in interleaved rounds; a round makes ``--calls`` calls
in one step and ends by waiting for steptrace's writer thread, so the background work
(redaction, span export, SQLite) is charged to the round that caused it. Prints medians,
the difference in us per call and the ratio. Spans go through an SDK TracerProvider
to an exporter that drops them; exits 0 whatever the figures (a benchmark,
not a test).

    python -m bench.llm_overhead [--rounds 15] [--calls 200] [--case chat ...]

A case is a name and a function ``instrumented -> call``; adding a provider (Anthropic)
is adding entries to ``CASES``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import steptrace as st

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a support triage assistant. Answer in JSON."},
    {"role": "user", "content": "I was charged twice for order A-7731 last Tuesday."},
]
ANSWER = '{"category": "billing", "priority": "high", "summary": "duplicate charge"}'

Call = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[bool], Call]
    """``make(instrumented)`` builds a client and returns a function making one call."""


# --- the OpenAI cases: fixed answers served by a mock transport --------------------------


def _chat_json() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": 41,
                "completion_tokens": 19,
                "total_tokens": 60,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }
    ).encode()


def _chat_sse() -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    words = ANSWER.split(" ")
    events = [chunk({"role": "assistant", "content": ""})]
    events += [
        chunk({"content": w + (" " if i < len(words) - 1 else "")}) for i, w in enumerate(words)
    ]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 41, "completion_tokens": 19, "total_tokens": 60}
    events.append({**chunk({}), "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def _openai_transport() -> httpx2.MockTransport:
    plain, streamed = _chat_json(), _chat_sse()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if b'"stream":true' in request.content.replace(b" ", b""):
            return httpx2.Response(
                200, content=streamed, headers={"content-type": "text/event-stream"}
            )
        return httpx2.Response(200, content=plain, headers={"content-type": "application/json"})

    return httpx2.MockTransport(handler)


def _openai_client(instrumented: bool) -> openai.OpenAI:
    client = openai.OpenAI(
        api_key="sk-bench",
        base_url="http://llm.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=_openai_transport()),
    )
    return st.instrument(client) if instrumented else client


def openai_chat(instrumented: bool) -> Call:
    client = _openai_client(instrumented)

    def call() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)

    return call


def openai_chat_stream(instrumented: bool) -> Call:
    client = _openai_client(instrumented)

    def call() -> Any:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    return call


CASES = [
    Case("openai chat", openai_chat),
    Case("openai chat, streamed", openai_chat_stream),
]


# --- measuring ---------------------------------------------------------------------------


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def measure(case: Case, rounds: int, calls: int) -> tuple[float, float]:
    """Median us per call: (bare, instrumented)."""

    def round_us(call: Call) -> float:
        @st.step
        def many() -> None:
            for _ in range(calls):
                call()

        @st.workflow
        def bench() -> None:
            many()

        started = time.perf_counter()
        bench()
        st.flush(timeout_s=120)
        return (time.perf_counter() - started) / calls * 1e6

    bare_call, traced_call = case.make(False), case.make(True)
    round_us(bare_call)  # warm up: imports, pydantic models, the store
    round_us(traced_call)
    bare: list[float] = []
    traced: list[float] = []
    for _ in range(rounds):
        bare.append(round_us(bare_call))
        traced.append(round_us(traced_call))
    return statistics.median(bare), statistics.median(traced)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--case", action="append", help="run only these cases (by name)")
    args = parser.parse_args()

    os.environ["STEPTRACE_STORE"] = os.path.join(
        tempfile.mkdtemp(prefix="steptrace-bench-"), "bench.db"
    )
    provider = TracerProvider()  # spans are made and exported (to nowhere), as in production
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)
    cases = [c for c in CASES if not args.case or c.name in args.case]
    print(f"rounds: {args.rounds} x {args.calls} calls in one step; network excluded")
    print(f"{'case':<24} {'bare us/call':>13} {'instrumented':>13} {'diff us':>9} {'ratio':>7}")
    for case in cases:
        bare, traced = measure(case, args.rounds, args.calls)
        print(
            f"{case.name:<24} {bare:>13.1f} {traced:>13.1f} {traced - bare:>9.1f} "
            f"{traced / bare:>6.2f}x"
        )
    provider.shutdown()


if __name__ == "__main__":
    main()
