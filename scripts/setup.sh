#!/usr/bin/env bash
# Create .venv (if needed) and install trace-rl with the extras named in $TRACE_EXTRAS.
#
#   TRACE_EXTRAS=dev        bash scripts/setup.sh   # envs + tests (default)
#   TRACE_EXTRAS=dev,train  bash scripts/setup.sh   # + torch/transformers/peft/trl
#
# With the train extra on a machine without an NVIDIA GPU, the CPU build of torch is
# installed first (torch==2.13.0, which the train extra's range admits), so pip does not
# pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${TRACE_EXTRAS:-dev}
VENV=${TRACE_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

stamp="$VENV/.trace-installed-$(echo "$EXTRAS" | tr ',' '-')"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  echo "[setup] $VENV is up to date (extras: $EXTRAS)"
  exit 0
fi

if [[ ",$EXTRAS," == *",train,"* ]] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] GPU found: installing torch from the package registry"
    "${PIP[@]}" "torch>=2.4,<2.15"
  else
    echo "[setup] no GPU: installing the CPU build of torch"
    "${PIP[@]}" "torch==2.13.0" || "${PIP[@]}" "torch>=2.4,<2.15"
  fi
fi

echo "[setup] installing trace-rl[$EXTRAS] (editable)"
"${PIP[@]}" -e ".[$EXTRAS]"
touch "$stamp"
