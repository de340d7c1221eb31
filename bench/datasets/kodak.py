"""Kodak: the 24 images of the Kodak Lossless True Color Image Suite."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bench.config import data_home, dataset_manifest
from bench.datasets.base import Dataset, DatasetStatus, SampleRef
from bench.download import download, sha256_of
from bench.errors import DatasetError

log = logging.getLogger(__name__)

ENV_VAR = "BENCH_KODAK_DIR"


class KodakDataset(Dataset):
    """The 24 Kodak images, from ``data_dir``, ``$BENCH_KODAK_DIR`` or a checked download.

    Args:
        data_dir: a directory holding ``kodim01.png`` ... ``kodim24.png``.
        download: fetch missing files into ``datasets/kodak/`` when no directory is given.
    """

    name = "kodak"
    description = "Kodak Lossless True Color Image Suite, 24 images 768x512 / 512x768"

    def __init__(self, *, data_dir: str | Path | None = None, download: bool = True) -> None:
        self.manifest = dataset_manifest("kodak")
        self.files: dict[str, dict[str, object]] = self.manifest["files"]
        self.download_allowed = download
        configured = data_dir or os.environ.get(ENV_VAR)
        self.user_dir = Path(configured).expanduser().resolve() if configured else None
        self.directory = self.user_dir or data_home() / "kodak"
        self._checked: dict[str, str] | None = None

    def _missing(self) -> list[str]:
        return [name for name in self.files if not (self.directory / name).is_file()]

    def _fetch_missing(self) -> None:
        missing = self._missing()
        if not missing:
            return
        if self.user_dir is not None:
            raise DatasetError(
                f"kodak: {self.directory} lacks {len(missing)} of the 24 images "
                f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); point "
                f"--data-dir (or {ENV_VAR}) at a directory with kodim01.png ... kodim24.png"
            )
        if not self.download_allowed:
            raise DatasetError(
                f"kodak: {len(missing)} images missing from {self.directory} and downloads are "
                f"off; pass --data-dir DIR or set {ENV_VAR}"
            )
        log.info("downloading %d Kodak images into %s", len(missing), self.directory)
        for name in missing:
            entry = self.files[name]
            download(self.manifest["base_url"] + name, self.directory / name, str(entry["sha256"]))

    def verify(self) -> dict[str, str]:
        """Compare every file with the manifest's SHA-256; returns the names that differ."""
        if self._checked is None:
            self._checked = {
                name: digest
                for name, entry in self.files.items()
                if (digest := sha256_of(self.directory / name)) != entry["sha256"]
            }
            if self._checked:
                log.warning(
                    "kodak: %d files in %s differ from the published ones (%s); results may "
                    "not compare with other Kodak numbers",
                    len(self._checked),
                    self.directory,
                    ", ".join(sorted(self._checked)),
                )
        return self._checked

    def refs(self) -> list[SampleRef]:
        self._fetch_missing()
        return [
            SampleRef(self.tag, Path(name).stem, self.directory / name)
            for name in sorted(self.files)
        ]

    def status(self) -> DatasetStatus:
        present = len(self.files) - len(self._missing())
        if present == len(self.files):
            return DatasetStatus(True, str(self.directory), present, 0)
        how = (
            "downloaded on first use"
            if self.user_dir is None and self.download_allowed
            else f"pass --data-dir or set {ENV_VAR}"
        )
        return DatasetStatus(
            False, str(self.directory), present, 0, f"{present}/{len(self.files)} present; {how}"
        )

    def provenance(self) -> dict[str, object]:
        differing = self.verify()
        return {
            "name": self.name,
            "tag": self.tag,
            "directory": str(self.directory),
            "images": len(self.files),
            "checksums": "match the manifest" if not differing else f"differ: {sorted(differing)}",
        }
