"""Placeholder: replaced by the reader (event files → records, no TensorFlow)."""
from typing import NamedTuple


class Record(NamedTuple):
    run: str
    tag: str
    step: int
    wall_time: float
    level: str
    fields: dict


def read_records(logdir, run=None, tag=None):
    raise NotImplementedError
