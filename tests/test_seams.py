"""The seams: per-image codec inputs, record identity on resume, task objects, the typed
manifest, bd.csv and the Python API, on images the tests make (no ../shared needed)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench
from bench import executors
from bench.codecs import CODECS
from bench.codecs.inputs import map_sha256
from bench.curves import read_aggregates
from bench.datasets import open_dataset
from bench.errors import UsageError
from bench.manifest import (
    SCHEMA_VERSION,
    RunManifest,
    read_manifest,
    rebuild_codec,
    rebuild_dataset,
    rebuild_task,
)
from bench.metrics import create_metrics
from bench.outputs import write_run_outputs
from bench.records import read_csv
from bench.registry import Entry
from bench.runner import plan_codec, plan_segmenter, run
from bench.tasks import SEGMENTERS

HERE = Path(__file__).parent


@pytest.fixture
def fakes(monkeypatch):
    """Register the toy codec and segmenter, importable by worker processes too."""
    monkeypatch.setitem(CODECS._entries, "qmap", Entry("qmap", "fake_codecs:QualityMapCodec"))
    monkeypatch.setitem(
        SEGMENTERS._entries, "constant", Entry("constant", "fake_codecs:ConstantSegmenter")
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Three 192x256 images with label maps of three classes: left third 0, middle 1, right 2
    (255 on the first row)."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(7)
    for i in range(3):
        image = rng.integers(0, 256, (192, 256, 3), dtype=np.uint8)
        image[:, :80] = 90 + 30 * i  # a flat region
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        label = np.zeros((192, 256), np.uint8)
        label[:, 86:171], label[:, 171:] = 1, 2
        label[0] = 255
        Image.fromarray(label).save(root / "labels" / f"im{i}.png")
    return root


def folder(root: Path):
    options = {"data_dir": root / "images", "label_dir": root / "labels", "num_classes": 3}
    return open_dataset("folder", options), options


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- per-image codec inputs ------------------------------------------------------------------


def test_a_quality_map_from_label_classes_is_hashed_and_a_new_class_list_recomputes(
    fakes, labelled, tmp_path
):
    dataset, _ = folder(labelled)
    out = tmp_path / "run"
    plan = plan_codec("qmap", {"roi": "classes:class 1", "background": 0.1}, rates=[0.5, 0.9])
    first = run(dataset, [plan], out, workers=0)
    assert all(r.ok for r in first.records), [r.error for r in first.records]
    label = np.asarray(Image.open(labelled / "labels" / "im1.png"))
    for rate in (0.5, 0.9):
        expected = np.where(label == 1, np.float32(rate), np.float32(0.1)).astype(np.float32)
        record = next(r for r in first.records if r.image_id == "im1" and r.rate == rate)
        assert record.input_sha256 == map_sha256(expected)
        assert record.codec_input == "classes:class 1 bg=0.1"
    # The ROI (class 1) is coded finer than the background: its error is smaller.
    decoded = CODECS.load("qmap")().decode(
        rebuild_codec(read_manifest(out), "qmap").encode_with(
            np.asarray(Image.open(labelled / "images" / "im1.png")),
            0.9,
            {"quality_map": np.where(label == 1, 0.9, 0.1).astype(np.float32)},
        )
    )
    original = np.asarray(Image.open(labelled / "images" / "im1.png")).astype(int)
    error = np.abs(decoded.astype(int) - original).mean(axis=2)
    assert error[label == 1].mean() < error[label == 2].mean() / 4  # both random texture
    # Resuming with the same class list does nothing; another list recomputes every record.
    again = run(dataset, [plan], out, workers=0, resume=True)
    assert len(rows(out / "records.csv")) == 6 and len(again.records) == 6
    other = plan_codec("qmap", {"roi": "classes:class 2", "background": 0.1}, rates=[0.5, 0.9])
    changed = run(dataset, [other], out, workers=0, resume=True)
    assert len(changed.records) == 6
    assert {r.codec_input for r in changed.records} == {"classes:class 2 bg=0.1"}
    hashes = {r.input_sha256 for r in changed.records}
    assert not hashes & {r.input_sha256 for r in first.records}
    assert len(rows(out / "records.csv")) == 6  # the old ones are set aside, not mixed in
    assert len(rows(out / "records.superseded.csv")) == 6


def test_a_roi_class_the_dataset_does_not_have_is_a_usage_error(fakes, labelled, tmp_path):
    dataset, _ = folder(labelled)
    plan = plan_codec("qmap", {"roi": "classes:person"}, rates=[0.5])
    with pytest.raises(UsageError, match="person"):
        run(dataset, [plan], tmp_path / "run", workers=0)


def test_a_roi_mask_directory_gives_each_image_its_map(fakes, labelled, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):
        mask = np.zeros((192, 256), np.uint8)
        mask[10 * i : 10 * i + 20, 5:50] = 255
        Image.fromarray(mask).save(masks / f"im{i}.png")
    (masks / "im2.png").unlink()  # a missing mask costs that image only
    dataset, _ = folder(labelled)
    plan = plan_codec("qmap", {"roi": f"dir:{masks}"}, rates=[0.7])
    result = run(dataset, [plan], tmp_path / "run", workers=0)
    by_image = {r.image_id: r for r in result.records}
    assert by_image["im0"].ok and by_image["im1"].ok
    assert by_image["im0"].input_sha256 != by_image["im1"].input_sha256
    assert not by_image["im2"].ok and "im2.png" in by_image["im2"].error


def test_psnr_inside_and_outside_the_roi_reads_the_codec_inputs_region(fakes, labelled, tmp_path):
    """psnr-roi scores the ROI of the codec input (class 1 here), computed independently."""
    from bench.metrics.fidelity import psnr_from_mse

    dataset, _ = folder(labelled)
    plan = plan_codec("qmap", {"roi": "classes:class 1", "background": 0.1}, rates=[0.3, 0.9])
    metrics = create_metrics(["psnr", "psnr-roi"])
    result = run(dataset, [plan], tmp_path / "run", workers=2, metrics=metrics)
    write_run_outputs(result, report=False)
    assert all(r.ok for r in result.records), [r.error for r in result.records]
    label = np.asarray(Image.open(labelled / "labels" / "im1.png"))
    original = np.asarray(Image.open(labelled / "images" / "im1.png")).astype(np.float64)
    codec = CODECS.load("qmap")(roi="classes:class 1", background=0.1)
    for rate in (0.3, 0.9):
        quality_map = np.where(label == 1, rate, 0.1).astype(np.float32)
        decoded = codec.decode(
            codec.encode_with(original.astype(np.uint8), rate, {"quality_map": quality_map})
        )
        error = (decoded.astype(np.float64) - original) ** 2
        record = next(r for r in result.records if r.image_id == "im1" and r.rate == rate)
        assert record.values["psnr_roi"] == pytest.approx(psnr_from_mse(error[label == 1].mean()))
        assert record.values["psnr_non_roi"] == pytest.approx(
            psnr_from_mse(error[label != 1].mean())
        )
        assert record.values["roi_fraction"] == pytest.approx((label == 1).mean())
    low, high = ([r for r in result.records if r.rate == rate] for rate in (0.3, 0.9))
    assert min(r.values["psnr_roi"] for r in high) > max(r.values["psnr_roi"] for r in low)
    assert all(r.values["psnr_roi"] > r.values["psnr_non_roi"] for r in high)
    aggregates = rows(tmp_path / "run" / "aggregates.csv")
    assert {"psnr_roi_mean", "psnr_non_roi_mean"} <= set(aggregates[0])
    # Without an ROI the columns stay empty and the record says why.
    uniform = run(
        dataset,
        [plan_codec("qmap", {}, rates=[0.5])],
        tmp_path / "flat",
        workers=0,
        metrics=metrics,
    )
    assert all(r.ok and r.values["psnr_roi"] is None for r in uniform.records)
    assert "needs a region of interest" in uniform.records[0].note


# --- record identity on resume ---------------------------------------------------------------


def test_resume_with_other_codec_options_recomputes_and_keeps_only_the_new(labelled, tmp_path):
    dataset, _ = folder(labelled)
    out = tmp_path / "run"
    run(dataset, [plan_codec("jpeg", {"subsampling": 420}, rates=[50])], out, workers=0)
    result = run(
        dataset, [plan_codec("jpeg", {"subsampling": 444}, rates=[50])], out, workers=0, resume=True
    )
    write_run_outputs(result, report=False)
    assert len(result.records) == 3
    assert all(json.loads(r.codec_options)["subsampling"] == "444" for r in result.records)
    fresh = run(dataset, [plan_codec("jpeg", {"subsampling": 444}, rates=[50])], tmp_path / "fresh")
    assert [r.sha256 for r in result.records] == [r.sha256 for r in fresh.records]
    aggregates = read_aggregates(out / "aggregates.csv")
    assert len(aggregates) == 1 and aggregates[0].n_images == 3


def test_resume_with_target_bpp_does_not_reuse_rate_value_records(labelled, tmp_path):
    dataset, _ = folder(labelled)
    out = tmp_path / "run"
    run(dataset, [plan_codec("jpeg", rates=[1])], out, workers=0)
    result = run(dataset, [plan_codec("jpeg", targets=[1.0])], out, workers=0, resume=True)
    assert len(result.records) == 3
    assert all(r.target_bpp == 1.0 and r.ok for r in result.records)
    assert {r.rate for r in result.records} != {1.0}  # searched, not the stored quality=1


def test_resume_with_other_metrics_recomputes(labelled, tmp_path):
    dataset, _ = folder(labelled)
    out = tmp_path / "run"
    plans = [plan_codec("jpeg", rates=[50])]
    run(dataset, plans, out, workers=0, metrics=create_metrics(["psnr"]))
    result = run(dataset, plans, out, workers=0, resume=True)
    assert all(r.metrics == "psnr,ssim,ms-ssim" and r.ssim_rgb is not None for r in result.records)


def test_resume_with_other_dataset_options_does_not_mix(labelled, tmp_path, cityscapes_root):
    out = tmp_path / "run"
    full = open_dataset("cityscapes", {"data_dir": cityscapes_root, "split": "val"})
    half = open_dataset(
        "cityscapes", {"data_dir": cityscapes_root, "split": "val", "resolution": "half"}
    )
    run(full, [plan_codec("jpeg", rates=[30])], out, workers=0, limit=1)
    result = run(half, [plan_codec("jpeg", rates=[30])], out, workers=0, limit=1, resume=True)
    write_run_outputs(result, report=False)
    assert [(r.dataset, r.width) for r in result.records] == [("cityscapes/val@1024x512", 1024)]
    assert [a.dataset for a in read_aggregates(out / "aggregates.csv")] == [half.tag]


# --- tasks -----------------------------------------------------------------------------------


def test_two_in_process_runs_with_other_segmenters_keep_their_own_reference(
    fakes, labelled, tmp_path
):
    dataset, _ = folder(labelled)
    for label in (0, 2):
        task = plan_segmenter("constant", {"label": label})
        result = run(
            dataset, [plan_codec("jpeg", rates=[90])], tmp_path / f"s{label}", workers=0, task=task
        )
        write_run_outputs(result, report=False)
        reference = [r for r in result.records if r.codec == "none"]
        assert reference and all(r.miou_drop == 0.0 for r in reference)
        # Predicting one class everywhere: IoU of that class = its share of the labelled pixels.
        rows_ = {a.codec: a for a in read_aggregates(tmp_path / f"s{label}" / "aggregates.csv")}
        share = 86 / 256 if label == 0 else 85 / 256
        assert rows_["none"].get(f"iou_class_{label}") == pytest.approx(share)
        assert rows_["none"].miou == pytest.approx(share / 3)
        assert rows_["none"].miou_drop == 0.0


def test_a_segmenter_whose_class_names_differ_by_name_is_refused(labelled, cityscapes_root):
    from bench.tasks.segmentation import SegmentationTask

    city = open_dataset("cityscapes", {"data_dir": cityscapes_root})
    names = [f"c{i}" for i in range(19)]
    renamed = SegmentationTask("x", "fake_codecs:ConstantSegmenter", {}, names, {})
    with pytest.raises(UsageError, match="name their classes differently"):
        renamed.check(city)


def test_a_task_needs_labels(fakes, tmp_path, labelled):
    dataset = open_dataset("folder", {"data_dir": labelled / "images"})
    task = plan_segmenter("constant")
    with pytest.raises(UsageError, match="no labels"):
        run(dataset, [plan_codec("jpeg", rates=[50])], tmp_path / "r", task=task)


def test_a_version_2_manifest_with_its_segmenter_field_reads_rebuilds_and_resumes(
    fakes, labelled, tmp_path
):
    from bench.cli import main
    from bench.tasks.segmentation import SegmentationTask

    dataset, _ = folder(labelled)
    out, plans = tmp_path / "run", [plan_codec("jpeg", rates=[60])]
    first = run(
        dataset, plans, out, workers=0, task=plan_segmenter("constant", {"label": 1}),
        finish=write_run_outputs,
    )  # fmt: skip
    before = {(a.codec, a.rate): a.miou for a in read_aggregates(out / "aggregates.csv")}
    # Rewrite the manifest as bench wrote it before tasks were generic (schema version 2).
    data = json.loads((out / "manifest.json").read_text())
    entry = data.pop("task")
    data.update(schema_version=2, task="segmentation", segmenter=entry["provenance"])
    (out / "manifest.json").write_text(json.dumps(data))

    manifest = read_manifest(out)
    assert manifest.schema_version == SCHEMA_VERSION and manifest.task is not None
    assert manifest.task.name == "segmentation" and manifest.task_name == "segmentation"
    assert manifest.task.identity == first.records[0].task
    assert manifest.class_names == ["class 0", "class 1", "class 2"]
    task = rebuild_task(manifest)
    assert isinstance(task, SegmentationTask) and task.identity == first.records[0].task
    assert task.options == {"label": 1} and task.target == "fake_codecs:ConstantSegmenter"
    # bench curves recomputes the aggregates through the rebuilt task: the same numbers.
    assert main(["curves", str(out)]) == 0
    after = {(a.codec, a.rate): a.miou for a in read_aggregates(out / "aggregates.csv")}
    assert after == before
    # Resuming codes and segments nothing again, and writes a current manifest.
    lines = (out / "records.csv").read_text().count("\n")
    run(dataset, plans, out, workers=0, task=plan_segmenter("constant", {"label": 1}), resume=True)
    assert (out / "records.csv").read_text().count("\n") == lines
    written = json.loads((out / "manifest.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION and "segmenter" not in written
    assert written["task"] == entry


def test_segmentation_flags_and_task_options_are_two_spellings_of_one_task(
    fakes, labelled, tmp_path
):
    from bench.cli import main

    base = [
        "run", "--codecs", "jpeg", "--rates", "jpeg=60", "--dataset", "folder",
        "--data-dir", str(labelled / "images"), "--label-dir", str(labelled / "labels"),
        "--num-classes", "3", "--workers", "0", "--task", "segmentation",
    ]  # fmt: skip
    flags = ["--segmenter", "constant", "--segmenter-option", "label=1"]
    generic = ["--task-option", "segmenter=constant", "--task-option", "label=1"]
    assert main([*base, *flags, "--out", str(tmp_path / "flags")]) == 0
    assert main([*base, *generic, "--out", str(tmp_path / "generic")]) == 0
    bench.run(
        "jpeg", "folder", rates={"jpeg": [60]}, segmenter="constant",
        segmenter_options={"label": 1}, out=tmp_path / "api", workers=0,
        dataset_options={"data_dir": labelled / "images", "label_dir": labelled / "labels",
                         "num_classes": 3},
    )  # fmt: skip
    found = [read_csv(tmp_path / name / "records.csv") for name in ("flags", "generic", "api")]
    assert [r.task for r in found[0]] == [r.task for r in found[1]] == [r.task for r in found[2]]
    assert found[0][0].task == plan_segmenter("constant", {"label": 1}).identity
    assert [r.miou for r in found[0]] == [r.miou for r in found[1]] == [r.miou for r in found[2]]
    assert read_manifest(tmp_path / "flags").task == read_manifest(tmp_path / "generic").task


def test_older_manifests_without_a_task_read_as_compression():
    for data in ({"schema_version": 2, "task": "compression", "segmenter": None}, {}):
        manifest = RunManifest.from_dict(data)
        assert manifest.task is None and manifest.task_name == "compression"
        assert rebuild_task(manifest) is None


# --- manifest, exporters, API ----------------------------------------------------------------


def test_the_manifest_is_typed_and_rebuilds_the_dataset_and_codecs(labelled, tmp_path):
    _, options = folder(labelled)
    result = bench.run(
        "jpeg,webp", "folder", dataset_options=options, rates={"jpeg": [30], "webp": [40]},
        out=tmp_path / "api", workers=0,
    )  # fmt: skip
    manifest = read_manifest(result.directory)
    assert manifest.schema_version == SCHEMA_VERSION and manifest.status == "finished"
    assert manifest.metrics == ["psnr", "ssim", "ms-ssim"] and manifest.executor == "in-process"
    again = rebuild_dataset(manifest)
    assert again is not None and [r.id for r in again.refs()] == ["im0", "im1", "im2"]
    assert rebuild_codec(manifest, "webp").options == manifest.codecs["webp"].options


def test_load_gives_dataframes_whose_aggregates_equal_aggregates_csv(labelled, tmp_path):
    _, options = folder(labelled)
    result = bench.run(
        ["jpeg", "webp"], "folder", dataset_options=options,
        rates={"jpeg": [20, 60], "webp": [30, 70]}, out=tmp_path / "api", workers=0,
    )  # fmt: skip
    loaded = bench.load(result.directory)
    written = read_aggregates(result.directory / "aggregates.csv")
    assert len(loaded.aggregates) == len(written) == 4
    for (_, row), aggregate in zip(loaded.aggregates.iterrows(), written, strict=True):
        assert row["codec"] == aggregate.codec and row["rate"] == aggregate.rate
        for column in ("bpp_mean", "psnr_rgb_mean", "psnr_rgb_pooled", "ms_ssim_db_mean"):
            assert row[column] == aggregate.get(column)
    assert len(loaded.records) == 12 and set(loaded.records["codec"]) == {"jpeg", "webp"}
    assert loaded.records["psnr_rgb"].dtype == np.float64
    assert loaded.manifest.dataset_tag == result.records[0].dataset
    # bd.csv: every ordered pair, both methods, every BD metric with values.
    assert len(loaded.bd) == 2 * 2 * 2  # (psnr, ms-ssim) x (pchip, akima) x 2 pairs
    assert set(loaded.bd["metric"]) == {"psnr_rgb", "ms_ssim_db"}
    from bench.bjontegaard import bd_matrix

    expected = {(r.anchor, r.test): r.bd_rate for r in bd_matrix(written, "psnr_rgb", "pchip")}
    chosen = loaded.bd[(loaded.bd.metric == "psnr_rgb") & (loaded.bd.method == "pchip")]
    for _, line in chosen.iterrows():
        got, want = line["bd_rate"], expected[(line["anchor"], line["test"])]
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12)


def test_a_run_with_chosen_metrics_has_only_their_columns(labelled, tmp_path):
    dataset, _ = folder(labelled)
    result = write_run_outputs(
        run(
            dataset,
            [plan_codec("jpeg", rates=[50])],
            tmp_path / "r",
            metrics=create_metrics(["psnr"]),
        ),
        report=False,
    )
    header = next(csv.reader((tmp_path / "r" / "records.csv").open()))
    assert "psnr_rgb" in header and "ssim_rgb" not in header and "ms_ssim_rgb" not in header
    assert set(result.records[0].values) == {"mse", "psnr_rgb"}
    aggregates = rows(tmp_path / "r" / "aggregates.csv")[0]
    assert "psnr_rgb_mean" in aggregates and "ssim_rgb_mean" not in aggregates
    assert [p.name for p in result.plots] == ["rd_psnr.png", "rd_psnr.svg"]


def test_executors_in_process_and_pool_give_the_same_records(labelled, tmp_path):
    dataset, _ = folder(labelled)
    plans = [plan_codec("jpeg", rates=[40, 80]), plan_codec("webp", rates=[50])]
    a = run(dataset, plans, tmp_path / "a", executor=executors.InProcess())
    b = run(dataset, plans, tmp_path / "b", executor=executors.LocalPool(2))
    assert [(r.slot, r.sha256, r.psnr_rgb) for r in a.records] == [
        (r.slot, r.sha256, r.psnr_rgb) for r in b.records
    ]


def test_records_read_back_equal_what_was_written(labelled, tmp_path):
    dataset, _ = folder(labelled)
    result = run(dataset, [plan_codec("webp", rates=[60])], tmp_path / "r")
    assert read_csv(tmp_path / "r" / "records.csv") == result.records


def test_a_plugin_metric_gets_the_device_and_its_provenance_reaches_the_manifest(
    labelled, tmp_path, monkeypatch, capsys
):
    from bench.cli import main
    from bench.metrics import METRICS

    monkeypatch.setitem(METRICS._entries, "mae", Entry("mae", "fake_codecs:MeanAbsoluteError"))
    metrics = create_metrics(["psnr", "mae"], device="cuda:3")
    assert metrics[1].device == "cuda:3"  # type: ignore[attr-defined]
    dataset, _ = folder(labelled)
    metrics = create_metrics(["mae"])
    result = run(dataset, [plan_codec("jpeg", rates=[50])], tmp_path / "r", metrics=metrics)
    manifest = read_manifest(result.directory)
    assert manifest.metric_provenance == {"mae": {"device": "cpu", "weights_sha256": "0" * 64}}
    with Image.open(labelled / "images" / "im0.png") as image:
        original = np.asarray(image)
    codec = CODECS.load("jpeg")()
    decoded = codec.decode(codec.encode(original, 50))
    expected = np.abs(original.astype(float) - decoded).mean()
    assert result.records[0].mae == pytest.approx(expected, rel=1e-12)
    assert main(["list", "metrics"]) == 0
    listing = capsys.readouterr().out
    assert "psnr-yuv" in listing and "mae_mean" in listing and "ms_ssim_db_mean" in listing
    assert main(["list", "tasks"]) == 0
    assert "segmentation" in capsys.readouterr().out
