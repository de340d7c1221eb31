"""The modulated autoencoder (``mae``): parameter counts against the spec's arithmetic, the
bitstream, identity modulation at start, training steps, resume, and ``bench train mae`` then
``bench run`` (tiny widths and crops; runs in seconds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from bench.cli import main  # noqa: E402
from bench.codecs import create_codec  # noqa: E402
from bench.codecs.learned.mae.bitstream import read_mae_bitstream  # noqa: E402
from bench.codecs.learned.mae.model import MaeConfig, MaeNetwork, pad_replicate  # noqa: E402
from bench.codecs.learned.mae.train import MaeTrainable  # noqa: E402
from bench.datasets import open_dataset  # noqa: E402
from bench.errors import CodecError  # noqa: E402
from bench.records import read_csv  # noqa: E402
from bench.training import ImageSampler, Trainer, TrainingOptions, seed_everything  # noqa: E402

TINY = MaeConfig(n=8, hidden=4, lambdas=(64.0, 1024.0), preset="custom")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two smooth 40x56 images (sides not multiples of 16: padding is exercised)."""
    root = tmp_path_factory.mktemp("mae-images")
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:40, 0:56]
    for i in range(2):
        base = 120 + 60 * np.sin(x / (7 + 3 * i)) * np.cos(y / (5 + i))
        pixels = base[..., None] + rng.normal(0, 3, (40, 56, 3)) + np.array([10, -5, 20]) * i
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"im{i}.png")
    return root


# The spec's arithmetic (section 5): conv = k*k*cin*cout (+cout), GDN = N + N*N, modulation MLP
# = (h + h) + (h*N + N), CompressAI EntropyBottleneck = 58 + 3 per channel.
def _expected(n: int, hidden: int, entropy_models: int) -> int:
    def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
        return cin * cout * k * k + (cout if bias else 0)

    gdn = n + n * n
    analysis = conv(3, n, 9) + conv(n, n, 5) + conv(n, n, 5, bias=False) + 3 * gdn
    synthesis = 3 * gdn + 2 * conv(n, n, 5) + conv(n, 3, 9)
    modulation = 6 * (2 * hidden + hidden * n + n)
    return analysis + synthesis + modulation + entropy_models * 61 * n


@pytest.mark.parametrize(
    ("config", "stated"),
    [
        (MaeConfig.from_preset("paper"), 1_882_115),
        (MaeConfig.from_preset("paper", shared_entropy_model=True), 1_858_691),
        (MaeConfig.from_preset("authors"), 4_097_307),
        (MaeConfig.from_preset("cpu"), 494_595),
    ],
)
def test_parameter_counts_equal_the_specs_arithmetic(config, stated):
    counted = sum(p.numel() for p in MaeNetwork(config).parameters())
    assert counted == stated == _expected(config.n, config.hidden, config.entropy_models)


def test_a_fresh_models_modulation_is_the_identity():
    torch.manual_seed(0)
    modulated = MaeNetwork(TINY).eval()
    plain = MaeNetwork(MaeConfig(n=8, hidden=4, lambdas=(64.0,), modulated=False)).eval()
    shared = {k: v for k, v in modulated.state_dict().items() if "modulation" not in k}
    plain.load_state_dict({k: v for k, v in shared.items() if not k.startswith("entropy.1")})
    x = torch.rand(1, 3, 32, 48)
    for lam in TINY.lambdas:
        assert torch.equal(modulated.analysis(x, lam), plain.analysis(x, 64.0))
    y = modulated.analysis(x, 64.0)
    assert torch.equal(modulated.synthesis(y, 1024.0), plain.synthesis(y, 64.0))


def _image(height: int = 40, width: int = 56) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 50 * np.sin(x / 6) * np.cos(y / 4)
    return np.clip(base[..., None] + rng.normal(0, 5, (height, width, 3)), 0, 255).astype(np.uint8)


