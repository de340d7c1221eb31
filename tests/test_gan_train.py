"""Training the GAN codec with bench's trainer, and using what it trains: `bench train gan`,
then `bench run --codecs gan` on the checkpoint (tiny widths and crops; runs in seconds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from bench.cli import main  # noqa: E402
from bench.codecs.learned.gan.bitstream import read_gan_bitstream  # noqa: E402
from bench.codecs.learned.gan.config import GanConfig  # noqa: E402
from bench.codecs.learned.gan.train import GanTrainable  # noqa: E402
from bench.datasets import open_dataset  # noqa: E402
from bench.records import read_csv  # noqa: E402
from bench.training import ImageSampler, Trainer, TrainingOptions, seed_everything  # noqa: E402
from bench.weights import read_checkpoint, save_checkpoint  # noqa: E402

TINY = GanConfig(bottleneck=4, levels=4, width=1 / 32)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three smooth 64x96 photos-like images."""
    root = tmp_path_factory.mktemp("gan-images")
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:64, 0:96]
    for i in range(3):
        base = 120 + 60 * np.sin(x / (9 + 3 * i)) * np.cos(y / (7 + i))
        pixels = base[..., None] + rng.normal(0, 4, (64, 96, 3)) + np.array([10, -5, 20]) * i
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"im{i}.png")
    return root


def trainer(images: Path, out: Path, steps: int, every: int | None = None) -> Trainer:
    sampler = ImageSampler(open_dataset("folder", {"data_dir": images}), crop=(32, 64), seed=3)
    options = TrainingOptions(
        steps=steps, crop=(32, 64), seed=3, checkpoint_every=every, log_every=2, out=out
    )
    seed_everything(3)  # as bench train does before it builds the model
    return Trainer(GanTrainable(TINY), sampler, options, progress=False, log=lambda _: None)


def test_a_few_training_steps_give_finite_falling_losses(images, tmp_path):
    result = trainer(images, tmp_path / "g.pt", 16).run()
    mse = [record["mse"] for record in result.history if "mse" in record]
    assert len(mse) == 8 and all(math.isfinite(v) for v in mse)
    assert np.mean(mse[-2:]) < np.mean(mse[:2]) and mse[-1] < mse[0]
    assert all(math.isfinite(v) for v in result.losses.values())
    assert {"d", "g_total", "g_gan", "g_feature_matching", "mse", "psnr"} <= set(result.losses)


def test_resume_reproduces_the_next_steps_of_an_uninterrupted_run(images, tmp_path):
    straight = trainer(images, tmp_path / "a.pt", 6)
    straight.run()
    first = trainer(images, tmp_path / "b.pt", 3)
    first.run()
    resumed = trainer(images, tmp_path / "b.pt", 6)
    resumed.run(resume=True)
    a, b = (t.trainable.generator.state_dict() for t in (straight, resumed))  # type: ignore[attr-defined]
    assert all(torch.equal(a[name], b[name]) for name in a)
    d_a, d_b = (t.trainable.discriminator.state_dict() for t in (straight, resumed))  # type: ignore[attr-defined]
    assert all(torch.equal(d_a[name], d_b[name]) for name in d_a)


