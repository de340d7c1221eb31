"""Heat maps that pick an image's semantically important region, by name.

Each source maps an (H, W, 3) uint8 RGB image to an (H, W) float32 map in [0, 1] and
``describe()`` names its model and the SHA-256 of its weights for records:

``gradcam-vgg16``     Grad-CAM (``bench.codecs.heatmaps.gradcam``) of torchvision's VGG-16
                      with the user's ImageNet weights (``weights=PATH``, read with
                      ``weights_only=True`` and loaded strictly); input resized so the shorter
                      side is 224, ImageNet normalisation; target = the top-1 class logit;
                      feature layer ``features[29]`` (conv5_3 + ReLU, 14x14 for a 224x224 input).
``gradcam-espnetv2``  Grad-CAM of bench's Cityscapes ESPNetv2 segmenter (``bench.tasks.espnetv2``,
                      the authors' s = 2.0 weights, loaded as the segmenter loads them and with its
                      preprocessing: resize to 1024x512, ImageNet normalisation); target = the sum
                      over the image of the logits of the "thing" classes (person, rider, car,
                      truck, bus, train, motorcycle, bicycle, traffic light, traffic sign);
                      feature layer = the last unit of the encoder's last stage,
                      ``base_net.level4[-1]`` (1/16 resolution, 512 maps for s = 2). Without
                      ``weights`` the file is looked up as
                      ``$BENCH_SHARED/models/segmentation/espnetv2/espnetv2_s_2.0_city_1024x512.pth``
                      (``BENCH_SHARED`` defaults to ``shared`` beside the checkout, or
                      in the working directory for an installed bench). Its maps are
                      sharply peaked: on three Cityscapes val frames about 0.2 % of the
                      pixels reach 0.5 (mean 0.04 to 0.05), the peak once on the ego car's
                      bonnet ornament, which the segmenter takes for a thing. One map takes
                      about 2.5 s on one CPU thread whatever the image size (the network runs
                      at 1024x512).
``saliency``          spectral-residual saliency (Hou & Zhang, CVPR 2007) in numpy, no weights:
                      the log amplitude spectrum of the grey image at 64 pixels wide minus its 3x3
                      local mean, back with the original phase, squared, Gaussian-blurred
                      (sigma 2.5 pixels at that scale), upsampled and min-max normalised.

A source keeps the maps of the last images it saw, keyed by the SHA-256 of their pixels, so a
sweep over rate points computes each map once. ``heatmap_source`` keeps one source (and its
loaded network) per name and weights in the process.
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from bench.codecs.heatmaps.gradcam import HeatMap, grad_cam, normalise
from bench.download import sha256_of
from bench.errors import UsageError
from bench.types import Image
from bench.weights import WeightsError, load_state_dict, load_strict

ESPNETV2_FILE = "espnetv2_s_2.0_city_1024x512.pth"
THING_CLASSES = (
    "traffic light",
    "traffic sign",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CACHED_MAPS = 8


def image_sha256(image: Image) -> str:
    """SHA-256 of an image's shape and pixels (the key of a source's map cache)."""
    pixels = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{pixels.shape}:{pixels.dtype}:".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def default_espnetv2_weights() -> Path:
    """Where ``gradcam-espnetv2`` looks for its weights when none are given."""
    from bench.config import checkout_root

    configured = os.environ.get("BENCH_SHARED")
    if configured:
        shared = Path(configured)
    else:
        root = checkout_root()
        shared = (root.parent if root is not None else Path.cwd()) / "shared"
    return shared / "models" / "segmentation" / "espnetv2" / ESPNETV2_FILE


class HeatmapSource(abc.ABC):
    """A named heat map of an image; call it with an (H, W, 3) uint8 RGB image."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._maps: OrderedDict[str, HeatMap] = OrderedDict()

    @abc.abstractmethod
    def compute(self, image: Image) -> HeatMap:
        """The (H, W) float32 map in [0, 1] of one image, uncached."""

    def describe(self) -> dict[str, str]:
        """What a record says about the source: its name, model and weights' SHA-256."""
        return {"heatmap": self.name}

    def __call__(self, image: Image) -> HeatMap:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"heat map {self.name}: expected an (H, W, 3) uint8 RGB image, "
                f"got {image.dtype} {image.shape}"
            )
        key = image_sha256(image)
        cached = self._maps.get(key)
        if cached is None:
            cached = self.compute(image)
            cached.setflags(write=False)
            self._maps[key] = cached
            while len(self._maps) > _CACHED_MAPS:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(key)
        return cached


