"""Published reference curves: ``bench import``, ``bench references``, ``bench export`` and the
seed papers' points bench ships.

The BD-rate of a real bench run (jpeg and webp on three Kodak images) against a CompressAI
curve imported from its original JSON layout is checked against the PyPI ``bjontegaard``
package (PCHIP) to 1e-6; the CompressAI export is read back by bench and by CompressAI's own
plotting script.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.anchor import anchor_summary
from bench.bjontegaard import compare, curves_from_aggregates
from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.errors import UsageError
from bench.export import export_run, run_curves
from bench.references import (
    IMPORTED_ENV,
    read_compressai,
    read_csv_curves,
    resolve,
    shipped,
    write_references,
)
from bench.references.library import dataset_folder, import_files, list_references, slug
from bench.report import load_run

RATES = {"jpeg": [15, 30, 50, 70, 90], "webp": [10, 30, 50, 70, 90]}
HOSTILE = "we_b%p&#$x|y[1]~"


@pytest.fixture(scope="module")
def package():
    return pytest.importorskip(
        "bjontegaard", reason="the bjontegaard package (test extra) is not installed"
    )


@pytest.fixture(scope="module")
def kodak_run(real_kodak, tmp_path_factory) -> Path:
    """A real run: jpeg and webp at five rates on three Kodak images (a few seconds)."""
    from bench.api import run

    out = tmp_path_factory.mktemp("references") / "run"
    result = run(
        ["jpeg", "webp"],
        "kodak",
        out=out,
        rates=RATES,
        dataset_options={"data_dir": str(real_kodak)},
        limit=3,
        workers=0,
        download=False,
    )
    assert all(r.ok for r in result.records), [r.error for r in result.records if not r.ok]
    return result.directory


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """An empty imported-references directory of this test's own."""
    folder = tmp_path / "imported"
    monkeypatch.setenv(IMPORTED_ENV, str(folder))
    return folder


def compressai_file(tmp_path: Path, stem: str) -> Path:
    """A shipped Kodak curve rewritten in CompressAI's own layout: no ``bench`` block."""
    data = json.loads(shipped()[f"kodak/{stem}"].read_text(encoding="utf-8"))
    data.pop("bench")
    path = tmp_path / "compressai" / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# --- bench import ------------------------------------------------------------------------------


