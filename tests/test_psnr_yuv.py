"""PSNR-Y/U/V and PSNR-YUV (BT.709 full range, 6:1:1) against hand-derived values and an
independent matrix route (the published BT.709 YCbCr coefficients, scikit-image's PSNR)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from bench.metrics.psnr_yuv import PsnrYuv, rgb_to_yuv
from bench.records import Record

skimage_metrics = pytest.importorskip("skimage.metrics")

# ITU-R BT.709 full-range R'G'B' -> Y'CbCr as published with 6 decimals (e.g. Wikipedia
# "YCbCr", "ITU-R BT.709 conversion"). Rounded: each entry is within 5e-7 of the exact
# Kr/Kb-derived value.
PUBLISHED_709 = np.array(
    [
        [0.2126, 0.7152, 0.0722],
        [-0.114572, -0.385428, 0.5],
        [0.5, -0.454153, -0.045847],
    ]
)
# The same matrix to full precision from the equations of Rec. ITU-R BT.709-6, items 3.2-3.3:
# E'Y = 0.2126 R + 0.7152 G + 0.0722 B, E'Cb = (B - E'Y) / 1.8556, E'Cr = (R - E'Y) / 1.5748.
EXACT_709 = np.array(
    [
        [0.2126, 0.7152, 0.0722],
        [-0.2126 / 1.8556, -0.7152 / 1.8556, (1 - 0.0722) / 1.8556],
        [(1 - 0.2126) / 1.5748, -0.7152 / 1.5748, -0.0722 / 1.5748],
    ]
)
OFFSET = np.array([0.0, 128.0, 128.0])


def pixel(r: int, g: int, b: int) -> np.ndarray:
    return np.array([[[r, g, b]]], np.uint8)


def db(mse: float) -> float:
    """PSNR of an MSE, peak 255, written out here rather than taken from bench."""
    return 10 * math.log10(255**2 / mse)


def reference_scores(original: np.ndarray, decoded: np.ndarray, matrix: np.ndarray) -> dict:
    """PSNR-Y/U/V and PSNR-YUV through a matrix product and scikit-image's PSNR."""
    planes = [img.astype(np.float64) @ matrix.T + OFFSET for img in (original, decoded)]
    psnr = [
        skimage_metrics.peak_signal_noise_ratio(
            planes[0][..., i], planes[1][..., i], data_range=255
        )
        for i in range(3)
    ]
    return {
        "psnr_y": psnr[0],
        "psnr_u": psnr[1],
        "psnr_v": psnr[2],
        "psnr_yuv": (6 * psnr[0] + psnr[1] + psnr[2]) / 8,
    }


# --- the conversion on known pixels, derived by hand from Kr = 0.2126, Kb = 0.0722 ----------

# (R, G, B) -> (Y, Cb, Cr). Y = 0.2126 R + 0.7152 G + 0.0722 B; Cb = (B - Y) / 1.8556 + 128;
# Cr = (R - Y) / 1.5748 + 128. Pure red: Y = 0.2126 * 255 = 54.213, Cb = 128 - 54.213 / 1.8556,
# Cr = 128 + 255 (1 - 0.2126) / 1.5748 = 128 + 127.5. Likewise for the others (to 1e-12).
KNOWN_PIXELS = [
    ((255, 0, 0), (54.213, 98.784112955378314, 255.5)),
    ((0, 255, 0), (182.376, 29.715887044621686, 12.191008382016764)),
    ((0, 0, 255), (18.411, 255.5, 116.308991617983236)),
    ((100, 150, 200), (142.98, 158.728605302866997, 100.707645415290831)),
    ((0, 0, 0), (0.0, 128.0, 128.0)),
    ((255, 255, 255), (255.0, 128.0, 128.0)),
    ((77, 77, 77), (77.0, 128.0, 128.0)),
]


