"""Which process owns a run, and whether that process is still alive.

A run names its owner: ``host:pid:start`` where ``start`` is the process's start time
as the kernel counts it (clock ticks since boot on Linux), so a pid the system has
since given to another process is not mistaken for the owner. A reader on the same
host knows at once that an owner is gone; on another host it goes by the owner's
heartbeat in the ``owners`` table.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time

HEARTBEAT_S = 5.0
"""How often a live process touches its ``owners`` row."""
LAPSE_S = 30.0
"""A heartbeat older than this means the owner is gone (read from another host)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    host: str
    pid: int
    start: str
    """The process start time as the kernel reports it ("" where it cannot be read)."""

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}"

    @classmethod
    def parse(cls, owner_id: str) -> Owner | None:
        parts = owner_id.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def is_alive(self) -> bool | None:
        """True or False for a process of this host; None when it cannot be told here
        (another host: go by the heartbeat)."""
        if self.host != hostname():
            return None
        if self.pid == os.getpid():
            return self.start == process_start(self.pid)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, owned by another user
        started = process_start(self.pid)
        if started is None:  # a zombie, or it ended just now
            return False
        return not self.start or started == self.start


@functools.cache
def hostname() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of
    ``/proc/PID/stat``); "" where /proc is not there; None when the process is gone or
    a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        return ""
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat.rsplit(b")", 1)[-1].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return fields[19].decode()


_current: tuple[int, Owner] | None = None


def current() -> Owner:
    """This process (computed again after a fork)."""
    global _current
    pid = os.getpid()
    if _current is None or _current[0] != pid:
        _current = (pid, Owner(hostname(), pid, process_start(pid) or ""))
    return _current[1]


def lapsed_before(now_ns: int | None = None) -> int:
    """Heartbeats older than this (ns since the epoch) have lapsed."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns - int(LAPSE_S * 1e9)
