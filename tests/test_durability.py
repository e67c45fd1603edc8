"""The durability contract, through the public API, on both engines: what is in the
store when a call returns at each level, how runs of dead processes show, what the
spill journal keeps and gives back, what a refused record becomes, and what
``st.health()``, ``steptrace status`` and ``store_health`` report.

Each check reads the store with the engine's own driver (``raw_sql``), never through
steptrace's reader, so "it is in the store" means another process can see it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import steptrace as st
from steptrace.cli import main as cli_main
from steptrace.store import migrate_store
from tests.support.helpers import LONG_RUN, raw_sql
from tests.support.openai_server import Answer, FakeOpenAI


def _count(url: str, table: str, run_id: str) -> int:
    return int(raw_sql(url, f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,))[0][0])


def _status(url: str, run_id: str) -> str:
    return str(raw_sql(url, "SELECT status FROM runs WHERE run_id = ?", (run_id,))[0][0])


# --- levels -------------------------------------------------------------------------------


def test_a_run_is_in_the_store_when_its_call_returns(store_url: str) -> None:
    @st.step
    def double(x: int) -> int:
        return 2 * x

    @st.workflow
    def wf(n: int) -> int:
        return sum(double(i) for i in range(n))

    for n in range(1, 6):
        result = st.run(wf, n)
        # No flush: another connection sees the whole run at once.
        assert _status(store_url, result.run_id) == "succeeded"
        assert _count(store_url, "spans", result.run_id) == n


def test_durable_steps_are_in_the_store_before_the_step_returns(store_url: str) -> None:
    seen: list[tuple[str, int]] = []

    @st.step
    def work(i: int) -> int:
        return i + 1

    @st.workflow(durable=True)
    def wf(n: int) -> int:
        for i in range(n):
            work(i)
            run_id = st.current_run_id()
            assert run_id is not None
            # Checked inside the run, right after the step returned.
            stored = raw_sql(
                store_url,
                "SELECT count(*) FROM spans WHERE run_id = ? AND name = 'work'",
                (run_id,),
            )[0][0]
            seen.append((run_id, int(str(stored))))
        return n

    wf(4)
    assert [n for _, n in seen] == [1, 2, 3, 4]
    # The run's start row is in the store while the run is still going.
    assert _status(store_url, seen[0][0]) == "succeeded"


def test_a_durable_run_is_in_the_store_before_its_first_step_runs(store_url: str) -> None:
    """A process killed inside a durable run's first step leaves the run in the store
    (``interrupted`` once the process is gone), to be recovered: not lost."""
    seen: list[list[tuple[object, ...]]] = []

    @st.step
    def first() -> None:
        sql = "SELECT status, durability FROM runs WHERE run_id = ?"
        seen.append(raw_sql(store_url, sql, (st.current_run_id(),)))

    @st.workflow(durable=True)
    def wf() -> None:
        first()

    wf()
    assert seen == [[("running", "step")]]


def test_configure_durable_step_and_env(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stored: list[int] = []

    @st.step
    def work() -> int:
        return 1

    @st.workflow
    def wf() -> None:
        work()
        run_id = st.current_run_id()
        stored.append(_count(store_url, "spans", str(run_id)))

    st.configure(durable="step")
    wf()
    monkeypatch.setenv("STEPTRACE_DURABLE", "step")
    st.configure(durable="run")  # the argument wins over the variable
    wf()
    assert stored == [1, 0]


def test_fire_and_forget_is_written_in_the_background(store_url: str) -> None:
    @st.workflow(durable=False)
    def wf(x: int) -> int:
        return x

    ids = [st.run(wf, i).run_id for i in range(20)]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = raw_sql(store_url, "SELECT count(*) FROM runs WHERE status = 'succeeded'")
        if rows[0][0] == len(ids):
            break
        time.sleep(0.02)
    assert raw_sql(store_url, "SELECT count(*) FROM runs WHERE status = 'succeeded'")[0][0] == 20


def test_an_async_run_is_committed_without_blocking_the_event_loop(store_url: str) -> None:
    @st.step
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @st.workflow
    async def wf(i: int) -> int:
        return await work(i)

    commit_threads: set[str] = set()
    original = st.store.writer.Sink.commit

    def spy(self: st.store.writer.Sink, *args: object, **kwargs: object) -> bool:
        commit_threads.add(threading.current_thread().name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    async def main() -> list[str]:
        results = await asyncio.gather(*(st.arun(wf, i) for i in range(10)))
        return [r.run_id for r in results]

    st.store.writer.Sink.commit = spy  # type: ignore[method-assign]
    try:
        run_ids = asyncio.run(main())
    finally:
        st.store.writer.Sink.commit = original  # type: ignore[method-assign]
    for run_id in run_ids:
        assert _status(store_url, run_id) == "succeeded"
        assert _count(store_url, "spans", run_id) == 1
    # The commits ran off the event loop's thread.
    assert threading.main_thread().name not in commit_threads


@pytest.mark.parametrize("value", ["sometimes", "", 3])
def test_a_bad_durability_level_is_refused_with_the_levels(value: object) -> None:
    with pytest.raises(st.ConfigError, match=r"'run'.*'step'.*'off'"):
        st.configure(durable=value)  # type: ignore[arg-type]
    with pytest.raises(st.ConfigError, match="durable"):
        st.workflow(durable=value)(lambda: None)  # type: ignore[call-overload]


def test_a_bad_durability_variable_fails_the_first_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPTRACE_DURABLE", "always")

    @st.workflow
    def wf() -> int:
        return 1

    with pytest.raises(st.ConfigError, match="STEPTRACE_DURABLE='always'"):
        wf()


# --- interrupted runs ------------------------------------------------------------------------


def _start_long_run(store_url: str, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, STEPTRACE_STORE=store_url)
    proc = subprocess.Popen(
        [sys.executable, "-c", LONG_RUN],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read() if proc.stderr else ""
    return proc, run_id


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_run_whose_process_died_is_interrupted_not_running(
    store_url: str, tmp_path: Path, sig: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, run_id = _start_long_run(store_url, tmp_path)
    assert _status(store_url, run_id) == "running"
    assert _count(store_url, "spans", run_id) == 1  # durable: the first step is there
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == -sig
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    with st.Store.open(store_url) as store:
        assert store.run(run_id).status == "interrupted"
        assert [r.run_id for r in store.runs(status="interrupted")] == [run_id]
    assert _status(store_url, run_id) == "interrupted"  # written, for every reader
    with pytest.raises(SystemExit) as done:
        cli_main(["--store", store_url, "runs", "--status", "interrupted", "--json"])
    assert done.value.code in (0, None)
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["status"] == "interrupted"


def _owner_with_a_running_run(
    store_url: str, owner: str, workflow: str, heartbeat: str, ended: str | None = None
) -> None:
    """An ``owners`` row (started in 2020) and one ``running`` run of it, ``run-of-OWNER``."""
    started = "2020-01-01T00:00:00.000000Z"
    raw_sql(
        store_url,
        "INSERT INTO owners (owner, host, pid, process_started_at, started_at, "
        "heartbeat_at, ended_at) VALUES (?, 'h', 1, '1', ?, ?, ?)",
        (owner, started, heartbeat, ended),
    )
    raw_sql(
        store_url,
        "INSERT INTO runs (run_id, workflow, status, trace_id, span_id, started_at, owner) "
        "VALUES (?, ?, 'running', 't', 's', ?, ?)",
        (f"run-of-{owner}", workflow, started, owner),
    )


def test_a_lapsed_heartbeat_of_another_host_interrupts_its_runs(store_url: str) -> None:
    @st.workflow
    def wf() -> int:
        return 1

    wf()  # the store exists, with this process as an owner
    old = "2020-01-01T00:00:00.000000Z"
    fresh = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    for owner, heartbeat in (("elsewhere:1:1", old), ("elsewhere:2:1", fresh)):
        _owner_with_a_running_run(store_url, owner, "remote", heartbeat)
    st.store.writer._recovered_at.clear()
    with st.Store.open(store_url) as store:
        statuses = {r.run_id: r.status for r in store.runs(workflow="remote")}
    assert statuses == {"run-of-elsewhere:1:1": "interrupted", "run-of-elsewhere:2:1": "running"}


def test_a_run_started_after_its_owner_ended_is_interrupted_once_the_owner_is_gone(
    store_url: str,
) -> None:
    """A thread may start a run after the exit (or a SIGTERM) marked the process's runs
    interrupted and its owner ended: once that process is gone the run is interrupted
    too, not left ``running`` for ever."""

    @st.workflow
    def wf() -> int:
        return 1

    wf()
    old = "2020-01-01T00:00:00.000000Z"
    fresh = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    here_dead = f"{st.store.owner.hostname()}:{int(gone.stdout)}:1"
    owners = {
        here_dead: (old, fresh),  # this host, the pid is gone: interrupted at once
        "elsewhere:3:1": (old, old),  # another host, ended long ago: interrupted
        "elsewhere:4:1": (old, fresh),  # another host, ended just now: not yet known
    }
    for owner, (heartbeat, ended) in owners.items():
        _owner_with_a_running_run(store_url, owner, "late", heartbeat, ended)
    st.store.writer._recovered_at.clear()
    with st.Store.open(store_url) as store:
        statuses = {r.run_id: r.status for r in store.runs(workflow="late")}
    assert statuses == {
        f"run-of-{here_dead}": "interrupted",
        "run-of-elsewhere:3:1": "interrupted",
        "run-of-elsewhere:4:1": "running",
    }
    assert _status(store_url, f"run-of-{here_dead}") == "interrupted"


def test_a_run_that_ends_after_it_was_marked_interrupted_keeps_its_real_outcome(
    store_url: str,
) -> None:
    release = threading.Event()

    @st.step
    def slow() -> int:
        release.wait(10)
        return 7

    @st.workflow
    def wf() -> int:
        return slow()

    migrate_store(store_url)  # the store exists before the run starts
    results: list[st.RunResult] = []
    worker = threading.Thread(target=lambda: results.append(st.run(wf)))
    worker.start()
    deadline = time.monotonic() + 5
    while not raw_sql(store_url, "SELECT run_id FROM runs WHERE status = 'running'"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (run_id,) = raw_sql(store_url, "SELECT run_id FROM runs WHERE status = 'running'")[0]
    # Another process found this one's heartbeat lapsed (it could not reach the store).
    raw_sql(store_url, "UPDATE runs SET status = 'interrupted' WHERE run_id = ?", (run_id,))
    release.set()
    worker.join()
    assert results[0].run_id == run_id
    assert _status(store_url, str(run_id)) == "succeeded"


# --- the spill journal ------------------------------------------------------------------------

SPILLING = """
import os, sys
import steptrace as st

