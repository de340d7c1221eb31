"""Grad-CAM (Selvaraju et al., ICCV 2017): where a network looks when it scores a target.

For a feature layer with activations ``A`` (K maps) and a scalar target ``y`` computed from the
network's output (a class logit, a sum of segmentation logits)::

    alpha_k = mean_ij dy / dA^k_ij          (global-average-pooled gradients: channel weights)
    H       = ReLU(sum_k alpha_k A^k)       (the class-discriminative localisation map)

``H`` is upsampled bilinearly to the image size and min-max normalised to [0, 1]; a map that
is zero everywhere stays zero (nothing in the image raised the target), and so does a constant
one (it singles out no region).

The activations are caught by a forward hook that hands the rest of the network a detached
copy requiring a gradient, so ``torch.autograd.grad`` differentiates the target with respect
to that layer only; the network's parameters are left untouched.

torch is imported where it is used, so importing this module works without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

HeatMap = npt.NDArray[np.float32]
"""An (H, W) float32 map in [0, 1]."""


def normalise(cam: npt.NDArray[Any]) -> HeatMap:
    """Min-max normalise a non-negative map to [0, 1]; a map without contrast (all zero, or
    constant) becomes all zero: it singles out no region.

    >>> normalise(np.array([[0.0, 2.0], [1.0, 4.0]])).tolist()
    [[0.0, 0.5], [0.25, 1.0]]
    >>> normalise(np.zeros((1, 2))).tolist()
    [[0.0, 0.0]]
    """
    cam = np.asarray(cam, dtype=np.float64)
    low, high = float(cam.min()), float(cam.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros(cam.shape, np.float32)
    return ((cam - low) / (high - low)).astype(np.float32)


def grad_cam_raw(
    model: Any,
    layer: Any,
    x: Any,
    target: Callable[[Any], Any],
) -> tuple[Any, Any]:
    """The un-upsampled, un-normalised Grad-CAM map of ``layer`` and the target's value.

    Args:
        model: a torch module (in the mode the caller wants: ``eval()`` for a classifier).
        layer: a sub-module of ``model`` whose output is the feature map ``A`` (N, K, h, w).
        x: the model's input batch (N = 1 for one map).
        target: maps the model's output to a scalar tensor ``y``.

    Returns:
        ``(cam, y)``: the (N, h, w) tensor ``ReLU(sum_k alpha_k A^k)`` and the detached ``y``.

    Raises:
        ValueError: the layer did not run in the forward pass or its output is not 4-D.
    """
    import torch

    caught: list[Any] = []

    def hook(module: Any, inputs: Any, output: Any) -> Any:
        activation = output.detach().requires_grad_(True)
        caught.append(activation)
        return activation

    handle = layer.register_forward_hook(hook)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            score = target(model(x))
            if not caught:
                raise ValueError("Grad-CAM: the feature layer did not run in the forward pass")
            activation = caught[-1]
            if activation.ndim != 4:
                raise ValueError(
                    f"Grad-CAM: the feature layer's output is {tuple(activation.shape)}, "
                    "expected (N, K, h, w)"
                )
            (gradient,) = torch.autograd.grad(score, activation, allow_unused=True)
            if gradient is None:  # the target does not depend on the layer
                gradient = torch.zeros_like(activation)
            alpha = gradient.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((alpha * activation.detach()).sum(dim=1))
    finally:
        handle.remove()
    return cam, score.detach()


def grad_cam(
    model: Any,
    layer: Any,
    x: Any,
    target: Callable[[Any], Any],
    size: tuple[int, int],
) -> HeatMap:
    """Grad-CAM of one input, bilinearly upsampled to ``size`` = (H, W), in [0, 1].

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Flatten(),
    ...                           torch.nn.LazyLinear(1))
    >>> heat = grad_cam(net, net[0], torch.rand(1, 1, 4, 4), lambda y: y[0, 0], (8, 8))
    >>> heat.shape, heat.dtype, bool(0.0 <= heat.min() and heat.max() <= 1.0)
    ((8, 8), dtype('float32'), True)
    """
    import torch.nn.functional as F

    cam, _ = grad_cam_raw(model, layer, x, target)
    cam = cam[:1, None].float()
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return normalise(cam[0, 0].cpu().numpy())
