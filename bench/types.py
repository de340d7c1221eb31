"""Types every layer shares: images, label maps, option values and whether a thing can run here.

This module sits below every stage of the pipeline (datasets, codecs, metrics, tasks, training)
and imports nothing from bench, so any of them can use it without importing another stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
"""An (H, W, 3) uint8 RGB image."""

LabelMap = npt.NDArray[np.uint8]
"""An (H, W) uint8 map of class ids; ``IGNORE_LABEL`` marks pixels no metric scores."""

IGNORE_LABEL = 255
"""The label value that segmentation metrics ignore (Cityscapes' convention)."""

OptionValue = str | int | float | bool
"""The value of a codec, dataset or task option as the command line gives it."""


@dataclass(frozen=True)
class Availability:
    """Whether a codec or model can run here; ``detail`` is a version or the reason it cannot."""

    usable: bool
    detail: str
    hint: str = ""


def parse_option_value(text: str) -> OptionValue:
    """Parse a command-line option value: true/false, an int, a float, or a string.

    >>> parse_option_value("on"), parse_option_value("7"), parse_option_value("0.5")
    (True, 7, 0.5)
    """
    lowered = text.strip().lower()
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    for convert in (int, float):
        try:
            return convert(text)  # type: ignore[no-any-return]
        except ValueError:
            pass
    return text


TRAINING_FILES = "training_files_sha256"
"""Key under which a learned codec's ``prepare`` (or a task's ``provenance``) lists the SHA-256
of the files its weights were trained on; the runner warns when they overlap the images it
scores."""


@dataclass(frozen=True)
class Latent:
    """A learned codec's quantised latent, entropy-decoded from its bitstream without the
    synthesis transform (what a task that works on latents reads).

    Attributes:
        values: (C, h, w) float32, ŷ as the decoder's synthesis would receive it.
        synthesis, synthesis_params: the codec's synthesis transform and its parameter
            count (None and 0 where the codec does not say).
        stride: image pixels per latent position along each side (16 for TIC).
        height, width: the coded image's size; the latent covers it padded to
            ``(h * stride, w * stride)`` at the bottom and right.
    """

    values: npt.NDArray[np.float32]
    stride: int
    height: int
    width: int
    synthesis: Any = field(default=None, compare=False, repr=False)
    """The codec's synthesis transform (ŷ tensor -> image tensor), to measure its cost."""
    synthesis_params: int = 0

    @property
    def channels(self) -> int:
        return int(self.values.shape[0])
