"""The spill journal: where records go while the store cannot take them.

Each process that records into a store has at most one journal file for it, in
``spill_dir(url)`` (``STEPTRACE_SPILL_DIR``, else the user's state directory, one
folder per store). A journal is append-only: a frame per batch (magic, length, CRC
and the batch as JSON), so a process killed in the middle of an append leaves a torn
last frame that readers detect and ignore. The owning process holds an exclusive
``flock`` on its journal for as long as it lives; the kernel drops it when the process
dies, so any process that can take the lock knows the journal is an orphan and may
write it to the store. Store writes are idempotent, so a frame written twice (a crash
between the store's commit and the journal's truncation) is stored once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from steptrace.record import LLMUsage, RunState, SpanRecord
from steptrace.store import private
from steptrace.store.columns import ScoreLine
from steptrace.store.owner import Owner

_MAGIC = b"STJ1"
_HEADER = struct.Struct("<4sII")  # magic, payload length, CRC-32 of the payload
SUFFIX = ".journal"

_NOT_STORED = frozenset({"raw", "otel", "otel_error", "llm", "logs", "scores"})
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunState) if f.name not in _NOT_STORED)
_SPAN_FIELDS = tuple(f.name for f in dataclasses.fields(SpanRecord) if f.name not in _NOT_STORED)
_LLM_FIELDS = tuple(f.name for f in dataclasses.fields(LLMUsage))
_SCORE_FIELDS = tuple(f.name for f in dataclasses.fields(ScoreLine))
_JSON_FIELDS = frozenset(
    {"input", "output", "error", "tags", "attributes", "params", "tool_calls", "code_version"}
)


def spill_dir(url: str, root: str | None = None) -> str:
    """The folder of the journals for the store at ``url``."""
    if root is None:
        root = os.environ.get("STEPTRACE_SPILL_DIR") or os.path.join(
            os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"),
            "steptrace",
            "spill",
        )
    from steptrace.store.schema import scheme

    key = url if scheme(url) != "sqlite" else os.path.abspath(_sqlite_path(url))
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return os.path.join(root, digest)


def _sqlite_path(url: str) -> str:
    from steptrace.store.sqlite import path_from_url

    return path_from_url(url)


# --- records as frames ------------------------------------------------------------------


def _value(data: bytes | None) -> Any:
    # Stored values are JSON already: embed them as they are.
    return None if data is None else orjson.Fragment(data)


def _fields(record: Any, names: Sequence[str]) -> list[Any]:
    return [_value(getattr(record, n)) if n in _JSON_FIELDS else getattr(record, n) for n in names]


def encode_batch(
    runs: Sequence[RunState], spans: Sequence[SpanRecord], *, copy: bool = False
) -> bytes:
    """One frame's payload: the batch's records, values embedded as JSON. ``copy``
    marks records also on their way to the store by another path (not counted again
    when replayed)."""
    doc: dict[str, Any] = {
        "copy": copy,
        "runs": [[_fields(r, _RUN_FIELDS), r.logs] for r in runs],
        "spans": [
            [
                _fields(s, _SPAN_FIELDS),
                s.logs,
                None if s.llm is None else _fields(s.llm, _LLM_FIELDS),
                None if not s.scores else [_fields(line, _SCORE_FIELDS) for line in s.scores],
            ]
            for s in spans
        ],
    }
    return orjson.dumps(doc)


def _restore(values: list[Any], names: Sequence[str]) -> dict[str, Any]:
    out = {}
    if len(values) > len(names):
        raise ValueError(f"a frame has {len(values)} fields, {len(names)} are known")
    # A frame written by an earlier version has fewer fields: the rest take defaults.
    for name, value in zip(names, values, strict=False):
        if name in _JSON_FIELDS and value is not None:
            value = orjson.dumps(value)
        out[name] = value
    return out


def _logs(entries: list[Any] | None) -> list[tuple[int, str, str, str, str | None]] | None:
    return None if entries is None else [(e[0], e[1], e[2], e[3], e[4]) for e in entries]


def decode_batch(payload: bytes) -> tuple[list[RunState], list[SpanRecord], bool]:
    """``(runs, spans, copy)`` of a frame."""
    doc = orjson.loads(payload)
    runs = []
    for fields, logs in doc["runs"]:
        run = RunState(**_restore(fields, _RUN_FIELDS))
        run.logs = _logs(logs)
        runs.append(run)
    spans = []
    # A frame written by an earlier version has no scores.
    for fields, logs, llm, *scores in doc["spans"]:
        span = SpanRecord(**_restore(fields, _SPAN_FIELDS))
        span.logs = _logs(logs)
        if llm is not None:
            span.llm = LLMUsage(**_restore(llm, _LLM_FIELDS))
        if scores and scores[0]:
            span.scores = [ScoreLine(**_restore(line, _SCORE_FIELDS)) for line in scores[0]]
        spans.append(span)
    return runs, spans, bool(doc.get("copy"))


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_frames(fd: int, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset after the frame, payload)`` for each whole frame from ``offset``; stops
    at the end or at a torn or damaged frame."""
    size = os.fstat(fd).st_size
    while offset + _HEADER.size <= size:
        header = os.pread(fd, _HEADER.size, offset)
        magic, length, crc = _HEADER.unpack(header)
        if magic != _MAGIC or offset + _HEADER.size + length > size:
            return
        payload = os.pread(fd, length, offset + _HEADER.size)
        if len(payload) != length or zlib.crc32(payload) != crc:
            return
        offset += _HEADER.size + length
        yield offset, payload


