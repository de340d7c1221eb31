"""The importance-map autoencoder's networks, quantisers and masking (nn.Modules, no I/O).

See ``bench.codecs.learned.impmap`` and ``../shared/specs/importance-map-autoencoder.md``
(sections 1.2-1.5; the section numbers below are the spec's).

Everything here works on padded [0, 1] tensors whose sides are multiples of 8; ``to_network``,
``pad_replicate`` and ``to_uint8`` convert from and to images. The hard path (``indices``,
``importance_map``, ``mask_indices``, ``decode_indices``) is what the codec runs; ``forward``
adds the soft-to-hard straight-through surrogates training needs, whose forward values are the
hard ones exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bench.codecs.learned.base import pad_amounts
from bench.types import Image

PAD_MULTIPLE = 8
"""The encoder down-samples 8 times (three stride-2 convolutions)."""

BN_MOMENTUM = 0.1
BN_EPS = 1e-5
"""Batch norm as slim's (decay 0.9, eps 1e-5), in PyTorch's terms (spec 1.2)."""

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "n": 128,
        "groups": 5,
        "blocks_per_group": 3,
        "importance_width": 64,
        "importance_blocks": 3,
        "channels": 16,
        "bits": 4,
    },
    "cpu": {
        "n": 64,
        "groups": 1,
        "blocks_per_group": 3,
        "importance_width": 32,
        "importance_blocks": 2,
        "channels": 16,
        "bits": 4,
    },
}
"""``--preset``: ``paper`` is Mentzer's CVPR autoencoder as the spec reconstructs the paper's
(10,183,267 parameters), ``cpu`` a narrow, shallow one that trains on a CPU (780,547
parameters; not a published size). Both keep C = 16 and B = 4, which define the rate."""

_SIZE_FIELDS = tuple(PRESETS["paper"])


@dataclass(frozen=True)
class ImpMapConfig:
    """What defines a network.

    Attributes:
        n: width of the residual trunk; the first (last) convolution has n/2 channels.
        groups: groups of residual blocks in each trunk (each group has its own skip).
        blocks_per_group: residual blocks per group; one more, without ReLU, ends the trunk.
        importance_width: width of the importance net.
        importance_blocks: residual blocks (without batch norm) of the importance net.
        channels: feature maps of the latent (C).
        bits: bits of the quantised latent (B): indices 0..2^B-1, importance levels 1..B.
        soft_sigma: sigma0 of the soft quantisers: the j-bit one uses sigma0 * 4^j.
        importance_sigma: sigma of the soft importance levels.
        preset: the preset it came from, or ``custom``.
    """

    n: int = 128
    groups: int = 5
    blocks_per_group: int = 3
    importance_width: int = 64
    importance_blocks: int = 3
    channels: int = 16
    bits: int = 4
    soft_sigma: float = 1.0
    importance_sigma: float = 1.0
    preset: str = "paper"

    def __post_init__(self) -> None:
        for name in _SIZE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} {value!r}: expected an integer")
        if self.n < 2 or self.n % 2:
            raise ValueError(f"n {self.n}: expected an even width of at least 2 (first conv n/2)")
        if self.groups < 0 or self.blocks_per_group < 1:
            raise ValueError(
                f"groups {self.groups}, blocks_per_group {self.blocks_per_group}: expected "
                "groups >= 0 and blocks_per_group >= 1"
            )
        if self.importance_width < 1 or self.importance_blocks < 0:
            raise ValueError(
                f"importance_width {self.importance_width}, importance_blocks "
                f"{self.importance_blocks}: expected width >= 1 and blocks >= 0"
            )
        if self.channels < 1:
            raise ValueError(f"channels {self.channels}: expected at least 1")
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits {self.bits}: expected 1..8 (indices fit a byte)")
        if not (self.soft_sigma > 0 and self.importance_sigma > 0):
            raise ValueError(
                f"soft_sigma {self.soft_sigma}, importance_sigma {self.importance_sigma}: "
                "expected positive values"
            )

    @classmethod
    def from_preset(cls, preset: str, **changes: Any) -> ImpMapConfig:
        """A preset with some fields changed (None leaves one as it is); a changed size is
        labelled ``custom``, changed soft-quantiser sigmas keep the label.

        Raises:
            ValueError: an unknown preset or field, or an invalid value.
        """
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
        unknown = sorted(set(changes) - {f.name for f in fields(cls)} - {"preset"})
        if unknown or "preset" in changes:
            bad = unknown or ["preset"]
            raise ValueError(f"{', '.join(bad)}: not a field that a preset can change")
        values = {**PRESETS[preset], **{k: v for k, v in changes.items() if v is not None}}
        same = all(values[k] == PRESETS[preset][k] for k in _SIZE_FIELDS)
        return cls(**values, preset=preset if same else "custom")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImpMapConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def levels(self) -> int:
        """Quantisation levels of the latent, 2^B."""
        return 1 << self.bits

    def describe(self) -> str:
        label = "the paper's size" if self.preset == "paper" else "NOT a published size"
        return (
            f"importance-map autoencoder, n={self.n} (first conv {self.n // 2}), "
            f"{self.groups}x{self.blocks_per_group}+1 residual blocks per side, importance net "
            f"width {self.importance_width} with {self.importance_blocks} blocks, "
            f"C={self.channels}, B={self.bits} ({label})"
        )


# --------------------------------------------------------------------------- layers


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)


def _up(cin: int, cout: int, kernel: int, bias: bool = False) -> nn.ConvTranspose2d:
    """A stride-2 transposed convolution that doubles the size exactly."""
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=2, padding=kernel // 2, output_padding=1, bias=bias
    )


class ResidualBlock(nn.Module):
    """``x + BN(conv3(act(BN(conv3(x)))))``: no bias, no ReLU after the addition; ``act`` is
    ReLU, or nothing in the trunk's final block (Mentzer's ``res_block_enc_final``)."""

    def __init__(self, channels: int, activation: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3),
            _batch_norm(channels),
            nn.ReLU() if activation else nn.Identity(),
            _conv(channels, channels, 3),
            _batch_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


class ResidualTrunk(nn.Module):
    """``groups`` groups of ``blocks_per_group`` residual blocks, each group wrapped by an
    identity skip, then one block without ReLU, plus the trunk's input (the long skip)."""

    def __init__(self, channels: int, groups: int, blocks_per_group: int) -> None:
        super().__init__()
        self.groups = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks_per_group)))
            for _ in range(groups)
        )
        self.final = ResidualBlock(channels, activation=False)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for group in self.groups:
            y = y + group(y)
        return x + self.final(y)  # type: ignore[no-any-return]


