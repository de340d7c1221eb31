"""The shared trainer: sampling, checkpoints, exact resume, seeding, on tiny CPU models."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from bench.datasets import open_dataset  # noqa: E402
from bench.images import read_rgb8  # noqa: E402
from bench.training import (  # noqa: E402
    AmpContext,
    ImageSampler,
    Trainer,
    TrainingError,
    TrainingOptions,
    TrainingResult,
    pixel_sha256,
    seed_everything,
    to_signed,
    train,
)
from bench.weights import WeightsError, read_checkpoint  # noqa: E402

HEIGHT, WIDTH = 40, 48


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread (and do not contend with other tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three smooth synthetic 48x40 RGB PNGs with a little noise."""
    root = tmp_path_factory.mktemp("train-images")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    for i in range(3):
        channels = [
            128 + 90 * np.sin(xx / (5 + i + c) + c) * np.cos(yy / (7 + c) - i) for c in range(3)
        ]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 4, (HEIGHT, WIDTH, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def dataset(image_dir: Path) -> Any:
    return open_dataset("folder", {"data_dir": image_dir})


class TinyAE:
    """A 2-layer conv autoencoder with Adam and an MSE loss."""

    name = "tiny-ae"

    def __init__(self, channels: int = 8, lr: float = 1e-2) -> None:
        self.channels = channels
        self.lr = lr
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.seen: list[dict[str, float]] = []

    def modules(self) -> dict[str, Any]:
        return {"autoencoder": self.net}

    def optimizers(self) -> dict[str, Any]:
        return {"adam": self.opt}

    def config(self) -> dict[str, Any]:
        return {"channels": self.channels, "lr": self.lr}

    def step(self, batch: Any, amp: AmpContext) -> Mapping[str, float]:
        with amp.autocast():
            loss = F.mse_loss(self.net(batch), batch)
        amp.backward(loss, self.opt)
        losses = {"mse": loss.item()}
        self.seen.append(losses)
        return losses

    def evaluate(self) -> dict[str, float]:
        self.net.eval()
        x = torch.full((1, 3, 8, 8), 0.5)
        mse = F.mse_loss(self.net(x), x).item()
        return {"psnr": -10 * float(np.log10(max(mse, 1e-12)))}


class TinyGAN:
    """Two optimizers, D then G, on [-1, 1] inputs, with noise (uses the torch RNG)."""

    name = "tiny-gan"

    def __init__(self, channels: int = 6) -> None:
        self.channels = channels
        self.g = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1),
            nn.Tanh(),
        )
        self.d = nn.Sequential(
            nn.Conv2d(3, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-3, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-3, betas=(0.5, 0.9))
        self.rounds = 0

    def modules(self) -> dict[str, Any]:
        return {"generator": self.g, "discriminator": self.d}

    def optimizers(self) -> dict[str, Any]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def config(self) -> dict[str, Any]:
        return {"channels": self.channels, "sizes": (3, self.channels)}

    def step(self, batch: Any, amp: AmpContext) -> Mapping[str, float]:
        x = to_signed(batch)
        noisy = x + 0.05 * torch.randn_like(x)
        with amp.autocast():
            fake = self.g(noisy)
            real_logits = self.d(x)
            fake_logits = self.d(fake.detach())
            d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        amp.backward(d_loss, self.opt_d)
        with amp.autocast():
            adv = F.softplus(-self.d(fake)).mean()
            rec = F.mse_loss(fake, x)
            g_loss = rec + 0.01 * adv
        amp.backward(g_loss, self.opt_g)
        self.rounds += 1
        return {"d": d_loss.item(), "g": g_loss.item(), "mse": rec.item()}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"gan_rounds": self.rounds}

    def restore_extra(self, extra: dict[str, Any]) -> None:
        self.rounds = int(extra["gan_rounds"])


