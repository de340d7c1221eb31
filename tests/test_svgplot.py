"""The report's own SVG plots (bench.report.svgplot) and the template's script that makes
them interactive, in headless Chromium."""

from __future__ import annotations

import math
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest
from test_report import open_in_chromium

from bench.curves import Aggregate, plot_rd
from bench.metrics.base import Column, Plot
from bench.report.page import fill, policy, template
from bench.report.svgplot import (
    Point,
    Series,
    bpp_range,
    log_ticks,
    nice_ticks,
    plot_series,
    render_plot,
    value_range,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>\"'&"
PSNR = Column("psnr_rgb_mean", "PSNR", "dB", True, digits=2, plot=Plot("rd_psnr", "PSNR [dB]", "t"))


def sample() -> list[Series]:
    return [
        Series(
            "jpeg",
            (
                Point(0.4531, 32.17, "quality=75"),
                Point(0.1875, 27.5, "quality=20"),
                Point(1.25, 38.0, "quality=95"),
            ),
        ),
        Series(
            "VTM (published)",
            (Point(0.1, 30.0, "published=1"), Point(0.5, 36.0, "published=2")),
            "published",
        ),
        Series(HOSTILE, (Point(0.0625, 29.0, "q=<1>&'\""),)),
        Series("uncompressed", (Point(math.nan, 54.9, "uncompressed"),), "uncompressed"),
    ]


def draw(series: list[Series] | None = None, plot_id: str = "rd_psnr") -> str:
    return render_plot(
        sample() if series is None else series,
        x_label="bits per pixel",
        y_label="PSNR [dB]",
        metric="PSNR [dB]",
        title="Kodak <24>",
        plot_id=plot_id,
    )


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


def circles(root: ElementTree.Element, scale: str) -> list[ElementTree.Element]:
    group = root.find(f".//{SVG}g[@data-scale='{scale}']")
    assert group is not None, scale
    return group.findall(f".//{SVG}circle[@class='pt']")


def translate(element: ElementTree.Element) -> tuple[float, float]:
    found = re.fullmatch(r"translate\(([-\d.]+) ([-\d.]+)\)", element.get("transform", ""))
    assert found, element.get("transform")
    return float(found[1]), float(found[2])


# --- the SVG ---------------------------------------------------------------------------------


def test_every_point_carries_its_values_and_a_native_tooltip():
    root = parse(draw())
    assert root.get("class") == "rd" and root.get("width") == "100%" and root.get("viewBox")
    points = circles(root, "linear")
    assert len(points) == 3 + 2 + 1
    first = points[0]  # jpeg sorted by bpp: quality=20 first
    assert first.get("data-series") == "0" and first.get("data-codec") == "jpeg"
    assert first.get("data-rate") == "quality=20" and first.get("data-bpp") == "0.1875"
    assert first.get("data-value") == "27.50" and first.get("data-metric") == "PSNR [dB]"
    title = first.find(f"{SVG}title")
    assert title is not None and title.text == "jpeg, quality=20, 0.1875 bpp, PSNR [dB] 27.50"
    xs = [float(p.get("cx")) for p in points if p.get("data-series") == "0"]
    assert xs == sorted(xs)


def test_names_and_labels_are_escaped():
    svg = draw()
    assert "<script>" not in svg and "alert(1)</script>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in svg
    root = parse(svg)  # well-formed XML whatever the names
    hostile = [p for p in circles(root, "linear") if p.get("data-series") == "2"]
    assert hostile[0].get("data-codec") == HOSTILE and hostile[0].get("data-rate") == "q=<1>&'\""
    legend = root.findall(f".//{SVG}g[@class='legend-item']")
    assert legend[2].find(f"{SVG}text").text == HOSTILE
    assert root.find(f"{SVG}title").text == "Kodak <24>"


def test_output_is_deterministic():
    assert draw() == draw()
    assert draw() == draw(list(sample()))


def test_legend_is_outside_the_plot_area_and_its_entries_are_buttons():
    root = parse(draw())
    frame = root.find(f"{SVG}rect[@class='frame']")
    right = float(frame.get("x")) + float(frame.get("width"))
    legend = root.find(f"{SVG}g[@class='legend']")
    left, top = translate(legend)
    assert left > right
    width = float(root.get("viewBox").split()[2])
    items = legend.findall(f"{SVG}g[@class='legend-item']")
    assert [i.get("data-series") for i in items] == ["0", "1", "2", "3"]
    for item in items:
        assert item.get("role") == "button" and item.get("tabindex") == "0"
        _, dy = translate(item)
        rect = item.find(f"{SVG}rect")
        assert left + float(rect.get("x")) > right
        assert left + float(rect.get("x")) + float(rect.get("width")) <= width
        assert top + dy < float(root.get("viewBox").split()[3])
    texts = [i.find(f"{SVG}text").text for i in items]
    assert texts[:2] == ["jpeg", "VTM (published)"] and texts[3] == "uncompressed (54.9)"


def test_a_single_point_gets_a_sensible_range():
    root = parse(draw([Series("one", (Point(0.0625, 31.0, "quality=5"),))]))
    ticks = [
        float(t.text)
        for t in root.find(f".//{SVG}g[@data-scale='linear']").findall(f"{SVG}text")
        if t.get("class") != "xlabel"
    ]
    assert len(ticks) >= 3 and max(ticks) - min(ticks) >= 0.02  # not 0.0620 to 0.0630
    assert bpp_range([0.0625]) == (0.046875, 0.078125)
    assert bpp_range([0.2, 0.2, 0.2])[1] - bpp_range([0.2])[0] == pytest.approx(0.1)
    lo, hi = value_range([31.0])
    assert hi - lo >= 1.0 and lo < 31 < hi
    lo, hi = value_range([0.9])
    assert 0 < hi - lo < 0.5
    y_ticks = [float(t.text) for t in root.find(f"{SVG}g[@class='yaxis']").findall(f"{SVG}text")]
    assert len(y_ticks) >= 3 and min(y_ticks) < 31 < max(y_ticks)
    point = circles(root, "linear")[0]
    frame = root.find(f"{SVG}rect[@class='frame']")
    x0, w = float(frame.get("x")), float(frame.get("width"))
    assert x0 + 0.3 * w < float(point.get("cx")) < x0 + 0.7 * w  # in the middle, not an edge


def test_ranges_start_at_zero_for_rates_and_ticks_are_round():
    assert bpp_range([0.01, 2.0])[0] == 0.0
    assert nice_ticks(27.1, 39.0) == [28.0, 30.0, 32.0, 34.0, 36.0, 38.0]
    assert log_ticks(0.05, 3.0) == [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    assert len(log_ticks(0.3, 0.45)) >= 2  # no 1-2-5 tick inside: round linear ones


def test_log_scale_is_a_second_hidden_group_without_non_positive_rates():
    series = [
        Series("a", (Point(0.0, 20.0, "q=0"), Point(0.1, 25.0, "q=1"), Point(1.0, 30, "q=2")))
    ]
    root = parse(draw(series))
    linear = root.find(f".//{SVG}g[@data-scale='linear']")
    log = root.find(f".//{SVG}g[@data-scale='log']")
    assert linear.get("class") == "xscale linear" and linear.get("display") is None
    assert log.get("class") == "xscale log" and log.get("display") == "none"
    assert len(circles(root, "linear")) == 3 and len(circles(root, "log")) == 2
    labels = [t.text for t in log.findall(f"{SVG}text") if t.get("class") != "xlabel"]
    assert labels == ["0.1", "0.2", "0.5", "1"]
    only_zero = parse(draw([Series("z", (Point(0.0, 20.0, "q=0"),))]))
    assert only_zero.find(f".//{SVG}g[@data-scale='log']") is None


def test_published_is_dashed_and_hollow_uncompressed_a_black_dashed_line():
    root = parse(draw())
    lines = {
        p.get("data-series"): p
        for p in root.find(f".//{SVG}g[@data-scale='linear']").iter(f"{SVG}polyline")
    }
    assert lines["0"].get("stroke-dasharray") is None
    assert lines["1"].get("stroke-dasharray")
    published = [p for p in circles(root, "linear") if p.get("data-series") == "1"]
    assert {p.get("fill") for p in published} == {"#ffffff"}
    assert published[0].get("stroke") == lines["1"].get("stroke") != "#ffffff"
    reference = root.find(f"{SVG}line[@class='ref']")
    assert reference.get("data-series") == "3" and reference.get("stroke") == "#000000"
    assert reference.get("stroke-dasharray")
    frame = root.find(f"{SVG}rect[@class='frame']")
    assert float(reference.get("x1")) == float(frame.get("x"))
    assert float(reference.get("x2")) == float(frame.get("x")) + float(frame.get("width"))
    colours = [lines[k].get("stroke") for k in ("0", "1", "2")]
    assert len(set(colours)) == 3


def row(codec: str, rate_param: str, rate: float, bpp: float, psnr: float, n: int = 2):
    return Aggregate("kodak", codec, rate_param, rate, n, 0, bpp, bpp, 0.1, 0.1,
                     {"psnr_rgb_mean": psnr})  # fmt: skip


def test_plot_series_from_aggregates():
    rows = [
        row("none", "none", 0, 24.0, 60.0),
        row("jpeg", "quality", 75, 0.9, 33.0),
        row("jpeg", "quality", 20, 0.3, 28.5),
        row("jpeg", "quality", 10, math.nan, 26.0),  # no finite rate: left out
        row("jpeg", "quality", 5, 0.1, 25.0, n=0),  # no image coded: left out
        row("VTM (published)", "published", 1, 0.2, 31.0),
        row("webp", "quality", 50, 0.5, math.nan),  # nothing to plot
    ]
    found = plot_series(rows, PSNR)
    assert [(s.name, s.style) for s in found] == [
        ("jpeg", "codec"),
        ("VTM (published)", "published"),
        ("uncompressed", "uncompressed"),
    ]
    assert [p.rate for p in found[0].points] == ["quality=75", "quality=20"]
    assert found[1].points[0] == Point(0.2, 31.0, "published=1")
    assert found[2].points[0].value == 60.0
    scaled = plot_series(rows, Column("psnr_rgb_mean", "x", scale=0.5))
    assert scaled[0].points[0].value == 16.5
    svg = draw(found)
    assert ">uncompressed (60.0)</text>" in svg


def test_plot_rd_keeps_files_for_papers_with_published_curves_dashed(tmp_path: Path):
    rows = [
        row("jpeg", "quality", 75, 0.0625, 33.0),  # one rate point
        row("VTM (published)", "published", 1, 0.0625, 35.0),
    ]
    written = plot_rd(rows, [PSNR], tmp_path)
    assert sorted(p.name for p in written) == ["rd_psnr.png", "rd_psnr.svg"]
    text = (tmp_path / "rd_psnr.svg").read_text()
    assert "stroke-dasharray" in text  # the published curve
    ticks = re.findall(r"<!-- (\d\.\d+) -->", text)
    assert ticks and max(map(float, ticks)) - min(map(float, ticks)) >= 0.02


# --- the page's script -----------------------------------------------------------------------


def page_with_plots(tmp_path: Path) -> Path:
    figure = f'<figure class="plot">{draw()}<figcaption>PSNR</figcaption></figure>'
    second = f'<figure class="plot">{draw(sample()[:1], "two")}<figcaption>b</figcaption></figure>'
    text = fill(
        title="plots", subtitle="", nav="", body=f'<section id="plots">{figure}{second}</section>',
        footer="",
    )  # fmt: skip
    path = tmp_path / "plots.html"
    path.write_text(text)
    return path


def test_template_keeps_one_script_that_the_policy_allows():
    text = template()
    assert text.count("<script") == 1
    script = re.search(r"<script>(.*?)</script>", text, re.DOTALL)[1]
    assert "innerHTML" not in script and "eval" not in script
    assert "script-src 'sha256-" in policy(text)


def test_tooltips_legend_toggles_and_log_x_in_chromium(tmp_path: Path):
    path = page_with_plots(tmp_path)

    def inspect(page):
        seen = {}
        plot = page.locator("figure.plot svg.rd").first
        page.hover("circle.pt >> nth=0")
        tip = page.locator(".plot-tip")
        seen["tip"] = tip.inner_text() if tip.is_visible() else ""
        page.hover('circle.pt[data-series="2"] >> nth=0')
        seen["hostile_tip"] = tip.inner_text()
        page.mouse.move(1, 1)
        seen["tip_after"] = tip.is_visible()
        seen["titles"] = page.locator("circle.pt title").count()
        seen["label"] = page.locator("circle.pt >> nth=0").get_attribute("aria-label")
        visible = 'figure.plot >> nth=0 >> g.xscale.linear circle.pt[data-series="0"]'
        seen["before"] = page.locator(visible).evaluate_all(
            "ps => ps.filter(p => p.getBoundingClientRect().width > 0).length"
        )
        plot.locator('g.legend-item[data-series="0"]').click()
        seen["after"] = page.locator(visible).evaluate_all(
            "ps => ps.filter(p => p.getBoundingClientRect().width > 0).length"
        )
        item = plot.locator('g.legend-item[data-series="0"]')
        seen["pressed"] = item.get_attribute("aria-pressed")
        seen["dimmed"] = item.evaluate("e => getComputedStyle(e).opacity")
        other = page.locator('figure.plot >> nth=1 >> circle.pt[data-series="0"]').first
        seen["other_plot"] = other.is_visible()  # a toggle stays inside its own plot
        plot.locator('g.legend-item[data-series="1"]').focus()
        page.keyboard.press("Enter")
        seen["published_hidden"] = not plot.locator(
            'g.xscale.linear circle.pt[data-series="1"]'
        ).first.is_visible()
        box = page.locator("figure.plot >> nth=0 >> input.logx")
        seen["log_before"] = plot.locator("g.xscale.log").is_visible()
        box.check()
        seen["log_after"] = plot.locator("g.xscale.log").is_visible()
        seen["linear_after"] = plot.locator("g.xscale.linear").is_visible()
        seen["log_series_hidden"] = not plot.locator(
            'g.xscale.log circle.pt[data-series="0"]'
        ).first.is_visible()
        page.locator("figure.plot >> nth=0 >> button.reset").click()
        seen["reset"] = [
            plot.locator("g.xscale.linear").is_visible(),
            box.is_checked(),
            plot.locator("g.legend-item.off").count(),
            plot.locator('g.xscale.linear circle.pt[data-series="0"]').first.is_visible(),
        ]
        return seen

    seen = open_in_chromium(path, tmp_path / "plots.png", inspect)
    assert seen["console"] == [] and seen["errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == [path.resolve().as_uri()]  # nothing fetched but the file
    found = seen["inspected"]
    assert found["tip"].split("\n") == ["jpeg", "quality=20", "0.1875 bpp", "PSNR [dB]: 27.50"]
    assert found["hostile_tip"].split("\n")[0] == HOSTILE  # as text, not markup
    assert found["tip_after"] is False
    assert found["titles"] == 0 and found["label"].startswith("jpeg, quality=20")
    assert found["before"] == 3 and found["after"] == 0
    assert found["pressed"] == "false" and float(found["dimmed"]) < 0.5
    assert found["other_plot"] and found["published_hidden"]
    assert found["log_before"] is False and found["log_after"] and not found["linear_after"]
    assert found["log_series_hidden"]
    assert found["reset"] == [True, False, 0, True]
