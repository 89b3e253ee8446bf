"""The plugin's table UI in a real browser: Debian's chromium driven by playwright, against a
real ``tensorboard`` process on 127.0.0.1.

Never ``playwright install``: the browser is /usr/bin/chromium (``apt-get install chromium``).
Without it or the ``playwright`` package this test skips, except under ``CI=true``, where it
fails: CI must run it.
"""

from __future__ import annotations

import contextlib
import datetime
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


@contextlib.contextmanager
def tbkit_tab(p, server: str, **options):
    """Chromium showing TensorBoard at ``server`` on the tbkit tab, closed on exit: its page,
    the tab's frame and the messages of every dialog that opened (an XSS payload that ran would
    open one). ``options`` go to the browser context (viewport 1400×900 unless given)."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        page = browser.new_context(**{"viewport": {"width": 1400, "height": 900}, **options}
                                   ).new_page()  # fmt: skip
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(server + "/#tbkit")
        yield page, page.frame_locator("iframe"), dialogs
    finally:
        browser.close()


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
    with (sync_playwright() as p,
          tbkit_tab(p, server, viewport={"width": 1400, "height": 800}) as (page, ui, dialogs)):
        count = ui.locator(".count")

        # Rows, a page at a time.
        expect(count).to_have_text("1–100 of 339")
        expect(ui.locator(".status")).to_be_hidden()  # no "loading…": everything is read
        expect(ui.locator("tbody tr")).to_have_count(100)
        columns = ui.locator("thead th").evaluate_all("ths => ths.map(th => th.dataset.column)")
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

        # Typed without Enter, the filter applies once the server accepts it; what does
        # not parse yet ("loss", "loss >") shows its error and never blanks the table.
        where = ui.get_by_label("filter")
        where.press_sequentially("loss > 7", delay=40)
        typed_total = sum(1 for loss in losses if loss > 7)
        expect(count).to_have_text(f"1–100 of {typed_total}")
        expect(ui.locator(".where-error")).to_be_hidden()
        where.press("Backspace")  # "loss > "
        expect(ui.locator(".where-error .message")).to_have_text(
            "expected a value after '>' (got end of query) (at position 7)")
        expect(count).to_have_text(f"1–100 of {typed_total}")
        expect(ui.locator("tbody tr")).to_have_count(100)

        # A filter: the total is exactly what a Python filter over read_records gives.
        where.fill("loss > 30")
        where.press("Enter")
        expect(count).to_have_text(f"1–100 of {expected_total}")
        expect(ui.locator(".where-error")).to_be_hidden()

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

        # The row detail: the record as written (nested), also as pretty-printed JSON.
        first_row.click()
        expect(ui.locator(".detail dl.fields-tree").first).to_be_visible()
        text = ui.locator(".detail pre.json").text_content()
        shown = json.loads(text)
        assert text.startswith('{\n  "run": "train",\n  "tag": "train",\n  "step": 299,')
        last = next(r for r in records if (r.tag, r.step) == ("train", 299))
        assert shown == {"run": "train", "tag": "train", "step": 299, "level": "info",
                         "wall_time": last.wall_time, "loss": 74.75,
                         "msg": "step 299 ok", "opt": {"lr": last.fields["opt"]["lr"]}}
        href = ui.get_by_text("CSV").get_attribute("href")
        assert href == "./export?where=loss+%3E+30&sort=loss&order=desc&format=csv"
        page.screenshot(path=str(tmp_path / "tbkit-table.png"))

        # The view lives in the iframe's hash: opening that URL restores it.
        frame_url = next(f.url for f in page.frames if "plugin_entry" in f.url)
        assert "where=loss+%3E+30" in frame_url and "order=desc" in frame_url
        other = page.context.browser.new_page()  # a context of its own
        other.goto(frame_url)
        expect(other.locator(".count")).to_have_text(f"1–100 of {expected_total}")
        expect(other.get_by_label("filter")).to_have_value("loss > 30")
        expect(other.locator('th[data-column="loss"]')).to_have_text("loss ▼")
        other.close()

        # A bad filter: the parser's message and a caret under its position; the last
        # good rows stay.
        where.fill("loss >")
        where.press("Enter")
        error = ui.locator(".where-error")
        expect(error.locator(".message")).to_have_text(
            "expected a value after '>' (got end of query) (at position 6)")
        expect(error.locator("pre")).to_have_text("loss >\n      ^")
        expect(count).to_have_text(f"1–100 of {expected_total}")
        expect(ui.locator("tbody tr")).to_have_count(100)
        page.screenshot(path=str(tmp_path / "tbkit-error.png"))
        assert dialogs == []


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
    with (tbserver.tensorboard(str(tmp_path / "logs")) as port, sync_playwright() as p,
          tbkit_tab(p, f"http://127.0.0.1:{port}", viewport={"width": 1200, "height": 600})
          as (page, ui, _)):
        expect(ui.locator(".count")).to_have_text("1–2 of 2")
        marked = ui.locator("td.over-cap")
        expect(marked).to_have_count(1)
        expect(marked).to_have_text("⚠ over MAX_ARRAY_LENGTH: 2000 elements, the first 32 kept")
        expect(ui.locator("tr.has-over-cap td").nth(2)).to_have_text("1")  # its step
        page.screenshot(path=str(tmp_path / "tbkit-over-cap.png"))


SHOTS = Path("/tmp/tbkit-shots")  # copies for people to look at; not committed
TRACEBACK = f'Traceback (most recent call last):\n  File "train.py", line 3\nValueError: {XSS}'


def _shot(page, tmp_path, name):
    page.screenshot(path=str(tmp_path / name))
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def _logger(run_dir):
    log = tbkit.SummaryLogger(str(run_dir), every={"info": 1})

    @log.train_step
    def step(x):
        tbkit.record("train", {"loss": x * 0.5, "msg": tf.constant(TRACEBACK),
                               "opt": {"lr": 0.001, "adam": {"beta1": 0.9}}}, every=1)  # fmt: skip

    def write(n):
        for _ in range(n):
            step(tf.cast(log.step, tf.float32))
        log.flush()

    return log, write


def test_live_theme_time_zone_deep_link_and_detail(sync_playwright, tmp_path):
    """One TensorBoard, one page: records and a run written while the page is open appear
    without a reload (sort, scroll and detail kept, "+N new"), follow shows the newest, the
    theme follows TensorBoard's, times are local with the zone shown, the detail is the record
    as written, and the copied link reopens the view inside TensorBoard."""
    from playwright.sync_api import expect

    logs = tmp_path / "logs"
    log_a, write_a = _logger(logs / "a")
    write_a(30)
    live = {"timeout": 60_000}  # a guard against hanging (the poll is every 2 s), not a timing
    with (contextlib.closing(log_a), tbserver.tensorboard(str(logs)) as port,
          sync_playwright() as p,
          tbkit_tab(p, f"http://127.0.0.1:{port}", viewport={"width": 1400, "height": 600},
                    timezone_id="Europe/Paris") as (page, ui, dialogs)):
        count = ui.locator(".count")
        expect(count).to_have_text("1–30 of 30")

        # Local time with the zone in the header; a toggle switches to UTC.
        time_header = ui.locator('th[data-column="wall_time"]')
        expect(time_header).to_have_text("wall_time (UTC+01:00)")  # Paris in winter
        first = next(iter(tbkit.read_records(logs)))
        cell = ui.locator("tbody tr").first.locator("td").nth(3)
        shown = datetime.datetime.fromisoformat(cell.text_content() + "+01:00")
        assert abs(shown.timestamp() - first.wall_time) < 0.002
        ui.get_by_role("button", name="UTC").click()
        expect(time_header).to_have_text("wall_time (UTC)")
        shown = datetime.datetime.fromisoformat(cell.text_content() + "+00:00")
        assert abs(shown.timestamp() - first.wall_time) < 0.002
        ui.get_by_role("button", name="UTC").click()
        expect(time_header).to_have_text("wall_time (UTC+01:00)")
        for name in ("step", "loss", "wall_time"):  # numeric headers over right-aligned cells
            align = ui.locator(f'th[data-column="{name}"]').evaluate(
                "th => getComputedStyle(th).textAlign")
            assert align == "right", name
        assert ui.locator('th[data-column="msg"]').evaluate(
            "th => getComputedStyle(th).textAlign") in ("left", "start")

        # Sort by step, descending; open the detail of step 25; scroll the table a little.
        step_header = ui.locator('th[data-column="step"]')
        step_header.click()
        step_header.click()
        expect(step_header).to_have_attribute("aria-sort", "descending")
        row = ui.locator("tbody tr").nth(4)
        expect(row.locator("td").nth(2)).to_have_text("25")
        row.click()
        detail = ui.locator(".detail")
        expect(detail.locator("dl.fields-tree").first).to_be_visible()
        written = next(r for r in tbkit.read_records(logs) if r.step == 25)
        as_json = json.loads(detail.locator("pre.json").text_content())
        assert as_json == {"run": "a", "tag": "train", "step": 25, "level": "info",
                           "wall_time": written.wall_time, **written.fields}
        # A multi-line string keeps its line breaks (three line boxes), as text.
        message = detail.locator(".value.string", has_text="ValueError")
        expect(message).to_have_text(TRACEBACK)
        assert message.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
        assert message.evaluate("e => e.getClientRects().length") >= 3
        nested = detail.locator("dl.fields-tree.nested dl.fields-tree.nested dt")
        expect(nested).to_have_text("beta1")  # opt → adam → beta1, nested twice
        wall = detail.locator(".value.time")
        iso, epoch = wall.text_content().split(" ")
        assert iso.endswith("+01:00") and float(epoch) == written.wall_time
        assert abs(datetime.datetime.fromisoformat(iso).timestamp() - written.wall_time) < 0.002
        assert ui.locator("img").count() == 0
        _shot(page, tmp_path, "detail.png")
        box = ui.locator(".table-box")
        box.evaluate("b => { b.scrollTop = 120; }")

        # Live: more records and a new run, with no reload of the page.
        write_a(30)
        log_b, write_b = _logger(logs / f"b{XSS}")
        write_b(5)
        expect(count).to_have_text("1–65 of 65", **live)
        run_b = ui.locator("ul.run-list li", has_text="b<img")
        expect(run_b.locator(".run-name")).to_have_text(f"b{XSS}", **live)
        expect(run_b.locator(".run-count")).to_have_text("5")
        expect(ui.locator(".fresh")).to_have_text("+35 new")
        expect(step_header).to_have_attribute("aria-sort", "descending")
        expect(ui.locator("tbody tr").first.locator("td").nth(2)).to_have_text("59")
        expect(detail.locator(".detail-head")).to_contain_text("a · train · step 25")
        expect(ui.locator("tbody tr.selected td").nth(2)).to_have_text("25")
        assert box.evaluate("b => b.scrollTop") == 120
        assert ui.locator("img").count() == 0

        # Runs: a multi-select list with a fixed colour per run, also in the table's run
        # cells, and a regex filter.
        colour = "e => getComputedStyle(e).backgroundColor"
        run_a = ui.locator("ul.run-list li").first  # "a" sorts before "b…"
        colour_a = run_a.locator(".swatch").evaluate(colour)
        colour_b = run_b.locator(".swatch").evaluate(colour)
        assert colour_a != colour_b
        assert ui.locator("tbody tr").first.locator("td .swatch").evaluate(colour) == colour_a
        run_a.locator("input").uncheck()
        expect(count).to_have_text("1–5 of 5")
        expect(ui.locator("tbody tr").first.locator("td").first).to_have_text(f"b{XSS}")
        assert ui.locator("tbody tr").first.locator("td .swatch").evaluate(colour) == colour_b
        expect(ui.get_by_label("all runs")).not_to_be_checked()
        run_a.locator("input").check()
        expect(count).to_have_text("1–65 of 65")
        expect(ui.get_by_label("all runs")).to_be_checked()
        run_filter = ui.get_by_label("runs regex")
        run_filter.fill("^B")  # case-insensitive, as TensorBoard's run filter
        run_filter.press("Enter")
        expect(count).to_have_text("1–5 of 5")
        expect(ui.locator("ul.run-list li")).to_have_count(1)
        run_filter.fill("(")
        run_filter.press("Enter")
        expect(ui.locator(".run-filter-error")).to_contain_text("not a regular expression")
        expect(count).to_have_text("1–65 of 65")
        run_filter.fill("")
        run_filter.press("Enter")
        expect(ui.locator(".run-filter-error")).to_be_hidden()
        assert ui.locator("img").count() == 0

        # Follow: sorted by wall_time, the last page, its newest row in view.
        ui.get_by_role("button", name="follow").click()
        expect(ui.locator('th[data-column="wall_time"]')).to_have_attribute(
            "aria-sort", "ascending")
        write_a(100)
        expect(count).to_have_text("101–165 of 165", **live)
        newest = ui.locator("tbody tr").last
        expect(newest.locator("td").nth(2)).to_have_text("159")
        expect(newest).to_be_in_viewport()
        _shot(page, tmp_path, "light.png")

        # TensorBoard's reload button reaches the tab through its plugin API (host.js, the
        # same module instance index.js polls with).
        frame = next(f for f in page.frames if "plugin_entry" in f.url)
        frame.evaluate("() => import('./host.js').then((host) => { window.reloads = 0; "
                       "host.onTensorBoardReload(() => { window.reloads += 1; }); })")
        page.locator("app-header .reload-button").click()
        frame.wait_for_function("() => window.reloads > 0")

        # Dark mode: TensorBoard's theme menu; the tab follows without a reload.
        background = "() => getComputedStyle(document.body).backgroundColor"
        assert frame.evaluate(background) == "rgb(255, 255, 255)"
        page.get_by_label("Menu for changing light or dark theme").click()
        page.get_by_role("menuitem", name="Dark").click()
        expect(page.locator("body.dark-mode")).to_have_count(1)
        frame.wait_for_function("() => document.body.classList.contains('dark')")
        assert frame.evaluate(background) == "rgb(48, 48, 48)"
        _shot(page, tmp_path, "dark.png")
        page.get_by_label("Menu for changing light or dark theme").click()
        page.get_by_role("menuitem", name="Light").click()
        frame.wait_for_function("() => !document.body.classList.contains('dark')")

        # The copied link opens TensorBoard itself on the tab, with the same view.
        ui.get_by_role("button", name="copy link").click()
        link = ui.get_by_label("link to this view").input_value()
        assert link.startswith(f"http://127.0.0.1:{port}/#tbkit&p.tbkit.")
        assert "p.tbkit.sort=wall_time" in link and "p.tbkit.follow=1" in link
        other = page.context.new_page()
        other.goto(link)
        expect(other.locator("app-header")).to_be_visible()
        expect(other.locator("plugin-selector")).to_contain_text("tbkit")
        again = other.frame_locator("iframe")
        expect(again.locator(".count")).to_have_text("101–165 of 165")
        expect(again.locator('th[data-column="wall_time"]')).to_have_attribute(
            "aria-sort", "ascending")
        expect(again.get_by_role("button", name="follow")).to_have_attribute(
            "aria-pressed", "true")
        other.close()
        assert dialogs == []
