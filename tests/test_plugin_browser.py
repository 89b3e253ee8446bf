"""The plugin's table UI in a real browser: Debian's chromium driven by playwright, against a
real ``tensorboard`` process on 127.0.0.1.

Never ``playwright install``: the browser is /usr/bin/chromium (``apt-get install chromium``).
Without it or the ``playwright`` package this test skips, except under ``CI=true``, where it
fails: CI must run it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tbserver
import tensorflow as tf

import tbkit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
XSS = "<img src=x onerror=alert(1)>"
STEPS = 300


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install playwright, not playwright install)"
    return None


@pytest.fixture(scope="module")
def sync_playwright():
    missing = _missing()
    if missing:
        message = f"BROWSER TEST NOT RUN: {missing}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " — CI=true requires it")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    return sync_playwright


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """339 records in one run: 300 info, 30 debug, 6 warning, 3 error; one holds XSS text."""
    root = tmp_path_factory.mktemp("logs")
    log = tbkit.SummaryLogger(str(root / "train"), every={"debug": 1, "info": 1})

    @log.train_step
    def step(x, msg):
        tbkit.record("train", {"loss": x * 0.25, "msg": msg, "opt": {"lr": 0.001 * x}}, every=1)
        tbkit.record("diag", {"grad_norm": x * 2.0}, level="debug", every=10)
        tbkit.record("alert", {"msg": tf.constant("slow step")}, level="warning", every=50)
        tbkit.record("fail", {"msg": tf.constant("diverged")}, level="error", when=x >= 297.0)

    for i in range(STEPS):
        step(tf.constant(float(i)), tf.constant(XSS if i == 137 else f"step {i} ok"))
    log.close()
    return root


@pytest.fixture(scope="module")
def server(logdir):
    """A real TensorBoard on 127.0.0.1, started and stopped by PID; yields its base URL."""
    with tbserver.tensorboard(str(logdir)) as port:
        yield f"http://127.0.0.1:{port}"


def test_table_ui_in_chromium(sync_playwright, server, logdir, tmp_path):
    from playwright.sync_api import expect

    records = list(tbkit.read_records(logdir))
    assert len(records) == 339
    losses = [r.fields["loss"] for r in records if "loss" in r.fields]
    expected_total = sum(1 for loss in losses if loss > 30)  # the Python twin of the filter
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server + "/#tbkit")
            ui = page.frame_locator("iframe")
            count = ui.locator(".count")

            # Rows, a page at a time.
            expect(count).to_have_text("1–100 of 339")
            expect(ui.locator(".status")).to_be_hidden()  # no "loading…": everything is read
            expect(ui.locator("tbody tr")).to_have_count(100)
            columns = ui.locator("thead th").all_text_contents()
            assert columns[:5] == ["run", "tag", "step", "wall_time", "level"]
            assert {"loss", "msg", "opt.lr", "grad_norm"} <= set(columns)
            sticky = ui.locator("thead th").first.evaluate("th => getComputedStyle(th).position")
            assert sticky == "sticky"
            ui.locator("button", has_text="next").click()
            expect(count).to_have_text("101–200 of 339")

            # Level chips narrow to one level; toggling back restores all.
            chip = ui.locator(".chip", has_text="warning")
            chip.click()
            expect(count).to_have_text("1–6 of 6")
            chip.click()
            expect(count).to_have_text("1–100 of 339")

            # The XSS record shows its characters as text; no element, no dialog.
            ui.get_by_label("search").fill("onerror")
            ui.get_by_label("search").press("Enter")
            expect(count).to_have_text("1–1 of 1")
            expect(ui.locator("tbody td", has_text=XSS)).to_have_text(XSS)
            assert ui.locator("img").count() == 0
            ui.get_by_label("search").fill("")
            ui.get_by_label("search").press("Enter")

            # A filter: the total is exactly what a Python filter over read_records gives.
            where = ui.get_by_label("filter")
            where.fill("loss > 30")
            where.press("Enter")
            expect(count).to_have_text(f"1–100 of {expected_total}")

            # Sort by loss, twice: ascending, then descending.
            loss_header = ui.locator('th[data-column="loss"]')
            loss_header.click()
            expect(loss_header).to_have_attribute("aria-sort", "ascending")
            first_row = ui.locator("tbody tr").first
            loss_cell = first_row.locator("td").nth(columns.index("loss"))
            expect(loss_cell).to_have_text(str(min(v for v in losses if v > 30)))
            loss_header.click()
            expect(loss_header).to_have_attribute("aria-sort", "descending")
            expect(loss_cell).to_have_text(str(max(losses)))

            # The row detail: the whole row, pretty-printed JSON.
            first_row.click()
            detail = ui.locator(".detail pre.json")
            expect(detail).to_be_visible()
            text = detail.text_content()
            shown = json.loads(text)
            assert text.startswith('{\n  "run": "train",\n  "tag": "train",\n  "step": 299,')
            last = next(r for r in records if (r.tag, r.step) == ("train", 299))
            assert shown == {"run": "train", "tag": "train", "step": 299, "level": "info",
                             "wall_time": last.wall_time, "loss": 74.75,
                             "opt.lr": last.fields["opt"]["lr"], "msg": "step 299 ok"}
            href = ui.get_by_text("CSV").get_attribute("href")
            assert href == "./export?where=loss+%3E+30&sort=loss&order=desc&format=csv"
            page.screenshot(path=str(tmp_path / "tbkit-table.png"))

            # The view lives in the iframe's hash: opening that URL restores it.
            frame_url = next(f.url for f in page.frames if "plugin_entry" in f.url)
            assert "where=loss+%3E+30" in frame_url and "order=desc" in frame_url
            other = browser.new_page()
            other.goto(frame_url)
            expect(other.locator(".count")).to_have_text(f"1–100 of {expected_total}")
            expect(other.get_by_label("filter")).to_have_value("loss > 30")
            expect(other.locator('th[data-column="loss"]')).to_have_text("loss ▼")
            other.close()

            # A bad filter: the parser's message and a caret under its position.
            where.fill("loss >")
            where.press("Enter")
            error = ui.locator(".where-error")
            expect(error.locator(".message")).to_have_text(
                "expected a value after '>' (got end of query) (at position 6)")
            expect(error.locator("pre")).to_have_text("loss >\n      ^")
            expect(count).to_have_text("–")
            page.screenshot(path=str(tmp_path / "tbkit-error.png"))
            assert dialogs == []
        finally:
            browser.close()


def test_over_cap_markers_are_highlighted(sync_playwright, tmp_path):
    """A record whose vector was over MAX_ARRAY_LENGTH shows a marked cell saying so."""
    from playwright.sync_api import expect

    log = tbkit.SummaryLogger(str(tmp_path / "logs" / "run"), every={"info": 1})

    @log.train_step(input_signature=[tf.TensorSpec([None], tf.float32)])
    def step(values):
        tbkit.record("train", {"values": values, "n": tf.size(values)})

    for n in (3, 2000):
        step(tf.zeros([n]))
    log.close()
    with tbserver.tensorboard(str(tmp_path / "logs")) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 600})
            page.goto(f"http://127.0.0.1:{port}/#tbkit")
            ui = page.frame_locator("iframe")
            expect(ui.locator(".count")).to_have_text("1–2 of 2")
            marked = ui.locator("td.over-cap")
            expect(marked).to_have_count(1)
            expect(marked).to_have_text("⚠ over MAX_ARRAY_LENGTH: 2000 elements, the first 32 kept")
            expect(ui.locator("tr.has-over-cap td").nth(2)).to_have_text("1")  # its step
            page.screenshot(path=str(tmp_path / "tbkit-over-cap.png"))
        finally:
            browser.close()
