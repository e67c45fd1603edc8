"""Recording one LLM call as an ``llm`` span: used by ``chat``/``achat`` and by the SDK
instrumentation of ``st.instrument``.

Inside a run a call is a span under the current step (or under the run's root
when made outside any step); outside a run ``LLMSpan.start`` returns None and
nothing is recorded. Tool calls in a reply are offered to the run, so the
``@st.tool`` that executes one is linked to it by call id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

from steptrace.llm.types import Reply
from steptrace.otel import conventions
from steptrace.prices import cost_usd
from steptrace.record import LLMUsage, encode


class LLMSpan:
    """An LLM call in flight inside a run."""

    __slots__ = (
        "active",
        "attached",
        "first_chunk_ns",
        "index",
        "model",
        "parent",
        "provider",
    )

    active: Any
    parent: Any
    index: int
    provider: str
    model: str

    def __init__(self) -> None:
        self.first_chunk_ns: int | None = None
        self.attached = True

    def detach(self) -> None:
        """Give the caller's context back now, for a call that finishes later (a stream
        consumed after ``create`` returned): code that runs meanwhile is not its child."""
        if self.attached:
            self.attached = False
            self.active.detach()

    @classmethod
    def start(
        cls,
        provider: str,
        model: str,
        messages: Sequence[Any],
        params: dict[str, Any],
        *,
        operation: str = "chat",
    ) -> LLMSpan | None:
        """Start recording, or None outside a run (the call is then not recorded)."""
        from steptrace.frames import current_frame
        from steptrace.runtime import ActiveSpan

        parent = current_frame.get()
        if parent is None:
            return None
        call = cls()
        call.parent = parent
        call.index = parent.llm_calls  # its place among the calls of its step attempt
        parent.llm_calls += 1
        call.provider = provider
        call.model = model
        name = conventions.llm_span_name(operation, model)
        call.active = ActiveSpan(parent, "llm", name, name, None, None)
        record = call.active.record
        record.input = encode({"messages": list(messages), "params": params})
        record.llm = LLMUsage(provider=provider, model=model, params=encode(params))
        return call

    def recorded_reply(self, messages: Sequence[Any]) -> Reply | None:
        """In a replay (or a fork with ``llm="recorded"``): the recorded reply this call
        gets instead of calling the model, or None (call it; marked when it should
        have had one). Raises ``ReplayMismatch`` under ``strict``."""
        reentry = self.parent.run.reentry
        if reentry is None:
            return None
        try:
            reply, attributes = reentry.llm_answer(
                self.parent, self.index, self.provider, self.model, messages
            )
        except BaseException as exc:
            self.fail(exc)
            raise
        if attributes:
            self.active.record.attributes = encode(attributes)
        return cast("Reply | None", reply)

    def first_chunk(self) -> None:
        """Note the arrival of a stream's first chunk (time to first chunk)."""
        if self.first_chunk_ns is None:
            self.first_chunk_ns = time.time_ns()

    def succeed(self, reply: Reply, *, incomplete: bool = False) -> Reply:
        """Record the reply (filling in its cost when the provider did not) and return it;
        ``incomplete``: the reply is what arrived of an answer cut short."""
        self.detach()
        reply = self._record_reply(reply, incomplete=incomplete)
        self.active.record.status = "incomplete" if incomplete else "succeeded"
        if reply.tool_calls:
            self.parent.run.offer_tool_calls(reply.tool_calls)
        self.parent.last_llm_text = reply.text
        self.active.finish()
        return reply

    def fail(self, exc: BaseException, *, partial: Reply | None = None) -> None:
        """Record the call as failed with ``exc``; ``partial``: what arrived before it (a
        stream that broke part-way), recorded as an incomplete response."""
        from steptrace.runtime import fail_span

        self.detach()
        active = self.active
        if partial is not None:
            self._record_reply(partial, incomplete=True)
        fail_span(active, exc, validation=False)
        active.finish(exc)

    def _record_reply(self, reply: Reply, *, incomplete: bool) -> Reply:
        record = self.active.record
        usage = reply.usage
        cost = reply.cost_usd
        if cost is None:
            cost = cost_usd(
                self.provider,
                reply.model or self.model,
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
            )
            if cost is not None:
                reply = _with_cost(reply, cost)
        record.output = encode(reply.text)
        llm = record.llm
        assert llm is not None
        llm.input_tokens = usage.input_tokens
        llm.output_tokens = usage.output_tokens
        llm.cached_input_tokens = usage.cached_input_tokens
        llm.reasoning_tokens = usage.reasoning_tokens
        llm.cost_usd = cost
        llm.finish_reason = reply.finish_reason
        llm.response_model = reply.model or None
        llm.incomplete = incomplete
        if self.first_chunk_ns is not None:
            llm.time_to_first_chunk_ms = (self.first_chunk_ns - record.start_ns) / 1e6
        if reply.tool_calls:
            llm.tool_calls = encode([c.to_dict() for c in reply.tool_calls])
        return reply


def _with_cost(reply: Reply, cost: float) -> Reply:
    from dataclasses import replace

    return replace(reply, cost_usd=cost)
