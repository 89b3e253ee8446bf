"""notebooks/*.ipynb executed top to bottom with nbmake, in a pytest subprocess.

The notebook's last cell fails the run unless the TensorBoard started by ``%tensorboard`` answers
and lists the tbkit plugin as enabled, so a missing ``tensorboard`` program is a failure here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_python3_kernel_is_this_interpreter():
    """nbmake runs the ``python3`` kernel; jupyter_client maps ``python`` to sys.executable."""
    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    major, minor = sys.version_info[:2]
    names = {"python", f"python{major}", f"python{major}.{minor}"}
    assert argv0 in names or os.path.samefile(argv0, sys.executable), argv0


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook, tmp_path):
    env = dict(os.environ)
    # `%tensorboard` runs the `tensorboard` found on PATH: this interpreter's.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    # A fresh temp folder: no stale .tensorboard-info entry makes the magic reuse a dead server.
    env["TMPDIR"] = str(tmp_path)
    env["JUPYTER_PREFER_ENV_PATH"] = "1"  # the venv's python3 kernelspec, not a user-level one
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
         "--nbmake-timeout=120", str(notebook)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        print(proc.stdout[-20000:])
        print(proc.stderr[-5000:], file=sys.stderr)
    assert proc.returncode == 0, f"{notebook.name} failed (exit {proc.returncode}); output above"
