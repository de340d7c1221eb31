"""The segmenter contract: ``predict(image) -> label map`` of class indices at the image's size."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from bench.download import sha256_of
from bench.errors import UsageError
from bench.types import IGNORE_LABEL, Availability, Image, LabelMap
from bench.weights import TRAINING_FILES, load_state_dict, load_strict, trained_on_files

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

    To be fine-tuned (``bench train segmenter``) a subclass also says how ``prepare`` splits:
    ``input_size`` (the (height, width) it resizes every image to) and ``normalize`` (what it
    does to a batch at that size), so that training crops see what inference sees.
    """

    input_size: tuple[int, int] | None = None
    """(height, width) ``prepare`` resizes images to; None: unknown (cannot be fine-tuned). A
    class default; a segmenter with a size option sets it per instance."""

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

    def normalize(self, batch: Any) -> Any:
        """The network input of a float (N, 3, h, w) RGB batch in [0, 1] already at the scale
        of ``input_size``: ``prepare`` without its resizing (for training on crops)."""
        raise NotImplementedError(
            f"segmenter {self.name} does not say how it normalises its input; it cannot be "
            "fine-tuned (set input_size and implement normalize)"
        )

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
        """The weights file and hash, device and torch; for weights that ``bench train
        segmenter`` made, the SHA-256 of the files they were trained on (``TRAINING_FILES``,
        so that a run scoring those images warns)."""
        found: dict[str, Any] = {
            "name": self.name,
            "architecture": self.architecture,
            "weights": str(self.weights),
            "weights_sha256": sha256_of(self.weights),
            "device": self.device,
            "torch": self.torch.__version__,
        }
        trained = trained_on_files(self.weights)
        if trained:
            found[TRAINING_FILES] = sorted(set(trained))
        return found
