"""The process's write path: records are queued, committed in groups, spilled when the
store cannot take them, and replayed when it can again.

Recording a step only appends to a deque. ``Sink.commit()`` makes everything queued so
far durable: the caller takes all queued records (its own and other threads': group
commit), redacts them, writes them to the store in one transaction and ends their
OpenTelemetry spans. A workflow's return commits its run (the default durability), a
step's return commits the step (``durable="step"``), and a background thread commits
the rest every 100 ms (``durable="off"``).

Nothing waits on the store for long. A store call is bounded (a watchdog breaks off a
call that does not return within ``STORE_CALL_S``); when the store is locked, down,
hung, full or gone, the batch is appended to this process's spill journal instead
(``steptrace.store.journal``) and the sink records into the journal until the
background thread has written it all to the store. A batch the store refuses while it
is otherwise healthy (probed with a small write) is split until only the offending
record is left, which is stored as a placeholder (quarantined). Every record's fate is
counted (``steptrace.store.health``); nothing is raised into user code.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from steptrace.config import ConfigError, get_config, on_change
from steptrace.masking import mask_url, url_secrets
from steptrace.otel import span_end
from steptrace.record import MARKER, RunState, SpanRecord, counters, finish_record_values
from steptrace.store import journal as journal_files
from steptrace.store import liveness, owner
from steptrace.store.health import Health, gist
from steptrace.store.owner import HEARTBEAT_S

log = logging.getLogger("steptrace")

T = TypeVar("T")
Record = RunState | SpanRecord

COMMIT_WAIT_S = 1.0
"""The longest a workflow call waits for its records to be durable."""
STORE_CALL_S = 0.6
"""A store call not back by then is broken off and its batch spilled."""
QUIET_SPILL_S = 5.0
"""A store that is only busy (another process holds SQLite's write lock) is spilled to
without a warning unless it stays so for this long."""
STORE_LOCK_WAIT_S = 0.5
"""How long a committer waits for another's store call before it spills instead."""
BATCH_MAX = 5000
BATCH_MAX_BYTES = 8 * 1024 * 1024
QUEUE_MAX_BYTES = 64 * 1024 * 1024
"""Queued bytes at which recording commits on the caller's thread (memory is bounded)."""
_HIGH_WATER = 50_000
_WAKE_BACKLOG = 2000
_INTERVAL_S = 0.1
_RETRY_S = (0.5, 1.0, 2.0, 5.0)
_ORPHANS_EVERY_S = 60.0
_END_BACKLOG = 64
_EXIT_FLUSH_TIMEOUT_S = 30.0
_RECORD_OVERHEAD = 256


def record_bytes(rec: Record) -> int:
    """About how much memory a queued record holds."""
    size = _RECORD_OVERHEAD + len(rec.input or b"") + len(rec.output or b"")
    if rec.logs:
        size += 128 * len(rec.logs)
    return size


class Watchdog:
    """Breaks off a store call that has not returned in time (``cancel`` is the engine's:
    interrupt the SQLite statement, shut the PostgreSQL socket). One call at a time:
    store calls take turns under the sink's store lock."""

    def __init__(self) -> None:
        self._armed: tuple[float, Callable[[], None]] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def call(self, fn: Callable[[], T], cancel: Callable[[], None], seconds: float) -> T:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="steptrace-watchdog")
            self._thread.daemon = True
            self._thread.start()
        self._armed = (time.monotonic() + seconds, cancel)
        try:
            return fn()
        finally:
            self._armed = None

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            armed = self._armed
            if armed is not None and time.monotonic() > armed[0]:
                self._armed = None
                with contextlib.suppress(Exception):
                    armed[1]()

    def stop(self) -> None:
        self._stop.set()


