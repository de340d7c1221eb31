"""GDAE as a codec and a training (``gdae``): the decoder's pixels against the network's own
pass on the hard latent, both latent coders, the residual slot, the two training phases,
resume, ``bench train gdae`` then ``bench run``, and clear errors for bad weights (tiny
widths and images; runs in seconds). Networks, coders and bitstream: test_gdae_model.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_msssim")

from bench.cli import main  # noqa: E402
from bench.codecs import create_codec  # noqa: E402
from bench.codecs.learned.gdae.bitstream import read_gdae_bitstream  # noqa: E402
from bench.codecs.learned.gdae.codec import GdaeCodec  # noqa: E402
from bench.codecs.learned.gdae.model import GdaeConfig, pad_replicate  # noqa: E402
from bench.codecs.learned.gdae.train import (  # noqa: E402
    GdaeTrainable,
    augment,
    split_steps,
    window_side,
)
from bench.datasets import open_dataset  # noqa: E402
from bench.errors import CodecError, CodecUnavailable  # noqa: E402
from bench.records import read_csv  # noqa: E402
from bench.training import ImageSampler, Trainer, TrainingOptions, seed_everything  # noqa: E402
from bench.training.loop import ResumeMismatch  # noqa: E402
from bench.weights import WeightsError  # noqa: E402

TINY = GdaeConfig(channels=(8, 8, 8, 8), growth=4, latent_channels=4, levels=8,
                  discriminator_width=4, preset="custom")  # fmt: skip
CROP = (32, 32)
WINDOW = (64, 64)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two textured 64x72 images."""
    root = tmp_path_factory.mktemp("gdae-images")
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:64, 0:72]
    for i in range(2):
        base = 120 + 60 * np.sin(x / (3 + i)) * np.cos(y / (4 + i))
        pixels = base[..., None] + rng.normal(0, 4, (64, 72, 3)) + np.array([10, -5, 20]) * i
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"im{i}.png")
    return root


