"""What happened to every record this process handed to its store, counted exactly.

Each record (a run's start or end row, a span) ends in exactly one of: ``written``
(in the store; ``replayed`` of them came through the spill journal), ``pending``
(in the spill journal, not yet in the store), ``quarantined`` (stored as a
placeholder: the engine refused it) or ``lost`` (neither stored nor spilled: the
journal could not be written either). ``recovered`` counts records of dead processes'
journals this process wrote to the store. Trouble is reported the way dropped OTLP
exports are: a warning at most once per interval with the gist of the error, a row in
``store_health`` when the store can take it, and a line at exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from steptrace.masking import mask_text, mask_url, url_secrets

log = logging.getLogger("steptrace")

REPORT_INTERVAL_S = 60.0


def gist(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """The first line of an error, with its type: enough to tell what to fix. Credentials
    in it (a URL's password, ``password=…``, and ``secrets``) are masked."""
    text = " ".join(str(exc).strip().splitlines()[:1]) or type(exc).__name__
    return mask_text(f"{type(exc).__name__}: {text}", secrets)[:300]


class Health:
    """Counters (under one lock) and the rate-limited report."""

    COUNTS = (
        "recorded",
        "written",
        "replayed",
        "spilled",
        "pending",
        "quarantined",
        "lost",
        "recovered",
        "late_commits",
    )

    def __init__(self, url: str) -> None:
        self.store = mask_url(url)
        """The store as messages show it (password masked)."""
        self.secrets = url_secrets(url)
        """Its password and secret parameters, masked wherever an error text shows them."""
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(self.COUNTS, 0)
        self.reported = dict.fromkeys(self.COUNTS, 0)
        self.spilling = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._warned_at = -REPORT_INTERVAL_S
        self.warned = False
        self._interval_started = time.monotonic()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self.counts[name] += n

    def fault(self, what: str, exc: BaseException | None = None, *, quiet: bool = False) -> None:
        """Something could not be written; warn now unless warned within the interval
        (or ``quiet``: only recorded as the last error)."""
        detail = mask_text(what if exc is None else f"{what} ({gist(exc, self.secrets)})")
        with self._lock:
            self.last_error = detail
            self.last_error_at = time.time()
            warn = not quiet and time.monotonic() - self._warned_at >= REPORT_INTERVAL_S
            if warn:
                self._warned_at = time.monotonic()
                self.warned = True
        if warn:
            log.warning("steptrace: %s; %s", detail, self._summary())

    def state(self) -> str:
        if self.spilling:
            return "spilling"
        if self.counts["pending"]:
            return "replaying"
        return "ok"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counts)
            out["state"] = self.state()
            out["last_error"] = self.last_error
        return out

    def _summary(self) -> str:
        c = self.counts
        return (
            f"{c['written']} records written, {c['pending']} waiting in the spill journal, "
            f"{c['quarantined']} quarantined, {c['lost']} lost"
        )

    def due_report(self) -> dict[str, Any] | None:
        """A ``store_health`` row when something was spilled, quarantined or lost since
        the last one and the interval has passed (None otherwise)."""
        now = time.monotonic()
        with self._lock:
            changed = any(
                self.counts[k] != self.reported[k]
                for k in ("spilled", "quarantined", "lost", "replayed", "recovered")
            )
            if not changed or now - self._interval_started < REPORT_INTERVAL_S:
                return None
            return self._report_row(now)

    def final_report(self) -> dict[str, Any] | None:
        with self._lock:
            changed = any(
                self.counts[k] != self.reported[k]
                for k in ("spilled", "quarantined", "lost", "replayed", "recovered")
            )
            return self._report_row(time.monotonic()) if changed else None

    def _report_row(self, now: float) -> dict[str, Any]:
        delta = {k: self.counts[k] - self.reported[k] for k in self.COUNTS}
        self.reported = dict(self.counts)
        interval = now - self._interval_started
        self._interval_started = now
        return {
            "interval_s": round(interval, 3),
            "written": delta["written"],
            "spilled": delta["spilled"],
            "replayed": delta["replayed"],
            "quarantined": delta["quarantined"],
            "lost": delta["lost"],
            "last_error": self.last_error,
        }

    def exit_line(self, journal: str) -> str | None:
        """The line printed at exit when anything was not written as it was (records
        spilled during a short contention and written since need no line)."""
        c = self.counts
        if not (c["pending"] or c["quarantined"] or c["lost"] or (c["spilled"] and self.warned)):
            return None
        parts = [f"{c['written']} of {c['recorded']} records written to {self.store}"]
        if c["replayed"]:
            parts.append(f"{c['replayed']} of them replayed from the spill journal")
        if c["pending"]:
            parts.append(
                f"{c['pending']} kept in {journal} (written to the store by the next "
                "steptrace process that opens it)"
            )
        if c["quarantined"]:
            parts.append(f"{c['quarantined']} quarantined (stored as placeholders)")
        if c["lost"]:
            parts.append(f"{c['lost']} LOST")
        line = "steptrace: " + "; ".join(parts)
        if self.last_error:
            line += f". Last error: {self.last_error}"
        return line