def make(
    kind: type, dataset: Any, tmp_path: Path | None = None, **overrides: Any
) -> tuple[Any, Trainer]:
    """A seeded trainable and its trainer (crop 16x16, batch 2, log every step)."""
    settings: dict[str, Any] = {
        "steps": 20,
        "batch_size": 2,
        "crop": (16, 16),
        "seed": 3,
        "log_every": 1,
        "checkpoint_every": None,
        "out": tmp_path / "ckpt.pt" if tmp_path is not None else None,
    }
    settings.update(overrides)
    model_kwargs = settings.pop("model_kwargs", {})
    options = TrainingOptions(**settings)
    seed_everything(options.seed)
    trainable = kind(**model_kwargs)
    sampler = ImageSampler(
        dataset, crop=options.crop, batch_size=options.batch_size, seed=options.seed
    )
    return trainable, Trainer(trainable, sampler, options, log=lambda line: None, progress=False)


def parameters(trainable: Any) -> dict[str, Any]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in trainable.modules().items()
        for key, value in module.state_dict().items()
    }


def assert_bit_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def loss_curve(result: TrainingResult) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]


def test_losses_are_finite_and_fall(dataset: Any) -> None:
    _, trainer = make(TinyAE, dataset, steps=30, batch_size=3, crop=(24, 24))
    result = trainer.run()
    mse = [r["mse"] for r in result.history]
    assert len(mse) == 30 and result.step == 30
    assert all(np.isfinite(mse))
    assert np.mean(mse[-5:]) < 0.7 * np.mean(mse[:5])
    assert result.epoch == 30  # 3 images, batch 3: one batch per epoch


def test_checkpoint_loads_weights_only_and_holds_the_training_record(
    dataset: Any, image_dir: Path, tmp_path: Path
) -> None:
    trainable, trainer = make(TinyAE, dataset, tmp_path, steps=6, log_every=2)
    result = trainer.run()
    assert result.checkpoint == tmp_path / "ckpt.pt"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left
    raw = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert raw["format"] == "bench-tiny-ae-1"
    assert raw["config"] == {"channels": 8, "lr": 1e-2}
    assert set(raw["autoencoder"]) == set(trainable.net.state_dict())
    assert set(raw["optimizers"]) == {"adam"}
    training = raw["training"]
    assert training["step"] == 6
    assert training["options"]["crop"] == [16, 16]
    assert [r["step"] for r in training["losses"]] == [2, 4, 6]
    expected = [
        {
            "id": f"img{i}",
            "sha256": pixel_sha256(read_rgb8(image_dir / f"img{i}.png").pixels),
            "file_sha256": hashlib.sha256((image_dir / f"img{i}.png").read_bytes()).hexdigest(),
        }
        for i in range(3)
    ]
    assert training["images"] == expected
    pixels = read_rgb8(image_dir / "img0.png").pixels
    assert expected[0]["sha256"] == hashlib.sha256(pixels.tobytes()).hexdigest()
    assert training["rng"]["torch"].dtype == torch.uint8
    assert training["rng"]["sampler"] == {"epoch": 5, "index": 2}  # one batch of 2 per epoch
    assert read_checkpoint(tmp_path / "ckpt.pt")["training"]["step"] == 6


@pytest.mark.parametrize("kind", [TinyAE, TinyGAN])
def test_resume_repeats_an_uninterrupted_run_exactly(
    kind: type, dataset: Any, tmp_path: Path
) -> None:
    whole_model, whole = make(kind, dataset, None, steps=20)
    uninterrupted = whole.run()

    _, first = make(kind, dataset, tmp_path, steps=10, checkpoint_every=4)
    first.run()
    assert read_checkpoint(tmp_path / "ckpt.pt")["training"]["step"] == 10
    # A fresh process would rebuild the model from other random weights: resume overrides them.
    seed_everything(99)
    resumed_model, resumed = make(kind, dataset, tmp_path, steps=20, checkpoint_every=4)
    seed_everything(1234)
    result = resumed.run(resume=True)

    assert result.resumed_from == 10 and result.step == 20
    assert_bit_equal(parameters(resumed_model), parameters(whole_model))
    assert loss_curve(result) == loss_curve(uninterrupted)
    for name, optimizer in resumed_model.optimizers().items():
        saved = whole_model.optimizers()[name].state_dict()["state"]
        for index, slots in optimizer.state_dict()["state"].items():
            for slot, value in slots.items():
                assert torch.equal(value, saved[index][slot]), (name, index, slot)
    if kind is TinyGAN:
        assert resumed_model.rounds == 20


