"""The TIC codec's networks: TransTIC's ``TIC_hp`` and the prompted variable-rate model.

``TicHyperprior`` is the fixed-rate transformer codec with a mean-scale hyperprior that
TransTIC releases (Lu et al., "Transformer-based Image Compression", DCC 2022; TransTIC's
``compressai/models/tic.py``, class ``TIC_hp``): ``g_a`` alternates strided convolutions
and residual Swin stages (depths 2, 4, 6, 2; heads 8, 8, 8, 16; window 8) down to M x H/16 x
W/16, ``h_a`` two more (depths 2, 2; heads 16; window 4) down to N x H/64 x W/64, ``h_s``
and ``g_s`` mirror them. Module and parameter names are TransTIC's, so its released
``base_codec_{1..4}.pth.tar`` (N=128, M=192) load strictly; the entropy bottleneck is
CompressAI 1.2.8's, and ``load_state_dict`` maps the older ``_matrix0``-style names the
way CompressAI's own loader does.

``TicPrompted`` is the variable-rate model of Chang & Yang (2024): the same transforms plus
TransTIC's prompt generator (``TIC_PromptModel_first2`` with ``Mask_Gen_Shallow``), whose
first convolution takes a fourth channel, the quality map. The generator's output feeds one
prompt map per block of the first two encoder stages (16 prompt tokens per 8 x 8 window);
the decoder has no prompts, so it needs neither the map nor q.

The rate trade-off (the paper's eq. 3): L = 255^2 * mean(lambda(q) * (x - x_hat)^2) + R, with
lambda a per-pixel function of the quality map (``lambda_chang`` or ``lambda_kao``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from torch import Tensor, nn

from bench.codecs.learned.tic.layers import (
    RSTB,
    conv,
    deconv,
    pad_to,
    stochastic_depth,
    trunc_normal_,
)

DEPTHS = (2, 4, 6, 2, 2, 2)
HEADS = (8, 8, 8, 16, 16, 16)
WINDOW = 8
MLP_RATIO = 2.0
DROP_PATH = 0.1
PAD_MULTIPLE = 256
"""TIC codes images whose sides are multiples of 256 (the paper pads to them)."""
LATENT_STRIDE = 16
"""Image pixels per position of ŷ along each side (four stride-2 stages)."""

LAMBDA_MIN, LAMBDA_MAX = 0.0018, 0.0932
"""Kao et al.'s range for ``lambda_kao`` (their eq. 4, the paper's eq. 4)."""

SIZES: dict[str, tuple[int, int, int]] = {
    "paper": (128, 192, 32),
    "small": (64, 96, 16),
    "tiny": (32, 48, 8),
}
"""``--size`` presets: (N, M, prompt-generator width). ``paper`` is the paper's (TransTIC's
qualities 1-4); the others are narrower models that train on a CPU, not the paper's size."""


