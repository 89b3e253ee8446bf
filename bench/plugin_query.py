"""The tbkit plugin at scale against TensorBoard's Text plugin holding the same records.

Writes N runs x M records of ten fields twice, as tbkit records and as ``tf.summary.text``
(event protos built directly and framed as TFRecords, no TensorFlow ops), then starts a real
TensorBoard on 127.0.0.1 for each logdir, times the plugin's routes and the Text plugin, reads
the resident memory of each TensorBoard process tree, and stops every server by PID.

    python bench/plugin_query.py               # 4 x 250 000 (1 M records)
    python bench/plugin_query.py --quick       # 4 x 50 000
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.text import summary_v2 as text_summary

from tbkit.data.frames import frame
from tbkit.summary import jsonenc, summary_pb

TAG = "train"
PREFIX = "/data/plugin/tbkit"
WHERE = "loss > 2 and lr < 0.001"
CHART_WHERE = "lr < 0.001"


def fields(run: int, i: int) -> dict:
    rng = random.Random(run * 1_000_003 + i)
    return {"loss": round(rng.uniform(0.0, 4.0), 4), "lr": round(rng.uniform(1e-4, 2e-3), 6),
            "acc": round(rng.random(), 4), "epoch": i // 1000, "batch": i % 1000,
            "grad_norm": round(rng.expovariate(1.0), 4), "phase": rng.choice(("warmup", "main")),
            "note": "got NaN" if i % 997 == 0 else "fine", "ok": i % 7 != 0,
            "tokens": rng.randrange(1, 1 << 20)}  # fmt: skip


def record_text(v: dict) -> str:
    """``jsonenc.encode_py(v, "info", tag=TAG)`` for these fields, 30x faster (checked below)."""
    return (f'{{"loss":{v["loss"]!r},"lr":{v["lr"]!r},"acc":{v["acc"]!r},"epoch":{v["epoch"]},'
            f'"batch":{v["batch"]},"grad_norm":{v["grad_norm"]!r},"phase":"{v["phase"]}",'
            f'"note":"{v["note"]}","ok":{"true" if v["ok"] else "false"},'
            f'"tokens":{v["tokens"]},"level":"info"}}')  # fmt: skip


def generate(root: Path, runs: int, per_run: int) -> tuple[Path, Path]:
    """Write the same records as tbkit records (``root/tbkit``) and as text (``root/text``)."""
    tb_event = event_pb2.Event(summary=summary_pb.record_pb(TAG, {"x": 0}))
    tx_event = event_pb2.Event(summary=text_summary.text_pb(TAG, "x"))
    tb_val, tx_val = tb_event.summary.value[0], tx_event.summary.value[0]
    for r in range(runs):
        for kind in ("tbkit", "text"):
            (root / kind / f"run{r}").mkdir(parents=True, exist_ok=True)
        files = {kind: open(root / kind / f"run{r}" / f"events.out.tfevents.{1_700_000_000 + r}"
                            f".bench.{kind}", "wb") for kind in ("tbkit", "text")}  # fmt: skip
        for f in files.values():
            f.write(frame(event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2")
                          .SerializeToString()))  # fmt: skip
        chunks: dict[str, list[bytes]] = {"tbkit": [], "text": []}
        for i in range(per_run):
            v = fields(r, i)
            text = record_text(v)
            if i < 3:
                assert text == jsonenc.encode_py(v, "info", tag=TAG), text
            data = text.encode()
            for event, val, kind in ((tb_event, tb_val, "tbkit"), (tx_event, tx_val, "text")):
                event.step, event.wall_time = i, 1.7e9 + i * 0.01
                val.tensor.string_val[0] = data
                chunks[kind].append(frame(event.SerializeToString()))
            if len(chunks["text"]) >= 50_000 or i == per_run - 1:
                for kind, f in files.items():
                    f.write(b"".join(chunks[kind]))
                    chunks[kind].clear()
        for f in files.values():
            f.close()
    return root / "tbkit", root / "text"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, params=(), timeout: float = 600) -> tuple[int, bytes]:
    if params:
        path += "?" + urllib.parse.urlencode(list(params))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (VmRSS from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parts = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(parts[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def start(logdir: Path, *extra: str) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
         "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, port, t0


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def poll(proc: subprocess.Popen, port: int, path: str, params, done, timeout: float):
    """GET until ``done(status, body)``; False if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tensorboard exited with {proc.returncode}")
        try:
            status, body = get(port, path, params, timeout=max(1.0, deadline - time.monotonic()))
            if done(status, body):
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def bench_tbkit(logdir: Path, total: int) -> dict:
    proc, port, t0 = start(logdir)
    try:

        up = []

        def first_page(status, body):
            up.append(time.perf_counter() - t0)  # TensorBoard answers: it has started
            return status == 200 and len(json.loads(body)["rows"]) == 100

        if not poll(proc, port, f"{PREFIX}/records", [("limit", 100)], first_page, 600):
            return {"first_page": None}
        out = {"first_page": time.perf_counter() - t0, "up": up[0]}
        first = json.loads(get(port, f"{PREFIX}/records", [("limit", 1)])[1])
        out["first_complete"], out["first_total"] = first["complete"], first["total"]

        def complete(status, body):
            return status == 200 and json.loads(body)["complete"]

        if not poll(proc, port, f"{PREFIX}/runs", (), complete, 1200):
            return out
        out["complete"] = time.perf_counter() - t0
        got = json.loads(get(port, f"{PREFIX}/records", [("limit", 1)])[1])["total"]
        assert got == total, (got, total)
        rng = random.Random(0)
        pages = []
        for _ in range(10):
            params = [("limit", 100), ("offset", rng.randrange(total - 100))]
            dt, (status, _) = timed(get, port, f"{PREFIX}/records", params)
            assert status == 200
            pages.append(dt)
        out["page"] = statistics.median(pages)
        query = [("where", WHERE), ("sort", "loss"), ("limit", 100)]
        runs = []
        for _ in range(3):
            dt, (status, body) = timed(get, port, f"{PREFIX}/records", query)
            assert status == 200, body[:300]
            runs.append(dt)
        out["query"], out["query_first"] = statistics.median(runs), runs[0]
        out["matched"] = json.loads(body)["total"]
        polls = []  # what the tab asks every 2 s: nothing new, so no row may be queried
        for _ in range(50):
            dt, (status, _) = timed(get, port, f"{PREFIX}/revision")
            assert status == 200
            polls.append(dt)
        out["poll"] = statistics.median(polls)
        chart = [("field", "loss"), ("where", CHART_WHERE)]  # all 4 runs, filtered
        times = []
        for _ in range(3):
            dt, (status, body) = timed(get, port, f"{PREFIX}/chart", chart)
            assert status == 200, body[:300]
            times.append(dt)
        out["chart"] = statistics.median(times)
        answer = json.loads(body)
        out["chart_series"] = len(answer["series"])
        out["chart_points"] = sum(len(s["x"]) for s in answer["series"])
        out["chart_matched"] = sum(s["total"] for s in answer["series"])
        out["chart_browser"] = chart_in_browser(port)
        times = []
        for _ in range(3):
            dt, (status, body) = timed(get, port, f"{PREFIX}/groups", [("by", "run")])
            assert status == 200, body[:300]
            times.append(dt)
        out["groups"] = statistics.median(times)
        groups = json.loads(body)
        out["groups_shape"] = f"{len(groups['groups'])} runs × {len(groups['fields'])} fields"
        dt, (status, body) = timed(get, port, f"{PREFIX}/export", [("format", "jsonl")])
        assert status == 200 and body.count(b"\n") == total
        out["export"], out["export_bytes"] = dt, len(body)
        del body
        out["rss"] = tree_rss(proc.pid)
        return out
    finally:
        stop(proc)


