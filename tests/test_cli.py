"""The command line: listing, argument errors and a small run."""

from __future__ import annotations

import json

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
    for name in CODECS.names():
        usable = lines[name].split()[1]
        assert usable in {"yes", "no"}
        if usable == "no":
            assert "To use:" in lines[name]


def test_list_datasets(capsys, kodak, monkeypatch):
    monkeypatch.setenv("BENCH_KODAK_DIR", str(kodak))
    assert main(["list", "datasets"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "kodak" in out and str(kodak) in out and " 24 " in out


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
