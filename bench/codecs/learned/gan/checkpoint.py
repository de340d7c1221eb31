"""The GAN codec's ``bench-gan-1`` checkpoints: config, generator, entropy model; read and
written through ``bench.weights`` (``weights_only=True``, strict, atomic)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bench.codecs.learned.gan.config import GanConfig
from bench.codecs.learned.gan.entropy import entropy_identity
from bench.weights import (
    WeightsError,
    checkpoint_format,
    load_strict,
    read_checkpoint,
    save_checkpoint,
    training_record,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.codecs.learned.gan.model import GanGenerator

NAME = "gan"
FORMAT = checkpoint_format(NAME)
"""The ``format`` entry of GAN checkpoints: ``bench-gan-1``."""
ENTROPY_KEY = "entropy_model"
"""Checkpoint key of the per-channel level counts ``bench train gan`` writes."""
FIT_COMMAND = (
    "bench train gan --fit-entropy-model-only --out {checkpoint} --dataset DATASET "
    "--data-dir DIR (the training images)"
)


def read_gan_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """A ``bench-gan-1`` checkpoint (``bench.weights.read_checkpoint``).

    Raises:
        WeightsError: no such file, unreadable, or another format.
    """
    return read_checkpoint(path, NAME, what="GAN", mmap=mmap)


def checkpoint_training(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a checkpoint says about its training (``bench.weights.training_record``)."""
    return training_record(read_gan_checkpoint(Path(path), mmap=True))


def read_gan_config(path: str | os.PathLike[str]) -> GanConfig:
    """The config of a checkpoint, without copying its tensors (memory-mapped)."""
    loaded = read_gan_checkpoint(Path(path), mmap=True)
    try:
        return GanConfig.from_dict(loaded["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad GAN config in checkpoint: {exc}") from exc


def load_gan_checkpoint(
    path: str | os.PathLike[str],
    *,
    bottleneck: int | None = None,
    levels: int | None = None,
    width: float | None = None,
) -> tuple[GanConfig, GanGenerator]:
    """The config and generator (eval mode, on the CPU) of a ``bench-gan-1`` checkpoint.

    The tensors are loaded with ``weights_only=True`` and strictly. ``bottleneck``, ``levels``
    and ``width``, when given, must match the checkpoint's.

    Raises:
        WeightsError: unreadable file, another format, another F/L/width than requested, or
            tensors that do not fit the config's architecture (named).
    """
    from bench.codecs.learned.gan.model import GanGenerator

    source = Path(path)
    loaded = read_gan_checkpoint(source)
    try:
        config = GanConfig.from_dict(loaded["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: bad GAN config in checkpoint: {exc}") from exc
    checks = (
        ("bottleneck (F)", float(config.bottleneck), bottleneck),
        ("levels (L)", float(config.levels), levels),
        ("width", config.width, width),
    )
    wrong = [
        f"{what} {have:g} (requested {float(value):g})"
        for what, have, value in checks
        if value is not None and not math.isclose(have, float(value), rel_tol=1e-9)
    ]
    if wrong:
        raise WeightsError(f"{source}: checkpoint has " + ", ".join(wrong))
    state = loaded.get("generator")
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: no generator state_dict in checkpoint")
    generator = GanGenerator(config)
    what = f"GAN generator (F={config.bottleneck}, L={config.levels}, width={config.width:g})"
    load_strict(generator, state, source, what)
    return config, generator.eval()


@dataclass(frozen=True)
class EntropyModel:
    """A checkpoint's ``entropy_model``: the counts, how many images they came from, which."""

    counts: npt.NDArray[np.int64]
    images: int
    source: str

    @property
    def identity(self) -> bytes:
        return entropy_identity(self.counts)

    def describe(self) -> str:
        return f"{self.identity.hex()} (counts of {self.images} {self.source})"


def _entropy_model_of(
    loaded: Mapping[str, Any], config: GanConfig, source: Path
) -> EntropyModel | None:
    import torch

    entry = loaded.get(ENTROPY_KEY)
    if entry is None:
        return None
    counts = entry.get("counts") if isinstance(entry, dict) else None
    shape = (config.bottleneck, config.levels)
    if (
        not isinstance(counts, torch.Tensor)
        or tuple(counts.shape) != shape
        or counts.is_floating_point()
        or counts.is_complex()
        or (counts.numel() and int(counts.min()) < 0)
    ):
        raise WeightsError(
            f"{source}: bad {ENTROPY_KEY} in checkpoint (expected 'counts', a non-negative "
            f"integer tensor of shape {shape}); re-fit it: " + FIT_COMMAND.format(checkpoint=source)
        )
    return EntropyModel(
        counts.to(torch.int64).numpy().copy(),
        int(entry.get("images", 0)),
        str(entry.get("source", "")),
    )


def read_entropy_model(path: str | os.PathLike[str]) -> EntropyModel | None:
    """The ``entropy_model`` of a checkpoint (None when it has none; memory-mapped read).

    Raises:
        WeightsError: unreadable checkpoint, or an entropy model that does not fit its config.
    """
    source = Path(path)
    loaded = read_gan_checkpoint(source, mmap=True)
    return _entropy_model_of(loaded, GanConfig.from_dict(loaded["config"]), source)


def add_entropy_model(
    path: str | os.PathLike[str],
    counts: Tensor,
    images: int,
    source: str = "training images",
) -> Path:
    """Store ``{"counts": int64 (F, L), "images": n, "source": ...}`` as the checkpoint's
    ``entropy_model`` (replacing one it had) and re-save it atomically; everything else, the
    trainer's state included, is kept, so ``--resume`` still works on it."""
    import torch

    target = Path(path)
    state = read_gan_checkpoint(target)
    config = GanConfig.from_dict(state["config"])
    table = torch.as_tensor(counts).to("cpu", torch.int64).clone()
    state[ENTROPY_KEY] = {"counts": table, "images": int(images), "source": str(source)}
    _entropy_model_of(state, config, target)  # the same checks a reader makes
    save_checkpoint(state, target)
    return target


def save_generator_checkpoint(
    path: str | os.PathLike[str],
    config: GanConfig,
    generator: nn.Module,
    discriminator: nn.Module | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``bench-gan-1`` checkpoint atomically (``bench.weights.save_checkpoint``).

    ``extra`` entries (epoch, optimizer states...) are stored beside ``format``, ``config``,
    ``generator`` and ``discriminator``; they must be loadable with ``weights_only=True``.
    """
    payload: dict[str, Any] = dict(extra or {})
    payload.update(format=FORMAT, config=asdict(config), generator=generator.state_dict())
    if discriminator is not None:
        payload["discriminator"] = discriminator.state_dict()
    return save_checkpoint(payload, path)
