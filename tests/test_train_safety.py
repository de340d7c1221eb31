"""Issue 23, the training side: nothing lost or mixed in training and learned-codec runs.

A diverged run stops (non-zero) and keeps its last good checkpoint; checkpoints with NaN or
infinite tensors are refused wherever they are loaded; a trained checkpoint is never replaced
without --resume; one writer per checkpoint; a resume keeps (and checks) its hyper-parameters;
the same seed gives the same checkpoint tensors; a garbage file is named as not a checkpoint;
an --out that cannot be a checkpoint file is refused before any training.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from plugins import install_plugin  # noqa: E402
from toy_learned import ToyTrainable  # noqa: E402

from bench.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main  # noqa: E402
from bench.codecs import CODECS, create_codec  # noqa: E402
from bench.datasets import open_dataset  # noqa: E402
from bench.training import (  # noqa: E402
    TRAINERS,
    AmpContext,
    ImageSampler,
    Trainer,
    TrainingDiverged,
    TrainingOptions,
)
from bench.weights import (  # noqa: E402
    WeightsError,
    load_state_dict,
    read_checkpoint,
    save_checkpoint,
)

TOY = {
    "bench.trainers": {"toy": "toy_learned:ToyTraining"},
    "bench.codecs": {"toy": "toy_learned:ToyCodec"},
}
GARBAGE = b"heeeeeeeeeee"
"""A file torch.load fails on with ``KeyError: 101`` (a pickle memo lookup)."""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small synthetic images, 32x64."""
    folder = tmp_path_factory.mktemp("safety-images")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:64]
    for i in range(2):
        base = np.stack([x * 4, y * 7, (x + y) * 3 + 40 * i], axis=-1).astype(np.float64)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_plugin(monkeypatch, tmp_path / "site", TOY, [TRAINERS, CODECS])


def toy_args(images: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "toy", "--dataset", "folder", "--data-dir", str(images), "--log-every",
            "1", "--checkpoint-every", "2", "--out", str(out), *extra]  # fmt: skip


def gan_args(images: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "gan", "--dataset", "folder", "--data-dir", str(images), "--width",
            "0.03125", "--bottleneck", "4", "--crop", "32x64", "--log-every", "1",
            "--out", str(out), *extra]  # fmt: skip


