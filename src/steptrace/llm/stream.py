"""Recording a streamed LLM call: one lifecycle for the streams of every instrumented SDK.

``instrument_openai`` and ``instrument_anthropic`` hand the caller a ``RecordedStream``
(or ``AsyncRecordedStream``) around the SDK's own stream: every chunk or event passes
through unchanged, and any other attribute is the SDK stream's. Each item is also
folded into a ``StreamAccumulator``, the one provider-specific part (how an item adds
to the reply, whether the provider's end of answer has arrived). The SDKs' stream
helpers (``messages.stream()``, ``chat.completions.stream()``, ``responses.stream()``)
are wrapped in a ``RecordedStreamManager``, which gives the SDK's own helper stream on
entering and reads its raw stream through a ``RecordedStream``.

A streamed call is recorded exactly once, when the first of these happens: the stream
runs out, the SDK raises while it is read, the caller closes it (``close()`` or the
end of its ``with`` block; for a helper, the end of the helper's ``with`` block), the
task reading it is cancelled (or a ``KeyboardInterrupt`` stops it), or it is
garbage-collected unfinished. Leaving a loop with ``break`` does not end a stream
(reading it can go on, as with the SDK's own); it is recorded when one of the above
follows. The outcome:

- ``failed``: the SDK raised an exception while the stream was read (an error event,
  a dropped connection, a timeout), or the provider reported in the stream that the
  answer failed (the Responses API's ``response.failed``). The error is recorded.
- ``succeeded``: otherwise, when the provider's end of answer arrived (a finish
  reason, ``response.completed``, ``message_stop``), even if the caller stopped
  reading the few items after it.
- ``incomplete``: otherwise: the caller stopped reading before the end (close,
  ``with`` block left, cancellation, interruption, garbage collection), or the stream
  ended without the end of answer and without an error.

Whatever the outcome, the record holds what arrived until then: text, tool calls,
usage (the counts the provider had sent, else none), finish reason and the time to
the first item; ``llm.incomplete`` is true when that is not the whole answer.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from steptrace.llm.recording import LLMSpan
from steptrace.llm.types import Reply

RAW_STREAM = "_raw_stream"
"""The attribute of both SDKs' helper streams that holds the raw stream they read."""


class StreamAccumulator(Protocol):
    """What a provider's stream items are folded into."""

    def add(self, item: Any) -> None:
        """Fold one chunk or event in."""

    def complete(self) -> bool:
        """Whether the provider's end of answer has arrived."""

    def error(self) -> BaseException | None:
        """The failure the provider reported inside the stream, if it did."""

    def reply(self) -> Reply:
        """The reply made of what arrived so far."""


class StreamRecording:
    """A streamed call's LLM span and what its items assembled, finished exactly once.
    It holds no reference to the stream wrapper, so that it can be its finalizer."""

    __slots__ = ("_accumulator", "done", "span")

    def __init__(self, span: LLMSpan, accumulator: StreamAccumulator) -> None:
        self.span = span
        self._accumulator = accumulator
        self.done = False

    def add(self, item: Any) -> None:
        if self.done:
            return
        self.span.first_chunk()
        with contextlib.suppress(Exception):  # an odd item must not break the caller's loop
            self._accumulator.add(item)

    def finish(self, ended_by: BaseException | None = None) -> None:
        """Record the call, once. ``ended_by``: what came out of the SDK stream when it
        stopped; an ``Exception`` fails the call, while the end of iteration, a
        cancellation or an interruption leave the outcome to what arrived."""
        if self.done:
            return
        self.done = True
        accumulator = self._accumulator
        error = ended_by if _is_error(ended_by) else None
        try:
            reply = accumulator.reply()
            if error is None:
                error = accumulator.error()
            complete = accumulator.complete()
        except Exception:
            reply, complete = Reply(text="", provider=self.span.provider), False
        if error is not None:
            self.span.fail(error, partial=reply)
        else:
            self.span.succeed(reply, incomplete=not complete)


def _is_error(exc: BaseException | None) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, StopIteration | StopAsyncIteration)


