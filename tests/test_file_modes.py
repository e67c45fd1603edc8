"""Files and folders steptrace creates are readable by their owner only (0600 files,
0700 folders) whatever the umask: the SQLite store with its ``-wal`` and ``-shm``
files, the ``.steptrace`` folder, the spill journal and its folders. Files that exist
keep their modes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import steptrace as st
import steptrace.config
from steptrace.store.schema import migrate_store


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which new files are 0644 and folders 0755 by default."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@st.workflow
def _wf(x: int) -> int:
    return x


def test_a_new_store_is_its_owners_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEPTRACE_STORE")  # the default: ./.steptrace/steptrace.db
    assert _wf(1) == 1
    assert st.flush()
    folder = tmp_path / ".steptrace"
    assert _mode(folder) == 0o700
    names = {p.name for p in folder.iterdir()}
    assert {"steptrace.db", "steptrace.db-wal", "steptrace.db-shm"} <= names
    assert {p.name: _mode(p) for p in folder.iterdir()} == dict.fromkeys(names, 0o600)
    # A store made in new folders (`steptrace migrate`), too: each missing folder 0700.
    nested = tmp_path / "a" / "b" / "runs.db"
    migrate_store(str(nested))
    with st.Store.open(str(nested)) as store:
        assert store.runs() == []
    assert [_mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", nested)] == [
        0o700,
        0o700,
        0o600,
    ]


def test_the_spill_journal_is_its_owners_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    spill = tmp_path / "state" / "steptrace" / "spill"
    monkeypatch.setenv("STEPTRACE_SPILL_DIR", str(spill))
    st.configure(store="postgresql://u@127.0.0.1:1/nowhere")  # down: records are spilled
    assert _wf(2) == 2
    assert st.health()["pending"] == 2
    (folder,) = spill.iterdir()
    (journal,) = folder.iterdir()
    assert journal.name.endswith(".journal")
    made = [tmp_path / "state", tmp_path / "state" / "steptrace", spill, folder]
    assert [_mode(p) for p in made] == [0o700] * 4
    assert _mode(journal) == 0o600
    steptrace.config.reset()


def test_existing_files_keep_their_modes(tmp_path: Path, store_path: Path, umask_022: None) -> None:
    """An owner who made the store group-readable on purpose keeps it so."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o750)
    db = shared / "steptrace.db"
    db.touch()
    os.chmod(db, 0o640)
    st.configure(store=str(db))
    assert _wf(3) == 3
    assert st.flush()
    assert _mode(shared) == 0o750 and _mode(db) == 0o640
    assert _mode(shared / "steptrace.db-wal") == 0o640  # SQLite copies the file's mode
