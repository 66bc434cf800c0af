"""scripts/setup.sh: the install step's own checks (the install itself is what CI runs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def test_vllm_extra_is_refused_without_a_gpu_before_anything_is_made(tmp_path: Path, repo_root: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # as on a machine whose driver finds no GPU
    (fake / "nvidia-smi").chmod(0o755)
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "TRACE_EXTRAS": "train,vllm",
        "TRACE_VENV": str(venv),
    }
    done = subprocess.run(
        ["bash", str(repo_root / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "vllm extra needs an NVIDIA GPU" in done.stderr and "--vllm-url" in done.stderr
    assert not venv.exists()  # it fails before creating the venv or installing a CUDA torch


def test_vllm_extra_is_refused_on_python_older_than_3_11(tmp_path: Path, repo_root: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")  # a GPU, so the Python check is the one that speaks
    (fake / "nvidia-smi").chmod(0o755)
    old = fake / "python3.10"  # answers like a Python 3.10 interpreter
    old.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python 3.10.14"; exit 0; fi\nexit 1\n')
    old.chmod(0o755)
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "TRACE_EXTRAS": "train,vllm",
        "TRACE_VENV": str(venv),
        "PYTHON": str(old),
    }
    done = subprocess.run(
        ["bash", str(repo_root / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "needs Python >= 3.11" in done.stderr and "3.10.14" in done.stderr
    assert not venv.exists()
