"""The importance-map autoencoder as a codec and a training (``impmap``): the codec's round
trip against the network's own pass, the three phases (what each one trains), finite falling
losses, resume, and ``bench train impmap`` then ``bench run`` (tiny widths; runs in seconds).
The networks are tested in test_impmap_model.py, the bit-plane coder in
test_impmap_coder.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("numba")
pytest.importorskip("pytorch_msssim")

from bench.cli import main  # noqa: E402
from bench.codecs import create_codec  # noqa: E402
from bench.codecs.learned.impmap.bitstream import read_impmap_bitstream  # noqa: E402
from bench.codecs.learned.impmap.model import ImpMapConfig, pad_replicate  # noqa: E402
from bench.codecs.learned.impmap.train import ImpMapTrainable, split_steps  # noqa: E402
from bench.datasets import open_dataset  # noqa: E402
from bench.errors import CodecError, UsageError  # noqa: E402
from bench.records import read_csv  # noqa: E402
from bench.training import ImageSampler, Trainer, TrainingOptions, seed_everything  # noqa: E402
from bench.training.loop import ResumeMismatch  # noqa: E402

TINY = ImpMapConfig(n=8, groups=0, blocks_per_group=1, importance_width=4, importance_blocks=1,
                    preset="custom")  # fmt: skip
CROP = (104, 104)  # the smallest multiple of 8 the 7-tap 5-scale MS-SSIM accepts


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two textured 112x120 images: detail on one side, flat on the other."""
    root = tmp_path_factory.mktemp("impmap-images")
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:112, 0:120]
    for i in range(2):
        base = 120 + 60 * np.sin(x / (3 + i)) * np.cos(y / (4 + i)) * (x > 50)
        pixels = base[..., None] + rng.normal(0, 4, (112, 120, 3)) + np.array([10, -5, 20]) * i
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"im{i}.png")
    return root


def _image(height: int = 43, width: int = 61) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 50 * np.sin(x / 6) * np.cos(y / 4)
    return np.clip(base[..., None] + rng.normal(0, 5, (height, width, 3)), 0, 255).astype(np.uint8)


def test_decoding_gives_the_networks_own_pass_and_is_deterministic():
    codec = create_codec("impmap", {"weights": "random"})
    image = _image()
    data = codec.encode(image, 100)
    assert bytes(data) == bytes(create_codec("impmap", {"weights": "random"}).encode(image, 100))
    header, payload = read_impmap_bitstream(bytes(data))
    assert (header.height, header.width, header.channels, header.bits, header.block) == (
        43, 61, 16, 4, 4)  # fmt: skip
    assert header.latent == (6, 8) and header.padding == (2, 3, 1, 2)
    decoded = codec.decode(data)
    assert np.array_equal(decoded, codec.decode(data))
    _, model, _ = codec.network(100)
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    padded, (top, _, left, _) = pad_replicate(x, 8)
    with torch.inference_mode():
        x_hat = model(padded)["x_hat"][0, :, top : top + 43, left : left + 61]
    own = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(decoded, own)
    assert 0 < data.info["bpp_estimated"] <= 8 * len(payload) / (43 * 61)  # type: ignore[attr-defined]


def trainer(images: Path, out: Path, steps: int, phases=(4, 2, 2), lam: float = 50.0) -> Trainer:
    sampler = ImageSampler(open_dataset("folder", {"data_dir": images}), crop=CROP,
                           batch_size=2, seed=3)  # fmt: skip
    options = TrainingOptions(steps=steps, crop=CROP, batch_size=2, seed=3,
                              checkpoint_every=None, log_every=1, out=out)  # fmt: skip
    seed_everything(3)
    trainable = ImpMapTrainable(TINY, lam=lam, phases=phases, learning_rate=3e-3, window=7)
    return Trainer(trainable, sampler, options, progress=False, log=lambda _: None)


def _state(run: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in run.trainable.model.state_dict().items()}  # type: ignore[attr-defined]


def test_each_phase_trains_what_the_paper_says(images, tmp_path):
    out = tmp_path / "p.pt"
    run = trainer(images, out, 1)
    before = _state(run)  # the initial weights (seeded), before any step
    states, history = [], []
    for steps in (4, 6, 8):  # the ends of phases 1, 2 and 3 (4 + 2 + 2 steps)
        run = trainer(images, out, steps)
        history = run.run(resume=out.exists()).history
        states.append(_state(run))

    def changed(a: dict, b: dict) -> set[str]:
        return {k for k in a if not torch.equal(a[k], b[k])}

    first = changed(before, states[0])  # phase 1: the autoencoder alone
    assert any(k.startswith("encoder.") for k in first)
    assert any(k.startswith("decoder.") for k in first)
    assert not any(k.startswith("importance_net.") for k in first)
    second = changed(states[0], states[1])  # phase 2: the importance net alone, BN frozen
    assert second and all(k.startswith("importance_net.") for k in second), second
    third = changed(states[1], states[2])  # phase 3: both
    assert any(k.startswith("encoder.") for k in third)
    assert any(k.startswith("importance_net.") for k in third)
    assert [record["phase"] for record in history] == [1, 1, 1, 1, 2, 2, 3, 3]


