"""``tbkit stats``: where a logdir's bytes go — per run, per plugin and per tag, largest first.

Every event is counted, not only tbkit's: scalars, histograms, images, text, graphs, records.
Frames come from the event layer's :class:`~tbkit.data.frames.FrameReader` and are parsed
with TensorBoard's protos, no TensorFlow. A frame's bytes (its data plus the
16 bytes of TFRecord framing) go to its summary values: each value its own encoded size plus an
equal share of the rest of the event. An event without a summary counts under a pseudo-tag named
for its kind, e.g. ``(graph_def)``. Bytes no intact record covers (damage, or a last record
still being written) are a run's ``unreadable_bytes``. Steps are distinct step values.
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2

from tbkit.cli.terminal import printable
from tbkit.data import events, frames
from tbkit.data import logdir as _logdir
from tbkit.data.errors import DataLossWarning
from tbkit.data.metadata import PLUGIN_NAME

_VALUE_PLUGINS = {"simple_value": "scalars", "histo": "histograms", "image": "images",
                  "audio": "audio", "obsolete_old_style_histogram": "histograms"}  # fmt: skip
_GRAPH_EVENTS = {"graph_def", "meta_graph_def", "tagged_run_metadata"}
_RECORD_PLUGINS = {PLUGIN_NAME, events.TEXT_PLUGIN}  # the tags that hold records


@dataclass
class Tally:
    """Bytes, events and the steps seen (consecutive repeats dropped; counted at the end), and
    whether they ever went back."""

    bytes: int = 0
    events: int = 0
    steps: array = field(default_factory=lambda: array("q"))
    went_back: bool = False  # a step at or below the one before: TensorBoard's restart

    def add(self, nbytes: int, step: int) -> None:
        self.bytes += nbytes
        self.events += 1
        if not self.steps or self.steps[-1] != step:
            self.went_back = self.went_back or bool(self.steps) and step < self.steps[-1]
            self.steps.append(step)
        else:  # a second event of the tag at one step
            self.went_back = True


def _distinct(tallies: Iterable[Tally]) -> int:
    parts = [np.frombuffer(t.steps, dtype=np.int64) for t in tallies if t.steps]
    return len(np.unique(np.concatenate(parts))) if parts else 0


@dataclass
class RunStats:
    """One run's tallies per tag, with each tag's plugin."""

    name: str
    files: int = 0
    events: int = 0
    unreadable: int = 0
    tags: dict[str, Tally] = field(default_factory=dict)
    plugins: dict[str, str] = field(default_factory=dict)  # tag → plugin

    def tally(self, tag: str, plugin: str | None) -> Tally:
        if tag not in self.tags:
            self.tags[tag] = Tally()
            self.plugins[tag] = plugin or "(unknown)"
        elif plugin and self.plugins[tag] == "(unknown)":
            self.plugins[tag] = plugin
        return self.tags[tag]

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tags.values()) + self.unreadable


def _plugin(value: Any) -> str | None:
    name = value.metadata.plugin_data.plugin_name
    return name or _VALUE_PLUGINS.get(value.WhichOneof("value"))


def scan_run(name: str, paths: Iterable[str], source: _logdir.Logdir = _logdir.LOCAL
             ) -> RunStats:  # fmt: skip
    """Tally one run's event files."""
    run = RunStats(name)
    for path in paths:
        size, covered = source.size(path), 0
        reader = frames.FrameReader(path, source=source)
        for _, data in reader.read(size):
            nbytes = frames.OVERHEAD + len(data)
            covered += nbytes
            try:
                event = event_pb2.Event.FromString(data)
            except DecodeError:
                run.unreadable += nbytes
                continue
            run.events += 1
            kind = event.WhichOneof("what") or "empty"
            values = event.summary.value if kind == "summary" else ()
            if not values:
                plugin = "graphs" if kind in _GRAPH_EVENTS else "(event)"
                run.tally(f"({kind})", plugin).add(nbytes, event.step)
                continue
            sizes = [value.ByteSize() for value in values]
            share, extra = divmod(nbytes - sum(sizes), len(sizes))
            for i, (value, own) in enumerate(zip(values, sizes, strict=True)):
                tally = run.tally(value.tag, _plugin(value))
                tally.add(own + share + (extra if i == 0 else 0), event.step)
        if reader.skipped:  # not an event file after all (a FIFO, a dangling link): warned
            continue
        run.files += 1
        run.unreadable += max(0, size - covered)
    return run


def _superseded(run: RunStats, paths: list[str], source: _logdir.Logdir) -> int:
    """Records of ``run`` that newer writes pre-empted; the run's records are read only if a
    tbkit or text tag's steps ever went back (a run restarted in the same folder)."""
    if not any(run.plugins[tag] in _RECORD_PLUGINS and tally.went_back
               for tag, tally in run.tags.items()):  # fmt: skip
        return 0
    with warnings.catch_warnings():  # damage was the tallies' to report
        warnings.simplefilter("ignore", DataLossWarning)
        return events.superseded(events.scan(run.name, paths, source=source))