@st.step
def work(i):
    return {"i": i}

@st.workflow
def wf(i):
    return work(i)

ids = [st.run(wf, i).run_id for i in range(int(sys.argv[1]))]
print(" ".join(ids), flush=True)
h = st.health()
print(h["spilled"], h["pending"], h["lost"], flush=True)
os.kill(os.getpid(), 9)
"""


def test_runs_spilled_by_a_killed_process_reach_the_store_when_it_is_next_opened(
    store_path: Path, tmp_path: Path
) -> None:
    """SQLite locked the whole life of a process that was then killed: its runs are in
    its journal only, and the next process that opens the store writes them."""
    migrate_store(str(store_path))
    spill = tmp_path / "spill"
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    env = dict(os.environ, STEPTRACE_STORE=str(store_path), STEPTRACE_SPILL_DIR=str(spill))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SPILLING, "5"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    holder.execute("COMMIT")
    holder.close()
    assert proc.returncode == -9, proc.stderr
    ids_line, counts = proc.stdout.splitlines()
    ids = ids_line.split()
    spilled, pending, lost = map(int, counts.split())
    assert (spilled, pending, lost) == (15, 15, 0)  # start and end rows, one span each
    assert elapsed < 20  # five runs under a lock: no call waited long
    assert raw_sql(str(store_path), "SELECT count(*) FROM runs")[0][0] == 0
    journals = list(spill.rglob("*.journal"))
    assert len(journals) == 1 and journals[0].stat().st_size > 0
    st.store.writer._recovered_at.clear()
    os.environ["STEPTRACE_SPILL_DIR"] = str(spill)
    with st.Store.open(str(store_path)) as store:
        assert sorted(r.run_id for r in store.runs()) == sorted(ids)
        assert all(r.status == "succeeded" for r in store.runs())
    assert raw_sql(str(store_path), "SELECT count(*) FROM spans")[0][0] == 5
    assert not list(spill.rglob("*.journal"))  # replayed, then removed


def test_a_locked_sqlite_store_is_spilled_to_and_replayed_in_process(store_path: Path) -> None:
    @st.workflow
    def wf(x: int) -> int:
        return x

    wf(0)
    holder = sqlite3.connect(store_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    slowest = 0.0
    ids = []
    for i in range(30):
        started = time.monotonic()
        ids.append(st.run(wf, i).run_id)
        slowest = max(slowest, time.monotonic() - started)
    health = st.health()
    assert health["state"] == "spilling" and health["pending"] == 60 and health["lost"] == 0
    assert slowest < 1.5
    holder.execute("COMMIT")
    holder.close()
    assert st.flush(timeout_s=15)
    health = st.health()
    assert health["pending"] == 0 and health["replayed"] == 60 and health["state"] == "ok"
    assert health["written"] == health["recorded"] == 62
    stored = {r[0] for r in raw_sql(str(store_path), "SELECT run_id FROM runs")}
    assert set(ids) <= stored


# --- poison -------------------------------------------------------------------------------------


@pytest.fixture
def openai_client(openai_server: FakeOpenAI) -> Iterator[tuple[FakeOpenAI, openai.OpenAI]]:
    with openai.OpenAI(base_url=openai_server.url, api_key="k", max_retries=0) as c:
        yield openai_server, st.instrument(c)


def test_a_record_the_engine_refuses_is_quarantined_and_costs_no_other(
    store_url: str, openai_client: tuple[FakeOpenAI, openai.OpenAI]
) -> None:
    """A provider reporting a token count no integer column holds: that LLM call is
    stored as a placeholder; every other record of the batch is stored as it was."""
    fake, client = openai_client
    fake.answer(Answer(), Answer(prompt_tokens=2**70), Answer())

    @st.step
    def ask(i: int) -> str:
        reply = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": f"q{i}"}]
        )
        return str(reply.choices[0].message.content)

    @st.workflow(durable=False)  # the three runs share one batch
    def wf(i: int) -> str:
        return ask(i)

    ids = [st.run(wf, i).run_id for i in range(3)]
    assert st.flush()
    health = st.health()
    assert health["quarantined"] == 1 and health["lost"] == 0
    assert health["written"] + health["quarantined"] == health["recorded"]
    for run_id in ids:
        assert _status(store_url, run_id) == "succeeded"
        assert _count(store_url, "spans", run_id) == 2  # the step and its LLM call
    outputs = raw_sql(
        store_url, "SELECT output FROM spans WHERE run_id = ? AND kind = 'llm'", (ids[1],)
    )
    assert "quarantined" in str(outputs[0][0])
    tokens = raw_sql(
        store_url,
        "SELECT input_tokens FROM llm_calls WHERE run_id IN (?, ?) ORDER BY run_id",
        (ids[0], ids[2]),
    )
    assert [r[0] for r in tokens] == [12, 12]


# --- reporting ---------------------------------------------------------------------------------


def test_status_and_store_health_report_what_happened(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @st.workflow
    def wf(x: int) -> int:
        return x

    wf(0)
    holder = sqlite3.connect(store_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    for i in range(3):
        wf(i)
    holder.execute("COMMIT")
    holder.close()
    st.config.reset()  # exit: writes the journal, then a report row
    rows = raw_sql(str(store_path), "SELECT spilled, replayed, lost, quarantined FROM store_health")
    assert rows == [(6, 6, 0, 0)]
    with pytest.raises(SystemExit) as done:
        cli_main(["--store", str(store_path), "status", "--json"])
    assert done.value.code in (0, None)
    status = json.loads(capsys.readouterr().out)
    assert status["runs"] == {"succeeded": 4}
    assert status["journals"] == []
    assert status["reports"][0]["spilled"] == 6
    assert status["schema"] == "0008_lean_spans"
    with pytest.raises(SystemExit):
        cli_main(["--store", str(store_path), "status"])
    text = capsys.readouterr().out
    assert "succeeded 4" in text and "nothing waiting" in text and "6 spilled" in text


def test_exit_line_counts_exactly_when_the_store_stays_down(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import steptrace as st

        @st.step
        def s(i):
            return i

        @st.workflow
        def wf(i):
            return s(i)

        for i in range(4):
            wf(i)
        """
    )
    env = dict(
        os.environ,
        STEPTRACE_STORE="postgresql://u:topsecret@127.0.0.1:1/x",
        STEPTRACE_SPILL_DIR=str(tmp_path / "spill"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 of 12 records written" in proc.stderr
    assert "12 kept in" in proc.stderr and "LOST" not in proc.stderr
    assert "topsecret" not in proc.stderr


def test_health_before_any_run_names_the_store() -> None:
    health = st.health()
    assert health["state"] == "idle" and health["recorded"] == 0
    assert health["store"].endswith("steptrace.db")


@pytest.fixture(autouse=True)
def _spill_env_restored() -> Iterator[None]:
    saved = os.environ.get("STEPTRACE_SPILL_DIR")
    yield
    if saved is not None:
        os.environ["STEPTRACE_SPILL_DIR"] = saved


DAEMON = """
import threading, time
import steptrace as st

@st.step
def work(i):
    time.sleep(0.001)
    return i

@st.workflow
def wf(i):
    return work(i)

done = []

def loop():
    i = 0
    while True:
        print(st.run(wf, i).run_id, flush=True)
        done.append(i)
        i += 1

threading.Thread(target=loop, daemon=True).start()
deadline = time.monotonic() + 30
while len(done) < 20 and time.monotonic() < deadline:  # however slow the machine is
    time.sleep(0.005)
# then the main thread ends while the daemon thread is mid-run
"""


def test_runs_finishing_in_daemon_threads_at_exit_are_not_dropped(
    store_url: str, tmp_path: Path
) -> None:
    """Every run a daemon thread saw return (even during interpreter shutdown, after
    the exit flush) is in the store, or in the journal the next reader writes to it;
    none is left ``running``."""
    spill = tmp_path / "daemon-spill"
    env = dict(os.environ, STEPTRACE_STORE=store_url, STEPTRACE_SPILL_DIR=str(spill))
    proc = subprocess.run(
        [sys.executable, "-c", DAEMON], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split()
    assert len(printed) > 10
    os.environ["STEPTRACE_SPILL_DIR"] = str(spill)
    st.store.writer._recovered_at.clear()
    with st.Store.open(store_url) as store:
        runs = {r.run_id: r.status for r in store.runs(last=100_000)}
    assert all(runs.get(run_id) == "succeeded" for run_id in printed)
    assert "running" not in runs.values()


def test_the_sqlite_wal_is_checkpointed_and_started_again(store_path: Path) -> None:
    """Commits come from the workflow's thread and checkpoints from the writer thread;
    the WAL must still be copied into the database and started again, not grow with
    every run (a checkpoint racing a steady writer never finds the WAL complete)."""

    @st.step
    def work(i: int) -> str:
        return "x" * 4000

    @st.workflow
    def wf(i: int) -> None:
        for _ in range(5):
            work(i)

    for i in range(1500):  # ~30 MB of step rows
        wf(i)
    st.flush()
    wal = store_path.with_name(store_path.name + "-wal")
    assert wal.stat().st_size < 20 * 1024 * 1024