def test_resume_from_a_periodic_checkpoint_mid_window(dataset: Any, tmp_path: Path) -> None:
    """Checkpoint at step 7 while losses are averaged over 5 steps: the curve still matches."""
    whole_model, whole = make(TinyAE, dataset, None, steps=12, log_every=5)
    uninterrupted = whole.run()
    _, first = make(TinyAE, dataset, tmp_path, steps=7, log_every=5)
    first.run()
    resumed_model, resumed = make(TinyAE, dataset, tmp_path, steps=12, log_every=5)
    result = resumed.run(resume=True)
    assert [r["step"] for r in result.history] == [5, 10]
    assert loss_curve(result) == loss_curve(uninterrupted)
    assert_bit_equal(parameters(resumed_model), parameters(whole_model))


class Preempted(Exception):
    pass


def test_resume_after_a_crash_from_the_periodic_checkpoint(dataset: Any, tmp_path: Path) -> None:
    """A run killed during step 9 resumes from its step-7 checkpoint and repeats the rest."""
    whole_model, whole = make(TinyGAN, dataset, None, steps=12, log_every=5)
    uninterrupted = whole.run()
    crashing, first = make(TinyGAN, dataset, tmp_path, steps=12, log_every=5, checkpoint_every=7)
    step = crashing.step

    def dies_at_nine(batch: Any, amp: AmpContext) -> Mapping[str, float]:
        if crashing.rounds == 8:
            raise Preempted
        return step(batch, amp)

    crashing.step = dies_at_nine
    with pytest.raises(Preempted):
        first.run()
    assert read_checkpoint(tmp_path / "ckpt.pt")["training"]["step"] == 7
    resumed_model, resumed = make(TinyGAN, dataset, tmp_path, steps=12, log_every=5)
    result = resumed.run(resume=True)
    assert result.resumed_from == 7
    assert loss_curve(result) == loss_curve(uninterrupted)
    assert_bit_equal(parameters(resumed_model), parameters(whole_model))


@pytest.mark.parametrize("signal_name", ["ctrl-c", "sigterm"])
def test_interrupted_training_says_which_step_the_checkpoint_holds(
    dataset: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], signal_name: str
) -> None:
    """Ctrl-C or SIGTERM in step 10 of `bench train`: no traceback, the exit status of an
    interrupted `bench run`, and the step the periodic checkpoint holds, which resumes into
    the uninterrupted run; before any checkpoint it says none was written."""
    from bench.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, _train

    stop, status = (
        (KeyboardInterrupt, EXIT_INTERRUPTED)
        if signal_name == "ctrl-c"
        else (Terminated, EXIT_TERMINATED)
    )
    whole_model, whole = make(TinyGAN, dataset, None, steps=12, log_every=5)
    uninterrupted = whole.run()
    for every, expected in ((7, "holds step 7; continue with the same command and --resume"),
                            (None, "no checkpoint was written to")):  # fmt: skip
        path = tmp_path / f"every-{every}"
        path.mkdir()
        stopped, trainer = make(
            TinyGAN, dataset, path, steps=12, log_every=5, checkpoint_every=every
        )
        step = stopped.step

        def stops_at_ten(batch: Any, amp: AmpContext, step: Any = step, who: Any = stopped) -> Any:
            if who.rounds == 9:
                raise stop
            return step(batch, amp)

        stopped.step = stops_at_ten
        assert _train(trainer, resume=False) == status
        said = capsys.readouterr().err
        assert "at step 9: " in said and expected in said, said
        assert "Traceback" not in said
        assert (path / "ckpt.pt").is_file() == (every is not None)
    resumed_model, resumed = make(TinyGAN, dataset, tmp_path / "every-7", steps=12, log_every=5)
    assert resumed.saved_step is None
    result = resumed.run(resume=True)
    assert result.resumed_from == 7
    assert resumed.saved_step == 12
    assert loss_curve(result) == loss_curve(uninterrupted)
    assert_bit_equal(parameters(resumed_model), parameters(whole_model))


