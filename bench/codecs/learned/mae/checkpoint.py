"""``bench-mae-1`` checkpoints (``bench train mae``), read through ``bench.weights``
(``weights_only=True``, strict)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.weights import WeightsError, checkpoint_format, load_strict, read_checkpoint

if TYPE_CHECKING:
    from bench.codecs.learned.mae.model import MaeConfig, MaeNetwork

NAME = "mae"
FORMAT = checkpoint_format(NAME)
"""The ``format`` entry of MAE checkpoints: ``bench-mae-1``."""
TRAIN_COMMAND = (
    "bench train mae --dataset folder --data-dir IMAGES --preset cpu --steps N --out mae.pt"
)


def read_mae_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """A ``bench-mae-1`` checkpoint.

    Raises:
        WeightsError: no such file, unreadable, or another format.
    """
    return read_checkpoint(path, NAME, what="MAE", mmap=mmap, hint=f"make one: {TRAIN_COMMAND}")


def mae_config_of(checkpoint: dict[str, Any], path: Path) -> MaeConfig:
    from bench.codecs.learned.mae.model import MaeConfig

    try:
        return MaeConfig.from_dict(checkpoint["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad MAE config in checkpoint: {exc}") from exc


def load_mae_checkpoint(path: Path) -> tuple[MaeConfig, MaeNetwork]:
    """The config and network (eval mode, CPU) of a checkpoint, loaded strictly (entropy
    tables, whose size depends on ``update()``, are resized as CompressAI does).

    Raises:
        WeightsError: unreadable, another format, or tensors that do not fit (named).
    """
    from bench.codecs.learned.mae.model import MaeNetwork

    loaded = read_mae_checkpoint(path)
    config = mae_config_of(loaded, path)
    state = loaded.get("model")
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: no model state_dict in checkpoint")
    model = MaeNetwork(config)
    own = model.state_dict()
    for name, tensor in state.items():  # entropy tables: sized by update(), as saved
        if name.endswith(("_quantized_cdf", "_offset", "_cdf_length")) and name in own:
            model.get_buffer(name).resize_(tensor.shape)
    load_strict(model, state, path, f"MAE ({config.describe()})")
    return config, model.eval()


__all__ = ["FORMAT", "TRAIN_COMMAND", "load_mae_checkpoint", "mae_config_of", "read_mae_checkpoint"]
