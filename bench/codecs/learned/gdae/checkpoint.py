"""``bench-gdae-1`` checkpoints (``bench train gdae``), read through ``bench.weights``
(``weights_only=True``, strict).

The trainer writes them: ``config`` (``GdaeConfig.to_dict()``), ``generator`` and
``discriminator`` state, the optimisers' states, the ``training`` record, ``objective`` (loss
weights, phases), ``size`` (the config's description, labelled "NOT a published size"), and,
after training, ``entropy_model``: per-map level counts (C x L, int64) over the training
images for ``latent_coder=rans``. Each checkpoint is one rate point: its latent maps C.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bench.weights import WeightsError, checkpoint_format, load_strict, read_checkpoint

if TYPE_CHECKING:
    from bench.codecs.learned.gdae.model import GdaeConfig, GdaeGenerator

NAME = "gdae"
FORMAT = checkpoint_format(NAME)
"""The ``format`` entry of GDAE checkpoints: ``bench-gdae-1``."""
ENTROPY_KEY = "entropy_model"
TRAIN_COMMAND = (
    "bench train gdae --dataset folder --data-dir IMAGES --preset cpu --steps N --out gdae.pt"
)


def read_gdae_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """A ``bench-gdae-1`` checkpoint.

    Raises:
        WeightsError: no such file, unreadable, or another format (naming the file).
    """
    return read_checkpoint(path, NAME, what="gdae", mmap=mmap, hint=f"make one: {TRAIN_COMMAND}")


def gdae_config_of(checkpoint: dict[str, Any], path: Path) -> GdaeConfig:
    from bench.codecs.learned.gdae.model import GdaeConfig

    try:
        return GdaeConfig.from_dict(checkpoint["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad gdae config in checkpoint: {exc}") from exc


def latent_channels_of(checkpoint: dict[str, Any], path: Path) -> float:
    """The checkpoint's rate point: its latent maps C."""
    return float(gdae_config_of(checkpoint, path).latent_channels)


def entropy_counts_of(
    checkpoint: dict[str, Any], config: GdaeConfig, path: Path
) -> npt.NDArray[np.int64] | None:
    """The per-map level counts (C x L) of ``entropy_model``; None when it has none.

    Raises:
        WeightsError: counts of another shape, or not non-negative integers.
    """
    import torch

    entry = checkpoint.get(ENTROPY_KEY)
    if entry is None:
        return None
    counts = entry.get("counts") if isinstance(entry, dict) else None
    shape = (config.latent_channels, config.levels)
    if (
        not isinstance(counts, torch.Tensor)
        or tuple(counts.shape) != shape
        or counts.is_floating_point()
        or counts.is_complex()
        or (counts.numel() and int(counts.min()) < 0)
    ):
        raise WeightsError(f"{path}: bad {ENTROPY_KEY} in checkpoint (expected 'counts', "
                           f"non-negative integers of shape {shape})")  # fmt: skip
    return counts.to(torch.int64).numpy().copy()


def load_gdae_checkpoint(
    path: Path,
) -> tuple[GdaeConfig, GdaeGenerator, npt.NDArray[np.int64] | None]:
    """The config, generator (eval mode, CPU) and entropy counts (or None) of a checkpoint,
    loaded strictly.

    Raises:
        WeightsError: unreadable, another format, or tensors that do not fit (named).
    """
    from bench.codecs.learned.gdae.model import GdaeGenerator

    loaded = read_gdae_checkpoint(path)
    config = gdae_config_of(loaded, path)
    state = loaded.get("generator")
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: no generator state_dict in checkpoint")
    generator = GdaeGenerator(config)
    load_strict(generator, state, path, f"gdae ({config.describe()})")
    return config, generator.eval(), entropy_counts_of(loaded, config, path)


def add_entropy_model(path: Path, counts: npt.ArrayLike, images: int, source: str) -> Path:
    """Store ``{"counts": int64 (C, L), "images": n, "source": ...}`` as the checkpoint's
    ``entropy_model`` and re-save it atomically (the trainer's state is kept: ``--resume``
    still works)."""
    import torch

    from bench.weights import save_checkpoint

    state = read_gdae_checkpoint(path)
    config = gdae_config_of(state, path)
    table = torch.as_tensor(np.asarray(counts, dtype=np.int64)).clone()
    state[ENTROPY_KEY] = {"counts": table, "images": int(images), "source": str(source)}
    entropy_counts_of(state, config, path)  # the checks a reader makes
    return save_checkpoint(state, path)


__all__ = [
    "ENTROPY_KEY",
    "FORMAT",
    "TRAIN_COMMAND",
    "add_entropy_model",
    "entropy_counts_of",
    "gdae_config_of",
    "latent_channels_of",
    "load_gdae_checkpoint",
    "read_gdae_checkpoint",
]
