"""Crops at truly matched bpp (one target per row, searched where the codec can be searched)
and the summary's warning about a codec whose curve looks broken."""

from __future__ import annotations

import math

from bench.curves import Aggregate
from bench.metrics.base import Column
from bench.report.sanity import MARGIN_DB, broken_codec_warnings

PSNR = Column("psnr_rgb_mean", "PSNR mean", "dB", True, bd=True)
MS_SSIM_DB = Column("ms_ssim_db_mean", "MS-SSIM", "dB", True, bd=True)
COUNT = Column("n_ms_ssim", "images with MS-SSIM", higher_is_better=True)


def _row(codec: str, bpp: float, **values: float) -> Aggregate:
    return Aggregate("kodak", codec, "quality", bpp, 2, 0, bpp, bpp, 0.01, 0.01, dict(values))


def _curve(codec: str, offset: float = 0.0) -> list[Aggregate]:
    """A plausible PSNR / MS-SSIM-dB curve (about 3 dB per doubling of bpp), shifted."""
    return [
        _row(
            codec,
            bpp,
            psnr_rgb_mean=30.0 + 3.0 * math.log2(bpp / 0.5) + offset,
            ms_ssim_db_mean=14.0 + 3.0 * math.log2(bpp / 0.5) + offset,
        )
        for bpp in (0.2, 0.4, 0.8, 1.6)
    ]


# --- sanity: a broken codec ------------------------------------------------------------------


def test_a_curve_ten_db_below_every_other_is_named_as_likely_broken():
    rows = [*_curve("jpeg"), *_curve("webp", 1.0), *_curve("gan", -10.0)]
    rows.append(_row("none", math.nan, psnr_rgb_mean=math.inf))  # the reference codec
    warnings = broken_codec_warnings(rows, [PSNR, MS_SSIM_DB, COUNT])
    assert len(warnings) == 2  # PSNR and MS-SSIM dB, nothing on the count column
    for warning, label in zip(warnings, ("PSNR mean", "MS-SSIM"), strict=True):
        assert warning.startswith("gan: ") and label in warning
        assert "a likely broken model or wrong weights" in warning
        assert "jpeg" in warning  # the closest other codec at the closest point
        assert "10.0 dB more" in warning


def test_normal_curves_give_no_warning_even_several_db_apart():
    rows = [*_curve("jpeg"), *_curve("webp", 2.0), *_curve("bpg", 4.0)]
    rows += _curve("gan", -(MARGIN_DB - 0.5))  # a GAN codec poor on PSNR, within the margin
    assert broken_codec_warnings(rows, [PSNR, MS_SSIM_DB]) == []


def test_one_low_point_is_not_enough_to_call_a_codec_broken():
    rows = [*_curve("jpeg"), *_curve("webp")]
    rows[4].values["psnr_rgb_mean"] -= 12.0  # webp's first point only
    assert broken_codec_warnings(rows, [PSNR]) == []


def test_a_codec_only_at_rates_below_every_other_is_judged_by_the_floor_alone():
    rows = [*_curve("jpeg"), _row("gan", 0.0625, psnr_rgb_mean=18.0)]
    assert broken_codec_warnings(rows, [PSNR]) == []  # nothing to compare with, not absurd
    rows.append(_row("gan", 0.125, psnr_rgb_mean=10.0))
    (warning,) = broken_codec_warnings(rows, [PSNR])
    assert warning.startswith("gan: PSNR mean 10.00 dB at 0.125 bpp")


def test_a_codec_above_the_others_range_is_compared_with_their_best_point():
    rows = [*_curve("jpeg"), _row("gan", 3.2, psnr_rgb_mean=30.0)]  # jpeg reaches 39 dB at 1.6
    (warning,) = broken_codec_warnings(rows, [PSNR])
    assert warning.startswith("gan: PSNR mean is more than 5 dB below every other codec")


def test_a_single_sane_codec_gives_no_warning():
    assert broken_codec_warnings(_curve("jpeg"), [PSNR, MS_SSIM_DB]) == []


def test_a_single_codec_with_absurd_psnr_is_flagged():
    rows = [_row("gan", bpp, psnr_rgb_mean=9.5) for bpp in (0.1, 0.3)]
    (warning,) = broken_codec_warnings(rows, [PSNR])
    assert warning.startswith("gan: PSNR mean 9.50 dB at 0.100 bpp (2 of its 2 rate points")
    assert "a likely broken model or wrong weights" in warning


def test_low_psnr_at_a_tiny_rate_alone_is_not_absurd():
    rows = [_row("gan", 0.01, psnr_rgb_mean=11.0)]
    assert broken_codec_warnings(rows, [PSNR]) == []