def _largest_first(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (-r["bytes"], [str(v) for v in r.values()]))


def collect(logdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Scan every run under ``logdir``; the result is what ``tbkit stats --json`` prints.

    Raises:
        FileNotFoundError, NotADirectoryError: ``logdir`` is missing or not a directory.
    """
    source = _logdir.Logdir(logdir).check()
    listed = list(source.runs())
    runs = [scan_run(name, paths, source) for name, paths in listed]
    superseded = [_superseded(run, paths, source)
                  for run, (_, paths) in zip(runs, listed, strict=True)]  # fmt: skip
    by_plugin: dict[str, list[Tally]] = {}
    tags = []
    for run in runs:
        for tag, tally in run.tags.items():
            plugin = run.plugins[tag]
            by_plugin.setdefault(plugin, []).append(tally)
            tags.append({"run": run.name, "tag": tag, "plugin": plugin, "bytes": tally.bytes,
                         "events": tally.events, "steps": _distinct([tally])})  # fmt: skip
    return {
        "logdir": _logdir.as_text(os.fspath(logdir)),
        "bytes": sum(run.bytes for run in runs),
        "events": sum(run.events for run in runs),
        "files": sum(run.files for run in runs),
        "unreadable_bytes": sum(run.unreadable for run in runs),
        "runs": _largest_first(
            [
                {
                    "run": run.name,
                    "bytes": run.bytes,
                    "events": run.events,
                    "steps": _distinct(run.tags.values()),
                    "files": run.files,
                    "unreadable_bytes": run.unreadable,
                    "superseded": pre_empted,
                }
                for run, pre_empted in zip(runs, superseded, strict=True)
            ]
        ),  # fmt: skip
        "plugins": _largest_first(
            [
                {
                    "plugin": plugin,
                    "bytes": sum(t.bytes for t in tallies),
                    "events": sum(t.events for t in tallies),
                    "tags": len(tallies),
                    "steps": _distinct(tallies),
                }
                for plugin, tallies in by_plugin.items()
            ]
        ),  # fmt: skip
        "tags": _largest_first(tags),
    }


def human_bytes(n: int) -> str:
    """``1536`` → ``1.5 KiB``; below 1 KiB, exact bytes."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _table(headers: list[str], rows: list[list[str]], left: int) -> list[str]:
    """Columns padded to width: the first ``left`` ones left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [c.ljust(w) if i < left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
    return lines


def render(stats: dict[str, Any], top: int = 20) -> str:
    """The report as text tables; ``top`` caps the tag table (0: every tag)."""
    total = stats["bytes"] or 1

    def common(r: dict) -> list[str]:
        return [human_bytes(r["bytes"]), f"{100 * r['bytes'] / total:.1f}%",
                f"{r['events']:,}", f"{r['steps']:,}"]  # fmt: skip

    lines = [f"{printable(stats['logdir'])}: {len(stats['runs'])} runs, "
             f"{stats['files']} event files, {human_bytes(stats['bytes'])}, "
             f"{stats['events']:,} events"]  # fmt: skip
    if stats["unreadable_bytes"]:
        lines.append(f"{human_bytes(stats['unreadable_bytes'])} in no intact record "
                     "(damage, or a record still being written)")  # fmt: skip
    numbers = ["bytes", "share", "events", "steps"]
    superseded = sum(r["superseded"] for r in stats["runs"])
    if superseded:
        lines.append(f"{superseded:,} records superseded by newer writes at the same or lower "
                     "steps (a run restarted in its folder; see docs/guide.md)")  # fmt: skip
    extra = ["superseded"] if superseded else []
    runs = [[printable(r["run"]), *common(r), *([f"{r['superseded']:,}"] if extra else [])]
            for r in stats["runs"]]  # fmt: skip
    lines += ["", *_table(["run", *numbers, *extra], runs, 1)]
    plugins = [[printable(r["plugin"]), *common(r), str(r["tags"])] for r in stats["plugins"]]
    lines += ["", *_table(["plugin", *numbers, "tags"], plugins, 1)]
    shown = stats["tags"] if top == 0 else stats["tags"][:top]
    tags = [[printable(r["run"]), printable(r["tag"]), printable(r["plugin"]), *common(r),
             f"{r['bytes'] // r['events']:,}"]
            for r in shown]  # fmt: skip
    lines += ["", *_table(["run", "tag", "plugin", *numbers, "bytes/event"], tags, 3)]
    if len(shown) < len(stats["tags"]):
        lines.append(f"… {len(stats['tags']) - len(shown)} more tags (--top 0 shows all)")
    return "\n".join(lines) + "\n"
