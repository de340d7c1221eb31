"""Datasets by name: built-ins and plugins of the ``bench.datasets`` entry-point group."""

from bench.datasets.base import Dataset, DatasetStatus, Sample, SampleRef
from bench.registry import Registry

DATASETS: Registry[Dataset] = Registry("datasets", "bench.datasets")
DATASETS.add("kodak", "bench.datasets.kodak:KodakDataset")

__all__ = ["DATASETS", "Dataset", "DatasetStatus", "Sample", "SampleRef"]
