#!/usr/bin/env bash
# Set up .venv (with the train extra) and run the main job on the embedded default:
# build the tiny preset, bootstrap the base agent with its known deficits, and evaluate
# it on held-out trace/retail-v0 seeds. Artefacts land in runs/bootstrap/.
# Extra arguments go to `trace bootstrap` (e.g. --demos 300 for a quicker look).
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE_EXTRAS=${TRACE_EXTRAS:-dev,train,gepa} bash scripts/setup.sh
.venv/bin/trace bootstrap --out runs/bootstrap "$@"
.venv/bin/trace evaluate --model runs/bootstrap/model --env trace/retail-v0 --episodes 20 \
  --seed-start 2000000 --batch-size 20 --out runs/bootstrap/evaluate-retail.json
