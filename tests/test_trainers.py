"""The trainer registry and the generic `bench train NAME`: a plugin's toy learned codec
(tests/toy_learned.py, registered through entry points) trains, checkpoints, resumes and codes
in `bench run`, with no change to bench; `bench train --help` lists what can be trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from plugins import install_plugin  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.codecs import CODECS  # noqa: E402
from bench.records import read_csv  # noqa: E402
from bench.training import TRAINERS  # noqa: E402

TOY = {
    "bench.trainers": {"toy": "toy_learned:ToyTraining"},
    "bench.codecs": {"toy": "toy_learned:ToyCodec"},
}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Two small synthetic images (smooth ramps and noise), 32x48."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:48]
    for i in range(2):
        base = np.stack([x * 5, y * 7, (x + y) * 3 + 40 * i], axis=-1).astype(np.float64)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    install_plugin(monkeypatch, tmp_path / "site", TOY, [TRAINERS, CODECS])


def test_a_plugin_trainable_trains_resumes_and_runs(
    toy: None, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "toy.pt"
    common = ["--dataset", "folder", "--data-dir", str(images), "--log-every", "2",
              "--checkpoint-every", "2", "--out", str(checkpoint)]  # fmt: skip
    assert main(["train", "toy", *common, "--steps", "4"]) == 0
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["format"] == "bench-toy-1"
    assert saved["config"] == {"width": 8}
    assert saved["training"]["step"] == 4
    assert saved["training"]["options"]["crop"] == [16, 16]  # the trainer's default
    assert saved["training"]["options"]["batch_size"] == 2
    capsys.readouterr()

    assert main(["train", "toy", *common, "--steps", "6", "--resume"]) == 0
    assert "resuming toy from" in capsys.readouterr().err
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["training"]["step"] == 6
    assert [r["step"] for r in saved["training"]["losses"]] == [2, 4, 6]

    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "toy", "--dataset", "folder", "--data-dir", str(images),
            "--rates", "toy=2,8", "--codec-option", f"toy.weights={checkpoint}",
            "--workers", "0", "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    records = read_csv(run_dir / "records.csv")
    assert len(records) == 4
    for record in records:
        assert record.ok, record.error
        assert record.bytes is not None and record.bytes > 17
        assert record.bpp == pytest.approx(8 * record.bytes / (32 * 48))
    by_rate = {r.rate: [x.bytes for x in records if x.rate == r.rate] for r in records}
    assert sum(by_rate[8.0]) > sum(by_rate[2.0])  # a finer step costs more bytes


def test_train_help_lists_the_trainers_and_each_ones_options(
    toy: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--help"])
    assert stopped.value.code == 0
    listing = capsys.readouterr().out
    for name in ("gan", "tic", "toy"):
        assert f"\n  {name} " in listing, listing
    assert "a toy conv autoencoder (tests)" in listing
    with pytest.raises(SystemExit) as stopped:
        main(["train", "toy", "--help"])
    assert stopped.value.code == 0
    usage = capsys.readouterr().out
    assert "bench train toy" in usage and "--width" in usage and "--steps" in usage


def test_unknown_trainer_is_a_usage_error_with_suggestions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", "gna", "--out", "x.pt"]) == 2
    assert "Did you mean 'gan'" in capsys.readouterr().err


def test_the_training_package_imports_no_codec() -> None:
    """Codecs sit above training: importing bench.training (and bench.weights) loads neither
    bench.codecs nor torch."""
    code = (
        "import sys, bench.training, bench.weights\n"
        "bad = sorted(m for m in sys.modules if m.startswith('bench.codecs') or m == 'torch')\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_codec_modules_import_neither_the_trainer_nor_torch() -> None:
    """Inference sits below training: loading the learned codecs' adapters (as `bench run` and
    `bench list codecs` do) imports no training module, and no torch until a model is built."""
    code = (
        "import sys\n"
        "import bench.codecs.learned.gan.codec, bench.codecs.learned.tic.codec\n"
        "import bench.codecs.learned.compressai_codecs\n"
        "bad = sorted(m for m in sys.modules if m.startswith('bench.training') or m == 'torch'\n"
        "             or m.endswith('.train'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
