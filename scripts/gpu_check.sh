#!/usr/bin/env bash
# The GPU checks of issues 4 and 6 in one call on a lent GPU machine (no network there).
#
#   bash scripts/device_wheels.sh      # here, once: the wheels that machine lacks, into .whl/
#   device run: command "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 600
#
# 1. `trace bootstrap` with the small preset (about 26M parameters): timings, acceptance
#    checks and the copy probe.
# 2. `trace run` on that base agent, with more budget than the CPU default.
# Each stage is time-boxed so the call ends inside the 10-minute command limit; a stage
# cut short still leaves its log, and the script exits with the first failed stage's status. At most 8 files come back from $OUT: device.txt,
# bootstrap.{log,md,json}, run.log and run.tar.gz (report, results, plots; no weights).
#
# Each call starts from an empty work folder ($GPU_CHECK_WORK, named *gpu-check*), so a warm
# machine never reports or resumes the last call's files.
# Stage sizes can be changed without editing: BOOT_ARGS, RUN_ARGS, BOOT_S, RUN_S.
# GPU_CHECK_DRY=1 runs the same path CI-sized on CPU (what tests/agents/test_gpu_check.py does).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-runs/gpu-check}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
case "$(basename "$WORK")" in
  *gpu-check*) ;;
  *) echo "[gpu-check] GPU_CHECK_WORK must name a folder called *gpu-check* (it is emptied first)" >&2; exit 2;;
esac
rm -rf "$WORK"  # a warm machine keeps the last call's files: never report or resume those
mkdir -p "$DEST" "$WORK"
DEST=$(cd "$DEST" && pwd)
if [ -d .whl ] && [ -z "${GPU_CHECK_DRY:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "[gpu-check] installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TRACE_CACHE_DIR=${TRACE_CACHE_DIR:-$WORK/cache}
# Fail in seconds, not minutes into a stage, when a package is missing or too old.
if ! "$PY" -c "import trace_agents, trace_envs, trl, peft, transformers, datasets, gymnasium, pettingzoo, jsonschema" \
    2> "$DEST/imports.log"; then
  cat "$DEST/imports.log" >&2
  echo "[gpu-check] imports failed: carry the missing wheels (scripts/device_wheels.sh)" >&2
  exit 1
fi
rm -f "$DEST/imports.log"
if [ -n "${GPU_CHECK_DRY:-}" ]; then
  BOOT_ARGS=${BOOT_ARGS:---preset tiny --demos 12 --max-steps 2 --batch-size 2 --eval-episodes 2 --max-new-tokens 16 --probe-episodes 2 --eval-envs trace/retail-v0}
  RUN_ARGS=${RUN_ARGS:---quick}
else
  BOOT_ARGS=${BOOT_ARGS:---preset small --eval-episodes 40 --eval-batch-size 40}
  RUN_ARGS=${RUN_ARGS:---collect-episodes 120 --steps-per-adapter 12 --eval-episodes 100 --batch-size 32}
fi

{ date -u; nvidia-smi -L 2>/dev/null || echo "no NVIDIA GPU"; "$PY" - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
} > "$DEST/device.txt" 2>&1
cat "$DEST/device.txt"

stage() {  # stage NAME SECONDS COMMAND...: run it time-boxed, log it, and record its wall time
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$DEST/$name.log" 2>&1
  rc=$?
  echo "[gpu-check] $name: exit $rc after $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$DEST/device.txt"
  return $rc
}

status=0  # the first failed stage's exit status
# shellcheck disable=SC2086  # the *_ARGS are word lists on purpose
stage bootstrap "${BOOT_S:-240}" "$PY" -m trace_agents.cli bootstrap --out "$WORK/bootstrap" $BOOT_ARGS || status=$?
if [ "$status" -eq 0 ]; then
  cp "$WORK/bootstrap/report.md" "$DEST/bootstrap.md"
  cp "$WORK/bootstrap/report.json" "$DEST/bootstrap.json"
  # shellcheck disable=SC2086
  stage run "${RUN_S:-300}" "$PY" -m trace_agents.cli run --model "$WORK/bootstrap/model" \
    --runs-dir "$WORK/runs" --name gpu $RUN_ARGS || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
  if [ -d "$WORK/runs/gpu" ]; then
    tar czf "$DEST/run.tar.gz" -C "$WORK/runs" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' gpu
  else
    echo "[gpu-check] the run made no directory to pack" | tee -a "$DEST/device.txt"
  fi
fi
exit "$status"
