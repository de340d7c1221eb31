"""The command line: listing, argument errors and a small run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.cli import EXIT_OK, EXIT_USAGE, main, parse_codec_options, parse_rates
from bench.codecs import CODECS


def test_list_codecs_shows_every_codec_and_how_to_use_it(capsys):
    assert main(["list", "codecs"]) == EXIT_OK
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert set(CODECS.names()) <= set(lines)
    assert "quality 1..100 (higher=better)" in lines["jpeg"]
    assert "qp 0..51 (lower=better)" in lines["bpg"]
    if lines["impmap"].split()[1] == "yes":  # one checkpoint per lambda: no sweep of its own
        assert "trained rates" in lines["impmap"]
    for name in CODECS.names():
        usable = lines[name].split()[1]
        assert usable in {"yes", "no"}
        if usable == "no":
            assert "To use:" in lines[name]


def test_list_codecs_imports_neither_torch_nor_compressai():
    """Listing says whether the learned codecs' packages are installed from their metadata;
    loading torch and CompressAI to find out took most of its time."""
    script = (
        "import sys\n"
        "from bench.cli import main\n"
        "assert main(['list', 'codecs']) == 0\n"
        "print(sorted(m for m in ('torch', 'compressai', 'torchvision') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_list_datasets(capsys, kodak, monkeypatch):
    monkeypatch.setenv("BENCH_KODAK_DIR", str(kodak))
    assert main(["list", "datasets"]) == EXIT_OK
    out = capsys.readouterr().out
    # bench prints the resolved path; ../shared may be a symlink
    assert "kodak" in out and str(kodak.resolve()) in out and " 24 " in out


def test_parse_rates_and_options():
    assert parse_rates(["jpeg=5,10", "webp=50", "jpeg=90"]) == {"jpeg": [5, 10, 90], "webp": [50]}
    assert parse_codec_options(["bpg.chroma=444", "jpeg.optimize=true", "jpeg2000.mode=psnr"]) == {
        "bpg": {"chroma": 444},
        "jpeg": {"optimize": True},
        "jpeg2000": {"mode": "psnr"},
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--codecs", "jpg"], "Did you mean 'jpeg'"),
        (["run", "--codecs", "jpeg", "--rates", "jpeg=abc"], "rates must be numbers"),
        (["run", "--codecs", "jpeg", "--rates", "jpeg=101"], "outside 1..100"),
        (["run", "--codecs", "jpeg", "--rates", "webp=50"], "not in --codecs"),
        (["run", "--codecs", "jpeg", "--codec-option", "jpeg.colour=1"], "unknown option colour"),
        (["run", "--codecs", "jpeg", "--codec-option", "chroma=444"], "CODEC.OPTION=VALUE"),
        (["run", "--codecs", "jpeg", "--dataset", "kodac"], "Did you mean 'kodak'"),
    ],
)
def test_usage_errors_exit_2_with_a_reason(capsys, argv, message):
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_run_then_curves(kodak, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "run",
        "--codecs",
        "jpeg,webp",
        "--rates",
        "jpeg=30,70",
        "--rates",
        "webp=50",
        "--codec-option",
        "jpeg.subsampling=444",
        "--data-dir",
        str(kodak),
        "--limit",
        "2",
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    assert main(argv) == EXIT_OK
    printed = capsys.readouterr().out
    assert f"results in {out}/" in printed and "aggregates.csv" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("bench run --codecs jpeg,webp")
    assert manifest["codecs"]["jpeg"]["options"]["subsampling"] == "444"
    assert manifest["codecs"]["jpeg"]["rates"] == [30.0, 70.0]
    before = (out / "aggregates.csv").read_text()
    (out / "aggregates.csv").unlink()
    assert main(["curves", str(out)]) == EXIT_OK
    assert (out / "aggregates.csv").read_text() == before
    assert main(argv) == EXIT_USAGE  # the directory holds results: --resume or another --out


def test_report_of_several_runs_writes_one_comparison_page(kodak, tmp_path, capsys, monkeypatch):
    runs = []
    for name, rates in (("first", "jpeg=30,70"), ("second", "jpeg=40,80")):
        out = tmp_path / name
        argv = ["run", "--codecs", "jpeg", "--rates", rates, "--data-dir", str(kodak),
                "--limit", "1", "--workers", "0", "--out", str(out)]  # fmt: skip
        assert main(argv) == EXIT_OK
        runs.append(str(out))
    capsys.readouterr()
    page = tmp_path / "pages" / "cmp.html"
    assert main(["report", *runs, "--out", str(page)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"wrote {page}"
    text = page.read_text()
    assert ">jpeg (run A)</text>" in text and ">jpeg (run B)</text>" in text
    assert 'id="bd-runs-psnr_rgb_mean"' in text
    # Without --out: reports/FIRST-vs-SECOND.html in the project.
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "project"))
    assert main(["report", *runs]) == EXIT_OK
    default = tmp_path / "project" / "reports" / "first-vs-second.html"
    assert capsys.readouterr().out.strip() == f"wrote {default}" and default.is_file()
    # One run: its own report.html, as before.
    assert main(["report", runs[0], "--no-crops"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"wrote {runs[0]}/report.html"


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "is not a directory"),
        ("empty", "no records.csv and no manifest.json"),
        ("twice", "is given twice"),
        ("crop", "--crop-image is for the report of one run"),
    ],
)
def test_report_of_several_runs_usage_errors_name_the_directory(tmp_path, capsys, which, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "records.csv").write_text("dataset,image_id\n")
    other = {"missing": tmp_path / "absent", "empty": tmp_path, "twice": run_dir,
             "crop": run_dir}[which]  # fmt: skip
    argv = ["report", str(run_dir), str(other), "--out", str(tmp_path / "x.html")]
    if which == "crop":
        argv = ["report", str(run_dir), str(tmp_path / "absent"), "--crop-image", "a"]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    if which in ("missing", "empty", "twice"):
        assert str(other) in err
    assert not (tmp_path / "x.html").exists()


def _aggregates(path):
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_cityscapes_val_sweep(cityscapes_root, tmp_path):
    out = tmp_path / "cs"
    argv = [
        "run",
        "--codecs",
        "jpeg",
        "--rates",
        "jpeg=10,60",
        "--dataset",
        "cityscapes",
        "--split",
        "val",
        "--data-dir",
        str(cityscapes_root),
        "--workers",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == EXIT_OK
    rows = _aggregates(out / "aggregates.csv")
    assert [r["dataset"] for r in rows] == ["cityscapes/val"] * 2
    for row in rows:
        assert row["n_images"] == "3" and row["n_failed"] == "0"
        assert 25 < float(row["psnr_rgb_pooled"]) <= float(row["psnr_rgb_mean"]) < 45
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["labels"] == 3 and manifest["dataset"]["split"] == "val"
    assert manifest["dataset"]["labels_from_labelIds"] == 0  # labelTrainIds preferred


def test_cityscapes_half_resolution_sweep(cityscapes_root, tmp_path):
    out = tmp_path / "half"
    argv = [
        "run",
        "--codecs",
        "webp",
        "--rates",
        "webp=50",
        "--dataset",
        "cityscapes",
        "--split",
        "train",
        "--resolution",
        "half",
        "--limit",
        "2",
        "--data-dir",
        str(cityscapes_root),
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    assert main(argv) == EXIT_OK
    records = _aggregates(out / "records.csv")
    assert len(records) == 2
    assert {(r["width"], r["height"]) for r in records} == {("1024", "512")}
    assert records[0]["dataset"] == "cityscapes/train@1024x512"


def test_clic_sweep_keeps_pooled_and_mean_psnr(clic_dir, tmp_path):
    out = tmp_path / "clic"
    argv = [
        "run",
        "--codecs",
        "jpeg",
        "--rates",
        "jpeg=20",
        "--dataset",
        "clic",
        "--data-dir",
        str(clic_dir),
        "--workers",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == EXIT_OK
    (row,) = _aggregates(out / "aggregates.csv")
    records = _aggregates(out / "records.csv")
    assert row["dataset"] == "clic/professional-valid" and row["n_images"] == "5"
    import math

    mses = [(float(r["mse"]), int(r["height"]) * int(r["width"])) for r in records]
    pooled = 10 * math.log10(255**2 / (sum(m * n for m, n in mses) / sum(n for _, n in mses)))
    mean = sum(float(r["psnr_rgb"]) for r in records) / len(records)
    assert float(row["psnr_rgb_pooled"]) == pytest.approx(pooled, abs=1e-9)
    assert float(row["psnr_rgb_mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(row["psnr_rgb_pooled"]) != pytest.approx(mean, abs=1e-3)  # images differ in size
