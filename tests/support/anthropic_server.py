"""A fake Anthropic Messages API on loopback, for tests that drive the real SDK over HTTP.

``FakeAnthropic`` is a ``LoopbackServer``: a stdlib HTTP server on 127.0.0.1 (a free
port) in a thread; ``with FakeAnthropic() as fake:`` point a client at ``fake.url``.
``POST /v1/messages`` answers JSON, or with ``"stream": true`` server-sent events in the
API's order (message_start, ping, content_block_start / content_block_delta (text_delta,
input_json_delta) / content_block_stop per block, message_delta with stop_reason and
usage, message_stop).
Answers are scripted with ``fake.reply(...)`` / ``fake.fail(status)`` and taken in turn;
with none queued the server echoes the last user message. Every request is kept in
``fake.requests`` with its headers and parsed body.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.support.loopback import HTTPThread, LoopbackServer, QuietHandler

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass
class Answer:
    """One scripted answer. ``text=None`` echoes the last user message."""

    text: str | None = None
    tool_uses: list[ToolUse] = field(default_factory=list)
    status: int = 200
    error_message: str = ""
    model: str | None = None
    message_id: str | None = None
    input_tokens: int = 25
    output_tokens: int = 8
    cache_read_input_tokens: int | None = None
    stop_reason: str | None = None
    delay_s: float = 0.0
    """Wait this long before answering (to make the client time out)."""
    event_delay_s: float = 0.0
    """Wait this long between streamed events."""
    error_after_events: int | None = None
    """Streaming: send this many events, then an ``overloaded_error`` error event."""
    cut_after_events: int | None = None
    """Streaming: send this many events, then end the body as if the stream were over."""
    drop_after_events: int | None = None
    """Streaming: send this many events, then break the connection mid-body."""


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeAnthropic(LoopbackServer):
    """The server (a ``LoopbackServer``: a context manager that starts and stops it)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def _launch(self) -> None:
        self._http = HTTPThread(type("Handler", (_Handler,), {"fake": self}))
        self.port = self._http.port

    def _halt(self) -> str:
        return self._http.close()

    def reply(self, text: str | None = None, **fields: Any) -> None:
        """Queue a successful answer (see ``Answer`` for the fields)."""
        self._answers.append(Answer(text=text, **fields))

    def fail(self, status: int, message: str = "", *, times: int = 1, **fields: Any) -> None:
        """Queue ``times`` error answers with this HTTP status."""
        for _ in range(times):
            message = message or f"scripted {status}"
            self._answers.append(Answer(status=status, error_message=message, **fields))

    def next_answer(self) -> Answer:
        with self._lock:
            return self._answers.popleft() if self._answers else Answer()

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"


def _echo(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return f"echo: {content}"
    return "echo"


def _blocks(answer: Answer, body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _echo(body) if answer.text is None and not answer.tool_uses else answer.text
    if text:
        blocks.append({"type": "text", "text": text})
    for use in answer.tool_uses:
        blocks.append({"type": "tool_use", "id": use.id, "name": use.name, "input": use.input})
    return blocks


def _usage(answer: Answer, output_tokens: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"input_tokens": answer.input_tokens, "output_tokens": output_tokens}
    if answer.cache_read_input_tokens is not None:
        usage["cache_read_input_tokens"] = answer.cache_read_input_tokens
        usage["cache_creation_input_tokens"] = 0
    return usage


def message_json(fake: FakeAnthropic, answer: Answer, body: dict[str, Any]) -> dict[str, Any]:
    stop = answer.stop_reason or ("tool_use" if answer.tool_uses else "end_turn")
    return {
        "id": answer.message_id or fake.next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": answer.model or body.get("model", "claude-test"),
        "content": _blocks(answer, body),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _usage(answer, answer.output_tokens),
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def stream_events(message: dict[str, Any], answer: Answer) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events (name, data) that stream ``message`` the way the API does."""
    start = dict(message, content=[], stop_reason=None, stop_sequence=None)
    start["usage"] = _usage(answer, 1)
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            first = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], 4)]
        else:
            first = dict(block, input={})
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                {"type": "input_json_delta", "partial_json": p} for p in _pieces(raw, 7)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": answer.output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE chunks go out at once, as from the real API
    fake: FakeAnthropic

    def do_POST(self) -> None:
        fake = self.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake.requests.append(Request(self.path, headers, body))
        answer = fake.next_answer()
        try:
            if answer.delay_s:
                time.sleep(answer.delay_s)
            if self.path.split("?", 1)[0] != "/v1/messages":
                self._json(404, {"type": "error", "error": {"type": "not_found_error"}})
            elif answer.status != 200:
                error_type = ERROR_TYPES.get(answer.status, "api_error")
                error = {"type": error_type, "message": answer.error_message}
                self._json(answer.status, {"type": "error", "error": error})
            elif body.get("stream"):
                self._stream(fake, answer, body)
            else:
                self._json(200, message_json(fake, answer, body))
        except OSError:  # the client went away (timed out, closed the stream early)
            self.close_connection = True

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{status}")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, fake: FakeAnthropic, answer: Answer, body: dict[str, Any]) -> None:
        events = stream_events(message_json(fake, answer, body), answer)
        for stop in (answer.cut_after_events, answer.drop_after_events):
            events = events if stop is None else events[:stop]
        if answer.error_after_events is not None:
            error = {"type": "overloaded_error", "message": "Overloaded"}
            events = events[: answer.error_after_events]
            events.append(("error", {"type": "error", "error": error}))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", "req_stream")
        self.end_headers()
        for name, data in events:
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            if answer.event_delay_s:
                time.sleep(answer.event_delay_s)
        if answer.drop_after_events is not None:
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
