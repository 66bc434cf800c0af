#!/usr/bin/env bash
# Set up .venv and run the whole test suite. Extra arguments go to pytest.
# Slow end-to-end tests (marker `slow`) run too, in the short configuration that
# TRACE_SHORT=1 selects; set TRACE_SHORT=0 for their full size.
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE_EXTRAS=${TRACE_EXTRAS:-dev,train,gepa,classic} bash scripts/setup.sh
export TRACE_SHORT=${TRACE_SHORT:-1}
set +e
"${TRACE_VENV:-.venv}/bin/python" -m pytest -p no:cacheprovider --durations=10 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing on purpose (exit 5 must not pass silently)" >&2
  exit 1
fi
exit "$rc"