class _Recorded:
    __slots__ = ("__weakref__", "_finalizer", "_recording", "_stream")

    def __init__(self, stream: Any, recording: StreamRecording) -> None:
        recording.span.detach()  # the caller's code that reads it is not the LLM call
        self._stream = stream
        self._recording = recording
        # Dropped unfinished: recorded when collected, not at interpreter exit (the
        # store may be gone by then).
        self._finalizer = weakref.finalize(self, recording.finish)
        self._finalizer.atexit = False

    def _end(self, ended_by: BaseException | None = None) -> None:
        self._finalizer.detach()
        self._recording.finish(ended_by)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_stream"), name)

    def __repr__(self) -> str:
        return f"<steptrace {type(self).__name__} of {self._stream!r}>"


class RecordedStream(_Recorded):
    """An SDK stream that records its LLM call: iterate it, use it in ``with`` or
    ``close()`` it as the SDK's own; other attributes are the SDK stream's."""

    __slots__ = ()

    def __iter__(self) -> RecordedStream:
        return self

    def __next__(self) -> Any:
        try:
            item = self._stream.__next__()
        except BaseException as exc:
            self._end(exc)
            raise
        self._recording.add(item)
        return item

    def close(self) -> None:
        """Close the response; the call is recorded (incomplete when not read to its end)."""
        try:
            self._stream.close()
        finally:
            self._end()

    def __enter__(self) -> RecordedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRecordedStream(_Recorded):
    """The async twin of ``RecordedStream`` (``async for``, ``async with``,
    ``await close()``)."""

    __slots__ = ()

    def __aiter__(self) -> AsyncRecordedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._stream.__anext__()
        except BaseException as exc:
            self._end(exc)
            raise
        self._recording.add(item)
        return item

    async def close(self) -> None:
        """Close the response; the call is recorded (incomplete when not read to its end)."""
        try:
            await self._stream.close()
        finally:
            self._end()

    async def __aenter__(self) -> AsyncRecordedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


StartRecording = Callable[[], "StreamRecording | None"]
"""Starts the recording of a request a stream manager makes on entering (None: not
recorded, outside a run)."""


class _Manager:
    __slots__ = ("_finish", "_manager", "_start")

    def __init__(self, manager: Any, start: StartRecording | None = None) -> None:
        self._manager = manager
        self._start = start
        self._finish: Callable[[], None] | None = None

    def _entered(self, recording: StreamRecording | None, helper: Any, wrap: type) -> Any:
        raw = getattr(helper, RAW_STREAM, None)
        if recording is not None and raw is None:  # a helper stream of unknown shape
            recording.span.detach()
            self._finish = recording.finish  # recorded, without its items, when left
            return helper
        if recording is not None:
            raw = wrap(raw, recording)
            setattr(helper, RAW_STREAM, raw)
        if isinstance(raw, _Recorded):
            self._finish = raw._end
        return helper

    def _left(self) -> None:
        # The helpers close their HTTP response, not the raw stream: record it here.
        if self._finish is not None:
            self._finish()

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_manager"), name)


class RecordedStreamManager(_Manager):
    """An SDK stream manager (``with client.messages.stream(...) as stream``) whose
    stream is recorded: entering gives the SDK's own helper stream, leaving closes it
    and records the call. ``start`` starts the recording of a request made on entering;
    without it the request goes through an instrumented ``create`` that records it."""

    __slots__ = ()

    def __enter__(self) -> Any:
        recording = self._start() if self._start is not None else None
        try:
            helper = self._manager.__enter__()
        except BaseException as exc:
            if recording is not None:
                recording.span.fail(exc)
            raise
        return self._entered(recording, helper, RecordedStream)

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._manager.__exit__(*exc_info)
        finally:
            self._left()


class AsyncRecordedStreamManager(_Manager):
    """The async twin of ``RecordedStreamManager`` (``async with``)."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        recording = self._start() if self._start is not None else None
        try:
            helper = await self._manager.__aenter__()
        except BaseException as exc:
            if recording is not None:
                recording.span.fail(exc)
            raise
        return self._entered(recording, helper, AsyncRecordedStream)

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc_info)
        finally:
            self._left()


def read_stream(stream: Any, accumulator: StreamAccumulator) -> Reply:
    """Read an SDK stream to its end (closing it) and return the reply it assembled."""
    with stream:
        for item in stream:
            accumulator.add(item)
    return accumulator.reply()


async def aread_stream(stream: Any, accumulator: StreamAccumulator) -> Reply:
    """The async twin of ``read_stream``."""
    async with stream:
        async for item in stream:
            accumulator.add(item)
    return accumulator.reply()
