"""BD-rate and BD-quality against the PyPI ``bjontegaard`` package, closed forms and real curves.

Tolerance against the package: 1e-9 (absolute, in % and dB). Both sides fit the same piecewise
cubic through the same points and integrate it exactly over the same interval, so they differ
only by rounding (natural log here, log10 there; the order of sums): about 1e-13 on these data.
A different method, interval or log convention would differ by 1e-3 or far more.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from bench.bjontegaard import (
    METHODS,
    SMALL_OVERLAP,
    Curve,
    bd_matrix,
    bd_quality,
    bd_rate,
    bpp_at,
    compare,
    curves_from_aggregates,
    per_image_bd,
    quality_at,
)
from bench.curves import REFERENCE_CODEC, aggregate
from bench.datasets.kodak import KodakDataset
from bench.errors import UsageError
from bench.records import ERROR, Record
from bench.runner import plan_codec, run

TOL = 1e-9

# The package's own documented example data (README and example_usage.py of
# github.com/FAU-LMS/bjontegaard, v1.3.0): libx265 presets measured with ffmpeg, rate in kbps.
PACKAGE_EXAMPLES = {
    "readme": (
        [9487.76, 4593.60, 2486.44, 1358.24],
        [40.037, 38.615, 36.845, 34.851],
        [9787.80, 4469.00, 2451.52, 1356.24],
        [40.121, 38.651, 36.970, 34.987],
    ),
    "high rates": (
        [82472.76, 26875.24, 9487.76, 4593.6],
        [43.825, 41.404, 40.037, 38.615],
        [99896.96, 33952.04, 9787.8, 4469.0],
        [44.731, 41.875, 40.121, 38.651],
    ),
    "six points": (
        [82472.76, 26875.24, 9487.76, 4593.6, 3600, 2900],
        [43.825, 41.404, 40.037, 38.615, 36.5, 35.1],
        [99896.96, 33952.04, 9787.8, 4469.0, 4040, 3300],
        [44.731, 41.875, 40.121, 38.651, 37, 36.5],
    ),
}


@pytest.fixture(scope="module")
def package():
    return pytest.importorskip(
        "bjontegaard", reason="the bjontegaard package (test extra) is not installed"
    )


def reference(package, anchor: Curve, test: Curve, method: str, rate: bool = True):
    """(BD-rate %, BD-quality) by the package, its overlap warning silenced; BD-rate NaN when
    not ``rate`` (the package raises for a curve whose quality dips)."""
    args = (anchor.bpp, anchor.quality, test.bpp, test.quality)
    options = {"method": method, "require_matching_points": False, "min_overlap": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (
            package.bd_rate(*args, **options) if rate else math.nan,
            package.bd_psnr(*args, **options),
        )


# --- real R-D points: jpeg and webp on two Kodak images, coded by bench in this test -----------

RATES = {"jpeg": [10, 25, 40, 55, 70, 85, 95], "webp": [5, 20, 35, 50, 65, 80, 95]}


@pytest.fixture(scope="module")
def kodak_run(kodak, tmp_path_factory):
    plans = [plan_codec(name, rates=rates) for name, rates in RATES.items()]
    out = tmp_path_factory.mktemp("bd") / "kodak"
    result = run(KodakDataset(data_dir=kodak), plans, out, workers=0, limit=2)
    assert all(r.ok for r in result.records), [r.error for r in result.records if not r.ok]
    return result.records


@pytest.fixture(scope="module")
def kodak_curves(kodak_run):
    rows = aggregate(kodak_run)
    return {m: curves_from_aggregates(rows, m) for m in ("psnr_rgb", "ms_ssim_db")}


def real_pairs(kodak_curves):
    for metric, curves in kodak_curves.items():
        yield metric, curves["jpeg"], curves["webp"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("example", PACKAGE_EXAMPLES)
def test_package_examples_match_the_package(package, example, method):
    rate_a, psnr_a, rate_t, psnr_t = PACKAGE_EXAMPLES[example]
    anchor, test = Curve.of(rate_a, psnr_a), Curve.of(rate_t, psnr_t)
    expected_rate, expected_quality = reference(package, anchor, test, method)
    result = compare(anchor, test, method=method)
    assert result.bd_rate == pytest.approx(expected_rate, abs=TOL)
    assert result.bd_quality == pytest.approx(expected_quality, abs=TOL)
    assert bd_rate(anchor, test, method) == result.bd_rate
    assert bd_quality(anchor, test, method) == result.bd_quality
    assert -10 < result.bd_rate < 0 < result.bd_quality < 0.5  # the test preset is a bit better


@pytest.mark.parametrize("method", METHODS)
def test_real_kodak_curves_match_the_package(package, kodak_curves, method):
    for metric, jpeg, webp in real_pairs(kodak_curves):
        assert len(jpeg) == len(RATES["jpeg"]) and len(webp) == len(RATES["webp"])
        for anchor, test in ((jpeg, webp), (webp, jpeg)):
            expected_rate, expected_quality = reference(package, anchor, test, method)
            result = compare(anchor, test, method=method, metric=metric)
            assert result.bd_rate == pytest.approx(expected_rate, abs=TOL), metric
            assert result.bd_quality == pytest.approx(expected_quality, abs=TOL), metric
            assert result.warning == ""
        # WebP beats baseline JPEG on Kodak: fewer bits for the same PSNR and MS-SSIM.
        assert bd_rate(jpeg, webp, method) < -10 and bd_quality(jpeg, webp, method) > 0.5


def test_pchip_and_akima_differ_on_the_same_curves():
    # Guards the parametrised comparisons above against a method argument that is ignored.
    rate_a, psnr_a, rate_t, psnr_t = PACKAGE_EXAMPLES["six points"]
    anchor, test = Curve.of(rate_a, psnr_a), Curve.of(rate_t, psnr_t)
    assert abs(bd_rate(anchor, test, "pchip") - bd_rate(anchor, test, "akima")) > 0.1


# --- closed forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_two_point_curves_give_the_hand_computed_deltas(method):
    # With 2 points both methods are straight lines, whose mean over an interval is their value
    # at its midpoint. Anchor: q = 30 + 3 log2(bpp / 0.5); test: q = 31 + 2 log2(bpp / 0.25).
    # BD-quality on the shared log-bpp interval [log 0.5, log 1], midpoint bpp = 2**-0.5:
    #   anchor 30 + 3 * 0.5 = 31.5, test 31 + 2 * 1.5 = 34 -> +2.5.
    # BD-rate on the shared quality interval [31, 35], midpoint 33: anchor bpp 0.5 * 2**1 = 1,
    #   test 0.25 * 2**1 = 0.5 -> the test needs half the bits: -50 %.
    anchor, test = Curve.of([0.5, 2.0], [30.0, 36.0]), Curve.of([0.25, 1.0], [31.0, 35.0])
    result = compare(anchor, test, method=method)
    assert result.bd_quality == pytest.approx(2.5, abs=1e-12)
    assert result.bd_rate == pytest.approx(-50.0, abs=1e-10)
    assert result.overlap == pytest.approx(1.0)  # [31, 35] lies inside [30, 36]
    assert result.rate_overlap == pytest.approx(0.5)  # log 2 shared of log 4 each
    assert result.warning == ""


@pytest.mark.parametrize("method", METHODS)
def test_identity_scaling_and_shift(method, kodak_curves):
    for _, jpeg, webp in real_pairs(kodak_curves):
        for curve in (jpeg, webp):
            same = compare(curve, curve, method=method)
            assert (same.bd_rate, same.bd_quality, same.overlap, same.rate_overlap) == (
                0.0,
                0.0,
                1.0,
                1.0,
            )
            cheaper = Curve.of([0.8 * b for b in curve.bpp], curve.quality)
            assert bd_rate(curve, cheaper, method) == pytest.approx(-20.0, abs=1e-9)
            assert bd_rate(cheaper, curve, method) == pytest.approx(25.0, abs=1e-9)
            better = Curve.of(curve.bpp, [q + 1.0 for q in curve.quality])
            assert bd_quality(curve, better, method) == pytest.approx(1.0, abs=1e-12)
            assert bd_quality(better, curve, method) == pytest.approx(-1.0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_anti_symmetry(method, kodak_curves):
    for _, jpeg, webp in real_pairs(kodak_curves):
        ab, ba = compare(jpeg, webp, method=method), compare(webp, jpeg, method=method)
        assert (1 + ab.bd_rate / 100) * (1 + ba.bd_rate / 100) == pytest.approx(1.0, abs=1e-12)
        assert ab.bd_quality == pytest.approx(-ba.bd_quality, abs=1e-12)
        assert (ab.overlap, ab.rate_overlap) == (ba.overlap, ba.rate_overlap)


# --- interpolation -----------------------------------------------------------------------------


def test_quality_at_is_exact_at_the_points_and_monotone_between(kodak_curves):
    for _, jpeg, webp in real_pairs(kodak_curves):
        for curve in (jpeg, webp):
            for b, q in zip(curve.bpp, curve.quality, strict=True):
                assert quality_at(curve, b) == (q, "")
                assert bpp_at(curve, q) == (b, "")
            grid = np.geomspace(curve.bpp[0], curve.bpp[-1], 2000)
            values = [quality_at(curve, float(b)) for b in grid]
            assert all(warning == "" for _, warning in values)
            qualities = np.array([v for v, _ in values])
            assert np.all(np.diff(qualities) >= 0) and qualities[-1] > qualities[0]
            assert qualities.min() >= curve.quality[0] and qualities.max() <= curve.quality[-1]
            for q in np.linspace(curve.quality[0], curve.quality[-1], 50)[1:-1]:
                b, warning = bpp_at(curve, float(q))
                assert warning == "" and curve.bpp[0] < b < curve.bpp[-1]
                assert quality_at(curve, b)[0] == pytest.approx(q, abs=1e-9)


def test_quality_at_on_two_points_is_linear_in_log_bpp():
    curve = Curve.of([0.5, 2.0], [30.0, 36.0])
    assert quality_at(curve, 1.0) == (pytest.approx(33.0, abs=1e-12), "")
    assert bpp_at(curve, 34.5)[0] == pytest.approx(2**0.5, rel=1e-12)


def test_outside_the_measured_range_nothing_is_extrapolated():
    curve = Curve.of([0.25, 0.5, 1.0, 2.0], [28.0, 31.0, 34.5, 38.0])
    for bpp in (0.2, 2.5, 0.0, -1.0, math.nan):
        value, warning = quality_at(curve, bpp)
        assert math.isnan(value) and warning, bpp
    assert "outside the measured range" in quality_at(curve, 2.5)[1]
    for quality in (27.9, 38.1, math.inf):
        value, warning = bpp_at(curve, quality)
        assert math.isnan(value) and warning, quality
    assert "outside the measured range" in bpp_at(curve, 38.1)[1]


def test_bpp_at_needs_quality_rising_with_bpp():
    dips = Curve.of([0.25, 0.5, 1.0, 2.0], [0.60, 0.64, 0.63, 0.66])  # a noisy mIoU
    value, warning = bpp_at(dips, 0.62)
    assert math.isnan(value) and "not rising" in warning
    assert quality_at(dips, 0.75)[1] == ""  # reading quality at a rate stays defined


# --- degenerate curves -------------------------------------------------------------------------

GOOD = Curve.of([0.25, 0.5, 1.0, 2.0], [28.0, 31.0, 34.5, 38.0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("curve", "words"),
    [
        (Curve.of([], []), "0 usable points"),
        (Curve.of([1.0], [33.0]), "1 usable point"),
        (Curve.of([0.5, math.nan, 1.0, 0.0], [math.nan, 31.0, 34.0, 20.0]), "1 usable point"),
        (Curve.of([0.5, 0.5, 1.0], [30.0, 31.0, 34.0]), "two qualities at 0.5 bpp"),
    ],
)
def test_too_few_points_give_nan_and_a_warning(method, curve, words):
    for anchor, test, side in ((GOOD, curve, "test"), (curve, GOOD, "anchor")):
        result = compare(anchor, test, method=method, anchor_name="a", test_name="t")
        assert math.isnan(result.bd_rate) and math.isnan(result.bd_quality)
        assert "BD-rate and BD-quality undefined" in result.warning
        assert f"{side} {side[0]} has" in result.warning and words in result.warning
        assert math.isnan(bd_rate(anchor, test, method))
        assert math.isnan(bd_quality(anchor, test, method))


def test_nan_points_are_dropped_not_propagated(package):
    noisy = Curve.of([0.25, 0.4, 0.5, 1.0, 2.0, math.inf], [28.0, math.nan, 31.0, 34.5, 38.0, 50])
    assert noisy == GOOD
    other = Curve.of([0.2, 0.45, 0.9, 1.7], [27.5, 31.5, 34.0, 37.2])
    result = compare(noisy, other)
    assert (result.bd_rate, result.bd_quality) == pytest.approx(
        reference(package, GOOD, other, "pchip")
    )


def test_exactly_repeated_points_count_once():
    # A target-bpp search can land two targets on the same bitstream of an image.
    twice = Curve.of([0.25, 0.5, 0.5, 1.0, 2.0], [28.0, 31.0, 31.0, 34.5, 38.0])
    assert twice == GOOD


@pytest.mark.parametrize("method", METHODS)
def test_no_overlap_gives_nan_and_a_warning(method):
    high = Curve.of([4.0, 8.0, 16.0], [40.0, 44.0, 48.0])
    result = compare(GOOD, high, method=method)
    assert math.isnan(result.bd_rate) and math.isnan(result.bd_quality)
    assert (result.overlap, result.rate_overlap) == (0.0, 0.0)
    assert "no shared quality interval" in result.warning
    assert "no shared bpp interval" in result.warning


@pytest.mark.parametrize("method", METHODS)
def test_small_overlap_is_computed_with_a_warning(package, method):
    # Quality ranges [28, 38] and [35, 45]: 3 of 10 shared; log-bpp ranges share log 2 of log 8.
    shifted = Curve.of([1.0, 2.0, 4.0, 8.0], [35.0, 39.0, 42.0, 45.0])
    result = compare(GOOD, shifted, method=method)
    assert result.overlap == pytest.approx(0.3) and result.overlap < SMALL_OVERLAP
    assert result.rate_overlap == pytest.approx(1 / 3)
    assert (result.bd_rate, result.bd_quality) == pytest.approx(
        reference(package, GOOD, shifted, method), abs=TOL
    )
    assert "BD-rate rests on a small overlap" in result.warning and "30%" in result.warning
    assert "BD-quality rests on a small overlap" in result.warning


@pytest.mark.parametrize("method", METHODS)
def test_quality_falling_with_rate_leaves_only_bd_quality(package, method):
    dips = Curve.of([0.25, 0.5, 1.0, 2.0], [28.0, 32.0, 31.5, 37.0])
    result = compare(GOOD, dips, method=method, test_name="x")
    assert math.isnan(result.bd_rate)
    assert result.warning.startswith("BD-rate undefined: test x has quality not rising")
    # BD-quality is well defined and equals the package's; the package refuses BD-rate too.
    expected = reference(package, GOOD, dips, method, rate=False)[1]
    assert result.bd_quality == pytest.approx(expected, abs=TOL)
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        package.bd_rate(dips.bpp, dips.quality, GOOD.bpp, GOOD.quality, method=method)


def test_unknown_method_or_metric_is_a_usage_error():
    with pytest.raises(UsageError, match="pchip, akima"):
        compare(GOOD, GOOD, method="cubic")
    with pytest.raises(UsageError, match="pchip, akima"):
        bd_rate(GOOD, GOOD, method="linear")
    with pytest.raises(UsageError, match="psnr_rgb"):
        curves_from_aggregates([], "ssim")
    with pytest.raises(UsageError, match="one quality value per bpp"):
        Curve(bpp=(1.0, 2.0), quality=(30.0,))


# --- bench's own data: records and aggregates built here ----------------------------------------


def record(image: str, codec: str, rate: float, bpp: float, psnr: float, **extra) -> Record:
    return Record(
        dataset="kodak",
        image_id=image,
        codec=codec,
        rate_param="quality",
        rate=rate,
        bpp=bpp,
        bytes=round(bpp * 64 * 64 / 8),
        height=64,
        width=64,
        values={"mse": 255.0**2 / 10 ** (psnr / 10), "psnr_rgb": psnr, "ms_ssim_db": psnr / 3},
        **extra,
    )


# Per image: codec -> [(bpp, psnr), ...].
IMAGES = {
    "img1": {
        "a": [(0.3, 27.0), (0.6, 30.5), (1.2, 34.0), (2.4, 37.5)],
        "b": [(0.25, 27.4), (0.5, 31.0), (1.0, 34.2), (2.0, 37.9)],
    },
    "img2": {
        "a": [(0.2, 25.0), (0.5, 29.0), (1.1, 33.1), (2.3, 36.0)],
        "b": [(0.2, 26.0), (0.45, 29.9), (1.0, 33.5), (2.1, 36.6)],
    },
    "img3": {  # b's PSNR dips: BD-rate undefined for this image, BD-quality fine
        "a": [(0.3, 26.0), (0.7, 30.0), (1.3, 33.0), (2.5, 36.2)],
        "b": [(0.3, 26.5), (0.6, 30.4), (1.2, 30.1), (2.2, 36.5)],
    },
}


def fake_records() -> list[Record]:
    records = [REFERENCE_RECORD]
    for image, codecs in IMAGES.items():
        for codec, points in codecs.items():
            records += [record(image, codec, i, b, q) for i, (b, q) in enumerate(points)]
    # a failed record costs nothing; a resumed run's retry replaces an earlier failure
    records.append(record("img1", "a", 9, 5.0, 99.0, status=ERROR, error="crashed"))
    records.insert(1, record("img2", "a", 0, 0.2, 10.0, status=ERROR, error="first try"))
    return records


REFERENCE_RECORD = record("img1", REFERENCE_CODEC, math.nan, 24.0, 60.0)


@pytest.mark.parametrize("method", METHODS)
def test_per_image_bd_averages_the_defined_images(package, method):
    rates, qualities = [], []
    for image, codecs in IMAGES.items():
        anchor, test = (Curve.of(*zip(*codecs[c], strict=True)) for c in ("a", "b"))
        rate, quality = reference(package, anchor, test, method, rate=image != "img3")
        rates += [rate] if image != "img3" else []
        qualities.append(quality)
    result = per_image_bd(fake_records(), "a", "b", "psnr_rgb", method)
    assert (result.anchor, result.test, result.metric, result.method) == (
        "a",
        "b",
        "psnr_rgb",
        method,
    )
    assert result.bd_rate == pytest.approx(np.mean(rates), abs=TOL)
    assert result.bd_quality == pytest.approx(np.mean(qualities), abs=TOL)
    assert result.warning == (
        "BD-rate left out 1 of 3 images: test: quality not rising with bpp (img3)"
    )
    assert 0 < result.overlap <= 1 and 0 < result.rate_overlap <= 1


def test_per_image_bd_says_which_images_it_cannot_use():
    records = [*fake_records(), record("img4", "a", 0, 0.5, 30.0), record("img4", "a", 1, 1, 33)]
    result = per_image_bd(records, "a", "b", "psnr_rgb")
    assert "BD-rate left out 2 of 4 images" in result.warning
    assert "test: too few points (img4)" in result.warning
    assert "BD-quality left out 1 of 4 images: test: too few points (img4)" in result.warning
    nothing = per_image_bd(records, "a", "zzz", "psnr_rgb")
    assert math.isnan(nothing.bd_rate) and math.isnan(nothing.bd_quality)
    assert "left out 4 of 4 images" in nothing.warning
    empty = per_image_bd([], "a", "b", "psnr_rgb")
    assert math.isnan(empty.bd_rate) and empty.warning == "no records of a or b"


def test_per_image_bd_on_real_records_matches_the_package(package, kodak_run):
    for metric in ("psnr_rgb", "ms_ssim_db"):
        for method in METHODS:
            rates, qualities = [], []
            for image in ("kodim01", "kodim02"):
                anchor, test = (
                    Curve.of(
                        *zip(
                            *[
                                (r.bpp, getattr(r, metric))
                                for r in kodak_run
                                if r.image_id == image and r.codec == codec
                            ],
                            strict=True,
                        )
                    )
                    for codec in ("jpeg", "webp")
                )
                rate, quality = reference(package, anchor, test, method)
                rates.append(rate)
                qualities.append(quality)
            result = per_image_bd(kodak_run, "jpeg", "webp", metric, method)
            assert result.bd_rate == pytest.approx(np.mean(rates), abs=TOL)
            assert result.bd_quality == pytest.approx(np.mean(qualities), abs=TOL)
            assert result.warning == ""


@pytest.mark.parametrize("method", METHODS)
def test_bd_matrix_on_aggregates(package, method):
    rows = aggregate(fake_records())
    curves = curves_from_aggregates(rows, "psnr_rgb")
    assert list(curves) == ["a", "b"]  # the reference codec is no curve
    mean_bpp = [np.mean([IMAGES[i]["a"][k][0] for i in IMAGES]) for k in range(4)]
    mean_psnr = [np.mean([IMAGES[i]["a"][k][1] for i in IMAGES]) for k in range(4)]
    assert list(curves["a"].bpp) == pytest.approx(mean_bpp, abs=1e-12)
    assert list(curves["a"].quality) == pytest.approx(mean_psnr, abs=1e-12)
    matrix = bd_matrix(rows, "psnr_rgb", method)
    assert [(r.anchor, r.test) for r in matrix] == [("a", "b"), ("b", "a")]
    for result in matrix:
        anchor, test = curves[result.anchor], curves[result.test]
        assert (result.bd_rate, result.bd_quality) == pytest.approx(
            reference(package, anchor, test, method), abs=TOL
        )
        assert result.metric == "psnr_rgb" and result.method == method
    ms_ssim = bd_matrix(rows, "ms_ssim_db", method)[0]
    assert ms_ssim.bd_quality == pytest.approx(matrix[0].bd_quality / 3, abs=TOL)
    no_miou = bd_matrix(rows, "miou", method)
    assert all(math.isnan(r.bd_rate) and "0 usable points" in r.warning for r in no_miou)


def test_bd_matrix_of_three_real_codecs_has_every_ordered_pair(kodak_run):
    third = [
        Record(**{**r.__dict__, "values": dict(r.values), "codec": "webp-copy", "bpp": r.bpp * 0.9})
        for r in kodak_run
        if r.codec == "webp"
    ]
    rows = aggregate([*kodak_run, *third])
    matrix = bd_matrix(rows, "psnr_rgb", "akima")
    pairs = [(r.anchor, r.test) for r in matrix]
    codecs = ["jpeg", "webp", "webp-copy"]
    assert pairs == [(a, t) for a in codecs for t in codecs if a != t]
    copy = next(r for r in matrix if (r.anchor, r.test) == ("webp", "webp-copy"))
    assert copy.bd_rate == pytest.approx(-10.0, abs=1e-9)


def test_curves_from_aggregates_skips_empty_rows_and_needs_one_dataset():
    records = fake_records()
    records += [record("img1", "c", 1, 1.0, 30.0, status=ERROR, error="x")]  # n_images == 0
    records += [Record(**{**r.__dict__, "dataset": "clic"}) for r in records if r.codec == "a"]
    rows = aggregate(records)
    assert any(r.codec == "c" and r.n_images == 0 for r in rows)
    with pytest.raises(UsageError, match="several datasets"):
        curves_from_aggregates(rows, "psnr_rgb")
    with pytest.raises(UsageError, match="several datasets"):
        per_image_bd(records, "a", "b", "psnr_rgb")
    kodak = curves_from_aggregates(rows, "psnr_rgb", dataset="kodak")
    assert list(kodak) == ["a", "b"]
    assert list(curves_from_aggregates(rows, "psnr_rgb", dataset="clic")) == ["a"]
    assert per_image_bd(records, "a", "b", "psnr_rgb", dataset="kodak") == per_image_bd(
        fake_records(), "a", "b", "psnr_rgb"
    )


def test_target_bpp_rows_join_their_codec_curve():
    rows = aggregate(fake_records())
    searched = [
        type(r)(**{**r.__dict__, "rate_param": "target_bpp", "rate": 0.5 + r.rate})
        for r in rows
        if r.codec == "b"
    ]
    assert (
        curves_from_aggregates(searched, "psnr_rgb")["b"]
        == curves_from_aggregates(rows, "psnr_rgb")["b"]
    )
