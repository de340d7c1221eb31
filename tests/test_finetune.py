"""`bench train segmenter`: a segmenter fine-tuned on a codec's reconstructions.

Tiny sizes throughout: a random-weight ESPNetv2 (s = 0.5) saved to a temporary file, a
made-up Cityscapes tree of 64x128 frames with trainId labels, and the jpeg codec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from bench.cli import main  # noqa: E402
from bench.codecs import create_codec  # noqa: E402
from bench.datasets import open_dataset  # noqa: E402
from bench.download import sha256_of  # noqa: E402
from bench.errors import UsageError  # noqa: E402
from bench.runner import training_leaks  # noqa: E402
from bench.task_training.segmenter import SegmenterTrainable  # noqa: E402
from bench.task_training.segmenter_data import (  # noqa: E402
    SegmentationSampler,
    code_once,
    resize_image,
    resize_labels,
    split_batch,
)
from bench.tasks import create_segmenter  # noqa: E402
from bench.tasks.espnet import build_espnet  # noqa: E402
from bench.tasks.espnetv2 import INPUT_SIZE, build_espnetv2  # noqa: E402
from bench.tasks.segmentation import SegmentationTask  # noqa: E402
from bench.training import Trainer, TrainingOptions  # noqa: E402
from bench.weights import TRAINING_FILES, load_state_dict, load_strict  # noqa: E402

ROAD, SKY, CAR = 0, 10, 13
COLOURS = {ROAD: (90, 90, 90), SKY: (70, 130, 180), CAR: (20, 30, 160)}


def _frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 64x128 frame: sky above a horizon, road below, a car box; an ignored strip."""
    label = np.full((64, 128), ROAD, np.uint8)
    label[: int(rng.integers(20, 36))] = SKY
    top, left = int(rng.integers(30, 44)), int(rng.integers(0, 90))
    label[top : top + 14, left : left + 30] = CAR
    label[:, :3] = 255
    image = np.zeros((64, 128, 3), np.float64)
    for value, colour in COLOURS.items():
        image[label == value] = colour
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def _write_split(root: Path, split: str, city: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (root / "leftImg8bit" / split / city).mkdir(parents=True)
    (root / "gtFine" / split / city).mkdir(parents=True)
    for i in range(count):
        image, label = _frame(rng)
        stem = f"{city}_{i:06d}_000019"
        Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        Image.fromarray(label).save(
            root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        )


@pytest.fixture
def cityscapes(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    _write_split(root, "train", "aachen", 4, seed=1)
    _write_split(root, "val", "frankfurt", 2, seed=2)
    return root


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """Random ESPNetv2 s=0.5 weights, saved as a plain state dict (as published ones are)."""
    torch.manual_seed(0)
    path = tmp_path / "espnetv2_s0.5_random.pth"
    torch.save(build_espnetv2(0.5, 20).state_dict(), path)
    return path


def _sampler(root: Path, **options: object) -> SegmentationSampler:
    dataset = open_dataset("cityscapes", {"data_dir": str(root), "split": "train"})
    settings: dict = {"codec": create_codec("jpeg"), "rate": 10.0, "input_size": (32, 64),
                      "crop": (32, 32), "batch_size": 1, "seed": 3, **options}  # fmt: skip
    return SegmentationSampler(dataset, **settings)


def _expected(sampler: SegmentationSampler, epoch: int, position: int, recon: bool) -> torch.Tensor:
    """What item(epoch, position) must be: the chosen source and the labels, cut alike."""
    index, top, left, flip = sampler.window(epoch, position)
    source = (sampler.decoded if recon else sampler.originals)[index]
    both = torch.cat(
        [resize_image(source, sampler.input_size), sampler.labels[index][None].float()]
    )
    assert sampler.crop is not None
    both = both[:, top : top + sampler.crop[0], left : left + sampler.crop[1]]
    return both.flip(-1) if flip else both


def _train_argv(root: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "segmenter", "--data-dir", str(root), "--segmenter", "espnetv2",
            "--segmenter-weights", str(weights), "--segmenter-option", "s=0.5",
            "--codec", "jpeg", "--rate", "10", "--crop", "64x64", "--batch-size", "2",
            "--lr", "1e-3", "--log-every", "2", "--out", str(out), *extra]  # fmt: skip


# --------------------------------------------------------------------------- data


def test_reconstructions_are_coded_once_through_the_codec_and_hashed(cityscapes: Path) -> None:
    sampler = _sampler(cityscapes)
    codec = create_codec("jpeg")
    assert len(sampler.decoded) == len(sampler.coded) == 4
    for index, coded in enumerate(sampler.coded):
        data, decoded = code_once(codec, sampler.originals[index], 10.0)
        assert np.array_equal(decoded, sampler.decoded[index])
        assert coded["bytes"] == len(data) and coded["bpp"] == pytest.approx(8 * len(data) / 8192)
        assert coded["sha256"] != sampler.images[index]["sha256"]  # jpeg at q10 is lossy
    assert 0 < sampler.mean_bpp < 8


def test_crops_and_labels_share_the_window_and_the_flip(cityscapes: Path) -> None:
    sampler = _sampler(cityscapes, flip=True)
    flips = []
    for position in range(4):
        item = sampler.item(0, position)
        assert item.shape == (4, 32, 32)
        assert torch.equal(item, _expected(sampler, 0, position, recon=True))
        flips.append(sampler.window(0, position)[3])
    assert any(flips) and not all(flips)  # both cases met
    batch = sampler.next_batch()
    images, labels = split_batch(batch)
    assert images.shape == (1, 3, 32, 32) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= {ROAD, SKY, CAR, 255}


def test_labels_resize_by_nearest_neighbour() -> None:
    label = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [13, 13, 255, 255], [13, 13, 255, 255]])
    assert resize_labels(label.astype(np.uint8), (2, 2)).tolist() == [[0, 10], [13, 255]]


