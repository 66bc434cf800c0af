#!/usr/bin/env bash
# Set up .venv and run the whole test suite. Extra arguments go to pytest.
# Slow end-to-end tests (marker `slow`) run too, in the short configuration that
# TRACE_SHORT=1 selects; set TRACE_SHORT=0 for their full size.
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE_EXTRAS=${TRACE_EXTRAS:-dev,train,gepa,classic} bash scripts/setup.sh
export TRACE_SHORT=${TRACE_SHORT:-1}
VENV=${TRACE_VENV:-.venv}
set +e
# Format and lint first (configured in pyproject.toml); the tests run either way, so one
# run reports both, and a lint error fails the command as a test failure does.
"$VENV/bin/ruff" format --check --quiet . && "$VENV/bin/ruff" check --quiet .
lint=$?
[ "$lint" -eq 0 ] || echo "[test] ruff found problems (run: ruff format . && ruff check --fix .)" >&2
"$VENV/bin/python" -m pytest -p no:cacheprovider --durations=10 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing on purpose (exit 5 must not pass silently)" >&2
  exit 1
fi
[ "$rc" -ne 0 ] && exit "$rc"
exit "$lint"
