#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default.
# Until the agents pipeline lands, the main job is a short demo of the environments:
# list them, play one retail episode with the oracle, check the τ²-bench tasks when their
# data is beside the checkout, and benchmark every env briefly (into runs/demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${TAU2_DATA_DIR:-}" ] && [ -d ../shared/tau2 ]; then
  export TAU2_DATA_DIR="$(cd ../shared/tau2 && pwd)"
fi
.venv/bin/trace-envs list
.venv/bin/trace-envs show trace/retail-v0 --seed 0
if [ -n "${TAU2_DATA_DIR:-}" ]; then
  .venv/bin/trace-envs tau2-check
fi
.venv/bin/trace-envs bench --seconds 0.5 --out runs/demo
