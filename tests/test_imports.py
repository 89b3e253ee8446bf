"""Import boundaries: the reader side of tbkit never loads TensorFlow, and works without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Make every "tensorflow*" module unimportable, as on a TensorBoard-only server.
BLOCK_TENSORFLOW = """
import importlib.abc
import sys

class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("tensorflow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTensorFlow())
"""


def run_python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter; return its stdout, failing with its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,  # -c puts the repo first on sys.path
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_read_side_and_the_plugin_load_nothing_of_the_write_side():
    out = run_python("""
        import sys
        import tbkit, tbkit.metadata, tbkit.read, tbkit.query, tbkit_plugin.plugin
        tbkit.read_records, tbkit.Record, tbkit.read.to_pandas
        print(sorted(m for m in sys.modules if m.startswith(("tbkit.summary", "tbkit.cli",
                                                              "tbkit.integrations"))))
    """)
    assert out == "[]\n"


def test_reader_side_does_not_import_tensorflow():
    out = run_python("""
        import sys
        import tbkit, tbkit.metadata, tbkit.read, tbkit.query
        tbkit.read_records, tbkit.Record, tbkit.Schedule, tbkit.read.to_pandas
        tbkit.JsonLinesHandler
        tbkit.metadata.create_summary_metadata()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
    """)
    assert out == "[]\n"


@pytest.mark.parametrize(
    "name", ["SummaryLogger", "SummaryHandler", "scalar", "histogram", "record", "text"]
)
def test_names_that_need_tensorflow_say_which_extra_to_install(name):
    out = run_python(BLOCK_TENSORFLOW + """
import sys
import tbkit
try:
    getattr(tbkit, sys.argv[1])
except ImportError as e:
    print(e)
else:
    raise SystemExit("no ImportError")
""", name)  # fmt: skip
    assert out == (
        f"tbkit.{name} needs TensorFlow, which is not installed: "
        'pip install "tbkit[cpu]" (or "tbkit[tensorflow]" for the GPU build).\n'
    )


def test_records_are_read_where_tensorflow_cannot_be_imported(tmp_path):
    import tensorflow as tf

    from tbkit import metadata

    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        for step in range(3):
            obj = json.dumps({"level": "info", "loss": "NaN" if step == 1 else step / 2})
            tf.summary.write(
                "log", tf.constant([obj]), step=tf.constant(step, tf.int64),
                metadata=metadata.create_summary_metadata(),
            )  # fmt: skip
    writer.close()
    out = run_python(BLOCK_TENSORFLOW + """
import sys
import tbkit
from tbkit.read import to_pandas
print([(r.run, r.tag, r.step, r.level, r.fields) for r in tbkit.read_records(sys.argv[1])])
print(to_pandas(sys.argv[1])["loss"].tolist())
print(sorted(m for m in sys.modules if m.startswith("tensorflow")))
""", str(tmp_path))  # fmt: skip
    assert out.splitlines() == [
        "[('train', 'log', 0, 'info', {'loss': 0.0}), ('train', 'log', 1, 'info', "
        "{'loss': 'NaN'}), ('train', 'log', 2, 'info', {'loss': 1.0})]",
        "[0.0, nan, 1.0]",
        "[]",
    ]


LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter with the contracts of ``root/setup.cfg`` on the packages under it."""
    path = f"{root}{os.pathsep}{root / 'plugin'}"
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "setup.cfg")],
        capture_output=True, text=True, cwd=root, timeout=120,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip


def test_the_declared_import_rules_hold():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken", "report"),
    [
        ("tbkit/data/rows.py", "import tensorflow", 1,
         "tbkit.data is not allowed to import tensorflow"),
        ("tbkit/data/query.py", "from tbkit.summary import ops", 1,
         "tbkit.data is not allowed to import tbkit.summary"),
        ("plugin/tbkit_plugin/selection.py", "from tbkit.cli import export", 2,
         "tbkit_plugin is not allowed to import tbkit.cli"),
        ("tbkit/summary/collector.py", "from tbkit.summary import step", 1,
         "tbkit.summary.collector is not allowed to import tbkit.summary.step"),
    ],
)  # fmt: skip
def test_a_wrong_import_is_reported(tmp_path, module, line, broken, report):
    """A copy of the packages with one deliberate violation: lint-imports names it."""
    for part in ("tbkit", "plugin/tbkit_plugin"):
        shutil.copytree(REPO / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO / "setup.cfg", tmp_path / "setup.cfg")
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{line}  # a deliberate violation\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"Contracts: {4 - broken} kept, {broken} broken." in done.stdout
    assert report in done.stdout
