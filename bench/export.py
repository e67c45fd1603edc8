"""What OTLP export costs a workflow, with a healthy collector, a dead one and a slow one.

Each scenario runs in its own process (an SDK provider is set once per process),
installed the way an application does it: ``st.configure(otlp_endpoint=...)`` —
steptrace's bounded export queue and the OTLP/HTTP exporter. The scenarios:

- ``no-export``: the SDK with no exporter (the baseline);
- ``collector``: a loopback OTLP/HTTP receiver that answers at once;
- ``dead``: nothing listens on the port (connection refused);
- ``slow``: the receiver answers each request after 2 s.

A round runs W workflows of 10 steps, each taking and returning ~1 KB of JSON;
the per-step figure is the time of the workflows / steps ("in the workflow") and
the time until the store writer caught up ("sustained", which includes ending and
queueing every span). Medians over rounds, then over
processes (scenarios interleaved); ratios against ``no-export`` measured in
the same run. Dropped spans are reported per scenario (the queue's own counters).

    python -m bench.export [--rounds 15] [--workflows 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

STEPS = 10
SCENARIOS = ("no-export", "collector", "dead", "slow")


def scenario(name: str, endpoint: str | None, rounds: int, workflows: int) -> dict[str, Any]:
    """Runs in the child process: returns per-round figures and the export counters."""
    import steptrace as st
    from bench.overhead import make_payload
    from steptrace.otel.otlp import export_counts

    tmp = tempfile.mkdtemp(prefix="steptrace-bench-export-")
    st.configure(store=os.path.join(tmp, "bench.db"), otel_sdk=True, otlp_endpoint=endpoint)
    payload = make_payload()

    @st.step
    def step(value: dict[str, Any]) -> dict[str, Any]:
        return value

    @st.workflow
    def workflow(value: dict[str, Any]) -> None:
        for _ in range(STEPS):
            step(value)

    steps = workflows * STEPS
    in_workflow: list[float] = []
    sustained: list[float] = []
    for n in range(rounds + 1):
        started = time.perf_counter()
        for _ in range(workflows):
            workflow(payload)
        ran = time.perf_counter()
        st.flush(timeout_s=120)
        settled = time.perf_counter()
        if n:  # the first round warms up
            in_workflow.append((ran - started) / steps * 1e6)
            sustained.append((settled - started) / steps * 1e6)
    counts = export_counts()
    return {
        "scenario": name,
        "in_workflow": statistics.median(in_workflow),
        "sustained": statistics.median(sustained),
        "exported": counts.exported,
        "dropped": counts.dropped,
        "queue_full": counts.queue_full,
        "failed": counts.failed,
        "spans": (rounds + 1) * workflows * (STEPS + 1),
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workflows", type=int, default=200, help="workflows per round")
    parser.add_argument("--repeat", type=int, default=3, help="processes per scenario")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = scenario(args.child, args.endpoint, args.rounds, args.workflows)
        print(json.dumps(result), flush=True)
        os._exit(0)  # the figures are out; do not wait for the exit flush of a dead collector

    from tests.support.otlp_collector import http_collector

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
    with http_collector() as healthy, http_collector(delay_s=2.0) as slow:
        endpoints = {
            "no-export": None,
            "collector": healthy.url,
            "dead": f"http://127.0.0.1:{closed_port()}",
            "slow": slow.url,
        }
        for name in SCENARIOS * args.repeat:  # interleaved, so drift hits all alike
            command = [sys.executable, "-m", "bench.export", "--child", name]
            command += ["--rounds", str(args.rounds), "--workflows", str(args.workflows)]
            if endpoints[name]:
                command += ["--endpoint", str(endpoints[name])]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPTRACE_"))}
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def summary(name: str) -> dict[str, Any]:
        runs = results[name]
        merged = dict(runs[0])
        for key in ("in_workflow", "sustained"):
            merged[key] = statistics.median(r[key] for r in runs)
        for key in ("dropped", "queue_full", "failed", "spans"):
            merged[key] = sum(r[key] for r in runs)
        return merged

    base = summary("no-export")
    print(
        f"{args.repeat} processes x {args.rounds} rounds x {args.workflows} workflows "
        f"x {STEPS} steps (~1 KB in/out) per scenario"
    )
    print(f"{'scenario':<11} {'in workflow':>16} {'sustained':>16}   spans dropped")
    for name in SCENARIOS:
        r = summary(name)
        print(
            f"{name:<11} {r['in_workflow']:7.1f} us {r['in_workflow'] / base['in_workflow']:5.2f}x"
            f" {r['sustained']:7.1f} us {r['sustained'] / base['sustained']:5.2f}x"
            f"   {r['dropped']:,} of {r['spans']:,} (queue full {r['queue_full']:,}, "
            f"failed {r['failed']:,})"
        )
    print("ratios are against no-export, measured in this run; target: dead/slow <= ~1.2x")


if __name__ == "__main__":
    main()
