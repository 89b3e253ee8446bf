"""Charts and the grouped view of the tbkit tab in a real browser (Debian's chromium driven by
playwright) against a real ``tensorboard`` process: one TensorBoard, one page.

The chart's points are read through uPlot's own API in the page (the chart instance's
``data``, listed on the test hook ``window.__tbkitCharts``), not from pixels.
"""

from __future__ import annotations

import json
import math

import pytest
import tbserver
import tensorflow as tf
from test_plugin_browser import XSS, _shot, tbkit_tab
from test_plugin_browser import sync_playwright as sync_playwright  # noqa: F401  (fixture)

import tbkit
from tbkit.data.rows import NON_FINITE

STEPS = {"a": 60, "b": 40}


def write_run(run_dir, steps, scale):
    """"train": loss every step, NaN at step 13; "eval": a field under a second tag."""
    log = tbkit.SummaryLogger(str(run_dir), every={"info": 1})

    @log.train_step
    def step(x):
        loss = tf.where(x == 13.0, float("nan"), scale * 10.0 / (x + 1.0))
        tbkit.record("train", {"loss": loss, "acc": x / 100.0}, every=1)

    for i in range(steps):
        step(tf.constant(float(i)))
    log.close()


def write_xss_run(run_dir):
    """A run named with the XSS payload, a tag, a field name and a string value holding it."""
    log = tbkit.SummaryLogger(str(run_dir), every={"info": 1})

    @log.train_step
    def step(x):
        tbkit.record(XSS, {XSS: x, "note": tf.constant(XSS)}, every=1)

    for i in range(5):
        step(tf.constant(float(i)))
    log.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    write_run(root / "a", STEPS["a"], 1.0)
    write_run(root / "b", STEPS["b"], 2.0)
    write_xss_run(root / XSS)
    return root


CHARTS = """() => (window.__tbkitCharts || []).map((c) => ({
  field: c.field,
  markers: c.markers.map((m) => ({run: m.run, x: m.x, value: m.value})),
  series: c.series.map((s) => ({run: s.run, tag: s.tag,
    points: c.plot.data[0].map((x, i) => [x, c.plot.data[s.index][i]])
                          .filter(([, y]) => y !== null)})),
}))"""


