#!/usr/bin/env bash
# Installs steptrace into .venv and runs the demo workflow on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all]'
exec .venv/bin/steptrace demo "$@"