def test_round_trip_is_deterministic_and_equals_the_networks_forward_pass():
    codec = create_codec("mae", {"weights": "random"})
    image = _image()
    first = codec.encode(image, 4096)
    again = create_codec("mae", {"weights": "random"}).encode(image, 4096)
    assert bytes(first) == bytes(again)
    header, _ = read_mae_bitstream(bytes(first))
    assert (header.height, header.width, header.lam, header.entropy_index) == (40, 56, 4096, 3)
    assert header.latent == (3, 4) and header.padding == (4, 4, 4, 4)
    decoded = codec.decode(first)
    assert np.array_equal(decoded, create_codec("mae", {"weights": "random"}).decode(first))
    # The network's own eval forward pass (rounding around the medians) gives the same pixels.
    _, model, _ = codec.network()
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    padded, (top, _, left, _) = pad_replicate(x)
    with torch.inference_mode():
        x_hat = model(padded, 4096.0)["x_hat"][0, :, top : top + 40, left : left + 56]
    own = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(decoded, own)
    assert first.info["bpp_estimated"] > 0  # type: ignore[attr-defined]
    # A per-lambda model codes only its trained lambda; the shared one any lambda.
    assert codec.rate_points() == (64.0, 256.0, 1024.0, 4096.0)
    with pytest.raises(CodecError, match="not trained"):
        codec.encode(image, 100)
    shared = create_codec("mae", {"weights": "random", "shared_entropy_model": True})
    assert shared.rate_points() is None
    assert shared.decode(shared.encode(image, 100)).shape == image.shape


def trainer(images: Path, out: Path, steps: int, config: MaeConfig = TINY) -> Trainer:
    sampler = ImageSampler(open_dataset("folder", {"data_dir": images}), crop=(32, 32),
                           batch_size=2, seed=3)  # fmt: skip
    options = TrainingOptions(steps=steps, crop=(32, 32), batch_size=2, seed=3,
                              checkpoint_every=None, log_every=1, out=out)  # fmt: skip
    seed_everything(3)  # as bench train does before it builds the model
    trainable = MaeTrainable(config, learning_rate=3e-3)
    return Trainer(trainable, sampler, options, progress=False, log=lambda _: None)


def test_a_few_training_steps_give_finite_falling_losses(images, tmp_path):
    result = trainer(images, tmp_path / "m.pt", 12).run()
    losses = [record["loss"] for record in result.history if "loss" in record]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert {"bpp@64", "bpp@1024", "psnr@64", "psnr@1024", "aux"} <= set(result.losses)


def test_single_rate_baseline_trains_with_the_same_trainer(images, tmp_path):
    config = MaeConfig(n=8, hidden=4, lambdas=(256.0,), modulated=False, preset="custom")
    result = trainer(images, tmp_path / "s.pt", 2, config).run()
    assert set(result.losses) == {"loss", "bpp@256", "psnr@256", "aux"}
    codec = create_codec("mae", {"weights": str(result.checkpoint)})
    assert codec.rate_points() == (256.0,)
    assert codec.decode(codec.encode(_image(), 256)).shape == (40, 56, 3)


def test_resume_equals_an_uninterrupted_run(images, tmp_path):
    straight = trainer(images, tmp_path / "a.pt", 4)
    straight.run()
    trainer(images, tmp_path / "b.pt", 2).run()
    resumed = trainer(images, tmp_path / "b.pt", 4)
    resumed.run(resume=True)
    a, b = (t.trainable.model.state_dict() for t in (straight, resumed))  # type: ignore[attr-defined]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_bench_train_mae_then_bench_run_gives_ok_records_with_real_bpp(images, tmp_path, capsys):
    checkpoint = tmp_path / "mae.pt"
    argv = ["train", "mae", "--dataset", "folder", "--data-dir", str(images), "--n", "8",
            "--hidden", "4", "--lambdas", "64,1024", "--crop", "32x32", "--batch-size", "2",
            "--steps", "2", "--log-every", "1", "--out", str(checkpoint)]  # fmt: skip
    assert main(argv) == 0
    assert "--codec-option mae.weights=" in capsys.readouterr().out
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["format"] == "bench-mae-1" and saved["training"]["step"] == 2
    assert saved["config"]["preset"] == "custom"
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "mae", "--dataset", "folder", "--data-dir", str(images),
            "--rates", "mae=64,1024", "--codec-option", f"mae.weights={checkpoint}",
            "--workers", "0", "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    records = read_csv(run_dir / "records.csv")
    assert len(records) == 4 and all(r.ok for r in records), [r.error for r in records]
    for record in records:
        assert record.bpp == pytest.approx(8 * record.bytes / (40 * 56))
        assert record.bytes > int(record.header_bytes or 0)


