"""Per-call cost of ``st.instrument`` on an Anthropic client, without the network.

Two ``anthropic.Anthropic`` clients share an ``httpx2`` (the HTTP library this SDK
uses) ``MockTransport`` that answers a fixed message (JSON, or the SSE events of a
streamed one): one plain, one instrumented. A round is one workflow whose single step
makes N ``messages.create`` calls through one of them, then waits for steptrace's
writer thread; plain and instrumented rounds alternate. Per-call figure = round time
/ N, so both sides carry the same step and run and differ only by the LLM span; it
is given as the time until the workflow returns and once the writer thread has stored
(redacted, exported) everything, as the next round starts only then. Both
run under an SDK ``TracerProvider`` exporting to nowhere (the SDK's own spans are
made on both sides). Prints medians, the difference in microseconds and the ratio,
for plain and streamed calls; exits 0 whatever the figures (a benchmark, not a test).

    python -m bench.llm_overhead_anthropic [--rounds 30] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

MODEL = "claude-haiku-4-5"
TEXT = "The order A-7731 was charged twice; a refund for the duplicate is on its way."


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def message() -> dict[str, Any]:
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 412, "output_tokens": 21},
    }


def sse_body() -> bytes:
    start = dict(message(), content=[], stop_reason=None)
    start["usage"] = {"input_tokens": 412, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    words = TEXT.split(" ")
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        events.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
        )
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 21},
        },
        {"type": "message_stop"},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="steptrace-bench-")
    os.environ["STEPTRACE_STORE"] = os.path.join(tmp, "bench.db")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)

    import anthropic
    import httpx2

    import steptrace as st

    json_body = json.dumps(message()).encode()
    stream_body = sse_body()

    def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            headers = {"content-type": "text/event-stream"}
            return httpx2.Response(200, headers=headers, content=stream_body)
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=json_body)

    def make_client() -> Any:
        transport = httpx2.MockTransport(answer)
        return anthropic.Anthropic(
            api_key="sk-ant-bench",
            max_retries=0,
            http_client=httpx2.Client(transport=transport, base_url="https://api.anthropic.test"),
            base_url="https://api.anthropic.test",
        )

    plain = make_client()
    instrumented = st.instrument(make_client())
    messages = [{"role": "user", "content": "Why was I charged twice for order A-7731?"}]

    def call(client: Any) -> None:
        client.messages.create(model=MODEL, max_tokens=256, messages=messages)

    def call_streamed(client: Any) -> None:
        for _ in client.messages.create(
            model=MODEL, max_tokens=256, messages=messages, stream=True
        ):
            pass

    @st.step
    def calls(fn: Callable[[Any], None], client: Any) -> None:
        for _ in range(args.calls):
            fn(client)

    @st.workflow
    def workflow(fn: Callable[[Any], None], client: Any) -> None:
        calls(fn, client)

    def per_call_us(fn: Callable[[Any], None], client: Any) -> tuple[float, float]:
        """(us/call until the workflow returns, us/call once the writer caught up)."""
        started = time.perf_counter()
        workflow(fn, client)
        ran = time.perf_counter()
        st.flush(timeout_s=120)
        settled = time.perf_counter()
        return (ran - started) / args.calls * 1e6, (settled - started) / args.calls * 1e6

    print(f"anthropic {anthropic.__version__}, httpx2 MockTransport (no network)")
    print(f"rounds: {args.rounds} x {args.calls} calls, interleaved; medians")
    for label, fn in [("messages.create", call), ("messages.create(stream=True)", call_streamed)]:
        per_call_us(fn, plain)  # warm up
        per_call_us(fn, instrumented)
        bare: list[tuple[float, float]] = []
        traced: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            bare.append(per_call_us(fn, plain))
            traced.append(per_call_us(fn, instrumented))
        print(label)
        for i, when in enumerate(["in the step", "writer included"]):
            bare_med = statistics.median(r[i] for r in bare)
            traced_med = statistics.median(r[i] for r in traced)
            print(
                f"  {when:<16}: plain {bare_med:7.1f} us, st.instrument {traced_med:7.1f} us"
                f" -> {traced_med - bare_med:+6.1f} us/call ({traced_med / bare_med:.2f}x)"
            )
    with sqlite3.connect(os.environ["STEPTRACE_STORE"]) as db:
        (stored,) = db.execute(
            "SELECT count(*) FROM llm_calls WHERE provider = 'anthropic'"
        ).fetchone()
    print(f"LLM calls stored: {stored}")
    plain.close()
    instrumented.close()
    provider.shutdown()


if __name__ == "__main__":
    main()
