"""A fake OpenAI-compatible HTTP server on loopback, for testing against the real SDK.

``FakeOpenAI`` is a ``LoopbackServer``: a stdlib HTTP server on ``127.0.0.1:0`` in a
thread. It serves ``POST /v1/chat/completions`` and ``POST /v1/responses``, as JSON or,
when the request says ``"stream": true``, as server-sent events shaped like OpenAI's (chat
chunks ending in ``data: [DONE]``, usage only with ``stream_options.include_usage``;
Responses API events from ``response.created`` to ``response.completed``). Answers are
scripted with ``answer(Answer(...), error(429), ...)`` and served in order; when the
script is empty every request gets ``Answer()``. Every request is kept in ``requests``,
headers included, so tests can check what the SDK sent.

    with FakeOpenAI() as server:
        client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)

The server speaks HTTP/1.0: each response closes its connection, so no client is left
holding an idle socket when a test ends.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.loopback import HTTPThread, LoopbackServer, QuietHandler


@dataclass(frozen=True)
class Answer:
    """One scripted answer. ``tool_calls`` are ``(call_id, name, arguments_json)``."""

    text: str = "Hello from the fake server."
    tool_calls: Sequence[tuple[str, str, str]] = ()
    model: str | None = None
    """The model named in the answer; the requested one when None."""
    prompt_tokens: int = 12
    completion_tokens: int = 7
    cached_tokens: int = 4
    reasoning_tokens: int = 2
    finish_reason: str | None = None
    """Default: ``tool_calls`` when there are tool calls, else ``stop``."""
    status: int = 200
    error_message: str = ""
    error_type: str = ""
    delay_s: float = 0.0
    """Seconds to wait before answering (to make a client time out)."""
    chunk_delay_s: float = 0.0
    cut_after: int | None = None
    """Streams only: close the connection after this many events, without the end."""
    error_after: int | None = None
    """Streams only: after this many events, send an error event (the SDK raises it)."""
    drop_after: int | None = None
    """Streams only: break the connection after this many events, leaving the body
    short of the length it announced (the SDK raises ``APIConnectionError``)."""


def error(status: int, message: str = "", type_: str = "") -> Answer:
    """An error answer in OpenAI's shape: ``{"error": {"message", "type", ...}}``."""
    default_type = {429: "rate_limit_exceeded", 500: "server_error", 401: "invalid_api_key"}
    return Answer(
        status=status,
        error_message=message or f"scripted error {status}",
        error_type=type_ or default_type.get(status, "invalid_request_error"),
    )


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased header names."""
    body: Any


class FakeOpenAI(LoopbackServer):
    """The server (a ``LoopbackServer``: a context manager that starts and stops it)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL to give the SDK (``.../v1``)."""
        return f"{super().url}/v1"

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._script.extend(answers)

    def next_answer(self) -> Answer:
        with self._lock:
            return self._script.popleft() if self._script else Answer()

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _launch(self) -> None:
        self._http = HTTPThread(type("Handler", (_Handler,), {"fake": self}))
        self.port = self._http.port

    def _halt(self) -> str:
        return self._http.close()


class _Handler(QuietHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake.record(Request("POST", self.path, headers, body))
        answer = self.fake.next_answer()
        if answer.delay_s:
            time.sleep(answer.delay_s)
        if answer.status != 200:
            self._json(answer.status, _error_body(answer))
            return
        request = body if isinstance(body, dict) else {}
        model = answer.model or str(request.get("model") or "unknown")
        stream = request.get("stream") is True
        if self.path.endswith("/chat/completions"):
            if stream:
                include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                self._sse(_chat_chunks(answer, model, include_usage), answer, named=False)
            else:
                self._json(200, _chat_completion(answer, model))
        elif self.path.endswith("/responses"):
            if stream:
                self._sse(_response_events(answer, model), answer, named=True)
            else:
                self._json(200, _response(answer, model, "completed"))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        if status >= 400:  # clients that retry (the SDK's default) do so at once
            self.send_header("retry-after-ms", "1")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_{len(self.fake.requests)}")
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Iterator[dict[str, Any] | str], answer: Answer, *, named: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        if answer.drop_after is not None:
            self.send_header("content-length", str(1 << 20))
        self.end_headers()
        for n, event in enumerate(events):
            if n in (answer.cut_after, answer.drop_after):
                break
            if n == answer.error_after:
                error = {"message": "overloaded mid-stream", "type": "server_error"}
                event = {"type": "error", "error": error}
            if isinstance(event, str):
                frame = f"data: {event}\n\n"
            elif named:
                frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            else:
                frame = f"data: {json.dumps(event)}\n\n"
            self.wfile.write(frame.encode())
            self.wfile.flush()
            if n == answer.error_after:
                break
            if answer.chunk_delay_s:
                time.sleep(answer.chunk_delay_s)


def _error_body(answer: Answer) -> dict[str, Any]:
    return {
        "error": {
            "message": answer.error_message,
            "type": answer.error_type,
            "param": None,
            "code": answer.error_type,
        }
    }


def _finish_reason(answer: Answer) -> str:
    return answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")


def _words(text: str) -> list[str]:
    """The text in stream-sized pieces that join back to it exactly."""
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1][:-1]
    return [p for p in pieces if p]


# --- chat completions ------------------------------------------------------------------


def _chat_usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
    }


def _chat_completion(answer: Answer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in answer.tool_calls
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish_reason(answer),
                "logprobs": None,
            }
        ],
        "usage": _chat_usage(answer),
    }


def _chat_chunks(answer: Answer, model: str, include_usage: bool) -> Iterator[dict[str, Any] | str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            out["usage"] = None
        return out

    yield chunk({"role": "assistant", "content": ""})
    for piece in _words(answer.text):
        yield chunk({"content": piece})
    for index, (cid, name, args) in enumerate(answer.tool_calls):
        head = {"id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
        yield chunk({"tool_calls": [{"index": index, **head}]})
        middle = max(1, len(args) // 2)
        for part in (args[:middle], args[middle:]):
            if part:
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    yield chunk({}, _finish_reason(answer))
    if include_usage:
        yield {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": _chat_usage(answer),
        }
    yield "[DONE]"


# --- the Responses API -----------------------------------------------------------------


def _message_item(text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_fake",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}] if text else [],
    }


def _call_item(cid: str, name: str, args: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{cid}",
        "call_id": cid,
        "name": name,
        "arguments": args,
        "status": status,
    }


def _response(answer: Answer, model: str, status: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    done = status == "completed"
    if done:
        if answer.text:
            output.append(_message_item(answer.text, "completed"))
        output.extend(_call_item(c, n, a, "completed") for c, n, a in answer.tool_calls)
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": time.time(),
        "model": model,
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": (
            {
                "input_tokens": answer.prompt_tokens,
                "input_tokens_details": {"cached_tokens": answer.cached_tokens},
                "output_tokens": answer.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            }
            if done
            else None
        ),
    }


def _response_events(answer: Answer, model: str) -> Iterator[dict[str, Any]]:
    seq = iter(range(1_000_000))
    yield {
        "type": "response.created",
        "sequence_number": next(seq),
        "response": _response(answer, model, "in_progress"),
    }
    index = 0
    if answer.text:
        yield {
            "type": "response.output_item.added",
            "sequence_number": next(seq),
            "output_index": index,
            "item": _message_item("", "in_progress"),
        }
        yield {
            "type": "response.content_part.added",
            "sequence_number": next(seq),
            "item_id": "msg_fake",
            "output_index": index,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        }
        for piece in _words(answer.text):
            yield {
                "type": "response.output_text.delta",
                "sequence_number": next(seq),
                "item_id": "msg_fake",
                "output_index": index,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
        yield {
            "type": "response.output_text.done",
            "sequence_number": next(seq),
            "item_id": "msg_fake",
            "output_index": index,
            "content_index": 0,
            "text": answer.text,
            "logprobs": [],
        }
        yield {
            "type": "response.content_part.done",
            "sequence_number": next(seq),
            "item_id": "msg_fake",
            "output_index": index,
            "content_index": 0,
            "part": {"type": "output_text", "text": answer.text, "annotations": []},
        }
        yield {
            "type": "response.output_item.done",
            "sequence_number": next(seq),
            "output_index": index,
            "item": _message_item(answer.text, "completed"),
        }
        index += 1
    for cid, name, args in answer.tool_calls:
        yield {
            "type": "response.output_item.added",
            "sequence_number": next(seq),
            "output_index": index,
            "item": _call_item(cid, name, "", "in_progress"),
        }
        yield {
            "type": "response.function_call_arguments.delta",
            "sequence_number": next(seq),
            "item_id": f"fc_{cid}",
            "output_index": index,
            "delta": args,
        }
        yield {
            "type": "response.function_call_arguments.done",
            "sequence_number": next(seq),
            "item_id": f"fc_{cid}",
            "output_index": index,
            "arguments": args,
        }
        yield {
            "type": "response.output_item.done",
            "sequence_number": next(seq),
            "output_index": index,
            "item": _call_item(cid, name, args, "completed"),
        }
        index += 1
    yield {
        "type": "response.completed",
        "sequence_number": next(seq),
        "response": _response(answer, model, "completed"),
    }
