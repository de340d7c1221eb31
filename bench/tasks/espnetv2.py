"""ESPNetv2 (Mehta et al., CVPR 2019) for Cityscapes, written from the paper's description.

The EESP unit replaces ESPNet's dense convolutions: a grouped point-wise projection to N/K
channels, K = 4 depth-wise dilated 3x3 convolutions whose receptive fields grow (dilation
1..4, capped by a per-level limit) fused hierarchically, a grouped point-wise expansion
back to N, and a residual connection. Strided EESP units halve the resolution, concatenate
an average-pooled copy of their input and add a projection of the average-pooled image
(input reinforcement). The segmentation network keeps the encoder up to 1/16 resolution
(width multiplier s sets the channels: 32 | 128, 256, 512 for s = 2) and decodes bottom-up:
at each scale an efficient pyramid pooling block (projection, depth-wise convolutions at
scales 2, 1.5, 1, 0.5 and 0.1 of the map, channel shuffle, grouped fusion) is upsampled by 2
and added to the encoder features of that scale, weighted by a squeeze-style gate.

The published Cityscapes weights (s = 2.0 and s = 1.0, 20 output channels: 19 trainIds and a
background) load strictly. Preprocessing is the authors': RGB, resize to 1024x512, scale to
0..1, ImageNet mean and standard deviation.
"""

from __future__ import annotations

import math
from typing import Any

from bench.tasks.base import TorchSegmenter
from bench.types import Image

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # listed as unavailable; nothing below runs without torch
    torch = None  # type: ignore[assignment]

MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
INPUT_SIZE = (512, 1024)  # (height, width)
_BRANCHES = 4
_PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)


def encoder_channels(s: float) -> list[int]:
    """Channels after level 1..4 for width multiplier ``s`` (level 1 never exceeds 32)."""
    widened = math.ceil(int(32 * s) / _BRANCHES) * _BRANCHES
    return [min(32, widened)] + [widened * 2**i for i in range(1, 4)]


