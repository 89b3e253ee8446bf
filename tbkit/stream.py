"""A logdir's tbkit records in constant memory: the same records as ``tbkit.read_records``.

``read_records`` buffers each run because TensorBoard keeps one value per (tag, step): a datum at
the same or a smaller step than the last one of its tag pre-empts the earlier data of that tag
at that step or later. Here a cheap first pass (events only, no JSON unless asked for the field
names) notes each tag's *restarts* — the data whose step is not above the one before — and a
second pass yields a datum only if no later restart of its tag has a step at or below its own.
Memory is per tag and per restart, never per record. Each file is read up to the size it had
when the first pass began, so both passes see the same data while a run is still being written.
"""

from __future__ import annotations

import bisect
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from tbkit import query, read
from tbkit.errors import DataLossWarning

FRAME_OVERHEAD = 16  # length (8) and its CRC (4) before a TFRecord's data, the data's CRC after
_REPORT_EVERY = 1 << 18  # bytes between progress reports

Progress = Callable[[int], None]  # called with the number of bytes just read


def _warn(message: str) -> None:
    warnings.warn(f"tbkit: {message}", DataLossWarning, stacklevel=3)


@dataclass
class _Restarts:
    """One tag's restarts in write order, and the smallest step among each and the later ones."""

    seqs: list[int] = field(default_factory=list)
    low: list[int] = field(default_factory=list)

    def add(self, seq: int, step: int) -> None:
        self.seqs.append(seq)
        self.low.append(step)

    def finish(self) -> None:
        for i in range(len(self.low) - 2, -1, -1):
            self.low[i] = min(self.low[i], self.low[i + 1])

    def survives(self, seq: int, step: int) -> bool:
        i = bisect.bisect_right(self.seqs, seq)  # the first restart written after this datum
        return i == len(self.seqs) or step < self.low[i]


@dataclass
class RunPlan:
    """What the first pass learned about one run; :func:`run_records` streams it."""

    name: str
    files: list[tuple[str, int]]  # event file path, size when the scan began
    versions: dict[str, int] = field(default_factory=dict)  # decided tags: schema version
    data: Counter = field(default_factory=Counter)  # tbkit tag → data written (pre-empted too)
    restarts: dict[str, _Restarts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings about tags, for the second pass
    fields: dict[str, dict[str, None]] | None = None  # per tag: flat field names, if collected

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)

    def tags(self) -> list[str]:
        """The run's tbkit tags that hold data, in the order they were first written."""
        return list(self.data)

    def select(self, tags: Iterable[str]) -> None:
        """Keep only these tags (pre-emption is per tag, so the others don't matter)."""
        keep = set(tags)
        for name in [name for name in self.data if name not in keep]:
            del self.data[name]


def frames(path: str, size: int, progress: Progress | None = None) -> Iterator[tuple[int, bytes]]:
    """The intact frames of one file that end by byte ``size`` (its size at the first look)."""
    reported = 0
    for offset, data in read.iter_frames(path):
        end = offset + FRAME_OVERHEAD + len(data)
        if end > size:  # finished after the first look: left for the next export
            break
        yield offset, data
        if progress is not None and end - reported >= _REPORT_EVERY:
            progress(min(end, size) - reported)
            reported = min(end, size)
    if progress is not None and size > reported:
        progress(size - reported)


def _events(path: str, size: int, progress: Progress | None) -> Iterator[event_pb2.Event]:
    for offset, data in frames(path, size, progress):
        try:
            yield event_pb2.Event.FromString(data)
        except DecodeError:
            _warn(f"skipped a record that is not an Event in {path} at byte offset {offset}.")


def _string_data(plan: RunPlan, progress: Progress | None, decide: bool):
    """Yield ``(event, value)`` for every string datum of the run, in write order.

    With ``decide``, settle each tag's schema version from its first metadata as
    ``read_records`` does (warning about newer schemas) and skip data of tags known not to be
    tbkit's; otherwise leave the choice to the caller, who has the plan's final versions.
    """
    for path, size in plan.files:
        for event in _events(path, size, progress):
            for value in event.summary.value:
                name = value.tag
                if decide and name not in plan.versions and value.metadata.plugin_data.plugin_name:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        plan.versions[name] = read.schema_version_of(plan.name, name,
                                                                     value.metadata)  # fmt: skip
                    plan.notes += [str(w.message) for w in caught]
                if decide and plan.versions.get(name) == read.NOT_OURS:
                    continue
                if value.tensor.dtype == types_pb2.DT_STRING:
                    yield event, value


