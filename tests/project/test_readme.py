"""The README's Python snippets run as written, and print what the README says they print.

Each fenced ``python`` block runs in a fresh interpreter (as a user would paste it, from
another directory, with warnings as errors). A ``text`` block that follows one, with only
prose between, is its expected output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_PROSE_BETWEEN = 200  # at most a short sentence between a snippet and its output block


def _snippets(readme: Path) -> list:
    """One pytest param per ``python`` block of ``readme``: (code, expected stdout or None)."""
    text = readme.read_text(encoding="utf-8")
    blocks = list(_FENCE.finditer(text))
    params = []
    for i, block in enumerate(blocks):
        if block.group(1) != "python":
            continue
        expected = None
        after = blocks[i + 1] if i + 1 < len(blocks) else None
        if after is not None and after.group(1) == "text" and after.start() - block.end() <= _PROSE_BETWEEN:
            expected = after.group(2)
        line = text.count("\n", 0, block.start()) + 1
        params.append(pytest.param(block.group(2), expected, id=f"README.md:{line}"))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``code`` and ``expected`` with the README's snippets (pytest's rootdir is the repository root)."""
    if "code" in metafunc.fixturenames:
        metafunc.parametrize(("code", "expected"), _snippets(metafunc.config.rootpath / "README.md"))


def test_readme_has_a_python_snippet(repo_root: Path) -> None:
    assert _snippets(repo_root / "README.md"), f"no ```python block found in {repo_root / 'README.md'}"


def test_readme_snippet_runs(code: str, expected: str | None, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"README snippet failed:\n{proc.stderr}"
    if expected is not None:
        assert proc.stdout == expected, (
            "README.md shows other output than its snippet prints; paste the real output into the "
            f"```text block after it:\n{proc.stdout}"
        )