def test_bench_train_mae_init_from_fine_tunes_with_another_recipe(images, tmp_path, capsys):
    import hashlib

    source = tmp_path / "mae.pt"
    common = ["train", "mae", "--dataset", "folder", "--data-dir", str(images), "--n", "8",
              "--hidden", "4", "--lambdas", "64,1024", "--crop", "32x32", "--batch-size", "2",
              "--log-every", "1"]  # fmt: skip
    assert main([*common, "--steps", "2", "--out", str(source)]) == 0
    tuned = tmp_path / "tuned.pt"
    argv = [*common, "--steps", "1", "--lambda-weights", "inverse", "--lr", "1e-5",
            "--init-from", str(source), "--out", str(tuned)]  # fmt: skip
    assert main(argv) == 0
    assert f"initialising mae from {source} (its step 2)" in capsys.readouterr().err
    # A checkpoint whose entropy tables were built (as for coding) starts a fine-tune too.
    built = torch.load(source, map_location="cpu", weights_only=True)
    network = MaeNetwork(MaeConfig.from_dict(built["config"]))
    network.load_state_dict(built["model"])
    network.update(force=True)
    built["model"] = network.state_dict()
    torch.save(built, tmp_path / "built.pt")
    argv_built = [*common, "--steps", "1", "--init-from", str(tmp_path / "built.pt"),
                  "--out", str(tmp_path / "from-built.pt")]  # fmt: skip
    assert main(argv_built) == 0
    saved = torch.load(tuned, map_location="cpu", weights_only=True)
    training = saved["training"]
    assert training["step"] == 1
    assert training["hyperparameters"] == {"lambda_weights": "inverse", "lr": 1e-5}
    origin = training["initialised_from"]
    assert origin["step"] == 2 and origin["hyperparameters"] == {"lr": 5e-4}
    assert origin["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "mae", "--dataset", "folder", "--data-dir", str(images),
            "--rates", "mae=64", "--codec-option", f"mae.weights={tuned}", "--workers", "0",
            "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    assert origin["sha256"] in (run_dir / "manifest.json").read_text()  # the provenance
    wider = [*common[:7], "16", *common[8:], "--steps", "1", "--init-from", str(source),
             "--out", str(tmp_path / "wider.pt")]  # fmt: skip
    assert main(wider) != 0
    assert "n (checkpoint 8, now 16). Fine-tune with the same model options" in (
        capsys.readouterr().err
    )


def _training(*options: str):
    import argparse

    from bench.codecs.learned.mae.train import MaeTraining

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--epochs", type=int)
    MaeTraining.add_arguments(parser)
    return MaeTraining.from_args(parser.parse_args(list(options)))


def test_presets_and_options_of_bench_train_mae():
    from bench.errors import UsageError

    paper = _training("--preset", "paper")
    assert (paper.mae_config.n, paper.mae_config.hidden, paper.learning_rate) == (128, 64, 1e-4)
    assert "the student report's size" in paper.mae_config.describe()
    single = _training("--preset", "paper", "--single-lambda", "256").mae_config
    assert (single.lambdas, single.modulated, single.entropy_models) == ((256.0,), False, 1)
    assert single.preset == "paper"  # the same size, so still labelled as the paper's
    shared = _training("--shared-entropy-model", "--lambdas", "128,512").mae_config
    assert shared.shared_entropy_model and shared.lambdas == (128.0, 512.0)
    assert _training("--n", "32").mae_config.preset == "custom"
    assert "NOT a published size" in _training("--n", "32").mae_config.describe()
    with pytest.raises(UsageError, match="--single-lambda"):
        _training("--single-lambda", "256", "--lambdas", "64,256")
    with pytest.raises(UsageError, match="distinct"):
        _training("--lambdas", "64,64")


def test_a_bitstream_of_other_weights_is_refused(images, tmp_path):
    checkpoint = trainer(images, tmp_path / "m.pt", 1).run().checkpoint
    trained = create_codec("mae", {"weights": str(checkpoint)})
    data = create_codec("mae", {"weights": "random"}).encode(_image(), 64)
    with pytest.raises(CodecError, match="other weights"):
        trained.decode(data)


def test_a_checkpoint_with_nan_tensors_is_refused(images, tmp_path):
    from bench.weights import WeightsError

    checkpoint = trainer(images, tmp_path / "m.pt", 1).run().checkpoint
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved["model"]["g_s.2.bias"][0] = float("nan")
    bad = tmp_path / "bad.pt"
    torch.save(saved, bad)
    with pytest.raises(WeightsError, match="NaN"):
        create_codec("mae", {"weights": str(bad)}).encode(_image(), 64)


def test_a_directory_of_single_rate_models_is_one_codec_over_their_lambdas(images, tmp_path):
    from bench.weights import WeightsError

    models = tmp_path / "single"
    models.mkdir()
    for lam in (1024.0, 64.0):
        config = MaeConfig(n=8, hidden=4, lambdas=(lam,), modulated=False, preset="custom")
        trainer(images, models / f"{lam:g}.pt", 1, config).run()
    codec = create_codec("mae", {"weights": str(models)})
    assert codec.rate_points() == (64.0, 1024.0)
    image = _image()
    for lam in (64.0, 1024.0):  # each lambda is coded by the model trained for it
        data = codec.encode(image, lam)
        alone = create_codec("mae", {"weights": str(models / f"{lam:g}.pt")})
        assert bytes(data) == bytes(alone.encode(image, lam))
        assert np.array_equal(codec.decode(data), alone.decode(data))
    with pytest.raises(CodecError, match="none for 256"):
        codec.encode(image, 256)
    provenance = codec.prepare([64.0, 1024.0])
    assert set(provenance["weights"]) == {"64", "1024"}
    assert provenance["weights"]["64"]["file"] == str(models / "64.pt")
    # Records are keyed by the content of the file that coded each lambda.
    run_dir = tmp_path / "run"
    argv = ["run", "--codecs", "mae", "--dataset", "folder", "--data-dir", str(images),
            "--rates", "mae=64,1024", "--codec-option", f"mae.weights={models}",
            "--workers", "0", "--out", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    records = read_csv(run_dir / "records.csv")
    assert len(records) == 4 and all(r.ok for r in records), [r.error for r in records]
    identities = {r.rate: r.codec_identity for r in records}
    assert provenance["weights"]["64"]["sha256"] in identities[64.0]
    assert provenance["weights"]["1024"]["sha256"] in identities[1024.0]
    # A modulated checkpoint does not belong in such a directory, nor two for one lambda.
    trainer(images, models / "modulated.pt", 1).run()
    with pytest.raises(WeightsError, match=r"modulated\.pt: a modulated model"):
        create_codec("mae", {"weights": str(models)}).rate_points()
    (models / "modulated.pt").unlink()
    (models / "again.pt").write_bytes((models / "64.pt").read_bytes())
    with pytest.raises(WeightsError, match="two single-rate MAE models for rate point 64"):
        create_codec("mae", {"weights": str(models)}).rate_points()


def test_inverse_lambda_weights_make_the_loss_a_sum_of_mse_plus_bpp_over_lambda(images, tmp_path):
    from bench.training import AmpContext

    seed_everything(1)
    trainable = MaeTrainable(TINY, learning_rate=1e-3, lambda_weights="inverse")
    batch = torch.rand(2, 3, 32, 32)
    shown = trainable.step(batch, AmpContext("cpu", enabled=False))
    expected = sum(shown[f"bpp@{lam:g}"] / lam + 10 ** (-shown[f"psnr@{lam:g}"] / 10)
                   for lam in TINY.lambdas)  # fmt: skip
    assert shown["loss"] == pytest.approx(expected, rel=1e-4)
    assert trainable.hyperparameters() == {"lr": 1e-3, "lambda_weights": "inverse"}
    assert MaeTrainable(TINY, learning_rate=1e-3).hyperparameters() == {"lr": 1e-3}
    with pytest.raises(ValueError, match="equal or inverse"):
        MaeTrainable(TINY, learning_rate=1e-3, lambda_weights="log")
    inverse = _training("--lambda-weights", "inverse")
    assert inverse.lambda_weights == "inverse"


def test_the_modulation_networks_can_learn_faster_than_the_rest():
    plain = MaeTrainable(TINY, learning_rate=1e-3)
    assert [g["lr"] for g in plain.main.param_groups] == [1e-3]  # earlier checkpoints' layout
    scaled = MaeTrainable(TINY, learning_rate=1e-3, modulation_lr_scale=10)
    rest, modulation = scaled.main.param_groups
    assert (rest["lr"], modulation["lr"]) == (1e-3, pytest.approx(1e-2))
    names = {id(p): n for n, p in scaled.model.named_parameters()}
    assert all(
        names[id(p)].startswith(("modulation.", "demodulation.")) for p in modulation["params"]
    )
    assert len(rest["params"]) + len(modulation["params"]) == len(
        plain.main.param_groups[0]["params"]
    )
    assert scaled.hyperparameters() == {"lr": 1e-3, "modulation_lr_scale": 10.0}
    assert _training("--modulation-lr-scale", "10").modulation_lr_scale == 10.0


def test_gradient_clipping_bounds_the_networks_gradient_norm():
    from bench.errors import UsageError
    from bench.training import AmpContext

    seed_everything(2)
    clipped = MaeTrainable(TINY, learning_rate=1e-3, clip_grad_norm=1e-3)
    clipped.step(torch.rand(2, 3, 32, 32), AmpContext("cpu", enabled=False))
    grads = [p.grad for group in clipped.main.param_groups for p in group["params"]
             if p.grad is not None]  # fmt: skip
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert float(norm) == pytest.approx(1e-3, rel=1e-3)  # a fresh model's gradient is far above
    assert clipped.hyperparameters() == {"lr": 1e-3, "clip_grad_norm": 1e-3}
    assert _training("--clip-grad-norm", "1").clip_grad_norm == 1.0
    with pytest.raises(UsageError, match="clip-grad-norm"):
        _training("--clip-grad-norm", "0")


def test_the_sqrt_lambda_start_scales_the_latent_by_the_root_of_lambda():
    from bench.errors import UsageError

    config = MaeConfig.from_preset("cpu")
    seed_everything(3)
    trainable = MaeTrainable(config, learning_rate=1e-3, modulation_start="sqrt-lambda")
    model = trainable.model
    reference = math.sqrt(64 * 4096)  # geometric mean of 64, 256, 1024, 4096
    for lam in (*config.lambdas, 128.0, 2048.0, 32.0):
        lam_in = model.lambda_input(lam, torch.device("cpu"))
        modulation = model.modulation[2](lam_in).detach().flatten()
        demodulation = model.demodulation[0](lam_in).detach().flatten()
        if lam in config.lambdas:  # exactly the root at the trained lambda values
            expected = math.sqrt(lam / reference)
            assert torch.allclose(modulation, torch.full_like(modulation, expected), rtol=1e-5)
            assert torch.allclose(demodulation, 1 / modulation, rtol=1e-5)
        elif lam < min(config.lambdas):  # constant below the set
            assert float(modulation[0]) == pytest.approx(math.sqrt(64 / reference), rel=1e-6)
        else:  # between two trained values: between their scales
            assert math.sqrt(lam / 2 / reference) < float(modulation[0]) < math.sqrt(
                lam * 2 / reference
            )
        for other in (*model.modulation[:2], *model.demodulation[1:]):  # the rest: identity
            assert torch.equal(other(lam_in).detach(), torch.ones(1, config.n, 1, 1))
    assert trainable.hyperparameters() == {"lr": 1e-3, "modulation_start": "sqrt-lambda"}
    # The start changes only the two latent (de)modulations: a round trip still inverts them.
    model.eval()
    x = torch.rand(1, 3, 32, 32)
    y_low, y_high = model.analysis(x, 64.0), model.analysis(x, 4096.0)
    assert float(y_high.abs().mean()) > 2 * float(y_low.abs().mean())
    assert _training("--modulation-start", "sqrt-lambda").modulation_start == "sqrt-lambda"
    with pytest.raises(UsageError, match="no modulation"):
        _training("--single-lambda", "64", "--modulation-start", "sqrt-lambda")
    with pytest.raises(ValueError, match="identity or sqrt-lambda"):
        MaeTrainable(TINY, learning_rate=1e-3, modulation_start="log")
    with pytest.raises(ValueError, match="hidden units"):
        MaeNetwork(MaeConfig(n=8, hidden=2, lambdas=(1.0, 2.0, 3.0, 4.0))).start_with_rate_scaling()