def test_training_steps_give_finite_falling_losses(images, tmp_path):
    result = trainer(images, tmp_path / "m.pt", 12, phases=(8, 2, 2)).run()
    losses = [record["loss"] for record in result.history if "loss" in record]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[5:8]) < np.mean(losses[:3])  # phase 1: distortion alone falls
    bounds = [record["bpp_bound"] for record in result.history]
    assert bounds[0] == pytest.approx(1.0)  # phase 1 keeps all 4 bits of 16 maps at 1/64
    assert all(0.25 <= b <= 1.0 for b in bounds)


def test_resume_equals_an_uninterrupted_run(images, tmp_path):
    straight = trainer(images, tmp_path / "a.pt", 5, phases=(2, 2, 1))
    straight.run()
    trainer(images, tmp_path / "b.pt", 3, phases=(2, 2, 1)).run()
    resumed = trainer(images, tmp_path / "b.pt", 5, phases=(2, 2, 1))
    resumed.run(resume=True)
    a, b = _state(straight), _state(resumed)
    assert all(torch.equal(a[name], b[name]) for name in a)
    with pytest.raises(ResumeMismatch, match="lambda"):
        trainer(images, tmp_path / "b.pt", 6, phases=(2, 2, 1), lam=80.0).run(resume=True)


def test_phase_split_and_crop_checks():
    from bench.codecs.learned.impmap.train import ms_ssim_window

    assert split_steps(2500) == (1200, 400, 900)
    assert sum(split_steps(7)) == 7 and min(split_steps(7)) >= 1
    assert ms_ssim_window((192, 192)) == 11 and ms_ssim_window((128, 160)) == 7
    with pytest.raises(UsageError, match="above 96"):
        ms_ssim_window((96, 128))


def test_bench_train_impmap_then_bench_run_over_a_directory_of_lambdas(images, tmp_path, capsys):
    models = tmp_path / "models"
    for lam in (20, 400):
        argv = ["train", "impmap", "--dataset", "folder", "--data-dir", str(images), "--n", "8",
                "--groups", "0", "--lambda", str(lam), "--phases", "1,1,1", "--crop", "112x112",
                "--batch-size", "2", "--log-every", "1",
                "--out", str(models / f"{lam}.pt")]  # fmt: skip
        assert main(argv) == 0
    assert "--codec-option impmap.weights=" in capsys.readouterr().out
    saved = torch.load(models / "20.pt", map_location="cpu", weights_only=True)
    assert saved["format"] == "bench-impmap-1" and saved["objective"]["lambda"] == 20.0
    assert saved["config"]["preset"] == "custom"
    codec = create_codec("impmap", {"weights": str(models)})
    assert codec.rate_points() == (20.0, 400.0)
    with pytest.raises(CodecError, match="none for 100"):
        codec.encode(_image(), 100)
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "impmap", "--dataset", "folder", "--data-dir", str(images),
            "--codec-option", f"impmap.weights={models}", "--workers", "0",
            "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0  # the default sweep: the trained lambda values
    records = read_csv(run_dir / "records.csv")
    assert sorted(r.rate for r in records) == [20.0, 20.0, 400.0, 400.0]
    assert all(r.ok for r in records), [r.error for r in records]
    for record in records:
        assert record.bpp == pytest.approx(8 * record.bytes / (112 * 120))
    searched = tmp_path / "searched"
    argv = ["run", "--codecs", "impmap", "--dataset", "folder", "--data-dir", str(images),
            "--codec-option", f"impmap.weights={models}", "--target-bpp", "0.5",
            "--workers", "0", "--out", str(searched)]  # fmt: skip
    assert main(argv) == 0
    found = read_csv(searched / "records.csv")
    assert len(found) == 2 and all(r.ok and r.rate in (20.0, 400.0) for r in found)


def test_the_report_shows_the_importance_map_beside_the_reconstruction(images, tmp_path):
    from bench.report.crops import crops
    from bench.report.rundir import load_run

    codec = create_codec("impmap", {"weights": "random"})
    image = _image()
    (caption, picture), *_ = codec.side_images(image, 100).items()
    assert "importance map" in caption and picture.shape == image.shape
    _, model, _ = codec.network(100)
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    padded, (top, _, left, _) = pad_replicate(x, 8)
    with torch.inference_mode():
        levels = model.importance_map(model.encode(padded))[0].float().mean(0)
    # Each 8x8 block of the padded image shows its latent position's mean level.
    expected = ((levels - 1) / 3 * 255).round().to(torch.uint8).numpy()
    assert picture[8 - top, 8 - left, 0] == expected[1, 1]
    assert np.array_equal(picture[..., 0], picture[..., 2])
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "impmap", "--rates", "impmap=100", "--dataset", "folder",
            "--data-dir", str(images), "--codec-option", "impmap.weights=random",
            "--workers", "0", "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    html = crops(load_run(run_dir))
    assert 'data-kind="side"' in html and "impmap: importance map" in html
