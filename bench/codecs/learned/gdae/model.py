"""The GDAE networks (nn.Modules, no I/O): dense residual blocks, strip pooling, the encoder
and decoder of the spec's "DAE-d8", the quantiser (the GAN codec's) and the PatchGAN.

See ``bench.codecs.learned.gdae`` and ``../shared/specs/gan-dense-autoencoder-gradcam.md``
(section 1.2; the tables E0-E4 and D0-D4 are followed layer by layer).

Everything here works on [0, 1] tensors whose sides are multiples of 8 (``pad_replicate``
pads). The generator's ``forward`` gives the reconstruction of the *hard* (quantised) latent
(the straight-through quantiser's forward value is the centre itself), so ``decode(encode(x))``
equals ``forward(x)`` bit for bit in eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.codecs.learned.base import pad_amounts, weights_identity
from bench.codecs.learned.gan.config import default_centres
from bench.codecs.learned.gan.model import Quantizer

PAD_MULTIPLE = 8
"""The encoder down-samples 8 times (three stride-2 convolutions)."""

PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "channels": (64, 128, 128, 128),
        "growth": 32,
        "latent_channels": 16,
        "levels": 8,
        "discriminator_width": 64,
    },
    "cpu": {
        "channels": (32, 64, 64, 64),
        "growth": 16,
        "latent_channels": 16,
        "levels": 8,
        "discriminator_width": 32,
    },
}
"""``--preset``: ``full`` is the spec's size (generator 2,710,547 parameters, PatchGAN
2,765,633), ``cpu`` its CPU preset (generator 688,659, PatchGAN 694,689; not a published size:
the slides give no sizes at all). Both keep C = 16 and L = 8, which set the rate."""

_SIZE_FIELDS = ("channels", "growth", "latent_channels", "levels", "discriminator_width",
                "dense_layers", "discriminator_layers")  # fmt: skip


@dataclass(frozen=True)
class GdaeConfig:
    """What defines the networks.

    Attributes:
        channels: (c0, c1, c2, c3): widths at full, 1/2, 1/4 and 1/8 resolution.
        growth: g, the growth of the dense residual blocks' convolutions.
        latent_channels: C, the latent maps (the rate point: more maps, more bits).
        levels: L, the quantiser's fixed centres ``linspace(-(L-1)/2, (L-1)/2, L)``.
        sigma: softness of the soft quantiser's gradient.
        dense_layers: 3x3 convolutions per dense residual block (4).
        discriminator_width: nf of the PatchGAN's first layer.
        discriminator_layers: n_layers of the PatchGAN (3: the 70x70 one).
        preset: the preset it came from, or ``custom``.
    """

    channels: tuple[int, int, int, int] = (64, 128, 128, 128)
    growth: int = 32
    latent_channels: int = 16
    levels: int = 8
    sigma: float = 1.0
    dense_layers: int = 4
    discriminator_width: int = 64
    discriminator_layers: int = 3
    preset: str = "full"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) != 4:
            raise ValueError(f"channels {self.channels}: expected four widths (c0, c1, c2, c3)")
        for name in _SIZE_FIELDS:
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"{name} {values!r}: expected positive integers")
        if not 2 <= self.levels <= 256:
            raise ValueError(f"levels {self.levels}: expected 2..256 (indices fit a byte)")
        if self.latent_channels > 4096:
            raise ValueError(f"latent_channels {self.latent_channels}: at most 4096")
        if not self.sigma > 0:
            raise ValueError(f"sigma {self.sigma}: expected a positive value")

    @classmethod
    def from_preset(cls, preset: str, **changes: Any) -> GdaeConfig:
        """A preset with some fields changed (None leaves one as it is); a changed size is
        labelled ``custom``.

        Raises:
            ValueError: an unknown preset or field, or an invalid value.
        """
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
        unknown = sorted(set(changes) - {f.name for f in fields(cls)} - {"preset"})
        if unknown or "preset" in changes:
            raise ValueError(f"{', '.join(unknown or ['preset'])}: not a field a preset changes")
        base = {**{f.name: f.default for f in fields(cls) if f.name != "preset"}, **PRESETS[preset]}
        values = {**base, **{k: v for k, v in changes.items() if v is not None}}
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        same = all(values[k] == base[k] for k in _SIZE_FIELDS)
        return cls(**values, preset=preset if same else "custom")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GdaeConfig:
        """Rebuild from ``to_dict`` output; unknown keys are an error naming them."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown GdaeConfig entries {unknown}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["channels"] = list(self.channels)
        return values

    @property
    def centres(self) -> tuple[float, ...]:
        """The L fixed centres, spacing 1, symmetric: linspace(-3.5, 3.5, 8) for L = 8."""
        return default_centres(self.levels)

    @property
    def raw_bpp(self) -> float:
        """C * ld(L) / 64 bits per pixel before lossless coding (0.75 for C = 16, L = 8)."""
        import math

        return self.latent_channels * math.log2(self.levels) / PAD_MULTIPLE**2

    def describe(self) -> str:
        label = {"full": "the spec's size", "cpu": "the spec's CPU preset"}.get(self.preset, "")
        label = f"{label}; NOT a published size" if label else "NOT a published size"
        c0, c1, c2, c3 = self.channels
        return (
            f"GDAE channels {c0}/{c1}/{c2}/{c3}, growth {self.growth}, C={self.latent_channels}, "
            f"L={self.levels}, PatchGAN nf {self.discriminator_width} ({label})"
        )