def test_config_mismatch_on_resume_names_the_key(dataset: Any, tmp_path: Path) -> None:
    make(TinyAE, dataset, tmp_path, steps=2)[1].run()
    _, trainer = make(TinyAE, dataset, tmp_path, steps=4, model_kwargs={"channels": 4})
    with pytest.raises(TrainingError, match=r"channels \(checkpoint 8, now 4\)"):
        trainer.run(resume=True)
    _, other = make(TinyGAN, dataset, tmp_path, steps=4)
    with pytest.raises(TrainingError, match="bench-tiny-ae-1"):
        other.run(resume=True)


def test_changed_options_on_resume_warn(dataset: Any, tmp_path: Path) -> None:
    make(TinyAE, dataset, tmp_path, steps=2)[1].run()
    _, trainer = make(TinyAE, dataset, tmp_path, steps=3, crop=(8, 8))
    with pytest.warns(UserWarning, match=r"crop \(\[16, 16\] -> \[8, 8\]\)"):
        trainer.run(resume=True)


def test_init_from_fine_tunes_from_the_weights_with_fresh_optimisers(
    dataset: Any, image_dir: Path, tmp_path: Path
) -> None:
    source_model, source = make(TinyAE, dataset, tmp_path / "src", steps=6)
    source.run()
    source_path = tmp_path / "src" / "ckpt.pt"
    # Another seed builds other initial weights: initialise_from replaces them.
    model, trainer = make(TinyAE, dataset, tmp_path / "ft", steps=3, seed=5,
                          init_from=source_path)  # fmt: skip
    assert not torch.equal(model.net[0].weight, source_model.net[0].weight)
    trainer.initialise_from(source_path)
    assert_bit_equal(parameters(model), parameters(source_model))

    model, trainer = make(TinyAE, dataset, tmp_path / "ft", steps=3, seed=5,
                          init_from=source_path)  # fmt: skip
    result = trainer.run()
    assert result.step == 3 and result.resumed_from is None
    saved = read_checkpoint(tmp_path / "ft" / "ckpt.pt")
    adam = saved["optimizers"]["adam"]["state"]
    assert {float(state["step"]) for state in adam.values()} == {3.0}  # fresh: 3, not 9
    origin = saved["training"]["initialised_from"]
    assert origin["file"] == str(source_path)
    assert origin["sha256"] == hashlib.sha256(source_path.read_bytes()).hexdigest()
    assert origin["step"] == 6
    assert origin["images"] == read_checkpoint(source_path)["training"]["images"]
    assert saved["training"]["options"]["init_from"] == str(source_path)


def test_a_fine_tuned_run_resumes_exactly_and_keeps_its_origin(
    dataset: Any, tmp_path: Path
) -> None:
    make(TinyAE, dataset, tmp_path / "src", steps=4)[1].run()
    source_path = tmp_path / "src" / "ckpt.pt"
    whole_model, whole = make(TinyAE, dataset, None, steps=6, init_from=source_path)
    uninterrupted = whole.run()
    make(TinyAE, dataset, tmp_path / "ft", steps=3, init_from=source_path)[1].run()
    source_path.unlink()  # a resume continues from its own checkpoint, not the source
    resumed_model, resumed = make(TinyAE, dataset, tmp_path / "ft", steps=6,
                                  init_from=source_path)  # fmt: skip
    result = resumed.run(resume=True)
    assert result.resumed_from == 3
    assert loss_curve(result) == loss_curve(uninterrupted)
    assert_bit_equal(parameters(resumed_model), parameters(whole_model))
    assert read_checkpoint(tmp_path / "ft" / "ckpt.pt")["training"]["initialised_from"]["step"] == 4


