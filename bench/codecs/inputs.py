"""Per-image codec inputs: a quality map in [0, 1] of the image's size, built from a source.

Sources (the text of a codec's ``roi`` option):
    ``uniform``            every pixel at the rate value
    ``classes:A,B,...``    pixels of those classes of the image's label map (by the dataset's
                           class names, e.g. ``classes:person,rider,car``) at the rate value,
                           the rest at ``background``
    ``dir:PATH`` or PATH   one mask image per image, ``PATH/<image id>.png``: non-zero pixels
                           at the rate value, the rest at ``background``
    ``heatmap:NAME``       the image's heat map itself (rate-independent, ``background`` unused)
    ``heatmap:NAME@PATH``  from ``bench.codecs.heatmaps.sources``: ``saliency`` (no weights),
                           ``gradcam-espnetv2`` (the shared Cityscapes weights unless ``@PATH``)
                           or ``gradcam-vgg16@PATH`` (user ImageNet VGG-16 weights, required);
                           everything after the first ``@`` is the weights path. The region of
                           interest is ``heat >= threshold`` (0.5 by default)

The map the codec receives is hashed (``input_sha256`` in records); whatever the decoder
needs of it travels in the bitstream.

>>> import numpy as np
>>> label = np.array([[0, 1], [2, 255]], np.uint8)
>>> source = QualityMapSource.parse("classes:b", background=0.25)
>>> source.from_label(label, ("a", "b", "c"), 0.75).tolist()
[[0.25, 0.75], [0.25, 0.25]]
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from bench.errors import DatasetError, UsageError

if TYPE_CHECKING:
    from bench.datasets import Sample

QUALITY_MAP = "quality_map"
QualityMap = npt.NDArray[np.float32]


def _heatmap_module() -> ModuleType:
    """``bench.codecs.heatmaps.sources``, imported on first use: it brings torch and the
    networks' code, which the other kinds do not need."""
    return importlib.import_module("bench.codecs.heatmaps.sources")


