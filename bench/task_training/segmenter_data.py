"""Training data for fine-tuning a segmenter: images, their reconstructions and label maps.

``SegmentationSampler`` codes every training image once through the real codec (``encode``
to bytes, then ``decode``), keeps the decoded pixels in memory with their SHA-256 and size in
bytes, and yields seeded batches of crops taken at the segmenter's input scale (images resized
bilinearly as its ``prepare`` does, labels by nearest neighbour), each crop's label map cut
from the same window and flipped with it. Its state is its position, as ``ImageSampler``'s.

Batches pack the labels as a fourth channel, so that they stay one float32 tensor that the
training loop moves to the device: (N, 4, h, w), channels 0-2 the RGB crop in [0, 1],
channel 3 the Cityscapes trainIds (0..18, 255 ignored) as floats; ``split_batch`` unpacks.

Schedules (which version of an image a sample shows):

- ``reconstructed``: always the reconstruction;
- ``mixed``: the union of originals and reconstructions: each pair of epochs shows every image
  once as original and once reconstructed (which one first is a seeded coin per image);
- ``sequential``: originals for the batches before ``switch_at`` (half the steps), then
  reconstructions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.codecs.base import Codec, check_image
from bench.datasets.base import Dataset
from bench.errors import CodecError, DatasetError, UsageError
from bench.training.data import ImageSampler, pixel_sha256
from bench.types import Image, LabelMap

if TYPE_CHECKING:
    from torch import Tensor

SCHEDULES = ("reconstructed", "mixed", "sequential")
"""What ``--schedule`` accepts (see the module's docstring)."""


def code_once(codec: Codec, image: Image, rate: float) -> tuple[bytes, Image]:
    """Encode ``image`` at ``rate`` to bytes and decode them: (bitstream, reconstruction).

    Raises:
        CodecError: the reconstruction is not an image of the original's shape.
    """
    data = bytes(codec.encode(image, rate))
    decoded = check_image(codec.decode(data), codec.name)
    if decoded.shape != image.shape:
        raise CodecError(
            f"{codec.name} at rate {rate:g}: decoded {decoded.shape} from a {image.shape} image"
        )
    return data, decoded


def resize_image(image: Image, size: tuple[int, int]) -> Tensor:
    """(3, h, w) float32 in [0, 1] at ``size`` (height, width): bilinear, no corner
    alignment, as the segmenters' ``prepare`` resizes."""
    x = torch.tensor(image).permute(2, 0, 1)[None].float()  # as prepare does (a copy)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return (x / 255.0)[0]


def resize_labels(label: LabelMap, size: tuple[int, int]) -> Tensor:
    """(h, w) uint8 label map at ``size`` by nearest neighbour (labels are never blended)."""
    x = torch.tensor(np.asarray(label, dtype=np.uint8))[None, None].float()
    return F.interpolate(x, size=size, mode="nearest")[0, 0].to(torch.uint8)


def split_batch(batch: Tensor) -> tuple[Tensor, Tensor]:
    """A packed (N, 4, h, w) batch as (images (N, 3, h, w) in [0, 1], labels (N, h, w) int64)."""
    if batch.ndim != 4 or batch.shape[1] != 4:
        raise ValueError(f"expected a packed (N, 4, h, w) batch, got {tuple(batch.shape)}")
    return batch[:, :3], batch[:, 3].round().long()


class SegmentationSampler(ImageSampler):
    """Seeded crops of images or their reconstructions, with the label maps cut alike.

    Args:
        dataset: a labelled bench dataset (e.g. ``cityscapes`` split ``train``).
        codec: the codec whose reconstructions to train on (``bench.codecs.create_codec``).
        rate: its rate point.
        input_size: (height, width) the segmenter resizes images to; crops are cut there.
        schedule: ``reconstructed``, ``mixed`` or ``sequential`` (``SCHEDULES``).
        switch_at: for ``sequential``, the first batch of reconstructions (the training sets
            it to half its steps).
        crop, batch_size, seed, flip, limit: as ``ImageSampler``'s.
        log: where to say what is being coded.

    Raises:
        UsageError: an unknown schedule, a crop larger than ``input_size``, a codec that
            needs per-image inputs.
        DatasetError: an image without its label map.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        codec: Codec,
        rate: float,
        input_size: tuple[int, int],
        schedule: str = "reconstructed",
        switch_at: int | None = None,
        crop: tuple[int, int] | None = None,
        batch_size: int = 1,
        seed: int = 0,
        flip: bool = True,
        limit: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if schedule not in SCHEDULES:
            raise UsageError(f"schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if codec.inputs:
            raise UsageError(
                f"{codec.name} codes with per-image inputs ({', '.join(codec.inputs)}); "
                "fine-tuning on its reconstructions is not supported"
            )
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if crop is not None and (crop[0] > self.input_size[0] or crop[1] > self.input_size[1]):
            raise UsageError(
                f"--crop {crop[0]}x{crop[1]} is larger than the segmenter's input "
                f"{self.input_size[0]}x{self.input_size[1]} (HEIGHTxWIDTH) that crops are cut from"
            )
        # Full-resolution images are hashed by ImageSampler but not cached there: this class
        # keeps its own copies (originals and reconstructions).
        super().__init__(
            dataset, crop=crop, batch_size=batch_size, seed=seed, flip=flip, limit=limit,
            max_cache_bytes=0,
        )  # fmt: skip
        self.codec = codec
        self.rate = float(rate)
        self.schedule = schedule
        self.switch_at = switch_at
        self.shapes = [self.input_size] * len(self.refs)  # crop windows live at input scale
        self.originals: list[Image] = []
        self.decoded: list[Image] = []
        self.labels: list[Tensor] = []
        self.coded: list[dict[str, Any]] = []
        """Per image: id, bytes, bpp and the SHA-256 of the reconstruction's pixels."""
        say = log or (lambda _line: None)
        say(f"coding {len(self.refs)} training images with {codec.name} at rate {self.rate:g}")
        for ref in self.refs:
            sample = dataset.load(ref)
            if sample.label is None:
                raise DatasetError(
                    f"{dataset.tag}/{ref.id}: no label map; fine-tuning a segmenter needs "
                    "labelled images (e.g. --dataset cityscapes --split train)"
                )
            data, decoded = code_once(codec, sample.image, self.rate)
            height, width = sample.image.shape[:2]
            self.coded.append(
                {
                    "id": ref.id,
                    "bytes": len(data),
                    "bpp": 8.0 * len(data) / (height * width),
                    "sha256": pixel_sha256(decoded),
                }
            )
            self.originals.append(sample.image)
            self.decoded.append(decoded)
            self.labels.append(resize_labels(sample.label, self.input_size))
        say(f"coded: mean {self.mean_bpp:.4f} bpp")

    def _check_size(self, image_id: str, pixels: Image) -> None:
        # Crops are cut after resizing to input_size (checked above), not from these pixels.
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise DatasetError(f"{image_id}: expected (H, W, 3) uint8, got {pixels.shape}")

    @property
    def mean_bpp(self) -> float:
        """The mean bits per pixel of the training images' bitstreams."""
        return float(np.mean([c["bpp"] for c in self.coded])) if self.coded else 0.0

    def batch_number(self, epoch: int, position: int) -> int:
        """How many batches come before the one holding ``position`` of ``epoch``."""
        return epoch * self.batches_per_epoch + position // self.batch_size

    def reconstructed(self, epoch: int, position: int, index: int) -> bool:
        """Whether the ``position``-th sample of ``epoch`` (image ``index``) shows the
        reconstruction rather than the original."""
        if self.schedule == "reconstructed":
            return True
        if self.schedule == "mixed":
            coin = np.random.default_rng([self.seed, 2, epoch // 2, index]).random() < 0.5
            return bool(coin) != bool(epoch % 2)
        if self.switch_at is None:
            raise UsageError(
                "the sequential schedule needs switch_at (its first reconstructed batch)"
            )
        return self.batch_number(epoch, position) >= self.switch_at

    def item(self, epoch: int, position: int) -> Tensor:
        """The ``position``-th sample of ``epoch``: (4, h, w), RGB in [0, 1] and its labels."""
        index, top, left, flip = self.window(epoch, position)
        source = self.decoded if self.reconstructed(epoch, position, index) else self.originals
        pixels = resize_image(source[index], self.input_size)
        both = torch.cat([pixels, self.labels[index][None].float()])
        if self.crop is not None:
            both = both[:, top : top + self.crop[0], left : left + self.crop[1]]
        if flip:
            both = both.flip(-1)
        return both.contiguous()

    def sample(self, epoch: int, position: int) -> Image:
        """The ``position``-th sample's pixels as uint8 (H, W, 3) (rounded from the resize)."""
        pixels = self.item(epoch, position)[:3].permute(1, 2, 0).mul(255.0).round()
        return np.ascontiguousarray(pixels.to(torch.uint8).numpy())

    def batch_at(self, epoch: int, index: int) -> Tensor:
        """The packed batch starting at position ``index`` of ``epoch`` (see ``split_batch``)."""
        return torch.stack([self.item(epoch, index + k) for k in range(self.batch_size)])


__all__ = [
    "SCHEDULES",
    "SegmentationSampler",
    "code_once",
    "resize_image",
    "resize_labels",
    "split_batch",
]
