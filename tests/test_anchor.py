"""The anchor summary and published reference curves in a run: BD-rates against the PyPI
``bjontegaard`` package, ``--reference`` / ``--anchor`` through the CLI into references.json,
bd.csv, the plots and the report's first screen, and the Python API's ``bd_table``."""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from pathlib import Path

import pytest

from bench.anchor import anchor_summary
from bench.api import load
from bench.bjontegaard import curves_from_aggregates
from bench.cli import main
from bench.curves import read_aggregates
from bench.errors import UsageError
from bench.metrics import create_metrics
from bench.metrics.base import Column
from bench.outputs import rewrite_outputs
from bench.references import RUN_REFERENCES, resolve
from bench.report import load_run

RATES = {"jpeg": "15,35,60,85", "webp": "10,40,70,95"}


@pytest.fixture(scope="module")
def run_dir(kodak, tmp_path_factory) -> Path:
    """jpeg and webp on 2 Kodak images, VTM and BPG's published curves, webp the anchor."""
    out = tmp_path_factory.mktemp("anchor") / "run"
    argv = ["run", "--codecs", "jpeg,webp", "--dataset", "kodak", "--data-dir", str(kodak)]
    argv += [f"--rates=jpeg={RATES['jpeg']}", f"--rates=webp={RATES['webp']}"]
    argv += ["--limit", "2", "--workers", "0", "--out", str(out)]
    argv += ["--reference", "kodak/vtm,bpg", "--anchor", "webp"]
    assert main(argv) == 0
    return out


def bd_columns() -> list[Column]:
    return [c for m in create_metrics() for c in m.aggregate_columns if c.bd]


def package_bd_rate(anchor, test) -> float:
    package = pytest.importorskip("bjontegaard", reason="the bjontegaard package is not installed")
    options = {"method": "pchip", "require_matching_points": False, "min_overlap": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            package.bd_rate(anchor.bpp, anchor.quality, test.bpp, test.quality, **options)
        )


def test_anchor_summary_equals_the_bjontegaard_package_per_metric_and_averages_them(run_dir):
    run = load_run(run_dir)
    found = anchor_summary(run.curves, run.columns, "webp")
    assert found.anchor == "webp" and found.method == "pchip"
    assert [c.name for c in found.columns] == ["psnr_rgb_mean", "ms_ssim_db_mean"]
    assert [r.codec for r in found.rows] == ["jpeg", "VTM (published)", "BPG (published)"]
    for row in found.rows:
        for column in found.columns:
            curves = curves_from_aggregates(run.curves, column.name)
            expected = package_bd_rate(curves["webp"], curves[row.codec])
            assert row.results[column.name].bd_rate == pytest.approx(expected, abs=1e-6)
        values = [r.bd_rate for r in row.results.values()]
        assert row.metrics_in_mean == 2
        assert row.mean_bd_rate == pytest.approx(sum(values) / 2, abs=1e-12)
    jpeg = found.rows[0]
    assert jpeg.mean_bd_rate > 0  # webp beats jpeg on Kodak
    assert found.best() is jpeg  # the headline names the run's own codecs first
    assert found.headline().startswith(f"jpeg {jpeg.mean_bd_rate:+.1f} % BD-rate against webp")


