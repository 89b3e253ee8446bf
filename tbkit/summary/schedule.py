"""Sampling policies: which steps each level's summaries are recorded on.

A policy is a :class:`Schedule`: a piecewise interval over steps. ``every=N`` is the one-phase
schedule ``Schedule({0: N})``. In a phase that starts at step ``s`` with interval ``n`` a step
records when ``step % n == 0``. The decision is made in the graph from the step tensor, so a
traced step never freezes a Python int.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected
from tbkit.data.levels import LEVELS, level_index

#: Default interval per level; a user's ``every=`` dict overrides only the keys it names.
DEFAULT_EVERY = {"debug": 1000, "info": 100, "warning": 1, "error": 1}

_INT64_MAX = 2**63 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Schedule:
    """A step-dependent recording interval: ``{first_step: interval, ...}``.

    ``Schedule({0: 10, 1000: 100})`` records every 10 steps below 1 000 and every 100 from
    1 000 on. A step records when ``step % interval == 0`` for the phase it falls in.
    """

    __slots__ = ("_starts", "_intervals")

    def __init__(self, phases: Mapping[int, int]):
        if not isinstance(phases, Mapping) or not phases:
            raise TbkitTypeError(
                expected("phases", "a non-empty mapping of first step to interval", phases)
            )
        starts = sorted(phases)
        for start in starts:
            if not _is_int(start) or start < 0:
                raise TbkitValueError(
                    expected("phases", "keyed by non-negative int steps", start)
                )
            interval = phases[start]
            if not _is_int(interval) or interval <= 0:
                raise TbkitValueError(
                    expected(f"phases[{start}]", "a positive int interval", interval)
                )
        if starts[0] != 0:
            raise TbkitValueError(f"'phases' must start at step 0 (got first step {starts[0]}).")
        self._starts = tuple(starts)
        self._intervals = tuple(phases[s] for s in starts)

    @classmethod
    def every(cls, n: int) -> Schedule:
        """Record every ``n`` steps."""
        return cls({0: n})

    @classmethod
    def log_spaced(cls, base: int = 10) -> Schedule:
        """Record steps 0…base-1, then every ``base`` up to base²-1, every base² up to base³-1….

        With the default base: 0–9, 10, 20, …, 90, 100, 200, …, 900, 1 000, 2 000, ….
        """
        if not _is_int(base) or base < 2:
            raise TbkitValueError(expected("base", "an int of at least 2", base))
        phases, interval, start = {0: 1}, 1, base
        while start <= _INT64_MAX:
            phases[start] = interval = interval * base
            start *= base
        return cls(phases)

    @property
    def phases(self) -> dict[int, int]:
        """The phases as ``{first_step: interval}``."""
        return dict(zip(self._starts, self._intervals, strict=True))

    @property
    def intervals(self) -> tuple[int, ...]:
        """The interval of each phase, in phase order."""
        return self._intervals

    def interval_at(self, step: int) -> int:
        """The interval in force at ``step`` (pure Python)."""
        return self._intervals[bisect.bisect_right(self._starts, step) - 1]

    def records(self, step: int) -> bool:
        """Whether ``step`` records (pure Python twin of :meth:`predicate`)."""
        return step % self.interval_at(step) == 0

    def predicate(self, step):
        """The in-graph decision for an int64 scalar ``step`` tensor: a scalar bool tensor."""
        import tensorflow as tf

        if len(self._intervals) == 1:
            (interval,) = self._intervals
            if interval == 1:
                return tf.constant(True)
            return tf.equal(tf.math.floormod(step, interval), 0)
        starts = tf.constant(self._starts, tf.int64)
        index = tf.searchsorted(starts, tf.reshape(step, [1]), side="right")[0] - 1
        interval = tf.gather(tf.constant(self._intervals, tf.int64), index)
        return tf.equal(tf.math.floormod(step, interval), 0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self._starts == other._starts and self._intervals == other._intervals

    def __hash__(self) -> int:
        return hash((self._starts, self._intervals))

    def __repr__(self) -> str:
        if len(self._starts) == 1:
            return f"Schedule.every({self._intervals[0]})"
        return f"Schedule({self.phases!r})"


def as_schedule(every: Any, arg: str = "every") -> Schedule:
    """Turn an ``every=`` value (positive int or Schedule) into a Schedule."""
    if isinstance(every, Schedule):
        return every
    if _is_int(every) and every > 0:
        return Schedule({0: every})
    raise TbkitValueError(expected(arg, "a positive int or a Schedule", every))


def resolve_every(every: Mapping[str, Any] | None) -> dict[str, Schedule]:
    """Merge a user's per-level ``every=`` dict over :data:`DEFAULT_EVERY`."""
    merged: dict[str, Any] = dict(DEFAULT_EVERY)
    if every is not None:
        if not isinstance(every, Mapping):
            raise TbkitTypeError(
                expected("every", "a dict of level name to a positive int or a Schedule", every)
            )
        for level, value in every.items():
            name = LEVELS[level_index(level, arg="every")]
            merged[name] = as_schedule(value, arg=f"every[{level!r}]")
    return {level: as_schedule(value) for level, value in merged.items()}
