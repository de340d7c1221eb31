"""The HTML report: structure, numbers, crops checked by hash, escaping, odd run directories,
and how it renders in headless Chromium."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.codecs import create_codec
from bench.datasets.folder import FolderDataset
from bench.datasets.kodak import KodakDataset
from bench.errors import UsageError
from bench.images import read_rgb8
from bench.outputs import write_run_outputs
from bench.report import write_report
from bench.runner import plan_codec, run

RATES = {"jpeg": [20, 50, 85], "webp": [30, 60, 90]}
IMAGES = 2
NASTY_IMAGE = "<img src=x onerror=alert(1)>"
NASTY_DIR = "<svg onload=alert(2)>"
NASTY_ARG = "<script>alert(3)</script>"


class Page(HTMLParser):
    """What the tests look at in a report: sections, tables, figures, drill-down blocks."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.svgs = 0
        self.tables: list[dict] = []  # {"id", "class", "rows": [[(text, attrs)]]}
        self.figures: list[dict] = []  # attrs + "src" + "caption"
        self.missing: list[dict] = []  # crop cells that were not reproduced: attrs + "text"
        self.details: list[dict] = []  # {"image", "rows"}
        self._stack: list[dict] = []  # open tables
        self._cell: tuple[list[str], dict] | None = None
        self._figure: dict | None = None
        self._missing: dict | None = None
        self._detail: dict | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "svg":
            self.svgs += 1
        elif tag == "table":
            self._stack.append({"id": a.get("id", ""), "class": a.get("class", ""), "rows": []})
        elif tag == "tr" and self._stack:
            self._stack[-1]["rows"].append([])
        elif tag in ("td", "th") and self._stack:
            self._cell = ([], a)
        elif tag == "figure":
            self._figure = {**a, "caption": ""}
        elif tag == "img" and self._figure is not None:
            self._figure["src"] = a.get("src", "")
        elif tag == "div" and "missing" in a.get("class", ""):
            self._missing = {**a, "text": ""}
        elif tag == "details" and "image" in a.get("class", "").split():
            self._detail = {"image": a.get("data-image"), "table": None}

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._stack:
            parts, attrs = self._cell
            self._stack[-1]["rows"][-1].append(("".join(parts).strip(), attrs))
            self._cell = None
        elif tag == "table" and self._stack:
            done = self._stack.pop()
            self.tables.append(done)
            if self._detail is not None:
                self._detail["table"] = done
        elif tag == "figure" and self._figure is not None:
            self.figures.append(self._figure)
            self._figure = None
        elif tag == "div" and self._missing is not None:
            self.missing.append(self._missing)
            self._missing = None
        elif tag == "details" and self._detail is not None:
            self.details.append(self._detail)
            self._detail = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0].append(data)
        if self._figure is not None and self.lasttag == "figcaption":
            self._figure["caption"] += data
        if self._missing is not None:
            self._missing["text"] += data

    def table(self, table_id: str) -> dict:
        return next(t for t in self.tables if t["id"] == table_id)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def png_pixels(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :]))) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def kodak_run(kodak, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    plans = [plan_codec(name, rates=rates) for name, rates in RATES.items()]
    # As `bench run` does: the sweep, then the output stage (its report is rewritten below).
    write_run_outputs(
        run(KodakDataset(data_dir=kodak), plans, out, workers=0, limit=IMAGES), report=False
    )
    return out


@pytest.fixture(scope="module")
def report(kodak_run) -> tuple[Path, Page]:
    path = write_report(kodak_run)
    return path, Page(path.read_text())


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("report.html"))
    return target


# --- structure and numbers -------------------------------------------------------------------