Frame = tuple[int, list[RunState | SpanRecord], bool]
"""A decoded frame: the offset after it, its records, and whether they are a copy."""


def frame_groups(
    frames: Iterator[tuple[int, bytes]], max_records: int, max_bytes: int
) -> Iterator[list[Frame]]:
    """Consecutive decoded frames, grouped up to about ``max_records`` records and
    ``max_bytes`` of payload (what one replay transaction writes)."""
    group: list[Frame] = []
    records = size = 0
    for offset, payload in frames:
        runs, spans, copy = decode_batch(payload)
        group.append((offset, [*runs, *spans], copy))
        records += len(runs) + len(spans)
        size += len(payload)
        if records >= max_records or size >= max_bytes:
            yield group
            group, records, size = [], 0, 0
    if group:
        yield group


# --- the files --------------------------------------------------------------------------


class Journal:
    """This process's journal for one store, created (and locked) at the first spill."""

    def __init__(self, directory: str, owner: Owner) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"{owner.host}-{owner.pid}-{owner.start}{SUFFIX}")
        self.fd: int | None = None
        self.end = 0
        """Bytes written (the offset of the next frame)."""
        self.replayed_to = 0
        """Frames before this offset are in the store."""

    @property
    def pending_bytes(self) -> int:
        return self.end - self.replayed_to

    def append(self, payload: bytes) -> None:
        """Append one frame (raises ``OSError``: a full disk, a folder that cannot be
        made). A failed append leaves no partial frame behind."""
        fd = self.fd
        if fd is None:
            fd = self._open()
        data = frame(payload)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
        except OSError:
            os.ftruncate(fd, self.end)  # no torn frame in the middle of the journal
            raise
        self.end += len(data)

    def _open(self) -> int:
        private.make_dirs(self.directory)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, private.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        # A journal this pid left after a crash (pid reuse is ruled out by the start
        # time in the name) is kept: its frames are replayed with the new ones.
        self.end = os.fstat(fd).st_size
        self.replayed_to = 0
        self.fd = fd
        return fd

    def unreplayed(self) -> Iterator[tuple[int, bytes]]:
        if self.fd is None:
            return iter(())
        return read_frames(self.fd, self.replayed_to)

    def reset(self) -> None:
        """Everything was replayed: empty the file (kept, with its lock)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
        self.end = self.replayed_to = 0

    def close(self) -> None:
        """Close; an empty journal is removed, one with frames is left for replay."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if self.pending_bytes == 0:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _journal_paths(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, name) for name in names if name.endswith(SUFFIX)]


def orphans(directory: str) -> Iterator[tuple[str, int]]:
    """``(path, fd)`` of each journal in ``directory`` whose process is gone, locked by
    this process for replay (the caller closes ``fd`` and removes the file when done)."""
    for path in _journal_paths(directory):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its process is alive (or another one is replaying it)
            os.close(fd)
            continue
        yield path, fd


def has_journals(directory: str) -> bool:
    return bool(_journal_paths(directory))


def pending(directory: str) -> list[dict[str, Any]]:
    """The journals in ``directory``: path, bytes and whether a live process holds it."""
    out: list[dict[str, Any]] = []
    for path in _journal_paths(directory):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                live = False
            except OSError:
                live = True
        finally:
            os.close(fd)
        out.append({"path": path, "bytes": size, "live": live})
    return out
