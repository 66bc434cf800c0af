"""docs/contributing.md's task-family example works as written: its files, run as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", re.S)


def test_the_contributing_page_example_adds_a_family_that_passes_the_public_checks(repo_root: Path, tmp_path: Path):
    page = (repo_root / "docs" / "contributing.md").read_text(encoding="utf-8")
    files = dict(EXAMPLE.findall(page))
    assert sorted(files) == ["cancel-only-v0.json", "cancel_only.py", "check_cancel_only.py"]
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo_root)])}
    done = subprocess.run(
        [sys.executable, "check_cancel_only.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "'env_id': 'mine/cancel-only-v0'" in out
    assert "'oracle_success': 5" in out  # the oracle solves the new family's tasks
