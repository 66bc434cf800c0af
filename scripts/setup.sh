#!/usr/bin/env bash
# Create .venv (if needed) and install trace-rl with the extras named in $TRACE_EXTRAS.
#
#   TRACE_EXTRAS=dev        bash scripts/setup.sh   # envs + pytest (the agent tests need train too)
#   TRACE_EXTRAS=dev,train  bash scripts/setup.sh   # + torch/transformers/peft/trl
#   TRACE_EXTRAS=train,vllm bash scripts/setup.sh   # + the vLLM server (NVIDIA GPU machines only)
#   TRACE_EXTRAS=dev,classic bash scripts/setup.sh  # + stable-baselines3/sb3-contrib (classic RL, CPU)
#   (scripts/test.sh installs dev,train,gepa,classic; scripts/main.sh dev,train,gepa)
#
# With the train or classic extra on a machine without an NVIDIA GPU, the CPU build of torch
# is installed first (torch==2.13.0, which both extras' ranges admit), so pip does not
# pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${TRACE_EXTRAS:-dev}
VENV=${TRACE_VENV:-.venv}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if [[ ",$EXTRAS," == *",vllm,"* ]] && ! has_gpu; then
  echo "[setup] the vllm extra needs an NVIDIA GPU: vLLM pins a CUDA build of torch (2.14.0)." \
       "Serve vLLM on a GPU machine and point trace at it with --vllm-url / --endpoint" >&2
  exit 2
fi
if [[ ",$EXTRAS," == *",vllm,"* ]]; then
  py=$PY; [ -x "$VENV/bin/python" ] && py="$VENV/bin/python"
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "[setup] the vllm extra needs Python >= 3.11 (vLLM 0.33's wheels); $py is $("$py" --version 2>&1)." \
         "Set PYTHON=python3.11 (or newer) and a fresh TRACE_VENV" >&2
    exit 2
  fi
fi

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

if [[ ",$EXTRAS," == *",train,"* || ",$EXTRAS," == *",classic,"* ]] \
    && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if has_gpu; then
    echo "[setup] GPU found: installing torch from the package registry"
    "${PIP[@]}" "torch>=2.6,<2.15"
  else
    echo "[setup] no GPU: installing the CPU build of torch"
    if ! "${PIP[@]}" "torch==2.13.0"; then
      echo "[setup] WARNING: torch==2.13.0 is not installable here; falling back to the newest torch in" \
           "range, which may be a multi-GB CUDA build" >&2
      "${PIP[@]}" "torch>=2.6,<2.15"
    fi
    if "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
      echo "[setup] WARNING: the installed torch is a CUDA build on a machine without a GPU; it works," \
           "but a CPU build is smaller" >&2
    fi
  fi
fi

echo "[setup] installing trace-rl[$EXTRAS] (editable)"
"${PIP[@]}" -e ".[$EXTRAS]"
touch "$stamp"
