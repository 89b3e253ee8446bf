"""Numbers in the tbkit tab's table as their dtype reads them, in a real browser (Debian's
chromium driven by playwright) against a real ``tensorboard`` process: a float32 field shows the
shortest text that reads back as its float32 value (0.001, not 0.00100000005), a float64 field
its shortest text; the detail and downloads keep the value as written. Also makes the table
screenshot of docs/plugin.md.
"""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal

import numpy as np
import tbserver
import tensorflow as tf
from test_dtypes import old_metadata, write_raw
from test_plugin_browser import _shot, tbkit_tab
from test_plugin_browser import sync_playwright as sync_playwright  # noqa: F401  (fixture)

import tbkit

# Per step: loss and accuracy (float32), the gradient norm (float64).
LOSSES = [15.45, 11.2, 8.73, 6.9, 5.61, 4.7, 4.02, 3.51, 3.1, 2.79, 2.55, 2.36]
NORMS = [0.1, 2 / 3, 0.45, 0.3, 1 / 7, 0.2, 0.125, 0.11, 1e-3, 0.09, 0.085, 0.08]
OLD_LR = "0.00100000005"  # how a float32 0.001 is written (9 significant digits)


def write_run(run_dir, scale):
    log = tbkit.SummaryLogger(str(run_dir), every={"info": 1})

    @log.train_step
    def step(loss, norm):
        tbkit.record("train", {
            "loss": loss, "accuracy": 1.0 - loss / 20.0, "lr": tf.constant(0.001),
            "grad": {"norm": norm}, "probs": tf.stack([loss / 100.0, 0.1]),
        }, every=1)  # fmt: skip

    for loss, norm in zip(LOSSES, NORMS, strict=True):
        step(tf.constant(loss * scale, tf.float32), tf.constant(norm * scale, tf.float64))
    log.close()


def test_float32_and_float64_cells_in_chromium(sync_playwright, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    logdir = tmp_path / "logs"
    write_run(logdir / "mnist" / "train", 1.0)
    write_run(logdir / "mnist" / "validation", 1.1)
    # A run written before schema version 3: no dtypes, so shown as before.
    write_raw(logdir / "old", "train", [(0, ['{"lr":0.00100000005,"level":"info"}'])],
              old_metadata(b'{"version":1}'))  # fmt: skip
    records = [r for r in tbkit.read_records(logdir) if r.run == "mnist/train"]
    assert records[0].fields["lr"] == float(OLD_LR)  # the value as written
    assert records[0].fields["loss"] == 15.4499998
    with (tbserver.tensorboard(str(logdir)) as port, sync_playwright() as p,
          tbkit_tab(p, f"http://127.0.0.1:{port}") as (page, ui, dialogs)):
        count = ui.locator(".count")
        expect(count).to_have_text("1–25 of 25")
        ui.get_by_label("runs regex").fill("^mnist/")
        expect(count).to_have_text("1–24 of 24")
        columns = ui.locator("thead th").evaluate_all("ths => ths.map(th => th.dataset.column)")
        assert columns == ["run", "tag", "step", "wall_time", "level", "loss", "accuracy",
                           "lr", "grad.norm", "probs"]  # fmt: skip
        header = ui.locator('th[data-column="lr"]')
        expect(header).to_have_attribute("title", "lr (number, float32); click to sort")

        # The first row (mnist/train, step 0): float32 cells as the shortest text that reads
        # back as the same float32, the value as written in the title; float64 shortest.
        first = ui.locator("tbody tr").first
        cell = {name: first.locator("td").nth(i) for i, name in enumerate(columns)}
        expect(cell["run"]).to_have_text("mnist/train")
        expect(cell["loss"]).to_have_text("15.45")
        expect(cell["loss"]).to_have_attribute("title", "15.4499998")
        expect(cell["lr"]).to_have_text("0.001")
        expect(cell["lr"]).to_have_attribute("title", OLD_LR)
        fields = records[0].fields
        expect(cell["accuracy"]).to_have_text(_js(_shortest32(fields["accuracy"])))
        expect(cell["grad.norm"]).to_have_text("0.1")  # written 0.10000000000000001
        expect(cell["probs"]).to_have_text(f"[{_js(_shortest32(fields['probs'][0]))},0.1]")
        second = ui.locator("tbody tr").nth(1).locator("td")
        expect(second.nth(columns.index("grad.norm"))).to_have_text(str(2 / 3))

        # The detail: the record as written, full precision.
        first.click()
        detail = ui.locator(".detail pre.json")
        expect(detail).to_contain_text(f'"lr": {OLD_LR}')
        expect(detail).to_contain_text('"loss": 15.4499998')
        shown = json.loads(detail.text_content())
        assert shown["grad"]["norm"] == 0.1 and shown["lr"] == float(OLD_LR)
        _shot(page, tmp_path, "table.png")

        # Downloads: the value as written.
        url = f"http://127.0.0.1:{port}/data/plugin/tbkit/export?run=mnist/train&format=jsonl"
        with urllib.request.urlopen(url, timeout=30) as response:
            first_line = response.read().decode().splitlines()[0]
        assert f'"lr":{OLD_LR}' in first_line and '"loss":15.4499998' in first_line

        # An old run's column has no dtype: shown as before.
        ui.locator(".detail button.close").click()
        ui.get_by_label("runs regex").fill("^old$")
        expect(count).to_have_text("1–1 of 1")
        lr = ui.locator("tbody tr").first.locator("td").nth(5)
        expect(ui.locator("thead th").nth(5)).to_have_attribute(
            "title", "lr (number); click to sort")
        expect(lr).to_have_text(OLD_LR)
        # Beside a new run, the column's dtype is not the same everywhere: as before too.
        ui.get_by_label("runs regex").fill("^(old|mnist/train)$")
        expect(count).to_have_text("1–13 of 13")
        expect(ui.locator('tbody tr td[title="0.00100000005"]', has_text=OLD_LR)
               ).to_have_count(13)  # fmt: skip

        # The formatting function itself, against numpy's shortest float32 text, on
        # random float32 values and the hard ones (powers of two, subnormals, extremes).
        frame = next(f for f in page.frames if "plugin_entry" in f.url)
        values = _float32_cases()
        texts = frame.evaluate("""async (values) => {
            const model = await import('/data/plugin/tbkit/model.js');
            return values.map((v) => model.float32Text(v)); }""", values)
        wrong = [(v, t, _shortest32(np.float32(v))) for v, t in zip(values, texts, strict=True)
                 if np.float32(t) != np.float32(v) or Decimal(t) != Decimal(_shortest32(v))]
        assert wrong == []
        assert dialogs == []


def _shortest32(value) -> str:
    """numpy's shortest text that reads back as the float32 ``value`` (Dragon4, exact)."""
    return np.format_float_scientific(np.float32(value), unique=True, trim="-")


def _js(text: str) -> str:
    """How JavaScript prints the number ``text`` (as Python does, for the values used here)."""
    return repr(float(text))


def _float32_cases() -> list[float]:
    """Finite non-zero float32 values (as the Python floats they are exactly)."""
    rng = np.random.default_rng(12)
    bits = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    randoms = bits.view(np.float32)
    powers = [np.float32(2.0) ** k for k in range(-149, 128)]
    special = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, np.float32(1e-45),
               np.float32(0.001), np.float32(15.45), np.float32(0.1), np.float32(1 / 3),
               np.float32(16777217), np.float32(9.999999e-10), np.float32(123456789)]  # fmt: skip
    cases = [float(v) for v in [*randoms, *powers, *special] if np.isfinite(v) and v != 0]
    return cases + [-v for v in cases[-len(special):]]
