"""The ``tbkit`` command line: ``demo``, ``export``, ``tail`` and ``stats`` (docs/cli.md).

``tbkit demo`` is the README's main job. The reading commands never import TensorFlow. A user
error (a missing logdir, no records, a bad ``--where``) is one line on stderr and exit status 1
(nothing to read) or 2 (a bad argument), never a traceback; what it and the warnings print has
control characters escaped (:mod:`tbkit.cli.terminal`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from typing import TextIO

from tbkit.cli.terminal import printable, printable_json


def _demo(args: argparse.Namespace) -> int:
    from tbkit.cli import demo

    run = demo.train(args.logdir, args.steps)
    print(f"tbkit demo: {args.steps} steps logged to {run}", flush=True)
    if args.no_serve:
        return 0
    from tensorboard import program

    argv = [None, "--logdir", args.logdir, "--host", "127.0.0.1"]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    board = program.TensorBoard()
    board.configure(argv=argv)
    url = board.launch()
    print(f"TensorBoard at {url} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


class CommandError(Exception):
    """A one-line message for stderr and the exit status that goes with it."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def _utf8_stdout() -> Iterator[TextIO]:
    """Standard output as UTF-8 text with no newline translation (CSV writes its own CRLF)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a replaced sys.stdout that only takes text
        yield sys.stdout
        return
    sys.stdout.flush()
    out = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
    try:
        yield out
    finally:
        try:
            out.flush()
        except BrokenPipeError:  # the reader (head, jq) has gone: drop the rest quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), buffer.fileno())
        out.detach()


@contextlib.contextmanager
def _atomic_output(path: str) -> Iterator[TextIO]:
    """A file that appears at ``path`` whole, or not at all if the export fails or is stopped."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".tbkit-export-", dir=folder)
    except OSError as e:  # name the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror, path) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
        with open(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


@contextlib.contextmanager
def _progress_bars(show: bool):
    """A ``track(description, total_bytes)`` for :mod:`tbkit.cli.export`: rich bars on stderr when
    ``show``, otherwise nothing at all."""
    if not show:
        yield lambda description, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description:>6}"), BarColumn(), DownloadColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bars:

        def track(description: str, total: int):
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)

        yield track


