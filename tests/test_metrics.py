"""PSNR, SSIM and MS-SSIM against independent implementations on real Kodak images."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from bench.errors import MetricUndefined
from bench.metrics.fidelity import (
    MS_SSIM_MIN_SIDE,
    FidelityReference,
    ms_ssim_db,
    ms_ssim_rgb,
    mse_rgb,
    psnr_from_mse,
    psnr_rgb,
    ssim_rgb,
)

torch = pytest.importorskip("torch")
pytorch_msssim = pytest.importorskip("pytorch_msssim")
skimage_metrics = pytest.importorskip("skimage.metrics")


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def as_tensor(image: np.ndarray):
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].double()


# kodim04 is portrait (768 x 512), the others landscape; JPEG at three qualities.
CASES = [(1, 10), (4, 30), (13, 50), (23, 90)]


@pytest.mark.parametrize(("number", "quality"), CASES)
def test_psnr_matches_numpy_and_skimage(kodim, number, quality):
    original = kodim(number)
    decoded = jpeg_roundtrip(original, quality)
    diff = original.astype(np.float64) - decoded.astype(np.float64)
    plain = 10 * np.log10(255.0**2 / np.mean(diff**2))
    reference = skimage_metrics.peak_signal_noise_ratio(original, decoded, data_range=255)
    assert psnr_rgb(original, decoded) == pytest.approx(plain, abs=1e-10)
    assert psnr_rgb(original, decoded) == pytest.approx(reference, abs=1e-10)


@pytest.mark.parametrize(("number", "quality"), CASES)
def test_ssim_matches_skimage_and_pytorch_msssim(kodim, number, quality):
    original = kodim(number)
    decoded = jpeg_roundtrip(original, quality)
    ours = ssim_rgb(original, decoded)
    # scikit-image with Gaussian weights and population covariance is the same definition,
    # computed in float64: agreement to rounding in float64, to float32 rounding by default.
    exact = FidelityReference(original, dtype=np.float64).ssim_and_ms_ssim(decoded)[0]
    sk = skimage_metrics.structural_similarity(
        original,
        decoded,
        data_range=255,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert exact == pytest.approx(sk, abs=1e-9)
    assert ours == pytest.approx(sk, abs=2e-6)
    # pytorch-msssim builds its window in float32, which moves SSIM by about 1e-6.
    pt = pytorch_msssim.ssim(as_tensor(original), as_tensor(decoded), data_range=255).item()
    assert ours == pytest.approx(pt, abs=1e-5)


@pytest.mark.parametrize(("number", "quality"), CASES)
def test_ms_ssim_matches_pytorch_msssim(kodim, number, quality):
    original = kodim(number)
    decoded = jpeg_roundtrip(original, quality)
    pt = pytorch_msssim.ms_ssim(as_tensor(original), as_tensor(decoded), data_range=255).item()
    assert ms_ssim_rgb(original, decoded) == pytest.approx(pt, abs=1e-5)


def test_ms_ssim_matches_on_odd_sizes(kodim):
    """Odd sides take pytorch-msssim's zero-padded pooling path at some scale."""
    original = np.ascontiguousarray(kodim(5)[:507, :333])
    decoded = jpeg_roundtrip(original, 25)
    pt = pytorch_msssim.ms_ssim(as_tensor(original), as_tensor(decoded), data_range=255).item()
    pt_ssim = pytorch_msssim.ssim(as_tensor(original), as_tensor(decoded), data_range=255).item()
    assert ms_ssim_rgb(original, decoded) == pytest.approx(pt, abs=1e-5)
    assert ssim_rgb(original, decoded) == pytest.approx(pt_ssim, abs=1e-5)


def test_reference_reuse_gives_same_numbers_as_fresh(kodim):
    original = kodim(7)
    reference = FidelityReference(original)
    for quality in (5, 60):
        decoded = jpeg_roundtrip(original, quality)
        ssim, ms_ssim = reference.ssim_and_ms_ssim(decoded)
        assert ssim == ssim_rgb(original, decoded)
        assert ms_ssim == ms_ssim_rgb(original, decoded)


def test_identical_images_are_perfect(kodim):
    original = kodim(3)
    assert math.isinf(psnr_rgb(original, original))
    assert ssim_rgb(original, original) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim_rgb(original, original) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(ms_ssim_db(1.0))


def test_known_values():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[...] = 10  # every sample off by 10: MSE 100
    assert mse_rgb(a, b) == 100.0
    assert psnr_from_mse(100.0) == pytest.approx(20 * math.log10(255 / 10), abs=1e-12)
    assert ms_ssim_db(0.99) == pytest.approx(20.0, abs=1e-12)


def test_too_small_for_ms_ssim_is_reported_not_crashed(kodim):
    side = MS_SSIM_MIN_SIDE - 1
    original = np.ascontiguousarray(kodim(1)[:side, :300])
    decoded = jpeg_roundtrip(original, 30)
    with pytest.raises(MetricUndefined, match="too small for MS-SSIM") as info:
        FidelityReference(original).ssim_and_ms_ssim(decoded)
    # SSIM is still defined and reported.
    pt_ssim = pytorch_msssim.ssim(as_tensor(original), as_tensor(decoded), data_range=255).item()
    assert info.value.ssim == pytest.approx(pt_ssim, abs=1e-5)  # type: ignore[attr-defined]
    tiny = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(MetricUndefined, match="smaller than"):
        FidelityReference(tiny).ssim_and_ms_ssim(tiny)


def test_shape_mismatch_is_an_error(kodim):
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr_rgb(kodim(1), kodim(4))


def test_the_float32_window_is_pytorch_msssims_bit_for_bit():
    from pytorch_msssim.ssim import _fspecial_gauss_1d

    from bench.metrics.fidelity import gaussian_window

    theirs = _fspecial_gauss_1d(11, 1.5).flatten().numpy()
    ours = gaussian_window(dtype=np.float32)
    assert ours.dtype == np.float32 and np.array_equal(ours, theirs)
    exact = gaussian_window()
    assert exact.dtype == np.float64 and exact.sum() == pytest.approx(1.0, abs=1e-15)
    assert 0 < np.abs(exact - theirs).max() < 1e-7  # the float32 rounding that matters below


def test_ms_ssim_where_contrast_structure_is_near_zero(kodim):
    """A reconstruction unrelated to the original: the contrast-structure terms are near 0,
    where cs**0.0448 magnifies a change of 1e-8 into 1e-6. bench follows pytorch-msssim's
    float32 window and agrees with it there (and exactly in float64 with its window)."""
    original = kodim(1)
    rng = np.random.default_rng(0)
    decoded = np.clip(rng.normal(128, 40, original.shape), 0, 255).astype(np.uint8)
    pt32 = pytorch_msssim.ms_ssim(
        as_tensor(original).float(), as_tensor(decoded).float(), data_range=255
    ).item()
    ours = ms_ssim_rgb(original, decoded)
    assert ours == pytest.approx(pt32, abs=1e-6)
    assert ours < 0.5  # the case this is about: MS-SSIM of an unrelated image