def plan_run(
    name: str, paths: Iterable[str], progress: Progress | None = None, fields: bool = False
) -> RunPlan:
    """First pass over one run's event files: tag versions, data counts and restarts.

    It warns about nothing (the second pass does), so damage is reported once. Data are
    numbered per tag: a tag's data are the same in both passes whatever happens to other tags.
    With ``fields``, it also decodes every datum and collects each tag's flat field names in
    first-seen order (:func:`field_names`); pre-empted data count there too.
    """
    plan = RunPlan(name, [(path, file_size(path)) for path in paths])
    last: dict[str, int] = {}
    bad: Counter = Counter()
    if fields:
        plan.fields = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)
        for event, value in _string_data(plan, progress, decide=True):
            name, step = value.tag, event.step
            if name in last and step <= last[name]:
                plan.restarts.setdefault(name, _Restarts()).add(plan.data[name], step)
            last[name] = step
            plan.data[name] += 1
            if plan.fields is not None:
                names = plan.fields.setdefault(name, {})
                for record in read.decode_datum(plan.name, name, step, 0.0, value.tensor, bad):
                    names.update(dict.fromkeys(query.flatten(record.fields)))
    for restarts in plan.restarts.values():
        restarts.finish()
    for name in list(plan.data):
        if plan.versions.get(name, read.NOT_OURS) == read.NOT_OURS:
            del plan.data[name]  # never declared, or declared another plugin's
    return plan


def field_names(plan: RunPlan, progress: Progress | None = None) -> list[str]:
    """The flat field names of the plan's (selected) tags: per tag in first-written order, each
    tag's names in first-seen order, as the plugin's schema lists them.

    From the first pass when it collected them and no selected tag was resumed; otherwise (a
    pre-empted datum may hold a field no kept record has) from a pass over the kept records.
    """
    tags = plan.tags()
    if plan.fields is None or any(tag in plan.restarts for tag in tags):
        per_tag: dict[str, dict[str, None]] = {tag: {} for tag in tags}
        for record in run_records(plan, progress):
            per_tag[record.tag].update(dict.fromkeys(query.flatten(record.fields)))
    else:
        per_tag = plan.fields
        if progress is not None:
            progress(plan.size)  # nothing left to read
    names: dict[str, None] = {}
    for tag in tags:
        names.update(per_tag.get(tag, {}))
    return list(names)


def file_size(path: str) -> int:
    """The size of a file in bytes, 0 if it is gone."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # gone since it was listed


def run_records(plan: RunPlan, progress: Progress | None = None) -> Iterator[read.Record]:
    """Second pass: the run's records in write order, after pre-emption, as ``read_records``."""
    for note in plan.notes:
        warnings.warn(note, DataLossWarning, stacklevel=2)
    bad: Counter = Counter()
    seen: Counter = Counter()  # per tag: data so far, the numbering of the first pass
    for event, value in _string_data(plan, progress, decide=False):
        name = value.tag
        if name not in plan.data:
            continue  # not tbkit's
        seq = seen[name]
        seen[name] += 1
        restarts = plan.restarts.get(name)
        if restarts is not None and not restarts.survives(seq, event.step):
            continue
        yield from read.decode_datum(plan.name, name, event.step, event.wall_time, value.tensor,
                                     bad)  # fmt: skip
    for name, count in bad.items():
        if count > 1:
            _warn(f"skipped {count} objects that do not parse in run {plan.name!r} tag {name!r}.")


def logdir_runs(logdir: str | os.PathLike[str]) -> list[tuple[str, list[str]]]:
    """``tbkit.read.run_files`` after the checks ``read_records`` makes on ``logdir``.

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        NotADirectoryError: ``logdir`` is not a directory.
    """
    root = os.fspath(logdir)
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise NotADirectoryError(f"logdir {root!r} is not a directory")
        raise FileNotFoundError(f"logdir {root!r} does not exist")
    return read.run_files(root)


def records(
    logdir: str | os.PathLike[str], run: str | None = None, tag: str | None = None
) -> Iterator[read.Record]:
    """``tbkit.read_records(logdir, run, tag)`` in constant memory (two passes per run)."""
    for name, paths in logdir_runs(logdir):
        if run in (None, name):
            plan = plan_run(name, paths)
            if tag is not None:
                plan.select([tag])
            yield from run_records(plan)
