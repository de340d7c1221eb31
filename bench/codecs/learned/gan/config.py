"""The GAN codec's configuration: everything that fixes its architecture and losses (no torch)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

DOWNSAMPLING = 16
"""d = 2**4: four stride-2 convolutions (paper eq. 3)."""


def default_centres(levels: int, spacing: float = 1.0) -> tuple[float, ...]:
    """``L`` centres symmetric about 0, ``spacing`` apart: (-1.5, -0.5, 0.5, 1.5) for L = 4."""
    return tuple(spacing * (i - (levels - 1) / 2) for i in range(levels))


@dataclass(frozen=True)
class GanConfig:
    """Everything that fixes the generator's and discriminator's architecture and losses.

    Attributes:
        bottleneck: F, the latent maps.
        levels: L, the quantization levels (2..65535).
        width: factor on every hidden channel count (1.0 = the paper).
        centres: the L fixed reconstruction levels, increasing (default: spacing 1, symmetric).
        sigma: softness of the soft quantizer (paper: 1).
        bottleneck_activation: ``none`` (bench's choice) or ``relu`` (the reference code's
            defect: negative centres unreachable; for comparison only).
        residual_blocks: residual units of the decoder (9).
        discriminator_scales: PatchGANs at successive 2x average-pooled copies (3).
        mse_weight, fm_weight, gan_weight: generator loss weights (reference code: 12, 10, 1).

    >>> GanConfig().nominal_bpp
    0.0625
    """

    bottleneck: int = 8
    levels: int = 4
    width: float = 1.0
    centres: tuple[float, ...] = ()
    sigma: float = 1.0
    bottleneck_activation: str = "none"
    residual_blocks: int = 9
    discriminator_scales: int = 3
    mse_weight: float = 12.0
    fm_weight: float = 10.0
    gan_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= int(self.bottleneck) <= 65535:
            raise ValueError(f"bottleneck must be 1..65535, got {self.bottleneck}")
        if not 2 <= int(self.levels) <= 65535:
            raise ValueError(f"levels must be 2..65535, got {self.levels}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")
        centres = tuple(float(c) for c in self.centres) or default_centres(int(self.levels))
        if len(centres) != self.levels:
            raise ValueError(f"{len(centres)} centres for {self.levels} levels")
        if any(b <= a for a, b in itertools.pairwise(centres)):
            raise ValueError(f"centres must increase strictly, got {centres}")
        if self.bottleneck_activation not in ("none", "relu"):
            raise ValueError(
                f"bottleneck_activation must be none or relu, got {self.bottleneck_activation!r}"
            )
        object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "bottleneck", int(self.bottleneck))
        object.__setattr__(self, "levels", int(self.levels))
        object.__setattr__(self, "width", float(self.width))

    @property
    def nominal_bpp(self) -> float:
        """F * ld(L) / d**2 bits per pixel (paper eq. 5), without header or padding."""
        return self.bottleneck * math.log2(self.levels) / DOWNSAMPLING**2

    def channels(self, count: int) -> int:
        """A hidden channel count of the paper scaled by ``width`` (at least 1)."""
        return max(1, round(count * self.width))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), the form hashed into the model identity."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GanConfig:
        """Rebuild from ``asdict`` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GanConfig entries {unknown}")
        values = dict(data)
        if "centres" in values:
            values["centres"] = tuple(values["centres"])
        return cls(**values)
