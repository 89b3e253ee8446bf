"""The warning a logger gives before it hides an earlier run's records.

TensorBoard keeps, per tag, only the newest write at a step: a datum at a step at or below one
already written pre-empts the older data from that step on (``tbkit.data.events``). A run
started again in the same folder from step 0 therefore hides what the earlier run logged at
its steps, in TensorBoard, ``read_records`` and the tbkit tab alike. That is right, but it must
not be silent: the first call that writes looks at the event files the folder held when the
logger was created and says how many records it will supersede, and how to keep them.
"""

from __future__ import annotations

import glob
import os
import warnings

from tbkit.data import events
from tbkit.data import logdir as _logdir
from tbkit.data.errors import DataLossWarning, SupersedeWarning


def earlier_files(run_dir: str) -> list[str]:
    """The event files already in ``run_dir`` itself (nested runs are other runs), listed
    before the logger's writer adds its own. A folder that cannot be listed (a URL without
    its fsspec backend, no credentials) gives none: the check is a courtesy, never an error."""
    if "://" not in run_dir:
        return sorted(glob.glob(os.path.join(glob.escape(run_dir), "*tfevents*")))
    try:
        source = _logdir.Logdir(run_dir)
        return dict(source.runs()).get(".", [])
    except (ImportError, OSError, ValueError):
        return []


def warn_if_superseding(run_dir: str, paths: list[str], step: int) -> int:
    """Warn once if ``paths`` hold tbkit records at ``step`` or later; return how many. The
    count is per tag: the tags the new run writes are not known before it traces, and only
    those of them it writes again are hidden."""
    source = _logdir.LOCAL if "://" not in run_dir else _logdir.Logdir(run_dir)
    per_tag: dict[str, int] = {}
    top = step
    try:
        with warnings.catch_warnings():  # damage is the readers' to report, not the writer's
            warnings.simplefilter("ignore", DataLossWarning)
            for datum in events.kept(events.scan(".", paths, source=source)):
                if datum.step >= step and datum.series.kind != events.KEPT:  # a dump's steps
                    # come as data of their own
                    tag = datum.series.tag
                    per_tag[tag] = per_tag.get(tag, 0) + len(datum.values)
                    top = max(top, datum.step)
    except OSError:  # unreadable now: say nothing rather than fail the step
        return 0
    count = sum(per_tag.values())
    if count:
        tags = ", ".join(f"{tag!r} {n}" for tag, n in per_tag.items())
        warnings.warn(
            f"tbkit: {run_dir!r} already holds {count} records at steps {step}-{top} from an "
            f"earlier run (by tag: {tags}), and this run starts at step {step}: for each tag it "
            "writes again, TensorBoard, read_records and the tbkit tab keep the newest write "
            "at a step, so they will show this run's records instead of those (tbkit stats "
            "counts them as superseded). To keep them, log to a new run folder, or restore "
            "the step from a checkpoint before the first step (tf.train.Checkpoint(logger=log), "
            "or step=optimizer.iterations restored).",
            SupersedeWarning,
            stacklevel=4,
        )
    return count
