"""The span record and the value pipeline that turns user values into stored JSON.

A value goes through one pipeline, once: ``to_json`` (orjson with a ``default``
for the types Python programs pass around) and then the processors built from
the configuration (redaction, the size cap). Every processor is a plain
``bytes -> bytes`` callable; they run in one loop. Bad values never raise:
they become a marked placeholder ``{"__steptrace__": "<what>", ...}`` and are
counted in ``counters``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import pathlib
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import pydantic
from pydantic import BaseModel

from steptrace.config import Config, get_config, on_change
from steptrace.redaction import Redactor

if TYPE_CHECKING:
    from steptrace.store.columns import ScoreLine

MARKER = "__steptrace__"
Processor = Callable[[bytes], bytes]

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
_REPR_PREFIX = 200


class Counters:
    """Process-wide counts of values that could not be stored as they were."""

    __slots__ = ("_lock", "redacted", "sanitized", "truncated", "unserializable")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.unserializable = 0
        self.truncated = 0
        self.redacted = 0
        self.sanitized = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        return {
            "unserializable": self.unserializable,
            "truncated": self.truncated,
            "redacted": self.redacted,
            "sanitized": self.sanitized,
        }


counters = Counters()


def stored_form(text: str) -> str:
    """``text`` as the store holds it (``storable`` without counting): what a query
    compares stored text with, so that a name or value recorded with a NUL or a lone
    surrogate is found by the same text."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def storable(text: str) -> str:
    """``text`` as every engine can store it: each lone surrogate (text decoded with
    ``surrogateescape``: file names, argv, subprocess output) and each NUL becomes one
    U+FFFD; a high and low surrogate side by side are joined into their character.
    Counted in ``counters.sanitized``."""
    stored = stored_form(text)
    if stored != text:
        counters.add("sanitized")
    return stored


def storable_or_none(text: str | None) -> str | None:
    if text is None or (text.isascii() and "\x00" not in text):
        return text
    return storable(text)


NAME_MAX_BYTES = 1000
"""Names (workflow, step, tool, model…) are indexed: PostgreSQL refuses an index entry
over 2,704 bytes, so a longer name is cut (at a character boundary, with "…")."""


def storable_name(text: str) -> str:
    stored = stored_name(text)
    if stored != text:
        counters.add("sanitized")
    return stored


def stored_name(text: str) -> str:
    """A name as the store holds it (``storable_name`` without counting)."""
    text = stored_form(text)
    if len(text) * 4 <= NAME_MAX_BYTES or len(text.encode()) <= NAME_MAX_BYTES:
        return text
    cut = text.encode()[: NAME_MAX_BYTES - 3].decode("utf-8", "ignore")
    return cut + "…"


def storable_key(key: str) -> str:
    """A step key (``name#occurrence``) as stored: the name part cut as ``storable_name``
    cuts the name, the ``#occurrence`` kept (the ``steps`` view reads it)."""
    key = storable_or_none(key) or ""
    prefix, sep, occurrence = key.rpartition("#")
    if sep and occurrence.isdigit() and len(key.encode()) > NAME_MAX_BYTES:
        return storable_name(prefix) + sep + occurrence
    return storable_name(key)


def _storable_logs(logs: list[tuple[int, str, str, str, str | None]]) -> None:
    for i, (ts, level, logger, message, exc_text) in enumerate(logs):
        fixed = (
            storable_or_none(level),
            storable_or_none(logger),
            storable_or_none(message),
            storable_or_none(exc_text),
        )
        if fixed != (level, logger, message, exc_text):
            logs[i] = (ts, *fixed)  # type: ignore[assignment]


def make_storable(rec: RunState | SpanRecord) -> None:
    """Make every text field of a record storable, in place (the write path's boundary:
    no text from user code or a provider can make a batch fail)."""
    if isinstance(rec, SpanRecord):
        rec.name = storable_name(rec.name)
        rec.key = None if rec.key is None else storable_key(rec.key)
        rec.kind = storable_name(rec.kind) or "other"
        llm = rec.llm
        if llm is not None:
            llm.provider = storable_name(llm.provider)
            llm.model = storable_name(llm.model)
            llm.finish_reason = (
                None if llm.finish_reason is None else storable_name(llm.finish_reason)
            )
            llm.response_model = (
                None if llm.response_model is None else storable_name(llm.response_model)
            )
    else:
        rec.workflow = storable_name(rec.workflow)
    if rec.logs:
        _storable_logs(rec.logs)


def _type_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the workflow
        return f"<repr failed: {type(exc).__name__}>"