def scaled_heads(n: int) -> tuple[int, ...]:
    """Attention heads for a model of width N: TIC's heads at N = 128 (and above, as TransTIC's
    N = 192 keeps them), fewer in proportion below, so a narrow model keeps the paper's head
    width (16 channels per head at N = 128) instead of heads of 2 to 4 channels, which learn
    poorly and cost as much softmax as the paper's model."""
    if n >= SIZES["paper"][0]:
        return HEADS
    return tuple(max(1, h * n // SIZES["paper"][0]) for h in HEADS)


HP_QUALITIES: dict[int, tuple[int, int]] = {
    **{q: (128, 192) for q in (1, 2, 3, 4)},
    **{q: (192, 320) for q in (5, 6, 7, 8)},
}
"""TIC_hp's (N, M) by quality."""


def lambda_chang(q: Tensor) -> Tensor:
    """lambda(q) of Chang & Yang, eq. 7, as bench reads it.

    The printed formula is garbled; its text fixes two facts: the curve is exponential and
    starts at (10 * 255^2)^-1 when q = 0, and it replaces Kao et al.'s curve (lambda_max
    0.0932) without its steep rise above q = 0.9. The reading that fits the surviving
    glyphs (1/10, e^{4q}, e^4, 255^2) and both facts is

        lambda(q) = (1/10) * ((e^{4q} - 1) / (e^4 - 1) + 1 / 255^2),

    which gives (10 * 255^2)^-1 = 1.54e-6 at q = 0 and 0.1 + 1.54e-6 at q = 1 (next to Kao's
    0.0932).
    """
    return 0.1 * (torch.expm1(4.0 * q) / math.expm1(4.0) + 1.0 / 255.0**2)


def lambda_kao(q: Tensor, low: float = LAMBDA_MIN, high: float = LAMBDA_MAX) -> Tensor:
    """lambda(q) of Kao et al. (eq. 4): exp((log high - log low) * q + log low)."""
    return torch.exp((math.log(high) - math.log(low)) * q + math.log(low))


LAMBDA_CURVES = {"chang": lambda_chang, "kao": lambda_kao}


@dataclass(frozen=True)
class TicConfig:
    """What defines a TIC network: widths, whether it is prompted, and its rate curve.

    Attributes:
        n, m: hyperprior and latent channels (TransTIC's N and M).
        prompted: the variable-rate model (with the prompt generator) or TIC_hp.
        prompt_channels: the prompt generator's width (TransTIC: 32).
        size: the preset name, or ``custom``; only ``paper`` is the paper's size.
        lambda_curve: ``chang`` (eq. 7) or ``kao`` (eq. 4) for training.
        heads: attention heads per stage (g_a1, g_a3, g_a5, g_a7, h_a1, h_a3; the decoder
            mirrors them); TIC's by default, ``scaled_heads(n)`` in the presets.
    """

    n: int = 128
    m: int = 192
    prompted: bool = True
    prompt_channels: int = 32
    size: str = "paper"
    lambda_curve: str = "chang"
    heads: tuple[int, ...] = HEADS

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        if len(self.heads) != len(HEADS) or min(self.heads) < 1:
            raise ValueError(f"heads {self.heads}: expected {len(HEADS)} positive counts")
        check_heads(self.n, self.m, self.heads)
        if self.lambda_curve not in LAMBDA_CURVES:
            raise ValueError(f"lambda_curve must be one of {', '.join(LAMBDA_CURVES)}")

    @classmethod
    def preset(cls, size: str, **changes: Any) -> TicConfig:
        if size not in SIZES:
            raise ValueError(f"size {size!r}: expected one of {', '.join(SIZES)}")
        n, m, prompt = SIZES[size]
        fields = {"heads": scaled_heads(n), **changes}
        return cls(n=n, m=m, prompt_channels=prompt, size=size, **fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TicConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_paper_size(self) -> bool:
        return (self.n, self.m, self.prompt_channels) == SIZES["paper"] and self.heads == HEADS

    def describe(self) -> str:
        label = "the paper's size" if self.is_paper_size else "NOT the paper's size"
        heads = "" if self.heads == HEADS else f", heads {list(self.heads)}"
        return f"N={self.n}, M={self.m}, prompt width {self.prompt_channels}{heads} ({label})"

    def lambdas(self, q: Tensor) -> Tensor:
        return LAMBDA_CURVES[self.lambda_curve](q)


def check_heads(n: int, m: int, heads: tuple[int, ...]) -> None:
    """Every stage's width must split evenly into its heads (g_a7 and g_s0 are M wide)."""
    for index, count in enumerate(heads):
        width, what = (m, "M") if index == 3 else (n, "N")
        if width % count:
            raise ValueError(f"{what}={width} does not split into {count} heads (stage {index})")


def _stage(
    dim: int,
    resolution: tuple[int, int],
    index: int,
    dpr: list[float],
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: int,
    prompt_down: int = 0,
) -> RSTB:
    start = sum(depths[:index])
    return RSTB(
        dim,
        resolution,
        depths[index],
        heads[index],
        window,
        MLP_RATIO,
        dpr[start : start + depths[index]],
        prompt_down,
    )


class TicHyperprior(CompressionModel):
    """TransTIC's ``TIC_hp`` (see the module docstring): ``forward(x)`` on [0, 1] images
    whose sides are multiples of 256 gives ``x_hat`` and the likelihoods of y and z.

    Args:
        n, m: channels (128, 192 for qualities 1-4; 192, 320 for 5-8).
        input_resolution: the size the shifted-window masks are built for (TransTIC: 256).
        heads: attention heads per stage (TIC's by default; see ``TicConfig.heads``).
    """

    def __init__(
        self,
        n: int = 128,
        m: int = 192,
        input_resolution: tuple[int, int] = (256, 256),
        heads: tuple[int, ...] = HEADS,
    ) -> None:
        super().__init__()
        check_heads(n, m, heads)
        self.n, self.m = n, m
        heads = tuple(heads)
        h, w = input_resolution
        dpr = stochastic_depth(DROP_PATH, DEPTHS)
        res = [(h // 2**k, w // 2**k) for k in range(7)]
        self.g_a0 = conv(3, n, 5, 2)
        self.g_a1 = _stage(n, res[1], 0, dpr, DEPTHS, heads, WINDOW, self._prompt_down(0))
        self.g_a2 = conv(n, n, 3, 2)
        self.g_a3 = _stage(n, res[2], 1, dpr, DEPTHS, heads, WINDOW, self._prompt_down(1))
        self.g_a4 = conv(n, n, 3, 2)
        self.g_a5 = _stage(n, res[3], 2, dpr, DEPTHS, heads, WINDOW)
        self.g_a6 = conv(n, m, 3, 2)
        self.g_a7 = _stage(m, res[4], 3, dpr, DEPTHS, heads, WINDOW)
        self.h_a0 = conv(m, n, 3, 2)
        self.h_a1 = _stage(n, res[5], 4, dpr, DEPTHS, heads, WINDOW // 2)
        self.h_a2 = conv(n, n, 3, 2)
        self.h_a3 = _stage(n, res[6], 5, dpr, DEPTHS, heads, WINDOW // 2)
        back, back_heads = DEPTHS[::-1], heads[::-1]  # TransTIC indexes the decoder this way
        self.h_s0 = _stage(n, res[6], 0, dpr, back, back_heads, WINDOW // 2)
        self.h_s1 = deconv(n, n, 3, 2)
        self.h_s2 = _stage(n, res[5], 1, dpr, back, back_heads, WINDOW // 2)
        self.h_s3 = deconv(n, m * 2, 3, 2)
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.gaussian_conditional = GaussianConditional(None)
        self.g_s0 = _stage(m, res[4], 2, dpr, back, back_heads, WINDOW)
        self.g_s1 = deconv(m, n, 3, 2)
        self.g_s2 = _stage(n, res[3], 3, dpr, back, back_heads, WINDOW)
        self.g_s3 = deconv(n, n, 3, 2)
        self.g_s4 = _stage(n, res[2], 4, dpr, back, back_heads, WINDOW)
        self.g_s5 = deconv(n, n, 3, 2)
        self.g_s6 = _stage(n, res[1], 5, dpr, back, back_heads, WINDOW)
        self.g_s7 = deconv(n, 3, 5, 2)
        self.apply(_init_weights)

    def _prompt_down(self, stage: int) -> int:
        """The prompt maps' down-sampling in encoder stage 0 or 1 (0: no prompts)."""
        return 0

    # ---- transforms

    def g_a(self, x: Tensor, quality_map: Tensor | None = None) -> Tensor:
        h, w = x.shape[-2:]
        x = self.g_a1(self.g_a0(x), (h // 2, w // 2))
        x = self.g_a3(self.g_a2(x), (h // 4, w // 4))
        x = self.g_a5(self.g_a4(x), (h // 8, w // 8))
        return self.g_a7(self.g_a6(x), (h // 16, w // 16))  # type: ignore[no-any-return]

    def h_a(self, y: Tensor) -> Tensor:
        h, w = y.shape[-2:]
        z = self.h_a1(self.h_a0(y), (h // 2, w // 2))
        return self.h_a3(self.h_a2(z), (h // 4, w // 4))  # type: ignore[no-any-return]

    def h_s(self, z_hat: Tensor) -> Tensor:
        h, w = z_hat.shape[-2:]
        p = self.h_s1(self.h_s0(z_hat, (h, w)))
        return self.h_s3(self.h_s2(p, (h * 2, w * 2)))  # type: ignore[no-any-return]

    def g_s(self, y_hat: Tensor) -> Tensor:
        h, w = y_hat.shape[-2:]
        x = self.g_s1(self.g_s0(y_hat, (h, w)))
        x = self.g_s3(self.g_s2(x, (h * 2, w * 2)))
        x = self.g_s5(self.g_s4(x, (h * 4, w * 4)))
        return self.g_s7(self.g_s6(x, (h * 8, w * 8)))  # type: ignore[no-any-return]

    def forward(self, x: Tensor, quality_map: Tensor | None = None) -> dict[str, Any]:
        """Training/evaluation pass: noisy (training) or rounded (eval) latents."""
        y = self.g_a(x, quality_map)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # ---- real entropy coding (CompressAI's rANS coders)

    def compress(self, x: Tensor, quality_map: Tensor | None = None) -> dict[str, Any]:
        """Entropy-code a padded batch: strings of y and z, z's shape, and the bits the
        model's likelihoods estimate (on the same rounded latents)."""
        y = self.g_a(x, quality_map)
        z = self.h_a(y)
        if not (torch.isfinite(y).all() and torch.isfinite(z).all()):
            raise ValueError("the encoder gave non-finite latents (broken weights?)")
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        _, z_likelihoods = self.entropy_bottleneck(z, training=False)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means, training=False)
        bits = [
            float(-(torch.log2(y_likelihoods[i]).sum() + torch.log2(z_likelihoods[i]).sum()))
            for i in range(x.shape[0])
        ]
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:]), "bits": bits}

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int]) -> Tensor:
        """The reconstruction (unclamped) of strings made by ``compress``."""
        return self.g_s(self.decompress_latent(strings, shape))  # type: ignore[no-any-return]

    def decompress_latent(self, strings: list[list[bytes]], shape: tuple[int, int]) -> Tensor:
        """The quantised latent ŷ (M × h × w) of strings made by ``compress``: entropy
        decoding and the hyper-synthesis only, without the synthesis transform."""
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales, means = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales)
        return self.gaussian_conditional.decompress(  # type: ignore[no-any-return]
            strings[0], indexes, means=means
        )

    def quantised_latent(self, x: Tensor, quality_map: Tensor | None = None) -> Tensor:
        """The encoder's own ŷ of a padded batch (rounded around the predicted means), as
        ``compress`` codes it."""
        y = self.g_a(x, quality_map)
        z = self.h_a(y)
        z_hat = self.entropy_bottleneck.decompress(
            self.entropy_bottleneck.compress(z), z.shape[-2:]
        )
        _, means = self.h_s(z_hat).chunk(2, 1)
        return self.gaussian_conditional.quantize(  # type: ignore[no-any-return]
            y, "dequantize", means
        )

    def entropy_tables_empty(self) -> bool:
        """Whether ``update()`` has not built the coders' tables (a training checkpoint)."""
        return bool(
            self.entropy_bottleneck._offset.numel() == 0  # type: ignore[operator]
            or self.gaussian_conditional._offset.numel() == 0  # type: ignore[operator]
        )

    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}


class PromptGenerator(nn.Module):
    """TransTIC's ``Mask_Gen_Shallow``: a small U-Net (two down, two up levels, batch norm)
    from the image (and, for the variable-rate model, the quality map) to ``out_channels``
    maps at half resolution (its classifier has stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, mid: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, convs: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(convs):
                layers += [
                    nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
            return nn.Sequential(*layers)

        self.down1 = block(in_channels, mid, 2)
        self.down1_pool = nn.Sequential(nn.MaxPool2d(2, 2))
        self.down2 = block(mid, mid * 2, 2)
        self.down2_pool = nn.Sequential(nn.MaxPool2d(2, 2))
        self.down3 = block(mid * 2, mid * 4, 2)
        self.upsample2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        )
        self.up2 = block(mid * 4 + mid * 2, mid * 2, 3)
        self.upsample1 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        )
        self.up1 = block(mid * 2 + mid, mid, 3)
        self.classifier = nn.Sequential(nn.Conv2d(mid, out_channels, 3, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        d1 = self.down1(x)
        d2 = self.down2(self.down1_pool(d1))
        d3 = self.down3(self.down2_pool(d2))
        u2 = self.up2(torch.cat([d2, self.upsample2(d3)], 1))
        u1 = self.up1(torch.cat([d1, self.upsample1(u2)], 1))
        return self.classifier(u1)  # type: ignore[no-any-return]


PROMPT_DOWN = 2
"""Prompt maps are at half the resolution of their stage: 4 x 4 = 16 prompts per 8 x 8 window."""


class TicPrompted(TicHyperprior):
    """The variable-rate TIC of Chang & Yang: ``TicHyperprior`` plus the prompt generator on
    (RGB, quality map), prompting the first two encoder stages (``forward(x, quality_map)``
    with the map as (B, 1, H, W) in [0, 1])."""

    def __init__(
        self,
        n: int = 128,
        m: int = 192,
        prompt_channels: int = 32,
        input_resolution: tuple[int, int] = (256, 256),
        heads: tuple[int, ...] = HEADS,
    ) -> None:
        super().__init__(n, m, input_resolution, heads)
        self.g_a0_prompt = PromptGenerator(4, n, prompt_channels)
        self.g_a0_prompt_layers = nn.ModuleList(
            conv(n, n, 3, PROMPT_DOWN) for _ in range(DEPTHS[0])
        )
        self.g_a2_prompt = conv(n, n, 3, 2)
        self.g_a2_prompt_layers = nn.ModuleList(
            conv(n, n, 3, PROMPT_DOWN) for _ in range(DEPTHS[1])
        )
        for module in (self.g_a0_prompt, self.g_a0_prompt_layers, self.g_a2_prompt_layers):
            module.apply(_init_weights)

    def _prompt_down(self, stage: int) -> int:
        return PROMPT_DOWN

    def g_a(self, x: Tensor, quality_map: Tensor | None = None) -> Tensor:
        if quality_map is None:
            raise ValueError("the variable-rate TIC needs a quality map (B, 1, H, W) in [0, 1]")
        h, w = x.shape[-2:]
        m = self.g_a0_prompt(torch.cat([x, quality_map], dim=1))
        prompts = [layer(m) for layer in self.g_a0_prompt_layers]
        y = self.g_a1(self.g_a0(x), (h // 2, w // 2), prompts)
        m = self.g_a2_prompt(m)
        prompts = [layer(m) for layer in self.g_a2_prompt_layers]
        y = self.g_a3(self.g_a2(y), (h // 4, w // 4), prompts)
        y = self.g_a5(self.g_a4(y), (h // 8, w // 8))
        return self.g_a7(self.g_a6(y), (h // 16, w // 16))  # type: ignore[no-any-return]


def _init_weights(module: nn.Module) -> None:
    """TIC's initialisation: truncated normal (std 0.02) linear layers, unit layer norms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_model(config: TicConfig) -> TicHyperprior:
    """The network a config describes."""
    if config.prompted:
        return TicPrompted(config.n, config.m, config.prompt_channels, heads=config.heads)
    return TicHyperprior(config.n, config.m, heads=config.heads)


def rate_distortion_loss(
    config: TicConfig,
    x: Tensor,
    out: Mapping[str, Any],
    quality_map: Tensor,
    balanced: bool = False,
) -> dict[str, Tensor]:
    """The paper's eq. 3: 255^2 * mean over pixels of lambda(q) * MSE over channels, plus
    the rate in bits per pixel from the likelihoods; ``loss`` is its value over the batch.

    With ``balanced``, ``objective`` (what to minimise) is instead the mean over the images of
    each image's eq.-3 loss divided by its own detached value: the gradient of the mean of
    their logarithms. Every image's optimum is the same as under eq. 3 (each is its own
    lambda's rate-distortion problem), but each image of the batch moves the shared weights
    alike; under eq. 3 the images of high q, whose loss is up to 65,000 times larger (the
    paper's lambda), outweigh the others. Without it, ``objective`` is ``loss``.
    """
    pixels = x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(v).flatten(1).sum(dim=1) for v in out["likelihoods"].values())
    bpp_each = bits / pixels
    squared = (out["x_hat"] - x).pow(2).mean(dim=1, keepdim=True)
    distortion_each = 255.0**2 * (config.lambdas(quality_map) * squared).flatten(1).mean(dim=1)
    each = distortion_each + bpp_each
    loss = each.mean()
    objective = (each / each.detach()).mean() if balanced else loss
    return {
        "loss": loss,
        "objective": objective,
        "bpp": bpp_each.mean(),  # type: ignore[union-attr]
        "mse": squared.mean(),
        "distortion": distortion_each.mean(),
    }


__all__ = [
    "HP_QUALITIES",
    "PAD_MULTIPLE",
    "SIZES",
    "PromptGenerator",
    "TicConfig",
    "TicHyperprior",
    "TicPrompted",
    "build_model",
    "lambda_chang",
    "lambda_kao",
    "pad_to",
    "rate_distortion_loss",
    "scaled_heads",
]