# --------------------------------------------------------------------------- blocks


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class DenseResidualBlock(nn.Module):
    """``x + fuse(cat(x, y1, .., yn))`` with ``y_i = ReLU(conv3x3(cat(x, y1, .., y_{i-1})))``
    of ``growth`` channels each and ``fuse`` a biased 1x1 convolution back to ``channels``."""

    def __init__(self, channels: int, growth: int, layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_conv3(channels + i * growth, growth) for i in range(layers))
        self.fuse = nn.Conv2d(channels + layers * growth, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in self.layers:
            features.append(F.relu(conv(torch.cat(features, dim=1))))
        return x + self.fuse(torch.cat(features, dim=1))  # type: ignore[no-any-return]


class StripPooling(nn.Module):
    """Strip pooling (Hou et al. 2020): the H x 1 and 1 x W average strips through a bias-free
    (3x1) and (1x3) convolution with batch norm each, expanded back and summed, ReLU, a biased
    1x1 convolution and a sigmoid give a gate ``a``; the output is ``x * a``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.vertical = nn.Sequential(
            nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), bias=False),
            nn.BatchNorm2d(channels),
        )
        self.horizontal = nn.Sequential(
            nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), bias=False),
            nn.BatchNorm2d(channels),
        )
        self.gate = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        column = self.vertical(x.mean(dim=3, keepdim=True)).expand(-1, -1, height, width)
        row = self.horizontal(x.mean(dim=2, keepdim=True)).expand(-1, -1, height, width)
        return x * torch.sigmoid(self.gate(F.relu(column + row)))


class Encoder(nn.Module):
    """E0-E4: conv3x3 3->c0, ReLU; three stages of conv3x3 stride 2 + ReLU + dense residual
    block (strip pooling after the last); conv3x3 c3->C without activation."""

    def __init__(self, config: GdaeConfig) -> None:
        super().__init__()
        c0, c1, c2, c3 = config.channels
        g, n = config.growth, config.dense_layers
        stages: list[nn.Module] = [nn.Sequential(_conv3(3, c0), nn.ReLU())]
        for cin, cout in ((c0, c1), (c1, c2), (c2, c3)):
            stages.append(
                nn.Sequential(_conv3(cin, cout, 2), nn.ReLU(), DenseResidualBlock(cout, g, n))
            )
        stages.append(StripPooling(c3))
        stages.append(_conv3(c3, config.latent_channels))
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(x)  # type: ignore[no-any-return]


class Decoder(nn.Module):
    """D0-D4: conv3x3 C->c3, ReLU, strip pooling; three stages of dense residual block +
    transposed conv 4x4 stride 2 pad 1 + ReLU (c3->c2->c1->c0); conv3x3 c0->3, linear."""

    def __init__(self, config: GdaeConfig) -> None:
        super().__init__()
        c0, c1, c2, c3 = config.channels
        g, n = config.growth, config.dense_layers
        stages: list[nn.Module] = [
            nn.Sequential(_conv3(config.latent_channels, c3), nn.ReLU(), StripPooling(c3))
        ]
        for cin, cout in ((c3, c2), (c2, c1), (c1, c0)):
            stages.append(
                nn.Sequential(
                    DenseResidualBlock(cin, g, n),
                    nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1),
                    nn.ReLU(),
                )
            )
        stages.append(_conv3(c0, 3))
        self.stages = nn.Sequential(*stages)

    def forward(self, latent: Tensor) -> Tensor:
        return self.stages(latent)  # type: ignore[no-any-return]


class GdaeGenerator(nn.Module):
    """Encoder, quantiser, decoder: ``forward(x) -> (x_hat, indices)``.

    ``x`` is (N, 3, H, W) in [0, 1], H and W multiples of 8; ``indices`` are
    (N, C, H/8, W/8) int64 levels 0..L-1; ``x_hat`` is on the [0, 1] scale, not clamped.
    """

    def __init__(self, config: GdaeConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = Quantizer(config.centres, config.sigma)
        self.decoder = Decoder(config)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        quantized, indices = self.quantizer(self.encoder(x))
        return self.decoder(quantized), indices

    def encode(self, x: Tensor) -> Tensor:
        """The level indices of a batch: (N, C, H/8, W/8) int64."""
        return self.quantizer.indices(self.encoder(x))

    def decode(self, indices: Tensor) -> Tensor:
        """The reconstruction (on the [0, 1] scale, not clamped) of level indices."""
        return self.decoder(self.quantizer.dequantize(indices))  # type: ignore[no-any-return]


class PatchDiscriminator(nn.Module):
    """The unconditional 70x70 PatchGAN of pix2pix (n_layers = 3): 4x4 convolutions nf
    (stride 2, no norm), 2nf, 4nf (stride 2), 8nf (stride 1), each but the first bias-free with
    batch norm, LeakyReLU 0.2 after each, then a 4x4 convolution to one map.

    ``forward`` gives the patch *logits*; ``score`` the image's score in (0, 1), the mean of
    the patches' sigmoid. The losses use the logits (BCE with logits: the same values as BCE
    on the sigmoid, without its overflow).
    """

    def __init__(self, config: GdaeConfig) -> None:
        super().__init__()
        nf = config.discriminator_width
        layers: list[nn.Module] = [nn.Conv2d(3, nf, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = nf
        for n in range(1, config.discriminator_layers + 1):
            out = nf * min(2**n, 8)
            stride = 2 if n < config.discriminator_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2)]  # fmt: skip
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # type: ignore[no-any-return]

    def score(self, x: Tensor) -> Tensor:
        """Per image, the mean patch probability: (N,) in (0, 1)."""
        return torch.sigmoid(self(x)).flatten(1).mean(dim=1)


# --------------------------------------------------------------------------- helpers


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_identity(config: GdaeConfig, generator: nn.Module) -> bytes:
    """8 bytes naming a model: SHA-256 of its config and the generator's tensors."""
    import json

    return weights_identity(generator, json.dumps(config.to_dict(), sort_keys=True).encode())


def pad_replicate(
    x: Tensor, multiple: int = PAD_MULTIPLE
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Centred edge replication up to multiples of ``multiple``: the padded batch and the
    padding (top, bottom, left, right)."""
    padding = pad_amounts(int(x.shape[-2]), int(x.shape[-1]), multiple)
    top, bottom, left, right = padding
    if any(padding):
        x = F.pad(x, (left, right, top, bottom), mode="replicate")
    return x, padding


def to_uint8(x_hat: Tensor) -> Tensor:
    """[0, 1] floats to uint8: ``(x * 255).round()`` after clamping."""
    return x_hat.clamp(0, 1).mul(255).round().to(torch.uint8)


__all__ = [
    "PAD_MULTIPLE",
    "PRESETS",
    "Decoder",
    "DenseResidualBlock",
    "Encoder",
    "GdaeConfig",
    "GdaeGenerator",
    "PatchDiscriminator",
    "StripPooling",
    "model_identity",
    "pad_replicate",
    "parameter_count",
    "to_uint8",
]