def test_report_is_written_into_the_run_directory_with_every_section(report, kodak_run):
    path, page = report
    assert path == kodak_run / "report.html"
    for section in ("summary", "provenance", "plots", "bd", "rate-points", "images", "crops"):
        assert section in page.sections, section
    assert "per-class" not in page.sections  # no segmentation in this run
    assert page.svgs == 2  # PSNR and MS-SSIM plots, inlined
    text = path.read_text()
    points = len(RATES["jpeg"]) + len(RATES["webp"])
    assert text.count('<svg class="rd"') == 2  # drawn by bench.report.svgplot
    assert text.count('<circle class="pt"') == 2 * 2 * points  # two plots, linear and log bpp
    assert "<script src" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    ).replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")


def test_rate_point_table_holds_aggregates_csv(report, kodak_run):
    _, page = report
    rows = read_rows(kodak_run / "aggregates.csv")
    table = page.table("aggregates")
    header = [text for text, _ in table["rows"][0]]
    body = table["rows"][1:]
    assert len(rows) == len(RATES["jpeg"]) + len(RATES["webp"])
    assert len(body) == len(rows)
    digits = {"bpp_mean": 4, "bpp_pooled": 4, "psnr_rgb_mean": 2, "psnr_rgb_pooled": 2,
              "ssim_rgb_mean": 4, "ms_ssim_rgb_mean": 4, "ms_ssim_db_mean": 2}  # fmt: skip
    titles = {"bpp_mean": "bpp mean", "bpp_pooled": "bpp pooled", "psnr_rgb_mean": "PSNR mean [dB]",
              "psnr_rgb_pooled": "PSNR pooled [dB]", "ssim_rgb_mean": "SSIM",
              "ms_ssim_rgb_mean": "MS-SSIM", "ms_ssim_db_mean": "MS-SSIM [dB]"}  # fmt: skip
    for csv_row, cells in zip(rows, body, strict=True):
        by_header = dict(zip(header, cells, strict=True))
        assert by_header["codec"][0] == csv_row["codec"]
        assert float(by_header["rate"][1]["data-value"]) == float(csv_row["rate"])
        assert by_header["images"][0] == csv_row["n_images"] == str(IMAGES)
        for column, decimals in digits.items():
            text, attrs = by_header[titles[column]]
            assert float(attrs["data-value"]) == float(csv_row[column]), column
            assert text == f"{float(csv_row[column]):.{decimals}f}", column


def test_summary_counts_records_and_names_codec_versions(report, kodak_run):
    _, page = report
    records = read_rows(kodak_run / "records.csv")
    summary = next(t for t in page.tables if "summary" in t["class"])
    facts = {row[0][0]: row[1][0] for row in summary["rows"]}
    assert facts["records"] == f"{len(records)} ok, 0 failed"
    assert facts["status"] == "finished"
    assert facts["images"].startswith(f"{IMAGES}: kodim01, kodim02")
    codecs = next(t for t in page.tables if t["class"] == "codecs")
    versions = {row[0][0]: row[1][0] for row in codecs["rows"][1:]}
    manifest = json.loads((kodak_run / "manifest.json").read_text())
    assert versions == {name: manifest["codecs"][name]["version"] for name in RATES}


def test_per_image_drill_down_has_every_record(report, kodak_run):
    _, page = report
    records = read_rows(kodak_run / "records.csv")
    assert [d["image"] for d in page.details] == ["kodim01", "kodim02"]
    for detail in page.details:
        mine = [r for r in records if r["image_id"] == detail["image"]]
        header = [text for text, _ in detail["table"]["rows"][0]]
        rows = [dict(zip(header, row, strict=True)) for row in detail["table"]["rows"][1:]]
        assert len(rows) == len(mine)
        shown = {
            (row["codec"][0], float(row["rate"][0])): (
                float(row["bpp"][1]["data-value"]),
                float(row["PSNR [dB]"][1]["data-value"]),
                row["status"][0],
            )
            for row in rows
        }
        assert shown == {
            (r["codec"], float(r["rate"])): (float(r["bpp"]), float(r["psnr_rgb"]), "ok")
            for r in mine
        }


