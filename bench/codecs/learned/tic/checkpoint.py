"""The variable-rate TIC's ``bench-tic-1`` checkpoints (``bench train tic``): read through
``bench.weights`` (``weights_only=True``, strict), with the lineage of fine-tunes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.codecs.learned.base import load_weights
from bench.weights import WeightsError, checkpoint_format, distinct_images, read_checkpoint

if TYPE_CHECKING:
    from bench.codecs.learned.tic.model import TicConfig, TicHyperprior

NAME = "tic"
FORMAT = checkpoint_format(NAME)
"""The ``format`` entry of TIC checkpoints: ``bench-tic-1``."""
TRAIN_COMMAND = (
    "bench train tic --dataset folder --data-dir IMAGES --size tiny --steps N --out tic.pt"
)


def read_tic_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """A ``bench-tic-1`` checkpoint, read with ``weights_only=True``.

    Raises:
        WeightsError: no such file, unreadable, or another format.
    """
    return read_checkpoint(
        path, NAME, what="TIC", mmap=mmap,
        hint=f"make one: {TRAIN_COMMAND} (TransTIC's base codecs are tic-hp weights)",
    )  # fmt: skip


EARLIER_TRAINING = "earlier_training"
"""Checkpoint key of a fine-tune (``bench train tic --init tic=PATH``): the steps and images
of the runs it started from."""


def training_lineage(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The ``steps`` and ``images`` that made a ``bench-tic-1`` checkpoint's weights: its own
    run's and those of the runs it was fine-tuned from."""
    training = checkpoint.get("training", {})
    earlier = checkpoint.get(EARLIER_TRAINING, {})
    return {
        "steps": int(training.get("step", 0)) + int(earlier.get("steps", 0)),
        "images": distinct_images([*training.get("images", []), *earlier.get("images", [])]),
    }


def load_tic_checkpoint(path: Path) -> tuple[TicConfig, TicHyperprior]:
    """The config and network (eval mode, CPU) of a ``bench-tic-1`` checkpoint, loaded with
    ``weights_only=True`` and strictly.

    Raises:
        WeightsError: unreadable, another format, or tensors that do not fit (named).
    """
    from bench.codecs.learned.tic.model import TicConfig, build_model

    loaded = read_tic_checkpoint(path, mmap=True)
    try:
        config = TicConfig.from_dict(loaded["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad TIC config in checkpoint: {exc}") from exc
    if not isinstance(loaded.get("model"), dict):
        raise WeightsError(f"{path}: no model state_dict in checkpoint")
    model = build_model(config)
    load_weights(model, path, f"TIC ({config.describe()})")
    return config, model.eval()


__all__ = [
    "EARLIER_TRAINING",
    "FORMAT",
    "distinct_images",
    "load_tic_checkpoint",
    "read_tic_checkpoint",
    "training_lineage",
]
