"""Any directory of images, optionally with a parallel directory of label maps."""

from __future__ import annotations

from pathlib import Path

from bench.datasets.base import Dataset, DatasetStatus, SampleRef
from bench.errors import DatasetError
from bench.images import IMAGE_SUFFIXES, list_images


class FolderDataset(Dataset):
    """The images below ``data_dir`` (png, jpg, ppm, tiff, webp, ...), sorted by path.

    With ``label_dir``, the label map of ``data_dir/a/b.jpg`` is ``label_dir/a/b.png`` (any
    image suffix): single-channel class indices 0..num_classes-1, 255 ignored.

    Args:
        data_dir: the images (searched recursively).
        label_dir: a parallel tree of label maps.
        num_classes: how many label classes there are (label values are checked against it).
    """

    name = "folder"
    description = "any directory of images, optionally with label maps"

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        label_dir: str | Path | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.root = Path(data_dir).expanduser().resolve() if data_dir else None
        self.label_root = Path(label_dir).expanduser().resolve() if label_dir else None
        if num_classes is not None and not 1 <= int(num_classes) <= 255:
            raise ValueError(f"option num_classes={num_classes} must be in 1..255")
        if self.label_root is not None and num_classes is None:
            raise ValueError(
                "option label_dir needs num_classes (how many classes the labels have)"
            )
        self.class_names = tuple(f"class {i}" for i in range(int(num_classes or 0)))

    @property
    def tag(self) -> str:
        return f"folder/{self.root.name}" if self.root else "folder"

    def _root(self) -> Path:
        if self.root is None:
            raise DatasetError("folder: which folder? pass --data-dir DIR")
        if not self.root.is_dir():
            raise DatasetError(f"folder: {self.root} is not a directory")
        if self.label_root is not None and not self.label_root.is_dir():
            raise DatasetError(f"folder: label directory {self.label_root} is not a directory")
        return self.root

    def _label_for(self, relative: Path) -> Path | None:
        if self.label_root is None:
            return None
        stem = self.label_root / relative.with_suffix("")
        return next(
            (p for suffix in sorted(IMAGE_SUFFIXES) if (p := stem.with_suffix(suffix)).is_file()),
            None,
        )

    def refs(self) -> list[SampleRef]:
        root = self._root()
        refs = []
        for path in list_images(root):
            relative = path.relative_to(root)
            refs.append(
                SampleRef(
                    self.tag, relative.with_suffix("").as_posix(), path, self._label_for(relative)
                )
            )
        if not refs:
            raise DatasetError(
                f"folder: no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return refs

    def status(self) -> DatasetStatus:
        if self.root is None:
            return DatasetStatus(
                False, "-", 0, 0, "pass --data-dir DIR (and --label-dir, --num-classes)"
            )
        try:
            refs = self.refs()
        except DatasetError as exc:
            return DatasetStatus(False, str(self.root), 0, 0, str(exc))
        labels = sum(1 for r in refs if r.label_path is not None)
        return DatasetStatus(True, str(self.root), len(refs), labels)

    def provenance(self) -> dict[str, object]:
        refs = self.refs()
        return {
            "name": self.name,
            "tag": self.tag,
            "directory": str(self.root),
            "label_dir": str(self.label_root) if self.label_root else None,
            "num_classes": len(self.class_names) or None,
            "images": len(refs),
            "labels": sum(1 for r in refs if r.label_path is not None),
        }