def placeholder(obj: object, what: str = "unserializable") -> dict[str, Any]:
    """The marked stand-in stored for a value that cannot be stored as JSON."""
    counters.add("unserializable")
    text = _safe_repr(obj)
    redactor = pipeline().redactor
    if redactor is not None:
        try:
            text = redactor.redact_repr(obj, text)
        except Exception:  # an attribute that raises: keep only the type
            text = f"<{_type_name(obj)}>"
    return {MARKER: what, "type": _type_name(obj), "repr": text[:_REPR_PREFIX], "size": len(text)}


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        try:
            return orjson.Fragment(obj.model_dump_json())
        except Exception:
            return obj.model_dump(mode="python")
    if isinstance(obj, bytes | bytearray | memoryview):
        return {MARKER: "bytes", "size": len(obj)}
    if isinstance(obj, set | frozenset):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, tuple | list):  # subclasses orjson leaves to us (namedtuple)
        return list(obj)
    if isinstance(obj, Mapping):  # dict subclasses orjson refuses, MappingProxyType, UserDict…
        return dict(obj.items())
    if isinstance(obj, decimal.Decimal | pathlib.PurePath):
        return str(obj)
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, BaseException):
        return {MARKER: "exception", "type": _type_name(obj), "message": str(obj)}
    item = getattr(obj, "item", None)  # numpy scalars and 0-d arrays
    if callable(item) and type(obj).__module__ == "numpy":
        try:
            return item()
        except Exception:
            pass
    tolist = getattr(obj, "tolist", None)
    if callable(tolist) and type(obj).__module__ == "numpy":
        try:
            return tolist()
        except Exception:
            pass
    return placeholder(obj)


def _jsonable(obj: Any, seen: set[int], depth: int) -> Any:
    """Slow, careful conversion used only when orjson refused the value (cycles, huge
    ints, a ``default`` that raised): replaces what cannot be stored, keeps the rest."""
    if isinstance(obj, str):
        return storable(obj)
    if obj is None or isinstance(obj, bool | float):
        return obj
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    if depth > 200:
        return placeholder(obj, "too_deep")
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value, seen, depth + 1)
    if isinstance(obj, dt.datetime | dt.date | dt.time | uuid.UUID):
        return orjson.loads(orjson.dumps(obj, option=_OPTS))
    ident = id(obj)
    if ident in seen:
        return placeholder(obj, "cycle")
    seen.add(ident)
    try:
        if isinstance(obj, Mapping):
            return {
                storable(k if isinstance(k, str) else _safe_repr(k)): _jsonable(v, seen, depth + 1)
                for k, v in obj.items()
            }
        if isinstance(obj, list | tuple | set | frozenset):
            return [_jsonable(v, seen, depth + 1) for v in obj]
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {
                f.name: _jsonable(getattr(obj, f.name, None), seen, depth + 1)
                for f in dataclasses.fields(obj)
            }
        if isinstance(obj, BaseModel):
            try:
                return _jsonable(obj.model_dump(mode="python"), seen, depth + 1)
            except Exception:
                return placeholder(obj)
        try:
            converted = _default(obj)
        except Exception:
            return placeholder(obj)
        if isinstance(converted, orjson.Fragment):
            return orjson.loads(orjson.dumps(converted))
        if converted is obj:
            return placeholder(obj)
        return _jsonable(converted, seen, depth + 1)
    finally:
        seen.discard(ident)