@pytest.mark.parametrize(("rgb", "yuv"), KNOWN_PIXELS)
def test_conversion_of_known_pixels(rgb, yuv):
    converted = rgb_to_yuv(pixel(*rgb))
    assert converted.dtype == np.float64
    assert converted.shape == (1, 1, 3)
    assert converted[0, 0].tolist() == pytest.approx(yuv, abs=1e-9)


@pytest.mark.parametrize("level", [0, 1, 77, 128, 254, 255])
def test_grey_has_exactly_neutral_chroma(level):
    y, u, v = rgb_to_yuv(pixel(level, level, level))[0, 0]
    assert (u, v) == (128.0, 128.0)
    assert y == pytest.approx(level, abs=1e-12)


def test_conversion_is_neither_rounded_nor_clipped():
    # Cr of pure red and Cb of pure blue are 255.5: beyond 8 bits, kept as they are.
    assert rgb_to_yuv(pixel(255, 0, 0))[0, 0, 2] == 255.5
    assert rgb_to_yuv(pixel(0, 0, 255))[0, 0, 1] == 255.5
    assert rgb_to_yuv(pixel(0, 255, 0))[0, 0, 2] == pytest.approx(12.191008382016764)


def test_conversion_matches_the_published_coefficients():
    # The linear part of the conversion, read off unit inputs, is the published table.
    basis = np.eye(3)[:, None, :]  # (3, 1, 3): R, G, B unit vectors
    columns = rgb_to_yuv(basis)[:, 0, :] - OFFSET  # row j = image of unit vector j
    np.testing.assert_allclose(columns.T, PUBLISHED_709, rtol=0, atol=5e-7)
    np.testing.assert_allclose(columns.T, EXACT_709, rtol=0, atol=1e-12)  # 128 - x: ~1e-14


def test_rejects_non_rgb_and_mismatched_shapes():
    metric = PsnrYuv()
    with pytest.raises(ValueError, match="RGB"):
        rgb_to_yuv(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="mismatch"):
        metric.score(metric.prepare(np.zeros((4, 4, 3), np.uint8)), np.zeros((4, 5, 3), np.uint8))


# --- PSNR against the independent matrix route ---------------------------------------------


