"""Memory stays flat over many runs (issue "Nothing lost": memory is bounded in
bytes, whatever goes through a process).

A fresh interpreter runs ``bench/soak.py`` (the same soak the benchmark runs at 100k
runs): ``STEPTRACE_SOAK_RUNS`` runs (default 5,000; a fifth on PostgreSQL) of a 10-step
workflow returning ~1 KB per step, one run in 1,000 with a 1 MiB output. Its resident
memory after the warm-up and at the end, once the writer has caught up, must differ by
less than 50 MB, and the store must hold every run and every step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import clean_env, is_postgres

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"
RUNS = int(os.environ.get("STEPTRACE_SOAK_RUNS", "5000"))
MB = 1024 * 1024


def soak(store: str, runs: int) -> dict[str, Any]:
    """Run the soak in a child process; its JSON results."""
    env = clean_env()
    proc = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--runs",
            str(runs),
            "--warmup",
            str(max(runs // 10, 1)),
            "--every",
            str(max(runs // 5, 1)),
            "--big-every",
            "1000",
            "--store",
            store,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
def test_memory_stays_flat_and_every_run_is_stored(store_url: str) -> None:
    """Resident memory grows by less than 50 MB from the warm-up point to the end of
    ``STEPTRACE_SOAK_RUNS`` runs (PostgreSQL: a fifth of them), and every run and step
    is in the store."""
    runs = RUNS // 5 if is_postgres(store_url) else RUNS
    results = soak(store_url, runs)
    growth_mb = results["growth_bytes"] / MB
    samples = [(n, round(rss / MB)) for n, _, rss in results["samples"]]
    assert growth_mb < 50, f"RSS grew {growth_mb:.0f} MB after warm-up; (runs, MB): {samples}"
    assert results["stored_runs"] == runs
    assert results["stored_spans"] == runs * 10
