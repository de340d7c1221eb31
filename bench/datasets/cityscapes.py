"""Cityscapes in its official layout, with fine labels mapped to the 19 training classes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.config import dataset_manifest
from bench.datasets.base import (
    IGNORE_LABEL,
    Dataset,
    DatasetStatus,
    LabelMap,
    Sample,
    SampleRef,
    check_label_values,
    read_label_png,
)
from bench.errors import DatasetError
from bench.images import halve_labels, halve_rgb, read_rgb8

ENV_VARS = ("CITYSCAPES_DATASET", "BENCH_CITYSCAPES_DIR")
SPLITS = ("train", "val", "test")
RESOLUTIONS = ("full", "half")


def _label_table() -> tuple[np.ndarray, tuple[str, ...]]:
    """A 256-entry lookup labelId -> trainId (255 where the id is not in the table) and the
    names of trainIds 0..18."""
    rows = dataset_manifest("cityscapes")["labels"]
    lookup = np.full(256, -1, dtype=np.int16)  # -1: not a Cityscapes labelId
    names: dict[int, str] = {}
    for label_id, train_id, name in rows:
        lookup[label_id] = train_id
        if train_id != IGNORE_LABEL:
            names[train_id] = name
    return lookup, tuple(names[i] for i in range(len(names)))


def labelids_to_trainids(label_ids: np.ndarray, path: Path) -> LabelMap:
    """Map a ``*_labelIds.png`` array to trainIds 0..18 / 255 by the official table.

    Raises:
        DatasetError: a value is not a Cityscapes labelId (names the file and the values).
    """
    lookup, _ = _label_table()
    mapped = lookup[label_ids]
    if (mapped < 0).any():
        bad = np.unique(label_ids[mapped < 0]).tolist()
        raise DatasetError(f"{path}: values {bad[:8]} are not Cityscapes labelIds (0..33, 255)")
    return mapped.astype(np.uint8)


class CityscapesDataset(Dataset):
    """Cityscapes ``leftImg8bit`` images with ``gtFine`` labels as trainIds (255 = ignore).

    Labels come from ``*_gtFine_labelTrainIds.png`` when present, else from
    ``*_gtFine_labelIds.png`` through the official table. The test split has no public
    labels: its samples carry none.

    Args:
        data_dir: the root holding ``leftImg8bit/`` and ``gtFine/`` (else $CITYSCAPES_DATASET
            or $BENCH_CITYSCAPES_DIR).
        split: train, val (default) or test.
        resolution: full (2048x1024) or half (1024x512: images by the rounded 2x2 mean,
            labels by nearest neighbour).
    """

    name = "cityscapes"
    description = "Cityscapes urban scenes, 2048x1024, 19-class fine labels"

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        split: str = "val",
        resolution: str = "full",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"option split={split!r} must be one of {', '.join(SPLITS)}")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"option resolution={resolution!r} must be full or half")
        self.split = split
        self.resolution = resolution
        configured = data_dir or next((os.environ[v] for v in ENV_VARS if os.environ.get(v)), None)
        self.root = Path(configured).expanduser().resolve() if configured else None
        _, self.class_names = _label_table()

    @classmethod
    def listed_selections(cls) -> list[dict[str, object]]:
        return [{"split": split} for split in SPLITS]

    @property
    def tag(self) -> str:
        return f"cityscapes/{self.split}" + ("@1024x512" if self.resolution == "half" else "")

    def _images_dir(self) -> Path:
        if self.root is None:
            raise DatasetError(
                "cityscapes: no data directory. Cityscapes needs a login, so bench never downloads "
                "it: register at https://www.cityscapes-dataset.com/downloads/, get "
                "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, unzip both into one "
                "directory DIR, then pass --data-dir DIR or set CITYSCAPES_DATASET=DIR"
            )
        images = self.root / "leftImg8bit" / self.split
        if not images.is_dir():
            raise DatasetError(
                f"cityscapes: {images} does not exist; --data-dir must be the directory that holds "
                f"leftImg8bit/{{train,val,test}}/CITY/*_leftImg8bit.png and gtFine/ (the "
                "official layout)"
            )
        return images

    def refs(self) -> list[SampleRef]:
        images = self._images_dir()
        refs = []
        for path in sorted(images.glob("*/*_leftImg8bit.png")):
            frame = path.name.removesuffix("_leftImg8bit.png")
            labels = self.root / "gtFine" / self.split / path.parent.name  # type: ignore[operator]
            label = next(
                (
                    p
                    for suffix in ("labelTrainIds", "labelIds")
                    if (p := labels / f"{frame}_gtFine_{suffix}.png").is_file()
                ),
                None,
            )
            refs.append(SampleRef(self.tag, frame, path, label))
        if not refs:
            raise DatasetError(f"cityscapes: no *_leftImg8bit.png files under {images}/CITY/")
        return refs

    def load(self, ref: SampleRef, *, with_label: bool = True) -> Sample:
        loaded = read_rgb8(ref.path)
        image, conversion = loaded.pixels, loaded.conversion
        label = None
        if with_label and ref.label_path is not None:
            label = self._read_trainids(ref.label_path)
            if label.shape != image.shape[:2]:
                raise DatasetError(
                    f"{ref.label_path}: label map is {label.shape[1]}x{label.shape[0]} but "
                    f"{ref.path.name} is {image.shape[1]}x{image.shape[0]}"
                )
        if self.resolution == "half":
            image = halve_rgb(image)
            conversion = "; ".join(filter(None, [conversion, "half resolution (2x2 mean)"]))
            label = halve_labels(label) if label is not None else None
        return Sample(ref.id, image, label, conversion)

    def _read_trainids(self, path: Path) -> LabelMap:
        raw = read_label_png(path)
        if path.name.endswith("_labelIds.png"):
            return labelids_to_trainids(raw, path)
        check_label_values(raw, len(self.class_names), path)
        return raw

    def status(self) -> DatasetStatus:
        try:
            refs = self.refs()
        except DatasetError as exc:
            if self.root is None:
                return DatasetStatus(
                    False,
                    "not configured",
                    0,
                    0,
                    "needs a login at cityscapes-dataset.com; "
                    "then --data-dir DIR or CITYSCAPES_DATASET=DIR",
                )
            return DatasetStatus(False, str(self.root), 0, 0, str(exc))
        labels = sum(1 for r in refs if r.label_path is not None)
        detail = f"split {self.split}" + (
            "; the test split has no public labels" if self.split == "test" else ""
        )
        return DatasetStatus(True, str(self.root), len(refs), labels, detail)

    def provenance(self) -> dict[str, object]:
        refs = self.refs()
        with_ids = sum(
            1 for r in refs if r.label_path and r.label_path.name.endswith("_labelIds.png")
        )
        return {
            "name": self.name,
            "tag": self.tag,
            "root": str(self.root),
            "split": self.split,
            "resolution": self.resolution,
            "images": len(refs),
            "labels": sum(1 for r in refs if r.label_path is not None),
            "labels_from_labelIds": with_ids,
        }
