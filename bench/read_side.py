"""The read side at scale: tbkit's event layer, ``read_records`` and the plugin's store beside
TensorBoard's own ``EventFileLoader`` (with TensorFlow installed, so its framing runs in C++),
on the same event files.

Writes R runs x M records of ten fields (event protos built directly, as
``bench/plugin_query.py`` does), then times each reader in a fresh process (so the peak RSS is
its own), the kinds interleaved round by round; reports medians and ratios:

- ``loader``: TensorBoard's ``EventFileLoader`` over every file: Event protos;
- ``frames``: :class:`tbkit.data.frames.FrameReader`: intact TFRecord frames only;
- ``events``: :class:`tbkit.data.events.RunReader`: frames, Event protos, tbkit data (Datums);
- ``decoded``: the event layer's whole-run reading with each object's JSON decoded
  (``events.scan`` / ``kept`` / ``objects``);
- ``read_records``: the public reader: the same plus a ``Record`` per object;
- ``store``: the plugin's columnar store, loaded in full; then ``refresh``: the store's next
  look after 10 000 records are appended to one run (what a refresh of the tab costs).

    python bench/read_side.py            # 4 x 250 000 (1 M records), 3 rounds
    python bench/read_side.py --quick    # 4 x 50 000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from plugin_query import TAG, fields, record_text
from tensorboard.compat.proto import event_pb2

from tbkit.data.frames import frame
from tbkit.summary import summary_pb

APPENDED = 10_000

# Each kind: code run in a fresh interpreter with ``root`` (the logdir) defined; it sets
# ``count`` (records or frames read) and may set ``extra`` (more timings, in seconds).
KINDS = {
    "loader": """
        import tensorflow  # noqa: F401  (EventFileLoader then frames with TensorFlow's C++)
        from tensorboard.backend.event_processing import event_file_loader
        from tbkit.data import logdir
        start = time.perf_counter()
        count = 0
        for _, paths in logdir.Logdir(root).runs():
            for path in paths:
                for event in event_file_loader.EventFileLoader(path).Load():
                    count += 1
    """,
    "frames": """
        from tbkit.data import frames, logdir
        start = time.perf_counter()
        count = 0
        for _, paths in logdir.Logdir(root).runs():
            for path in paths:
                for _ in frames.FrameReader(path).read():
                    count += 1
    """,
    "events": """
        from tbkit.data import events, logdir
        start = time.perf_counter()
        count = 0
        for name, paths in logdir.Logdir(root).runs():
            for datum in events.RunReader(name).read(paths):
                count += len(datum.values)
    """,
    "decoded": """
        from tbkit.data import events, logdir
        start = time.perf_counter()
        count = 0
        for name, paths in logdir.Logdir(root).runs():
            for datum in events.kept(events.scan(name, paths)):
                for _ in events.objects(datum):
                    count += 1
    """,
    "read_records": """
        import tbkit
        start = time.perf_counter()
        count = 0
        for _ in tbkit.read_records(root):
            count += 1
    """,
    "store": """
        from tbkit_plugin.store import Store
        start = time.perf_counter()
        store = Store(root, min_interval=0)
        store.load()
        count = store.n
        loaded = time.perf_counter()
        with open(append_to, "ab") as f:
            f.write(appended)
        refresh = time.perf_counter()
        store.load()
        assert store.n == count + APPENDED, (store.n, count)
        extra = {"refresh": time.perf_counter() - refresh}
        start += time.perf_counter() - loaded  # the store's figure is the full load alone
    """,
}

PRELUDE = """
import os, sys, time
root, append_to = sys.argv[1], sys.argv[2]
APPENDED = {appended}
appended = open(sys.argv[3], "rb").read()
extra = {{}}
"""

EPILOGUE = """
elapsed = time.perf_counter() - start
# VmHWM, not ru_maxrss: that one keeps the high-water mark of the forked parent across exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": elapsed, "count": count, "extra": extra,
                  "rss_mb": int(hwm.split()[1]) / 1024}))
