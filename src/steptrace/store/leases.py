"""Leases on runs: who is resuming a run now.

Resuming a run takes a lease on it first (``runs.lease_owner``, ``runs.lease_until``),
so that two processes never resume the same run at once: ``claim`` takes the lease on
one run, ``claim_interrupted`` on up to ``limit`` interrupted durable runs for a
recoverer. A lease is taken in one statement (or, on PostgreSQL, one transaction whose
``SELECT … FOR UPDATE SKIP LOCKED`` lets recoverers on many machines each take other
runs); it lapses at ``lease_until``, by when the resumed run is marked ``running`` by
its new owner (so recoverers leave it alone) or the lease may be taken again. A holder
that dies while it resumes a run gives the lease back with it: the sweep that marks the
run ``interrupted`` (``liveness``) clears the lease too.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from steptrace.store import admin
from steptrace.store.sqlite import iso_from_ns

LEASE_S = 30.0
"""How long a lease lasts: ample for a run to be marked running by its resumer."""

RESUMABLE = ("failed", "interrupted")


def claim(url: str, run_id: str, holder: str, lease_s: float = LEASE_S) -> bool:
    """Take the lease on ``run_id`` for ``holder``: False when another holder has it or
    the run is not resumable (it is running, succeeded, or not there)."""
    now = time.time_ns()
    until = iso_from_ns(now + int(lease_s * 1e9))
    with admin.connect(url) as conn:
        changed = conn.transaction(
            lambda execute: execute(
                "UPDATE runs SET lease_owner = ?, lease_until = ? "
                "WHERE run_id = ? AND status IN (?, ?) "
                "AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)",
                (holder, until, run_id, *RESUMABLE, iso_from_ns(now), holder),
            )
        )
    return changed == 1


def claim_interrupted(
    url: str,
    holder: str,
    limit: int,
    lease_s: float = LEASE_S,
    workflow: str | None = None,
    exclude: Collection[str] = (),
) -> list[str]:
    """Take the lease on up to ``limit`` interrupted durable runs (oldest first) that
    nobody holds, but those in ``exclude`` (runs the recoverer could not resume); the
    ids taken."""
    now = time.time_ns()
    until = iso_from_ns(now + int(lease_s * 1e9))
    where = (
        "status = 'interrupted' AND durability = 'step' "
        "AND (lease_until IS NULL OR lease_until < ?)"
    )
    params: list[object] = [iso_from_ns(now)]
    if workflow is not None:
        where += " AND workflow = ?"
        params.append(workflow)
    if exclude:
        where += f" AND run_id NOT IN ({', '.join(['?'] * len(exclude))})"
        params.extend(exclude)
    with admin.connect(url) as conn:
        lock = " FOR UPDATE SKIP LOCKED" if conn.postgres else ""

        def take(execute: admin.Execute) -> list[str]:
            ids = [
                row[0]
                for row in conn.rows(
                    f"SELECT run_id FROM runs WHERE {where} ORDER BY started_at LIMIT ?{lock}",
                    [*params, limit],
                )
            ]
            for run_id in ids:
                execute(
                    "UPDATE runs SET lease_owner = ?, lease_until = ? WHERE run_id = ?",
                    (holder, until, run_id),
                )
            return ids

        return conn.transaction(take)


def release(url: str, run_id: str, holder: str) -> None:
    """Give the lease on ``run_id`` back (the resume is over)."""
    with admin.connect(url) as conn:
        conn.transaction(
            lambda execute: execute(
                "UPDATE runs SET lease_owner = NULL, lease_until = NULL "
                "WHERE run_id = ? AND lease_owner = ?",
                (run_id, holder),
            )
        )
