"""The GAN codec's networks and losses (nn.Modules, no I/O; torch is needed here only).

See ``bench.codecs.learned.gan`` for the architecture and every design choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.codecs.learned.base import weights_identity
from bench.codecs.learned.gan.config import GanConfig
from bench.types import Image

_Module = nn.Module

# --------------------------------------------------------------------------- networks


class InstanceNorm(nn.InstanceNorm2d):
    """Affine instance norm that, like TensorFlow's, also takes a 1x1 map (whose normalised
    value is 0, so the output is the bias) instead of refusing it in training mode."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] * x.shape[-2] == 1:
            return torch.zeros_like(x) + self.bias.view(1, -1, 1, 1)
        return super().forward(x)


def _norm(channels: int) -> nn.Module:
    return InstanceNorm(channels, affine=True)


class Quantizer(_Module):
    """Soft-to-hard scalar quantization onto fixed centres.

    Forward: the nearest centre (and its index 0..L-1); backward: the gradient of the soft
    assignment ``sum_l c_l softmax(-sigma |r - c_l|)`` (paper eq. 1-2).
    """

    centres: Tensor

    def __init__(self, centres: Sequence[float], sigma: float = 1.0) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.register_buffer(
            "centres", torch.tensor(list(centres), dtype=torch.float32), persistent=False
        )

    def indices(self, r: Tensor) -> Tensor:
        """The index of the nearest centre of each value (ties: the lower one), int64."""
        return (r.unsqueeze(-1) - self.centres).abs().argmin(dim=-1)

    def soft(self, r: Tensor) -> Tensor:
        """The differentiable soft assignment of eq. 2."""
        weights = torch.softmax(-self.sigma * (r.unsqueeze(-1) - self.centres).abs(), dim=-1)
        return (weights * self.centres).sum(dim=-1)

    def dequantize(self, indices: Tensor) -> Tensor:
        """The centres named by level indices."""
        return self.centres[indices]

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor]:
        idx = self.indices(r)
        hard = self.dequantize(idx)
        if not (torch.is_grad_enabled() and r.requires_grad):
            return hard, idx
        soft = self.soft(r)
        return hard + (soft - soft.detach()), idx  # value: exactly hard; gradient: soft's


class Encoder(_Module):
    """Six conv + instance-norm blocks (ReLU in the first five), down-sampling by 16.

    Padding as the reference code (generative-compression): reflection for the 7x7 and the
    last 3x3 conv, TensorFlow's "same" (one zero row and column after) for the stride-2 convs.
    """

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        c = config.channels
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, c(60), 7),
            _norm(c(60)),
            nn.ReLU(),
        ]
        for n_in, n_out in ((60, 120), (120, 240), (240, 480), (480, 960)):
            # TF "same" for a 3x3 stride-2 conv on an even size pads one row/column after
            layers += [
                nn.ZeroPad2d((0, 1, 0, 1)),
                nn.Conv2d(c(n_in), c(n_out), 3, 2),
                _norm(c(n_out)),
                nn.ReLU(),
            ]
        layers += [
            nn.Conv2d(c(960), config.bottleneck, 3, 1, 1, padding_mode="reflect"),
            _norm(config.bottleneck),
        ]
        if config.bottleneck_activation == "relu":
            layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # type: ignore[no-any-return]


class ResidualBlock(_Module):
    """x + IN(conv(ReLU(IN(conv(x))))), 3x3 convs with reflection padding (reference code)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode="reflect"),
            _norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode="reflect"),
            _norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


class Decoder(_Module):
    """Conv to 960 maps, nine residual blocks, four transposed convs, 7x7 conv, tanh."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        c = config.channels
        layers: list[nn.Module] = [
            nn.Conv2d(config.bottleneck, c(960), 3, 1, 1, padding_mode="reflect"),
            _norm(c(960)),
            nn.ReLU(),
        ]
        layers += [ResidualBlock(c(960)) for _ in range(config.residual_blocks)]
        for n_in, n_out in ((960, 480), (480, 240), (240, 120), (120, 60)):
            layers += [
                nn.ConvTranspose2d(c(n_in), c(n_out), 3, 2, 1, output_padding=1),
                _norm(c(n_out)),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c(60), 3, 7), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, latent: Tensor) -> Tensor:
        return self.layers(latent)  # type: ignore[no-any-return]


