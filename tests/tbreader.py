"""Read event files back with TensorBoard's own loader, independently of tbkit's reader."""

from __future__ import annotations

import collections
import glob
import os

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util


def values(run_dir: str) -> dict[str, list]:
    """``{tag: [(step, Summary.Value), ...]}`` for every summary value in ``run_dir``."""
    found: dict[str, list] = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(run_dir, "*tfevents*"))):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                found[value.tag].append((event.step, value))
    return dict(found)


def summaries(run_dir: str) -> dict[str, list[tuple[int, object]]]:
    """``{tag: [(step, value as numpy), ...]}`` for every summary value in ``run_dir``."""
    return {
        tag: [(step, tensor_util.make_ndarray(value.tensor)) for step, value in pairs]
        for tag, pairs in values(run_dir).items()
    }


def steps(run_dir: str) -> dict[str, list[int]]:
    """``{tag: [step, ...]}`` in the order written."""
    return {tag: [step for step, _ in pairs] for tag, pairs in values(run_dir).items()}