def map_sha256(quality_map: QualityMap) -> str:
    """SHA-256 of a map's shape and float32 values: equal hashes mean equal maps."""
    values = np.ascontiguousarray(quality_map, dtype=np.float32)
    digest = hashlib.sha256(f"{values.shape[0]}x{values.shape[1]}:".encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class QualityMapSource:
    """Where a codec's per-image quality map comes from (see the module docstring)."""

    kind: str = "uniform"
    classes: tuple[str, ...] = ()
    directory: str = ""
    background: float = 0.0
    heatmap: str = ""
    """``NAME`` or ``NAME@WEIGHTS`` of a ``heatmap`` source (its network is loaded lazily, in a
    per-process cache, never held here: the source travels to worker processes)."""
    threshold: float = 0.5
    """A ``heatmap`` source's region of interest is ``heat >= threshold``."""

    @classmethod
    def uniform(cls) -> QualityMapSource:
        return cls()

    @classmethod
    def parse(cls, text: str, background: float = 0.0, threshold: float = 0.5) -> QualityMapSource:
        """Parse a ``roi`` option value.

        Raises:
            UsageError: an empty class list or heat-map name, or a background or threshold
                outside [0, 1].
        """
        if not 0.0 <= float(background) <= 1.0:
            raise UsageError(f"background must be in [0, 1], got {background}")
        text = text.strip()
        if text in ("", "uniform", "none"):
            return cls()
        if text.startswith("heatmap:"):
            spec = text[len("heatmap:") :].strip()
            if not spec.partition("@")[0].strip():
                raise UsageError("roi=heatmap: needs a source, e.g. heatmap:saliency")
            if not 0.0 <= float(threshold) <= 1.0:
                raise UsageError(f"threshold must be in [0, 1], got {threshold}")
            return cls("heatmap", heatmap=spec, threshold=float(threshold))
        if text.startswith("classes:"):
            classes = tuple(c.strip() for c in text[len("classes:") :].split(",") if c.strip())
            if not classes:
                raise UsageError("roi=classes: needs class names, e.g. classes:person,car")
            return cls("classes", classes, "", float(background))
        directory = text[len("dir:") :] if text.startswith("dir:") else text
        return cls("dir", (), str(Path(directory).expanduser()), float(background))

    def describe(self) -> str:
        """The ``codec_input`` column: ``uniform``, ``classes:a,b bg=0`` or ``dir:PATH bg=0``."""
        if self.kind == "uniform":
            return "uniform"
        if self.kind == "heatmap":
            return f"heatmap:{self.heatmap} thr={self.threshold:g}"
        where = (
            f"classes:{','.join(self.classes)}"
            if self.kind == "classes"
            else f"dir:{self.directory}"
        )
        return f"{where} bg={self.background:g}"

    @property
    def needs_labels(self) -> bool:
        return self.kind == "classes"

    def check(self, class_names: tuple[str, ...], dataset: str) -> None:
        """Raise UsageError before a run when the source cannot work on the dataset."""
        if self.kind == "classes":
            if not class_names:
                raise UsageError(f"roi=classes:... needs a dataset with labels; {dataset} has none")
            unknown = [c for c in self.classes if c not in class_names]
            if unknown:
                raise UsageError(
                    f"roi classes {', '.join(unknown)} are not classes of {dataset} "
                    f"({', '.join(class_names)})"
                )
        if self.kind == "dir" and not Path(self.directory).is_dir():
            raise UsageError(f"roi mask directory {self.directory} does not exist")
        if self.kind == "heatmap":
            _heatmap_module().check_spec(self.heatmap)

    def build(self, sample: Sample, class_names: tuple[str, ...], rate: float) -> QualityMap:
        """The quality map of one image at one rate value (clipped to [0, 1]).

        Raises:
            DatasetError: the label map or mask is missing or of another size, naming it.
        """
        height, width = sample.image.shape[:2]
        value = float(np.clip(rate, 0.0, 1.0))
        if self.kind == "uniform":
            return np.full((height, width), value, np.float32)
        if self.kind == "classes":
            if sample.label is None:
                raise DatasetError(f"{sample.id} has no label map for roi=classes:...")
            return self.from_label(sample.label, class_names, value)
        if self.kind == "heatmap":
            return np.array(self.heat(sample.image))  # a copy: the cached map is read-only
        return self._from_mask(sample.id, (height, width), value)

    def heat(self, image: npt.NDArray[np.uint8]) -> QualityMap:
        """A ``heatmap`` source's map of an image, (H, W) float32 in [0, 1] (computed once
        per image content and process)."""
        return _heatmap_module().heatmap_source(self.heatmap)(image)

    def region(self, sample: Sample, class_names: tuple[str, ...]) -> npt.NDArray[np.bool_] | None:
        """The boolean region of interest of an image (None for a uniform map).

        Raises:
            DatasetError: as ``build``.
        """
        if self.kind == "uniform":
            return None
        if self.kind == "classes":
            if sample.label is None:
                raise DatasetError(f"{sample.id} has no label map for roi=classes:...")
            indices = [class_names.index(c) for c in self.classes]
            return np.isin(sample.label, np.asarray(indices, dtype=sample.label.dtype))
        if self.kind == "heatmap":
            return np.asarray(self.heat(sample.image) >= np.float32(self.threshold))
        height, width = sample.image.shape[:2]
        return self._mask(sample.id, (height, width))

    def from_label(
        self, label: npt.NDArray[np.uint8], class_names: tuple[str, ...], value: float
    ) -> QualityMap:
        """ROI = the chosen classes of a label map."""
        indices = [class_names.index(c) for c in self.classes]
        inside = np.isin(label, np.asarray(indices, dtype=label.dtype))
        return np.where(inside, np.float32(value), np.float32(self.background)).astype(np.float32)

    def _from_mask(self, image_id: str, shape: tuple[int, int], value: float) -> QualityMap:
        inside = self._mask(image_id, shape)
        return np.where(inside, np.float32(value), np.float32(self.background)).astype(np.float32)

    def _mask(self, image_id: str, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
        from PIL import Image as PILImage

        path = Path(self.directory) / f"{image_id}.png"
        if not path.is_file():
            raise DatasetError(
                f"{path}: no ROI mask for {image_id}; put a mask PNG there (non-zero = ROI)"
            )
        with PILImage.open(path) as mask_image:
            mask = np.asarray(mask_image.convert("L"))
        if mask.shape != shape:
            raise DatasetError(
                f"{path}: the mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{shape[1]}x{shape[0]}"
            )
        return np.asarray(mask > 0)
