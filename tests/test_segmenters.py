"""Built-in segmenters load the published weights strictly and segment real frames."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from bench.datasets import open_dataset
from bench.errors import UsageError
from bench.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou
from bench.outputs import write_run_outputs
from bench.runner import plan_codec, plan_segmenter, run
from bench.tasks import create_segmenter
from bench.weights import WeightsError

torch = pytest.importorskip("torch")


class NotWeights:
    """Pickled by reference: loading it would import and run code from this module."""


# (segmenter, weights file, options, tensor listing, values in the file)
MODELS = {
    "espnet": ("espnet/espnet_p_2_q_8.pth", {}, "espnet/espnet_p_2_q_8.keys.txt", 368_341),
    "espnetv2-s2": (
        "espnetv2/espnetv2_s_2.0_city_1024x512.pth",
        {"s": 2.0},
        "espnetv2/espnetv2_s_2.0_city_1024x512.keys.txt",
        814_351,
    ),
    "espnetv2-s1": ("espnetv2/espnetv2_s_1.0_city_1024x512.pth", {"s": 1.0}, None, None),
}
# Published Cityscapes mIoU: ESPNet 60.3 (test set), ESPNetv2 66.4 (s=2) and 60.1 (s=1).
# Measured on the 12 shared frames: protocol mIoU over 19 classes (truck, bus and train are
# absent from these labels, so any prediction of them scores 0) and mIoU over the 16 classes
# present, and pixel accuracy.
EXPECTED = {
    "espnet": ((0.50, 0.57), (0.60, 0.67), 0.93),  # measured 0.534, 0.634, 0.946
    "espnetv2-s2": ((0.58, 0.65), (0.62, 0.69), 0.94),  # measured 0.617, 0.655, 0.958
    "espnetv2-s1": ((0.45, 0.52), (0.54, 0.61), 0.93),  # measured 0.487, 0.579, 0.947
}


def _segmenter(models, key):
    weights, options, _, _ = MODELS[key]
    return create_segmenter(key.split("-")[0], {"weights": str(models / weights), **options})


@pytest.mark.parametrize("key", [k for k, v in MODELS.items() if v[2]])
def test_networks_match_the_published_tensor_listings(segmentation_models, key):
    _, _, listing_file, values = MODELS[key]
    segmenter = _segmenter(segmentation_models, key)
    listing = (segmentation_models / listing_file).read_text().splitlines()
    expected = {line.split("\t")[0]: line.split("\t")[1] for line in listing if line.strip()}
    own = {
        k: str(tuple(v.shape))
        for k, v in segmenter.model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    # Older checkpoints (ESPNet's) carry no BatchNorm step counters; compare the rest.
    assert own == {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    assert sum(int(np.prod(eval(shape))) for shape in expected.values()) == values


@pytest.mark.parametrize("key", list(MODELS))
def test_accuracy_on_the_shared_frames_is_in_line_with_the_papers(
    segmentation_models, cityscapes_root, key
):
    segmenter = _segmenter(segmentation_models, key)
    (low, high), (low_present, high_present), min_accuracy = EXPECTED[key]
    total = np.zeros((19, 20), np.int64)
    present: set[int] = set()
    for split in ("val", "train"):
        dataset = open_dataset("cityscapes", {"data_dir": cityscapes_root, "split": split})
        for ref in dataset.refs():
            sample = dataset.load(ref)
            prediction = segmenter.predict(sample.image)
            assert prediction.shape == sample.label.shape and prediction.dtype == np.uint8
            total += confusion_matrix(sample.label, prediction, 19)
            present |= set(np.unique(sample.label).tolist()) - {255}
    ious = iou_per_class(total)
    assert low < mean_iou(total) < high
    assert low_present < float(np.nanmean(ious[sorted(present)])) < high_present
    assert np.trace(total[:, :19]) / total.sum() > min_accuracy
    assert ious[0] > 0.95 and ious[10] > 0.88  # road, sky


def test_wrong_architecture_names_missing_and_unexpected_tensors(espnet_weights, tmp_path):
    state = torch.load(espnet_weights, map_location="cpu", weights_only=True)
    state["encoder.level9.conv.weight"] = state.pop("encoder.level1.conv.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(state, bad)
    v2 = MODELS["espnetv2-s2"][0]
    with pytest.raises(WeightsError, match=r"ESPNetv2 s=1 architecture: wrong shape"):
        create_segmenter("espnetv2", {"weights": str(espnet_weights.parents[1] / v2), "s": 1.0})
    with pytest.raises(
        WeightsError,
        match=r"missing \(1\): encoder\.level1\.conv\.weight.*"
        r"unexpected \(1\): encoder\.level9\.conv\.weight",
    ):
        create_segmenter("espnet", {"weights": str(bad)})
    v2 = MODELS["espnetv2-s2"][0]
    with pytest.raises(WeightsError, match=r"ESPNetv2 s=1 architecture: wrong shape"):
        create_segmenter("espnetv2", {"weights": str(espnet_weights.parents[1] / v2), "s": 1.0})
    with pytest.raises(
        WeightsError, match=r"ESPNet p=2 q=3 architecture: unexpected \(55\): encoder\.level3\.3"
    ):
        create_segmenter("espnet", {"weights": str(espnet_weights), "q": 3})


def test_a_pickle_that_is_not_plain_weights_is_refused(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"model": NotWeights()}, path)
    with pytest.raises(WeightsError, match=r"not a plain-weights checkpoint.*weights_only=True"):
        create_segmenter("espnet", {"weights": str(path)})


def test_options_are_checked():
    with pytest.raises(UsageError, match="needs weights=PATH"):
        create_segmenter("espnet")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            create_segmenter("espnet", {"weights": "x.pth", "device": "cuda"})


def test_jpeg_sweep_mIoU_falls_with_bpp(espnet_weights, cityscapes_root, tmp_path):
    dataset = open_dataset(
        "cityscapes", {"data_dir": cityscapes_root, "split": "val", "resolution": "half"}
    )
    segmenter = plan_segmenter("espnet", {"weights": str(espnet_weights)})
    result = run(
        dataset,
        [plan_codec("jpeg", rates=[5, 25, 90])],
        tmp_path / "run",
        workers=2,
        task=segmenter,
    )
    write_run_outputs(result, report=False)
    assert all(r.ok for r in result.records), [r.error for r in result.records if not r.ok]
    with (result.directory / "aggregates.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["codec"] for r in rows] == ["none", "jpeg", "jpeg", "jpeg"]
    reference, curve = rows[0], rows[1:]
    bpps = [float(r["bpp_mean"]) for r in curve]
    mious = [float(r["miou"]) for r in curve]
    assert bpps == sorted(bpps) and mious == sorted(mious)
    assert mious[0] < float(reference["miou"]) - 0.05  # quality 5 clearly hurts
    for row in rows:
        assert float(row["miou_drop"]) == pytest.approx(
            float(reference["miou"]) - float(row["miou"])
        )
        assert "iou_road" in row and "iou_bicycle" in row
    # Every record carries its own drop from the same image uncompressed.
    by_image = {r.image_id: r.miou for r in result.records if r.codec == "none"}
    for record in result.records:
        assert record.miou_drop == pytest.approx(by_image[record.image_id] - record.miou)
        assert record.confusion.startswith("19:") and record.segment_s > 0
    table = list(csv.reader((result.directory / "per_class_iou.csv").open()))
    assert table[0] == ["class", "none@0", "jpeg@5", "jpeg@25", "jpeg@90"]
    assert [row[0] for row in table[1:]][:3] == ["mIoU", "road", "sidewalk"]
    assert (result.directory / "plots" / "rd_miou.png").is_file()
    assert (result.directory / "plots" / "rd_miou.svg").read_text().count("uncompressed") >= 1


def test_segmentation_needs_labels(espnet_weights, kodak, tmp_path):
    segmenter = plan_segmenter("espnet", {"weights": str(espnet_weights)})
    with pytest.raises(UsageError, match="has no labels"):
        run(
            open_dataset("kodak", {"data_dir": kodak}),
            [plan_codec("jpeg", rates=[50])],
            tmp_path / "run",
            task=segmenter,
        )


def test_an_image_without_its_label_costs_only_its_records(
    espnet_weights, cityscapes_root, tmp_path
):
    import shutil

    root = tmp_path / "cs"
    shutil.copytree(cityscapes_root / "leftImg8bit" / "val", root / "leftImg8bit" / "val")
    shutil.copytree(cityscapes_root / "gtFine" / "val", root / "gtFine" / "val")
    for label in (root / "gtFine/val/frankfurt").glob("frankfurt_000000_000294_*"):
        label.unlink()
    dataset = open_dataset("cityscapes", {"data_dir": root, "split": "val", "resolution": "half"})
    segmenter = plan_segmenter("espnet", {"weights": str(espnet_weights)})
    result = run(
        dataset,
        [plan_codec("webp", rates=[40])],
        tmp_path / "run",
        workers=0,
        task=segmenter,
        limit=2,
    )
    bad = [r for r in result.records if r.image_id == "frankfurt_000000_000294"]
    good = [r for r in result.records if r.image_id != "frankfurt_000000_000294"]
    assert bad and all(not r.ok and "has no label map" in r.error for r in bad)
    assert good and all(r.ok and not math.isnan(r.miou) for r in good)
