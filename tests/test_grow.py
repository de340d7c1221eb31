"""Growing a run: ``--resume`` with other codecs keeps the run's other codecs (issue 29).

A resume that sweeps only a new codec keeps every record of the codecs the run swept before,
byte for byte, with their manifest entries, aggregates, plots and report rows; only records
that cannot stand beside this run's (other codec options, metrics, task, images or rate
points) are set aside in records.superseded.csv, and the manifest's warnings say so."""

from __future__ import annotations

import csv
import html
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import EXIT_OK, main
from bench.codecs import create_codec
from bench.datasets.folder import FolderDataset
from bench.manifest import read_manifest
from bench.metrics import create_metrics
from bench.outputs import write_run_outputs
from bench.records import read_csv
from bench.report import write_report
from bench.runner import RunResult, plan_codec, run

RATES = {"jpeg": [20, 70], "webp": [30, 80], "jpeg2000": [96, 24]}
ADDED_CANDIDATES = ("jpegxl", "avif", "hevc-intra")
IMAGES = 3
SUPERSEDED = "records.superseded.csv"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 176x176 images (MS-SSIM's smallest size): smooth gradients with mild noise."""
    root = tmp_path_factory.mktemp("grow-images")
    rng = np.random.default_rng(29)
    ramp = np.linspace(0, 200, 176, dtype=np.float32)
    for i in range(IMAGES):
        base = ramp[None, :, None] * np.array([1.0, 0.6, 0.3], np.float32) + 20 * i
        noisy = base + rng.normal(0, 6, (176, 176, 3)) + ramp[:, None, None] * 0.2
        pixels = np.clip(noisy, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def added() -> str:
    """A fourth cheap codec usable here, added to a finished run."""
    for name in ADDED_CANDIDATES:
        if create_codec(name).availability().usable:
            return name
    pytest.skip(f"none of {', '.join(ADDED_CANDIDATES)} is usable here")


def _sweep(
    images: Path,
    out: Path,
    codecs: dict[str, list[float]],
    *,
    resume: bool = False,
    options: dict[str, dict[str, object]] | None = None,
    metrics: list[str] | None = None,
    limit: int | None = None,
) -> RunResult:
    """``bench run`` in-process: the sweep, then aggregates and plots (no report)."""
    plans = [
        plan_codec(name, (options or {}).get(name), rates=rates) for name, rates in codecs.items()
    ]
    return run(
        FolderDataset(data_dir=images),
        plans,
        out,
        workers=0,
        resume=resume,
        limit=limit,
        metrics=create_metrics(metrics) if metrics else None,
        finish=lambda result: write_run_outputs(result, report=False),
    )


def _rows(path: Path, codec: str) -> list[dict[str, str]]:
    """The rows of a CSV (records or aggregates) of one codec, as written."""
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["codec"] == codec]


def _report_text(out: Path) -> str:
    write_report(out, crops=False)
    return html.unescape((out / "report.html").read_text())


def test_a_resume_with_a_new_codec_keeps_the_other_codecs_untouched(images, added, tmp_path):
    out = tmp_path / "run"
    _sweep(images, out, RATES)
    before = {c: _rows(out / "records.csv", c) for c in RATES}
    parsed = {c: [r for r in read_csv(out / "records.csv") if r.codec == c] for c in RATES}
    aggregates = {c: _rows(out / "aggregates.csv", c) for c in RATES}
    assert all(len(rows) == IMAGES * 2 for rows in before.values())

    grown = _sweep(images, out, {added: [5, 2] if added == "jpegxl" else [30, 70]}, resume=True)

    for codec in RATES:  # the same rows, times included: nothing was recomputed
        assert _rows(out / "records.csv", codec) == before[codec]
        assert [r for r in read_csv(out / "records.csv") if r.codec == codec] == parsed[codec]
        assert _rows(out / "aggregates.csv", codec) == aggregates[codec]
    new = [r for r in read_csv(out / "records.csv") if r.codec == added]
    assert len(new) == IMAGES * 2 and all(r.ok for r in new), [r.error for r in new]
    assert len(_rows(out / "aggregates.csv", added)) == 2
    assert not (out / SUPERSEDED).exists()
    assert {r.codec for r in grown.records} == {*RATES, added}

    manifest = read_manifest(out)
    assert list(manifest.codecs) == [*RATES, added]  # the earlier codecs first, then the new
    assert manifest.codecs["jpeg2000"].rates == [96.0, 24.0]
    assert manifest.codecs["jpeg"].options == {
        "subsampling": "420",
        "optimize": False,
        "progressive": False,
    }
    assert manifest.warnings == [] and manifest.status == "finished"
    assert manifest.records == {"ok": IMAGES * 2 * 4, "error": 0}
    assert [r.codec for r in grown.records] == [
        c for c in [*RATES, added] for _ in range(IMAGES * 2)
    ]  # sorted by the manifest's codec order

    plot = (out / "plots" / "rd_psnr.svg").read_text()
    assert all(codec in plot for codec in [*RATES, added])
    report = _report_text(out)
    codec_table = re.search(r'<table class="codecs">.*?</table>', report, re.S)
    assert codec_table is not None
    for codec in [*RATES, added]:
        assert f"<td>{codec}</td>" in codec_table.group(0)


def test_a_resume_with_one_codec_under_other_options_sets_aside_exactly_its_records(
    images, tmp_path
):
    out = tmp_path / "run"
    codecs = {"jpeg": RATES["jpeg"], "webp": RATES["webp"]}
    _sweep(images, out, codecs)
    webp = _rows(out / "records.csv", "webp")
    old_jpeg = _rows(out / "records.csv", "jpeg")

    _sweep(images, out, {"jpeg": RATES["jpeg"]}, resume=True, options={"jpeg": {"optimize": True}})

    assert _rows(out / "records.csv", "webp") == webp
    jpeg = [r for r in read_csv(out / "records.csv") if r.codec == "jpeg"]
    assert len(jpeg) == IMAGES * 2 and all('"optimize": true' in r.codec_options for r in jpeg)
    assert _rows(out / SUPERSEDED, "jpeg") == old_jpeg
    assert _rows(out / SUPERSEDED, "webp") == []
    message = (
        f"jpeg: {IMAGES * 2} record(s) made under other codec options were moved to {SUPERSEDED}"
    )
    manifest = read_manifest(out)
    assert manifest.warnings == [message]
    assert list(manifest.codecs) == ["jpeg", "webp"]
    assert manifest.codecs["jpeg"].options["optimize"] is True
    assert message in _report_text(out)


def test_a_resume_under_other_metrics_sets_aside_the_kept_codecs_records_too(images, tmp_path):
    out = tmp_path / "run"
    _sweep(images, out, {"jpeg": RATES["jpeg"], "webp": RATES["webp"]})
    old = read_csv(out / "records.csv")

    result = _sweep(images, out, {"webp": RATES["webp"]}, resume=True, metrics=["psnr"])

    assert {r.codec for r in result.records} == {"webp"}
    assert all(r.metrics == "psnr" for r in read_csv(out / "records.csv"))
    assert len(read_csv(out / SUPERSEDED)) == len(old)
    manifest = read_manifest(out)
    assert list(manifest.codecs) == ["webp"]  # jpeg kept no record
    assert manifest.warnings == [
        f"{codec}: {IMAGES * 2} record(s) made under other metrics than this run's were moved "
        f"to {SUPERSEDED}"
        for codec in ("jpeg", "webp")
    ]
    assert not _rows(out / "aggregates.csv", "jpeg")


def test_a_kept_codec_keeps_only_the_images_this_run_sweeps(images, added, tmp_path):
    out = tmp_path / "run"
    _sweep(images, out, {"jpeg": RATES["jpeg"]})
    rates = [5, 2] if added == "jpegxl" else [30, 70]

    _sweep(images, out, {added: rates}, resume=True, limit=2)

    kept = [r for r in read_csv(out / "records.csv") if r.codec == "jpeg"]
    assert {r.image_id for r in kept} == {"im0", "im1"}
    aside = read_csv(out / SUPERSEDED)
    assert {(r.codec, r.image_id) for r in aside} == {("jpeg", "im2")}
    assert read_manifest(out).warnings == [
        f"jpeg: 2 record(s) of images this run does not sweep were moved to {SUPERSEDED}"
    ]


def test_a_kept_codec_that_misses_images_of_this_run_is_named_in_a_warning(images, added, tmp_path):
    out = tmp_path / "run"
    _sweep(images, out, {"jpeg": RATES["jpeg"]}, limit=2)
    rates = [5, 2] if added == "jpegxl" else [30, 70]

    _sweep(images, out, {added: rates}, resume=True)

    assert len([r for r in read_csv(out / "records.csv") if r.codec == "jpeg"]) == 4
    (warning,) = read_manifest(out).warnings
    assert warning.startswith("jpeg was kept from an earlier run")
    assert "has 4 of the 6 records" in warning and "add jpeg to --codecs" in warning
    assert not (out / SUPERSEDED).exists()


def test_bench_run_resume_with_another_codec_grows_the_run(images, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--dataset", "folder", "--data-dir", str(images), "--workers", "0", "--out", str(out)]
    assert main(["run", "--codecs", "jpeg", "--rates", "jpeg=20,70", *common]) == EXIT_OK
    jpeg = _rows(out / "records.csv", "jpeg")

    argv = ["run", "--codecs", "webp", "--rates", "webp=30,80", "--resume", *common]
    assert main(argv) == EXIT_OK

    assert _rows(out / "records.csv", "jpeg") == jpeg
    assert len(_rows(out / "records.csv", "webp")) == IMAGES * 2
    assert list(read_manifest(out).codecs) == ["jpeg", "webp"]
    report = (out / "report.html").read_text()  # as bench run wrote it
    assert "<td>jpeg</td>" in report and "<td>webp</td>" in report
    assert not (out / SUPERSEDED).exists()


def test_a_kept_target_bpp_codec_keeps_its_searched_records(images, tmp_path):
    out = tmp_path / "run"
    dataset = FolderDataset(data_dir=images)
    searched = plan_codec("jpeg", targets=[0.5, 1.0])
    run(dataset, [searched], out, workers=0, limit=2)
    before = _rows(out / "records.csv", "jpeg")

    grown = run(dataset, [plan_codec("webp", rates=[50])], out, workers=0, limit=2, resume=True)

    assert _rows(out / "records.csv", "jpeg") == before
    assert [r.target_bpp for r in grown.records if r.codec == "jpeg"] == [0.5, 0.5, 1.0, 1.0]
    manifest = read_manifest(out)
    assert manifest.codecs["jpeg"].target_bpp == [0.5, 1.0] and manifest.warnings == []


def test_a_grown_run_with_a_task_keeps_its_reference_and_other_codecs(images, tmp_path):
    from toy_task import ToyTask

    out = tmp_path / "run"
    dataset = FolderDataset(data_dir=images)
    task = ToyTask(threshold=24)
    run(dataset, [plan_codec("jpeg", rates=[20, 80])], out, workers=0, task=task, limit=2)
    before = {c: _rows(out / "records.csv", c) for c in ("none", "jpeg")}

    grown = run(dataset, [plan_codec("webp", rates=[50])], out, workers=0, task=task, limit=2,
                resume=True)  # fmt: skip

    assert {c: _rows(out / "records.csv", c) for c in ("none", "jpeg")} == before
    assert list(read_manifest(out).codecs) == ["none", "jpeg", "webp"]
    assert len([r for r in grown.records if r.codec == "webp"]) == 2

    run(dataset, [plan_codec("webp", rates=[50])], out, workers=0, limit=2, resume=True)

    manifest = read_manifest(out)
    assert list(manifest.codecs) == ["webp"]  # no task: the reference and jpeg go
    assert manifest.warnings == [
        f"{codec}: {n} record(s) made under another task than this run's were moved to {SUPERSEDED}"
        for codec, n in (("none", 2), ("jpeg", 4), ("webp", 2))
    ]
