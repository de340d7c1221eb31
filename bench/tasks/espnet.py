"""ESPNet (Mehta et al., ECCV 2018) for Cityscapes, written from the paper's description.

The efficient spatial pyramid (ESP) module reduces its input with a point-wise (or, when it
down-samples, a strided 3x3) convolution to N/K channels, runs K = 5 parallel 3x3 convolutions
with dilation 1, 2, 4, 8, 16 on that reduction, adds each dilated branch to the sum of the
branches before it (hierarchical feature fusion, which removes gridding artefacts), and
concatenates the branches (the first one takes the channels left over by N - 4 * N/K). A
residual connection adds the input when shapes agree. ESPNet stacks a stride-2 3x3
convolution, then p and q ESP modules at 1/4 and 1/8 resolution, reinforcing the input by
concatenating the image average-pooled to each scale; its light decoder fuses the 1/8 and 1/4
classifications, upsamples with transposed convolutions, and merges with the first features.

The published weights (p=2, q=8, 20 output channels: the 19 trainIds and a background) load
strictly into this module. Preprocessing is the authors': BGR, per-channel mean/std on 0..255,
resize to 1024x512, then divide by 255.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.tasks.base import TorchSegmenter
from bench.types import Image

try:
    import torch
    from torch import nn
except ImportError:  # listed as unavailable; nothing below runs without torch
    torch = None  # type: ignore[assignment]
    nn = None  # type: ignore[assignment]

_BN_EPS = 1e-3
_DILATIONS = (1, 2, 4, 8, 16)
MEAN_BGR = (72.3923111, 82.90893555, 73.15840149)
STD_BGR = (45.3192215, 46.15289307, 44.91483307)
INPUT_SIZE = (512, 1024)  # (height, width)


def _module_classes() -> dict[str, Any]:
    """Define the network classes (only when torch is importable)."""

    class Conv(nn.Module):
        """A bias-free convolution with 'same' padding."""

        def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1, dilation: int = 1):
            super().__init__()
            self.conv = nn.Conv2d(
                n_in,
                n_out,
                k,
                stride=stride,
                padding=(k - 1) // 2 * dilation,
                dilation=dilation,
                bias=False,
            )

        def forward(self, x):  # noqa: ANN001
            return self.conv(x)

    class BnAct(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.bn = nn.BatchNorm2d(n, eps=_BN_EPS)
            self.act = nn.PReLU(n)

        def forward(self, x):  # noqa: ANN001
            return self.act(self.bn(x))

    class ConvBnAct(nn.Module):
        def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1):
            super().__init__()
            self.conv = nn.Conv2d(n_in, n_out, k, stride=stride, padding=(k - 1) // 2, bias=False)
            self.bn = nn.BatchNorm2d(n_out, eps=_BN_EPS)
            self.act = nn.PReLU(n_out)

        def forward(self, x):  # noqa: ANN001
            return self.act(self.bn(self.conv(x)))

    class EspBranches(nn.Module):
        """Reduction, five dilated branches with hierarchical fusion, concatenation."""

        def __init__(self, n_in: int, n_out: int, reduce_k: int, stride: int):
            super().__init__()
            n = n_out // len(_DILATIONS)
            first = n_out - n * (len(_DILATIONS) - 1)
            self.c1 = Conv(n_in, n, reduce_k, stride)
            self.d1 = Conv(n, first, 3, dilation=1)
            self.d2 = Conv(n, n, 3, dilation=2)
            self.d4 = Conv(n, n, 3, dilation=4)
            self.d8 = Conv(n, n, 3, dilation=8)
            self.d16 = Conv(n, n, 3, dilation=16)

        def branches(self, x):  # noqa: ANN001
            reduced = self.c1(x)
            fused = [self.d2(reduced)]
            for branch in (self.d4, self.d8, self.d16):
                fused.append(fused[-1] + branch(reduced))
            return torch.cat([self.d1(reduced), *fused], 1)

    class EspDown(EspBranches):
        """Strided ESP module (halves the resolution; no residual)."""

        def __init__(self, n_in: int, n_out: int):
            super().__init__(n_in, n_out, reduce_k=3, stride=2)
            self.bn = nn.BatchNorm2d(n_out, eps=_BN_EPS)
            self.act = nn.PReLU(n_out)

        def forward(self, x):  # noqa: ANN001
            return self.act(self.bn(self.branches(x)))

    class Esp(EspBranches):
        """ESP module with a point-wise reduction and an optional residual connection."""

        def __init__(self, n_in: int, n_out: int, residual: bool = True):
            super().__init__(n_in, n_out, reduce_k=1, stride=1)
            self.bn = BnAct(n_out)
            self.residual = residual

        def forward(self, x):  # noqa: ANN001
            out = self.branches(x)
            return self.bn(x + out if self.residual else out)

    class AveragePyramid(nn.Module):
        """The input average-pooled ``times`` times by 2 (3x3 windows), for reinforcement."""

        def __init__(self, times: int):
            super().__init__()
            self.pool = nn.Sequential(*[nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times)])

        def forward(self, x):  # noqa: ANN001
            return self.pool(x)

    class Encoder(nn.Module):
        def __init__(self, classes: int, p: int, q: int):
            super().__init__()
            self.level1 = ConvBnAct(3, 16, 3, stride=2)
            self.sample1 = AveragePyramid(1)
            self.sample2 = AveragePyramid(2)
            self.b1 = BnAct(16 + 3)
            self.level2_0 = EspDown(16 + 3, 64)
            self.level2 = nn.ModuleList([Esp(64, 64) for _ in range(p)])
            self.b2 = BnAct(128 + 3)
            self.level3_0 = EspDown(128 + 3, 128)
            self.level3 = nn.ModuleList([Esp(128, 128) for _ in range(q)])
            self.b3 = BnAct(256)
            self.classifier = Conv(256, classes, 1)

    class ESPNet(nn.Module):
        """ESPNet with its decoder; outputs logits at the input resolution."""

        def __init__(self, classes: int = 20, p: int = 2, q: int = 8):
            super().__init__()
            self.encoder = Encoder(classes, p, q)
            self.level3_C = Conv(128 + 3, classes, 1)
            self.br = nn.BatchNorm2d(classes, eps=_BN_EPS)
            self.conv = ConvBnAct(16 + classes, classes, 3)
            self.up_l3 = nn.Sequential(
                nn.ConvTranspose2d(classes, classes, 2, stride=2, bias=False)
            )
            self.combine_l2_l3 = nn.Sequential(
                BnAct(2 * classes), Esp(2 * classes, classes, residual=False)
            )
            self.up_l2 = nn.Sequential(
                nn.ConvTranspose2d(classes, classes, 2, stride=2, bias=False), BnAct(classes)
            )
            self.classifier = nn.ConvTranspose2d(classes, classes, 2, stride=2, bias=False)

        def forward(self, x):  # noqa: ANN001
            enc = self.encoder
            level1 = enc.level1(x)
            level1_cat = enc.b1(torch.cat([level1, enc.sample1(x)], 1))
            level2_down = enc.level2_0(level1_cat)
            level2 = level2_down
            for block in enc.level2:
                level2 = block(level2)
            level2_cat = enc.b2(torch.cat([level2, level2_down, enc.sample2(x)], 1))
            level3_down = enc.level3_0(level2_cat)
            level3 = level3_down
            for block in enc.level3:
                level3 = block(level3)
            level3_cat = enc.b3(torch.cat([level3_down, level3], 1))
            coarse = self.up_l3(self.br(enc.classifier(level3_cat)))
            fused = self.combine_l2_l3(torch.cat([self.level3_C(level2_cat), coarse], 1))
            merged = self.conv(torch.cat([self.up_l2(fused), level1], 1))
            return self.classifier(merged)

    return {"ESPNet": ESPNet}


def build_espnet(classes: int = 20, p: int = 2, q: int = 8) -> Any:
    """An ESPNet module (randomly initialised)."""
    return _module_classes()["ESPNet"](classes, p, q)


class EspnetSegmenter(TorchSegmenter):
    """ESPNet with decoder (p=2, q=8) and the authors' Cityscapes weights.

    Options: ``weights`` (path to espnet_p_2_q_8.pth; required), ``device`` (cpu/cuda),
    ``p``, ``q`` (the architecture; the published weights are p=2, q=8).
    """

    name = "espnet"
    description = "ESPNet p=2 q=8 (Mehta et al. 2018), Cityscapes 19 classes, 1024x512 input"
    input_size = INPUT_SIZE

    def __init__(
        self,
        *,
        weights: str = "",
        weights_sha256: str = "",
        device: str = "cpu",
        p: int = 2,
        q: int = 8,
    ) -> None:
        self.p, self.q = int(p), int(q)
        self._mean = torch.tensor(MEAN_BGR).view(1, 3, 1, 1)
        self._std = torch.tensor(STD_BGR).view(1, 3, 1, 1)
        super().__init__(weights=weights, weights_sha256=weights_sha256, device=device)

    @property
    def architecture(self) -> str:
        return f"ESPNet p={self.p} q={self.q}"

    def build_model(self) -> Any:
        return build_espnet(len(self.class_names) + 1, self.p, self.q)

    def prepare(self, image: Image) -> Any:
        x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1)[None]
        x = (x.float() - self._mean) / self._std
        x = torch.nn.functional.interpolate(
            x, size=INPUT_SIZE, mode="bilinear", align_corners=False
        )
        return x / 255.0

    def normalize(self, batch: Any) -> Any:
        # prepare() normalises 0..255 BGR, resizes (linear, so the order does not matter) and
        # divides by 255.
        x = batch.flip(1) * 255.0
        return (x - self._mean.to(x.device)) / self._std.to(x.device) / 255.0


__all__ = ["EspnetSegmenter", "build_espnet"]
