"""Writing a run folder again in one test process.

TensorFlow names event files ``events.out.tfevents.<seconds>.<host>.<pid>.<n>.v2``, ``n`` a
counter of the process's writers, and readers (TensorBoard's and tbkit's) take a run's files in
name order. Two writers of one folder made within the same second sort by ``n`` as text, so
writer 10 would be read before writer 9 and a resumed run's data before the data it resumes.
"""

from __future__ import annotations

import time


def next_second() -> None:
    """Wait until the clock enters a new second, so a new writer's file sorts after the last."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
