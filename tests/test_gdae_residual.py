"""SPRC's residual: round trip, bytes, the score-to-quality mapping, empty regions, determinism."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from bench.codecs import CODECS
from bench.codecs.learned.gdae.residual import (
    HEADER_BYTES,
    RESIDUAL_CODECS,
    apply_residual,
    block_mask,
    describe_residual,
    encode_residual,
    pixel_mask,
    resolve_codec_name,
)
from bench.errors import CodecError, UsageError
from bench.metrics.fidelity import psnr_from_mse

LIBBPG = Path("/tmp/libbpg")


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    diff = a[where].astype(np.float64) - b[where].astype(np.float64)
    return psnr_from_mse(float(np.mean(diff * diff)))


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 64x64 textured image, a blurred and colour-shifted 'reconstruction', and a heat map
    whose region (>= 0.5) is a 20x28 rectangle not aligned to 8-pixel blocks."""
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:64, 0:64]
    base = 120 + 50 * np.sin(x / 5.0)[..., None] + 30 * np.cos(y / 7.0)[..., None]
    original = np.clip(base + rng.normal(0, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    blurred = (original.astype(np.float64) + np.roll(original, 1, 0) + np.roll(original, 1, 1)) / 3
    reconstruction = np.clip(blurred + np.array([6, -4, 3]), 0, 255).astype(np.uint8)
    heat = np.full((64, 64), 0.2, np.float32)
    heat[19:39, 21:49] = 0.9
    return original, reconstruction, heat


@pytest.mark.parametrize("codec", ["jpeg2000", "webp"])
def test_the_residual_round_trips_inside_the_region_and_leaves_the_rest_alone(scene, codec):
    original, reconstruction, heat = scene
    blob = encode_residual(original, reconstruction, heat, codec_name=codec)
    corrected = apply_residual(reconstruction, blob)
    assert corrected.shape == original.shape and corrected.dtype == np.uint8
    mask = pixel_mask(block_mask(heat, 0.5, 8), 8, heat.shape)
    region = heat >= 0.5
    assert mask[region].all()  # "any pixel" blocks cover the whole region
    assert np.array_equal(corrected[~mask], reconstruction[~mask])
    before, after = _psnr(original, reconstruction, region), _psnr(original, corrected, region)
    # s = 0.34 asks for a modest gain (JPEG 2000: 29.7 dB in the region, from 27.5)
    assert after > before + 0.5, (before, after)
    if codec == "jpeg2000":  # (WebP's 4:2:0 gains little on a residual of noise)
        better = encode_residual(
            original, reconstruction, heat, codec_name=codec, quality_range=(45, 45)
        )
        assert _psnr(original, apply_residual(reconstruction, better), region) > before + 5
    assert _psnr(original, corrected, ~region) >= _psnr(original, reconstruction, ~region)
    described = describe_residual(blob)
    assert described["residual_codec"] == codec
    assert described["residual_bytes"] == len(blob)
    assert described["residual_region_fraction"] == pytest.approx(mask.mean(), abs=0.05)


def test_the_blob_is_header_mask_and_the_residual_codecs_bytes(scene):
    """All the bytes count: the GDAE stream that embeds the blob grows by len(blob), and the
    blob is its header, the zlib'd mask and the codec's own stream, nothing else."""
    original, reconstruction, heat = scene
    blob = encode_residual(original, reconstruction, heat, codec_name="jpeg2000")
    mask_bytes = struct.unpack_from(">I", blob, HEADER_BYTES - 4)[0]
    payload = blob[HEADER_BYTES + mask_bytes :]
    assert payload[4:8] == b"jP  "  # a JP2 file
    box = CODECS.load("jpeg2000")().decode(payload)
    assert box.shape == (24, 40, 3)  # the blocks' box: rows 16..40, columns 16..56
    described = describe_residual(blob)
    assert described["residual_payload_bytes"] == len(payload)
    assert len(blob) == HEADER_BYTES + mask_bytes + len(payload)
    height, width = original.shape[:2]
    assert 8 * len(blob) / (height * width) > 0.1  # what SPRC adds to the GDAE stream's bpp


def test_a_larger_score_gives_a_better_quality_and_more_bytes(scene):
    """The same region, more heat outside it: s = mean(H) rises, the quality value moves
    towards q(s=1), and the residual costs more bytes."""
    original, reconstruction, heat = scene
    sizes, qualities = [], []
    for outside in (0.0, 0.25, 0.45):
        warm = np.where(heat >= 0.5, heat, np.float32(outside))
        blob = encode_residual(original, reconstruction, warm, codec_name="jpeg2000")
        sizes.append(len(blob))
        qualities.append(describe_residual(blob)["residual_quality"])
    assert qualities == sorted(qualities) and len(set(qualities)) == 3
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_the_bpg_mapping_is_the_specs_linear_qp():
    bpg = RESIDUAL_CODECS["bpg"]
    assert [bpg.quality(s) for s in (0.0, 0.25, 0.5, 1.0)] == [44, 40, 36, 28]
    assert bpg.quality(2.0) == 28 and bpg.quality(-1.0) == 44  # scores are clipped to [0, 1]
    assert bpg.quality(1.0, quality_range=(0, 60)) == 0  # clipped to QP 0..51
    assert bpg.quality(0.0, quality_range=(0, 60)) == 51
    jpeg2000 = RESIDUAL_CODECS["jpeg2000"]
    assert jpeg2000.quality(0.0) < jpeg2000.quality(0.5) < jpeg2000.quality(1.0)


def test_an_empty_region_gives_no_residual(scene):
    original, reconstruction, heat = scene
    assert encode_residual(original, reconstruction, heat * 0.5, codec_name="jpeg2000") == b""
    assert apply_residual(reconstruction, b"") is reconstruction
    assert describe_residual(b"")["residual_bytes"] == 0


def test_the_blob_is_deterministic(scene):
    original, reconstruction, heat = scene
    first = encode_residual(original, reconstruction, heat, codec_name="jpeg2000")
    assert encode_residual(original, reconstruction, heat, codec_name="jpeg2000") == first
    again = apply_residual(reconstruction, first)
    assert np.array_equal(apply_residual(reconstruction, first), again)


def test_bad_blobs_and_images_of_another_size_are_codec_errors(scene):
    original, reconstruction, heat = scene
    blob = encode_residual(original, reconstruction, heat, codec_name="webp")
    with pytest.raises(CodecError, match="magic"):
        apply_residual(reconstruction, b"XXXX" + blob[4:])
    with pytest.raises(CodecError, match="blocks"):
        apply_residual(reconstruction[:40], blob)
    with pytest.raises(CodecError, match="one size"):
        encode_residual(original, reconstruction, heat[:32])
    with pytest.raises(UsageError, match="residual codec"):
        encode_residual(original, reconstruction, heat, codec_name="png")


def test_a_tiny_region_still_codes():
    """A one-block region makes a 4x4 picture: JPEG 2000 gets as few resolutions as it fits."""
    original = np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    reconstruction = np.full_like(original, 128)
    heat = np.zeros((30, 30), np.float32)
    heat[29, 29] = 1.0
    for codec in ("jpeg2000", "webp"):
        blob = encode_residual(original, reconstruction, heat, codec_name=codec, block=4)
        corrected = apply_residual(reconstruction, blob)
        assert np.array_equal(corrected[:28], reconstruction[:28])
        assert _psnr(original, corrected, heat > 0) > _psnr(original, reconstruction, heat > 0)


def test_auto_is_bpg_where_it_is_available_else_jpeg2000():
    expected = "bpg" if CODECS.load("bpg").availability().usable else "jpeg2000"
    assert resolve_codec_name("auto") == expected


def test_bpg_residual_with_a_local_libbpg(scene, monkeypatch):
    encoder, decoder = LIBBPG / "bpgenc", LIBBPG / "bpgdec"
    if not (os.access(encoder, os.X_OK) and os.access(decoder, os.X_OK)):
        pytest.skip(f"no locally built libbpg: {encoder} and {decoder} are absent")
    monkeypatch.setenv("BENCH_BPGENC", str(encoder))
    monkeypatch.setenv("BENCH_BPGDEC", str(decoder))
    assert resolve_codec_name("auto") == "bpg"
    original, reconstruction, heat = scene
    blob = encode_residual(original, reconstruction, heat, codec_name="auto")
    described = describe_residual(blob)
    assert described["residual_codec"] == "bpg"
    assert described["residual_quality"] == RESIDUAL_CODECS["bpg"].quality(float(heat.mean()))
    corrected = apply_residual(reconstruction, blob)
    mask = pixel_mask(block_mask(heat, 0.5, 8), 8, heat.shape)
    assert np.array_equal(corrected[~mask], reconstruction[~mask])
    region = heat >= 0.5
    before = _psnr(original, reconstruction, region)
    assert _psnr(original, corrected, region) > before + 0.3  # QP 39 on a residual of noise
    better = encode_residual(
        original, reconstruction, heat, codec_name="bpg", quality_range=(20, 20)
    )
    assert _psnr(original, apply_residual(reconstruction, better), region) > before + 5
    warmer = np.where(region, heat, np.float32(0.45))
    assert len(encode_residual(original, reconstruction, warmer, codec_name="bpg")) > len(blob)


def test_sprc_raises_roi_psnr_by_more_than_the_rest_as_psnr_roi_scores_it():
    """The spec's criterion 1 with a JPEG stand-in for the GDAE reconstruction and the
    saliency heat map: ROI PSNR gains more than 1 dB over the non-ROI gain."""
    from bench.codecs import create_codec
    from bench.codecs.heatmaps.sources import spectral_residual
    from bench.metrics.roi import RoiPsnr

    y, x = np.mgrid[0:64, 0:64]
    rng = np.random.default_rng(5)
    grey = 128 + 60 * np.sin(2 * np.pi * x / 8) + rng.normal(0, 3, x.shape)
    grey[20:36, 12:28] = 128 + 60 * np.sin(2 * np.pi * y[20:36, 12:28] / 8)
    original = np.clip(grey[..., None] + np.array([0, 10, -10]), 0, 255).astype(np.uint8)
    jpeg = create_codec("jpeg")
    base = jpeg.encode(original, 10)
    reconstruction = jpeg.decode(base)
    heat = spectral_residual(original)
    region = heat >= 0.5
    blob = encode_residual(original, reconstruction, heat, codec_name="jpeg2000")
    corrected = apply_residual(reconstruction, blob)
    metric = RoiPsnr()
    before = metric.score_with(original, reconstruction, {"roi": region})
    after = metric.score_with(original, corrected, {"roi": region})
    gain_roi = after["psnr_roi"] - before["psnr_roi"]
    gain_rest = after["psnr_non_roi"] - before["psnr_non_roi"]
    assert gain_roi - gain_rest > 1.0, (gain_roi, gain_rest)
    assert describe_residual(blob)["residual_bytes"] == len(blob) > HEADER_BYTES