def noisy_pair(seed: int, shape: tuple[int, int], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    original = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    noise = rng.normal(0.0, sigma, original.shape)
    decoded = np.clip(np.rint(original + noise), 0, 255).astype(np.uint8)
    return original, decoded


@pytest.mark.parametrize(
    ("seed", "shape", "sigma"), [(0, (32, 48), 2.0), (1, (17, 5), 8.0), (2, (64, 64), 25.0)]
)
def test_matches_matrix_route_on_noisy_images(seed, shape, sigma):
    original, decoded = noisy_pair(seed, shape, sigma)
    metric = PsnrYuv()
    ours = metric.score(metric.prepare(original), decoded)
    # Full-precision matrix: same numbers up to float rounding.
    exact = reference_scores(original, decoded, EXACT_709)
    for name, value in exact.items():
        assert ours[name] == pytest.approx(value, rel=1e-9), name
    # The 6-decimal published table: its rounding (<= 1.1e-7 per entry) moves a plane's
    # difference by ~1e-6 relative, so the PSNRs agree to ~1e-5 dB, not to 1e-9.
    published = reference_scores(original, decoded, PUBLISHED_709)
    for name, value in published.items():
        assert ours[name] == pytest.approx(value, rel=1e-6, abs=1e-4), name
    # The MSEs through plain numpy on the same matrix.
    diff = (original.astype(np.float64) - decoded.astype(np.float64)) @ EXACT_709.T
    for i, plane in enumerate("yuv"):
        assert ours[f"mse_{plane}"] == pytest.approx(np.mean(diff[..., i] ** 2), rel=1e-9)


@pytest.mark.parametrize(("number", "quality"), [(4, 30), (23, 75)])
def test_matches_matrix_route_on_kodak_jpeg(kodim, number, quality):
    original = kodim(number)
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    metric = PsnrYuv()
    ours = metric.score(metric.prepare(original), decoded)
    exact = reference_scores(original, decoded, EXACT_709)
    for name, value in exact.items():
        assert ours[name] == pytest.approx(value, rel=1e-9), name
    value = ours["psnr_yuv"]
    assert isinstance(value, float) and 20 < value < 60


# --- known MSEs -------------------------------------------------------------------------


def test_identical_images_are_infinite():
    original, _ = noisy_pair(3, (8, 8), 1.0)
    metric = PsnrYuv()
    scores = metric.score(metric.prepare(original), original.copy())
    assert scores["mse_y"] == scores["mse_u"] == scores["mse_v"] == 0.0
    for name in ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv"):
        assert scores[name] == math.inf


@pytest.mark.parametrize(
    ("d", "expected_psnr_y"),
    # 20 log10(255 / d): by hand, 20 * 2.40654018 = 48.1308036 for d = 1, and so on.
    [(1, 48.130803608679102), (3, 38.588378514285855), (10, 28.130803608679102)],
)
def test_constant_offset_moves_only_luma(d, expected_psnr_y):
    rng = np.random.default_rng(4)
    original = rng.integers(0, 256 - d, (16, 24, 3), dtype=np.uint8)
    decoded = original + np.uint8(d)  # +d on R, G and B: Y + d, Cb and Cr unchanged
    metric = PsnrYuv()
    scores = metric.score(metric.prepare(original), decoded)
    assert scores["mse_y"] == pytest.approx(d * d, rel=1e-12)
    assert scores["mse_u"] == scores["mse_v"] == 0.0
    assert scores["psnr_u"] == scores["psnr_v"] == math.inf
    assert scores["psnr_y"] == pytest.approx(expected_psnr_y, rel=1e-12)
    assert scores["psnr_yuv"] == math.inf  # inf dominates the 6:1:1 mean


def test_one_blue_sample_off():
    # One of 4 pixels gets B + 40: dY = 0.0722 * 40 = 2.888, dCb = (40 - 2.888) / 1.8556 = 20,
    # dCr = -2.888 / 1.5748; each plane's MSE is d**2 / 4.
    original = np.zeros((2, 2, 3), np.uint8)
    decoded = original.copy()
    decoded[1, 0, 2] = 40
    metric = PsnrYuv()
    scores = metric.score(metric.prepare(original), decoded)
    mse = (2.888**2 / 4, 20.0**2 / 4, (2.888 / 1.5748) ** 2 / 4)
    assert [scores["mse_y"], scores["mse_u"], scores["mse_v"]] == pytest.approx(mse, rel=1e-12)
    psnr_y, psnr_u, psnr_v = (db(m) for m in mse)
    assert psnr_u == pytest.approx(10 * math.log10(65025 / 100))  # 28.1308 dB
    assert scores["psnr_y"] == pytest.approx(psnr_y, rel=1e-12)
    assert scores["psnr_u"] == pytest.approx(psnr_u, rel=1e-12)
    assert scores["psnr_v"] == pytest.approx(psnr_v, rel=1e-12)
    assert scores["psnr_yuv"] == pytest.approx((6 * psnr_y + psnr_u + psnr_v) / 8, rel=1e-12)


def test_prepare_is_the_original_planes_and_is_reused():
    original, decoded = noisy_pair(5, (12, 10), 6.0)
    metric = PsnrYuv()
    prepared = metric.prepare(original)
    assert prepared.dtype == np.float64
    assert prepared.shape == (12, 10, 3)
    kept = prepared.copy()
    first = metric.score(prepared, decoded)
    second = metric.score(prepared, np.flipud(decoded).copy())
    assert np.array_equal(prepared, kept)  # scoring leaves the preparation alone
    assert metric.score(prepared, decoded) == first
    assert second != first


# --- aggregates ----------------------------------------------------------------------------


def record(image_id: str, height: int | None, width: int | None, mses: tuple) -> Record:
    """A record whose PSNR columns follow from its MSEs (by this file's ``db``)."""
    values: dict = {f"mse_{p}": m for p, m in zip("yuv", mses, strict=True)}
    psnr = [math.inf if m == 0 else db(m) for m in mses]
    values.update({f"psnr_{p}": v for p, v in zip("yuv", psnr, strict=True)})
    values["psnr_yuv"] = (6 * psnr[0] + psnr[1] + psnr[2]) / 8
    return Record(dataset="d", image_id=image_id, height=height, width=width, values=values)


def test_aggregate_mean_and_pooled_by_hand():
    records = [
        record("a", 10, 10, (10.0, 2.0, 4.0)),  # 100 pixels
        record("b", 10, 30, (30.0, 6.0, 4.0)),  # 300 pixels
    ]
    agg = PsnrYuv().aggregate(records)
    assert set(agg) == {c.name for c in PsnrYuv.aggregate_columns}
    # Means of the per-image PSNRs.
    assert agg["psnr_y_mean"] == pytest.approx((db(10) + db(30)) / 2, rel=1e-12)
    assert agg["psnr_u_mean"] == pytest.approx((db(2) + db(6)) / 2, rel=1e-12)
    assert agg["psnr_v_mean"] == pytest.approx(db(4), rel=1e-12)
    yuv_a = (6 * db(10) + db(2) + db(4)) / 8
    yuv_b = (6 * db(30) + db(6) + db(4)) / 8
    assert agg["psnr_yuv_mean"] == pytest.approx((yuv_a + yuv_b) / 2, rel=1e-12)
    # Pooled MSEs: Y (10*100 + 30*300) / 400 = 25, U (2*100 + 6*300) / 400 = 5, V 4.
    pooled = (6 * 10 * math.log10(65025 / 25) + 10 * math.log10(65025 / 5) + db(4)) / 8
    assert agg["psnr_yuv_pooled"] == pytest.approx(pooled, rel=1e-12)
    assert agg["psnr_yuv_pooled"] == pytest.approx(36.0199660, abs=1e-6)


def test_aggregate_skips_missing_values_and_pools_an_identical_plane():
    records = [
        record("a", 10, 10, (10.0, 0.0, 4.0)),  # identical U: psnr_u = inf
        record("b", 10, 30, (30.0, 8.0, 4.0)),
        record("c", None, None, (1.0, 1.0, 1.0)),  # no size: counted in means, not pooled
        Record(dataset="d", image_id="e", height=8, width=8, values={}),  # failed: no values
    ]
    agg = PsnrYuv().aggregate(records)
    assert agg["psnr_u_mean"] == math.inf
    assert agg["psnr_yuv_mean"] == math.inf
    assert agg["psnr_y_mean"] == pytest.approx((db(10) + db(30) + db(1)) / 3, rel=1e-12)
    # Pooled over a and b only: Y 25, U (0*100 + 8*300) / 400 = 6, V 4 -- finite.
    pooled = (6 * db(25) + db(6) + db(4)) / 8
    assert agg["psnr_yuv_pooled"] == pytest.approx(pooled, rel=1e-12)


def test_aggregate_of_nothing_is_nan():
    agg = PsnrYuv().aggregate([])
    assert all(math.isnan(v) for v in agg.values())


def test_aggregate_of_records_read_back_from_csv(tmp_path):
    from bench.records import from_row, to_row

    records = [record("a", 4, 6, (3.0, 0.5, 0.25)), record("b", 6, 4, (0.0, 0.0, 0.0))]
    back = [from_row({k: str(v) for k, v in to_row(r).items()}) for r in records]
    assert PsnrYuv().aggregate(back) == PsnrYuv().aggregate(records)


# --- declaration and registration ----------------------------------------------------------


def test_columns():
    metric = PsnrYuv()
    assert metric.name == "psnr-yuv"
    assert [c.name for c in metric.record_columns] == [
        "mse_y", "mse_u", "mse_v", "psnr_y", "psnr_u", "psnr_v", "psnr_yuv",
    ]  # fmt: skip
    for column in metric.record_columns:
        assert column.higher_is_better is column.name.startswith("psnr")
    by_name = {c.name: c for c in metric.aggregate_columns}
    assert list(by_name) == [
        "psnr_yuv_mean", "psnr_y_mean", "psnr_u_mean", "psnr_v_mean", "psnr_yuv_pooled",
    ]  # fmt: skip
    main = by_name["psnr_yuv_mean"]
    assert (main.label, main.unit, main.digits) == ("PSNR-YUV", "dB", 2)
    assert main.higher_is_better is True
    assert main.bd and main.record == "psnr_yuv"
    assert main.plot is not None and main.plot.stem == "rd_psnr_yuv"
    assert by_name["psnr_yuv_pooled"].pooled and not by_name["psnr_yuv_pooled"].bd
    assert [by_name[f"psnr_{p}_mean"].record for p in "yuv"] == ["psnr_y", "psnr_u", "psnr_v"]
    assert all(c.higher_is_better for c in metric.aggregate_columns)
    assert set(metric.score(metric.prepare(pixel(1, 2, 3)), pixel(4, 5, 6))) == {
        c.name for c in metric.record_columns
    }


def test_registered():
    from bench.metrics import METRICS, create_metric

    assert "psnr-yuv" in METRICS
    assert isinstance(create_metric("psnr-yuv"), PsnrYuv)


# --- through the pipeline: records, aggregates, bd.csv, plots, report, bench check -------------


def test_psnr_yuv_reaches_every_output_through_its_metric_object(tmp_path, capsys):
    import csv

    from bench.cli import main
    from bench.records import read_csv

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        smooth = np.cumsum(rng.normal(0, 3, (176, 192, 3)), axis=1)
        Image.fromarray(np.clip(128 + smooth, 0, 255).astype(np.uint8)).save(images / f"{i}.png")
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "jpeg,webp", "--dataset", "folder", "--data-dir", str(images),
            "--rates", "jpeg=20,50,80", "--rates", "webp=20,50,80", "--metrics", "psnr,psnr-yuv",
            "--workers", "0", "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    records = read_csv(run_dir / "records.csv")
    original = np.asarray(Image.open(images / "0.png"))
    first = records[0]
    assert first.metrics == "psnr,psnr-yuv"
    with Image.open(images / f"{first.image_id}.png") as image:
        original = np.asarray(image.convert("RGB"))
    from bench.codecs import create_codec

    codec = create_codec("jpeg")
    decoded = codec.decode(codec.encode(original, first.rate))
    expected = PsnrYuv().score(PsnrYuv().prepare(original), decoded)
    assert first.get("psnr_yuv") == pytest.approx(expected["psnr_yuv"], rel=1e-12)
    with (run_dir / "aggregates.csv").open() as handle:
        aggregates = list(csv.DictReader(handle))
    assert {"psnr_yuv_mean", "psnr_yuv_pooled"} <= set(aggregates[0])
    with (run_dir / "bd.csv").open() as handle:
        assert "psnr_yuv" in {row["metric"] for row in csv.DictReader(handle)}
    assert (run_dir / "plots" / "rd_psnr_yuv.svg").is_file()
    report = (run_dir / "report.html").read_text()
    assert "PSNR-YUV [dB]" in report and "bd-psnr_yuv" in report
    # bench check judges it by its direction: a lower PSNR-YUV fails, a higher one passes.
    baseline = tmp_path / "baseline.csv"
    assert main(["baseline", str(run_dir), "--out", str(baseline)]) == 0
    rule = "psnr_yuv_mean:abs=0.01"
    assert main(["check", str(run_dir), "--baseline", str(baseline), "--rule", rule]) == 0
    text = baseline.read_text().replace(
        aggregates[0]["psnr_yuv_mean"], repr(float(aggregates[0]["psnr_yuv_mean"]) + 0.5), 1
    )
    baseline.write_text(text)
    capsys.readouterr()
    assert main(["check", str(run_dir), "--baseline", str(baseline), "--rule", rule]) == 4
    assert "psnr_yuv_mean" in capsys.readouterr().out
