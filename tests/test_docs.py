"""The docs' complete examples run: every ```python block that imports tbkit, in a fresh process.

Blocks without an import of tbkit are fragments of a larger program and are not run. Each block
runs in a folder of its own that holds ``logs/``, a copy of what ``tbkit demo`` writes.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_IMPORTS_TBKIT = re.compile(r"^(import tbkit|from tbkit[. ])", re.MULTILINE)


def _examples() -> list:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for n, block in enumerate(_BLOCK.findall(page.read_text(encoding="utf-8")), 1):
            if _IMPORTS_TBKIT.search(block):
                found.append(pytest.param(block, id=f"{page.name}#{n}"))
    return found


@pytest.fixture(scope="module")
def demo_logs(tmp_path_factory) -> pathlib.Path:
    logs = tmp_path_factory.mktemp("demo") / "logs"
    subprocess.run(
        [sys.executable, "-m", "tbkit.cli", "demo", "--no-serve", "--steps", "200",
         "--logdir", str(logs)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return logs


@pytest.mark.parametrize("code", _examples())
def test_example_runs(code, tmp_path, demo_logs):
    shutil.copytree(demo_logs, tmp_path / "logs")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
