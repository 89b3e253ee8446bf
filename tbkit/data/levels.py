"""Level names, least to most severe: a record's ``level`` is one of them.

Part of the contract that the write side and every reader share; imports no TensorFlow.
"""

from __future__ import annotations

from typing import Any

from tbkit.data.errors import TbkitValueError, expected

#: Level names, least to most severe. A level records when it is at or above the threshold.
LEVELS = ("debug", "info", "warning", "error")

#: Each level's rank: 0 for debug … 3 for error.
RANK = {name: rank for rank, name in enumerate(LEVELS)}


def level_index(level: Any, arg: str = "level") -> int:
    """Return the rank of ``level`` (0 for debug … 3 for error), or raise naming the valid ones."""
    if isinstance(level, str) and level.lower() in RANK:
        return RANK[level.lower()]
    valid = ", ".join(repr(name) for name in LEVELS)
    raise TbkitValueError(expected(arg, f"one of {valid}", level))