def test_charts_and_groups_in_chromium(sync_playwright, logdir, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    records = list(tbkit.read_records(logdir))
    losses = {run: [(r.step, r.fields["loss"]) for r in records
                    if r.run == run and r.tag == "train"] for run in STEPS}  # fmt: skip
    with (tbserver.tensorboard(str(logdir)) as port, sync_playwright() as p,
          tbkit_tab(p, f"http://127.0.0.1:{port}") as (page, ui, dialogs)):
        expect(ui.locator(".count")).to_have_text("1–100 of 105")
        frame = next(f for f in page.frames if "plugin_entry" in f.url)

        # The chart of loss (the default field): a series per run holding it, whose points
        # are the records' (step, value); the NaN is a marker, counted in the legend.
        ui.locator("button.view-tab", has_text="charts").click()
        frame.wait_for_function("() => (window.__tbkitCharts || []).length === 1")
        (chart,) = frame.evaluate(CHARTS)
        assert chart["field"] == "loss"
        assert [(s["run"], s["tag"]) for s in chart["series"]] == [("a", "train"),
                                                                    ("b", "train")]
        for s in chart["series"]:
            want = [[step, v] for step, v in losses[s["run"]] if v not in NON_FINITE]
            assert s["points"] == want
        assert [m for m in chart["markers"] if m["run"] == "a"] == [
            {"run": "a", "x": 13, "value": "NaN"}]  # fmt: skip
        legend = ui.locator("figure.chart table.chart-legend tr")
        expect(legend.first).to_contain_text("1 NaN/±Inf (marked at the edge)")
        _shot(page, tmp_path, "chart.png")

        # Hovering shows the values; clicking a point opens that record's detail.
        target = frame.evaluate("""() => { const c = window.__tbkitCharts[0];
            const i = c.plot.data[0].indexOf(30);
            return [c.plot.valToPos(30, 'x'), c.plot.valToPos(c.plot.data[1][i], 'y')]; }""")
        over = ui.locator("figure.chart .u-over").first
        over.hover(position={"x": target[0], "y": target[1]})
        expect(ui.locator(".chart-x").first).to_have_text("step 30")
        over.click(position={"x": target[0], "y": target[1]})
        detail = ui.locator(".detail")
        expect(detail.locator("strong")).to_have_text("a · train · step 30")
        record = json.loads(detail.locator("pre.json").text_content())
        want = next(r for r in records if r.run == "a" and r.step == 30)
        assert record["loss"] == want.fields["loss"]
        detail.locator("button.close").click()
        # The NaN marker opens its record too (a value the line cannot show).
        nan = frame.evaluate("""() => window.__tbkitCharts[0].markers
            .filter((m) => m.run === 'a').map((m) => [m.left, m.top])[0]""")
        over.click(position={"x": nan[0], "y": nan[1]})
        expect(detail.locator("strong")).to_have_text("a · train · step 13")
        assert json.loads(detail.locator("pre.json").text_content())["loss"] == "NaN"
        detail.locator("button.close").click()

        # Dark: the chart is redrawn with the theme's colours.
        page.get_by_label("Menu for changing light or dark theme").click()
        page.get_by_role("menuitem", name="Dark").click()
        frame.wait_for_function("() => document.body.classList.contains('dark')")
        expect(page.get_by_role("menuitem")).to_have_count(0)  # the menu has closed
        _shot(page, tmp_path, "chart-dark.png")
        page.get_by_label("Menu for changing light or dark theme").click()
        page.get_by_role("menuitem", name="Light").click()
        frame.wait_for_function("() => !document.body.classList.contains('dark')")

        # Log scale and smoothing keep the raw points; smoothing adds TensorBoard's EMA.
        ui.locator("button", has_text="log scale").click()
        ui.get_by_label("smoothing").fill("0.6")
        frame.wait_for_function("() => window.__tbkitCharts[0].series[0].smoothIndex")
        (chart,) = frame.evaluate(CHARTS)
        assert chart["series"][0]["points"] == [
            [s, v] for s, v in losses["a"] if v not in NON_FINITE]  # fmt: skip
        smoothed = frame.evaluate("""() => { const c = window.__tbkitCharts[0];
            return c.plot.data[c.series[0].smoothIndex].filter((y) => y !== null); }""")
        last, out = 0.0, []
        for n, (_, v) in enumerate((s, v) for s, v in losses["a"] if v not in NON_FINITE):
            last = last * 0.6 + 0.4 * v
            out.append(last / (1 - 0.6 ** (n + 1)))
        assert smoothed == pytest.approx(out, rel=1e-12)

        # Field picker: the XSS field name, run name and tag stay text everywhere.
        ui.locator(".field-choice", has_text=XSS).locator("input").check()
        frame.wait_for_function("() => window.__tbkitCharts.length === 2")
        expect(ui.locator(".field-choice", has_text=XSS)).to_have_text(XSS)
        titles = ui.locator("figure.chart .chart-title strong")
        expect(titles.nth(1)).to_have_text(XSS)
        expect(ui.locator(".series-name", has_text=XSS)).to_have_text(XSS)

        # The grouped view: per run, the figures the server computed over every record.
        ui.locator("button.view-tab", has_text="groups").click()
        rows = ui.locator("table.groups tbody tr")
        expect(rows).to_have_count(3)
        finite = [v for _, v in losses["a"] if v not in NON_FINITE]
        mean = sum(finite) / len(finite)
        table = {cells[0]: cells for cells in (rows.nth(i).locator("td").all_text_contents()
                                               for i in range(3))}  # fmt: skip
        assert list(table) == sorted([XSS, "a", "b"])  # keys in order, the payload as text
        cells = table["a"]
        assert cells[:2] == ["a", str(STEPS["a"])]
        heads = ui.locator("table.groups thead tr").first.locator("th").all_text_contents()
        at = 2 + 5 * heads[2:].index("loss")
        assert cells[at : at + 5] == [str(float(f"{mean:.6g}")) if mean != int(mean) else
                                      str(int(mean)), str(float(f"{min(finite):.6g}")),
                                      "10", str(float(f"{losses['a'][-1][1]:.6g}")), "1"]
        _shot(page, tmp_path, "groups.png")
        ui.get_by_label("group by").select_option("note")
        expect(rows).to_have_count(2)
        expect(rows.first.locator("td").first).to_have_text(XSS)
        expect(rows.nth(1).locator("td").first).to_have_text("(no note)")
        ui.get_by_label("group by").select_option("tag")
        expect(rows).to_have_count(2)
        expect(rows.first.locator("td").first).to_have_text(XSS)  # "<" sorts before "t"
        expect(rows.nth(1).locator("td").first).to_have_text("train")
        assert math.isfinite(mean)

        # Tag view: one tag shows its own fields as columns; hiding and moving columns is
        # kept per tag in the browser, through a reload of TensorBoard (the deep link keeps
        # the tag), and does not touch the columns of all tags.
        ui.locator("button.view-tab", has_text="table").click()
        ui.get_by_label("tag", exact=True).select_option("train")
        expect(ui.locator(".count")).to_have_text("1–100 of 100")
        heads = ui.locator(".table-box thead th")
        names = "ths => ths.map(th => th.dataset.column)"
        expect(heads).to_have_count(7)
        assert heads.evaluate_all(names) == ["run", "tag", "step", "wall_time", "level", "loss",
                                             "acc"]  # fmt: skip
        ui.locator("button", has_text="columns").click()
        ui.get_by_label("show acc").uncheck()
        expect(heads).to_have_count(6)
        ui.get_by_label("move loss left").click()
        expect(heads.nth(4)).to_have_attribute("data-column", "loss")
        assert heads.evaluate_all(names) == ["run", "tag", "step", "wall_time", "loss", "level"]
        assert "p.tbkit.tag=train" in page.url
        page.reload()
        ui = page.frame_locator("iframe")
        expect(ui.locator(".count")).to_have_text("1–100 of 100")
        heads = ui.locator(".table-box thead th")
        expect(heads).to_have_count(6)
        assert heads.evaluate_all(names) == ["run", "tag", "step", "wall_time", "loss", "level"]
        ui.get_by_label("tag", exact=True).select_option("")
        expect(ui.locator(".count")).to_have_text("1–100 of 105")
        expect(heads).to_have_count(9)
        ui.get_by_label("tag", exact=True).select_option(XSS)
        expect(ui.locator(".count")).to_have_text("1–5 of 5")
        ui.locator("button", has_text="columns").click()
        expect(ui.locator(".column-name", has_text=XSS)).to_have_text(XSS)
        expect(ui.locator(f".table-box thead th[data-column='{XSS}']")).to_have_count(1)

        # Live: a run written while the chart is open joins it without a reload.
        ui.get_by_label("tag", exact=True).select_option("")
        ui.locator("button.view-tab", has_text="charts").click()
        frame = next(f for f in page.frames if "plugin_entry" in f.url)
        frame.wait_for_function("() => (window.__tbkitCharts || []).length === 2")
        assert "p.tbkit.view=charts" in page.url and "p.tbkit.chart=loss" in page.url
        write_run(logdir / "c", 20, 3.0)
        frame.wait_for_function(  # a guard against hanging (the poll is every 2 s)
            "() => window.__tbkitCharts[0].series.some((s) => s.run === 'c')",
            timeout=60_000)  # fmt: skip
        (chart, _) = frame.evaluate(CHARTS)
        new = [[r.step, r.fields["loss"]] for r in tbkit.read_records(logdir / "c")
               if r.fields["loss"] not in NON_FINITE]  # fmt: skip
        assert [s["points"] for s in chart["series"] if s["run"] == "c"] == [new]

        assert ui.locator("img").count() == 0
        assert dialogs == []
