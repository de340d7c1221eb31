"""The mmsegmentation backend runs a real model from a packaged Cityscapes config."""

from __future__ import annotations

import numpy as np
import pytest

from bench.datasets import open_dataset
from bench.outputs import write_run_outputs
from bench.runner import plan_codec, plan_segmenter, run
from bench.tasks import SEGMENTERS, create_segmenter
from bench.weights import WeightsError

availability = SEGMENTERS.load("mmseg").availability()
pytestmark = pytest.mark.skipif(
    not availability.usable,
    reason=f"mmseg not usable here: {availability.detail}; {availability.hint}",
)
CONFIG = "fast_scnn_8xb4-160k_cityscapes-512x1024"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Fast-SCNN as the packaged config builds it, with its (random) initial weights saved the
    way mmsegmentation saves checkpoints: tensors under ``state_dict`` next to ``meta``.
    No trained weights can be fetched here, so the test checks the pipeline, not accuracy."""
    import torch
    from mmseg.apis import init_model

    from bench.tasks.mmseg import find_config

    torch.manual_seed(0)
    model = init_model(str(find_config(CONFIG)), checkpoint=None, device="cpu")
    model.init_weights()
    path = tmp_path_factory.mktemp("mmseg") / "fast_scnn.pth"
    torch.save(
        {"meta": {"mmseg_version": "1.2.2", "epoch": 0}, "state_dict": model.state_dict()}, path
    )
    return path


def test_mmseg_segments_a_shared_cityscapes_frame(checkpoint, cityscapes_root):
    segmenter = create_segmenter("mmseg", {"config": CONFIG, "weights": str(checkpoint)})
    assert segmenter.num_classes == 19 and segmenter.class_names[0] == "road"
    dataset = open_dataset("cityscapes", {"data_dir": cityscapes_root, "split": "val"})
    sample = dataset.load(dataset.refs()[0])
    first, second = segmenter.predict_batch([sample.image, sample.image[:512, :1024]])
    assert first.shape == (1024, 2048) and second.shape == (512, 1024)
    assert first.dtype == np.uint8 and set(np.unique(first).tolist()) <= set(range(19))
    assert np.array_equal(segmenter.predict(sample.image), first)  # deterministic
    assert segmenter.provenance()["config"].endswith(f"{CONFIG}.py")


def test_mmseg_in_a_segmentation_sweep(checkpoint, cityscapes_root, tmp_path):
    dataset = open_dataset("cityscapes", {"data_dir": cityscapes_root, "split": "val"})
    segmenter = plan_segmenter("mmseg", {"config": CONFIG, "weights": str(checkpoint)})
    result = run(
        dataset,
        [plan_codec("jpeg", rates=[30])],
        tmp_path / "run",
        workers=0,
        limit=1,
        task=segmenter,
    )
    write_run_outputs(result, report=False)
    assert [r.codec for r in result.records] == ["none", "jpeg"]
    assert all(r.ok and r.confusion.startswith("19:") for r in result.records)
    assert (result.directory / "per_class_iou.csv").is_file()


def test_mmseg_refuses_a_checkpoint_of_another_architecture(espnet_weights):
    with pytest.raises(
        WeightsError,
        match=r"does not match the config fast_scnn.*missing \(\d+\): auxiliary_head.*"
        r"unexpected \(189\): br\.bias",
    ):
        create_segmenter("mmseg", {"config": CONFIG, "weights": str(espnet_weights)})


def test_mmseg_names_unknown_configs():
    with pytest.raises(Exception, match="Did you mean fast_scnn_8xb4-160k_cityscapes-512x1024"):
        create_segmenter(
            "mmseg", {"config": "fast_scnn_8xb4-160k_cityscapes-512x1025", "weights": "x"}
        )
