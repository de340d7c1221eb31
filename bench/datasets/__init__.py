"""Datasets by name: built-ins and plugins of the ``bench.datasets`` entry-point group."""

from collections.abc import Mapping

from bench.datasets.base import Dataset, DatasetStatus, Sample, SampleRef
from bench.registry import Registry, construct, keyword_options

DATASETS: Registry[Dataset] = Registry("datasets", "bench.datasets")
DATASETS.add("kodak", "bench.datasets.kodak:KodakDataset")
DATASETS.add("clic", "bench.datasets.clic:ClicDataset")
DATASETS.add("cityscapes", "bench.datasets.cityscapes:CityscapesDataset")
DATASETS.add("folder", "bench.datasets.folder:FolderDataset")


def open_dataset(name: str, options: Mapping[str, object] | None = None) -> Dataset:
    """Create a registered dataset from keyword options (``data_dir``, ``split``, ...).

    ``download`` is passed only to datasets that can download.
    """
    cls = DATASETS.load(name)
    options = dict(options or {})
    if "download" in options and "download" not in keyword_options(cls):
        options.pop("download")
    return construct(cls, options, f"dataset {name}")


__all__ = ["DATASETS", "Dataset", "DatasetStatus", "Sample", "SampleRef", "open_dataset"]