def _gaussian_kernel(sigma: float) -> npt.NDArray[np.float64]:
    radius = max(1, round(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _filter_separable(
    values: npt.NDArray[np.float64], kernel: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Correlate both axes with a 1-D kernel, edges replicated (output of the input's size)."""
    radius = len(kernel) // 2
    padded = np.pad(values, radius, mode="edge")
    rows = sum(k * padded[i : i + values.shape[0], :] for i, k in enumerate(kernel))
    return np.asarray(sum(k * rows[:, i : i + values.shape[1]] for i, k in enumerate(kernel)))


def spectral_residual(image: Image, width: int = 64, sigma: float = 2.5) -> HeatMap:
    """Spectral-residual saliency of an RGB image, (H, W) float32 in [0, 1].

    >>> image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    >>> heat = spectral_residual(image)
    >>> heat.shape, heat.dtype, float(heat.min()), float(heat.max())
    ((48, 64), dtype('float32'), 0.0, 1.0)
    """
    from PIL import Image as PILImage

    height_full, width_full = image.shape[:2]
    grey = PILImage.fromarray(np.ascontiguousarray(image)).convert("L")
    small_w = min(width, width_full)
    small_h = max(1, round(height_full * small_w / width_full))
    small = np.asarray(
        grey.resize((small_w, small_h), PILImage.Resampling.BILINEAR), dtype=np.float64
    )
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-9)
    phase = np.angle(spectrum)
    box = np.full(3, 1.0 / 3.0, np.float64)
    residual = log_amplitude - _filter_separable(log_amplitude, box)
    energy = np.asarray(np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2, np.float64)
    saliency = _filter_separable(energy, _gaussian_kernel(sigma))
    upsampled = PILImage.fromarray(saliency.astype(np.float32), mode="F").resize(
        (width_full, height_full), PILImage.Resampling.BILINEAR
    )
    return normalise(np.maximum(np.asarray(upsampled), 0.0))


class SaliencySource(HeatmapSource):
    """Spectral-residual saliency (no weights)."""

    name = "saliency"

    def compute(self, image: Image) -> HeatMap:
        return spectral_residual(image)

    def describe(self) -> dict[str, str]:
        return {"heatmap": self.name, "heatmap_model": "spectral residual (Hou & Zhang 2007)"}


class _TorchSource(HeatmapSource):
    """A Grad-CAM source on a network loaded strictly from a weights file."""

    architecture: ClassVar[str]

    def __init__(self, weights: Path) -> None:
        super().__init__()
        import torch

        if not weights.is_file():
            raise UsageError(f"heat map {self.name}: weights file {weights} does not exist")
        self.torch = torch
        self.weights = weights
        self.weights_sha256 = sha256_of(weights)
        self.model = self.build_model()
        try:
            load_strict(self.model, load_state_dict(weights), weights, self.architecture)
        except WeightsError as exc:
            raise UsageError(
                f"heat map {self.name}: {weights} is not {self.architecture} weights: {exc}"
            ) from exc
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @abc.abstractmethod
    def build_model(self) -> Any:
        """The network, randomly initialised."""

    def describe(self) -> dict[str, str]:
        return {
            "heatmap": self.name,
            "heatmap_model": self.architecture,
            "heatmap_weights": str(self.weights),
            "heatmap_weights_sha256": self.weights_sha256,
        }


class GradCamVgg16(_TorchSource):
    """Grad-CAM of VGG-16 (ImageNet, user weights) on its top-1 class, at conv5_3 + ReLU."""

    name = "gradcam-vgg16"
    architecture = "torchvision VGG-16"

    def build_model(self) -> Any:
        from torchvision.models import vgg16

        return vgg16(weights=None)

    def compute(self, image: Image) -> HeatMap:
        torch = self.torch
        import torch.nn.functional as F

        height, width = image.shape[:2]
        scale = 224 / min(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std

        def top1(logits: Any) -> Any:
            return logits[0, int(logits[0].argmax())]

        return grad_cam(self.model, self.model.features[29], x, top1, (height, width))


class GradCamEspnetv2(_TorchSource):
    """Grad-CAM of the Cityscapes ESPNetv2 segmenter on the summed "thing" logits."""

    name = "gradcam-espnetv2"
    architecture = "ESPNetv2 s=2"

    def build_model(self) -> Any:
        from bench.tasks.espnetv2 import build_espnetv2

        return build_espnetv2(2.0, 20)

    def compute(self, image: Image) -> HeatMap:
        import torch.nn.functional as F

        from bench.tasks.base import CITYSCAPES_CLASSES
        from bench.tasks.espnetv2 import INPUT_SIZE, MEAN_RGB, STD_RGB

        torch = self.torch
        channels = [CITYSCAPES_CLASSES.index(c) for c in THING_CLASSES]
        # the segmenter's preprocessing (Espnetv2Segmenter.prepare): 1024x512, ImageNet statistics
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=INPUT_SIZE, mode="bilinear", align_corners=False) / 255.0
        x = (x - torch.tensor(MEAN_RGB).view(1, 3, 1, 1)) / torch.tensor(STD_RGB).view(1, 3, 1, 1)

        def things(logits: Any) -> Any:
            return logits[0, channels].sum()

        layer = self.model.base_net.level4[-1]
        return grad_cam(self.model, layer, x, things, (image.shape[0], image.shape[1]))


SOURCES: dict[str, type[HeatmapSource]] = {
    "saliency": SaliencySource,
    "gradcam-vgg16": GradCamVgg16,
    "gradcam-espnetv2": GradCamEspnetv2,
}
_LOADED: dict[tuple[str, str], HeatmapSource] = {}


def split_spec(spec: str) -> tuple[str, str]:
    """``NAME`` or ``NAME@WEIGHTS`` -> (name, weights path or "").

    >>> split_spec("gradcam-vgg16@/w/vgg16.pth"), split_spec("saliency")
    (('gradcam-vgg16', '/w/vgg16.pth'), ('saliency', ''))
    """
    name, _, weights = spec.strip().partition("@")
    return name.strip(), weights.strip()


def check_spec(spec: str) -> tuple[str, Path | None]:
    """Check a heat-map spec without loading a network: the name, and the weights file.

    Raises:
        UsageError: an unknown name, a weights path for ``saliency``, ``gradcam-vgg16``
            without weights, or a weights file that does not exist.
    """
    name, weights = split_spec(spec)
    if name not in SOURCES:
        raise UsageError(f"unknown heat map {name!r}; choose one of {', '.join(SOURCES)}")
    if name == "saliency":
        if weights:
            raise UsageError("heat map saliency takes no weights")
        return name, None
    if name == "gradcam-vgg16" and not weights:
        raise UsageError(
            "heat map gradcam-vgg16 needs ImageNet VGG-16 weights: gradcam-vgg16@PATH "
            "(a torchvision vgg16 state_dict; bench cannot download them)"
        )
    path = Path(weights).expanduser() if weights else default_espnetv2_weights()
    if not path.is_file():
        raise UsageError(
            f"heat map {name}: weights file {path} does not exist"
            + ("" if weights else f" (give {name}@PATH or set BENCH_SHARED)")
        )
    return name, path


def heatmap_source(spec: str) -> HeatmapSource:
    """The process's one source for ``NAME`` or ``NAME@WEIGHTS`` (networks load once).

    >>> source = heatmap_source("saliency")
    >>> source is heatmap_source("saliency"), source(np.zeros((8, 8, 3), np.uint8)).shape
    (True, (8, 8))
    """
    name, path = check_spec(spec)
    key = (name, str(path or ""))
    source = _LOADED.get(key)
    if source is None:
        cls = SOURCES[name]
        source = cls() if path is None else cls(path)  # type: ignore[call-arg]
        _LOADED[key] = source
    return source


def cam_heatmap(cam_weights: str = "") -> tuple[str, str]:
    """The heat-map spec SPRC uses for a ``cam_weights`` option, and a note for records.

    VGG-16 Grad-CAM on the user's weights when given (as in the slides); otherwise the
    fallback, Grad-CAM on bench's Cityscapes ESPNetv2 segmenter, and a note that says so.

    >>> cam_heatmap("/w/vgg16.pth")
    ('gradcam-vgg16@/w/vgg16.pth', '')
    >>> cam_heatmap()[0]
    'gradcam-espnetv2'
    """
    if str(cam_weights).strip():
        return f"gradcam-vgg16@{str(cam_weights).strip()}", ""
    return "gradcam-espnetv2", (
        "no cam_weights (ImageNet VGG-16) given: the heat map is Grad-CAM of bench's Cityscapes "
        "ESPNetv2 segmenter (summed thing-class logits, layer base_net.level4[-1])"
    )
