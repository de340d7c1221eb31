"""Metrics by name: built-ins and plugins of the ``bench.metrics`` entry-point group.

``bench run --metrics psnr,ssim,ms-ssim`` picks them; every consumer (records, aggregates,
BD tables, rules, plots, the report, the CLI summary) reads a metric's columns, direction,
label and scale from its object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bench.errors import UsageError
from bench.metrics.base import Column, Metric, Plot
from bench.registry import Registry, construct, keyword_options

METRICS: Registry[Metric] = Registry("metrics", "bench.metrics")
METRICS.add("psnr", "bench.metrics.fidelity:Psnr")
METRICS.add("ssim", "bench.metrics.fidelity:Ssim")
METRICS.add("ms-ssim", "bench.metrics.fidelity:MsSsim")
METRICS.add("psnr-yuv", "bench.metrics.psnr_yuv:PsnrYuv")
METRICS.add("psnr-roi", "bench.metrics.roi:RoiPsnr")

DEFAULT_METRICS = ("psnr", "ssim", "ms-ssim")
"""What ``bench run`` scores unless ``--metrics`` says otherwise."""


def create_metric(name: str, device: str = "cpu") -> Metric:
    """Instantiate a registered metric; one that runs a model (``needs_device``) takes
    ``device`` as its keyword option."""
    cls = METRICS.load(name)
    options = {"device": device} if "device" in keyword_options(cls) else {}
    return construct(cls, options, f"metric {name}")


def create_metrics(names: Iterable[str] | None = None, device: str = "cpu") -> list[Metric]:
    """The metrics of a run, in the order given (default: ``DEFAULT_METRICS``); ``device``
    goes to the metrics that run a model.

    Raises:
        UsageError: an unknown or repeated name, or no metric at all.
    """
    chosen = [n.strip() for n in (DEFAULT_METRICS if names is None else names) if n.strip()]
    if not chosen:
        raise UsageError(f"--metrics needs at least one metric; known: {', '.join(METRICS)}")
    repeated = sorted({n for n in chosen if chosen.count(n) > 1})
    if repeated:
        raise UsageError(f"--metrics names {', '.join(repeated)} more than once")
    return [create_metric(name, device) for name in chosen]


def known_columns() -> dict[str, Column]:
    """Every aggregate column of every registered metric, by name (a plugin that cannot be
    imported here is left out)."""
    found: dict[str, Column] = {}
    for name in METRICS.names():
        try:
            cls = METRICS.load(name)
        except Exception:  # a broken plugin costs its own columns only
            continue
        for column in cls.aggregate_columns:
            found.setdefault(column.name, column)
    return found


def metric_names(metrics: Sequence[Metric]) -> str:
    """The ``metrics`` column of records: the names, comma-separated, in run order."""
    return ",".join(m.name for m in metrics)


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Column",
    "Metric",
    "Plot",
    "create_metric",
    "create_metrics",
    "known_columns",
    "metric_names",
]
