"""Object stores on 127.0.0.1 and free ports, for tests, stopped by PID: a real S3 API
(moto's server) and a GCS emulator (gcp-storage-emulator).

Clients are configured the way users configure them, through the environment (the endpoint and
the usual credentials), so the same settings reach s3fs, gcsfs, boto3 and any subprocess a
test starts. Nothing reaches off the machine: the EC2 and GCE metadata probes are turned off.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
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


def gcs_env(endpoint: str) -> dict[str, str]:
    """Environment variables that point gcsfs at an emulator, with anonymous access.

    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` turns off gcsfs's gRPC probe for a bucket's
    type, which an emulator does not answer (each probe would wait 60 s)."""
    return {"STORAGE_EMULATOR_HOST": endpoint, "NO_GCE_CHECK": "true",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "GOOGLE_APPLICATION_CREDENTIALS": ""}  # fmt: skip


#: fsspec's configuration for s3fs (the ``FSSPEC_S3`` variable): short timeouts and one attempt
#: per request, so a test sees a paused server's error in seconds, not minutes.
SHORT_TIMEOUTS = '{"config_kwargs": {"connect_timeout": 1, "read_timeout": 2, "retries": ' \
                 '{"max_attempts": 1}}}'  # fmt: skip


@contextlib.contextmanager
def _serving(command: list[str], ready: str, log: Path, timeout: float,
             env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env=None if env is None else {**os.environ, **env})  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(ready, timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[2]} did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield proc
    finally:
        stop(proc, timeout=10)


@contextlib.contextmanager
def moto_server(request_log: Path, timeout: float = 60, check_keys: bool = False
                ) -> Iterator[str]:  # fmt: skip
    """Run moto's S3 server, its request log going to ``request_log``; yield its endpoint.

    With ``check_keys``, every request must be signed by a key moto knows (none is)."""
    with moto_process(request_log, timeout, check_keys) as (endpoint, _):
        yield endpoint


@contextlib.contextmanager
def moto_process(request_log: Path, timeout: float = 60, check_keys: bool = False
                 ) -> Iterator[tuple[str, subprocess.Popen]]:  # fmt: skip
    """:func:`moto_server`, yielding its process too (a test may pause it by PID)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_keys else None
    with _serving(command, endpoint + "/moto-api/", request_log, timeout, env) as proc:
        yield endpoint, proc


@contextlib.contextmanager
def gcs_emulator(log: Path, timeout: float = 60) -> Iterator[str]:
    """Run gcp-storage-emulator in memory; yield its endpoint."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
               "--port", str(port), "--in-memory"]  # fmt: skip
    with _serving(command, endpoint + "/storage/v1/b", log, timeout):
        yield endpoint