class _Done:
    """Set once, waited for with a timeout: a lock held until the batch is durable
    (cheaper to make than an ``Event``, and one is made per commit)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float) -> bool:
        if self._lock.acquire(timeout=max(timeout, 0.0)):
            self._lock.release()
            return True
        return False


class StoreDown(Exception):
    """The store failed a write and a probe: a fault of the store, not of a record."""


class Sink:
    """The queue, the commit path, the spill journal and the background thread for one
    store."""

    def __init__(self, url: str, *, background: bool = True) -> None:
        self.url = url
        self.owner = owner.current()
        self.health = Health(url)
        self.journal = journal_files.Journal(journal_files.spill_dir(url), self.owner)
        self.queue: collections.deque[Record] = collections.deque()
        self.queued_bytes = 0
        self.active: dict[str, RunState] = {}
        """Runs of this process still in progress (by id)."""
        # Re-entrant: the SIGTERM handler runs on the main thread, maybe inside one of
        # these sections, and commits before the process ends.
        self._count_lock = threading.RLock()
        self._pop_lock = threading.RLock()
        self._store_lock = threading.RLock()
        self._journal_lock = threading.RLock()
        self._ending: collections.deque[tuple[list[Record], int]] = collections.deque()
        """Committed batches whose OTel spans are not ended yet."""
        self._ending_bytes = 0
        self._inflight: dict[_Done, tuple[int, list[Record]]] = {}
        """Batches being committed: the thread committing each, and its records."""
        self._wake = threading.Event()
        self._watchdog = Watchdog()
        self._closed = False
        self._retry = 0
        self._next_recover = 0.0
        self._next_heartbeat = 0.0
        self._next_orphans = 0.0
        self._revive = False
        self._spill_since = 0.0
        self._last_store_error: BaseException | None = None
        self._async_pool: ThreadPoolExecutor | None = None
        self.backend: Any = None
        self.store_ok = False
        try:
            self._open_backend()
            self.store_ok = True
        except ConfigError:
            raise
        except Exception as exc:
            if not transient_open_error(url, exc):
                from steptrace.store.schema import open_error

                raise ConfigError(open_error(url, exc)) from exc
            self._enter_spill(
                "cannot open the store",
                exc,
                hint=" (if it is not just down or busy: check STEPTRACE_STORE or "
                "configure(store=...))",
            )
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="steptrace-writer", daemon=True)
            self._thread.start()

    # -- hot path -------------------------------------------------------------------
    def put(self, item: Record) -> None:
        """Queue a finished record (a step, a run's start or end row). Never blocks for
        long: over the memory bound, the caller commits what is queued itself."""
        size = record_bytes(item)
        with self._count_lock:
            self.health.counts["recorded"] += 1
            self.queued_bytes += size
        queue = self.queue
        queue.append(item)
        if self._closed:
            self.commit()  # after exit began: write (or spill) it now, never drop it
            self.end_spans()
            return
        if len(queue) > _WAKE_BACKLOG or self.queued_bytes > QUEUE_MAX_BYTES // 4:
            self._wake.set()
            if len(queue) > _HIGH_WATER or self.queued_bytes > QUEUE_MAX_BYTES:
                self.commit()

    def begin_run(self, state: RunState) -> None:
        state.owner = self.owner.id
        self.active[state.run_id] = state
        self.put(_started(state))

    def end_run(self, state: RunState) -> None:
        self.active.pop(state.run_id, None)
        self.put(state)

    # -- commit ---------------------------------------------------------------------
    def commit(self, timeout_s: float = COMMIT_WAIT_S) -> bool:
        """Make every record queued before this call durable: in the store, else in the
        spill journal. Waits at most about ``timeout_s``; True when done in time.

        Batches become durable in the order they were taken from the queue: a batch
        waits for those taken before it (they may hold earlier records of the same
        runs) before it is written, so a run's end row is never stored ahead of its
        spans. A batch that is not durable in time is appended to the journal by the
        waiter itself."""
        deadline = time.monotonic() + timeout_s
        me = threading.get_ident()
        with self._pop_lock:
            items, size = self._take()
            # Not those of this very thread: a signal handler running on top of a commit.
            prior = [(event, batch) for event, (tid, batch) in self._inflight.items() if tid != me]
            done = _Done()
            if items:
                self._inflight[done] = (me, items)
        in_time = True
        try:
            if items:
                self._finish(items)
            for event, batch in prior:
                if not event.wait(max(0.0, deadline - time.monotonic())):
                    in_time = False
                    self._spill_late(batch)
            if items:
                self._commit_items(items, size, deadline)
        except Exception as exc:  # a bug must not lose the batch silently
            self.health.add(lost=len(items))
            self.health.fault("failed to write a batch", exc)
            log.debug("steptrace: commit failed", exc_info=True)
        finally:
            if items:
                with self._pop_lock:
                    self._inflight.pop(done, None)
                done.set()
        if not in_time:
            self.health.add(late_commits=1)
        return in_time

    def _spill_late(self, batch: list[Record]) -> None:
        """Another thread's batch, which holds records of ours, is not durable in time:
        append it to the journal from here (if it reaches the store as well, the store
        keeps one copy: writes are idempotent)."""
        self._finish(batch)  # idempotent: redacts what is still raw
        self._spill(batch, copy=True)

    async def acommit(self) -> bool:
        """``commit`` for a coroutine: the event loop is not blocked while it waits."""
        if not self.queue and not self._inflight:
            return True
        if self._async_pool is None:
            self._async_pool = ThreadPoolExecutor(1, thread_name_prefix="steptrace-commit")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._async_pool, self.commit)

    def _take(self) -> tuple[list[Record], int]:
        """Everything queued, and about how many bytes it holds."""
        queue = self.queue
        items = []
        size = 0
        with contextlib.suppress(IndexError):
            for _ in range(len(queue)):
                item = queue.popleft()
                items.append(item)
                size += record_bytes(item)
        with self._count_lock:
            self.queued_bytes -= size
        return items, size

    def _finish(self, items: list[Record]) -> None:
        try:
            finish_record_values(items)
        except Exception as exc:  # redaction failed: store nothing unredacted
            self.health.fault("failed to redact a batch", exc)
            for rec in items:
                _blank_values(rec)

    def _commit_items(self, items: list[Record], size: int, deadline: float) -> None:
        """Write finished records (``size``: about their bytes) to the store or the
        journal, then have their OTel spans ended."""
        for chunk in _chunks(items, size):
            self._store_or_spill(chunk, deadline)
        # The records are durable; their OTel spans are ended off the caller's path,
        # unless too many wait (memory): then by the caller.
        with self._count_lock:
            self._ending_bytes += size
        self._ending.append((items, size))
        if len(self._ending) > _END_BACKLOG or self._ending_bytes > QUEUE_MAX_BYTES // 4:
            self.end_spans()
        elif len(self._ending) > _END_BACKLOG // 4:
            self._wake.set()

    def end_spans(self) -> None:
        """End the OTel spans of the records committed so far (their value attributes
        set from the redacted values)."""
        ending = self._ending
        while ending:
            try:
                batch, size = ending.popleft()
            except IndexError:
                return
            with self._count_lock:
                self._ending_bytes -= size
            try:
                span_end.end_spans(batch)
            except Exception:  # the export path must not cost the records
                log.warning("steptrace: failed to end OpenTelemetry spans", exc_info=True)

    def _store_or_spill(self, records: list[Record], deadline: float) -> None:
        if self.store_ok and self._backend_ready() and time.monotonic() < deadline:
            wait = max(0.0, min(STORE_LOCK_WAIT_S, deadline - time.monotonic()))
            if self._store_lock.acquire(timeout=wait):
                try:
                    # A transaction open while this thread holds the store lock is its
                    # own, interrupted by a signal handler now running: leave it be.
                    if self.store_ok and not self.backend.in_transaction():
                        self._write_parts(records, deadline, spill=True)
                        return
                finally:
                    self._store_lock.release()
        self._spill(records)

    def _backend_ready(self) -> bool:
        backend = self.backend
        return backend is not None and getattr(backend, "connected", True)

    # -- store calls (under the store lock) ------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        return self._watchdog.call(fn, self.backend.cancel, STORE_CALL_S)

    def _write(self, records: Sequence[Record]) -> BaseException | None:
        runs = [r for r in records if isinstance(r, RunState)]
        spans = [r for r in records if isinstance(r, SpanRecord)]
        try:
            self._call(lambda: self.backend.write(runs, spans))
        except Exception as exc:
            self._last_store_error = exc
            return exc
        self._last_store_error = None
        return None

    def _probe(self) -> bool:
        """Whether the store takes a small write (this process's heartbeat): tells a
        store that is down from a batch it refuses."""
        statements = liveness.register(self.owner, time.time_ns())
        try:
            self._call(lambda: self.backend.execute(statements))
        except Exception as exc:
            self._last_store_error = exc
            return False
        return True

    def _write_parts(
        self,
        records: list[Record],
        deadline: float,
        *,
        spill: bool,
        replay: bool = False,
        count: bool = True,
    ) -> bool:
        """Write ``records``; on a refusal, split them and quarantine the one the store
        refuses. Returns False when the store failed (the rest spilled, or with
        ``spill=False`` left to the caller)."""
        error = self._write(records)
        if error is None:
            if count:
                self._count_written(len(records), replay)
            return True
        # Only a lock held elsewhere is taken for a store fault without asking: any
        # other error is put to a probe (a small write), which tells a store that is
        # down, full or hung from a batch it refuses (a value out of an engine's range).
        if _is_busy(error) or _is_full(error) or isinstance(error, OSError) or not self._probe():
            self._enter_spill("cannot write to the store", error)
            if spill:
                self._spill(records)
            return False
        if len(records) == 1:
            if self._quarantine(records[0], error, replay):
                return True
            # Not even its stand-in could be written: the store is at fault after all.
            self._enter_spill("cannot write to the store", error)
            if spill:
                self._spill(records)
            return False
        mid = len(records) // 2
        for part in (records[:mid], records[mid:]):
            if spill and time.monotonic() > deadline:
                self._spill(part)
            elif (
                not self._write_parts(part, deadline, spill=spill, replay=replay, count=count)
                and not spill
            ):
                return False
        return True

    def _count_written(self, n: int, replay: bool) -> None:
        if replay:
            self.health.add(written=n, replayed=n, pending=-n)
        else:
            self.health.add(written=n)

    def _quarantine(self, rec: Record, error: BaseException, replay: bool) -> bool:
        """Store a stand-in for a record the store refused; False when even that fails."""
        if self._write([quarantined(rec, error)]) is not None:
            return False
        self.health.add(quarantined=1, pending=-1 if replay else 0)
        self.health.fault(f"the store refused a record of run {rec.run_id}", error)
        return True

    # -- the spill journal ---------------------------------------------------------------
    def _spill(self, records: Sequence[Record], *, copy: bool = False) -> None:
        """Append records to the journal. A ``copy`` (of a batch also on its way to the
        store) is not counted: its records are counted on that other path."""
        if not records:
            return
        runs = [r for r in records if isinstance(r, RunState)]
        spans = [r for r in records if isinstance(r, SpanRecord)]
        try:
            payload = journal_files.encode_batch(runs, spans, copy=copy)
            with self._journal_lock:
                self.journal.append(payload)
        except Exception as exc:
            if not copy:
                self.health.add(lost=len(records))
            self.health.fault(f"cannot write the spill journal {self.journal.path}", exc)
            return
        if not copy:
            self.health.add(spilled=len(records), pending=len(records))

    def _enter_spill(self, what: str, exc: BaseException, hint: str = "") -> None:
        if self.store_ok or not self.health.spilling:
            self._spill_since = time.monotonic()
            self._retry = 0
            self._next_recover = time.monotonic() + _RETRY_S[0]
        self.store_ok = False
        self.health.spilling = True
        self.health.fault(
            f"{what} {self.health.store}{hint}; recording goes on into {self.journal.path}, "
            "written to the store when it is back",
            exc,
            # Contention for SQLite's lock is normal with many writers: say so only
            # when it lasts.
            quiet=_is_busy(exc),
        )

    # -- the background thread -------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(_INTERVAL_S)
            self._wake.clear()
            if self._closed:
                break
            try:
                self._tick()
            except Exception:  # the thread must outlive any bug
                log.warning("steptrace: the store writer hit an error", exc_info=True)

    def _tick(self) -> None:
        if self.queue:
            self.commit()
        self.end_spans()
        if self.store_ok and self._backend_ready() and self._store_lock.acquire(timeout=0.1):
            try:
                with contextlib.suppress(Exception):
                    self._call(self.backend.checkpoint)
            finally:
                self._store_lock.release()
        now = time.monotonic()
        if (not self.store_ok or self.journal.pending_bytes) and now >= self._next_recover:
            self._recover()
        if self.store_ok and now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_S
            self._heartbeat()
        if self.store_ok and now >= self._next_orphans:
            self._next_orphans = now + _ORPHANS_EVERY_S
            self._replay_orphans()
        self._report()

    def _open_backend(self) -> None:
        from steptrace.store.engines import open_writer

        backend = open_writer(self.url)
        try:
            backend.execute(liveness.register(self.owner, time.time_ns()))
        except BaseException:
            backend.close()
            raise
        self.backend = backend

    def _recover(self) -> None:
        """Reach the store again and write the journal to it, in order."""
        with self._store_lock:
            try:
                self._reconnect()
            except Exception as exc:
                self._last_store_error = exc
                self._retry_later(exc)
                return
            groups = journal_files.frame_groups(
                self.journal.unreplayed(), BATCH_MAX, BATCH_MAX_BYTES
            )
            for group in groups:
                if not self._replay_group(group):
                    self._retry_later(None)
                    return
            with self._journal_lock:
                if self.journal.pending_bytes == 0:
                    self.journal.reset()
                    if not self.store_ok and self.health.warned:
                        log.warning(
                            "steptrace: the store %s is back; %d records replayed from the "
                            "spill journal",
                            self.health.store,
                            self.health.counts["replayed"],
                        )
                    self.store_ok = True
                    self.health.spilling = False
                    self._retry = 0

    def _replay_group(self, group: list[journal_files.Frame]) -> bool:
        """Write consecutive journal frames to the store in one transaction (frame by
        frame, splitting as needed, when the store refuses them together). A copy's
        records were counted on their other path and are not counted again."""
        records = [rec for _, recs, _ in group for rec in recs]
        if self._write(records) is None:
            counted = sum(len(recs) for _, recs, copy in group if not copy)
            self._count_written(counted, replay=True)
            self.journal.replayed_to = group[-1][0]
            return True
        for offset, recs, copy in group:
            deadline = time.monotonic() + 60
            if not self._write_parts(recs, deadline, spill=False, replay=not copy, count=not copy):
                return False
            self.journal.replayed_to = offset
        return True

    def _reconnect(self) -> None:
        """Make the backend usable: open it (or again, for a SQLite file deleted or
        replaced), reconnect PostgreSQL, and probe it."""
        from steptrace.store.sqlite import StoreMoved

        if self.backend is None:
            self._open_backend()
        elif not self._backend_ready():
            self._call(self.backend.reconnect)
        if not self._probe():
            reconnect = getattr(self.backend, "reconnect", None)
            try:  # why did it fail? A moved SQLite file is reopened where it should be
                if reconnect is not None:  # a connection left unusable: open a new one
                    self._call(reconnect)
                self.backend.execute(liveness.heartbeat(self.owner, time.time_ns()))
            except StoreMoved:
                old, self.backend = self.backend, None
                with contextlib.suppress(Exception):
                    old.close()
                log.warning(
                    "steptrace: the store file %s was deleted or replaced; opening it again",
                    self.health.store,
                )
                self._open_backend()
            if not self._probe():
                raise StoreDown("the store does not take writes yet")
        if self._revive or self.health.spilling:
            self._revive = False
            active = list(self.active)
            if active:
                self._call(lambda: self.backend.execute(liveness.revive(self.owner, active)))

    def _retry_later(self, exc: BaseException | None) -> None:
        busy = _is_busy(exc) or _is_busy(self._last_store_error)
        # Only busy (another writer holds the lock): try again soon. Down: back off.
        delay = 0.1 if busy else _RETRY_S[min(self._retry, len(_RETRY_S) - 1)]
        self._retry += 1
        self._next_recover = time.monotonic() + delay
        if exc is not None:
            lasting = time.monotonic() - self._spill_since > QUIET_SPILL_S
            self.health.fault(
                f"the store {self.health.store} is still unavailable; recording goes on "
                f"into {self.journal.path}",
                exc,
                quiet=_is_busy(exc) and not lasting,
            )

    def _heartbeat(self) -> None:
        with self._store_lock:
            if not self.store_ok or not self._backend_ready():
                return
            try:
                self._call(
                    lambda: self.backend.execute(liveness.heartbeat(self.owner, time.time_ns()))
                )
                self._call(lambda: liveness.sweep(self.backend, time.time_ns()))
            except Exception as exc:
                log.debug("steptrace: heartbeat failed: %s", gist(exc, self.health.secrets))

    def _replay_orphans(self) -> None:
        """Write the journals of processes that died to the store, then remove them."""
        directory = self.journal.directory
        if not os.path.isdir(directory):
            return
        for path, fd in journal_files.orphans(directory):
            if path == self.journal.path:
                os.close(fd)
                continue
            try:
                with self._store_lock:
                    n = 0
                    frames = journal_files.read_frames(fd)
                    for group in journal_files.frame_groups(frames, BATCH_MAX, BATCH_MAX_BYTES):
                        records = [rec for _, recs, _ in group for rec in recs]
                        if not self._write_orphan_records(records):
                            return
                        n += len(records)
                    if n:
                        self.health.add(recovered=n)
                        log.info("steptrace: wrote %d records a dead process had spilled", n)
                os.unlink(path)
            except Exception as exc:
                log.warning(
                    "steptrace: could not replay %s: %s", path, gist(exc, self.health.secrets)
                )
            finally:
                os.close(fd)

    def _write_orphan_records(self, records: list[Record]) -> bool:
        """Another process's records: written in one transaction, or split and
        quarantined; not counted as this process's own."""
        if self._write(records) is None:
            return True
        return self._write_parts(records, time.monotonic() + 60, spill=False, count=False)

    def _report(self) -> None:
        row = self.health.due_report()
        if row is not None:
            self._store_report(row)

    def _store_report(self, row: dict[str, Any]) -> None:
        if not self.store_ok or not self._backend_ready():
            return
        from steptrace.store.sqlite import iso_from_ns

        full = {
            "reported_at": iso_from_ns(time.time_ns()),
            "process": self.owner.id,
            "store": self.health.store,
            "sanitized": counters.sanitized,
            **row,
        }
        columns = ", ".join(full)
        marks = ", ".join("?" for _ in full)
        statement = (f"INSERT INTO store_health ({columns}) VALUES ({marks})", list(full.values()))
        with self._store_lock, contextlib.suppress(Exception):
            self._call(lambda: self.backend.execute([statement]))

    # -- control ------------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything recorded so far to the store: commit what is queued, then
        wait (up to ``timeout_s``) while the spill journal is written to the store.
        True when all of it is in the store."""
        deadline = time.monotonic() + timeout_s
        if not self.commit(timeout_s):
            return False
        self.end_spans()
        while self.journal.pending_bytes and not self._closed:
            if time.monotonic() >= deadline:
                return False
            self._next_recover = 0.0  # try now, not after the back-off
            self._wake.set()
            time.sleep(0.02)
        return not self.journal.pending_bytes

    def snapshot(self) -> dict[str, Any]:
        out = self.health.snapshot()
        out.update(
            store=self.health.store,
            queued=len(self.queue),
            queued_bytes=max(self.queued_bytes, 0),
            journal=self.journal.path,
            journal_bytes=self.journal.pending_bytes,
            **counters.snapshot(),
        )
        return out

    def close_on_signal(self) -> None:
        """``close`` from a signal handler on the main thread, which may have stopped in
        the middle of a commit of its own: that batch is written again (writes are
        idempotent), nothing waits for the interrupted frame, and the process is about
        to end, so the writer thread is not joined."""
        if self._closed:
            return
        self._closed = True
        me = threading.get_ident()
        with self._pop_lock:
            items, _ = self._take()
            stuck = [rec for tid, batch in self._inflight.values() if tid == me for rec in batch]
            others = [event for event, (tid, _) in self._inflight.items() if tid != me]
        records = [*stuck, *items]
        # Re-entrant: this thread gets the store lock at once when the interrupted frame
        # held it; another thread's call is waited for (it is bounded).
        if self._backend_ready() and self._store_lock.acquire(timeout=1.0):
            try:
                if self.backend.in_transaction():
                    # The interrupted frame will never resume (the process ends after
                    # this): drop its half-done transaction so this one can use the store.
                    with contextlib.suppress(Exception):
                        self._call(self.backend.abandon)
            finally:
                self._store_lock.release()
        if records:
            with contextlib.suppress(Exception):
                self._finish(records)
                self._commit_items(records, sum(map(record_bytes, records)), time.monotonic() + 2.0)
        with contextlib.suppress(Exception):
            self.end_spans()
        for event in others:
            event.wait(1.0)
        # Under the store lock: the writer thread may be in the middle of a commit, and
        # its transaction ends before the lock is given (the interrupted frame's was
        # dropped above, so one still open here is not this thread's to wait for).
        if self.store_ok and self._backend_ready() and self._store_lock.acquire(timeout=2.0):
            try:
                if not self.backend.in_transaction():
                    with contextlib.suppress(Exception):
                        self._call(
                            lambda: self.backend.execute(liveness.end(self.owner, time.time_ns()))
                        )
            finally:
                self._store_lock.release()
        line = self.health.exit_line(self.journal.path)
        if line is not None:
            log.warning("%s", line)

    def close(self, timeout_s: float = _EXIT_FLUSH_TIMEOUT_S) -> None:
        """Commit what is queued, try the journal once more, mark this process's unfinished
        runs interrupted, and report. Records put after this are committed as they come."""
        if self._closed:
            return
        self.commit(timeout_s=min(timeout_s, 5.0))
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        # Write the journal to the store before leaving: retried while the store is only
        # busy (other writers), once when it is down (the journal is kept for later).
        deadline = time.monotonic() + min(timeout_s, 10.0)
        while self.journal.pending_bytes and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                self._recover()
            if not _is_busy(self._last_store_error):
                break
            time.sleep(0.05)
        self.commit(timeout_s=1.0)  # what daemon threads recorded meanwhile
        self.end_spans()
        if self.store_ok and self._backend_ready():
            with self._store_lock, contextlib.suppress(Exception):
                self._call(lambda: self.backend.execute(liveness.end(self.owner, time.time_ns())))
        row = self.health.final_report()
        if row is not None:
            self._store_report(row)
        line = self.health.exit_line(self.journal.path)
        if line is not None:
            log.warning("%s", line)
        with self._journal_lock:
            self.journal.close()
        self._watchdog.stop()
        if self._async_pool is not None:
            self._async_pool.shutdown(wait=False)
        backend, self.backend = self.backend, None
        self.store_ok = False  # records put from now on go to the journal at once
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()


def _is_full(exc: BaseException) -> bool:
    """The store's disk (or memory) is full: a small probe write may still fit, so this
    is not left to the probe."""
    text = str(exc).lower()
    state = getattr(exc, "sqlstate", None)
    return (
        "disk is full" in text
        or "disk i/o error" in text
        or "out of memory" in text
        or (isinstance(state, str) and state in ("53100", "53200"))
    )


def _is_busy(exc: BaseException | None) -> bool:
    """SQLite's write lock held by another process (or connection)."""
    if exc is None or type(exc).__name__ != "OperationalError":
        return False
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def transient_open_error(url: str, exc: BaseException) -> bool:
    """Whether a failure to open the store is a fault that may pass (locked, server down)
    rather than a mistake to fix (a bad path, a wrong password, no such database)."""
    text = str(exc).lower()
    from steptrace.store.schema import scheme

    if scheme(url) == "postgresql":
        mistakes = ("authentication", "password", "does not exist", "pg_hba", "permission")
        operational = any(c.__name__ == "OperationalError" for c in type(exc).__mro__)
        return operational and not any(m in text for m in mistakes)
    return "locked" in text or "busy" in text


def quarantined(rec: Record, error: BaseException) -> Record:
    """A stand-in for a record the store refused: ids, names (ASCII), times and status
    kept; values replaced by a marker naming the error, scores left out (one of them may
    be what the store refused)."""
    marker = orjson.dumps({MARKER: "quarantined", "error": gist(error)})
    safe = _ascii
    if isinstance(rec, RunState):
        return dataclasses.replace(
            rec,
            workflow=safe(rec.workflow),
            input=marker,
            output=None if rec.output is None else marker,
            error=None if rec.error is None else marker,
            tags=None,
            logs=None,
            otel=None,
        )
    return dataclasses.replace(
        rec,
        name=safe(rec.name),
        key=None if rec.key is None else safe(rec.key),
        kind=safe(rec.kind),
        input=marker,
        output=None if rec.output is None else marker,
        error=None if rec.error is None else marker,
        attributes=None,
        logs=None,
        llm=None
        if rec.llm is None
        else dataclasses.replace(
            rec.llm,
            provider=safe(rec.llm.provider),
            model=safe(rec.llm.model),
            input_tokens=None,
            output_tokens=None,
            cost_usd=None,
            cached_input_tokens=None,
            reasoning_tokens=None,
            time_to_first_chunk_ms=None,
            finish_reason=None,
            response_model=None,
            params=None,
            tool_calls=None,
        ),
        otel=None,
        scores=None,
    )


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii").replace("\\x00", "\\\\x00")


def _blank_values(rec: Record) -> None:
    marker = orjson.dumps({MARKER: "redaction_failed"})
    rec.input = None if rec.input is None else marker
    rec.output = None if rec.output is None else marker
    rec.raw = False


def _chunks(items: list[Record], size: int) -> list[list[Record]]:
    """Batches of at most ``BATCH_MAX`` records and about ``BATCH_MAX_BYTES`` (``size``:
    about the bytes of ``items``)."""
    if len(items) <= BATCH_MAX and size <= BATCH_MAX_BYTES:
        return [items]
    chunks: list[list[Record]] = []
    current: list[Record] = []
    size = 0
    for rec in items:
        rec_size = record_bytes(rec)
        if current and (len(current) >= BATCH_MAX or size + rec_size > BATCH_MAX_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(rec)
        size += rec_size
    if current:
        chunks.append(current)
    return chunks


def _started(state: RunState) -> RunState:
    """A copy of the run's start row: the live state keeps changing until it ends."""
    return RunState(
        run_id=state.run_id,
        workflow=state.workflow,
        trace_id=state.trace_id,
        span_id=state.span_id,
        start_ns=state.start_ns,
        parent_trace_id=state.parent_trace_id,
        parent_span_id=state.parent_span_id,
        input=state.input,
        tags=state.tags,
        owner=state.owner,
        raw=True,
        entry_point=state.entry_point,
        code_version=state.code_version,
        forked_from=state.forked_from,
        forked_at=state.forked_at,
        replay_of=state.replay_of,
        resume_count=state.resume_count,
        durability=state.durability,
        session_id=state.session_id,
    )


# --- the process's sink -------------------------------------------------------------------

_sink_lock = threading.RLock()
_sink: Sink | None = None


def get_sink() -> Sink:
    """The process's sink for the configured store, opened (and migrated) on first use.

    Raises ``ConfigError`` when the configured store cannot be opened for a reason that
    will not pass by itself (a store that is only down or locked is spilled to).
    """
    global _sink
    sink = _sink
    if sink is not None:
        return sink
    with _sink_lock:
        if _sink is None:
            url = get_config().store_url()
            _sink = Sink(url)
            # Registered now, not at import: atexit runs hooks last-in first-out, so
            # this flush (which ends the last OTel spans) runs before the shutdown
            # hook of a TracerProvider the application created before its first run.
            atexit.unregister(_flush_at_exit)
            atexit.register(_flush_at_exit)
            install_sigterm_handler()
        return _sink


def current_sink() -> Sink | None:
    return _sink


def flush(timeout_s: float = 10.0) -> bool:
    """Write everything recorded so far in this process. True when done in time."""
    sink = _sink
    return True if sink is None else sink.flush(timeout_s)


def health() -> dict[str, Any]:
    """What became of every record this process handed to its store: ``recorded``,
    ``written`` (``replayed`` of them from the spill journal), ``spilled``, ``pending``
    (in the journal, not yet stored), ``quarantined``, ``lost``, ``recovered`` (of dead
    processes' journals); the values that could not be stored as they were
    (``unserializable``, ``truncated``, ``redacted``, ``sanitized``: counted since the
    process started); and ``state`` (``ok``,
    ``spilling``, ``replaying``), ``last_error``, ``queued``, ``queued_bytes``,
    ``journal``, ``journal_bytes`` and ``store``."""
    sink = _sink
    if sink is not None:
        return sink.snapshot()
    from steptrace.store.schema import describe

    url = get_config().store_url()
    out: dict[str, Any] = dict.fromkeys(Health.COUNTS, 0)
    out.update(
        state="idle",
        last_error=None,
        store=describe(url),
        queued=0,
        queued_bytes=0,
        journal=None,
        journal_bytes=0,
        **counters.snapshot(),
    )
    return out


_RECOVER_EVERY_S = 5.0
_recovered_at: dict[str, float] = {}


def recover(url: str, *, now: bool = False) -> None:
    """What a reader opening the store does, at most every few seconds per store (``now``:
    whenever it was done last): mark the runs of processes that are gone as interrupted,
    and write the spill journals they left to the store. Never raises (a read-only role
    just does not do it)."""
    started = time.monotonic()
    if not now and started - _recovered_at.get(url, -_RECOVER_EVERY_S) < _RECOVER_EVERY_S:
        return
    _recovered_at[url] = started
    try:
        _recover(url)
    except Exception as exc:
        log.debug("steptrace: could not sweep %s: %s", mask_url(url), gist(exc, url_secrets(url)))


def _recover(url: str) -> None:
    from steptrace.store.engines import open_engine
    from steptrace.store.schema import missing, same_store

    if missing(url):
        return  # a reader creates nothing: no store, no runs to sweep
    sink = _sink
    if sink is not None and same_store(sink.url, url):
        if journal_files.has_journals(sink.journal.directory):
            with contextlib.suppress(Exception):
                sink._replay_orphans()
    elif journal_files.has_journals(journal_files.spill_dir(url)):
        replayer = Sink(url, background=False)
        try:
            replayer._replay_orphans()
        finally:
            replayer.close(timeout_s=1.0)
    engine = open_engine(url)
    try:
        liveness.sweep(engine, time.time_ns())
    finally:
        engine.close()


def close_sink() -> None:
    global _sink
    with _sink_lock:
        sink, _sink = _sink, None
    if sink is not None:
        sink.close()


def _configuration_changed(reset: bool) -> None:
    """The next run opens the (maybe new) store; a reset also gives back SIGTERM."""
    close_sink()
    if reset:
        uninstall_sigterm_handler()


on_change(_configuration_changed)


def _after_fork_in_child() -> None:
    # The writer thread does not survive fork; what the parent queued is the parent's.
    global _sink
    _sink = None


def _flush_at_exit() -> None:
    started = time.monotonic()
    close_sink()
    elapsed = time.monotonic() - started
    if elapsed > 1.0:
        log.info("steptrace: flushed records at exit in %.1fs", elapsed)


# --- SIGTERM ------------------------------------------------------------------------------

_previous_sigterm: Any = None
_sigterm_installed = False


def install_sigterm_handler() -> None:
    """On SIGTERM (``docker stop``, systemd), write what is recorded before the process
    ends. With no handler of the application's, the process then dies of SIGTERM as it
    would have; an application handler installed before is called after the commit
    (one installed later replaces this one, and its exit runs the normal exit flush).
    Only from the main thread, where Python lets a handler be installed."""
    global _previous_sigterm, _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous is _on_sigterm:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return
    _previous_sigterm = previous
    _sigterm_installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    previous = _previous_sigterm
    if callable(previous):
        sink = _sink
        if sink is not None:
            sink.commit()
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    sink = _sink
    if sink is not None:
        with contextlib.suppress(Exception):
            sink.close_on_signal()
    _flush_tracer_provider()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _flush_tracer_provider() -> None:
    """Export the spans the application's provider still holds: dying of the signal
    skips the provider's own exit hook."""
    from opentelemetry import trace

    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if callable(force_flush):
        with contextlib.suppress(Exception):
            force_flush(2000)


def uninstall_sigterm_handler() -> None:
    """Put back the SIGTERM handler steptrace replaced (``steptrace.config.reset``)."""
    global _sigterm_installed, _previous_sigterm
    if _sigterm_installed and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous_sigterm or signal.SIG_DFL)
    _sigterm_installed = False
    _previous_sigterm = None


os.register_at_fork(after_in_child=_after_fork_in_child)
