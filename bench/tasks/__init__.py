"""Tasks run on reconstructions; segmenters by name (entry-point group ``bench.segmenters``)."""

from __future__ import annotations

from collections.abc import Mapping

from bench.registry import Registry, construct
from bench.tasks.base import Segmenter

SEGMENTERS: Registry[Segmenter] = Registry("segmenters", "bench.segmenters")
SEGMENTERS.add("espnet", "bench.tasks.espnet:EspnetSegmenter", "pip install torch")
SEGMENTERS.add("espnetv2", "bench.tasks.espnetv2:Espnetv2Segmenter", "pip install torch")
SEGMENTERS.add("mmseg", "bench.tasks.mmseg:MmsegSegmenter", "scripts/setup.sh mmseg")


def create_segmenter(name: str, options: Mapping[str, object] | None = None) -> Segmenter:
    """Instantiate a registered segmenter with keyword options (``weights``, ``device``, ...)."""
    return construct(SEGMENTERS.load(name), dict(options or {}), f"segmenter {name}")


__all__ = ["SEGMENTERS", "Segmenter", "create_segmenter"]
