"""A real ``tensorboard`` process on 127.0.0.1 and a free port, for tests; stopped by PID."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Send ``sig`` to the process we started (by its PID); kill it if it outlives ``timeout``."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# TensorBoard as on a server without TensorFlow: every "tensorflow*" import fails, so TensorBoard
# reads through its own file system layer (which reads s3:// with boto3).
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


@contextlib.contextmanager
def tensorboard(logdir: str, timeout: float = 60, without_tensorflow: bool = False
                ) -> Iterator[int]:  # fmt: skip
    """Run TensorBoard on ``logdir`` until it lists the tbkit plugin as enabled; yield its port.

    Raises:
        RuntimeError: it exited, or did not list the plugin within ``timeout`` seconds.
    """
    port = free_port()
    start = ["-c", WITHOUT_TENSORFLOW] if without_tensorflow else ["-m", "tensorboard.main"]
    proc = subprocess.Popen(
        [sys.executable, *start, "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not _lists_tbkit(port):
            if proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tensorboard did not list the tbkit plugin in {timeout} s")
            time.sleep(0.2)
        yield port
    finally:
        stop(proc, signal.SIGTERM, timeout=10)
        proc.stderr.close()


def _lists_tbkit(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/data/plugins_listing"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(json.load(response).get("tbkit", {}).get("enabled"))
    except OSError:
        return False