def test_the_schedules_feed_what_they_say(cityscapes: Path) -> None:
    reconstructed = _sampler(cityscapes, schedule="reconstructed")
    original = _sampler(cityscapes, schedule="sequential", switch_at=10**9)
    for position in range(4):
        a, b = reconstructed.item(0, position), original.item(0, position)
        assert torch.equal(a[3], b[3])  # the same window and labels...
        assert not torch.equal(a[:3], b[:3])  # ...of other pixels
        assert torch.equal(b, _expected(original, 0, position, recon=False))

    sequential = _sampler(cityscapes, schedule="sequential", switch_at=6)
    shown = []
    for number in range(10):  # crosses two epochs of 4 batches
        epoch, position = sequential.epoch, sequential.index
        if position + 1 > 4:
            epoch, position = epoch + 1, 0
        batch = sequential.next_batch()
        recon = number >= 6
        assert torch.equal(batch[0], _expected(sequential, epoch, position, recon))
        shown.append(recon)
    assert shown == [False] * 6 + [True] * 4

    mixed = _sampler(cityscapes, schedule="mixed")
    first = [mixed.reconstructed(0, p, mixed.window(0, p)[0]) for p in range(4)]
    for epoch in (0, 2):  # each pair of epochs shows every image once of each kind
        for index in range(4):
            kinds = set()
            for e in (epoch, epoch + 1):
                position = int(np.flatnonzero(mixed.permutation(e) == index)[0])
                kinds.add(mixed.reconstructed(e, position, index))
                item = mixed.item(e, position)
                assert torch.equal(
                    item, _expected(mixed, e, position, mixed.reconstructed(e, position, index))
                )
            assert kinds == {True, False}
    assert set(first) == {True, False}  # a mixture within one epoch too


def test_sequential_without_a_switch_is_refused(cityscapes: Path) -> None:
    with pytest.raises(UsageError, match="switch_at"):
        _sampler(cityscapes, schedule="sequential").next_batch()


def test_training_input_matches_the_inference_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 180, 3), dtype=np.uint8)
    torch.manual_seed(0)
    v2 = tmp_path / "v2.pth"
    torch.save(build_espnetv2(0.5, 20).state_dict(), v2)
    v1 = tmp_path / "v1.pth"
    torch.save(build_espnet(20, 2, 8).state_dict(), v1)
    for name, path, options in (("espnetv2", v2, {"s": 0.5}), ("espnet", v1, {})):
        segmenter = create_segmenter(name, {"weights": str(path), **options})
        assert segmenter.input_size == INPUT_SIZE
        inference = segmenter.prepare(image)
        training = segmenter.normalize(resize_image(image, INPUT_SIZE)[None])
        assert training.shape == inference.shape == (1, 3, *INPUT_SIZE)
        assert torch.allclose(training, inference, atol=1e-5), name


# --------------------------------------------------------------------------- training


def test_a_few_steps_give_finite_falling_losses(cityscapes: Path, weights: Path) -> None:
    dataset = open_dataset("cityscapes", {"data_dir": str(cityscapes), "split": "train"})
    # One image, whole and unflipped: one repeated crop.
    sampler = SegmentationSampler(dataset, codec=create_codec("jpeg"), rate=10.0,
                                  input_size=(64, 128), crop=(64, 128), flip=False, limit=1,
                                  seed=0)  # fmt: skip
    segmenter = create_segmenter("espnetv2", {"weights": str(weights), "s": 0.5})
    trainable = SegmenterTrainable(segmenter, sampler, learning_rate=1e-3)
    options = TrainingOptions(steps=12, crop=(64, 128), batch_size=1, log_every=4)
    result = Trainer(trainable, sampler, options, log=lambda _: None, progress=False).run()
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[0] > losses[-1]
    # BatchNorm statistics stayed those of the starting weights.
    start = load_state_dict(weights)
    now = trainable.model.state_dict()
    running = [k for k in start if k.endswith("running_mean")]
    assert running and all(torch.equal(start[k], now[k]) for k in running)
    assert any(not torch.equal(start[k], now[k]) for k in start if k.endswith(".weight"))


