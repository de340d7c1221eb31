"""Grad-CAM against maps computed by hand, and the heat-map sources of SPRC."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from bench.codecs.heatmaps.gradcam import grad_cam, grad_cam_raw, normalise  # noqa: E402
from bench.codecs.heatmaps.sources import (  # noqa: E402
    GradCamVgg16,
    cam_heatmap,
    check_spec,
    heatmap_source,
    spectral_residual,
)
from bench.errors import UsageError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BENCH_SHARED", ROOT.parent / "shared"))
ESPNETV2 = SHARED / "models/segmentation/espnetv2/espnetv2_s_2.0_city_1024x512.pth"


class Toy(torch.nn.Module):
    """A 1x1 convolution + ReLU (the feature layer), then a linear head over the flattened map:
    the class score is linear in the activations, so dy/dA is the head's weight."""

    def __init__(self, classes: int = 3, channels: int = 4, size: int = 6) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 1), torch.nn.ReLU())
        self.head = torch.nn.Linear(channels * size * size, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def _toy(seed: int = 0) -> tuple[Toy, torch.Tensor]:
    torch.manual_seed(seed)
    return Toy().eval(), torch.randn(1, 3, 6, 6)


def _by_hand(model: Toy, x: torch.Tensor, cls: int) -> np.ndarray:
    """A = ReLU(W x + b) per pixel; dy_c/dA^k_ij = head weight (c, k, i, j); alpha_k = its mean;
    H = ReLU(sum_k alpha_k A^k). All in numpy from the parameters."""
    conv_w = model.features[0].weight.detach().numpy()[:, :, 0, 0]  # (K, 3)
    conv_b = model.features[0].bias.detach().numpy()
    pixels = x[0].numpy()  # (3, 6, 6)
    activation = np.maximum(np.einsum("kc,chw->khw", conv_w, pixels) + conv_b[:, None, None], 0)
    gradient = model.head.weight.detach().numpy()[cls].reshape(activation.shape)
    alpha = gradient.mean(axis=(1, 2))
    return np.maximum(np.einsum("k,khw->hw", alpha, activation), 0)


def test_grad_cam_of_a_toy_classifier_equals_the_hand_computed_map():
    model, x = _toy()
    target = int(model(x)[0].argmax())
    cam, score = grad_cam_raw(model, model.features[1], x, lambda y: y[0, target])
    expected = _by_hand(model, x, target)
    assert expected.max() > 0  # a non-trivial map for this seed
    np.testing.assert_allclose(cam[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert float(score) == pytest.approx(float(model(x)[0, target].detach()))
    # at the feature map's own size the map is the normalised hand map
    heat = grad_cam(model, model.features[1], x, lambda y: y[0, target], (6, 6))
    low, high = expected.min(), expected.max()
    np.testing.assert_allclose(heat, (expected - low) / (high - low), atol=1e-5)
    # upsampled bilinearly to the image size, still in [0, 1] with its peak at 1
    big = grad_cam(model, model.features[1], x, lambda y: y[0, target], (24, 18))
    hand = torch.from_numpy(expected.astype(np.float32))[None, None]
    hand = F.interpolate(hand, size=(24, 18), mode="bilinear", align_corners=False)[0, 0]
    hand = hand.numpy()
    np.testing.assert_allclose(big, (hand - hand.min()) / (hand.max() - hand.min()), atol=1e-5)
    assert big.dtype == np.float32 and big.min() == 0.0 and big.max() == pytest.approx(1.0)


def test_every_class_has_its_own_hand_computed_map_and_parameters_are_untouched():
    model, x = _toy(3)
    before = [p.detach().clone() for p in model.parameters()]
    for cls in range(3):
        cam, _ = grad_cam_raw(model, model.features[1], x, lambda y, c=cls: y[0, c])
        np.testing.assert_allclose(cam[0].numpy(), _by_hand(model, x, cls), rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_nonlinear_target_uses_its_own_gradient():
    """y = sum(A^2): dy/dA = 2A, so alpha_k = 2 mean(A^k)."""
    model, x = _toy(1)
    cam, _ = grad_cam_raw(model, model.features[1], x, lambda y: y.sum() * 0 + 0)
    assert float(cam.abs().max()) == 0.0  # a target that ignores the layer gives a zero map

    features = model.features  # its output is the layer's: y = A, a (1, K, h, w) tensor
    activation = features(x).detach()[0].numpy()
    expected = np.maximum(np.einsum("k,khw->hw", 2 * activation.mean(axis=(1, 2)), activation), 0)
    cam, _ = grad_cam_raw(features, features[1], x, lambda y: (y**2).sum())
    np.testing.assert_allclose(cam[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_an_all_zero_map_stays_zero_and_so_does_a_constant_one():
    assert normalise(np.zeros((3, 4))).max() == 0.0
    assert normalise(np.full((2, 2), 0.3)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    model, x = _toy()
    with torch.no_grad():  # every class-0 head weight negative: alpha < 0, ReLU clears the map
        model.head.weight[0] = -model.head.weight[0].abs()
    heat = grad_cam(model, model.features[1], x, lambda y: y[0, 0], (12, 12))
    assert heat.shape == (12, 12) and heat.max() == 0.0


def test_a_layer_outside_the_forward_pass_is_an_error():
    model, x = _toy()
    with pytest.raises(ValueError, match="did not run"):
        grad_cam_raw(model, torch.nn.ReLU(), x, lambda y: y[0, 0])


# --- heat-map sources ------------------------------------------------------------------------


def test_spectral_residual_finds_the_odd_patch_and_is_cached_per_image_content():
    """Vertical stripes everywhere but one 8x8 patch of horizontal ones: the patch is what the
    spectrum does not predict."""
    y, x = np.mgrid[0:48, 0:64]
    grey = 128 + 60 * np.sin(2 * np.pi * x / 8) + np.random.default_rng(0).normal(0, 3, x.shape)
    grey[30:38, 8:16] = 128 + 60 * np.sin(2 * np.pi * y[30:38, 8:16] / 8)
    image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    heat = spectral_residual(image)
    assert heat.shape == (48, 64) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    peak = np.unravel_index(heat.argmax(), heat.shape)
    assert 28 <= peak[0] < 40 and 6 <= peak[1] < 18
    assert heat[30:38, 8:16].mean() > 0.7 > 0.2 > heat.mean()
    source = heatmap_source("saliency")
    first = source(image)
    assert source(image.copy()) is first  # same pixels: the cached map
    other = image.copy()
    other[0, 0] = 0
    assert source(other) is not first
    assert source.describe()["heatmap"] == "saliency"


def test_heatmap_specs_are_checked_before_any_network_loads(tmp_path):
    with pytest.raises(UsageError, match="unknown heat map"):
        check_spec("gradcam-resnet")
    with pytest.raises(UsageError, match="needs ImageNet VGG-16 weights"):
        check_spec("gradcam-vgg16")
    with pytest.raises(UsageError, match=r"no-such\.pth"):
        check_spec(f"gradcam-vgg16@{tmp_path / 'no-such.pth'}")
    with pytest.raises(UsageError, match="takes no weights"):
        check_spec("saliency@x.pth")


def test_without_cam_weights_the_fallback_is_espnetv2_and_says_so():
    assert cam_heatmap(" /w/vgg16.pth ") == ("gradcam-vgg16@/w/vgg16.pth", "")
    spec, note = cam_heatmap("")
    assert spec == "gradcam-espnetv2" and "ESPNetv2" in note and "cam_weights" in note


def test_vgg16_weights_that_do_not_match_are_refused_naming_the_file(tmp_path):
    wrong = tmp_path / "not-vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UsageError, match=r"not-vgg16\.pth"):
        heatmap_source(f"gradcam-vgg16@{wrong}")


@pytest.mark.slow
def test_vgg16_grad_cam_loads_user_weights_strictly_and_records_their_hash(tmp_path):
    """A randomly initialised VGG-16 saved in half precision (264 MB) stands in for ImageNet
    weights: strict loading, the hash, the 224 shorter side and the map's shape."""
    from torchvision.models import vgg16

    from bench.download import sha256_of

    torch.manual_seed(0)
    path = tmp_path / "vgg16.pth"
    torch.save({k: v.half() for k, v in vgg16(weights=None).state_dict().items()}, path)
    source = GradCamVgg16(path)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    heat = source(image)
    assert heat.shape == (40, 60) and heat.min() >= 0.0 and heat.max() <= 1.0
    described = source.describe()
    assert described["heatmap_weights_sha256"] == sha256_of(path)
    assert described["heatmap_model"] == "torchvision VGG-16"


def _city_frame() -> np.ndarray:
    from PIL import Image

    frames = sorted((SHARED / "datasets/cityscapes/leftImg8bit/val").glob("*/*.png"))
    if not ESPNETV2.is_file() or not frames:
        pytest.skip(f"the ESPNetv2 weights or Cityscapes val frames are not under {SHARED}")
    with Image.open(frames[0]) as frame:
        return np.asarray(frame.convert("RGB"))


def test_gradcam_espnetv2_maps_a_cityscapes_frame_with_the_shared_weights():
    from PIL import Image

    frame = np.asarray(Image.fromarray(_city_frame()).resize((256, 128), Image.BILINEAR))
    source = heatmap_source("gradcam-espnetv2")
    started = time.perf_counter()
    heat = source(frame)
    assert time.perf_counter() - started < 30
    assert heat.shape == (128, 256) and heat.dtype == np.float32
    assert heat.min() == 0.0 and heat.max() == pytest.approx(1.0)
    described = source.describe()
    assert described["heatmap_model"] == "ESPNetv2 s=2"
    assert len(described["heatmap_weights_sha256"]) == 64
    assert heatmap_source(f"gradcam-espnetv2@{ESPNETV2}") is not None