def test_a_compressai_json_imports_and_resolves_by_name(tmp_path, home, capsys):
    path = compressai_file(tmp_path, "webp")
    assert main(["import", "compressai", str(path), "--dataset", "kodak"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "imported WebP (kodak, 19 points" in out and "--reference kodak/webp" in out
    assert "names no source" in err and "states no licence" in err and "bench ships" in err
    stored = home / "kodak" / "webp.json"
    assert stored.is_file()
    (by_key,) = resolve("kodak/webp")
    (by_name,) = resolve("webp", dataset="kodak")
    original = read_compressai(shipped()["kodak/webp"])
    for curve in (by_key, by_name):
        assert curve.origin == str(stored)
        assert curve.results == original.results
        assert curve.source.startswith("unverified source (imported from ")
        assert curve.licence == "unverified source"
        assert curve.dataset == "kodak"
    assert json.loads(stored.read_text())["bench"]["dataset"] == "kodak"

    # Never replaced silently; --force replaces, --name stores under another stem.
    assert main(["import", "compressai", str(path), "--dataset", "kodak"]) == EXIT_USAGE
    assert "--force" in capsys.readouterr().err
    args = ["--dataset", "kodak", "--source", "CompressAI", "--licence", "BSD"]
    assert main(["import", "compressai", str(path), *args, "--force"]) == EXIT_OK
    assert resolve("kodak/webp")[0].source == "CompressAI"
    assert main(["import", "compressai", str(path), *args, "--name", "WebP old"]) == EXIT_OK
    assert resolve("kodak/webp-old")[0].name == "WebP old"
    err = capsys.readouterr().err
    assert "no source" not in err and "no licence" not in err


def test_bench_references_lists_shipped_and_imported(tmp_path, home, capsys):
    path = compressai_file(tmp_path, "vtm")
    import_files("compressai", [path], dataset="kodak", name="VTM mine")
    listed = list_references()
    keys = {(item.key, item.where) for item in listed}
    assert ("kodak/vtm", "shipped") in keys and ("kodak/vtm-mine", "imported") in keys
    assert ("clic/importance-map-autoencoder-2018", "shipped") in keys
    assert not any(item.error for item in listed)
    assert main(["references"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "kodak/vtm-mine" in out and "VTM mine: psnr_rgb_mean, ms_ssim_rgb_mean" in out
    assert "cityscapes/gan-vs-jpeg2000-test" in out and "licence: numbers reported" in out


def test_import_errors_name_the_file(tmp_path, home, capsys):
    no_bpp = tmp_path / "no-bpp.json"
    no_bpp.write_text(json.dumps({"name": "X", "results": {"psnr-rgb": [30.0]}}))
    not_json = tmp_path / "broken.json"
    not_json.write_text("{ this is not JSON")
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    good = compressai_file(tmp_path, "jpeg")
    for path, words in [
        (no_bpp, "'bpp'"),
        (not_json, "cannot be read as JSON"),
        (a_list, "no JSON object"),
        (good, "--dataset"),  # CompressAI's own files do not say their dataset
        (tmp_path / "missing.json", "does not exist"),
    ]:
        with pytest.raises(UsageError, match=words) as caught:
            import_files("compressai", [path])
        assert str(path) in str(caught.value)
        assert main(["import", "compressai", str(path)]) == EXIT_USAGE
        assert str(path) in capsys.readouterr().err
    no_bpp_csv = tmp_path / "no-bpp.csv"
    no_bpp_csv.write_text("name,dataset,psnr_rgb_mean\nX,kodak,30\n")
    with pytest.raises(UsageError, match="'bpp'") as caught:
        import_files("csv", [no_bpp_csv])
    assert str(no_bpp_csv) in str(caught.value)
    two = tmp_path / "two.csv"
    two.write_text("name,bpp,psnr_rgb_mean\nA,0.5,30\nB,0.5,31\n")
    with pytest.raises(UsageError, match="no dataset"):
        import_files("csv", [two])
    with pytest.raises(UsageError, match="--name renames one curve"):
        import_files("csv", [two], dataset="kodak", name="C")
    assert not home.exists()  # nothing was written by a failed import


def test_names_and_folders():
    assert dataset_folder("cityscapes/test@1024x512") == "cityscapes"
    assert dataset_folder("clic/2018-test") == "clic"
    assert slug("GAN (segmenter trained on uncoded)") == "gan-segmenter-trained-on-uncoded"
    assert slug("../../etc") == "etc"


# --- BD-rate against an imported CompressAI curve, against the package ---------------------


@pytest.mark.parametrize("stem", ["jpeg", "webp"])
def test_bd_rate_against_an_imported_compressai_curve_matches_the_package(
    kodak_run, package, tmp_path, home, stem
):
    path = compressai_file(tmp_path, stem)
    assert main(["import", "compressai", str(path), "--dataset", "kodak"]) == EXIT_OK
    (published,) = resolve(f"kodak/{stem}")
    run = load_run(kodak_run)
    rows = [*run.aggregates, *published.aggregates(run.dataset_tag)]
    summary = anchor_summary(rows, run.columns, published.label)
    assert summary.anchor == published.label
    assert [c.name for c in summary.columns] == ["psnr_rgb_mean", "ms_ssim_db_mean"]
    row = next(r for r in summary.rows if r.codec == "jpeg")
    ours = [r for r in run.aggregates if r.codec == "jpeg"]
    theirs = published.columns()
    checked = 0
    for column in summary.columns:
        test_bpp = [r.bpp_mean for r in ours]
        test_quality = [r.get(column.name) for r in ours]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = package.bd_rate(
                list(theirs["bpp_mean"]),
                list(theirs[column.name]),
                test_bpp,
                test_quality,
                method="pchip",
                require_matching_points=False,
                min_overlap=0,
            )
        got = row.results[column.name].bd_rate
        assert math.isfinite(got)
        assert got == pytest.approx(expected, abs=1e-6)
        # The same through compare() on the curves, and the same against the shipped copy.
        curves = curves_from_aggregates(rows, column.name)
        assert compare(curves[published.label], curves["jpeg"]).bd_rate == got
        checked += 1
    assert checked == 2
    (ship,) = [c for c in resolve(str(shipped()[f"kodak/{stem}"]))]
    assert ship.results == published.results


# --- bench export ------------------------------------------------------------------------------


def test_compressai_export_round_trips_through_import_and_compressai_plot(
    kodak_run, tmp_path, home, capsys
):
    plot = pytest.importorskip("compressai.utils.plot.__main__", reason="compressai is absent")
    out = tmp_path / "export"
    assert main(["export", str(kodak_run), "--format", "compressai", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["jpeg.json", "webp.json"]
    run = load_run(kodak_run)
    for codec in ("jpeg", "webp"):
        path = out / f"{codec}.json"
        data = json.loads(path.read_text())
        assert data["bench"]["dataset"] == "kodak" and data["bench"]["images"] == 3
        assert (
            data["bench"]["kind"] == "curve" and str(kodak_run.resolve()) in data["bench"]["source"]
        )
        assert set(data["results"]) >= {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time"}
        assert "ssim_rgb_mean" in data["results"] and "n_ms_ssim" not in data["results"]
        assert main(["import", "compressai", str(path), "--licence", "CC0"]) == EXIT_OK
        (curve,) = resolve(f"kodak/{codec}")
        rows = sorted((r for r in run.aggregates if r.codec == codec), key=lambda r: r.bpp_mean)
        columns = curve.columns()
        for name in ("bpp_mean", "psnr_rgb_mean", "ms_ssim_rgb_mean", "encode_s_mean"):
            assert list(columns[name]) == [r.get(name) for r in rows]  # exactly
        psnr = plot.parse_json_file(path, "psnr")
        assert psnr["name"] == codec
        assert psnr["xs"] == [r.bpp_mean for r in rows]
        assert psnr["ys"] == [r.psnr_rgb_mean for r in rows]
        ms_ssim = plot.parse_json_file(path, "ms-ssim")
        db = -10 * np.log10(1 - np.array([r.ms_ssim_rgb_mean for r in rows]))
        np.testing.assert_array_equal(ms_ssim["ys"], db)
    err = capsys.readouterr().err
    assert "no source" not in err and "no licence" not in err  # a source in the file, --licence
    assert main(["export", str(kodak_run), "--format", "compressai", "--out", "-"]) == EXIT_USAGE


def test_csv_export_round_trips(kodak_run, tmp_path, home, capsys):
    path = tmp_path / "curves.csv"
    assert main(["export", str(kodak_run), "--format", "csv", "--out", str(path)]) == EXIT_OK
    expected, _ = run_curves(load_run(kodak_run))
    back = read_csv_curves(path)
    assert [c.name for c in back] == ["jpeg", "webp"]
    for got, want in zip(back, expected, strict=True):
        assert got.results == want.results and got.dataset == want.dataset == "kodak"
    assert main(["import", "csv", str(path)]) == EXIT_OK
    assert resolve("kodak/webp")[0].results == expected[1].results
    capsys.readouterr()
    assert main(["export", str(kodak_run), "--format", "csv", "--out", "-"]) == EXIT_OK
    assert capsys.readouterr().out == path.read_text()
    default = export_run(kodak_run, "csv")
    assert default.paths == (kodak_run / "export" / "curves.csv",)
    assert export_run(kodak_run, "markdown", out=tmp_path).paths == (tmp_path / "anchor.md",)


def test_tables_state_the_anchor_every_codec_and_the_mean(kodak_run, capsys):
    assert main(["export", str(kodak_run), "--format", "markdown", "--out", "-"]) == EXIT_OK
    markdown = capsys.readouterr().out
    assert "**BD-rate against jpeg** (kodak)" in markdown
    assert "| Codec | PSNR mean \\[dB\\] | MS-SSIM \\[dB\\] | Mean |" in markdown
    assert "| webp | " in markdown and "PCHIP" in markdown and "| jpeg | quality 15 |" in markdown
    summary = anchor_summary(load_run(kodak_run).aggregates, load_run(kodak_run).columns)
    (webp,) = summary.rows
    assert f"| {webp.mean_bd_rate:+.2f} |" in markdown

    assert main(["export", str(kodak_run), "--format", "latex", "--anchor", "webp"]) == 0
    latex = (kodak_run / "export" / "anchor.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{BD-rate in \\%"):
        assert rule in latex
    assert "against the anchor webp" in latex and "\\\\\n" in latex and "PCHIP" in latex
    assert latex.count("\\begin{table}") == 2  # the BD table and the R-D points
    assert main(["export", str(kodak_run), "--format", "latex", "--anchor", "nope"]) == 2


def test_tables_escape_a_hostile_codec_name(kodak_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(kodak_run, copy)
    aggregates = copy / "aggregates.csv"
    with aggregates.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["codec"] = HOSTILE if row["codec"] == "webp" else row["codec"]
    with aggregates.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    latex = export_run(copy, "latex", out="-").text
    assert "we\\_b\\%p\\&\\#\\$x|y{[}1{]}\\textasciitilde{}" in latex
    assert HOSTILE not in latex
    markdown = export_run(copy, "markdown", out="-").text
    assert "we\\_b%p&\\#$x\\|y\\[1\\]~" in markdown
    assert HOSTILE not in markdown
    latex_anchor = export_run(copy, "latex", anchor=HOSTILE, out="-").text
    assert "against the anchor we\\_b\\%p" in latex_anchor


def test_references_in_a_run_are_exported_only_when_asked(kodak_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(kodak_run, copy, ignore=shutil.ignore_patterns("export"))
    write_references(resolve("kodak/vtm"), copy)
    plain = export_run(copy, "compressai")
    assert sorted(p.name for p in plain.paths) == ["jpeg.json", "webp.json"]
    both = export_run(copy, "compressai", out=tmp_path / "both", with_references=True)
    assert sorted(p.name for p in both.paths) == ["jpeg.json", "published-vtm.json", "webp.json"]
    table = export_run(copy, "markdown", anchor="VTM", out="-", with_references=True).text
    assert "**BD-rate against VTM (published)**" in table and "| jpeg | " in table
    assert "the mean over 24 images of kodak; this run has 3" in table
    assert "VTM" not in export_run(copy, "markdown", out="-").text


# --- the seed papers' points ------------------------------------------------------------------


def test_the_seed_papers_points_are_shipped():
    clic = {c.name: c for c in resolve("importance-map-autoencoder-2018")}
    assert set(clic) == {
        "JPEG (Alexandre 2018)",
        "BPG (Alexandre 2018)",
        "NCTU importance-map AE (Alexandre 2018)",
    }
    ours = clic["NCTU importance-map AE (Alexandre 2018)"].columns()
    assert ours["bpp_mean"] == (0.126,) and ours["psnr_rgb_pooled"] == (26.3,)
    assert ours["ms_ssim_rgb_mean"] == (0.9242,) and "psnr_rgb_mean" not in ours
    test = {c.name: c for c in resolve("cityscapes/gan-vs-jpeg2000-test")}
    assert len(test) == 6
    gan = test["GAN (segmenter trained on uncoded)"]
    assert gan.columns()["miou"] == (0.504,) and gan.columns()["psnr_rgb_mean"] == (27.73,)
    assert test["JPEG 2000 (segmenter fine-tuned on JPEG 2000)"].columns()["miou"] == (0.65,)
    val = {c.name: c.columns()["miou"] for c in resolve("gan-vs-jpeg2000-val")}
    assert val["GAN (segmenter fine-tuned on GAN)"] == (0.647,)
    mae = resolve("modulated-autoencoder-single-rate")[0].columns()
    assert mae["psnr_rgb_mean"][2] == 23.4678
    for key in [k for k, p in shipped().items() if p.suffix == ".csv"]:
        for curve in resolve(key):
            assert curve.kind == "points" and curve.licence.startswith("numbers reported")
            assert curve.source and all(0 <= v <= 1 for v in curve.columns().get("miou", ()))