def _dilations(receptive_limit: int) -> list[int]:
    """Dilation of each branch: kernels 3, 5, 7, ... capped at the limit, as dilated 3x3s."""
    sizes = sorted(k if k <= receptive_limit else 3 for k in (3 + 2 * i for i in range(_BRANCHES)))
    return [(k - 1) // 2 for k in sizes]


def _module_classes() -> dict[str, Any]:
    class Conv(nn.Module):
        def __init__(
            self, n_in: int, n_out: int, k: int, stride: int = 1, groups: int = 1, dilation: int = 1
        ):
            super().__init__()
            self.conv = nn.Conv2d(
                n_in, n_out, k, stride, (k - 1) // 2 * dilation, dilation, groups, bias=False
            )

        def forward(self, x):  # noqa: ANN001
            return self.conv(x)

    class ConvBn(Conv):
        def __init__(self, n_in: int, n_out: int, k: int, groups: int = 1):
            super().__init__(n_in, n_out, k, groups=groups)
            self.bn = nn.BatchNorm2d(n_out)

        def forward(self, x):  # noqa: ANN001
            return self.bn(self.conv(x))

    class ConvBnAct(ConvBn):
        def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1, groups: int = 1):
            super().__init__(n_in, n_out, k, groups=groups)
            self.conv.stride = (stride, stride)
            self.act = nn.PReLU(n_out)

        def forward(self, x):  # noqa: ANN001
            return self.act(self.bn(self.conv(x)))

    class BnAct(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.bn = nn.BatchNorm2d(n)
            self.act = nn.PReLU(n)

        def forward(self, x):  # noqa: ANN001
            return self.act(self.bn(x))

    class Eesp(nn.Module):
        """EESP unit; with stride 2 it returns the expansion without residual or activation."""

        def __init__(self, n_in: int, n_out: int, stride: int, receptive_limit: int):
            super().__init__()
            n = n_out // _BRANCHES
            self.stride = stride
            self.proj_1x1 = ConvBnAct(n_in, n, 1, groups=_BRANCHES)
            self.spp_dw = nn.ModuleList(
                Conv(n, n, 3, stride=stride, groups=n, dilation=d)
                for d in _dilations(receptive_limit)
            )
            self.conv_1x1_exp = ConvBn(n_out, n_out, 1, groups=_BRANCHES)
            self.br_after_cat = BnAct(n_out)
            self.module_act = nn.PReLU(n_out)

        def forward(self, x):  # noqa: ANN001
            projected = self.proj_1x1(x)
            fused = [self.spp_dw[0](projected)]
            for branch in self.spp_dw[1:]:
                fused.append(fused[-1] + branch(projected))
            expanded = self.conv_1x1_exp(self.br_after_cat(torch.cat(fused, 1)))
            if self.stride == 2:
                return expanded
            if expanded.shape == x.shape:
                expanded = expanded + x
            return self.module_act(expanded)

    class Downsample(nn.Module):
        """Strided EESP next to average pooling, plus the reinforcing projection of the image."""

        def __init__(self, n_in: int, n_out: int, receptive_limit: int):
            super().__init__()
            self.eesp = Eesp(n_in, n_out - n_in, 2, receptive_limit)
            self.avg = nn.AvgPool2d(3, stride=2, padding=1)
            self.inp_reinf = nn.Sequential(ConvBnAct(3, 3, 3), ConvBn(3, n_out, 1))
            self.act = nn.PReLU(n_out)

        def forward(self, x, image):  # noqa: ANN001
            pooled = self.avg(x)
            out = torch.cat([pooled, self.eesp(x)], 1)
            while image.shape[2] != pooled.shape[2]:
                image = F.avg_pool2d(image, 3, stride=2, padding=1)
            return self.act(out + self.inp_reinf(image))

    class Encoder(nn.Module):
        def __init__(self, s: float):
            super().__init__()
            c = encoder_channels(s)
            self.level1 = ConvBnAct(3, c[0], 3, stride=2)
            self.level2_0 = Downsample(c[0], c[1], receptive_limit=13)
            self.level3_0 = Downsample(c[1], c[2], receptive_limit=11)
            self.level3 = nn.ModuleList(Eesp(c[2], c[2], 1, 9) for _ in range(3))
            self.level4_0 = Downsample(c[2], c[3], receptive_limit=9)
            self.level4 = nn.ModuleList(Eesp(c[3], c[3], 1, 7) for _ in range(7))

    class Seq(nn.Module):
        """Sequential layers under one attribute name (the published weights' layout)."""

        def __init__(self, attr: str, *layers: nn.Module):
            super().__init__()
            self.attr = attr
            setattr(self, attr, nn.Sequential(*layers))

        def forward(self, x):  # noqa: ANN001
            return getattr(self, self.attr)(x)

    def cbr(n_in: int, n_out: int, k: int, groups: int = 1) -> nn.Module:
        return Seq(
            "cbr",
            nn.Conv2d(n_in, n_out, k, 1, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(n_out),
            nn.PReLU(n_out),
        )

    def br(n: int) -> nn.Module:
        return Seq("br", nn.BatchNorm2d(n), nn.PReLU(n))

    class ChannelShuffle(nn.Module):
        def __init__(self, groups: int):
            super().__init__()
            self.groups = groups

        def forward(self, x):  # noqa: ANN001
            b, c, h, w = x.shape
            return (
                x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)
            )

    class PyramidPool(nn.Module):
        """Efficient pyramid pooling: depth-wise 3x3 at several scales of a projected map."""

        def __init__(self, n_in: int, n_proj: int, n_out: int, last: bool = False):
            super().__init__()
            k = len(_PYRAMID_SCALES)
            self.projection_layer = cbr(n_in, n_proj, 1)
            self.stages = nn.ModuleList(
                nn.Conv2d(n_proj, n_proj, 3, 1, 1, groups=n_proj, bias=False) for _ in range(k)
            )
            self.merge_layer = nn.Sequential(
                br(n_proj * k),
                ChannelShuffle(k),
                cbr(n_proj * k, n_proj, 3, groups=n_proj),
                nn.Conv2d(n_proj, n_out, 1, bias=last),
            )
            self.br = None if last else br(n_out)

        def forward(self, x):  # noqa: ANN001
            x = self.projection_layer(x)
            height, width = x.shape[2:]
            outs = []
            for scale, stage in zip(_PYRAMID_SCALES, self.stages, strict=True):
                size = (max(5, math.ceil(height * scale)), max(5, math.ceil(width * scale)))
                if scale < 1.0:
                    h = stage(F.adaptive_avg_pool2d(x, size))
                    h = F.interpolate(h, (height, width), mode="bilinear", align_corners=True)
                elif scale > 1.0:
                    h = stage(F.interpolate(x, size, mode="bilinear", align_corners=True))
                    h = F.adaptive_avg_pool2d(h, (height, width))
                else:
                    h = stage(x)
                outs.append(h)
            out = self.merge_layer(torch.cat(outs, 1))
            return out if self.br is None else self.br(out)

    class GatedProjection(nn.Module):
        """Grouped 3x3 projection of encoder features, scaled by a global-pooling gate."""

        def __init__(self, n_in: int, n_out: int):
            super().__init__()
            self.wt_layer = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(n_in, n_out, 1, bias=False), nn.Sigmoid()
            )
            self.expansion_layer = cbr(n_in, n_out, 3, groups=math.gcd(n_in, n_out))

        def forward(self, x):  # noqa: ANN001
            return self.expansion_layer(x) * self.wt_layer(x)

    class ESPNetv2(nn.Module):
        def __init__(self, s: float = 2.0, classes: int = 20):
            super().__init__()
            c = encoder_channels(s)
            dec = [64, 48, 32, classes]
            proj = min(classes // 2, 16)
            self.base_net = Encoder(s)
            self.bu_dec_l1 = PyramidPool(c[3], proj, dec[0])
            self.bu_dec_l2 = PyramidPool(dec[0], proj, dec[1])
            self.bu_dec_l3 = PyramidPool(dec[1], proj, dec[2])
            self.bu_dec_l4 = PyramidPool(dec[2], proj, dec[3], last=True)
            self.merge_enc_dec_l2 = GatedProjection(c[2], dec[0])
            self.merge_enc_dec_l3 = GatedProjection(c[1], dec[1])
            self.merge_enc_dec_l4 = GatedProjection(c[0], dec[2])
            self.bu_br_l2 = nn.Sequential(nn.BatchNorm2d(dec[0]), nn.PReLU(dec[0]))
            self.bu_br_l3 = nn.Sequential(nn.BatchNorm2d(dec[1]), nn.PReLU(dec[1]))
            self.bu_br_l4 = nn.Sequential(nn.BatchNorm2d(dec[2]), nn.PReLU(dec[2]))

        def forward(self, x):  # noqa: ANN001
            return self.from_level1(self.base_net.level1(x), x, x.shape[2:])

        def from_level1(self, l1, image, size):  # noqa: ANN001
            """The network after its stem: ``l1`` the level-1 features (stride 2), ``image``
            what the downsampling blocks reinforce with (average-pooled to their size),
            logits at ``size``."""
            enc = self.base_net
            l2 = enc.level2_0(l1, image)
            l3 = enc.level3_0(l2, image)
            for unit in enc.level3:
                l3 = unit(l3)
            l4 = enc.level4_0(l3, image)
            for unit in enc.level4:
                l4 = unit(l4)
            out = self.bu_dec_l1(l4)
            steps = (
                (self.merge_enc_dec_l2, l3, self.bu_br_l2, self.bu_dec_l2),
                (self.merge_enc_dec_l3, l2, self.bu_br_l3, self.bu_dec_l3),
                (self.merge_enc_dec_l4, l1, self.bu_br_l4, self.bu_dec_l4),
            )
            for merge, skip, norm, decode in steps:
                out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
                out = decode(norm(merge(skip) + out))
            return F.interpolate(out, size=size, mode="bilinear", align_corners=True)

    return {"ESPNetv2": ESPNetv2}


def build_espnetv2(s: float = 2.0, classes: int = 20) -> Any:
    """An ESPNetv2 segmentation network (randomly initialised)."""
    return _module_classes()["ESPNetv2"](s, classes)


class Espnetv2Segmenter(TorchSegmenter):
    """ESPNetv2 segmentation network with the authors' Cityscapes weights (s = 2.0 or 1.0).

    Options: ``weights`` (espnetv2_s_2.0_city_1024x512.pth or the s_1.0 file; required),
    ``s`` (width multiplier, 2.0 by default; must match the weights), ``size`` (``WxH`` the
    images are resized to; 1024x512 by default, the weights' training size), ``device``.
    """

    name = "espnetv2"
    description = "ESPNetv2 s=2.0/1.0 (Mehta et al. 2019), Cityscapes 19 classes, 1024x512 input"
    input_size: tuple[int, int] | None = INPUT_SIZE

    def __init__(
        self,
        *,
        weights: str = "",
        weights_sha256: str = "",
        s: float = 2.0,
        size: str = "1024x512",
        device: str = "cpu",
    ) -> None:
        self.s = float(s)
        width, _, height = str(size).partition("x")
        if not (width.isdigit() and height.isdigit() and int(width) % 32 == int(height) % 32 == 0):
            raise ValueError(f"size must be WIDTHxHEIGHT in multiples of 32, got {size!r}")
        self.input_size = (int(height), int(width))
        self._mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
        self._std = torch.tensor(STD_RGB).view(1, 3, 1, 1)
        super().__init__(weights=weights, weights_sha256=weights_sha256, device=device)

    @property
    def architecture(self) -> str:
        return f"ESPNetv2 s={self.s:g}"

    def build_model(self) -> Any:
        return build_espnetv2(self.s, len(self.class_names) + 1)

    def latent_entry(self) -> Any:
        """Features in place of the stem (``level1``, a 3×3 stride-2 convolution): level 2
        takes the stem's channels at stride 2, and its and the later downsampling blocks an
        image to reinforce with (average-pooled to their size), so the entry takes both:
        ``encoder_channels(s)[0]`` feature channels, then 3 for that image."""
        from bench.tasks.latent import LatentEntry

        width = encoder_channels(self.s)[0]
        model, size = self.model, self.input_size or INPUT_SIZE

        def run(entry: Any) -> Any:
            return model.from_level1(entry[:, :width], entry[:, width:], size)

        stage = f"level 2, after the stem: {width} channels + 3 reinforcing at stride 2"
        return LatentEntry(stage, width + 3, 2, size, model, run)

    def prepare(self, image: Image) -> Any:
        x = torch.tensor(image).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False) / 255.0
        return (x - self._mean) / self._std

    def normalize(self, batch: Any) -> Any:
        return (batch - self._mean.to(batch.device)) / self._std.to(batch.device)
