"""CLIC: the professional and mobile sets of the Challenge on Learned Image Compression."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from bench.archives import extract
from bench.config import data_home, dataset_manifest
from bench.datasets.base import Dataset, DatasetStatus, SampleRef
from bench.download import download
from bench.errors import DatasetError
from bench.images import list_images

log = logging.getLogger(__name__)

ENV_VAR = "BENCH_CLIC_DIR"
_DONE_MARK = ".complete"


class ClicDataset(Dataset):
    """A CLIC split from a local directory of its images, or a checked, safely extracted download.

    Splits (``bench list datasets`` and ``bench/datasets/clic.toml``): professional-valid (default),
    mobile-valid, professional-test, mobile-test (CLIC 2020) and professional-test-2018
    (local only). Report PSNR both as the mean over images and pooled over every pixel, as
    the CLIC papers do: the aggregates carry both.

    Args:
        data_dir: a directory holding the split's images (searched recursively).
        split: which set.
        download: fetch the split's archive into ``datasets/clic/`` when no directory is given.
    """

    name = "clic"
    description = "CLIC professional and mobile photographs (2020 valid/test, 2018 test)"

    def __init__(
        self, *, data_dir: str | Path | None = None, split: str | None = None, download: bool = True
    ) -> None:
        self.manifest = dataset_manifest("clic")
        self.splits: dict[str, dict[str, Any]] = self.manifest["splits"]
        self.split = split or self.manifest["default_split"]
        if self.split not in self.splits:
            raise ValueError(f"option split={self.split!r} must be one of {', '.join(self.splits)}")
        self.info = self.splits[self.split]
        configured = data_dir or os.environ.get(ENV_VAR)
        self.user_dir = Path(configured).expanduser().resolve() if configured else None
        self.download_allowed = download
        self.cache_dir = data_home() / "clic" / self.split

    @classmethod
    def listed_selections(cls) -> list[dict[str, object]]:
        return [{"split": split} for split in dataset_manifest("clic")["splits"]]

    @property
    def tag(self) -> str:
        return f"clic/{self.split}"

    @property
    def directory(self) -> Path:
        return self.user_dir or self.cache_dir

    def _ensure_local(self) -> None:
        if self.user_dir is not None:
            if not self.user_dir.is_dir():
                raise DatasetError(f"clic: {self.user_dir} is not a directory")
            return
        if (self.cache_dir / _DONE_MARK).is_file():
            return
        if "url" not in self.info:
            raise DatasetError(
                f"clic: split {self.split} is read from a local directory only "
                f"({self.info['description']}); pass --data-dir DIR or set {ENV_VAR}"
            )
        if not self.download_allowed:
            raise DatasetError(
                f"clic: split {self.split} is not in {self.cache_dir} and downloads are off; pass "
                f"--data-dir DIR or set {ENV_VAR}"
            )
        archive = data_home() / "clic" / "archives" / Path(self.info["url"]).name
        if not archive.is_file():
            log.info("downloading %s (%.0f MB)", self.info["url"], self.info["bytes"] / 1e6)
            download(self.info["url"], archive, self.info["sha256"])
        extract(archive, self.cache_dir)
        (self.cache_dir / _DONE_MARK).write_text(self.info["sha256"] + "\n")

    def refs(self) -> list[SampleRef]:
        self._ensure_local()
        images = list_images(self.directory)
        if not images:
            raise DatasetError(f"clic: no images under {self.directory}")
        expected = self.info.get("images")
        if expected and len(images) != expected:
            log.warning(
                "clic %s: %d images in %s, the published set has %d; results are for these files",
                self.split,
                len(images),
                self.directory,
                expected,
            )
        return [
            SampleRef(self.tag, path.relative_to(self.directory).with_suffix("").as_posix(), path)
            for path in images
        ]

    def status(self) -> DatasetStatus:
        if self.user_dir is not None or (self.cache_dir / _DONE_MARK).is_file():
            count = len(list_images(self.directory)) if self.directory.is_dir() else 0
            return DatasetStatus(count > 0, str(self.directory), count, 0, f"split {self.split}")
        how = (
            "downloaded on first use"
            if "url" in self.info
            else f"local only: --data-dir or {ENV_VAR}"
        )
        return DatasetStatus(
            False, str(self.cache_dir), 0, 0, f"{self.info.get('images', '?')} images, {how}"
        )

    def provenance(self) -> dict[str, object]:
        return {
            "name": self.name,
            "tag": self.tag,
            "split": self.split,
            "directory": str(self.directory),
            "source": "local directory" if self.user_dir else self.info.get("url"),
            "archive_sha256": None if self.user_dir else self.info.get("sha256"),
        }