def test_init_from_refuses_another_model_or_config(dataset: Any, tmp_path: Path) -> None:
    make(TinyAE, dataset, tmp_path / "src", steps=2)[1].run()
    source_path = tmp_path / "src" / "ckpt.pt"
    _, trainer = make(TinyAE, dataset, tmp_path / "ft", steps=2, init_from=source_path,
                      model_kwargs={"channels": 4})  # fmt: skip
    with pytest.raises(TrainingError, match=r"channels \(checkpoint 8, now 4\)\. Fine-tune"):
        trainer.run()
    _, other = make(TinyGAN, dataset, tmp_path / "ft", steps=2, init_from=source_path)
    with pytest.raises(TrainingError, match="bench-tiny-ae-1"):
        other.run()
    _, missing = make(TinyAE, dataset, tmp_path / "ft", steps=2, init_from=tmp_path / "no.pt")
    with pytest.raises(WeightsError, match=r"no\.pt"):
        missing.run()
    assert not (tmp_path / "ft" / "ckpt.pt").exists()


def test_training_record_counts_the_sources_images(
    dataset: Any, image_dir: Path, tmp_path: Path
) -> None:
    from bench.weights import trained_on_files, training_record

    make(TinyAE, dataset, tmp_path / "src", steps=2)[1].run()
    source_path = tmp_path / "src" / "ckpt.pt"
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    rng = np.random.default_rng(11)
    for i in range(2):
        pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(other_dir / f"new{i}.png")
    others = open_dataset("folder", {"data_dir": other_dir})
    make(TinyAE, others, tmp_path / "ft", steps=2, init_from=source_path)[1].run()
    make(TinyAE, others, tmp_path / "ft2", steps=2,
         init_from=tmp_path / "ft" / "ckpt.pt")[1].run()  # fmt: skip
    record = training_record(read_checkpoint(tmp_path / "ft2" / "ckpt.pt"))
    assert [i["id"] for i in record["images"]] == ["new0", "new1", "img0", "img1", "img2"]
    assert [(o["file"], o["step"]) for o in record["initialised_from"]] == [
        (str(tmp_path / "ft" / "ckpt.pt"), 2),
        (str(source_path), 2),
    ]
    expected = {hashlib.sha256(p.read_bytes()).hexdigest()
                for p in [*image_dir.glob("*.png"), *other_dir.glob("*.png")]}  # fmt: skip
    assert set(trained_on_files(tmp_path / "ft2" / "ckpt.pt")) == expected
    assert "initialised_from" not in training_record(read_checkpoint(source_path))


def test_same_seed_same_run_and_another_seed_another(dataset: Any) -> None:
    a_model, a = make(TinyGAN, dataset, steps=5)
    b_model, b = make(TinyGAN, dataset, steps=5)
    _, c = make(TinyGAN, dataset, steps=5, seed=4)
    ra, rb, rc = a.run(), b.run(), c.run()
    assert loss_curve(ra) == loss_curve(rb)
    assert_bit_equal(parameters(a_model), parameters(b_model))
    assert loss_curve(ra) != loss_curve(rc)


def test_sampler_crops_in_bounds_and_seeded_flips(dataset: Any, image_dir: Path) -> None:
    images = [read_rgb8(image_dir / f"img{i}.png").pixels for i in range(3)]
    sampler = ImageSampler(dataset, crop=(10, 12), batch_size=1, seed=5)
    assert len(sampler) == 3 and sampler.batches_per_epoch == 3
    flips = []
    for epoch in range(8):
        assert sorted(sampler.permutation(epoch).tolist()) == [0, 1, 2]
        for position in range(3):
            index, top, left, flip = sampler.window(epoch, position)
            assert 0 <= top <= HEIGHT - 10 and 0 <= left <= WIDTH - 12
            window = images[index][top : top + 10, left : left + 12]
            expected = window[:, ::-1] if flip else window
            assert np.array_equal(sampler.sample(epoch, position), expected)
            flips.append(flip)
    assert any(flips) and not all(flips)
    again = ImageSampler(dataset, crop=(10, 12), batch_size=1, seed=5)
    other = ImageSampler(dataset, crop=(10, 12), batch_size=1, seed=6)
    same = [again.window(e, p) for e in range(8) for p in range(3)]
    assert [w[3] for w in same] == flips
    assert same != [other.window(e, p) for e in range(8) for p in range(3)]


