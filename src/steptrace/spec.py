"""What a decorator knows about the function it wraps: ``Spec`` (name, retries, backoff,
output validation, how to bind arguments) and ``Backoff``."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

from steptrace.config import durability_level
from steptrace.otel import conventions
from steptrace.provenance import code_version_json, entry_point
from steptrace.sessions import SessionRule, SessionSource

if TYPE_CHECKING:
    from steptrace.store.columns import ScoreLine


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between attempts: ``initial_s * multiplier**(attempt-1)``,
    at most ``max_s``, with "equal jitter" (a random half of it) when ``jitter``."""

    initial_s: float = 0.5
    multiplier: float = 2.0
    max_s: float = 30.0
    jitter: bool = True

    def delay_s(self, attempt: int) -> float:
        delay = min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))
        if self.jitter:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay


class StepChecks(Protocol):
    """A step's checks, as the runtime runs them (``steptrace.evals.checks.Checks``): the
    scores of one attempt's output, for the attempt's record. Never raises."""

    def scores(
        self, output: Any, arguments: dict[str, Any], run_id: str, span_id: str, step: str
    ) -> list[ScoreLine]: ...

    async def ascores(
        self, output: Any, arguments: dict[str, Any], run_id: str, span_id: str, step: str
    ) -> list[ScoreLine]: ...


class Spec:
    """What a decorator knows about the function it wraps, computed once."""

    __slots__ = (
        "adapter",
        "backoff",
        "checks",
        "durable",
        "entry_point",
        "fn",
        "kind",
        "max_attempts",
        "name",
        "otel_name",
        "params",
        "positional_names",
        "provenance",
        "retry_on",
        "session",
        "side_effects",
        "signature",
        "skip_first",
        "tags",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        kind: str,
        name: str | None,
        retries: int = 0,
        backoff: float | Backoff = 0.5,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        output: Any = None,
        tags: Sequence[str] = (),
        durable: bool | str | None = None,
        side_effects: bool = False,
        checks: StepChecks | None = None,
        session: SessionSource | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries={retries}: must be >= 0")
        self.fn = fn
        self.kind = kind
        self.name = name or fn.__name__
        self.otel_name = conventions.span_name("run" if kind == "workflow" else kind, self.name)
        self.max_attempts = retries + 1
        self.backoff = backoff if isinstance(backoff, Backoff) else Backoff(initial_s=backoff)
        self.retry_on = retry_on
        self.adapter = pydantic.TypeAdapter(output) if output is not None else None
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters)
        self.skip_first = bool(params) and params[0] in ("self", "cls")
        self.params = params
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in self.signature.parameters.values())
        # Calls that pass every parameter positionally skip Signature.bind (~3 us).
        self.positional_names = tuple(params) if plain and not self.skip_first else None
        self.tags = tuple(tags)
        self.durable = None if durable is None else durability_level(durable)
        self.side_effects = side_effects
        self.checks = checks
        """Evaluators run on each attempt's output (None: none, and no work for them)."""
        self.session = None if session is None else SessionRule(session, self.signature, self.name)
        """How a workflow's runs find their session id in their arguments (or None)."""
        self.entry_point = entry_point(fn)
        self.provenance: bytes | None = None
        """A tool that changes the world: never executed again from a recording."""

    def code_version(self) -> bytes:
        """The stored ``code_version`` of the function (computed at its first run)."""
        version = self.provenance
        if version is None:
            version = self.provenance = code_version_json(self.fn)
        return version

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults included."""
        names = self.positional_names
        if names is not None and not kwargs and len(args) == len(names):
            return dict(zip(names, args, strict=True))
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            # Let the call itself raise the TypeError the user expects.
            return {"args": list(args), "kwargs": kwargs}
        bound.apply_defaults()
        arguments = bound.arguments
        if self.skip_first:
            arguments = dict(arguments)
            arguments.pop(self.params[0], None)
        return arguments

    def validate(self, value: Any) -> Any:
        adapter = self.adapter
        if adapter is None:
            return value
        if isinstance(value, str | bytes) and adapter.core_schema.get("type") != "str":
            return adapter.validate_json(value)
        return adapter.validate_python(value)
