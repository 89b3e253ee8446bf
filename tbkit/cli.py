"""The ``tbkit`` command line. ``tbkit demo`` is the README's main job."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    from tbkit import demo

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tbkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train a small model with tbkit and serve TensorBoard on 127.0.0.1"
    )
    demo.add_argument("--logdir", default="logs", help="where runs go (default: ./logs)")
    demo.add_argument("--steps", type=_positive_int, default=1000, help="training steps")
    demo.add_argument("--port", type=int, default=None, help="TensorBoard port (default: 6006+)")
    demo.add_argument("--no-serve", action="store_true", help="train and log, serve nothing")
    demo.set_defaults(run=_demo)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int (got {text})")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