def _image(height: int = 43, width: int = 61) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 50 * np.sin(x / 6) * np.cos(y / 4)
    return np.clip(base[..., None] + rng.normal(0, 5, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("coder", ["jxl", "rans"])
def test_decoding_gives_the_networks_own_pass_and_is_deterministic(coder):
    codec = create_codec("gdae", {"weights": "random", "latent_coder": coder})
    image = _image()
    data = codec.encode(image, 16)
    again = create_codec("gdae", {"weights": "random", "latent_coder": coder}).encode(image, 16)
    assert bytes(data) == bytes(again)
    header, latent, residual = read_gdae_bitstream(bytes(data))
    assert (header.height, header.width, header.channels, header.levels) == (43, 61, 16, 8)
    assert header.latent == (6, 8) and header.padding == (2, 3, 1, 2) and residual == b""
    assert header.coder == {"jxl": 1, "rans": 2}[coder]
    decoded = codec.decode(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, codec.decode(data))
    model = codec.network(16).model
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    padded, (top, _, left, _) = pad_replicate(x, 8)
    with torch.inference_mode():
        x_hat = model(padded)[0][0, :, top : top + 43, left : left + 61]
    own = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(decoded, own)
    # Another C is another stand-in network, with more latent bytes.
    wider = codec.encode(image, 32)
    assert read_gdae_bitstream(bytes(wider))[0].channels == 32
    assert len(read_gdae_bitstream(bytes(wider))[1]) > len(latent)


class _Echo(GdaeCodec):
    """Residual hooks that send the first pixel's red value (halved) and restore it."""

    def _residual_payload(self, image, reconstruction):
        return bytes([int(image[0, 0, 0]) // 2, int(reconstruction[0, 0, 0]) // 2])

    def _residual_info(self, residual):
        return {"residual_bytes": len(residual)}

    def _apply_residual(self, reconstruction, residual):
        out = reconstruction.copy()
        out[0, 0, 0] = residual[0] * 2
        return out


def test_the_residual_slot_carries_its_payload_and_its_hooks_apply_it():
    image = _image()
    plain = create_codec("gdae", {"weights": "random"})
    codec = _Echo(weights="random", residual=True)
    data = codec.encode(image, 16)
    _, _, residual = read_gdae_bitstream(bytes(data))
    reconstruction = plain.decode(plain.encode(image, 16))
    assert residual == bytes([image[0, 0, 0] // 2, reconstruction[0, 0, 0] // 2])
    assert len(data) == len(plain.encode(image, 16)) + 2  # bpp counts the residual too
    decoded = codec.decode(data)
    assert decoded[0, 0, 0] == image[0, 0, 0] // 2 * 2
    assert np.array_equal(decoded[1:], reconstruction[1:])
    with pytest.raises(CodecError, match="sprc: a residual blob of 2 bytes"):
        plain.decode(data)  # two bytes are no SPRC blob


def _striped(seed: int = 0) -> np.ndarray:
    """Vertical stripes with one patch of horizontal ones (what saliency picks)."""
    y, x = np.mgrid[0:48, 0:64]
    rng = np.random.default_rng(seed)
    grey = 128 + 60 * np.sin(2 * np.pi * x / 8) + rng.normal(0, 3, x.shape)
    patch = (slice(8 + 8 * seed, 20 + 8 * seed), slice(8 + 16 * seed, 20 + 16 * seed))
    grey[patch] = 128 + 60 * np.sin(2 * np.pi * y[patch] / 8)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_sprc_codes_the_residual_in_the_heat_maps_region_and_bpp_counts_it():
    from bench.codecs.heatmaps.sources import heatmap_source
    from bench.codecs.learned.gdae.residual import apply_residual, describe_residual
    from bench.metrics.fidelity import psnr_from_mse

    image = _striped()
    options = {"weights": "random", "heatmap": "saliency", "residual_codec": "jpeg2000"}
    alone = create_codec("gdae", options)
    sprc = create_codec("gdae", {**options, "residual": True})
    heat = heatmap_source("saliency")(image)
    region = heat >= 0.5
    assert 0 < region.mean() < 0.5
    plain_data = alone.encode_with(image, 16, {"quality_map": heat})
    data = sprc.encode_with(image, 16, {"quality_map": heat})
    _, latent, residual = read_gdae_bitstream(bytes(data))
    assert latent == read_gdae_bitstream(bytes(plain_data))[1]
    assert len(residual) > 0 and len(data) == len(plain_data) + len(residual)
    assert data.info["residual_bytes"] == len(residual)
    assert describe_residual(residual)["residual_codec"] == "jpeg2000"
    gdae_alone = alone.decode(plain_data)
    decoded = sprc.decode(data)
    assert np.array_equal(decoded, apply_residual(gdae_alone, residual))
    assert np.array_equal(sprc.decode(data), decoded)  # deterministic
    # Without the runner's map the codec computes the same heat map itself.
    assert bytes(sprc.encode(image, 16)) == bytes(data)

    def psnr(picture, where):
        return psnr_from_mse(float(((picture.astype(float) - image)[where] ** 2).mean()))

    gain_inside = psnr(decoded, region) - psnr(gdae_alone, region)
    gain_outside = psnr(decoded, ~region) - psnr(gdae_alone, ~region)
    assert gain_inside > 1.0 + gain_outside
    # Blocks wholly outside the region are GDAE's pixels exactly.
    untouched = np.ones_like(region)
    for top in range(0, 48, 8):
        for left in range(0, 64, 8):
            if region[top : top + 8, left : left + 8].any():
                untouched[top : top + 8, left : left + 8] = False
    assert untouched.any() and np.array_equal(decoded[untouched], gdae_alone[untouched])


def test_bench_run_scores_gdae_with_and_without_sprc_on_one_region(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.fromarray(_striped(i)).save(tmp_path / "images" / f"im{i}.png")
    common = ["--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--metrics",
              "psnr,psnr-roi", "--rates", "gdae=16", "--codec-option", "gdae.weights=random",
              "--codec-option", "gdae.heatmap=saliency", "--codec-option",
              "gdae.residual_codec=jpeg2000", "--codecs", "gdae", "--workers", "0"]  # fmt: skip
    assert main(["run", *common, "--out", str(tmp_path / "alone")]) == 0
    assert main(["run", *common, "--codec-option", "gdae.residual=true",
                 "--out", str(tmp_path / "sprc")]) == 0  # fmt: skip
    alone = {r.image_id: r for r in read_csv(tmp_path / "alone" / "records.csv")}
    sprc = {r.image_id: r for r in read_csv(tmp_path / "sprc" / "records.csv")}
    for image_id, record in sprc.items():
        assert record.ok and alone[image_id].ok
        assert record.codec_input == alone[image_id].codec_input == "heatmap:saliency thr=0.5"
        assert record.bytes > alone[image_id].bytes
        roi_gain = record.values["psnr_roi"] - alone[image_id].values["psnr_roi"]
        rest_gain = record.values["psnr_non_roi"] - alone[image_id].values["psnr_non_roi"]
        assert roi_gain > 1.0 + rest_gain


def trainer(images: Path, out: Path, steps: int, phases=(2, 2), gan_weight: float = 5.0) -> Trainer:
    sampler = ImageSampler(open_dataset("folder", {"data_dir": images}), crop=WINDOW,
                           batch_size=2, seed=3)  # fmt: skip
    options = TrainingOptions(steps=steps, crop=WINDOW, batch_size=2, seed=3,
                              checkpoint_every=None, log_every=1, out=out)  # fmt: skip
    seed_everything(3)
    trainable = GdaeTrainable(TINY, phases=phases, crop=CROP, learning_rate=1e-3, seed=3,
                              weights={"gan": gan_weight})  # fmt: skip
    return Trainer(trainable, sampler, options, progress=False, log=lambda _: None)


def _state(run: Trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.clone() for name, module in run.trainable.modules().items()
            for k, v in module.state_dict().items()}  # fmt: skip


def test_phase_one_leaves_the_discriminator_phase_two_trains_it(images, tmp_path):
    run = trainer(images, tmp_path / "p.pt", 2)
    before = _state(run)
    history = run.run().history
    after_one = _state(run)
    assert all(torch.equal(before[k], after_one[k]) for k in before if k.startswith("disc"))
    assert any(not torch.equal(before[k], after_one[k]) for k in before if k.startswith("gen"))
    assert [(r["phase"], r["gan"], r["d"]) for r in history] == [(1, 0, 0), (1, 0, 0)]
    run = trainer(images, tmp_path / "p.pt", 4)
    history = run.run(resume=True).history
    after_two = _state(run)
    assert any(not torch.equal(after_one[k], after_two[k]) for k in before if k.startswith("disc"))
    for record in history:
        assert all(math.isfinite(record[k]) for k in ("loss", "mse", "ssim", "gan", "d"))
    phase_two = history[2:]
    assert [r["phase"] for r in phase_two] == [2, 2]
    # BCE of a near-chance discriminator: about ln 2 each; the loss holds 10 MSE + 2 (1 - SSIM)
    assert all(0.3 < r["d"] < 1.5 and 0.3 < r["gan"] < 1.5 for r in phase_two)
    for r in phase_two:
        expected = 10 * r["mse"] + 2 * (1 - r["ssim"]) + 5 * r["gan"]
        assert r["loss"] == pytest.approx(expected, rel=1e-5)


def test_resume_equals_an_uninterrupted_run(images, tmp_path):
    straight = trainer(images, tmp_path / "a.pt", 4)
    straight.run()
    trainer(images, tmp_path / "b.pt", 2).run()
    resumed = trainer(images, tmp_path / "b.pt", 4)
    resumed.run(resume=True)
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ResumeMismatch, match="loss_weights"):
        trainer(images, tmp_path / "b.pt", 6, gan_weight=1.0).run(resume=True)


def test_augmentation_scales_then_crops_and_repeats_by_seed():
    batch = torch.rand(3, 3, 64, 64)
    out = augment(batch, (32, 32), (0.5, 2.0), np.random.default_rng([1, 7, 0]))
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out, augment(batch, (32, 32), (0.5, 2.0), np.random.default_rng([1, 7, 0])))
    assert not torch.equal(out, augment(batch, (32, 32), (0.5, 2.0), np.random.default_rng(5)))
    same = augment(batch, (64, 64), (1.0, 1.0), np.random.default_rng(0))
    assert torch.equal(same, batch)  # no scaling, a full-size crop: the batch itself
    assert window_side(96, 0.5) == 192 and window_side(40, 0.5) == 80 and window_side(32, 1) == 32
    assert split_steps(2500) == (1500, 1000) and split_steps(2) == (1, 1)


def test_phases_with_no_gan_steps_train_the_autoencoder_alone(images, tmp_path, capsys):
    out = tmp_path / "nogan.pt"
    argv = ["train", "gdae", "--dataset", "folder", "--data-dir", str(images), "--channels",
            "8,8,8,8", "--growth", "4", "--latent-channels", "4", "--discriminator-width", "4",
            "--crop", "32x32", "--batch-size", "2", "--log-every", "1",
            "--out", str(out)]  # fmt: skip
    assert main([*argv, "--phases", "2,0"]) == 0
    err = capsys.readouterr().err
    assert "phases 2/0 steps" in err and "gan=0 d=0 phase=1" in err and "phase=2" not in err
    assert main([*argv, "--phases", "0,2", "--out", str(tmp_path / "x.pt")]) == 2


def test_bench_train_gdae_then_bench_run_with_both_coders(images, tmp_path, capsys):
    out = tmp_path / "models" / "c4.pt"
    argv = ["train", "gdae", "--dataset", "folder", "--data-dir", str(images), "--channels",
            "8,8,8,8", "--growth", "4", "--latent-channels", "4", "--discriminator-width", "4",
            "--phases", "1,1", "--crop", "32x32", "--batch-size", "2", "--log-every", "1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (
        "--codec-option gdae.weights=" in captured.out and "gdae.latent_coder=rans" in captured.out
    )
    assert "windows 64x64" in captured.err and "step 2/2" in captured.err
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert saved["format"] == "bench-gdae-1" and saved["config"]["preset"] == "custom"
    assert saved["config"]["latent_channels"] == 4 and "NOT a published size" in saved["size"]
    assert {"generator", "discriminator", "optimizers"} <= set(saved)
    counts = saved["entropy_model"]["counts"]
    # whole 64x72 images: 8x9 latent positions per map, both images
    assert counts.shape == (4, 8) and int(counts.sum(dim=1).max()) == 2 * 8 * 9
    assert saved["training"]["options"]["crop"] == [64, 64]
    for coder in ("jxl", "rans"):
        run_dir = tmp_path / f"run-{coder}"
        argv = ["run", "--codecs", "gdae", "--dataset", "folder", "--data-dir", str(images),
                "--codec-option", f"gdae.weights={out.parent}", "--codec-option",
                f"gdae.latent_coder={coder}", "--workers", "0", "--out", str(run_dir)]  # fmt: skip
        assert main(argv) == 0  # the default sweep: the trained C
        records = read_csv(run_dir / "records.csv")
        assert [r.rate for r in records] == [4.0, 4.0]
        assert all(r.ok for r in records), [r.error for r in records]
        for record in records:
            assert record.bpp == pytest.approx(8 * record.bytes / (64 * 72))
    codec = create_codec("gdae", {"weights": str(out)})
    assert codec.rate_points() == (4.0,)
    with pytest.raises(CodecError, match="none for 16"):
        codec.encode(_image(), 16)


def test_bench_run_with_random_weights(images, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "gdae", "--rates", "gdae=8,16", "--dataset", "folder",
            "--data-dir", str(images), "--codec-option", "gdae.weights=random",
            "--workers", "0", "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    records = read_csv(run_dir / "records.csv")
    assert sorted(r.rate for r in records) == [8.0, 8.0, 16.0, 16.0]
    assert all(r.ok and r.bytes > 46 for r in records), [r.error for r in records]


def test_bad_weights_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(CodecUnavailable, match=str(missing)):
        create_codec("gdae", {"weights": str(missing)}).encode(_image(), 16)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=str(bad)):
        create_codec("gdae", {"weights": str(bad)}).encode(_image(), 16)
    other = tmp_path / "other.pt"
    torch.save({"format": "bench-gan-1", "config": {}}, other)
    with pytest.raises(WeightsError, match=f"{other}: not a bench-gdae-1"):
        create_codec("gdae", {"weights": str(other)}).rate_points()
    with pytest.raises(Exception, match="latent_coder"):
        create_codec("gdae", {"weights": "random", "latent_coder": "flif"})
