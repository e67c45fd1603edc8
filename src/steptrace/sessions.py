"""A run's session: the conversation or user journey it belongs to (``runs.session_id``,
``gen_ai.conversation.id`` on its exported spans).

A run gets one in one of two ways. ``st.run(..., session_id=…)`` gives it: a value that
cannot be a session id is the caller's mistake, refused at once (``checked``).
``@st.workflow(session=…)`` derives it from each run's arguments by a ``SessionRule``:
a dotted path into them (``"ticket.customer_id"``) or a function of them; a rule that
cannot work is refused when the function is decorated, and a value it finds that cannot
be a session id is logged and the run recorded without a session, never raised into
the workflow.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from steptrace.record import storable

log = logging.getLogger("steptrace")

SESSION_ID_MAX_CHARS = 256
"""A session id is at most this many characters (it is indexed, and shown in lists)."""

SessionSource = str | Callable[[dict[str, Any]], Any]
"""What ``@st.workflow(session=…)`` takes: a dotted path into the workflow's arguments, or
a function of them (by parameter name, defaults included) returning the session id."""


def session_id_of(value: object) -> str:
    """The session id ``value`` stands for: text as it is (made storable), an ``int`` or a
    ``UUID`` as its text. ``TypeError`` or ``ValueError`` saying why it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
        raise TypeError(f"a session id is text (or an int or a UUID), not {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    if not text:
        raise ValueError("a session id cannot be empty")
    if len(text) > SESSION_ID_MAX_CHARS:
        raise ValueError(
            f"a session id is at most {SESSION_ID_MAX_CHARS} characters, "
            f"not {len(text):,} ({text[:40]!r}…)"
        )
    return storable(text)


def checked(session_id: object) -> str | None:
    """A session id given by the caller (``st.run(session_id=…)``), or None; raises
    ``TypeError``/``ValueError`` (the call's mistake, told before the run starts)."""
    return None if session_id is None else session_id_of(session_id)


class SessionRule:
    """How a workflow's runs find their session id in their arguments."""

    __slots__ = ("_fn", "_keywords", "_path", "_workflow", "text")

    def __init__(self, source: SessionSource, signature: inspect.Signature, workflow: str) -> None:
        self._workflow = workflow
        self._fn: Callable[[dict[str, Any]], Any] | None = None
        self._path: tuple[str, ...] = ()
        self._keywords = next(
            (p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None
        )
        """The workflow's ``**kwargs`` parameter: a path may start inside it."""
        if isinstance(source, str):
            self._path = _path(source, signature, workflow)
            self.text = source
        elif callable(source):
            self._fn = source
            self.text = getattr(source, "__qualname__", repr(source))
        else:
            raise TypeError(
                f"@workflow {workflow!r}: session= takes the name of an argument (a dotted "
                f"path into it, e.g. 'ticket.customer_id') or a function of the arguments, "
                f"not {type(source).__name__}"
            )

    def session_of(self, arguments: dict[str, Any]) -> str | None:
        """The session id of a run called with ``arguments`` (by parameter name), or None
        when the rule finds None; what cannot be one is logged, never raised."""
        try:
            value = self._fn(dict(arguments)) if self._fn is not None else self._follow(arguments)
        except _Missing as missing:
            self._report(str(missing))
            return None
        except Exception as exc:
            self._report(f"{type(exc).__name__}: {exc}")
            return None
        if value is None:
            return None
        try:
            return session_id_of(value)
        except (TypeError, ValueError) as exc:
            self._report(str(exc))
            return None

    def _follow(self, arguments: Mapping[str, Any]) -> Any:
        first, *rest = self._path
        if first in arguments:
            value = arguments[first]
        elif self._keywords is not None and first in arguments.get(self._keywords, ()):
            value = arguments[self._keywords][first]
        else:
            raise _Missing(f"the call has no argument {first!r}")
        for depth, part in enumerate(rest, 1):
            if value is None:
                return None
            value = _step(value, part, ".".join(self._path[:depth]))
        return value

    def _report(self, why: str) -> None:
        log.warning(
            "steptrace: workflow %r: no session id from session=%r (%s); the run is "
            "recorded without a session",
            self._workflow,
            self.text,
            why,
        )


class _Missing(Exception):
    """A part of a session path that the value at hand does not have."""


def _step(value: Any, part: str, where: str) -> Any:
    """``value[part]`` for a mapping, else its attribute ``part``, else its item at index
    ``part`` for a list or tuple."""
    if isinstance(value, Mapping):
        if part in value:
            return value[part]
        raise _Missing(f"{where} has no key {part!r}")
    if hasattr(value, part):
        return getattr(value, part)
    if isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
        return value[int(part)]
    raise _Missing(f"{where} ({type(value).__name__}) has no {part!r}")


def _path(source: str, signature: inspect.Signature, workflow: str) -> tuple[str, ...]:
    """The parts of a dotted path, the first naming a parameter of the workflow (any
    name, when it takes ``**kwargs``); ``ValueError`` otherwise."""
    parts = tuple(source.split("."))
    if not all(parts):
        raise ValueError(
            f"@workflow {workflow!r}: session={source!r} is not a dotted path "
            "(e.g. 'ticket.customer_id')"
        )
    params = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if parts[0] not in params and not takes_any:
        names = ", ".join(params) or "none"
        raise ValueError(
            f"@workflow {workflow!r}: session={source!r} names no argument of it "
            f"(its arguments: {names})"
        )
    return parts