def test_resume_equals_an_uninterrupted_run_and_the_checkpoint_is_segmenter_weights(
    cityscapes: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole, split = tmp_path / "whole.pt", tmp_path / "split.pt"
    assert main(_train_argv(cityscapes, weights, whole, "--steps", "4")) == 0
    assert main(_train_argv(cityscapes, weights, split, "--steps", "2")) == 0
    assert main(_train_argv(cityscapes, weights, split, "--steps", "4", "--resume")) == 0
    assert "resuming segmenter from" in capsys.readouterr().err
    a = torch.load(whole, map_location="cpu", weights_only=True)
    b = torch.load(split, map_location="cpu", weights_only=True)
    assert a["format"] == "bench-segmenter-1" and b["training"]["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    moments = [(s["exp_avg"], t["exp_avg"]) for s, t in zip(
        a["optimizers"]["adam"]["state"].values(), b["optimizers"]["adam"]["state"].values(),
        strict=True)]  # fmt: skip
    assert moments and all(torch.equal(x, y) for x, y in moments)

    def losses(saved: dict) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in saved["training"]["losses"]]

    assert losses(a) == losses(b) and len(losses(a)) == 2

    config = a["config"]
    assert config["segmenter"] == "espnetv2" and config["segmenter_options"] == {"s": 0.5}
    assert (config["codec"], config["rate"], config["schedule"]) == ("jpeg", 10.0, "reconstructed")
    assert config["codec_options"] == dict(create_codec("jpeg").options)
    assert len(config["images"]) == 4 and config["start_weights_sha256"] == sha256_of(weights)
    assert len(a["finetune"]["reconstructions"]) == 4

    # The checkpoint is --segmenter-weights as it stands: strict loading, the trained tensors.
    state = load_state_dict(whole)
    load_strict(build_espnetv2(0.5, 20), state, whole, "ESPNetv2 s=0.5")
    segmenter = create_segmenter("espnetv2", {"weights": str(whole), "s": 0.5})
    loaded = segmenter.model.state_dict()
    assert all(torch.equal(loaded[k], a["model"][k]) for k in loaded)
    start = load_state_dict(weights)
    assert any(not torch.equal(start[k], loaded[k]) for k in start)
    prediction = segmenter.predict(np.zeros((64, 128, 3), np.uint8))
    assert prediction.shape == (64, 128)


def test_a_resume_with_another_config_is_refused(
    cityscapes: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seq.pt"
    assert (
        main(_train_argv(cityscapes, weights, out, "--steps", "2", "--schedule", "sequential")) == 0
    )
    capsys.readouterr()
    argv = _train_argv(cityscapes, weights, out, "--steps", "2", "--resume", "--rate", "20")
    assert main(argv) == 2  # another rate and schedule: another config
    err = capsys.readouterr().err
    assert "rate (checkpoint 10.0, now 20.0)" in err and "schedule" in err
    # sequential switches at half the steps: more steps would move the switch
    assert main(_train_argv(cityscapes, weights, out, "--steps", "4", "--resume",
                            "--schedule", "sequential")) == 2  # fmt: skip
    assert "switch_at (checkpoint 1, now 2)" in capsys.readouterr().err


def test_a_run_on_the_training_images_warns(
    cityscapes: Path, weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft.pt"
    assert main(_train_argv(cityscapes, weights, out, "--steps", "1")) == 0
    task = SegmentationTask.plan("espnetv2", {"weights": str(out), "s": 0.5})
    train = open_dataset("cityscapes", {"data_dir": str(cityscapes), "split": "train"})
    val = open_dataset("cityscapes", {"data_dir": str(cityscapes), "split": "val"})
    assert sorted(task.provenance()[TRAINING_FILES]) == sorted(
        sha256_of(r.path) for r in train.refs()
    )
    (warning,) = training_leaks(train.refs()[:2], [], task)
    assert "segmentation model espnetv2 was trained on 2 of the 2 images" in warning
    assert training_leaks(val.refs(), [], task) == []
    published = SegmentationTask.plan("espnetv2", {"weights": str(weights), "s": 0.5})
    assert TRAINING_FILES not in published.provenance()
    assert training_leaks(train.refs(), [], published) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--segmenter-option", "t=1"], "unknown option t"),
        (["--codec-option", "jpeg2000.quality=1"], "for codec 'jpeg2000', but --codec is 'jpeg'"),
        (["--segmenter-option", "weights=x.pth"], "give it as --segmenter-weights"),
        (["--crop", "1024x64"], "larger than espnetv2's input 512x1024"),
        (["--lr", "0"], "--lr 0.0: expected a positive number"),
    ],
)
def test_bad_options_are_usage_errors(
    cityscapes: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:  # fmt: skip
    out = tmp_path / "bad.pt"
    assert main([*_train_argv(cityscapes, weights, out, "--steps", "1"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_help_names_the_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "segmenter", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "original images for the first half of the steps, then reconstructions" in usage
    assert "frozen" in usage
