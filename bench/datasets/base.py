"""The dataset contract: a list of sample references, each loaded on demand."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image as PILImage

from bench.errors import DatasetError, ImageReadError
from bench.images import read_rgb8
from bench.types import IGNORE_LABEL, Image, LabelMap


@dataclass(frozen=True)
class SampleRef:
    """A picklable pointer to one sample, cheap to send to a worker process.

    ``dataset`` is the dataset's tag (name plus split or variant, e.g. ``cityscapes/val``),
    which is what records carry.
    """

    dataset: str
    id: str
    path: Path
    label_path: Path | None = None


@dataclass(frozen=True)
class Sample:
    """One image (and its label map of class indices, when the dataset has labels)."""

    id: str
    image: Image
    label: LabelMap | None
    conversion: str = ""


@dataclass(frozen=True)
class DatasetStatus:
    """What ``bench list datasets`` shows for one dataset."""

    available: bool
    location: str
    images: int
    labels: int
    detail: str = ""


class Dataset(abc.ABC):
    """Base class of datasets: ``refs()`` lists samples, ``load(ref)`` reads one.

    Subclasses take their options as keyword-only constructor arguments (``data_dir``,
    ``split``, ...), so the command line can pass them by name.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    class_names: tuple[str, ...] = ()
    """Names of the label classes 0..N-1; empty for datasets without labels."""

    @property
    def tag(self) -> str:
        """What identifies this selection of data in records (name, split, variant)."""
        return self.name

    @classmethod
    def listed_selections(cls) -> list[dict[str, object]]:
        """The option sets ``bench list datasets`` shows a line for (e.g. one per split)."""
        return [{}]

    @abc.abstractmethod
    def refs(self) -> list[SampleRef]:
        """Every sample of the selected split, in a stable order."""

    def load(self, ref: SampleRef, *, with_label: bool = True) -> Sample:
        """Read a sample; raises ImageReadError or DatasetError naming the file."""
        loaded = read_rgb8(ref.path)
        label = None
        if with_label and ref.label_path is not None:
            label = self.read_label(ref.label_path, loaded.pixels.shape[:2])
        return Sample(ref.id, loaded.pixels, label, loaded.conversion)

    def read_label(self, path: Path, shape: tuple[int, ...]) -> LabelMap:
        """Read a label map of class indices (255 = ignore) and check it against the image."""
        label = read_label_png(path)
        if label.shape != tuple(shape):
            raise DatasetError(
                f"{path}: label map is {label.shape[1]}x{label.shape[0]} but its image is "
                f"{shape[1]}x{shape[0]}; labels must have the image's size"
            )
        check_label_values(label, len(self.class_names), path)
        return label

    @abc.abstractmethod
    def status(self) -> DatasetStatus:
        """Whether the data is here, where it is read from and how much there is."""

    def provenance(self) -> dict[str, object]:
        """What the run manifest records about the data."""
        return {"name": self.name, "tag": self.tag}


def read_label_png(path: Path) -> LabelMap:
    """A single-channel 8-bit label image as a 2-D uint8 array."""
    try:
        with PILImage.open(path) as image:
            image.load()
            if image.mode not in ("L", "P"):
                raise DatasetError(
                    f"{path}: label maps must be single-channel 8-bit images, got mode {image.mode}"
                )
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(
            f"{path}: cannot read label map ({exc}); replace or remove it"
        ) from exc


def check_label_values(label: LabelMap, num_classes: int, path: Path) -> None:
    """Every value must be a class index below ``num_classes`` or 255 (ignore)."""
    if not num_classes:
        return
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
        raise DatasetError(
            f"{path}: label values {bad.tolist()[:8]} are outside 0..{num_classes - 1} and 255 "
            "(ignore); is this the right label file or class count?"
        )
