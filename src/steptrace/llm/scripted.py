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
from typing import Any

from steptrace.llm.providers import SyncProvider
from steptrace.llm.types import Reply, Usage


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "…"}]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class _Script:
    def __init__(self, responder: Callable[..., str] | Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._fn: Callable[..., str] | None = None
        self._cycle: Iterator[str] | None = None
        if callable(responder):
            self._fn = responder
        else:
            answers = list(responder)
            if not answers or not all(isinstance(a, str) for a in answers):
                raise ValueError(
                    "a scripted responder is a non-empty list of strings or a callable"
                )
            self._cycle = itertools.cycle(answers)

    def answer(self, messages: Sequence[dict[str, Any]], params: dict[str, Any]) -> str:
        if self._fn is not None:
            text = self._fn(list(messages), **params)
            if not isinstance(text, str):
                raise TypeError(f"scripted responder returned {type(text).__name__}, not str")
            return text
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
        text = script_.answer(messages, params)
        prompt = sum(estimate_tokens(_content_text(m.get("content"))) + 4 for m in messages)
        return Reply(
            text=text,
            usage=Usage(prompt, estimate_tokens(text)),
            model=model,
            provider="scripted",
            finish_reason="stop",
        )


PROVIDER = ScriptedProvider()


Responder = Callable[..., str] | Sequence[str]


def script(name: str, responder: Responder) -> None:
    """Register the offline model ``scripted:{name}``. ``responder`` is a list of
    strings (answered in turn, cycling) or ``callable(messages, **params) -> str``."""
    PROVIDER.scripts[name] = _Script(responder)