CHART_JS = """async (where) => {
  const model = await import('./model.js');
  const charts = await import('./charts.js');
  const t0 = performance.now();
  const answer = await model.fetchChart({...model.defaultState(), where}, null, 'loss');
  const t1 = performance.now();
  const chart = charts.drawChart(answer, {x: 'step', log: false, smoothing: 0, utc: false,
                                          width: 1200, onPoint() {}});
  document.body.append(chart.node);
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  return [(t1 - t0) / 1000, (performance.now() - t1) / 1000];
}"""


def chart_in_browser(port: int) -> list[float] | None:
    """[request, draw] seconds of the chart in headless Chromium (the bare plugin page): the
    tab's own fetchChart and drawChart; None without playwright or /usr/bin/chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path("/usr/bin/chromium").exists():
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/data/plugin_entry.html?name=tbkit#view=table")
            page.wait_for_selector(".count")
            runs = [page.evaluate(CHART_JS, CHART_WHERE) for _ in range(3)]
            return min(runs, key=sum)
        finally:
            browser.close()


def bench_text(logdir: Path, per_run: int, timeout: float) -> dict:
    # Not text=0: the Text plugin passes the hint to read_tensors as is, and 0 returns nothing.
    proc, port, t0 = start(logdir, f"--samples_per_plugin=text={per_run}")
    try:

        def all_there(status, body):
            return status == 200 and len(json.loads(body)) >= per_run

        params = [("run", "run0"), ("tag", TAG)]
        ok = poll(proc, port, "/data/plugin/text/text", params, all_there, timeout)
        return {"all": time.perf_counter() - t0 if ok else None, "rss": tree_rss(proc.pid)}
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--records-per-run", type=int, default=250_000)
    parser.add_argument("--quick", action="store_true", help="4 x 50 000 records")
    parser.add_argument("--text-timeout", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--logdir", help="write here instead of a temporary directory")
    parser.add_argument("--no-text", action="store_true", help="skip the Text plugin (iterating)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.records_per_run = 4, 50_000
    total = args.runs * args.records_per_run
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.logdir or tmp)
        gen, (tb_dir, tx_dir) = timed(generate, root, args.runs, args.records_per_run)
        size = sum(p.stat().st_size for p in tb_dir.rglob("*tfevents*"))
        print(f"generated {args.runs} x {args.records_per_run} = {total} records twice in "
              f"{gen:.1f} s ({size / 2**20:.0f} MiB of tbkit events)", flush=True)  # fmt: skip
        tb = bench_tbkit(tb_dir, total)
        print("tbkit:", tb, flush=True)
        tx = ({"all": None, "rss": 0} if args.no_text
              else bench_text(tx_dir, args.records_per_run, args.text_timeout))
        print("text:", tx, flush=True)

    def s(x):
        return "did not finish" if x is None else f"{x:.2f} s"

    mib = 2**20
    text_all = (f"{s(tx['all'])} (all {args.records_per_run} of one run)" if tx["all"]
                else f"did not finish in {args.text_timeout:.0f} s")  # fmt: skip
    rows = [
        ("first page (100 rows) after start", s(tb.get("first_page")), "≤ 10 s"),
        ("… of which TensorBoard's own start (its first HTTP answer)", s(tb.get("up")), "—"),
        (f"every record read (`complete`) after start (first page: {tb.get('first_total')} "
         "read)", s(tb.get("complete")), "—"),
        ("page fetch (limit 100, random offset; median of 10)", s(tb.get("page")), "≤ 0.3 s"),
        (f"`where={WHERE}`, sort=loss over all (median of 3; first {s(tb.get('query_first'))}"
         f", {tb.get('matched')} rows)", s(tb.get("query")), "≤ 1 s"),
        ("live poll `/revision` with nothing new (HTTP round trip, median of 50)",
         "did not finish" if tb.get("poll") is None else f"{tb['poll'] * 1000:.1f} ms",
         "≤ 10 ms"),
        (f"chart of `loss`, {tb.get('chart_series')} runs, `where={CHART_WHERE}` "
         f"({tb.get('chart_matched')} points, {tb.get('chart_points')} sent): `/chart` "
         "(HTTP, median of 3)", s(tb.get("chart")), "—"),
        ("… request to drawn in Chromium (fetch + uPlot draw, best of 3)",
         "not measured" if not tb.get("chart_browser") else
         f"{sum(tb['chart_browser']):.2f} s ({tb['chart_browser'][0]:.2f} + "
         f"{tb['chart_browser'][1]:.2f})", "≤ 1 s"),
        (f"group by run (`/groups`, {tb.get('groups_shape')}; median of 3)",
         s(tb.get("groups")), "≤ 1 s"),
        (f"export jsonl, full download ({tb.get('export_bytes', 0) / mib:.0f} MiB)",
         s(tb.get("export")), "—"),
        ("tbkit: RSS of the TensorBoard tree", f"{tb.get('rss', 0) / mib:.0f} MiB",
         "≤ Text path"),
        (f"Text plugin (`text={args.records_per_run}`): one run's records all shown",
         text_all, "—"),
        ("Text plugin: RSS of the TensorBoard tree", f"{tx['rss'] / mib:.0f} MiB", "—"),
    ]  # fmt: skip
    print(f"\n{args.runs} runs × {args.records_per_run} records ({total} in all)\n")
    print("| measure | result | target |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
