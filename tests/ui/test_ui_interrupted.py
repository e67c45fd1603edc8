"""A run whose process dies while ``steptrace ui`` is already serving shows as
``interrupted`` in the UI's API (filter and run page) within seconds: a long-lived
reader notices dead processes by itself, without a writer to tell it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from steptrace.store import migrate_store
from tests.support.helpers import LONG_RUN
from tests.support.ui_server import env_without_otel, start_ui


def test_a_run_that_dies_under_a_running_ui_becomes_interrupted(tmp_path: Path) -> None:
    store = tmp_path / "ui.db"
    migrate_store(str(store))  # the UI reads a store that exists
    env = dict(env_without_otel(), STEPTRACE_STORE=str(store))
    proc = subprocess.Popen(
        [sys.executable, "-c", LONG_RUN], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    server = start_ui(store)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as api:
            assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
            deadline = time.monotonic() + 15
            status = "running"
            while status == "running" and time.monotonic() < deadline:
                time.sleep(0.5)
                status = api.get(f"/api/v1/runs/{run_id}").json()["status"]
            assert status == "interrupted"
            listed = api.get("/api/v1/runs", params={"status": "interrupted"}).json()["runs"]
            assert [r["run_id"] for r in listed] == [run_id]
    finally:
        server.stop()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
