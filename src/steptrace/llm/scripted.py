"""The ``scripted:`` provider: deterministic, offline answers for demos and tests.

``script("triage", ["a", "b"])`` makes ``scripted:triage`` answer "a", then "b",
then "a" again; ``script("triage", fn)`` answers ``fn(messages, **params)``.
A responder may raise to play a failing model. Token counts are estimated from
the text (about four characters a token).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from steptrace.llm.types import Reply, SyncProvider, Usage


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "…"}]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


Answer = str | Reply
Responder = Callable[..., Answer] | Sequence[Answer]


class _Script:
    def __init__(self, responder: Responder) -> None:
        self._lock = threading.Lock()
        self._fn: Callable[..., Answer] | None = None
        self._cycle: Iterator[Answer] | None = None
        if callable(responder):
            self._fn = responder
        else:
            answers = list(responder)
            if not answers or not all(isinstance(a, str | Reply) for a in answers):
                raise ValueError(
                    "a scripted responder is a non-empty list of strings (or Replies) or a callable"
                )
            self._cycle = itertools.cycle(answers)

    def answer(self, messages: Sequence[dict[str, Any]], params: dict[str, Any]) -> Answer:
        if self._fn is not None:
            answer = self._fn(list(messages), **params)
            if not isinstance(answer, str | Reply):
                raise TypeError(
                    f"scripted responder returned {type(answer).__name__}, not str or Reply"
                )
            return answer
        assert self._cycle is not None
        with self._lock:
            return next(self._cycle)


class ScriptedProvider(SyncProvider):
    def __init__(self) -> None:
        self.scripts: dict[str, _Script] = {}

    def complete(
        self, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]
    ) -> Reply:
        script_ = self.scripts.get(model)
        if script_ is None:
            raise LookupError(
                f"no script for model 'scripted:{model}': register one with "
                f"steptrace.llm.script({model!r}, responder)"
            )
        answer = script_.answer(messages, params)
        prompt = sum(estimate_tokens(_content_text(m.get("content"))) + 4 for m in messages)
        if isinstance(answer, Reply):  # e.g. a scripted answer with tool calls
            usage = answer.usage
            return replace(
                answer,
                usage=Usage(
                    usage.input_tokens if usage.input_tokens is not None else prompt,
                    usage.output_tokens
                    if usage.output_tokens is not None
                    else estimate_tokens(answer.text),
                ),
                model=answer.model or model,
                provider="scripted",
                finish_reason=answer.finish_reason
                or ("tool_calls" if answer.tool_calls else "stop"),
            )
        return Reply(
            text=answer,
            usage=Usage(prompt, estimate_tokens(answer)),
            model=model,
            provider="scripted",
            finish_reason="stop",
        )


PROVIDER = ScriptedProvider()


def script(name: str, responder: Responder) -> None:
    """Register the offline model ``scripted:{name}``. ``responder`` is a list of
    answers (answered in turn, cycling) or ``callable(messages, **params)`` returning
    one; an answer is a string, or a ``Reply`` (to script tool calls)."""
    PROVIDER.scripts[name] = _Script(responder)