def test_bd_matrix_cells_are_the_bjontegaard_results(report, kodak_run):
    from bench import bjontegaard
    from bench.curves import read_aggregates

    _, page = report
    table = next(t for t in page.tables if "bd-psnr_rgb" in t["class"])
    names = [text for text, _ in table["rows"][0][1:]]
    assert names == list(RATES)
    expected = {
        (r.anchor, r.test): r.bd_rate
        for r in bjontegaard.bd_matrix(read_aggregates(kodak_run / "aggregates.csv"), "psnr_rgb")
    }
    for row in table["rows"][1:]:
        anchor = row[0][0]
        for test, (text, attrs) in zip(names, row[1:], strict=True):
            if test == anchor:
                assert text == "—"
                continue
            value = expected[(anchor, test)]
            assert math.isfinite(value)
            assert float(attrs["data-value"]) == value
            assert text.startswith(f"{value:+.1f} %")
    # WebP needs fewer bits than JPEG for the same PSNR on Kodak, and the reverse is positive.
    assert expected[("jpeg", "webp")] < 0 < expected[("webp", "jpeg")]


# --- crops -----------------------------------------------------------------------------------


def test_crops_are_the_reconstructions_of_the_measured_bitstreams(report, kodak_run, kodak):
    _, page = report
    records = read_rows(kodak_run / "records.csv")
    originals = [f for f in page.figures if f.get("data-kind") == "original"]
    assert len(originals) == 1
    x, y, w, h = (int(originals[0][f"data-{k}"]) for k in "xywh")
    assert (w, h) == (256, 256)
    pieces = [f for f in page.figures if f.get("data-kind") == "reconstruction"]
    assert {f["data-codec"] for f in pieces} == set(RATES) and not page.missing
    image_id = "kodim01"  # both images are coded by both codecs: the first one is cropped
    original = read_rgb8(kodak / f"{image_id}.png").pixels
    assert np.array_equal(png_pixels(originals[0]["src"]), original[y : y + h, x : x + w])
    # The first and last targets are ends of some codec's range: that codec shows its record.
    assert {f["data-source"] for f in pieces} == {"record", "search"}
    for figure in pieces:
        rate = float(figure["data-rate"])
        codec = create_codec(figure["data-codec"])
        data = codec.encode(original, rate)
        if figure["data-source"] == "record":
            record = next(
                r
                for r in records
                if r["image_id"] == image_id and r["codec"] == figure["data-codec"]
                and float(r["rate"]) == rate
            )  # fmt: skip
            assert figure["data-sha256"] == record["sha256"]
            assert len(data) == int(record["bytes"])
        else:  # coded at the target by the search: no record, the caption says so
            assert "coded here at the target" in figure["caption"]
        assert figure["data-sha256"] == hashlib.sha256(data).hexdigest()
        decoded = codec.decode(data)
        assert np.array_equal(png_pixels(figure["src"]), decoded[y : y + h, x : x + w])


def _tamper(path: Path, codec: str) -> None:
    rows = read_rows(path)
    for row in rows:
        if row["codec"] == codec:
            row["sha256"] = "0" * 64
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_bitstream_that_differs_is_not_shown(kodak_run, tmp_path):
    run_dir = copy_run(kodak_run, tmp_path / "tampered")
    for codec in RATES:
        _tamper(run_dir / "records.csv", codec)
    page = Page(write_report(run_dir).read_text())
    pieces = [f for f in page.figures if f.get("data-kind") == "reconstruction"]
    assert pieces and {f["data-source"] for f in pieces} == {"search"}  # no record to compare
    assert page.missing  # the records at the ends of the range
    for cell in page.missing:
        assert cell["data-sha256"] == "0" * 64
        assert "not reproducible on this machine" in cell["text"]
        assert "differs from the measured one" in cell["text"]


