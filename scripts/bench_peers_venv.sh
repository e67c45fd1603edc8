#!/usr/bin/env bash
# Creates .venv-peers/, a virtual environment for bench/peers.py only: steptrace from
# this checkout (editable) with the peers it is compared against, at pinned versions.
# Nothing here is needed by steptrace itself, its tests or CI. Everything comes from the
# package index at install time; the bench downloads nothing when it runs (DBOS's system
# database is a SQLite file, the exporters point at a sink on loopback).
#
#     scripts/bench_peers_venv.sh          # then the command it prints
set -euo pipefail
cd "$(dirname "$0")/.."

LANGFUSE=5.0.4
LOGFIRE=5.4.0
DBOS=3.4.0
VENV=.venv-peers

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || { echo "needs $python (or PYTHON=...)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . \
  "langfuse==$LANGFUSE" "logfire==$LOGFIRE" "dbos==$DBOS"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version

for name in ("steptrace", "opentelemetry-sdk", "langfuse", "logfire", "dbos"):
    print(f"  {name} {version(name)}")
PY
echo "run the bench with:"
echo "  $VENV/bin/python -m bench.peers"
