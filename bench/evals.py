"""The evaluation benchmarks in one command: what checks cost a step, how fast an
experiment runs over a dataset, and how fast the store answers score questions at 1M
scores.

    python -m bench.evals            # all three, the figures the performance page quotes
    python -m bench.evals --quick    # fewer rounds, a smaller experiment (a smoke run)

Each part is a module of its own, runnable alone with more options:

- ``bench.evals_checks``: a step with two checks against the same step without and
  a bare OpenTelemetry span (per step, writer included, and the process's CPU);
- ``bench.evals_experiments``: items per second on the scripted model at concurrency
  1 and 8 (``--pg`` adds a throwaway PostgreSQL);
- ``bench.evals_scores``: 1M scores (100,000 runs of 10 steps), a step's aggregate
  (target 50 ms) and runs filtered by a score (target 200 ms).

Each part runs in a process of its own, so that one part's store and threads do not
weigh on the next.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

PARTS: dict[str, tuple[list[str], list[str]]] = {
    # module: (full arguments, --quick arguments)
    "bench.evals_checks": (["--rounds", "15", "--workflows", "100"], ["--rounds", "5"]),
    "bench.evals_experiments": (["--items", "200", "--rounds", "5"], ["--items", "50"]),
    "bench.evals_scores": ([], ["--repeat", "5"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller data")
    parser.add_argument(
        "--only", choices=[m.rsplit(".", 1)[1] for m in PARTS], action="append", default=[]
    )
    args = parser.parse_args()
    failed = []
    for module, (full, quick) in PARTS.items():
        if args.only and module.rsplit(".", 1)[1] not in args.only:
            continue
        command = [sys.executable, "-m", module, *(quick if args.quick else full)]
        print(f"\n=== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(module)
        print(f"=== {module}: {time.perf_counter() - started:.0f} s", flush=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
