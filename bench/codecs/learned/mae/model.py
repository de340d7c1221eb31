"""The modulated autoencoder's network (see ``bench.codecs.learned.mae``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN
from torch import Tensor, nn

PAD_MULTIPLE = 16
"""The analysis transform down-samples 16 times."""

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"n": 128, "hidden": 64, "lambdas": (64.0, 256.0, 1024.0, 4096.0)},
    "authors": {"n": 192, "hidden": 50, "lambdas": (128.0, 512.0, 2048.0)},
    "cpu": {"n": 64, "hidden": 32, "lambdas": (64.0, 256.0, 1024.0, 4096.0)},
}
"""``--preset``: ``paper`` is the student report's (N=128, hidden N/2, its lambda set),
``authors`` the official code's train.sh (N=192, hidden 50), ``cpu`` a narrow model that
trains on a CPU (not a published size)."""


@dataclass(frozen=True)
class MaeConfig:
    """What defines a network.

    Attributes:
        n: channels of every hidden layer and of the latent.
        hidden: width of the modulation networks' hidden layer.
        lambdas: the trained lambda set (ascending); lambda_in = lambda / max(lambdas).
        modulated: False for the single-rate baseline (one lambda, no modulation networks).
        shared_entropy_model: one EntropyBottleneck for every lambda (else one per lambda).
        preset: the preset it came from, or ``custom``.
    """

    n: int = 128
    hidden: int = 64
    lambdas: tuple[float, ...] = PRESETS["paper"]["lambdas"]
    modulated: bool = True
    shared_entropy_model: bool = False
    preset: str = "paper"

    def __post_init__(self) -> None:
        lambdas = tuple(sorted(float(v) for v in self.lambdas))
        object.__setattr__(self, "lambdas", lambdas)
        if not lambdas or min(lambdas) <= 0 or len(set(lambdas)) != len(lambdas):
            raise ValueError(f"lambdas {list(lambdas)}: expected distinct positive values")
        if len(lambdas) > 255:
            raise ValueError("at most 255 lambda values")
        if self.n < 1 or self.hidden < 1:
            raise ValueError("n and hidden must be positive")
        if not self.modulated and len(lambdas) != 1:
            raise ValueError("a single-rate (unmodulated) model has exactly one lambda")

    @classmethod
    def from_preset(cls, preset: str, **changes: Any) -> MaeConfig:
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
        fields = {**PRESETS[preset], **{k: v for k, v in changes.items() if v is not None}}
        # The label names the network's size: another lambda set, a single-rate baseline or a
        # shared entropy model at the preset's N and hidden width keep it.
        same = all(fields[k] == PRESETS[preset][k] for k in ("n", "hidden"))
        return cls(**fields, preset=preset if same else "custom")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaeConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "lambdas" in known:
            known["lambdas"] = tuple(known["lambdas"])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lambdas"] = list(self.lambdas)
        return data

    @property
    def entropy_models(self) -> int:
        return 1 if self.shared_entropy_model or not self.modulated else len(self.lambdas)

    def describe(self) -> str:
        kind = "modulated" if self.modulated else "single-rate (no modulation)"
        published = {"paper": "the student report's size", "authors": "the authors' size"}
        label = published.get(self.preset, "NOT a published size")
        entropy = (
            f"{self.entropy_models} entropy models"
            if self.entropy_models > 1
            else "one shared entropy model"
            if self.modulated
            else "one entropy model"
        )
        return (f"{kind}, N={self.n}, hidden {self.hidden}, lambda "
                f"{','.join(f'{v:g}' for v in self.lambdas)}, {entropy} ({label})")  # fmt: skip


class Modulation(nn.Module):
    """``lambda_in -> Linear(1, hidden) -> ReLU -> Linear(hidden, N) -> exp``: N channel
    scales. The last layer starts at zero, so the scales start at 1 (identity)."""

    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, n)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def start_at(self, inputs: Sequence[float], log_scales: Sequence[float]) -> None:
        """Start at given log-scales instead of identity: the same scale on every channel,
        ``log_scales[i]`` at ``lambda_in = inputs[i]`` (ascending), linear between them,
        constant below the first input and on the last slope above the last. The first
        ``len(inputs) - 1`` hidden units become hinges ``relu(lambda_in - inputs[i])``; the
        others keep their random start and a zero output weight.

        Raises:
            ValueError: inputs not ascending, or fewer hidden units than hinges.
        """
        points = list(zip(inputs, log_scales, strict=True))
        if not points or any(b[0] <= a[0] for a, b in itertools.pairwise(points)):
            raise ValueError("inputs must be ascending (and at least one)")
        slopes = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(points)]
        if self.fc1.out_features < len(slopes):
            raise ValueError(f"{len(slopes)} hinges need at least {len(slopes)} hidden units")
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.bias.fill_(points[0][1])
            for index, slope in enumerate(slopes):
                self.fc1.weight[index, 0] = 1.0
                self.fc1.bias[index] = -points[index][0]
                self.fc2.weight[:, index] = slope - (slopes[index - 1] if index else 0.0)

    def forward(self, lambda_in: Tensor) -> Tensor:
        scales = torch.exp(self.fc2(torch.relu(self.fc1(lambda_in.reshape(1, 1)))))
        return scales.reshape(1, -1, 1, 1)


class MaeNetwork(nn.Module):
    """Ballé 2017's autoencoder with (de)modulation and per-lambda (or one shared)
    entropy bottlenecks. ``forward(x, lam)`` on [0, 1] images (sides multiples of 16) gives
    ``x_hat`` and the latent's likelihoods; noise in training mode, rounding in eval mode."""

    def __init__(self, config: MaeConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n
        self.g_a = nn.ModuleList([
            nn.Conv2d(3, n, 9, stride=4, padding=4),
            nn.Conv2d(n, n, 5, stride=2, padding=2),
            nn.Conv2d(n, n, 5, stride=2, padding=2, bias=False),
        ])  # fmt: skip
        self.gdn = nn.ModuleList([GDN(n) for _ in range(3)])
        self.igdn = nn.ModuleList([GDN(n, inverse=True) for _ in range(3)])
        self.g_s = nn.ModuleList([
            nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1),
            nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1),
            nn.ConvTranspose2d(n, 3, 9, stride=4, padding=4, output_padding=3),
        ])  # fmt: skip
        self.modulation = nn.ModuleList(
            [Modulation(n, config.hidden) for _ in range(3)] if config.modulated else []
        )
        self.demodulation = nn.ModuleList(
            [Modulation(n, config.hidden) for _ in range(3)] if config.modulated else []
        )
        self.entropy = nn.ModuleList([EntropyBottleneck(n) for _ in range(config.entropy_models)])

    def start_with_rate_scaling(self, exponent: float = 0.5) -> None:
        """Start the latent's modulation at ``(lambda / lambda_ref) ** exponent`` and its
        demodulation at the inverse, lambda_ref the geometric mean of the trained set; the
        other four (de)modulations stay identity. With exponent 0.5 the latent's scale, and
        so the quantiser's step relative to it, follows the MSE-optimal step ~ 1/sqrt(lambda)
        from the first step, so the rates start apart instead of waiting for the modulation
        networks to learn a logarithm of lambda / lambda_max."""
        if not self.config.modulated:
            raise ValueError("a single-rate model has no modulation")
        lambdas = self.config.lambdas
        reference = math.exp(sum(math.log(v) for v in lambdas) / len(lambdas))
        inputs = [v / max(lambdas) for v in lambdas]
        logs = [exponent * math.log(v / reference) for v in lambdas]
        cast(Modulation, self.modulation[-1]).start_at(inputs, logs)
        cast(Modulation, self.demodulation[0]).start_at(inputs, [-v for v in logs])

    def entropy_index(self, lam: float) -> int:
        """The entropy model of a lambda: its position in the trained set (0 when shared).

        Raises:
            ValueError: a lambda outside the trained set of a per-lambda model.
        """
        if len(self.entropy) == 1:
            return 0
        lam32 = float(torch.tensor(lam, dtype=torch.float32))
        for index, value in enumerate(self.config.lambdas):
            if float(torch.tensor(value, dtype=torch.float32)) == lam32:
                return index
        raise ValueError(
            f"lambda {lam:g} was not trained (trained: "
            f"{', '.join(f'{v:g}' for v in self.config.lambdas)}); only a model with a "
            "shared entropy model codes other lambda values"
        )

    def bottleneck(self, lam: float) -> EntropyBottleneck:
        """The entropy bottleneck that codes the latent at ``lam``."""
        return cast(EntropyBottleneck, self.entropy[self.entropy_index(lam)])

    def bottlenecks(self) -> list[EntropyBottleneck]:
        return [cast(EntropyBottleneck, eb) for eb in self.entropy]

    def lambda_input(self, lam: float, device: torch.device) -> Tensor:
        value = torch.tensor([lam], dtype=torch.float32, device=device)
        return value / max(self.config.lambdas)

    def analysis(self, x: Tensor, lam: float) -> Tensor:
        lam_in = self.lambda_input(lam, x.device)
        for index, (conv, gdn) in enumerate(zip(self.g_a, self.gdn, strict=True)):
            x = conv(x)
            if self.config.modulated:
                x = x * self.modulation[index](lam_in)
            x = gdn(x)
        return x

    def synthesis(self, y_hat: Tensor, lam: float) -> Tensor:
        lam_in = self.lambda_input(lam, y_hat.device)
        x = y_hat
        for index, (igdn, deconv) in enumerate(zip(self.igdn, self.g_s, strict=True)):
            x = igdn(x)
            if self.config.modulated:
                x = x * self.demodulation[index](lam_in)
            x = deconv(x)
        return x

    def forward(self, x: Tensor, lam: float) -> dict[str, Any]:
        y = self.analysis(x, lam)
        y_hat, likelihoods = self.bottleneck(lam)(y)
        return {"x_hat": self.synthesis(y_hat, lam), "likelihoods": {"y": likelihoods},
                "y_hat": y_hat}  # fmt: skip

    def compress(self, x: Tensor, lam: float) -> tuple[list[bytes], tuple[int, int]]:
        y = self.analysis(x, lam)
        strings = self.bottleneck(lam).compress(y)
        return strings, (int(y.shape[-2]), int(y.shape[-1]))

    def decompress(self, strings: Sequence[bytes], shape: tuple[int, int], lam: float) -> Tensor:
        y_hat = self.bottleneck(lam).decompress(list(strings), shape)
        return self.synthesis(y_hat, lam)

    def aux_loss(self) -> Tensor:
        return torch.stack([eb.loss() for eb in self.bottlenecks()]).sum()

    def update(self, force: bool = True) -> None:
        for eb in self.bottlenecks():
            eb.update(force=force)

    def entropy_tables_empty(self) -> bool:
        return any(eb._quantized_cdf.numel() == 0 for eb in self.bottlenecks())


def pad_replicate(
    x: Tensor, multiple: int = PAD_MULTIPLE
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Centred edge replication up to multiples of ``multiple``: (top, bottom, left, right)."""
    height, width = x.shape[-2:]
    extra_h, extra_w = -height % multiple, -width % multiple
    top, left = extra_h // 2, extra_w // 2
    padding = (top, extra_h - top, left, extra_w - left)
    if extra_h or extra_w:
        x = nn.functional.pad(x, (left, padding[3], top, padding[1]), mode="replicate")
    return x, padding


def rate_distortion(x: Tensor, out: Mapping[str, Any], lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """(bpp + lambda * MSE, bpp, MSE) of a forward pass; MSE on [0, 1], bpp over the batch's
    pixels."""
    pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
    bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / pixels
    mse = nn.functional.mse_loss(out["x_hat"], x)
    return bpp + lam * mse, bpp, mse  # type: ignore[return-value]


__all__ = [
    "PAD_MULTIPLE",
    "PRESETS",
    "MaeConfig",
    "MaeNetwork",
    "Modulation",
    "pad_replicate",
    "rate_distortion",
]
