"""The ``heatmap`` kind of codec input: the heat map as a codec's quality map and, thresholded,
as the region ``psnr-roi`` scores (the seam the tic codec already uses)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.codecs import CODECS
from bench.codecs.heatmaps.sources import heatmap_source
from bench.codecs.inputs import QualityMapSource, map_sha256
from bench.datasets import Sample, open_dataset
from bench.errors import UsageError
from bench.metrics import create_metrics
from bench.registry import Entry
from bench.runner import plan_codec, run

HERE = Path(__file__).parent


def _striped(seed: int) -> np.ndarray:
    """Vertical stripes with one patch of horizontal ones (what saliency picks)."""
    y, x = np.mgrid[0:48, 0:64]
    rng = np.random.default_rng(seed)
    grey = 128 + 60 * np.sin(2 * np.pi * x / 8) + rng.normal(0, 3, x.shape)
    top, left = 8 + 8 * seed, 8 + 16 * seed
    patch = (slice(top, top + 12), slice(left, left + 12))
    grey[patch] = 128 + 60 * np.sin(2 * np.pi * y[patch] / 8)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_heatmap_sources_parse_describe_and_carry_a_weights_path():
    source = QualityMapSource.parse("heatmap:saliency")
    assert (source.kind, source.heatmap, source.threshold) == ("heatmap", "saliency", 0.5)
    assert source.describe() == "heatmap:saliency thr=0.5"
    assert not source.needs_labels
    vgg = QualityMapSource.parse("heatmap:gradcam-vgg16@/w/vgg 16.pth", threshold=0.3)
    assert vgg.heatmap == "gradcam-vgg16@/w/vgg 16.pth" and vgg.threshold == 0.3
    assert vgg.describe() == "heatmap:gradcam-vgg16@/w/vgg 16.pth thr=0.3"
    with pytest.raises(UsageError, match="needs a source"):
        QualityMapSource.parse("heatmap:")
    with pytest.raises(UsageError, match="threshold"):
        QualityMapSource.parse("heatmap:saliency", threshold=1.5)
    with pytest.raises(UsageError, match=r"vgg 16\.pth"):
        vgg.check((), "kodak")
    with pytest.raises(UsageError, match="unknown heat map"):
        QualityMapSource.parse("heatmap:edges").check((), "kodak")
    QualityMapSource.parse("heatmap:saliency").check((), "kodak")
    # the other kinds read as before
    assert QualityMapSource.parse("classes:a,b", 0.25).describe() == "classes:a,b bg=0.25"
    assert QualityMapSource.parse("masks").kind == "dir"


def test_the_map_is_the_heat_map_at_every_rate_and_the_region_is_its_threshold():
    image = _striped(0)
    sample = Sample("im0", image, None)
    source = QualityMapSource.parse("heatmap:saliency", threshold=0.4)
    heat = heatmap_source("saliency")(image)
    for rate in (0.1, 0.9):
        np.testing.assert_array_equal(source.build(sample, (), rate), heat)
    region = source.region(sample, ())
    assert region is not None and region.dtype == bool
    np.testing.assert_array_equal(region, heat >= np.float32(0.4))
    assert 0.0 < region.mean() < 0.5


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setitem(CODECS._entries, "qmap", Entry("qmap", "fake_codecs:QualityMapCodec"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def test_psnr_roi_scores_the_heat_maps_region(fakes, tmp_path):
    """A codec with a quality map gets the heat map whatever the rate (one input hash), and
    psnr-roi scores inside and outside ``heat >= 0.5``."""
    from bench.metrics.fidelity import psnr_from_mse

    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.fromarray(_striped(i)).save(tmp_path / "images" / f"im{i}.png")
    dataset = open_dataset("folder", {"data_dir": tmp_path / "images"})
    plan = plan_codec("qmap", {"roi": "heatmap:saliency"}, rates=[0.3, 0.9])
    result = run(dataset, [plan], tmp_path / "run", workers=0, metrics=create_metrics(["psnr-roi"]))
    assert all(r.ok for r in result.records), [r.error for r in result.records]
    codec = CODECS.load("qmap")(roi="heatmap:saliency")
    for i in range(2):
        image = _striped(i)
        heat = heatmap_source("saliency")(image)
        region = heat >= 0.5
        records = [r for r in result.records if r.image_id == f"im{i}"]
        assert {r.input_sha256 for r in records} == {map_sha256(heat)}
        for record in records:
            assert record.codec_input == "heatmap:saliency thr=0.5"
            decoded = codec.decode(codec.encode_with(image, record.rate, {"quality_map": heat}))
            error = (decoded.astype(np.float64) - image) ** 2
            assert record.values["roi_fraction"] == pytest.approx(region.mean())
            assert record.values["psnr_roi"] == pytest.approx(psnr_from_mse(error[region].mean()))
            assert record.values["psnr_non_roi"] == pytest.approx(
                psnr_from_mse(error[~region].mean())
            )