class GanGenerator(_Module):
    """Encoder, quantizer and decoder: ``forward(x) -> (x_hat, indices)``.

    ``x`` is (N, 3, H, W) in [-1, 1] with H and W multiples of 16; ``indices`` are
    (N, F, H/16, W/16) int64 level indices; ``x_hat`` is in [-1, 1].
    """

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = Quantizer(config.centres, config.sigma)
        self.decoder = Decoder(config)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        quantized, indices = self.quantizer(self.encoder(x))
        return self.decoder(quantized), indices

    def encode(self, x: Tensor) -> Tensor:
        """Level indices of an image batch: (N, F, H/16, W/16) int64."""
        return self.quantizer.indices(self.encoder(x))

    def decode(self, indices: Tensor) -> Tensor:
        """The reconstruction in [-1, 1] of level indices."""
        return self.decoder(self.quantizer.dequantize(indices))  # type: ignore[no-any-return]


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding: output size ceil(input / stride), the
    odd pixel of padding after (as the reference code's ``tf.layers.conv2d(padding='same')``)."""

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class PatchGan(_Module):
    """4x4 stride-2 convs 64-128-256-512, LeakyReLU 0.2, instance norm from the second conv
    on, then a 4x4 stride-1 conv to one logit map; TensorFlow "same" padding throughout, as
    the reference code."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        c = config.channels
        chans = [3, c(64), c(128), c(256), c(512)]
        stages: list[nn.Module] = []
        for i in range(4):
            stage: list[nn.Module] = [SameConv2d(chans[i], chans[i + 1], 4, 2)]
            if i > 0:
                stage.append(_norm(chans[i + 1]))
            stage.append(nn.LeakyReLU(0.2))
            stages.append(nn.Sequential(*stage))
        stages.append(SameConv2d(chans[-1], 1, 4, 1))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class MultiScaleDiscriminator(_Module):
    """PatchGANs on the image and on successively average-pooled copies.

    ``forward(x)`` returns, per scale, the intermediate feature maps with the logits last.
    """

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchGan(config) for _ in range(config.discriminator_scales))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        outputs = []
        for i, patch_gan in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            outputs.append(patch_gan(x))
        return outputs


# --------------------------------------------------------------------------- losses


def discriminator_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """Least-squares GAN loss of D, averaged over scales: mean((D(x)-1)^2) + mean(D(x_hat)^2).

    Pass ``fake`` computed on a detached ``x_hat``.
    """
    terms = [
        ((r[-1] - 1) ** 2).mean() + (f[-1] ** 2).mean() for r, f in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).mean()


def feature_matching_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """L1 between D's intermediate maps (logits excluded) on x and x_hat, averaged over layers
    and scales; the real image's maps are detached."""
    terms = [
        (f - r.detach()).abs().mean()
        for real_maps, fake_maps in zip(real, fake, strict=True)
        for r, f in zip(real_maps[:-1], fake_maps[:-1], strict=True)
    ]
    return torch.stack(terms).mean()


def generator_loss(
    config: GanConfig,
    x: Tensor,
    x_hat: Tensor,
    real: list[list[Tensor]],
    fake: list[list[Tensor]],
) -> dict[str, Tensor]:
    """The generator's loss and its parts: ``gan`` (least squares, mean((D(x_hat)-1)^2) over
    scales), ``feature_matching``, ``mse`` (on the [-1, 1] scale) and their weighted ``total``.

    ``real`` is D on x, ``fake`` D on the (not detached) x_hat.
    """
    gan = torch.stack([((f[-1] - 1) ** 2).mean() for f in fake]).mean()
    fm = feature_matching_loss(real, fake)
    mse = F.mse_loss(x_hat, x)
    total = config.gan_weight * gan + config.fm_weight * fm + config.mse_weight * mse
    return {"total": total, "gan": gan, "feature_matching": fm, "mse": mse}


def parameter_count(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- identity and pixels


def model_identity(config: GanConfig, generator: nn.Module) -> bytes:
    """8 bytes naming a model: SHA-256 of the config JSON and the generator's tensors."""
    return weights_identity(generator, config.to_json().encode())


def to_uint8(x_hat: Tensor) -> Tensor:
    """[-1, 1] floats to uint8, deterministically: ((x + 1) * 127.5).round().clamp(0, 255)."""
    return ((x_hat + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_network(image: Image) -> Tensor:
    """An (H, W, 3) uint8 image as a (1, 3, H, W) float tensor in [-1, 1] (x / 127.5 - 1)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
