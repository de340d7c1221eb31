"""Any directory of images, optionally with a parallel directory of label maps.

Image ids are the path below ``data_dir`` without its suffix, as POSIX text (``a/b`` for
``DIR/a/b.jpg``), so that committed baselines and label-map lookups keep working. Two rules
keep every id valid text and unique:

* Names that are not valid UTF-8 (Linux allows any bytes) are escaped reversibly: the
  relative path's bytes are decoded with ``errors="backslashreplace"``, so ``a_<0xff>.png``
  gets the id ``a_\\xff``. Valid names are unchanged, and the file is still read by its
  real name.
* Where files share an id once the suffix is dropped (``x.png`` and ``x.jpg``), each of them
  keeps its suffix (``x.png``, ``x.jpg``); every other id is unchanged. If ids still collide
  (only names that spell out backslash escapes can do that), the later ones in path order get
  ``#2``, ``#3``, ...

Colliding files share the label map of their stem (``LABELS/x.png`` for both). Errors that
name an undecodable file (it cannot be read, its label map is wrong) name it escaped the same
way, so that they can be written to records.csv.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from bench.datasets.base import Dataset, DatasetStatus, Sample, SampleRef
from bench.errors import DatasetError, ImageReadError
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
        return f"folder/{_text(self.root.name)}" if self.root else "folder"

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
        paths = list_images(root)
        relatives = [path.relative_to(root) for path in paths]
        refs = [
            SampleRef(self.tag, image_id, path, self._label_for(relative))
            for path, relative, image_id in zip(
                paths, relatives, _unique_ids(relatives), strict=True
            )
        ]
        if not refs:
            raise DatasetError(
                f"folder: no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return refs

    def load(self, ref: SampleRef, *, with_label: bool = True) -> Sample:
        """As ``Dataset.load``; an error naming an undecodable file name names it as text."""
        try:
            return super().load(ref, with_label=with_label)
        except (ImageReadError, DatasetError) as exc:
            message = str(exc)
            if _text(message) == message:
                raise
            raise type(exc)(_text(message)) from exc

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


def _text(name: str) -> str:
    """``name`` as valid text: undecodable bytes (surrogate escapes) as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _unique_ids(relatives: list[Path]) -> list[str]:
    """One id per file: the path without its suffix, with it only where that collides."""
    short = [_text(r.with_suffix("").as_posix()) for r in relatives]
    full = [_text(r.as_posix()) for r in relatives]
    ids = list(short)
    escalated = [False] * len(ids)
    changed = True
    while changed:  # a suffixed id may meet another file's stem (x.png vs x.png.png)
        changed = False
        counts = Counter(ids)
        for i, image_id in enumerate(ids):
            if counts[image_id] > 1 and not escalated[i]:
                ids[i], escalated[i], changed = full[i], True, True
    taken = set(ids)
    seen: set[str] = set()
    for i, image_id in enumerate(ids):
        if image_id in seen:
            n = 2
            while f"{image_id}#{n}" in taken:
                n += 1
            ids[i] = f"{image_id}#{n}"
            taken.add(ids[i])
        seen.add(ids[i])
    return ids
