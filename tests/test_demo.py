"""The README's main job, end to end: `tbkit demo` trains, logs, and serves TensorBoard."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import tbserver

import tbkit

TBKIT = os.path.join(os.path.dirname(sys.executable), "tbkit")


def test_demo_no_serve_logs_every_kind_of_summary(tmp_path):
    done = subprocess.run(
        [TBKIT, "demo", "--logdir", str(tmp_path), "--steps", "120", "--no-serve"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert "120 steps logged to" in done.stdout
    records = list(tbkit.read_records(str(tmp_path)))
    by_tag = {}
    for r in records:
        by_tag.setdefault((r.run.rsplit("/", 1)[-1], r.tag), []).append(r.step)
    kept = {r.step for r in records if r.tag == "train" and r.fields.get("kept")}
    assert kept == set(range(90 - 32, 90)) - {60, 70, 80}  # the outlier batch is at step 90
    assert by_tag[("train", "train")] == sorted(set(range(0, 120, 10)) | kept)
    assert by_tag[("train", "outlier")] == [90]
    assert by_tag[("validation", "validation")] == [0, 50, 100]
    assert by_tag[("train", "phase")] == [0, 120]
    train = next(r for r in records if r.tag == "train")
    assert set(train.fields) == {"loss", "accuracy", "learning_rate", "grad_norm"}


def test_demo_serves_tensorboard_on_127_0_0_1(tmp_path):
    port = tbserver.free_port()
    server = subprocess.Popen(
        [TBKIT, "demo", "--logdir", str(tmp_path), "--steps", "30", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        url = None
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            if line.startswith("TensorBoard at "):
                url = line.split()[2]
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "data/runs", timeout=30) as response:
            runs = json.load(response)
        assert sorted(run.rsplit("/", 1)[-1] for run in runs) == ["train", "validation"]
        with urllib.request.urlopen(url + "data/plugins_listing", timeout=30) as response:
            plugins = json.load(response)
        assert plugins["scalars"]["enabled"] and plugins["histograms"]["enabled"]
        assert plugins["tbkit"]["enabled"]  # the demo's records show in the plugin tab
    finally:
        tbserver.stop(server, signal.SIGINT)