def _export(args: argparse.Namespace) -> int:
    from tbkit.cli import export
    from tbkit.data import query
    from tbkit.data.errors import TbkitValueError

    suffix = os.path.splitext((args.output or "").lower().rstrip("/"))[1]
    fmt = args.format or {".csv": "csv", ".parquet": "parquet"}.get(suffix, "jsonl")
    if fmt == "parquet" and not args.output:
        raise CommandError("--format parquet writes a folder: give it with -o DIR", 2)
    to_terminal = args.output is None and sys.stdout.isatty()
    show = sys.stderr.isatty() and not to_terminal
    with _progress_bars(show) as track:
        try:
            job = export.prepare(args.logdir, runs=args.runs or (), tags=args.tags or (),
                                 where=args.where, format=fmt, track=track)  # fmt: skip
            if fmt == "parquet":
                count = job.write_parquet(args.output, track)
        except query.QueryError as e:
            raise CommandError(f"--where: {e.message} at {e.position}", 2) from None
        except export.ExportError as e:
            raise CommandError(str(e), e.code) from None
        except (TbkitValueError, ImportError) as e:  # a used output folder, no pyarrow
            raise CommandError(str(e), 2) from None
        if fmt != "parquet":
            output = _atomic_output(args.output) if args.output else _utf8_stdout()
            with output as out:
                count = job.write(out, track, terminal=to_terminal)
    if show:
        print(f"{count} records to {printable(args.output or 'stdout')}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _interruptible() -> Iterator[threading.Event]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets the event it yields.

    Python drops a KeyboardInterrupt that lands inside a finalizer ("Exception ignored in"),
    and a polling loop runs many; the loop checks the event too, so one Ctrl-C always ends it.
    """
    interrupted = threading.Event()

    def interrupt(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _tail(args: argparse.Namespace) -> int:
    from tbkit.cli import tail

    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    with _utf8_stdout() as out, _interruptible() as interrupted:
        try:
            count = tail.tail(args.logdir, out, follow=args.follow, interval=args.interval,
                              color=color, last=args.lines, stopped=interrupted.is_set)  # fmt: skip
        except KeyboardInterrupt:
            return 0
    if count == 0 and not args.follow:
        raise CommandError(f"no tbkit records under {args.logdir!r}", 1)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from tbkit.cli import stats

    report = stats.collect(args.logdir)
    if report["files"] == 0:
        raise CommandError(f"no event files under {args.logdir!r}", 1)
    with _utf8_stdout() as out:
        if args.json:
            text = json.dumps(report, indent=2, ensure_ascii=False)
            out.write((printable_json(text) if sys.stdout.isatty() else text) + "\n")
        else:
            out.write(stats.render(report, top=args.top))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tbkit",
        description="tbkit's demo, and a logdir's records read without TensorFlow (docs/cli.md).",
        epilog="Exit status: 0 done, 1 nothing to read, 2 a bad argument.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train a small model with tbkit and serve TensorBoard on 127.0.0.1"
    )
    demo.add_argument("--logdir", default="logs", help="where runs go (default: ./logs)")
    demo.add_argument("--steps", type=_positive_int, default=1000, help="training steps")
    demo.add_argument("--port", type=int, default=None, help="TensorBoard port (default: 6006+)")
    demo.add_argument("--no-serve", action="store_true", help="train and log, serve nothing")
    demo.set_defaults(run=_demo)

    export = commands.add_parser(
        "export", help="write records as JSON Lines or CSV, filtered (constant memory)"
    )
    export.add_argument("logdir", help="the folder TensorBoard would be pointed at")
    export.add_argument(
        "--run",
        action="append",
        dest="runs",
        metavar="R",
        help="only this run (exact name, e.g. exp1/train); repeatable",
    )
    export.add_argument(
        "--tag", action="append", dest="tags", metavar="T", help="only this tag; repeatable"
    )
    export.add_argument(
        "--where",
        metavar="EXPR",
        help="a filter, e.g. 'loss > 2 and level >= warning' (docs/query.md)",
    )
    export.add_argument(
        "--format",
        choices=("jsonl", "csv", "parquet"),
        help="default: csv if --output ends in .csv, else jsonl; parquet writes a folder "
             "(-o DIR) with one run=NAME/ folder per run",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export.set_defaults(run=_export)

    tail = commands.add_parser("tail", help="print records as they are written")
    tail.add_argument("logdir", help="the folder TensorBoard would be pointed at")
    tail.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep following new records, files and runs until Ctrl-C",
    )
    tail.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often -f looks for new data (default: 1)",
    )
    tail.add_argument("-n", "--lines", type=_non_negative_int, default=None, metavar="N",
                      help="start with the N most recent records (default: all)")  # fmt: skip
    tail.set_defaults(run=_tail)

    stats = commands.add_parser(
        "stats", help="bytes, events and steps per run, plugin and tag: where the bloat is"
    )
    stats.add_argument("logdir", help="the folder TensorBoard would be pointed at")
    stats.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    stats.add_argument(
        "--top",
        type=_non_negative_int,
        default=20,
        metavar="N",
        help="tags to list, largest first (default: 20; 0: all)",
    )
    stats.set_defaults(run=_stats)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int (got {text})")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0 (got {text})")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number (got {text})")
    return value


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message).removeprefix("tbkit: ")
    print(f"tbkit: warning: {printable(text)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return args.run(args)
    prog = f"tbkit {args.command}"
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.run(args)
        except CommandError as e:
            print(f"{prog}: {printable(str(e))}", file=sys.stderr)
            return e.code
        except BrokenPipeError:  # the reader has gone (see _utf8_stdout): not an error
            return 0
        except OSError as e:  # a missing logdir, an output that cannot be written
            text = f"{e.strerror}: {e.filename!r}" if e.strerror else str(e)
            print(f"{prog}: {printable(text)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
