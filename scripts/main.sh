#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default.
# Until the agents pipeline lands, the main job is a short demo of the environments:
# list them, play one retail episode with the oracle, and benchmark every env briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/trace-envs list
.venv/bin/trace-envs show trace/retail-v0 --seed 0
.venv/bin/trace-envs bench --seconds 0.5 --out benchmarks/results