def poisoned(path: Path, module: str, out: Path) -> str:
    """Copy checkpoint ``path`` to ``out`` with NaN in one float tensor of ``module``; its name."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    name = next(k for k, v in state[module].items() if v.is_floating_point() and v.numel() > 1)
    state[module][name] = state[module][name].clone()
    state[module][name].view(-1)[0] = math.nan
    save_checkpoint(state, out)
    return f"{module}.{name}"


# --------------------------------------------------------------------------- case 1: divergence


class Diverging(ToyTrainable):
    """The toy, whose weights and loss become NaN from step ``at`` on."""

    def __init__(self, at: int, loss_too: bool = True) -> None:
        super().__init__(4, 1e-3)
        self.at, self.calls, self.loss_too = at, 0, loss_too

    def step(self, batch: torch.Tensor, amp: AmpContext) -> Mapping[str, float]:
        self.calls += 1
        losses = dict(super().step(batch, amp))
        if self.calls >= self.at:
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.nan)
            if self.loss_too:
                losses["loss"] = math.nan
        return losses


def test_a_diverged_run_stops_and_keeps_the_last_good_checkpoint(
    images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "toy.pt"
    sampler = ImageSampler(open_dataset("folder", {"data_dir": images}), crop=(16, 16), seed=0)
    options = TrainingOptions(steps=8, crop=(16, 16), checkpoint_every=2, out=out)
    lines: list[str] = []
    trainer = Trainer(Diverging(at=4), sampler, options, progress=False, log=lines.append)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 4: loss loss=nan.*keeps step 2"):
        trainer.run()
    saved = read_checkpoint(out, "toy")  # finite, or it would be refused
    assert saved["training"]["step"] == 2
    assert "loss=nan" in lines[-1]  # the progress line shows the NaN


def test_non_finite_weights_are_never_saved(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "toy.pt"
    sampler = ImageSampler(open_dataset("folder", {"data_dir": images}), crop=(16, 16), seed=0)
    options = TrainingOptions(steps=4, crop=(16, 16), checkpoint_every=2, out=out)
    trainer = Trainer(Diverging(at=2, loss_too=False), sampler, options, progress=False)
    with pytest.raises(TrainingDiverged, match=r"step 2: tensor model\..* is not finite.*nothing"):
        trainer.run()
    assert not out.exists()


def test_bench_train_gan_with_a_huge_learning_rate_fails_and_saves_nothing(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nan.pt"
    assert main(gan_args(images, out, "--steps", "4", "--lr", "1e30")) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "gan diverged at step 1" in err and "nothing was saved" in err
    assert "psnr=inf" not in err
    assert not out.exists()


def test_a_nan_psnr_is_never_shown_as_infinite() -> None:
    from bench.codecs.learned.gan.train import psnr_of_signed_mse
    from bench.codecs.learned.tic.train import psnr_of_mse

    assert math.isnan(psnr_of_mse(math.nan)) and math.isnan(psnr_of_signed_mse(math.nan))
    assert psnr_of_mse(0.0) == math.inf


def test_checkpoints_with_nan_tensors_are_refused_by_codecs_and_resume(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.pt"
    assert main(gan_args(images, good, "--steps", "1")) == EXIT_OK
    bad = tmp_path / "bad.pt"
    name = poisoned(good, "generator", bad)
    message = rf"{bad}: tensor {name} holds NaN or infinite values"
    with pytest.raises(WeightsError, match=message):
        create_codec("gan", {"weights": str(bad)}).encode(np.zeros((32, 32, 3), np.uint8), 0.03125)
    capsys.readouterr()
    assert main(gan_args(images, bad, "--steps", "2", "--resume")) == EXIT_ERROR
    assert f"tensor {name} holds NaN" in capsys.readouterr().err


# --------------------------------------------------------------------------- case 9: tic


def test_a_tic_checkpoint_with_nan_tensors_is_refused_at_load(tmp_path: Path) -> None:
    from bench.codecs.learned.tic.model import TicConfig
    from bench.codecs.learned.tic.train import TicTrainable

    folder = tmp_path / "tic-images"
    folder.mkdir()
    Image.fromarray(np.full((256, 256, 3), 90, np.uint8)).save(folder / "a.png")
    sampler = ImageSampler(open_dataset("folder", {"data_dir": folder}), crop=(256, 256))
    trainable = TicTrainable(TicConfig.preset("tiny"), total_steps=1, perlin_from=1)
    options = TrainingOptions(steps=1, crop=(256, 256), out=tmp_path / "tic.pt")
    Trainer(trainable, sampler, options, progress=False).save()
    bad = tmp_path / "bad-tic.pt"
    name = poisoned(tmp_path / "tic.pt", "model", bad)
    with pytest.raises(WeightsError, match=rf"{bad}: tensor {name.split('.', 1)[1]} holds NaN"):
        create_codec("tic", {"weights": str(bad)}).encode(np.zeros((64, 64, 3), np.uint8), 0.5)
    with pytest.raises(WeightsError, match=rf"{bad}: tensor .* holds NaN"):  # --init tic=PATH
        TicTrainable(TicConfig.preset("tiny"), total_steps=1, perlin_from=1, init=("tic", bad))


# --------------------------------------------------------------------------- case 2: overwrite


def test_a_trained_checkpoint_is_not_replaced_without_resume(
    toy: None, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "toy.pt"
    assert main(toy_args(images, out, "--steps", "4")) == EXIT_OK
    before = out.read_bytes()
    capsys.readouterr()
    assert main(toy_args(images, out, "--steps", "2")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "exists (a checkpoint trained 4 steps)" in err and "--resume" in err
    assert "another --out" in err and "step 1/" not in err  # refused before training
    assert out.read_bytes() == before


# --------------------------------------------------------------------------- case 4: locking


def test_a_second_training_into_the_same_out_is_refused(
    toy: None, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.training.out import out_lock

    out = tmp_path / "toy.pt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from pathlib import Path\nfrom bench.training.out import out_lock\n"
         "with out_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n"
         "    time.sleep(30)\n", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert main(toy_args(images, out, "--steps", "2")) == EXIT_USAGE
        err = capsys.readouterr().err
        assert f"being written by another bench train (process {holder.pid}" in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    with out_lock(out):  # released with its holder
        time.sleep(0)


# --------------------------------------------------------------------------- case 5: resume


@pytest.mark.parametrize("changed", [["--lr", "0.01"], ["--width", "4"]])
def test_a_resume_refuses_other_hyperparameters_and_config(
    toy: None, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    changed: list[str],
) -> None:  # fmt: skip
    out = tmp_path / "toy.pt"
    assert main(toy_args(images, out, "--steps", "2")) == EXIT_OK
    capsys.readouterr()
    assert main(toy_args(images, out, "--steps", "4", "--resume", *changed)) == EXIT_USAGE
    err = capsys.readouterr().err
    if changed[0] == "--lr":
        assert "keeps the checkpoint's hyper-parameters" in err
        assert "lr (checkpoint 0.001, now 0.01)" in err
    else:
        assert "width (checkpoint 8, now 4)" in err
    assert read_checkpoint(out, "toy")["training"]["step"] == 2


def test_a_gan_resume_refuses_another_learning_rate(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gan.pt"
    assert main(gan_args(images, out, "--steps", "1")) == EXIT_OK
    capsys.readouterr()
    assert main(gan_args(images, out, "--steps", "2", "--resume", "--lr", "1e-3")) == EXIT_USAGE
    assert "lr (checkpoint 0.0002, now 0.001)" in capsys.readouterr().err


# --------------------------------------------------------------------------- case 6: seeding


def tensors(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if torch.is_tensor(value):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}")

    for key in ("generator", "discriminator", "model", "optimizers"):
        if key in state:
            walk(state[key], key)
    return flat


def assert_same_tensors(a: Path, b: Path) -> None:
    first, second = tensors(a), tensors(b)
    assert first.keys() == second.keys() and first
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("name", ["gan", "toy"])
def test_the_same_seed_gives_the_same_checkpoint(
    toy: None, images: Path, tmp_path: Path, name: str
) -> None:
    args = gan_args if name == "gan" else toy_args
    for seed, run in enumerate(("a", "b")):
        torch.manual_seed(seed + 100)  # whatever state the process is in before the command
        assert main(args(images, tmp_path / f"{run}.pt", "--steps", "1")) == EXIT_OK
    assert_same_tensors(tmp_path / "a.pt", tmp_path / "b.pt")


# --------------------------------------------------------------------------- case 7: garbage


def test_a_garbage_file_is_not_a_checkpoint_for_every_reader(
    toy: None, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(GARBAGE)
    for read in (load_state_dict, read_checkpoint):
        with pytest.raises(WeightsError, match=rf"{garbage}: not a .*KeyError: 101"):
            read(garbage)
    assert main(toy_args(images, garbage, "--steps", "1", "--resume")) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{garbage}: not a checkpoint" in err
    with pytest.raises(WeightsError, match=rf"{garbage}: not a plain-weights checkpoint"):
        create_codec("tic-hp", {"weights": str(garbage)}).encode(
            np.zeros((64, 64, 3), np.uint8), 1
        )


# --------------------------------------------------------------------------- case 8: --out


def test_an_out_that_cannot_be_a_checkpoint_is_refused_before_training(
    toy: None, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file.pt"
    a_file.write_text("x")
    for out, message in ((tmp_path, "is a directory"), (a_file / "x.pt", "is a file, not")):
        capsys.readouterr()
        assert main(toy_args(images, out, "--steps", "2")) == EXIT_USAGE
        err = capsys.readouterr().err
        assert message in err and "step 1/" not in err
