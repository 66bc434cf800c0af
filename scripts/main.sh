#!/usr/bin/env bash
# Set up .venv (with the train and gepa extras) and run the main job on the embedded
# default: `trace run` with the scorer agent (a frozen all-MiniLM-L6-v2 encoder and a small
# network that chooses among the env's admissible actions; it trains on CPU). It bootstraps
# the base agent by cloning a deficient oracle, analyses its failures, synthesizes and
# calibrates one env per lacking capability, trains one GRPO LoRA adapter per env, routes,
# runs the baselines at the same rollout budget and evaluates on held-out trace/retail-v0
# seeds. Artefacts land in runs/default/ (report.md, results.json, plots). Rerun to resume
# after an interruption. Extra arguments go to `trace run` (e.g. --quick for a few-minute
# look, or --agent lm for the generative path meant for real models on GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE_EXTRAS=${TRACE_EXTRAS:-dev,train,gepa} bash scripts/setup.sh
"${TRACE_VENV:-.venv}/bin/trace" run "$@"
