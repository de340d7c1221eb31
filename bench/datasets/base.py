"""The dataset contract: a list of sample references, each loaded on demand."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from bench.codecs.base import Image
from bench.images import read_rgb8

LabelMap = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class SampleRef:
    """A picklable pointer to one sample, cheap to send to a worker process."""

    dataset: str
    id: str
    path: Path
    label_path: Path | None = None


@dataclass(frozen=True)
class Sample:
    """One image (and its label map, when the dataset has labels)."""

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
    """Base class of datasets: ``refs()`` lists samples, ``load(ref)`` reads one."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def refs(self) -> list[SampleRef]:
        """Every sample of the selected split, in a stable order."""

    def load(self, ref: SampleRef) -> Sample:
        """Read a sample; raises ImageReadError naming the file when it cannot be read."""
        loaded = read_rgb8(ref.path)
        return Sample(ref.id, loaded.pixels, None, loaded.conversion)

    @abc.abstractmethod
    def status(self) -> DatasetStatus:
        """Whether the data is here, where it is read from and how much there is."""

    def provenance(self) -> dict[str, object]:
        """What the run manifest records about the data."""
        return {"name": self.name}
