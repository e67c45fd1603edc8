"""Owners, heartbeats and interrupted runs, in SQL both engines run (``?`` parameters).

A process that records into a store has a row in ``owners``, touched every
``HEARTBEAT_S``; each run it records names it (``runs.owner``). A run left
``running`` by an owner that is gone becomes ``interrupted``: the owner's own host
knows at once (the pid is dead, or belongs to a newer process), any other host once
the heartbeat has lapsed. Whoever notices (a writer, a reader opening the store)
marks it; a run that ends after all (its owner was only cut off from the store)
overwrites ``interrupted`` with its real outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from steptrace.store.owner import Owner, lapsed_before
from steptrace.store.sqlite import iso_from_ns

Statements = list[tuple[str, Sequence[Any]]]


class Engine(Protocol):
    def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


def register(owner: Owner, now_ns: int) -> Statements:
    now = iso_from_ns(now_ns)
    return [
        (
            "INSERT INTO owners (owner, host, pid, process_started_at, started_at, heartbeat_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET "
            "heartbeat_at = excluded.heartbeat_at, ended_at = NULL",
            (owner.id, owner.host, owner.pid, owner.start, now, now),
        )
    ]


def heartbeat(owner: Owner, now_ns: int) -> Statements:
    return [("UPDATE owners SET heartbeat_at = ? WHERE owner = ?", (iso_from_ns(now_ns), owner.id))]


def revive(owner: Owner, run_ids: Sequence[str]) -> Statements:
    """This process's runs still in progress that another process marked interrupted
    while this one could not reach the store (its heartbeat lapsed meanwhile)."""
    return [
        (
            "UPDATE runs SET status = 'running' WHERE run_id = ? AND owner = ? "
            "AND status = 'interrupted'",
            (run_id, owner.id),
        )
        for run_id in run_ids
    ]


def end(owner: Owner, now_ns: int) -> Statements:
    """At exit: the runs this process leaves unfinished are interrupted."""
    return _interrupt(owner.id, iso_from_ns(now_ns))


def _interrupt(owner_id: str, now: str) -> Statements:
    return [
        # A run the owner was resuming holds its lease (``leases``): given back, so that
        # a recoverer takes the run now rather than once the lease lapses.
        (
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL "
            "WHERE owner = ? AND status = 'running' AND lease_owner = ?",
            (owner_id, owner_id),
        ),
        (
            "UPDATE runs SET status = 'interrupted' WHERE owner = ? AND status = 'running'",
            (owner_id,),
        ),
        ("UPDATE owners SET ended_at = COALESCE(ended_at, ?) WHERE owner = ?", (now, owner_id)),
    ]


def dead_owners(rows: Sequence[tuple[Any, ...]], now_ns: int) -> list[str]:
    """Of ``(owner, heartbeat_at, ended_at)`` rows, the owners that are gone: the pid is
    dead on this host, or (another host) the heartbeat lapsed. An owner that ended is
    listed only while it still has runs ``running``: a thread may start one after the
    exit marked the rest (a signal, daemon threads), and once the process is gone such a
    run is interrupted too."""
    lapsed = iso_from_ns(lapsed_before(now_ns))
    dead = []
    for owner_id, heartbeat_at, ended_at in rows:
        owner = Owner.parse(owner_id)
        alive = None if owner is None else owner.is_alive()
        last_seen = heartbeat_at if ended_at is None else max(heartbeat_at, ended_at)
        if alive is False or (alive is None and last_seen < lapsed):
            dead.append(owner_id)
    return dead


def sweep(engine: Engine, now_ns: int) -> int:
    """Mark the runs of owners that are gone as interrupted; returns how many owners."""
    rows = engine.query(
        "SELECT owner, heartbeat_at, ended_at FROM owners WHERE ended_at IS NULL "
        "OR owner IN (SELECT owner FROM runs WHERE status = 'running')"
    )
    dead = dead_owners(rows, now_ns)
    if dead:
        now = iso_from_ns(now_ns)
        engine.execute([s for owner_id in dead for s in _interrupt(owner_id, now)])
    return len(dead)