"""


def write_logdir(root: Path, runs: int, per_run: int, appended: int = APPENDED
                 ) -> tuple[Path, Path]:  # fmt: skip
    """tbkit records of ten fields under ``root/run<r>``, and a file with the bytes of
    ``appended`` more records for run0 (to append after a first load); return both paths."""
    event = event_pb2.Event(summary=summary_pb.record_pb(TAG, {"x": 0}))
    value = event.summary.value[0]

    def frames_of(run: int, first: int, last: int) -> bytes:
        out = []
        for i in range(first, last):
            event.step, event.wall_time = i, 1.7e9 + i * 0.01
            value.tensor.string_val[0] = record_text(fields(run, i)).encode()
            out.append(frame(event.SerializeToString()))
        return b"".join(out)

    for r in range(runs):
        (root / f"run{r}").mkdir(parents=True)
        with open(root / f"run{r}" / f"events.out.tfevents.{1_700_000_000 + r}.bench", "wb") as f:
            for first in range(0, per_run, 50_000):
                f.write(frames_of(r, first, min(first + 50_000, per_run)))
    tail = root.parent / "appended.bin"
    tail.write_bytes(frames_of(0, per_run, per_run + appended))
    return next((root / "run0").iterdir()), tail


def measure(kind: str, root: Path, append_to: Path, appended: Path) -> dict:
    code = (PRELUDE.format(appended=APPENDED) + "import json\n" + textwrap.dedent(KINDS[kind])
            + EPILOGUE)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(root), str(append_to), str(appended)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--per-run", type=int, default=250_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 x 50 000, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.per_run, args.rounds = 50_000, 2
    total = args.runs * args.per_run
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "logs"
        append_to, appended = write_logdir(root, args.runs, args.per_run)
        size = sum(p.stat().st_size for p in root.rglob("*tfevents*"))
        print(f"{args.runs} runs x {args.per_run:,} records = {total:,} records, "
              f"{size / 2**20:.0f} MiB of event files", flush=True)  # fmt: skip
        results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):
            for kind in KINDS:
                if kind == "store":  # it appends: give every round the same starting files
                    original = append_to.read_bytes()
                result = measure(kind, root, append_to, appended)
                if kind == "store":
                    append_to.write_bytes(original)
                results[kind].append(result)
                print(f"  {kind:<13} {result['seconds']:7.2f} s  {result['count']:>9,}  "
                      f"{result['rss_mb']:6.0f} MB {result['extra'] or ''}",
                      flush=True)  # fmt: skip
    seconds = {kind: statistics.median(r["seconds"] for r in rs) for kind, rs in results.items()}
    rss = {kind: statistics.median(r["rss_mb"] for r in rs) for kind, rs in results.items()}
    refresh = statistics.median(r["extra"]["refresh"] for r in results["store"])
    print(f"\nmedians over {args.rounds} rounds, {total:,} records:")
    print("| reader | seconds | µs per record | peak RSS MB |")
    print("|---|---|---|---|")
    for kind in KINDS:
        print(f"| {kind} | {seconds[kind]:.2f} | {1e6 * seconds[kind] / total:.1f} | "
              f"{rss[kind]:.0f} |")  # fmt: skip
    print(f"| store refresh after {APPENDED:,} appended | {refresh:.3f} | | |")
    print("\nratios:")
    print(f"  EventFileLoader / event layer (frames + Events + tbkit data): "
          f"{seconds['loader'] / seconds['events']:.2f}x")  # fmt: skip
    print(f"  read_records / event layer with JSON decoded: "
          f"{seconds['read_records'] / seconds['decoded']:.2f}x")  # fmt: skip
    print(f"  store refresh / store full load: {100 * refresh / seconds['store']:.2f} %")


if __name__ == "__main__":
    main()
