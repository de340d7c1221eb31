"""``bench-impmap-1`` checkpoints (``bench train impmap``), read through ``bench.weights``
(``weights_only=True``, strict). Each holds one trained trade-off: its lambda is under
``objective``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.weights import WeightsError, checkpoint_format, load_strict, read_checkpoint

if TYPE_CHECKING:
    from bench.codecs.learned.impmap.model import ImpMapConfig, ImpMapNetwork

NAME = "impmap"
FORMAT = checkpoint_format(NAME)
"""The ``format`` entry of impmap checkpoints: ``bench-impmap-1``."""
TRAIN_COMMAND = (
    "bench train impmap --dataset folder --data-dir IMAGES --preset cpu --lambda L "
    "--steps N --out impmap.pt"
)


def read_impmap_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """A ``bench-impmap-1`` checkpoint.

    Raises:
        WeightsError: no such file, unreadable, or another format.
    """
    return read_checkpoint(path, NAME, what="impmap", mmap=mmap, hint=f"make one: {TRAIN_COMMAND}")


def impmap_config_of(checkpoint: dict[str, Any], path: Path) -> ImpMapConfig:
    from bench.codecs.learned.impmap.model import ImpMapConfig

    try:
        return ImpMapConfig.from_dict(checkpoint["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad impmap config in checkpoint: {exc}") from exc


def lambda_of(checkpoint: dict[str, Any], path: Path) -> float:
    """The trade-off the checkpoint was trained for (its rate point).

    Raises:
        WeightsError: none recorded, or not a positive number.
    """
    objective = checkpoint.get("objective")
    lam = objective.get("lambda") if isinstance(objective, dict) else None
    if not isinstance(lam, int | float) or not math.isfinite(lam) or lam <= 0:
        raise WeightsError(f"{path}: no lambda in the checkpoint's objective ({TRAIN_COMMAND})")
    return float(lam)


def load_impmap_checkpoint(path: Path) -> tuple[ImpMapConfig, float, ImpMapNetwork]:
    """The config, lambda and network (eval mode, CPU) of a checkpoint, loaded strictly.

    Raises:
        WeightsError: unreadable, another format, or tensors that do not fit (named).
    """
    from bench.codecs.learned.impmap.model import ImpMapNetwork

    loaded = read_impmap_checkpoint(path)
    config = impmap_config_of(loaded, path)
    lam = lambda_of(loaded, path)
    state = loaded.get("model")
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: no model state_dict in checkpoint")
    model = ImpMapNetwork(config)
    load_strict(model, state, path, f"impmap ({config.describe()})")
    return config, lam, model.eval()


__all__ = [
    "FORMAT",
    "TRAIN_COMMAND",
    "impmap_config_of",
    "lambda_of",
    "load_impmap_checkpoint",
    "read_impmap_checkpoint",
]