def test_references_are_kept_in_the_run_and_compared_in_bd_csv_and_the_plots(run_dir):
    stored = json.loads((run_dir / RUN_REFERENCES).read_text())
    assert [c["name"] for c in stored] == ["VTM", "BPG"]
    assert stored[0]["results"]["bpp"] == list(resolve("kodak/vtm")[0].results["bpp"])
    with (run_dir / "bd.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    pairs = {(r["anchor"], r["test"]) for r in rows}
    assert ("jpeg", "VTM (published)") in pairs and ("VTM (published)", "webp") in pairs
    own = {r.codec for r in read_aggregates(run_dir / "aggregates.csv")}
    assert own == {"jpeg", "webp"}  # aggregates.csv stays the run's own
    svg = (run_dir / "plots" / "rd_psnr.svg").read_text()
    assert "VTM (published)" in svg and "BPG (published)" in svg


def test_first_screen_shows_the_headline_and_anchor_table_and_folds_provenance(run_dir):
    text = (run_dir / "report.html").read_text()
    overview = text.index('id="overview"')
    assert overview < text.index('id="plots"') < text.index('id="summary"')
    assert text.index('id="summary"') < text.index('id="provenance"')
    assert 'class="headline"' in text and 'id="anchor-summary"' in text
    table = text[text.index('id="anchor-summary"') : text.index("</table>", overview)]
    assert "<b>webp</b> (anchor)" in table and "VTM (published)" in table
    assert "bd-worse" in table  # jpeg needs more bits than webp: red
    assert "bd-better" in table  # VTM fewer: green
    provenance = text[text.index('id="provenance"') :]
    assert provenance.index("<details>") < provenance.index("Published reference curves")
    assert "BSD-3-Clause-Clear" in provenance
    # Two of 24 Kodak images: the published means are not over the same images.
    assert "the mean over 24 images of kodak; this run has 2" in text


def test_an_anchor_that_is_no_codec_of_the_run_is_refused_with_the_choices(run_dir, capsys):
    assert main(["report", str(run_dir), "--no-crops", "--anchor", "avif"]) == 2
    error = capsys.readouterr().err
    assert "--anchor 'avif' is not a codec of this run" in error
    assert "jpeg, webp, VTM (published), BPG (published)" in error


def test_bd_table_of_the_loaded_run_is_the_anchor_summary(run_dir):
    loaded = load(run_dir)
    table = loaded.bd_table()  # the stored anchor: webp
    run = load_run(run_dir)
    found = anchor_summary(run.curves, run.columns, "webp")
    assert list(table.index) == ["webp", "jpeg", "VTM (published)", "BPG (published)"]
    assert table.loc["webp"].tolist() == [0.0, 0.0, 0.0]
    for row in found.rows:
        assert table.loc[row.codec, "mean"] == row.mean_bd_rate
        assert table.loc[row.codec, "psnr_rgb_mean"] == row.results["psnr_rgb_mean"].bd_rate
    jpeg_anchor = loaded.bd_table(anchor="jpeg", references=["kodak/jpeg"])
    assert "JPEG (published)" in jpeg_anchor.index and jpeg_anchor.index[0] == "jpeg"
    assert jpeg_anchor.loc["webp", "mean"] == pytest.approx(-table.loc["jpeg", "mean"], rel=0.5)
    with pytest.raises(UsageError, match="not a codec of this run"):
        loaded.bd_table(anchor="avif")


def test_report_with_another_reference_replaces_the_stored_ones(run_dir, tmp_path):
    import shutil

    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    assert main(["report", str(copy), "--no-crops", "--reference", "kodak/jpeg2000"]) == 0
    stored = json.loads((copy / RUN_REFERENCES).read_text())
    assert [c["name"] for c in stored] == ["JPEG2000"]
    assert "JPEG2000 (published)" in (copy / "plots" / "rd_psnr.svg").read_text()
    text = (copy / "report.html").read_text()
    assert "JPEG2000 (published)" in text and "VTM (published)" not in text


def test_unknown_reference_names_the_known_ones(run_dir, capsys):
    assert main(["curves", str(run_dir), "--reference", "kodak/nothing"]) == 2
    error = capsys.readouterr().err
    assert "no reference curve 'kodak/nothing'" in error and "kodak/vtm" in error


def test_curves_says_it_drops_rows_added_to_aggregates_by_hand(run_dir, tmp_path, caplog):
    import shutil

    copy = Path(shutil.copytree(run_dir, tmp_path / "hand"))
    path = copy / "aggregates.csv"
    lines = path.read_text().splitlines()
    lines.append(lines[1].replace("jpeg", "VTM-by-hand", 1))
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        rewrite_outputs(copy)
    assert "rows of VTM-by-hand that no record has" in caplog.text
    assert "bench import csv" in caplog.text
    assert {r.codec for r in read_aggregates(path)} == {"jpeg", "webp"}


def test_a_codec_with_one_point_gets_one_sentence_instead_of_an_all_na_matrix(run_dir, tmp_path):
    import shutil

    copy = Path(shutil.copytree(run_dir, tmp_path / "single"))
    (copy / RUN_REFERENCES).unlink()
    path = copy / "aggregates.csv"
    rows = list(csv.DictReader(path.open()))
    kept = [next(r for r in rows if r["codec"] == c) for c in ("jpeg", "webp")]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    from bench.report import render

    text = render(load_run(copy), crops=False)
    section = text[text.index('id="bd"') :]
    assert "No pair of codecs can be compared" in section
    assert "<table" not in section[: section.index("</section>")]
    assert math.isnan(load(copy).bd_table().loc["jpeg", "mean"])


def test_loaded_run_plots_with_its_references_and_more(run_dir, tmp_path):
    loaded = load(run_dir)
    figure = loaded.plot("psnr_rgb", references=["kodak/jpeg2000"], path=tmp_path / "rd.svg")
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == [
        "jpeg", "webp", "VTM (published)", "BPG (published)", "JPEG2000 (published)"
    ]  # fmt: skip
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert lines["VTM (published)"].get_linestyle() == "--"
    assert lines["jpeg"].get_linestyle() == "-"
    assert "JPEG2000 (published)" in (tmp_path / "rd.svg").read_text()
    with pytest.raises(UsageError, match="no plot of 'miou'"):
        loaded.plot("miou")


def test_first_screen_in_chromium_shows_the_anchor_summary_and_a_plot_with_values_on_hover(
    run_dir, tmp_path
):
    """The issue's browser test: at 1400x1000 the anchor summary and a whole R-D plot are on
    the first screen, hovering a point shows its codec, rate, bpp and metric, and the page
    fetches nothing but itself."""
    import os
    import shutil

    from test_report import chromium_path

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = (run_dir / "report.html").resolve()
    requests: list[str] = []
    problems: list[str] = []
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text))
            page.goto(path.as_uri(), wait_until="load")
            summary = page.locator("#anchor-summary").bounding_box()
            plot = page.locator("figure.plot svg").first.bounding_box()
            point = page.locator("figure.plot").first.locator("circle.pt[data-codec='jpeg']")
            point.nth(1).hover()
            tip = page.locator(".plot-tip")
            tip.wait_for(state="visible")
            text = tip.inner_text()
            shot = tmp_path / "first-screen.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert summary is not None and plot is not None
    assert summary["y"] + summary["height"] <= 1000 and plot["y"] + plot["height"] <= 1000
    assert plot["x"] >= 0 and plot["x"] + plot["width"] <= 1400
    rate = RATES["jpeg"].split(",")[1]
    assert "jpeg" in text and f"quality={rate}" in text and "bpp" in text and "PSNR" in text
    assert requests == [path.as_uri()] and problems == []
    if os.environ.get("BENCH_FIRST_SCREEN"):
        shutil.copy(shot, os.environ["BENCH_FIRST_SCREEN"])
