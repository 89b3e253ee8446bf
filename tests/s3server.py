"""A real S3 API (moto's server) on 127.0.0.1 and a free port, for tests; stopped by PID.

The client side is configured the way users configure it, through the environment
(``AWS_ENDPOINT_URL`` and the usual credentials), so the same settings reach s3fs, boto3 and
any subprocess a test starts.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tbserver import free_port, stop


def client_env(endpoint: str) -> dict[str, str]:
    """Environment variables that point AWS clients at ``endpoint`` with test credentials and
    keep them off the machine's own configuration and the EC2 metadata service."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}  # fmt: skip


@contextlib.contextmanager
def moto_server(request_log: Path, timeout: float = 60) -> Iterator[str]:
    """Run moto's S3 server, its request log going to ``request_log``; yield its endpoint."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(request_log, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start: {request_log.read_text()}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        stop(proc, timeout=10)
