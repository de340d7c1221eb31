"""Where bench finds its configuration and keeps its data.

The default rate sweeps (``bench/codecs/defaults.toml``) and the dataset manifests
(``bench/datasets/*.toml``) ship inside the package, so an installed bench works from any
directory. Data bench downloads and runs it writes go to the checkout when bench runs from one
(``datasets/``, ``results/``), else to the user's cache and the current directory.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def checkout_root() -> Path | None:
    """The source checkout bench runs from (``BENCH_HOME`` overrides), or None when installed.

    A checkout is the directory above the package that holds bench's ``pyproject.toml``.
    """
    configured = os.environ.get("BENCH_HOME")
    if configured:
        return Path(configured)
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    try:
        is_bench = 'name = "bench"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if is_bench else None


def cache_home() -> Path:
    """Where downloaded checkpoints (and, outside a checkout, datasets) are kept.

    ``BENCH_CACHE``, else ``~/.cache/bench``.
    """
    configured = os.environ.get("BENCH_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "bench"


def data_home() -> Path:
    """Where downloaded datasets are kept.

    ``BENCH_DATA_HOME``, else the checkout's ``datasets/``, else ``cache_home()/datasets``.
    """
    configured = os.environ.get("BENCH_DATA_HOME")
    if configured:
        return Path(configured)
    root = checkout_root()
    return root / "datasets" if root is not None else cache_home() / "datasets"


def results_home() -> Path:
    """Where runs go without ``--out``: the checkout's ``results/``, else ``./results``."""
    root = checkout_root()
    return root / "results" if root is not None else Path.cwd() / "results"


def reports_home() -> Path:
    """Where ``bench report RUN_A RUN_B`` writes comparison pages without ``--out``: the
    checkout's ``reports/``, else ``./reports``."""
    root = checkout_root()
    return root / "reports" if root is not None else Path.cwd() / "reports"


@cache
def _read_packaged_toml(package: str, name: str) -> dict[str, Any]:
    resource = resources.files(package) / name
    try:
        with resource.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise BenchError(
            f"{name} is missing from the installed package {package}: reinstall bench "
            "(`pip install .` from a checkout ships it as package data)"
        ) from None


def codec_defaults() -> dict[str, Any]:
    """The default rate sweep (and options) per codec from ``bench/codecs/defaults.toml``."""
    return _read_packaged_toml("bench.codecs", "defaults.toml")


def dataset_manifest(name: str) -> dict[str, Any]:
    """A dataset's manifest (file names, checksums, source) from ``bench/datasets/NAME.toml``."""
    return _read_packaged_toml("bench.datasets", f"{name}.toml")