def to_json(value: Any) -> bytes:
    """Serialise any Python value to JSON bytes. Never raises."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTS)
    except Exception:
        pass
    try:
        return orjson.dumps(_jsonable(value, set(), 0), option=_OPTS)
    except Exception:  # pragma: no cover - _jsonable only returns JSON types
        return orjson.dumps(placeholder(value))


# --- redaction (steptrace.redaction) ------------------------------------------------


def _redactor(config: Config) -> Redactor:
    return Redactor(
        text=config.redaction_text,
        secret_keys=config.secret_keys,
        secret_patterns=config.secret_patterns,
    )


def redact_json(redactor: Redactor, data: bytes) -> bytes:
    """A JSON value with its secrets replaced (counted)."""
    redacted, changed = redactor.redact_json(data)
    if changed:
        counters.add("redacted")
    return redacted


def _redact_now(redactor: Redactor) -> Processor:
    """Redact one value now (values recorded off the hot path: LLM calls, errors)."""

    def redact(data: bytes) -> bytes:
        return redact_json(redactor, data) if redactor.suspect(data) else data

    return redact


def size_cap(limit: int) -> Processor:
    """A processor that replaces a value larger than ``limit`` bytes with a marked,
    truncated preview of its JSON text."""

    def cap(data: bytes) -> bytes:
        if len(data) <= limit:
            return data
        counters.add("truncated")
        keep = max(limit - 128, 16)
        while True:  # escaping can make the preview longer than the bytes it came from
            preview = data[:keep].decode("utf-8", errors="ignore")
            marker = orjson.dumps({MARKER: "truncated", "size": len(data), "preview": preview})
            if len(marker) <= limit or keep <= 16:
                return marker
            keep = max(keep - (len(marker) - limit) - 8, keep // 2, 16)

    return cap


class _Pipeline:
    __slots__ = ("cap", "export_limit", "processors", "redactor")

    def __init__(self, config: Config) -> None:
        self.redactor: Redactor | None = _redactor(config) if config.redact else None
        self.processors: list[Processor] = []
        if self.redactor is not None:
            self.processors.append(_redact_now(self.redactor))
        self.cap = size_cap(config.max_value_bytes)
        self.processors.append(self.cap)
        self.export_limit = config.export_value_bytes


_pipeline: _Pipeline | None = None


def pipeline() -> _Pipeline:
    global _pipeline
    current = _pipeline
    if current is None:
        current = _pipeline = _Pipeline(get_config())
    return current


def reset_processors(_reset: bool = True) -> None:
    """Forget the pipeline: the next value builds it from the configuration in force."""
    global _pipeline
    _pipeline = None


on_change(reset_processors)


def encode(value: Any) -> bytes:
    """The stored JSON of ``value``: serialised, redacted, capped. Never raises."""
    data = without_nul(to_json(value))
    for process in pipeline().processors:
        data = process(data)
    return data


def redact_values(values: list[bytes]) -> list[bytes]:
    """Redact serialised values in one batch (one scan decides which need it)."""
    redactor = pipeline().redactor
    if redactor is None:
        return [without_nul(v) for v in values]
    return [
        redact_json(redactor, without_nul(v)) if suspect else without_nul(v)
        for v, suspect in zip(values, redactor.suspects(values), strict=True)
    ]


def cap_value(data: bytes) -> bytes:
    return pipeline().cap(data)


def without_nul(data: bytes) -> bytes:
    """A JSON value without NUL in its strings (U+FFFD instead, counted): PostgreSQL's
    JSONB cannot hold one, so no engine stores one and both read back alike."""
    if b"\\u0000" not in data:
        return data
    counters.add("sanitized")
    return orjson.dumps(_replace_nul(orjson.loads(data)), option=_OPTS)


def _replace_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_replace_nul(v) for v in value]
    if isinstance(value, dict):
        return {_replace_nul(k): _replace_nul(v) for k, v in value.items()}
    return value


def stored_value(value: Any) -> Any:
    """A JSON value as the store holds it: its strings and keys in ``stored_form``."""
    if isinstance(value, str):
        return stored_form(value)
    if isinstance(value, list):
        return [stored_value(v) for v in value]
    if isinstance(value, dict):
        return {stored_form(k): stored_value(v) for k, v in value.items()}
    return value


def redact_text(text: str) -> str:
    redactor = pipeline().redactor
    return text if redactor is None else redactor.redact_text(text)


def for_export(data: bytes | None) -> str:
    """A JSON attribute for OpenTelemetry, capped at the configured export size."""
    if data is None:
        return "null"
    limit = pipeline().export_limit
    if len(data) <= limit:
        return data.decode()
    return data[:limit].decode("utf-8", errors="ignore") + f"…[truncated, {len(data)} bytes]"


def input_hash(data: bytes) -> str:
    """The hash of a step's input, taken of its *redacted* JSON (before the size cap):
    it identifies an input without letting anyone test guesses of a redacted secret."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# --- the record --------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class SpanRecord:
    """One finished span (step attempt, LLM call, tool call or other), ready to store.

    Values are already encoded JSON bytes; timestamps are ns since the epoch. The
    writer serialises whole batches of these with orjson in one call.
    """

    run_id: str
    span_id: str
    parent_span_id: str | None
    kind: str
    name: str
    start_ns: int
    attempt: int | None = None
    key: str | None = None
    end_ns: int = 0
    status: str = "running"
    input: bytes | None = None
    input_hash: str | None = None
    output: bytes | None = None
    error: bytes | None = None
    attributes: bytes | None = None
    logs: list[tuple[int, str, str, str, str | None]] | None = None
    llm: LLMUsage | None = None
    raw: bool = False
    """``input``/``output`` are only serialised: the writer still redacts and caps them."""
    otel: Any = None
    """The OTel span, ended by the writer once the values are redacted (None: ended)."""
    otel_error: tuple[str, str] | None = None
    """(error type, redacted message) for the OTel span status."""
    scores: list[ScoreLine] | None = None
    """What the step's checks made of this attempt's output: ``scores`` rows written in
    the same batch as the span, and evaluation events on its OTel span."""
    session_id: str | None = None
    """The run's session, for the OTel span (``gen_ai.conversation.id``); not stored with
    the span: the run has it."""


