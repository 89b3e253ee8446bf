"""tbkit: TensorBoard summaries and structured step records from inside ``tf.function``.

A short tour::

    import tbkit

    log = tbkit.SummaryLogger("logs/run1", every={"debug": 1000, "info": 100})

    @log.train_step                    # a tf.function that owns the int64 step
    def train_step(x, y):
        loss = ...
        tbkit.scalar("loss", loss)                          # info: every 100 steps
        tbkit.histogram("grads/dense", grads, level="debug")  # bucketed only when recorded
        tbkit.record("train", {"loss": loss, "lr": lr}, every=10)  # one strict-JSON object
        return loss

    for x, y in dataset:
        train_step(x, y)
    log.close()

    for r in tbkit.read_records("logs"):                    # no TensorFlow needed
        print(r.step, r.fields)

``import tbkit`` does not import TensorFlow: the names that need it load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from tbkit import metadata, query, read  # noqa: F401 (public modules: tbkit.read.to_pandas...)
from tbkit.data.errors import (
    DataLossWarning,
    LoggerClosedError,
    NoActiveLoggerError,
    SupersedeWarning,
    TbkitError,
    TbkitTypeError,
    TbkitValueError,
)
from tbkit.data.levels import LEVELS
from tbkit.data.read import Record, read_records

__version__ = "0.1.0"

# Names loaded on first use, and the module that defines each (all but Schedule and
# JsonLinesHandler need TensorFlow).
_LAZY = {
    "JsonLinesHandler": "tbkit.integrations.jsonl",
    "SummaryHandler": "tbkit.integrations.logbridge",
    "Schedule": "tbkit.summary.schedule",  # needs no TensorFlow, but is of the write side
    "SummaryLogger": "tbkit.summary.logger",
    "scalar": "tbkit.summary.ops",
    "histogram": "tbkit.summary.ops",
    "record": "tbkit.summary.ops",
    "text": "tbkit.summary.ops",
}

__all__ = [
    "LEVELS",
    "DataLossWarning",
    "JsonLinesHandler",
    "LoggerClosedError",
    "NoActiveLoggerError",
    "Record",
    "Schedule",
    "SummaryHandler",
    "SummaryLogger",
    "SupersedeWarning",
    "TbkitError",
    "TbkitTypeError",
    "TbkitValueError",
    "histogram",
    "read_records",
    "record",
    "scalar",
    "text",
]


def __getattr__(name: str) -> Any:
    if name == "keras":  # tbkit.keras.TensorBoardRecords needs TensorFlow and Keras
        return importlib.import_module("tbkit.keras")
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tbkit' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if e.name is None or e.name.split(".")[0] != "tensorflow":
            raise
        raise ImportError(
            f"tbkit.{name} needs TensorFlow, which is not installed: "
            'pip install "tbkit[cpu]" (or "tbkit[tensorflow]" for the GPU build).'
        ) from e
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