def test_sampler_batches_and_position(dataset: Any) -> None:
    sampler = ImageSampler(dataset, crop=(16, 20), batch_size=2, seed=0)
    batch = sampler.next_batch()
    assert batch.shape == (2, 3, 16, 20) and batch.dtype == torch.float32
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    assert sampler.state() == {"epoch": 0, "index": 2}
    second = sampler.next_batch()  # 3 images, batch 2: the remainder is skipped
    assert sampler.state() == {"epoch": 1, "index": 2}
    assert torch.equal(second, sampler.batch_at(1, 0))
    whole = ImageSampler(dataset, crop=None, batch_size=3, seed=0, flip=False)
    assert whole.next_batch().shape == (3, 3, HEIGHT, WIDTH)
    with pytest.raises(Exception, match="smaller than the"):
        ImageSampler(dataset, crop=(41, 8))


def test_load_checkpoint_refuses_foreign_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(WeightsError, match=r"plain\.pt: not a bench training checkpoint"):
        read_checkpoint(plain)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "bench-x-1", "training": {}, "obj": TinyAE}, pickled)
    with pytest.raises(WeightsError, match=r"pickled\.pt: .*weights_only=True"):
        read_checkpoint(pickled)
    with pytest.raises(WeightsError, match=r"missing\.pt: no such checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")


def test_evaluation_hook_and_log_lines(dataset: Any) -> None:
    lines: list[str] = []
    options = TrainingOptions(
        steps=4, batch_size=1, crop=(8, 8), log_every=2, evaluate_every=2, checkpoint_every=None
    )
    trainable = TinyAE()
    sampler = ImageSampler(dataset, crop=(8, 8), batch_size=1, seed=0)
    result = Trainer(trainable, sampler, options, log=lines.append, progress=False).run()
    assert [e["step"] for e in result.evaluations] == [2, 4]
    assert all(np.isfinite(e["psnr"]) for e in result.evaluations)
    assert trainable.net.training  # back in train mode after evaluate()
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 2 and steps[0].startswith("step 2/4 epoch 0 mse=")
    assert "eta" in steps[0]


def test_amp_context_is_a_no_op_on_cpu() -> None:
    amp = AmpContext("cpu", enabled=True)
    assert not amp.enabled and amp.state_dict() == {}
    weight = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    with amp.autocast():
        loss = (weight * torch.tensor([1.0, 2.0])).sum()
    assert loss.dtype == torch.float32
    amp.backward(loss, optimizer)
    amp.update()
    assert torch.equal(weight.detach(), torch.tensor([0.5, 0.0]))


def test_options_are_checked(dataset: Any) -> None:
    with pytest.raises(Exception, match="steps or epochs"):
        TrainingOptions()
    with pytest.raises(Exception, match="batch_size"):
        TrainingOptions(steps=1, batch_size=0)
    sampler = ImageSampler(dataset, crop=(8, 8), batch_size=1, seed=0)
    with pytest.raises(Exception, match="crop"):
        Trainer(TinyAE(), sampler, TrainingOptions(steps=1, crop=(16, 16)))
    epochs = Trainer(
        TinyAE(), sampler, TrainingOptions(epochs=2, crop=(8, 8), checkpoint_every=None)
    )
    assert epochs.total_steps == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert epochs.run().step == 6


def test_train_helper_builds_the_sampler_from_the_options(dataset: Any, tmp_path: Path) -> None:
    seed_everything(0)
    options = TrainingOptions(
        epochs=2, batch_size=3, crop=(8, 8), log_every=1, out=tmp_path / "run" / "model.pt"
    )
    result = train(TinyAE(), dataset, options, limit=3)
    assert result.step == 2 and result.epoch == 2
    assert result.checkpoint is not None and result.checkpoint.is_file()
