#!/usr/bin/env bash
# Download, into .whl/, the wheels that a bare GPU machine without network needs to run
# trace-rl: the packages its image lacks or holds in versions older than ours. Versions
# are those of the local .venv, so the GPU run uses what the tests here passed with.
#
#   bash scripts/device_wheels.sh          # then carry .whl to the GPU machine
#
# The image these were chosen for (an H200 machine with Python 3.12, torch, accelerate,
# tokenizers, safetensors, pyarrow, matplotlib, ...) lacks trl, gymnasium, pettingzoo,
# jsonschema, datasets and gepa, and its transformers is older than 5.20 (its huggingface_hub
# 1.33 and tokenizers 0.23.2 satisfy ours).
# scripts/gpu_check.sh installs them with `pip install --no-index --target`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${DEVICE_PYTHON:-3.12}
NAMES=(transformers trl peft gymnasium farama-notifications pettingzoo jsonschema jsonschema-specifications
       referencing rpds-py datasets dill multiprocess regex gepa)
mkdir -p .whl
for name in "${NAMES[@]}"; do
  version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version" 2> >(grep -v "^WARNING: Location" >&2)
done
du -sh .whl
