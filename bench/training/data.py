"""Training data: seeded batches of random crops from any bench dataset (``ImageSampler``).

torch is imported where it is used, so ``import bench.training.data`` works without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bench.download import sha256_of
from bench.errors import DatasetError
from bench.types import Image

if TYPE_CHECKING:
    import torch

    from bench.datasets.base import Dataset


def pixel_sha256(image: Image) -> str:
    """SHA-256 of an image's decoded pixels: the C-ordered bytes of its (H, W, 3) uint8 array.

    >>> pixel_sha256(np.zeros((1, 1, 3), np.uint8))[:12]
    '709e80c88487'
    """
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


class ImageSampler:
    """Seeded batches of random crops (with random horizontal flips) from a bench dataset.

    Every image is decoded once at construction, to hash its pixels (``images``) and check
    its size; the decoded images are kept in memory when they fit in ``max_cache_bytes``,
    otherwise re-read on demand. Each epoch visits the images in a seeded permutation, in
    batches of ``batch_size`` (a remainder that does not fill a batch is skipped). The random
    choices depend only on (seed, epoch, position), so ``state()`` is the sampler's position.

    Args:
        dataset: a bench dataset (``bench.datasets.open_dataset``).
        crop: (height, width) of the crops, or None for whole images (which then must all
            have the same size when ``batch_size > 1``).
        batch_size: images per batch.
        seed: the sampler's seed.
        flip: random horizontal flips.
        limit: use only the first N images.
        max_cache_bytes: keep decoded images in memory up to this total size.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        crop: tuple[int, int] | None = None,
        batch_size: int = 1,
        seed: int = 0,
        flip: bool = True,
        limit: int | None = None,
        max_cache_bytes: int = 1 << 30,
    ) -> None:
        self.dataset = dataset
        self.crop = (int(crop[0]), int(crop[1])) if crop is not None else None
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flip = flip
        self.refs = dataset.refs()[:limit] if limit is not None else dataset.refs()
        if len(self.refs) < self.batch_size:
            raise DatasetError(
                f"{dataset.tag}: {len(self.refs)} image(s) cannot fill a batch of "
                f"{self.batch_size}; lower the batch size or add images"
            )
        self.images: list[dict[str, str]] = []
        self.shapes: list[tuple[int, int]] = []
        cache: list[Image] = []
        total = 0
        for ref in self.refs:
            pixels = dataset.load(ref, with_label=False).image
            self._check_size(ref.id, pixels)
            self.images.append(
                {"id": ref.id, "sha256": pixel_sha256(pixels), "file_sha256": sha256_of(ref.path)}
            )
            self.shapes.append((int(pixels.shape[0]), int(pixels.shape[1])))
            total += pixels.nbytes
            if total <= max_cache_bytes:
                cache.append(pixels)
        self._cache: list[Image] | None = cache if total <= max_cache_bytes else None
        if self.crop is None and self.batch_size > 1 and len(set(self.shapes)) > 1:
            raise DatasetError(
                f"{dataset.tag}: whole images of different sizes {sorted(set(self.shapes))[:4]} "
                "cannot be batched; set a crop size or batch size 1"
            )
        self.epoch = 0
        self.index = 0
        self.rank = 0
        self.world = 1

    def shard(self, rank: int, world: int) -> None:
        """Draw rank ``rank``'s share of ``world`` data-parallel processes: each step's global
        batch is ``batch_size x world`` consecutive positions of the epoch's permutation, and
        this rank takes the ``rank``-th block of ``batch_size`` of them. The position (``state``)
        counts global batches, the same on every rank.

        Raises:
            DatasetError: fewer images than one global batch.
        """
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        if len(self.refs) < self.batch_size * world:
            raise DatasetError(
                f"{self.dataset.tag}: {len(self.refs)} image(s) cannot fill a global batch of "
                f"{self.batch_size} x {world} processes; lower the batch size or add images"
            )
        self.rank, self.world = int(rank), int(world)

    @property
    def global_batch(self) -> int:
        """Images per step over every data-parallel process."""
        return self.batch_size * self.world

    def _check_size(self, image_id: str, pixels: Image) -> None:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise DatasetError(f"{image_id}: expected (H, W, 3) uint8, got {pixels.shape}")
        if self.crop is not None and (
            pixels.shape[0] < self.crop[0] or pixels.shape[1] < self.crop[1]
        ):
            raise DatasetError(
                f"{self.dataset.tag}/{image_id}: {pixels.shape[1]}x{pixels.shape[0]} is smaller "
                f"than the {self.crop[1]}x{self.crop[0]} crop; use a smaller crop"
            )

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def batches_per_epoch(self) -> int:
        """Full (global) batches in one pass over the images."""
        return len(self.refs) // self.global_batch

    def permutation(self, epoch: int) -> npt.NDArray[np.int64]:
        """The order in which epoch ``epoch`` visits the images."""
        return np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.refs))

    def image(self, index: int) -> Image:
        """The decoded pixels of image ``index`` (from the cache when it holds them)."""
        if self._cache is not None:
            return self._cache[index]
        return self.dataset.load(self.refs[index], with_label=False).image

    def window(self, epoch: int, position: int) -> tuple[int, int, int, bool]:
        """(image index, top, left, flip) of the ``position``-th image of ``epoch``.

        ``top`` and ``left`` are 0 for whole images.
        """
        index = int(self.permutation(epoch)[position])
        rng = np.random.default_rng([self.seed, 1, epoch, position])
        height, width = self.shapes[index]
        top = left = 0
        if self.crop is not None:
            top = int(rng.integers(0, height - self.crop[0] + 1))
            left = int(rng.integers(0, width - self.crop[1] + 1))
        flip = bool(self.flip and rng.random() < 0.5)
        return index, top, left, flip

    def sample(self, epoch: int, position: int) -> Image:
        """The (cropped, maybe flipped) uint8 pixels of the ``position``-th image of ``epoch``."""
        index, top, left, flip = self.window(epoch, position)
        pixels = self.image(index)
        if self.crop is not None:
            pixels = pixels[top : top + self.crop[0], left : left + self.crop[1]]
        if flip:
            pixels = pixels[:, ::-1]
        return np.ascontiguousarray(pixels)

    def batch_at(self, epoch: int, index: int) -> torch.Tensor:
        """The batch starting at position ``index`` of epoch ``epoch``: float32 NCHW in [0, 1]."""
        import torch

        stacked = np.stack([self.sample(epoch, index + k) for k in range(self.batch_size)])
        return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    def next_batch(self) -> torch.Tensor:
        """The next batch (this rank's share of it, see ``shard``); advances the position,
        moving to the next epoch when one is done."""
        if self.index + self.global_batch > len(self.refs):
            self.epoch += 1
            self.index = 0
        batch = self.batch_at(self.epoch, self.index + self.rank * self.batch_size)
        self.index += self.global_batch
        return batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    @property
    def completed_epochs(self) -> int:
        """Whole passes over the images done so far."""
        return self.epoch + (1 if self.index + self.global_batch > len(self.refs) else 0)

    def state(self) -> dict[str, int]:
        """The position: epoch and index in that epoch's permutation."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a position saved by ``state()``."""
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])


__all__ = ["ImageSampler", "pixel_sha256"]
