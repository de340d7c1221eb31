"""Exceptions raised by the library; only ``bench.cli`` turns them into exit codes."""


class BenchError(Exception):
    """Base class for errors that carry a message meant for the user."""


class UsageError(BenchError):
    """The request itself is wrong (unknown codec, bad rate, bad option)."""


class CodecUnavailable(BenchError):
    """A codec cannot run on this machine (missing library or binary)."""


class CodecError(BenchError):
    """An encoder or decoder failed on one input."""


class ImageReadError(BenchError):
    """An image file cannot be read as an image."""


class DatasetError(BenchError):
    """A dataset cannot be found, downloaded or verified."""


class MetricUndefined(BenchError):
    """A metric is not defined for this input (e.g. an image too small for MS-SSIM)."""