@dataclasses.dataclass(slots=True)
class LLMUsage:
    """The LLM-specific columns of an LLM span (messages and response are its input and
    output)."""

    provider: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    params: bytes | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    response_model: str | None = None
    time_to_first_chunk_ms: float | None = None
    tool_calls: bytes | None = None
    incomplete: bool = False


@dataclasses.dataclass(slots=True)
class RunState:
    """A run as written to the ``runs`` table (once when it starts, again when it ends)."""

    run_id: str
    workflow: str
    trace_id: str
    span_id: str
    start_ns: int
    parent_trace_id: str | None = None
    parent_span_id: str | None = None
    status: str = "running"
    end_ns: int | None = None
    input: bytes | None = None
    output: bytes | None = None
    error: bytes | None = None
    tags: bytes | None = None
    owner: str | None = None
    """The process recording the run (``steptrace.store.owner``)."""
    logs: list[tuple[int, str, str, str, str | None]] | None = None
    """Log records written in the run outside any step (kept with the root span)."""
    raw: bool = False
    otel: Any = None
    otel_error: tuple[str, str] | None = None
    entry_point: str | None = None
    """``module:qualname`` of the workflow function (what resume and replay import)."""
    code_version: bytes | None = None
    """JSON: steptrace's version, the workflow's package version, its git commit."""
    forked_from: str | None = None
    forked_at: str | None = None
    replay_of: str | None = None
    resume_count: int = 0
    durability: str | None = None
    session_id: str | None = None
    """The conversation or user journey the run belongs to (``st.run(session_id=…)``)."""


def finish_record_values(records: Sequence[RunState | SpanRecord]) -> None:
    """Redact and cap the values the hot path only serialised (one scan for the whole
    batch), and make every text field storable: what must happen before a record is
    stored or spilled."""
    targets: list[tuple[RunState | SpanRecord, str, bytes]] = []
    for rec in records:
        if rec.raw:
            if rec.input is not None:
                targets.append((rec, "input", rec.input))
            if rec.output is not None:
                targets.append((rec, "output", rec.output))
    if targets:
        done = redact_values([value for _, _, value in targets])
        for (rec, name, _), value in zip(targets, done, strict=True):
            if name == "input" and isinstance(rec, SpanRecord) and rec.kind in ("step", "tool"):
                rec.input_hash = input_hash(value)  # of the redacted input
            setattr(rec, name, cap_value(value))
    for rec in records:
        make_storable(rec)


def error_json(exc: BaseException, *, validation: bool = False) -> bytes:
    """The stored form of an exception: type, message, traceback (redacted)."""
    import traceback

    message = error_message(exc)
    if isinstance(exc, pydantic.ValidationError):
        # pydantic's own text quotes the input, secrets and all: rebuild it without.
        tb = "".join(traceback.format_tb(exc.__traceback__))
        tb = f"Traceback (most recent call last):\n{tb}{type(exc).__name__}: {message}\n"
    else:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    error: dict[str, Any] = {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": redact_text(message),
        "traceback": redact_text(tb),
    }
    status_code = getattr(exc, "status_code", None)
    if isinstance(status_code, int):  # provider SDK errors (HTTP status)
        error["status_code"] = status_code
    if validation:
        error["validation"] = True
        errors = getattr(exc, "errors", None)
        if callable(errors):
            with contextlib.suppress(Exception):
                error["errors"] = errors(include_url=False, include_context=False)
                if isinstance(exc, pydantic.ValidationError):
                    # the input of each error is redacted like any value
                    error["errors"] = orjson.loads(encode(error["errors"]))
    return encode(error)


def error_message(exc: BaseException) -> str:
    """``str(exc)``; for a pydantic ValidationError, its errors without the input values."""
    if isinstance(exc, pydantic.ValidationError):
        lines = [f"{exc.error_count()} validation error(s) for {exc.title}"]
        for e in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = ".".join(str(p) for p in e["loc"]) or "(value)"
            lines.append(f"  {loc}: {e['msg']} [type={e['type']}]")
        return "\n".join(lines)
    return _safe_str(exc)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return _safe_repr(exc)
