"""Crops at truly matched bpp (one target per row, searched where the codec can be searched)
and the summary's warning about a codec whose curve looks broken."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import synthetic_image

from bench.codecs import CODECS, create_codec
from bench.curves import Aggregate
from bench.datasets.folder import FolderDataset
from bench.metrics.base import Column
from bench.registry import Entry
from bench.report import write_report
from bench.report.crops import MAX_DEVIATION, search_target, searchable
from bench.report.sanity import MARGIN_DB, broken_codec_warnings
from bench.runner import plan_codec, run

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


SEARCHED_TOLERANCE = 0.05
"""How far a searched cell may be from its target: half a step of an integer quality scale,
which at these rates moves JPEG's and WebP's bpp by a few percent."""


class CropCells(HTMLParser):
    """The crops table of a report: row targets, and each codec cell's attributes and text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.targets: list[float] = []
        self.cells: list[dict[str, str]] = []
        self._in_crops = False
        self._cell: dict[str, str] | None = None
        self.feed(text[text.index('<section id="crops"') :])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and a.get("class") == "crops":
            self._in_crops = True
        elif self._in_crops and tag == "th" and "data-target" in a:
            self.targets.append(float(a["data-target"]))
        elif self._in_crops and tag == "td" and "data-codec" in a:
            self._cell = {**a, "text": ""}

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        elif tag == "table":
            self._in_crops = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> Path:
    """Two 192x256 crops of synthetic photographs."""
    folder = tmp_path_factory.mktemp("small")
    for number in (1, 2):
        pixels = synthetic_image(number)[100:292, 200:456]
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"small{number}.png")
    return folder


@pytest.fixture(scope="module")
def classical_run(small_images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("matched") / "run"
    plans = [plan_codec("jpeg", rates=[10, 45, 90]), plan_codec("webp", rates=[15, 55, 95])]
    run(FolderDataset(data_dir=small_images), plans, out, workers=0)
    return out


# --- crops at matched bpp --------------------------------------------------------------------


def test_each_searchable_cell_is_at_its_rows_target(classical_run):
    text = write_report(classical_run).read_text()
    page = CropCells(text)
    assert len(page.targets) == 3 and len(page.cells) == 6
    for cell in page.cells:
        target, bpp = float(cell["data-target"]), float(cell["data-bpp"])
        assert target in page.targets
        assert abs(bpp / target - 1) <= SEARCHED_TOLERANCE, cell
        assert cell["data-matched"] == "yes" and "not matched" not in cell["text"]
        assert f"{bpp:.3f} bpp (" in cell["text"]  # the actual bpp and its deviation
    searched = [c for c in page.cells if c["data-source"] == "search"]
    assert searched and all("coded here at the target" in c["text"] for c in searched)
    assert "not reproducible" not in text
    assert re.search(r"\d+ searches with \d+ trial codings", text)


def test_a_codec_with_only_far_points_is_marked_not_matched(
    classical_run, small_images, tmp_path, monkeypatch
):
    """A fixed-rate codec (checkpoints at 0.02 and 6 bpp, far outside jpeg's range) shows its
    nearest record and says it is not matched; it is not searched."""
    monkeypatch.setitem(
        CODECS._entries, "needs-weights", Entry("needs-weights", "fake_codecs:NeedsWeights")
    )
    weights = tmp_path / "weights.txt"
    weights.write_text("0.02 6.0")
    out = tmp_path / "run"
    plans = [
        plan_codec("jpeg", rates=[10, 45, 90]),
        plan_codec("needs-weights", {"weights": str(weights)}, rates=[0.02, 6.0]),
    ]
    run(FolderDataset(data_dir=small_images), plans, out, workers=0)
    text = write_report(out).read_text()
    page = CropCells(text)
    far = [c for c in page.cells if c["data-codec"] == "needs-weights"]
    assert len(far) == 3
    for cell in far:
        assert cell["data-source"] == "record" and cell["data-matched"] == "no"
        bpp, target = float(cell["data-bpp"]), float(cell["data-target"])
        assert bpp in (0.02, 6.0) and abs(bpp / target - 1) > MAX_DEVIATION
        assert f"not matched: nearest point is {bpp:.3f} bpp" in cell["text"]
    assert all(c["data-matched"] == "yes" for c in page.cells if c["data-codec"] == "jpeg")
    # Its reconstructions are black: the summary names it as likely broken.
    summary = text[text.index('<section id="summary"') : text.index('<section id="provenance"')]
    assert "needs-weights: PSNR mean" in summary
    assert "a likely broken model or wrong weights" in summary


class CountingCodec:
    """Wraps a codec and counts its encodes."""

    def __init__(self, codec) -> None:
        self.codec, self.encodes = codec, 0
        self.scale = codec.scale

    def encode(self, image, rate):
        self.encodes += 1
        return self.codec.encode(image, rate)

    def rate_for_bpp(self, bpp):
        return None


def test_the_search_makes_at_most_its_budget_of_trial_codings(small_images):
    image = np.asarray(Image.open(small_images / "small1.png").convert("RGB"))
    codec = CountingCodec(create_codec("jpeg"))
    coded: dict[float, bytes] = {}
    found = search_target(codec, image, 0.9, coded, budget=3)  # type: ignore[arg-type]
    assert codec.encodes == len(found.probes) == 3 and "stopped after 3 probes" in found.note
    again = search_target(codec, image, 0.9, coded)  # type: ignore[arg-type]
    assert codec.encodes < 3 + len(again.probes)  # the first search's bitstreams are reused
    assert abs(again.bpp / 0.9 - 1) <= SEARCHED_TOLERANCE


def test_only_codecs_free_to_take_any_rate_value_are_searched(tmp_path):
    from fake_codecs import NeedsWeights, QualityMapCodec

    assert searchable(create_codec("jpeg")) and searchable(create_codec("webp"))
    weights = tmp_path / "w.txt"
    weights.write_text("0.1 0.5")
    assert not searchable(NeedsWeights(weights=str(weights)))  # fixed checkpoints
    assert not searchable(QualityMapCodec())  # needs a per-image input

    class LearnedJpeg(type(create_codec("jpeg"))):  # type: ignore[misc]
        weight_options = ("weights",)  # a learned codec: probes would run its network

    assert not searchable(LearnedJpeg())


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
