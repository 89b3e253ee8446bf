"""The read side on object storage: an s3:// logdir in a local S3 server (moto, on 127.0.0.1)
beside the same logdir on local disk.

Writes R runs x M tbkit records of ten fields (as ``bench/plugin_query.py`` does), uploads them
to a bucket of a moto server started here (stopped by PID at the end), then, for each of the
two logdirs, side by side:

- ``first page``: a TensorBoard without TensorFlow (as on a viewing machine; with TensorFlow it
  refuses s3://) from its start to the first ``/records`` page of the tbkit tab with rows;
- ``export``: ``tbkit export LOGDIR`` to JSON Lines, the whole logdir;
- ``refresh``: the plugin's store, loaded in full, then its next look after 1 000 records are
  appended to one run (the object uploaded again, grown), and a look with nothing new, whose
  requests are counted in the S3 server's log.

    python bench/remote_read.py            # 4 x 25 000 (100 000 records)
    python bench/remote_read.py --quick    # 4 x 5 000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from read_side import write_logdir

from tbkit.data.logdir import Logdir
from tbkit_plugin.store import Store

BUCKET = "bench"
APPENDED = 1_000
WITHOUT_TENSORFLOW = """
import importlib.abc, sys

class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("tensorflow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _NoTensorFlow())
from tensorboard import main
sys.argv[0] = "tensorboard"
main.run_main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen in {timeout} s")
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def first_page(logdir: str) -> float:
    """Seconds from starting a TensorBoard (no TensorFlow) to the tbkit tab's first rows."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WITHOUT_TENSORFLOW, "--logdir", logdir,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/data/plugin/tbkit/records?limit=100"

    def has_rows() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return bool(json.load(response)["rows"])
        except (OSError, ValueError, KeyError):
            return False

    try:
        wait_until(has_rows, 300, "the first page")
        return time.perf_counter() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def export_seconds(logdir: str) -> float:
    start = time.perf_counter()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "tbkit"), "export", logdir,
                    "-o", os.devnull], check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def requests_since(log: Path, since: int) -> list[str]:
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_bytes()[since:].decode(errors="replace"))
    return [line.split('"')[1] for line in text.splitlines() if '"' in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--per-run", type=int, default=25_000)
    parser.add_argument("--quick", action="store_true", help="4 x 5 000")
    args = parser.parse_args()
    if args.quick:
        args.per_run = 5_000
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "logs"
        grown_file, tail = write_logdir(root, args.runs, args.per_run, APPENDED)
        appended = tail.read_bytes()
        log = Path(folder) / "moto.log"
        port = free_port()
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
        os.environ.update(env)
        with open(log, "wb") as err:
            server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                       "-p", str(port)], stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_until(lambda: answers(env["AWS_ENDPOINT_URL"] + "/moto-api/"), 60, "moto")
            fs = Logdir(f"s3://{BUCKET}").fs
            fs.mkdir(BUCKET)
            for path in sorted(root.rglob("*tfevents*")):
                fs.put_file(str(path), f"{BUCKET}/logs/{path.relative_to(root)}")
            url = f"s3://{BUCKET}/logs"
            key = f"{BUCKET}/logs/{grown_file.relative_to(root)}"
            total = args.runs * args.per_run
            print(f"{args.runs} runs x {args.per_run:,} = {total:,} records, "
                  f"{sum(p.stat().st_size for p in root.rglob('*tfevents*')) / 2**20:.1f} MiB; "
                  "S3: moto on 127.0.0.1", flush=True)  # fmt: skip
            rows = []
            for name, page, export in (
                ("first page (TensorBoard start to first rows)", first_page, None),
                ("tbkit export, JSON Lines, whole logdir", None, export_seconds),
            ):
                measure = page or export
                local, remote = measure(str(root)), measure(url)
                rows.append((name, local, remote))
                print(f"  {name}: local {local:.2f} s, s3 {remote:.2f} s", flush=True)
            refresh = {}
            for where, logdir in (("local", str(root)), ("s3", url)):
                store = Store(logdir, min_interval=0)
                store.load()
                before = store.n
                if where == "local":
                    with open(grown_file, "ab") as f:
                        f.write(appended)
                else:  # uploaded again, grown (the local file has grown by now)
                    fs.pipe_file(key, grown_file.read_bytes())
                start = time.perf_counter()
                store.load()
                refresh[where] = time.perf_counter() - start
                assert store.n == before + APPENDED, (store.n, before)
                if where == "s3":
                    mark = log.stat().st_size
                    start = time.perf_counter()
                    store.load()
                    idle = time.perf_counter() - start
                    idle_requests = requests_since(log, mark)
            rows.append((f"store refresh after {APPENDED:,} appended", refresh["local"],
                         refresh["s3"]))  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    print(f"\n| {total:,} records | local | s3 (moto, 127.0.0.1) | s3 / local |")
    print("|---|---|---|---|")
    for name, local, remote in rows:
        print(f"| {name} | {local:.2f} s | {remote:.2f} s | {remote / local:.2f}x |")
    kinds = sorted({r.split(" HTTP/")[0].split("?")[0] + ("?list" if "list-type" in r else "")
                    for r in idle_requests})  # fmt: skip
    print(f"\nA look with nothing new: {idle:.3f} s, {len(idle_requests)} requests: {kinds}")


if __name__ == "__main__":
    main()
