"""Where bench finds its configuration and data: the project's ``codecs/`` and ``datasets/``."""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def project_root() -> Path:
    """The checkout that holds ``codecs/`` and ``datasets/`` (``BENCH_HOME`` overrides)."""
    configured = os.environ.get("BENCH_HOME")
    return Path(configured) if configured else Path(__file__).resolve().parents[1]


def data_home() -> Path:
    """Where downloaded datasets are kept (``BENCH_DATA_HOME`` overrides ``datasets/``)."""
    configured = os.environ.get("BENCH_DATA_HOME")
    return Path(configured) if configured else project_root() / "datasets"


@cache
def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BenchError(
            f"{path} is missing: bench reads its configuration from the project checkout; "
            "install with `pip install -e .` from the checkout or set BENCH_HOME to it"
        )
    with path.open("rb") as handle:
        return tomllib.load(handle)


def codec_defaults() -> dict[str, Any]:
    """The default rate sweep (and options) per codec from ``codecs/defaults.toml``."""
    return _read_toml(project_root() / "codecs" / "defaults.toml")


def dataset_manifest(name: str) -> dict[str, Any]:
    """A dataset's manifest (file names, checksums, source) from ``datasets/NAME.toml``."""
    return _read_toml(project_root() / "datasets" / f"{name}.toml")
