"""The side-by-side benchmark (``bench/peers.py``) runs wherever steptrace does: it
measures the bare span and steptrace's levels, names each peer that is not installed
(with the script that installs it) and measures those that are. A tiny run, in a fresh
interpreter; the figures themselves are not checked (a benchmark, not a timed test)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.peers import Sink
from tests.support.helpers import clean_env

ROOT = Path(__file__).resolve().parent.parent
PEER_ROWS = {
    "langfuse": ["Langfuse @observe"],
    "logfire": ["Logfire @instrument"],
    "dbos": ["DBOS step (SQLite as shipped)", "DBOS step (SQLite WAL, synchronous=NORMAL)"],
}


def test_prints_a_row_for_each_installed_tool_and_names_the_missing_ones() -> None:
    tiny = ["--rounds", "2", "--workflows", "2", "--dbos-workflows", "1", "--idle-s", "0.1"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.peers", *tiny],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    table = [line for line in lines if line.startswith("| ") and "---" not in line]
    names = [line.split(" | ")[0].removeprefix("| ") for line in table]
    expected = [
        "tool",
        "bare OpenTelemetry span",
        "steptrace, durable=off",
        "steptrace, durable=run (default)",
        "steptrace, durable=step",
    ]
    for peer, rows in PEER_ROWS.items():
        missing = f"not installed: {peer} (run scripts/bench_peers_venv.sh)"
        if importlib.util.find_spec(peer) is None:
            assert missing in lines
        else:
            assert missing not in lines
            expected += rows
    assert names == expected
    bare = table[1].split(" | ")
    assert bare[2] == "1.00×" and bare[4] == "1.00×"  # the baseline against itself
    assert ("Langfuse's sink received" in proc.stdout) == (
        importlib.util.find_spec("langfuse") is not None
    )


def test_the_sink_counts_and_discards_what_it_is_sent() -> None:
    sink = Sink()
    try:
        for body in (b"x" * 1000, b"y" * 24):
            request = urllib.request.Request(f"{sink.url}/api/public/otel/v1/traces", body)
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 200
                assert answer.read() == b""
        assert sink.received() == {"requests": 2, "bytes": 1024}
    finally:
        sink.stop()
    assert sink.process.returncode is not None