def test_bench_train_gan_then_bench_run_uses_the_checkpoint_and_warns_of_the_leak(
    images, tmp_path, capsys
):
    checkpoint = tmp_path / "gan-F4-L4.pt"
    argv = ["train", "gan", "--dataset", "folder", "--data-dir", str(images), "--bottleneck", "4",
            "--levels", "4", "--width", "0.03125", "--crop", "32x64", "--steps", "4",
            "--log-every", "2", "--out", str(checkpoint)]  # fmt: skip
    assert main(argv) == 0
    assert "--codec-option gan.weights=" in capsys.readouterr().out
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["format"] == "bench-gan-1" and saved["training"]["step"] == 4
    assert len(saved["training"]["images"]) == 3
    # The level counts over the 3 whole 64x96 training images (latent 4x6), per map.
    entropy = saved["entropy_model"]
    assert entropy["images"] == 3 and entropy["source"] == "training images"
    counts = entropy["counts"]
    assert counts.dtype == torch.int64 and tuple(counts.shape) == (4, 4)
    assert counts.sum(dim=1).tolist() == [3 * 4 * 6] * 4
    nominal = 4 * 2 / 256
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "gan", "--dataset", "folder", "--data-dir", str(images),
            "--rates", f"gan={nominal},0.125", "--codec-option", f"gan.weights={checkpoint}",
            "--workers", "0", "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    records = {(r.image_id, r.rate): r for r in read_csv(run_dir / "records.csv")}
    coded = records[("im0", nominal)]
    assert coded.ok, coded.error
    # The measured rate is the nominal one plus the header, to the bit.
    header = int(coded.header_bytes or 0)
    assert coded.bytes == header + 64 * 96 * nominal / 8
    assert coded.bpp == pytest.approx(nominal + 8 * header / (64 * 96), rel=1e-12)
    pixels = np.asarray(Image.open(images / "im0.png"))
    _, indices = read_gan_bitstream(_recode(checkpoint, pixels, nominal))
    assert indices.shape == (4, 4, 6) and set(np.unique(indices)) <= {0, 1, 2, 3}
    # Entropy-coded with those counts: the same indices, so the same reconstruction.
    coded = _recode(checkpoint, pixels, nominal, entropy_coding=True)
    assert coded.info["bpp_estimated"] == nominal  # type: ignore[attr-defined]
    assert np.array_equal(
        _decode(checkpoint, coded), _decode(checkpoint, _recode(checkpoint, pixels, nominal))
    )
    # A rate point without its checkpoint costs its records and says how to make one.
    missing = records[("im0", 0.125)]
    assert not missing.ok and "bench train gan" in missing.error and "--levels 16" in missing.error
    # Scoring the images it was trained on is flagged.
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert any("trained on 3 of the 3 images" in w for w in manifest["warnings"])
    assert manifest["codecs"]["gan"]["weights"][f"{nominal:g}"]["training"]["step"] == 4


def _recode(checkpoint: Path, image: np.ndarray, rate: float, **options: object) -> bytes:
    from bench.codecs import create_codec

    return create_codec("gan", {"weights": str(checkpoint), **options}).encode(image, rate)


def _decode(checkpoint: Path, data: bytes) -> np.ndarray:
    from bench.codecs import create_codec

    return create_codec("gan", {"weights": str(checkpoint)}).decode(data)


def test_the_entropy_model_survives_resume_and_can_be_fitted_alone(images, tmp_path, capsys):
    checkpoint = tmp_path / "g.pt"
    argv = ["train", "gan", "--dataset", "folder", "--data-dir", str(images), "--bottleneck", "4",
            "--levels", "4", "--width", "0.03125", "--crop", "32x64", "--log-every", "2",
            "--out", str(checkpoint)]  # fmt: skip
    assert main([*argv, "--steps", "2"]) == 0
    first = read_checkpoint(checkpoint)  # the trainer's reader (weights_only=True)
    assert "entropy_model" in first
    # The trainer resumes from a checkpoint holding the extra key, then refits the counts.
    resumed = trainer(images, tmp_path / "unused.pt", 4)
    with pytest.warns(UserWarning, match="seed"):  # the CLI's seed is 0, the helper's 3
        resumed.load_state_dict(first, checkpoint)
    assert resumed.step == 2
    assert main([*argv, "--steps", "4", "--resume"]) == 0
    second = read_checkpoint(checkpoint)
    assert second["training"]["step"] == 4 and second["entropy_model"]["images"] == 3
    fitted = second["entropy_model"]["counts"]
    # Fitting alone (e.g. for a checkpoint older than entropy models) gives the same counts.
    del second["entropy_model"]
    save_checkpoint(second, checkpoint)
    assert main([*argv, "--fit-entropy-model-only"]) == 0
    alone = read_checkpoint(checkpoint)
    assert torch.equal(alone["entropy_model"]["counts"], fitted)
    assert alone["entropy_model"]["source"] == "training images"
    assert alone["training"]["step"] == 4
    assert "gan.entropy_coding=true" in capsys.readouterr().out
