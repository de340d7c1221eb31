"""The segmenter contract: ``predict(image) -> label map`` of class indices at the image's size."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.download import sha256_of
from bench.errors import BenchError, UsageError
from bench.types import IGNORE_LABEL, Availability, Image, LabelMap

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)


class WeightsError(BenchError):
    """A checkpoint cannot be used: unreadable, not plain weights, or the wrong architecture."""


class Segmenter(abc.ABC):
    """Base class of segmenters.

    ``predict_batch`` takes (H, W, 3) uint8 RGB images and returns (H, W) uint8 maps of class
    indices 0..num_classes-1 at each image's own size, 255 where the model predicts no class.
    Options are keyword-only constructor arguments.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> Availability:
        """Whether the segmenter can run here, and how to make it so if not."""

    @abc.abstractmethod
    def predict_batch(self, images: Sequence[Image]) -> list[LabelMap]:
        """Label maps for a batch of images."""

    def predict(self, image: Image) -> LabelMap:
        """The label map of one image."""
        return self.predict_batch([image])[0]

    def provenance(self) -> dict[str, Any]:
        """What the run manifest records about the model (weights file and hash, options)."""
        return {"name": self.name}


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a checkpoint as plain tensors (``weights_only=True``); unwraps ``state_dict`` /
    ``model`` containers and a DataParallel ``module.`` prefix.

    Raises:
        WeightsError: missing file, or a pickle that holds more than plain weights.
    """
    import pickle

    import torch

    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"{path}: not a plain-weights checkpoint ({str(exc).splitlines()[0]}); bench loads "
            "checkpoints with weights_only=True and refuses pickles that run code. If you trust "
            "the file, save its tensors alone once: torch.save(torch.load(PATH, "
            "weights_only=False)['state_dict'], OUT)"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise WeightsError(f"{path}: expected a mapping of tensor names to tensors")
    if all(k.startswith("module.") for k in loaded):
        loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    return dict(loaded)


def load_strict(model: Any, state: Mapping[str, Any], source: Path, architecture: str) -> None:
    """Load ``state`` into ``model``, failing with the missing, unexpected and misshapen tensors."""
    own = model.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 have no BatchNorm step counters; they do not
    # affect inference, so the model's own are kept.
    state = {**{k: v for k, v in own.items() if k.endswith(".num_batches_tracked")}, **state}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or misshapen:

        def listing(names: list[str]) -> str:
            return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")

        parts = [
            f"{label} ({len(names)}): {listing(names)}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", misshapen),
            )
            if names
        ]
        raise WeightsError(
            f"{source} does not match the {architecture} architecture: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; CUDA must be available (torch is imported only to
    check a CUDA device)."""
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available here; use --device cpu")
        return device
    raise UsageError(f"--device {device!r}: expected cpu, cuda or cuda:N")


def logits_to_labels(logits: Any, size: tuple[int, ...], num_classes: int) -> LabelMap:
    """Upsample (1, C, h, w) logits bilinearly to ``size``, take the argmax, and map channels
    beyond the classes (a background channel) to 255."""
    import torch.nn.functional as F

    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    labels = logits.argmax(dim=1)[0].to("cpu", non_blocking=False).numpy().astype(np.int64)
    labels[labels >= num_classes] = IGNORE_LABEL
    return labels.astype(np.uint8)


class TorchSegmenter(Segmenter):
    """A PyTorch network with published weights: strict loading, preprocessing, batching.

    Subclasses implement ``build_model()`` (randomly initialised, then loaded strictly from
    ``weights``), ``prepare(image) -> (1, 3, h, w) tensor`` and ``architecture``. ``weights``
    is a path or a URL; a URL needs ``weights_sha256`` and is cached (bench.checkpoints).
    """

    def __init__(self, *, weights: str = "", weights_sha256: str = "", device: str = "cpu") -> None:
        if not weights:
            raise ValueError(f"needs weights=PATH (--segmenter-weights) for {self.name}")
        import torch

        from bench.checkpoints import resolve_checkpoint

        self.torch = torch
        self.device = resolve_device(device)
        self.weights = resolve_checkpoint(weights, weights_sha256)
        self.model = self.build_model()
        load_strict(self.model, load_state_dict(self.weights), self.weights, self.architecture)
        self.model.eval().to(self.device)

    @property
    @abc.abstractmethod
    def architecture(self) -> str:
        """A human name of the architecture and its variant, for error messages."""

    @abc.abstractmethod
    def build_model(self) -> Any:
        """The network, randomly initialised."""

    @abc.abstractmethod
    def prepare(self, image: Image) -> Any:
        """A (1, 3, h, w) float tensor on the CPU, preprocessed as the model was trained."""

    @classmethod
    def availability(cls) -> Availability:
        try:
            import torch
        except ImportError:
            return Availability(False, "PyTorch is not installed", "pip install torch")
        return Availability(True, f"torch {torch.__version__}")

    def predict_batch(self, images: Sequence[Image]) -> list[LabelMap]:
        if not images:
            return []
        torch = self.torch
        with torch.inference_mode():
            batch = torch.cat([self.prepare(image) for image in images]).to(self.device)
            logits = self.model(batch)
            return [
                logits_to_labels(logits[i : i + 1], image.shape[:2], self.num_classes)
                for i, image in enumerate(images)
            ]

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "weights": str(self.weights),
            "weights_sha256": sha256_of(self.weights),
            "device": self.device,
            "torch": self.torch.__version__,
        }
