"""The segmentation task predicts each distinct picture of an image once: the original once
per image (kept for later calls), and a reconstruction equal to the original (the uncompressed
reference row, a lossless codec) takes the original's scores without a second prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.codecs.base import Availability
from bench.datasets.base import Sample
from bench.tasks.base import Segmenter
from bench.tasks.segmentation import SegmentationTask


class CountingSegmenter(Segmenter):
    """Class 1 where the red channel is above 127, else 0; counts the pictures it sees."""

    name = "counting"
    class_names = ("dark", "red")

    def __init__(self) -> None:
        self.seen = 0

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, "test")

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.seen += len(images)
        return [(image[..., 0] > 127).astype(np.uint8) for image in images]


def test_the_original_and_its_lossless_copies_are_predicted_once() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    label = (image[..., 0] > 100).astype(np.uint8)
    sample = Sample("im", image, label)
    lossy = image.copy()
    lossy[..., 0] = 255 - lossy[..., 0]
    model = CountingSegmenter()
    task = SegmentationTask("counting", "", {}, model.class_names, {"name": "counting"})
    task._model = model

    rows = task.score(sample, [image.copy(), lossy, image.copy()])
    assert model.seen == 2  # the original and the lossy picture
    assert rows[0]["confusion"] == rows[2]["confusion"]
    assert rows[0]["miou_drop"] == 0.0 and rows[1]["miou_drop"] > 0.0

    alone = CountingSegmenter()
    fresh = SegmentationTask("counting", "", {}, alone.class_names, {"name": "counting"})
    fresh._model = alone
    expected = [fresh.score(sample, [picture])[0] for picture in (image, lossy, image)]
    for row, other in zip(rows, expected, strict=True):
        assert {k: v for k, v in row.items() if k != "segment_s"} == {
            k: v for k, v in other.items() if k != "segment_s"
        }

    task.score(sample, [image.copy()])  # the original's prediction is kept
    assert model.seen == 2