def test_a_codec_not_installed_here_is_named_and_the_rest_is_written(kodak_run, tmp_path):
    run_dir = copy_run(kodak_run, tmp_path / "elsewhere")
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["codecs"]["webp"]["target"] = "bench_codec_that_is_not_here.codec:Missing"
    manifest_path.write_text(json.dumps(manifest))
    page = Page(write_report(run_dir).read_text())
    assert page.missing
    assert all("webp cannot be loaded here" in cell["text"] for cell in page.missing)
    assert len(page.table("aggregates")["rows"]) == 1 + len(RATES["jpeg"]) + len(RATES["webp"])
    assert page.svgs == 2


def test_an_older_manifest_without_file_names_or_codec_classes(kodak_run, tmp_path):
    """The image is found through the dataset and the codec through the registry."""
    run_dir = copy_run(kodak_run, tmp_path / "old")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["image_files"], manifest["label_files"]
    for info in manifest["codecs"].values():
        del info["target"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    page = Page(write_report(run_dir).read_text())
    pieces = [f for f in page.figures if f.get("data-kind") == "reconstruction"]
    assert {f["data-codec"] for f in pieces} == set(RATES) and not page.missing


def test_no_crops_codes_nothing(kodak_run, tmp_path):
    out = tmp_path / "plain.html"
    assert main(["report", str(kodak_run), "--out", str(out), "--no-crops"]) == 0
    page = Page(out.read_text())
    assert not [f for f in page.figures if f.get("data-kind") in ("original", "reconstruction")]
    assert "crops" in page.sections and "Skipped" in out.read_text()


# --- odd run directories ---------------------------------------------------------------------


def test_not_a_run_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"no records\.csv and no manifest\.json"):
        write_report(tmp_path)
    with pytest.raises(UsageError, match="is not a directory"):
        write_report(tmp_path / "absent")
    assert main(["report", str(tmp_path)]) == 2


