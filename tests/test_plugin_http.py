"""The plugin inside a real ``tensorboard`` process on 127.0.0.1, plus its import boundary."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import tbserver
import tensorflow as tf
from tensorboard import errors
from tensorboard.plugins import base_plugin

import tbkit
from tbkit_plugin.plugin import TbkitPlugin

REPO = Path(__file__).resolve().parents[1]
PREFIX = "/data/plugin/tbkit"
N = 1500


def get(port: int, path: str, params=()) -> tuple[int, str, bytes]:
    """GET a raw path (not normalised by a URL library); return status, content type, body."""
    if params:
        path += "?" + urllib.parse.urlencode(list(params))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    log = tbkit.SummaryLogger(str(root / "exp" / "train"), every={"info": 1})

    @log.train_step
    def step(x):
        note = tf.where(x % 13.0 == 0.0, tf.constant("got NaN"), tf.constant("fine"))
        tbkit.record("train", {"loss": x * 0.25, "note": note}, every=1)

    for i in range(N):
        step(tf.constant(float(i)))
    log.close()
    return root


@pytest.fixture(scope="module")
def server(logdir):
    """A real TensorBoard on 127.0.0.1, started and stopped by PID; yields its port once the
    plugin says it has read the whole logdir."""
    with tbserver.tensorboard(str(logdir)) as port:
        deadline = time.monotonic() + 60
        while not get_json(port, "/runs")["complete"]:
            assert time.monotonic() < deadline, "the plugin did not finish reading in 60 s"
            time.sleep(0.1)
        yield port


def get_json(port, route, params=()):
    status, content_type, body = get(port, PREFIX + route, params)
    assert (status, content_type) == (200, "application/json"), body[:500]
    return json.loads(body)


def test_plugin_is_listed_and_enabled(server):
    status, _, body = get(server, "/data/plugins_listing")
    listing = json.loads(body)
    assert status == 200
    assert listing["tbkit"]["enabled"] is True
    assert listing["tbkit"]["loading_mechanism"] == {
        "type": "IFRAME", "module_path": "/data/plugin/tbkit/index.js"}  # fmt: skip


def test_every_record_is_served_in_pages(server):
    assert get_json(server, "/runs") == {"runs": {"exp/train": {"train": N}}, "superseded": {},
                                        "complete": True}
    steps = []
    for offset in (0, 1000):
        page = get_json(server, "/records", [("limit", "1000"), ("offset", str(offset))])
        assert (page["total"], page["complete"]) == (N, True)
        steps += [row["step"] for row in page["rows"]]
    assert steps == list(range(N))


def test_where_filter_matches_a_python_filter_over_read_records(server, logdir):
    where = 'loss > 300 and note contains "nan"'
    page = get_json(server, "/records", [("where", where), ("limit", "1000")])
    expected = [(r.run, r.tag, r.step) for r in tbkit.read_records(logdir)
                if r.fields["loss"] > 300 and "nan" in r.fields["note"].lower()]  # fmt: skip
    assert len(expected) > 10
    assert page["total"] == len(expected)
    assert [(row["run"], row["tag"], row["step"]) for row in page["rows"]] == expected


def write_steps(run_dir, start, stop):
    """tbkit records {"i": step} at steps start..stop-1 into a new event file of run_dir."""
    counter = tf.Variable(start, dtype=tf.int64)
    log = tbkit.SummaryLogger(str(run_dir), every={"info": 1}, step=counter)

    @log.train_step
    def step(x):
        tbkit.record("live", {"i": x}, every=1)

    for i in range(start, stop):
        step(tf.constant(i, tf.int64))
        counter.assign_add(1)
    log.close()


def wait_for(port, route, params, done):
    deadline = time.monotonic() + 60  # a guard against hanging, not a timing
    while not done(body := get_json(port, route, params)):
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    return body


def test_records_written_while_tensorboard_runs_appear(tmp_path):
    write_steps(tmp_path / "run", 0, 20)
    with tbserver.tensorboard(str(tmp_path)) as port:
        wait_for(port, "/runs", (), lambda body: body["complete"])
        assert get_json(port, "/records", [("limit", "1")])["total"] == 20
        before = get_json(port, "/revision")
        assert before["complete"] is True and get_json(port, "/revision") == before
        write_steps(tmp_path / "run", 20, 35)  # appended by a second writer: a new file
        write_steps(tmp_path / "nested" / "late", 0, 5)  # and a new run
        body = wait_for(port, "/records", [("limit", "100")],
                        lambda body: body["complete"] and body["total"] == 40)  # fmt: skip
        assert get_json(port, "/revision")["revision"] > before["revision"]
    expected = [(r.run, r.step, r.fields["i"]) for r in tbkit.read_records(tmp_path)]
    assert [(r["run"], r["step"], r["i"]) for r in body["rows"]] == expected
    assert len(expected) == 40


def test_record_over_http_is_the_export_line_parsed(server):
    page = get_json(server, "/records", [("step_min", "26"), ("limit", "1")])
    record = get_json(server, "/record", [("id", str(page["ids"][0]))])["record"]
    _, _, line = get(server, PREFIX + "/export", [("step_min", "26"), ("step_max", "26")])
    assert record == json.loads(line) and record["note"] == "got NaN"
    status, _, body = get(server, PREFIX + "/record", [("id", "x")])
    assert (status, json.loads(body)["parameter"]) == (400, "id")


def test_schema_and_records_carry_each_columns_dtype_over_http(server):
    want = [("run", "string", "string"), ("tag", "string", "string"),
            ("step", "number", "int64"), ("wall_time", "number", "float64"),
            ("level", "string", "string"), ("loss", "number", "float32"),
            ("note", "string", "string")]  # fmt: skip
    schema = get_json(server, "/schema")["columns"]
    assert [(c["name"], c["type"], c["dtype"]) for c in schema] == want
    page = get_json(server, "/records", [("limit", "1")])
    assert page["columns"] == schema


def test_errors_over_http(server):
    status, content_type, body = get(server, PREFIX + "/records", [("where", "loss >")])
    assert (status, content_type) == (400, "application/json")
    assert json.loads(body) == {
        "error": "Invalid argument: 'where': expected a value after '>' (got end of query)",
        "parameter": "where", "message": "expected a value after '>' (got end of query)",
        "position": 6,
    }  # fmt: skip
    status, _, body = get(server, PREFIX + "/records", [("run", "nope")])
    assert (status, json.loads(body)["error"]) == (404, "Not found: unknown run 'nope'")


def test_export_streams_csv(server):
    status, content_type, body = get(server, PREFIX + "/export",
                                     [("format", "csv"), ("step_max", "2")])  # fmt: skip
    assert (status, content_type) == (200, "text/csv; charset=utf-8")
    lines = body.decode().splitlines()
    assert lines[0] == "run,tag,step,wall_time,level,loss,note"
    assert [line.split(",")[2] for line in lines[1:]] == ["0", "1", "2"]


def test_es_module_has_a_javascript_content_type(server):
    status, content_type, body = get(server, PREFIX + "/index.js")
    assert status == 200
    assert content_type.split(";")[0] == "text/javascript"
    assert b"export async function render" in body


@pytest.mark.parametrize(("path", "content_type"), [
    ("/vendor/uPlot.esm.js", "text/javascript"), ("/vendor/uPlot.min.css", "text/css"),
    ("/vendor/LICENSE", "text/plain"),
])  # fmt: skip
def test_the_vendored_chart_library_is_served_unmodified(server, path, content_type):
    status, got_type, body = get(server, PREFIX + path)
    assert (status, got_type.split(";")[0]) == (200, content_type)
    assert body == (REPO / "plugin" / "tbkit_plugin" / "static" / path.lstrip("/")).read_bytes()


REFUSED = [
    "/../plugin.py", "/..%2fplugin.py", "/%2e%2e/plugin.py", "/%2E%2E%2Fplugin.py",
    "/static/../plugin.py", "//etc/passwd", "/%2fetc%2fpasswd", "/etc/passwd",
    "/plugin.py", "/static/index.js", "/index.js/..", "/..", "/%2e%2e",
    "/vendor/../plugin.py", "/vendor/%2e%2e/plugin.py", "/vendor/..%2f..%2fplugin.py",
    "/vendor", "/vendor/", "/vendor/README.md", "/static/vendor/LICENSE", "/vendor//LICENSE",
    "/vendor/uPlot.esm.js/..", "/x/vendor/uPlot.esm.js",
]  # fmt: skip


@pytest.mark.parametrize("path", REFUSED)
def test_static_route_refuses_paths_outside_its_allowlist_over_http(server, path):
    status, _, body = get(server, PREFIX + path)
    assert status == 404, body[:200]
    assert b"import" not in body and b"root:" not in body


@pytest.mark.parametrize("path", [*REFUSED, "..", "index.js", "/INDEX.JS", "/index.js%00",
                                  str(REPO / "plugin" / "tbkit_plugin" / "plugin.py")])
def test_static_impl_refuses_paths_outside_its_allowlist(tmp_path, path):
    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(tmp_path)), background=False)
    with pytest.raises(errors.NotFoundError) as caught:
        plugin.static_impl(path)
    assert str(caught.value) == f"Not found: no static file {path!r}"
    assert plugin.static_impl("/index.js")[1] == "text/javascript"


def test_importing_the_plugin_does_not_load_tensorflow():
    code = ("import sys\nimport tbkit_plugin, tbkit_plugin.plugin, tbkit_plugin.store\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/", timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_tbkit_text_shows_in_tensorboards_text_tab_and_as_a_record(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path / "run"), every={"warning": 1})

    @log.train_step
    def step(x):
        tbkit.text("notes", tf.strings.join(["step ", tf.strings.as_string(x)]), level="warning")

    for i in range(3):
        step(tf.constant(i))
    log.close()
    with tbserver.tensorboard(str(tmp_path)) as port:
        status, _, body = get(port, "/data/plugin/text/tags")
        assert (status, json.loads(body)) == (200, {"run": ["notes"]})
        status, _, body = get(port, "/data/plugin/text/text", [("run", "run"), ("tag", "notes")])
        assert status == 200
        assert [(item["step"], "step 2" in item["text"]) for item in json.loads(body)][-1] == (
            2, True)  # fmt: skip
        deadline = time.monotonic() + 60  # a guard against hanging, not a timing
        while not (page := get_json(port, "/records"))["complete"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert [(row["tag"], row["step"], row["level"], row["message"]) for row in page["rows"]] \
            == [("notes", i, "warning", f"step {i}") for i in range(3)]  # fmt: skip