class Encoder(nn.Module):
    """Spec 1.2: conv5x5/2 n/2, BN, ReLU; conv5x5/2 n, BN, ReLU; residual trunk; conv5x5/2 C
    (biased); sigmoid. (N, 3, H, W) in [0, 1] to (N, C, H/8, W/8) in [0, 1]."""

    def __init__(self, config: ImpMapConfig) -> None:
        super().__init__()
        n = config.n
        self.head = nn.Sequential(
            _conv(3, n // 2, 5, stride=2),
            _batch_norm(n // 2),
            nn.ReLU(),
            _conv(n // 2, n, 5, stride=2),
            _batch_norm(n),
            nn.ReLU(),
        )
        self.trunk = ResidualTrunk(n, config.groups, config.blocks_per_group)
        self.tail = _conv(n, config.channels, 5, stride=2, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.tail(self.trunk(self.head(x))))


class Decoder(nn.Module):
    """Spec 1.5: convT3x3/2 C->n, BN, ReLU; residual trunk; convT5x5/2 n->n/2, BN, ReLU;
    convT5x5/2 n/2->3 (biased). The output is on the [0, 1] scale, not clamped."""

    def __init__(self, config: ImpMapConfig) -> None:
        super().__init__()
        n = config.n
        self.head = nn.Sequential(_up(config.channels, n, 3), _batch_norm(n), nn.ReLU())
        self.trunk = ResidualTrunk(n, config.groups, config.blocks_per_group)
        self.tail = nn.Sequential(
            _up(n, n // 2, 5),
            _batch_norm(n // 2),
            nn.ReLU(),
            _up(n // 2, 3, 5, bias=True),
        )

    def forward(self, q: Tensor) -> Tensor:
        return self.tail(self.trunk(self.head(q)))  # type: ignore[no-any-return]


class PlainResidualBlock(nn.Module):
    """``x + conv3(ReLU(conv3(x)))`` with biases and no batch norm (the importance net's)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3, bias=True),
            nn.ReLU(),
            _conv(channels, channels, 3, bias=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


class ImportanceNet(nn.Module):
    """Spec 1.4: conv3x3 C->w, ReLU; residual blocks; conv3x3 w->C; ``p = 1 + (B-1)
    sigmoid``. The continuous importance p in [1, B], one per latent element."""

    def __init__(self, config: ImpMapConfig) -> None:
        super().__init__()
        c, w = config.channels, config.importance_width
        self.bits = config.bits
        self.layers = nn.Sequential(
            _conv(c, w, 3, bias=True),
            nn.ReLU(),
            *(PlainResidualBlock(w) for _ in range(config.importance_blocks)),
            _conv(w, c, 3, bias=True),
        )

    def forward(self, e: Tensor) -> Tensor:
        return 1 + (self.bits - 1) * torch.sigmoid(self.layers(e))


# --------------------------------------------------------------------------- quantisation


class Quantized(NamedTuple):
    """What ``MaskedQuantizer`` gives: ``q`` the masked value the decoder reads (forward value
    exactly ``k_m / 2^B``), ``k`` the B-bit indices, ``m`` the importance map (int64, 1..B),
    ``k_m`` the masked indices, ``levels`` m as floats (forward value exactly m; its gradient
    is the soft levels' when the importance is trained)."""

    q: Tensor
    k: Tensor
    m: Tensor
    k_m: Tensor
    levels: Tensor


class MaskedQuantizer(nn.Module):
    """B-bit truncating quantiser with per-element bit-depth masking (spec 1.3-1.4).

    Hard: ``k = min(floor(2^B e), 2^B - 1)``, ``m = round(p)``, ``k_m = (k >> (B - m)) <<
    (B - m)``, value ``k_m / 2^B`` (= ``min(floor(2^m e), 2^m - 1) / 2^m``). Soft (training):
    the j-bit quantiser ``Q_j(e) = sum_i c_i softmax_i(-sigma0 4^j (e - 2^-(j+1) - c_i)^2)``
    over ``c_i = i / 2^j``, level weights ``w_j = softmax_j(-sigma_m (p - j)^2)`` over j = 1..B,
    masked value ``sum_j w_j Q_j(e)`` and levels ``sum_j w_j j``. Each is used straight-through,
    ``hard + (soft - soft.detach())``: the forward value is the hard one exactly, the gradient
    the soft one's.
    """

    def __init__(self, bits: int, soft_sigma: float = 1.0, importance_sigma: float = 1.0) -> None:
        super().__init__()
        self.bits = bits
        self.soft_sigma = float(soft_sigma)
        self.importance_sigma = float(importance_sigma)

    def indices(self, e: Tensor) -> Tensor:
        """The B-bit indices of values in [0, 1]: int64 in 0..2^B-1."""
        levels = 1 << self.bits
        return torch.floor(e.detach() * levels).clamp(0, levels - 1).long()

    def importance_map(self, p: Tensor) -> Tensor:
        """The hard importance map of a continuous importance: ``round(p)``, int64 in 1..B."""
        return torch.round(p.detach()).clamp(1, self.bits).long()

    def mask(self, k: Tensor, m: Tensor) -> Tensor:
        """Keep the m most significant of the B bits of each index."""
        drop = self.bits - m
        return (k >> drop) << drop

    def dequantize(self, k_m: Tensor) -> Tensor:
        """The values ``k_m / 2^B`` of (masked) indices, float32."""
        return k_m.float() / (1 << self.bits)

    def soft(self, e: Tensor, depth: int) -> Tensor:
        """The soft ``depth``-bit quantiser, approximating ``floor(2^depth e) / 2^depth``."""
        levels = 1 << depth
        centres = torch.arange(levels, dtype=e.dtype, device=e.device) / levels
        distance = (e - 0.5 / levels).unsqueeze(-1) - centres
        weights = torch.softmax(-self.soft_sigma * float(levels * levels) * distance**2, dim=-1)
        return (weights * centres).sum(dim=-1)

    def level_weights(self, p: Tensor) -> Tensor:
        """Soft weights over the levels 1..B of a continuous importance (last dimension B)."""
        levels = torch.arange(1, self.bits + 1, dtype=p.dtype, device=p.device)
        return torch.softmax(-self.importance_sigma * (p.unsqueeze(-1) - levels) ** 2, dim=-1)

    def forward(self, e: Tensor, p: Tensor | None = None) -> Quantized:
        """Quantise and mask ``e`` by the importance ``p`` (None: every level is B, plain
        B-bit quantisation)."""
        k = self.indices(e)
        m = torch.full_like(k, self.bits) if p is None else self.importance_map(p)
        k_m = self.mask(k, m)
        q = self.dequantize(k_m)
        levels = m.to(e.dtype)
        if not torch.is_grad_enabled():
            return Quantized(q, k, m, k_m, levels)
        if p is None:
            if e.requires_grad:
                soft = self.soft(e, self.bits)
                q = q + (soft - soft.detach())
            return Quantized(q, k, m, k_m, levels)
        if not (e.requires_grad or p.requires_grad):
            return Quantized(q, k, m, k_m, levels)
        weights = self.level_weights(p)
        soft_q = sum(
            (weights[..., j - 1] * self.soft(e, j) for j in range(1, self.bits + 1)),
            start=torch.zeros_like(e),
        )
        depths = torch.arange(1, self.bits + 1, dtype=e.dtype, device=e.device)
        soft_levels = (weights * depths).sum(dim=-1)
        q = q + (soft_q - soft_q.detach())
        levels = levels + (soft_levels - soft_levels.detach())
        return Quantized(q, k, m, k_m, levels)


# --------------------------------------------------------------------------- the network


class ImpMapNetwork(nn.Module):
    """Encoder, importance net, masked quantiser and decoder.

    Every method takes padded [0, 1] tensors (N, 3, H, W) with H and W multiples of 8; the
    latent is (N, C, H/8, W/8). ``forward`` is the training (and reference) pass, the other
    methods are the hard path the codec runs: ``decode_indices(mask_indices(indices(e),
    importance_map(e)))`` equals ``forward(x)["x_hat"]`` in eval mode bit for bit.
    """

    def __init__(self, config: ImpMapConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.importance_net = ImportanceNet(config)
        self.quantizer = MaskedQuantizer(config.bits, config.soft_sigma, config.importance_sigma)
        self.decoder = Decoder(config)

    def encode(self, x: Tensor) -> Tensor:
        """The latent e in [0, 1] of a padded [0, 1] batch.

        Raises:
            ValueError: not an (N, 3, H, W) batch with H and W multiples of 8.
        """
        if x.dim() != 4 or x.shape[1] != 3 or any(side % PAD_MULTIPLE for side in x.shape[-2:]):
            raise ValueError(
                f"impmap: input of shape {tuple(x.shape)}: expected (N, 3, H, W) with H and W "
                f"multiples of {PAD_MULTIPLE} (pad with pad_replicate)"
            )
        return self.encoder(x)  # type: ignore[no-any-return]

    def importance(self, e: Tensor) -> Tensor:
        """The continuous importance p in [1, B] of a latent."""
        return self.importance_net(e)  # type: ignore[no-any-return]

    def indices(self, e: Tensor) -> Tensor:
        """The B-bit indices k (int64, 0..2^B-1) of a latent."""
        return self.quantizer.indices(e)

    def importance_map(self, e: Tensor) -> Tensor:
        """The importance map m (int64, 1..B) of a latent: how many bits of k are kept."""
        return self.quantizer.importance_map(self.importance(e))

    def mask_indices(self, k: Tensor, m: Tensor) -> Tensor:
        """``k_m``: the m most significant of the B bits of each index k."""
        return self.quantizer.mask(k, m)

    def decode_indices(self, k_m: Tensor) -> Tensor:
        """The reconstruction, clamped to [0, 1], of masked indices (N, C, h, w)."""
        return self.decoder(self.quantizer.dequantize(k_m)).clamp(0, 1)  # type: ignore[no-any-return]

    def forward(self, x: Tensor, *, use_importance: bool = True) -> dict[str, Tensor]:
        """The whole pass on a padded [0, 1] batch.

        Returns ``x_hat`` (clamped to [0, 1] in eval mode only), ``e``, ``k``, ``m``, ``k_m``,
        ``q`` (the decoder's input, ``k_m / 2^B``) and ``rate`` (per image, the sum of the
        soft importance levels, whose forward value is exactly the sum of m). With
        ``use_importance=False`` the importance net is not run and m is B everywhere (plain
        B-bit quantisation, training phase 1).
        """
        e = self.encode(x)
        p = self.importance(e) if use_importance else None
        quantized = self.quantizer(e, p)
        x_hat = self.decoder(quantized.q)
        if not self.training:
            x_hat = x_hat.clamp(0, 1)
        return {
            "x_hat": x_hat,
            "e": e,
            "k": quantized.k,
            "m": quantized.m,
            "k_m": quantized.k_m,
            "q": quantized.q,
            "rate": quantized.levels.flatten(1).sum(dim=1),
        }

    def autoencoder_parameters(self) -> Iterator[nn.Parameter]:
        """The encoder's and the decoder's parameters (training phases 1 and 3)."""
        yield from self.encoder.parameters()
        yield from self.decoder.parameters()

    def importance_parameters(self) -> Iterator[nn.Parameter]:
        """The importance net's parameters (training phases 2 and 3)."""
        yield from self.importance_net.parameters()

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of ``encoder``, ``decoder``, ``importance`` and their ``total``."""
        counts = {
            "encoder": _count(self.encoder),
            "decoder": _count(self.decoder),
            "importance": _count(self.importance_net),
        }
        return {**counts, "total": sum(counts.values())}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- pixels


def to_network(image: Image) -> Tensor:
    """An (H, W, 3) uint8 image as a (1, 3, H, W) float tensor in [0, 1] (x / 255; spec 1.2
    step 0, a CHOICE)."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return pixels.float() / 255


def to_uint8(x_hat: Tensor) -> Tensor:
    """[0, 1] floats to uint8, deterministically: ``(x * 255).round().clamp(0, 255)``."""
    return (x_hat * 255).round().clamp(0, 255).to(torch.uint8)


def pad_replicate(
    x: Tensor, multiple: int = PAD_MULTIPLE
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Centred edge replication up to multiples of ``multiple``: the padded batch and the
    padding (top, bottom, left, right)."""
    padding = pad_amounts(int(x.shape[-2]), int(x.shape[-1]), multiple)
    top, bottom, left, right = padding
    if any(padding):
        x = nn.functional.pad(x, (left, right, top, bottom), mode="replicate")
    return x, padding


def crop(x: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    """Undo ``pad_replicate``."""
    top, bottom, left, right = padding
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


__all__ = [
    "PAD_MULTIPLE",
    "PRESETS",
    "Decoder",
    "Encoder",
    "ImpMapConfig",
    "ImpMapNetwork",
    "ImportanceNet",
    "MaskedQuantizer",
    "Quantized",
    "ResidualBlock",
    "ResidualTrunk",
    "crop",
    "pad_replicate",
    "to_network",
    "to_uint8",
]