def test_interrupted_run_without_aggregates_or_plots(kodak_run, tmp_path):
    run_dir = copy_run(kodak_run, tmp_path / "killed")
    (run_dir / "aggregates.csv").unlink()
    shutil.rmtree(run_dir / "plots")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["status"] = "running"
    del manifest["ended"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    path = write_report(run_dir, crops=False)
    text = path.read_text()
    page = Page(text)
    assert "no aggregates.csv: aggregates recomputed from records.csv" in text
    assert "the run is still going or was killed" in text
    assert page.svgs == 2  # drawn again from the recomputed aggregates
    original = Page(write_report(kodak_run, tmp_path / "r.html", crops=False).read_text())
    assert page.table("aggregates")["rows"] == original.table("aggregates")["rows"]


@pytest.fixture(scope="module")
def nasty_run(kodak, tmp_path_factory) -> Path:
    """A folder dataset whose directory and file names are HTML, with one unreadable file."""
    root = tmp_path_factory.mktemp("nasty")
    images = root / NASTY_DIR
    images.mkdir()
    pixels = read_rgb8(kodak / "kodim03.png").pixels[100:292, 200:456]
    Image.fromarray(pixels).save(images / f"{NASTY_IMAGE}.png")
    (images / "<b onmouseover=alert(4)>broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = root / "run"
    plans = [plan_codec("jpeg", rates=[30, 70]), plan_codec("webp", rates=[40, 80])]
    result = run(
        FolderDataset(data_dir=images), plans, out, workers=0, argv=["bench", "run", NASTY_ARG]
    )
    write_run_outputs(result, report=False)
    return out


def test_everything_from_the_run_is_escaped(nasty_run):
    text = write_report(nasty_run).read_text()
    for raw in (NASTY_IMAGE, NASTY_DIR, NASTY_ARG, "<b onmouseover"):
        assert raw not in text, raw
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in text
    page = Page(text)
    assert any(d["image"] == NASTY_IMAGE for d in page.details)  # the id, once unescaped
    pieces = [f for f in page.figures if f.get("data-kind") == "reconstruction"]
    assert {f["data-codec"] for f in pieces} == {"jpeg", "webp"}


def test_failed_records_are_counted_and_their_errors_shown(nasty_run):
    page = Page(write_report(nasty_run, nasty_run / "again.html", crops=False).read_text())
    records = read_rows(nasty_run / "records.csv")
    failed = [r for r in records if r["status"] == "error"]
    assert len(failed) == 4 and len(records) == 8
    summary = next(t for t in page.tables if "summary" in t["class"])
    facts = {row[0][0]: row[1][0] for row in summary["rows"]}
    assert facts["records"] == "4 ok, 4 failed"
    errors = next(t for t in page.tables if t["class"] == "errors")
    assert len(errors["rows"]) == 1 + len({r["error"] for r in failed})
    assert errors["rows"][1][2][0] == failed[0]["error"]
    assert "<b onmouseover=alert(4)>broken" in failed[0]["error"]


def test_a_run_whose_records_all_failed(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "bad.png").write_bytes(b"not an image at all")
    out = tmp_path / "run"
    run(FolderDataset(data_dir=images), [plan_codec("jpeg", rates=[50])], out, workers=0)
    text = write_report(out).read_text()
    page = Page(text)
    cells = page.table("aggregates")["rows"][1]
    assert [c[0] for c in cells[4:7]] == ["0", "1", "n/a"]  # images, failed, bpp mean
    assert "No plots" in text and "No crops: no record of a codec succeeded." in text
    assert page.svgs == 0


# --- the browser -----------------------------------------------------------------------------


def chromium_path() -> str:
    for candidate in (os.environ.get("BENCH_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.skip(
        "no Chromium here (scripts/setup.sh test installs Debian's chromium; or set "
        "BENCH_CHROMIUM to a Chromium or Chrome executable)"
    )


def open_in_chromium(path: Path, screenshot: Path | None = None, inspect=None):
    """Load a report by file:// in headless Chromium; returns what the page said and did
    (and under "inspected" what ``inspect(page)`` returned)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (the test extra has it)"
    )
    executable = chromium_path()
    seen: dict = {"console": [], "errors": [], "dialogs": [], "requests": []}
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            seen["svg"] = page.locator("figure.plot svg").count()
            seen["tables"] = page.locator("table").count()
            seen["aggregate_rows"] = page.locator("table#aggregates tbody tr").count()
            seen["controls"] = page.locator("#image-filter").is_visible()
            seen["images_loaded"] = page.evaluate(
                "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            )
            if seen["controls"]:
                page.fill("#image-filter", "kodim02")
                seen["visible_after_filter"] = page.locator("details.image:visible").count()
            if inspect is not None:
                seen["inspected"] = inspect(page)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


def test_report_renders_in_chromium_without_errors(report, tmp_path):
    path, page = report
    shot = tmp_path / "report.png"

    def inspect(page):  # the plots' script ran (tests/test_svgplot.py tests it in full)
        page.hover("figure.plot circle.pt >> nth=0")
        return {
            "tip": page.locator(".plot-tip").inner_text(),
            "log_switches": page.locator("figure.plot input.logx").count(),
        }

    seen = open_in_chromium(path, shot, inspect)
    tip = seen["inspected"]["tip"].split("\n")
    assert tip[0] == "jpeg" and tip[1].startswith("quality=") and tip[2].endswith(" bpp")
    assert tip[3].startswith("PSNR mean [dB]: ")
    assert seen["inspected"]["log_switches"] == 2
    assert seen["console"] == [] and seen["errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == [path.resolve().as_uri()]  # nothing fetched but the file
    assert seen["svg"] == 2 and seen["tables"] == len(page.tables)
    assert seen["aggregate_rows"] == len(RATES["jpeg"]) + len(RATES["webp"])
    assert seen["images_loaded"]
    assert seen["controls"] and seen["visible_after_filter"] == 1  # the report's script ran
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size[0] == 1400 and image.size[1] > 2000
        assert len(np.unique(np.asarray(image.convert("L")))) > 64  # plots and crops, not blank
    if os.environ.get("BENCH_REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["BENCH_REPORT_SCREENSHOT"])


def test_hostile_names_raise_no_dialog_in_chromium(nasty_run):
    seen = open_in_chromium(write_report(nasty_run, nasty_run / "browser.html"))
    assert seen["dialogs"] == [] and seen["errors"] == [] and seen["console"] == []
    assert seen["svg"] == 2


# --- comparing runs --------------------------------------------------------------------------

COMPARED = {"jpeg": [20, 50, 85], "webp": [30, 60, 90]}
CURVES = ["jpeg (run A)", "webp (run A)", "jpeg (run B)", "webp (run B)"]


@pytest.fixture(scope="module")
def compared_runs(kodak, tmp_path_factory) -> tuple[Path, Path]:
    """Two real runs on three 192x256 crops in a folder: run B codes JPEG with 4:4:4 chroma
    instead of 4:2:0, and WebP as run A does."""
    import bench

    root = tmp_path_factory.mktemp("compare")
    images = root / "images"
    images.mkdir()
    for number in (3, 7, 23):
        pixels = read_rgb8(kodak / f"kodim{number:02d}.png").pixels[64:256, 128:384]
        Image.fromarray(pixels).save(images / f"crop{number:02d}.png")
    options = {"data_dir": str(images)}
    runs = [
        bench.run(
            "jpeg,webp",
            "folder",
            dataset_options=options,
            rates=COMPARED,
            out=root / name,
            workers=0,
            codec_options=codec_options,
        )
        for name, codec_options in (
            ("run-420", {"jpeg": {"subsampling": 420}}),
            ("run-444", {"jpeg": {"subsampling": 444}}),
        )
    ]
    return runs[0].directory, runs[1].directory


def _direct_bd(run_a: Path, run_b: Path, anchor: tuple[str, str], test: tuple[str, str]):
    """bench.bjontegaard on the two runs' aggregates.csv, as a user would compute it."""
    from bench import bjontegaard
    from bench.curves import read_aggregates

    curves = {
        label: bjontegaard.curves_from_aggregates(read_aggregates(d / "aggregates.csv"), "psnr_rgb")
        for label, d in (("A", run_a), ("B", run_b))
    }
    return bjontegaard.compare(curves[anchor[0]][anchor[1]], curves[test[0]][test[1]])


def test_comparison_page_has_both_runs_on_each_plot_and_bd_between_them(compared_runs, tmp_path):
    from bench.report import write_comparison

    run_a, run_b = compared_runs
    path = write_comparison([run_a, run_b], tmp_path / "pages" / "a-vs-b.html")
    text = path.read_text()
    page = Page(text)
    assert page.sections == ["runs", "plots", "bd", "provenance"]
    plots = [f for f in page.figures if f.get("class") == "plot"]
    assert [f["data-plot"] for f in plots] == ["rd_psnr", "rd_ms_ssim"] and page.svgs == 2
    for figure in plots:
        assert figure["data-curves"].split(" | ") == CURVES
    # The legends are SVG text: every curve is named in every plot.
    assert text.count(">jpeg (run B)</text>") == 2 and text.count(">webp (run A)</text>") == 2
    assert "different datasets" not in text
    runs = page.table("runs")
    assert [row[0][0] for row in runs["rows"][1:]] == ["A", "B"]
    assert [row[1][0] for row in runs["rows"][1:]] == [str(run_a), str(run_b)]
    # Each codec of run B against itself in run A: JPEG changed, WebP did not.
    same = page.table("bd-runs-psnr_rgb_mean")
    assert [text for text, _ in same["rows"][0]][:5] == [
        "codec", "anchor", "test", "BD-rate", "BD-PSNR [dB]"
    ]  # fmt: skip
    by_codec = {row[0][0]: row for row in same["rows"][1:]}
    assert list(by_codec) == ["jpeg", "webp"]
    for codec in by_codec:
        row = by_codec[codec]
        assert (row[1][0], row[2][0]) == (f"{codec} (run A)", f"{codec} (run B)")
        expected = _direct_bd(run_a, run_b, ("A", codec), ("B", codec))
        assert math.isfinite(expected.bd_rate) and math.isfinite(expected.bd_quality)
        assert float(row[3][1]["data-value"]) == expected.bd_rate
        assert float(row[4][1]["data-value"]) == expected.bd_quality
        assert row[3][0] == f"{expected.bd_rate:+.2f} %"
    assert abs(float(by_codec["jpeg"][3][1]["data-value"])) > 0.5  # 4:4:4 costs bits
    assert float(by_codec["webp"][3][1]["data-value"]) == 0.0  # the same curve
    # Every curve against the first codec of run A.
    anchored = page.table("bd-anchor-psnr_rgb_mean")
    assert [row[0][0] for row in anchored["rows"][1:]] == CURVES[1:]
    tests = [("A", "webp"), ("B", "jpeg"), ("B", "webp")]
    for row, (label, codec) in zip(anchored["rows"][1:], tests, strict=True):
        expected = _direct_bd(run_a, run_b, ("A", "jpeg"), (label, codec))
        assert float(row[1][1]["data-value"]) == expected.bd_rate
    assert page.table("bd-runs-ms_ssim_db_mean")["rows"][1:]  # MS-SSIM (dB) too
    # Provenance: each run's command, commit and dataset.
    for side in ("A", "B"):
        assert f'id="provenance-{side}"' in text
    kvs = [t for t in page.tables if t["class"] == "kv"]
    assert len(kvs) == 2
    for table_, run_dir in zip(kvs, (run_a, run_b), strict=True):
        facts = {row[0][0]: row[1][0] for row in table_["rows"]}
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert facts["command"] == manifest["command"]
        assert facts["git commit"].startswith(manifest["git"].get("commit") or "unknown")
        assert facts["dataset"] == manifest["dataset"]["tag"]


def test_comparison_of_runs_on_different_datasets_says_so(compared_runs, nasty_run, tmp_path):
    from bench.report import write_comparison

    hostile = shutil.copytree(compared_runs[0], tmp_path / NASTY_DIR)
    text = write_comparison([hostile, nasty_run], tmp_path / "mixed.html").read_text()
    assert "The runs are on different datasets" in text
    for raw in (NASTY_IMAGE, NASTY_DIR, NASTY_ARG, "<b onmouseover"):
        assert raw not in text, raw
    assert "&lt;svg onload=alert(2)&gt;" in text and "&lt;script&gt;alert(3)&lt;/script&gt;" in text
    page = Page(text)
    rows = page.table("bd-runs-psnr_rgb_mean")["rows"][1:]
    assert [row[0][0] for row in rows] == ["jpeg", "webp"]  # compared anyway


def test_comparison_renders_in_chromium_with_both_runs_on_the_same_axes(compared_runs, tmp_path):
    from bench.report import write_comparison

    path = write_comparison(list(compared_runs), tmp_path / "compare.html")

    def inspect(page):
        return page.evaluate(
            """() => ({
              plots: Array.from(document.querySelectorAll("figure.plot")).map(f => ({
                labels: Array.from(f.querySelectorAll("svg text")).map(t => t.textContent.trim()),
                box: (r => [r.width, r.height])(f.querySelector("svg").getBoundingClientRect()),
              })),
              bd: Array.from(document.querySelectorAll("table#bd-runs-psnr_rgb_mean tbody tr"))
                .map(tr => Array.from(tr.cells)
                  .map(c => c.getAttribute("data-value") || c.textContent)),
            })"""
        )

    shot = tmp_path / "compare.png"
    seen = open_in_chromium(path, shot, inspect)
    assert seen["console"] == [] and seen["errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == [path.resolve().as_uri()]  # nothing fetched but the file
    assert seen["images_loaded"] and seen["svg"] == 2
    found = seen["inspected"]
    for plot in found["plots"]:
        assert set(CURVES) <= set(plot["labels"])  # both runs' curves on one plot
        assert plot["box"][0] > 300 and plot["box"][1] > 200
    assert [row[0] for row in found["bd"]] == ["jpeg", "webp"]
    for row in found["bd"]:
        expected = _direct_bd(*compared_runs, ("A", row[0]), ("B", row[0]))
        assert float(row[3]) == expected.bd_rate and math.isfinite(float(row[3]))
    with Image.open(shot) as image:
        assert len(np.unique(np.asarray(image.convert("L")))) > 32  # plots drawn, not blank


# --- segmentation ----------------------------------------------------------------------------

CITYSCAPES_ROAD = (128, 64, 128)  # trainId 0 in the Cityscapes scripts' colour table


@pytest.mark.slow
def test_segmentation_run_has_miou_plot_class_table_and_overlays(
    espnet_weights, cityscapes_root, tmp_path
):
    from bench.datasets import open_dataset
    from bench.runner import plan_segmenter
    from bench.tasks import create_segmenter

    dataset = open_dataset(
        "cityscapes", {"data_dir": cityscapes_root, "split": "val", "resolution": "half"}
    )
    segmenter = plan_segmenter("espnet", {"weights": str(espnet_weights)})
    out = tmp_path / "run"
    result = run(dataset, [plan_codec("jpeg", rates=[10, 60])], out, workers=0, limit=1,
                 task=segmenter)  # fmt: skip
    write_run_outputs(result, report=False)
    page = Page(write_report(out).read_text())
    assert "per-class" in page.sections
    assert page.svgs == 3  # PSNR, MS-SSIM and mIoU
    table = page.table("aggregates")
    header = [text for text, _ in table["rows"][0]]
    csv_rows = read_rows(out / "aggregates.csv")
    assert [row["codec"] for row in csv_rows] == ["none", "jpeg", "jpeg"]
    for csv_row, cells in zip(csv_rows, table["rows"][1:], strict=True):
        text, attrs = dict(zip(header, cells, strict=True))["mIoU [%]"]
        assert float(attrs["data-value"]) == float(csv_row["miou"])
        assert text == f"{100 * float(csv_row['miou']):.2f}"
    classes = next(t for t in page.tables if t["rows"][0][0][0] == "class")
    assert [row[0][0] for row in classes["rows"][1:4]] == ["mIoU", "road", "sidewalk"]
    assert "traffic light" in [row[0][0] for row in classes["rows"]]
    # The original's overlay: half the image, half the class colour of the model's prediction.
    original_fig = next(f for f in page.figures if f.get("data-kind") == "original")
    x, y, w, h = (int(original_fig[f"data-{k}"]) for k in "xywh")
    image = dataset.load(dataset.refs()[0], with_label=False).image
    labels = create_segmenter("espnet", {"weights": str(espnet_weights)}).predict(image)
    shown = png_pixels(
        next(f for f in page.figures if f.get("data-kind") == "overlay-original")["src"]
    )
    crop, crop_labels = image[y : y + h, x : x + w], labels[y : y + h, x : x + w]
    road = crop_labels == 0
    assert road.any()
    expected = np.rint(0.5 * crop[road] + 0.5 * np.array(CITYSCAPES_ROAD)).astype(np.uint8)
    assert np.array_equal(shown[road], expected)
    assert np.array_equal(shown[crop_labels == 255], crop[crop_labels == 255])
    overlays = [f for f in page.figures if f.get("data-kind") == "overlay"]
    pieces = [f for f in page.figures if f.get("data-kind") == "reconstruction"]
    assert pieces and len(overlays) == len(pieces)
