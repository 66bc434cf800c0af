"""scripts/gpu_check.sh, the one-call GPU check, dry-run on CPU.

The GPU machine has no network and a short lease, so the script must not fail on
anything a CPU can catch first: flags that do not exist, paths, the time box, packing
what comes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

pytest.importorskip("trl", reason="the train extra is not installed (pip install -e '.[train]')")


@pytest.mark.slow
def test_gpu_check_dry_run_bootstraps_and_time_boxes_the_run(tmp_path, repo_root) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "GPU_CHECK_DRY": "1",
        "OUT": str(out),
        "PYTHON": sys.executable,
        "GPU_CHECK_WORK": str(tmp_path / "gpu-check-work"),
        "TRACE_CACHE_DIR": str(tmp_path / "cache"),
        "RUN_S": "2",
        # The bootstrap must finish: give it far more than its 240 s default box, which a
        # loaded 2-core machine can overrun (only the run stage is cut short on purpose).
        "BOOT_S": "1200",
    }  # the run stage is cut short on purpose: a stage past its box must not sink the rest
    done = subprocess.run(
        ["bash", str(repo_root / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 124  # the first failed stage's status: the run, cut by its time box
    device = (out / "device.txt").read_text()
    assert "torch" in device and "bootstrap: exit 0" in device, device + done.stderr
    assert "run: exit 124" in device
    report = json.loads((out / "bootstrap.json").read_text())
    assert report["config"]["preset"] == "tiny" and report["copy_probe"]["runs"] > 0
    assert (out / "bootstrap.md").read_text().startswith("# Bootstrap")
    assert (out / "run.log").exists()
    if (out / "run.tar.gz").exists():  # the run may not have made its directory within 2 s
        with tarfile.open(out / "run.tar.gz") as tar:
            assert not [n for n in tar.getnames() if n.endswith((".safetensors", ".bin", ".pt"))]
    assert len(list(out.iterdir())) <= 8  # what a device call brings back


def test_gpu_check_refuses_to_empty_a_folder_it_does_not_own(tmp_path, repo_root) -> None:
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "file").write_text("x")
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(keep)}
    done = subprocess.run(
        ["bash", str(repo_root / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "gpu-check" in done.stderr
    assert (keep / "file").read_text() == "x"
