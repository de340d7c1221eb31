"""bench: an evaluation harness for image codecs.

``bench.run(...)`` sweeps codecs over a dataset (the CLI's options as keyword arguments);
``bench.load(run_dir)`` reads a run's records and aggregates as pandas DataFrames.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("bench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load", "run"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import bench` (and the CLI) stay light.
    if name in ("run", "load"):
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
