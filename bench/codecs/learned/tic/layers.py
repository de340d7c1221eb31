"""Swin transformer layers of the TIC codec, with optional prompt tokens in the attention.

The module tree and parameter names follow TransTIC's (``NYCU-MAPL/TransTIC``,
``compressai/layers/layers.py``: ``RSTB`` -> ``residual_group`` (a ``BasicLayer``) ->
``blocks.{i}`` -> ``norm1``, ``attn.{relative_position_bias_table, relative_position_index,
qkv, proj}``, ``norm2``, ``mlp.{fc1, fc2}`` and, in shifted blocks, the ``attn_mask``
buffer built for the construction resolution), so that their checkpoints load strictly.
The code is bench's own.

Prompts (the variable-rate model of Chang & Yang 2024, after TransTIC): a prompted block
takes a prompt map at 1/``prompt_down`` of its resolution; each window of ``w x w`` image
tokens gets the ``(w/d)^2`` prompt tokens of the same place, prepended to its keys and values
only (queries come from image tokens, so the prompts leave no output of their own). The
relative position bias is zero for prompt keys. In shifted blocks a prompt token may be
attended only by queries of its own shifted region, exactly as image keys are (TransTIC's
code builds this mask with its columns out of order; bench builds it by region).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKED = -100.0
"""Attention logit added where a query may not see a key (Swin's value)."""


def trunc_normal_(tensor: Tensor, std: float = 0.02) -> Tensor:
    """Normal initialisation truncated to two standard deviations (as timm's default use)."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample while training, scaled to keep
    the expectation; the identity in eval mode."""

    def __init__(self, probability: float) -> None:
        super().__init__()
        self.probability = float(probability)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.probability == 0.0:
            return x
        keep = 1.0 - self.probability
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w * w, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """The inverse of ``window_partition``: (B * nW, w * w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((height // window) * (width // window))
    x = windows.view(b, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


def shift_regions(height: int, width: int, window: int, shift: int) -> Tensor:
    """(H, W) region labels of a cyclically shifted feature map: tokens may attend to each
    other only within one label (Swin's nine regions)."""
    labels = torch.zeros(height, width)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for rows in cuts:
        for cols in cuts:
            labels[rows, cols] = count
            count += 1
    return labels


def shift_mask(height: int, width: int, window: int, shift: int, prompt_down: int = 0) -> Tensor:
    """The additive attention mask of a shifted block: (nW, w*w, p + w*w), 0 or ``MASKED``.

    With ``prompt_down`` d > 0, the first ``p = (w/d)^2`` key columns are the window's
    prompt tokens, each labelled with the region of the top-left pixel of its d x d cell.
    """
    labels = shift_regions(height, width, window, shift)
    queries = window_partition(labels[None, :, :, None], window)[..., 0]  # nW, w*w
    keys = queries
    if prompt_down:
        cells = labels[::prompt_down, ::prompt_down][None, :, :, None]
        prompts = window_partition(cells, window // prompt_down)[..., 0]
        keys = torch.cat([prompts, queries], dim=1)
    mask = queries[:, :, None] - keys[:, None, :]
    return mask.ne(0).float() * MASKED


def relative_position_index(window: int) -> Tensor:
    """Swin's (w*w, w*w) index into the (2w-1)^2 relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with Swin's relative position bias; with
    prompt tokens prepended to the keys and values when given."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window, self.num_heads = dim, window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table)

    def forward(self, x: Tensor, mask: Tensor | None, prompts: Tensor | None = None) -> Tensor:
        """x: (B * nW, n, C) image tokens; prompts: (B * nW, p, C) or None; mask: (nW, n,
        p + n) or None. Returns (B * nW, n, C)."""
        windows, n, c = x.shape
        tokens = x if prompts is None else torch.cat([prompts, x], dim=1)
        total = tokens.shape[1]
        heads = self.num_heads
        qkv = self.qkv(tokens).reshape(windows, total, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0][:, :, total - n :], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        index: Tensor = self.relative_position_index  # type: ignore[assignment]
        bias = self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1)
        bias = bias.permute(2, 0, 1)
        if total > n:
            bias = torch.cat([bias.new_zeros(heads, n, total - n), bias], dim=-1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            count = mask.shape[0]
            attn = attn.view(windows // count, count, heads, n, total) + mask[None, :, None]
            attn = attn.view(-1, heads, n, total)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(windows, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """A (shifted-)window transformer block: attention and MLP, each with a residual.

    Args:
        dim, num_heads: channels and heads.
        input_resolution: the token grid the block is built for; a window larger than it
            shrinks to it and the shift is dropped (Swin's rule), and the shifted block's
            ``attn_mask`` buffer is made for it (other sizes make their mask on the fly).
        window, shift: window size and cyclic shift.
        mlp_ratio: hidden width of the MLP over ``dim``.
        drop_path: stochastic depth probability.
        prompt_down: > 0 for a prompted block: the prompt map's down-sampling factor.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
        prompt_down: int = 0,
    ) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        if min(input_resolution) <= window:
            shift, window = 0, min(input_resolution)
        self.window, self.shift, self.prompt_down = window, shift, prompt_down
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shift_mask(*input_resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask)
        self._masks: dict[tuple[int, int, str], Tensor] = {}

    def mask(self, size: tuple[int, int], device: torch.device) -> Tensor | None:
        """The shifted-window mask for a token grid (None without a shift)."""
        if self.shift == 0:
            return None
        buffer: Tensor | None = self.attn_mask  # type: ignore[assignment]
        if not self.prompt_down and tuple(size) == self.input_resolution and buffer is not None:
            return buffer
        key = (size[0], size[1], str(device))
        if key not in self._masks:
            made = shift_mask(size[0], size[1], self.window, self.shift, self.prompt_down)
            self._masks[key] = made.to(device)
        return self._masks[key]

    def forward(self, x: Tensor, size: tuple[int, int], prompt: Tensor | None = None) -> Tensor:
        """x: (B, H*W, C) tokens of an (H, W) grid; prompt: (B, C, H/d, W/d) or None."""
        height, width = size
        b, _, c = x.shape
        w, s = self.window, self.shift
        grid = self.norm1(x).view(b, height, width, c)
        if s:
            grid = torch.roll(grid, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(grid, w)
        prompts = None
        if prompt is not None:
            d = self.prompt_down
            cells = prompt.permute(0, 2, 3, 1)
            if s:
                cells = torch.roll(cells, shifts=(-s // d, -s // d), dims=(1, 2))
            prompts = window_partition(cells, w // d)
        attended = self.attn(windows, self.mask(size, x.device), prompts)
        grid = window_reverse(attended, w, height, width)
        if s:
            grid = torch.roll(grid, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(grid.reshape(b, height * width, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, alternately unshifted and shifted by half a window."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        prompt_down: int = 0,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                input_resolution,
                num_heads,
                window,
                0 if i % 2 == 0 else window // 2,
                mlp_ratio,
                drop_path[i],
                prompt_down,
            )
            for i in range(depth)
        )


class RSTB(nn.Module):
    """Residual Swin Transformer Block: a ``BasicLayer`` on the tokens of a feature map,
    plus the map itself.

    ``forward(x, size, prompts)`` takes (B, C, H, W) and, for a prompted layer, one prompt
    map per block.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        prompt_down: int = 0,
    ) -> None:
        super().__init__()
        self.prompted = prompt_down > 0
        self.residual_group = BasicLayer(
            dim, input_resolution, depth, num_heads, window, mlp_ratio, drop_path, prompt_down
        )

    def forward(
        self, x: Tensor, size: tuple[int, int], prompts: Sequence[Tensor] | None = None
    ) -> Tensor:
        b, c, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        blocks = self.residual_group.blocks
        if self.prompted and (prompts is None or len(prompts) != len(blocks)):
            raise ValueError(f"a prompted layer of {len(blocks)} blocks needs as many prompts")
        for i, block in enumerate(blocks):
            tokens = block(tokens, size, prompts[i] if prompts is not None else None)
        return tokens.transpose(1, 2).reshape(b, c, height, width) + x


def conv(in_channels: int, out_channels: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    """A strided convolution with 'same'-style padding (``kernel // 2``)."""
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)


def deconv(
    in_channels: int, out_channels: int, kernel: int = 5, stride: int = 2
) -> nn.ConvTranspose2d:
    """A transposed convolution that multiplies the size by ``stride`` exactly."""
    return nn.ConvTranspose2d(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        output_padding=stride - 1,
        padding=kernel // 2,
    )


def stochastic_depth(rate: float, depths: Sequence[int]) -> list[float]:
    """Linearly rising drop-path probabilities over all blocks (0 .. rate)."""
    total = sum(depths)
    return [rate * i / (total - 1) for i in range(total)] if total > 1 else [0.0]


def pad_to(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad (B, C, H, W) at the bottom and right to multiples of ``multiple``;
    returns the padded tensor and the (bottom, right) amounts."""
    height, width = x.shape[-2:]
    bottom = math.ceil(height / multiple) * multiple - height
    right = math.ceil(width / multiple) * multiple - width
    if bottom or right:
        x = F.pad(x, (0, right, 0, bottom), mode="replicate")
    return x, (bottom, right)
