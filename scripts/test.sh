#!/usr/bin/env bash
# Installs the test dependencies into .venv and runs the whole suite: ruff, mypy,
# import-linter, the docs (mkdocs build --strict, into a temporary directory), pytest.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
# Debian packages the suite needs: Chromium for the web UI's browser tests (Playwright's
# own browser download is not used), PostgreSQL for the store tests on PostgreSQL (a
# throwaway server the suite starts; or STEPTRACE_TEST_POSTGRES_URL, when given).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ -z "${STEPTRACE_TEST_POSTGRES_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${missing[*]} (Debian packages the tests need)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: missing ${missing[*]}: sudo apt-get install -y ${missing[*]} (their tests are skipped)" >&2
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== import-linter (the layering contracts in .importlinter)"
.venv/bin/lint-imports --no-cache
echo "== mkdocs"; site="$(mktemp -d)"; .venv/bin/mkdocs build --strict -d "$site" 2>&1 | grep -v "^INFO" || [ "${PIPESTATUS[0]}" = 0 ]; rm -rf "$site"
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider --durations=25 "$@"
