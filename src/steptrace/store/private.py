"""Files and folders steptrace creates are its user's alone, whatever the umask.

A store holds every input, output and prompt of every run, and a spill journal the
same records: created readable by others (the usual umask 022 gives 0644 and 0755),
they would be readable by every user of the machine. New folders are made 0700 and
new files 0600 (SQLite gives the ``-wal``, ``-shm`` and ``-journal`` files it creates
the database file's permissions). Files and folders that already exist are left as
they are: their owner chose their modes.
"""

from __future__ import annotations

import os

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dirs(path: str) -> None:
    """Create ``path`` and any missing parents as 0700 folders (existing ones are left
    as they are)."""
    path = os.path.abspath(path)
    missing: list[str] = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process: theirs to decide
        os.chmod(folder, DIR_MODE)  # mkdir's mode is narrowed by the umask


def create_file(path: str) -> None:
    """Create ``path`` as an empty 0600 file unless it exists (then it is left as it
    is)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # the open's mode is narrowed by the umask
    finally:
        os.close(fd)
