"""Where a benchmark ran: the machine, the Python and library versions, the commit.

Shared by every script in benchmarks/ so their JSON records the same fields.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import gymnasium as gym

import trace_envs

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str | None:
    """The CPU model name from ``lscpu`` (or /proc/cpuinfo), if either exists."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.strip().lower().startswith("model name:"):
            return line.split(":", 1)[1].strip()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken: platform, Python, CPUs and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "gymnasium": gym.__version__,
        "trace_envs": trace_envs.__version__,
    }


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checked-out commit, read from ``.git`` directly (no git process); None outside a checkout."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: ".git" names the real directory
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head  # detached HEAD
        ref = head.split(":", 1)[1].strip()
        for base in (git, _common_dir(git)):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except (OSError, IndexError):
        pass
    return None


def _common_dir(git: Path) -> Path:
    """A worktree's shared git directory (where its branch refs live)."""
    common = git / "commondir"
    return (git / common.read_text().strip()).resolve() if common.is_file() else git
