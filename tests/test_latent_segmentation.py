"""Segmentation from a codec's latent (``--task segmentation-latent``, ``bench train
segmentation-latent``): the transform layer's size and cost against the TIC paper's Table 1,
the latent read from real bitstreams, the task's records beside decoded segmentation's, and
the training (falling losses, resume)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from PIL import Image  # noqa: E402
from synthetic import synthetic_image  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.codecs import create_codec  # noqa: E402
from bench.errors import CodecError  # noqa: E402
from bench.tasks.espnetv2 import build_espnetv2  # noqa: E402
from bench.tasks.latent import (  # noqa: E402
    LatentEntry,
    count_macs,
    parameter_count,
    shuffle_for,
    transform_layer,
)
from bench.weights import read_checkpoint  # noqa: E402

S = 0.5
"""A narrow ESPNetv2 (16/32/64/128 channels) with random weights: the tests check mechanics."""
SEGMENTER = ["--segmenter-option", f"s={S}", "--segmenter-option", "size=256x128"]
"""It sees frames at 256x128 (the published weights' 1024x512 would only slow the tests)."""


def test_transform_layer_matches_the_papers_table_1() -> None:
    """192 -> 192*8 = 1,536 channels, shuffle 4 -> 96: 296,448 parameters (weights and biases),
    and at 512x1024 (a 32x64 latent) 0.604 G multiply-accumulates, the unit the paper's Table
    1 calls FLOPs (torch's counter gives 2 per multiply-accumulate; the shuffle costs none)."""
    layer = transform_layer(192, 96, 4)
    assert parameter_count(layer) == 296_448 == 192 * 1536 + 1536
    latent = torch.zeros(1, 192, 512 // 16, 1024 // 16)
    assert tuple(layer(latent).shape) == (1, 96, 128, 256)  # H/4 x W/4 x 96
    macs = count_macs(layer, latent)
    assert macs == 32 * 64 * 192 * 1536 == 603_979_776
    assert round(macs / 1e9, 3) == 0.604


def test_shuffle_brings_the_latent_to_the_entry() -> None:
    entry = LatentEntry("", 35, 2, (512, 1024), None, None)
    assert shuffle_for(16, 1024, entry) == 4  # Cityscapes 2048x1024 into ESPNetv2
    assert shuffle_for(16, 512, entry) == 8  # half resolution
    swin = LatentEntry("", 96, 4, (512, 1024), None, None)
    assert shuffle_for(16, 512, swin) == 4  # the paper's: a 512x1024 image into Swin-T


@pytest.mark.parametrize(("name", "rate"), [("tic-hp", 3), ("tic", 0.5)])
def test_latent_from_the_bitstream_is_the_encoders(name: str, rate: float) -> None:
    """ŷ entropy-decoded from the bitstream equals the encoder's rounded latent, bit for bit,
    and the synthesis of it is the codec's own reconstruction."""
    from bench.codecs.learned.tic.model import PAD_MULTIPLE, pad_to

    image = synthetic_image(3)[:200, :300]
    codec = create_codec(name, {"weights": "random"})
    data = codec.encode(image, rate)
    latent = codec.decode_latent(data)
    assert latent.values.shape == (48, 256 // 16, 512 // 16)
    assert (latent.stride, latent.height, latent.width) == (16, 200, 300)
    model = codec.model(rate).model
    x, _ = pad_to(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255, PAD_MULTIPLE)
    quality = torch.full((1, 1, *x.shape[-2:]), float(rate)) if name == "tic" else None
    with torch.inference_mode():
        expected = model.quantised_latent(x, quality)[0].numpy()
        pixels = model.g_s(torch.from_numpy(latent.values)[None])
    assert np.array_equal(latent.values, expected)
    decoded = pixels[0, :, :200, :300].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    assert np.array_equal(decoded.numpy(), codec.decode(data))
    assert latent.synthesis_params == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("g_s")
    )


def test_codecs_without_a_latent_say_so() -> None:
    jpeg = create_codec("jpeg")
    with pytest.raises(CodecError, match="does not give its latent"):
        jpeg.decode_latent(jpeg.encode(synthetic_image(1)[:64, :64], 50))
    tiled = create_codec("tic-hp", {"weights": "random", "tile": 256, "max_megapixels": 0.05})
    data = tiled.encode(synthetic_image(1)[:300, :300], 2)
    with pytest.raises(CodecError, match="tiles has no single latent"):
        tiled.decode_latent(data)


def test_espnetv2_after_its_stem_is_the_same_network() -> None:
    """The pixel path is the stem, then ``from_level1``: the entry the latent path uses."""
    torch.manual_seed(0)
    net = build_espnetv2(S, 20).eval()
    x = torch.rand(1, 3, 128, 256)
    with torch.no_grad():
        whole = net(x)
        split = net.from_level1(net.base_net.level1(x), x, x.shape[2:])
    assert torch.equal(whole, split)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 256x512 synthetic frames with 19-class label maps, and random ESPNetv2 weights."""
    root = tmp_path_factory.mktemp("latent")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i in range(2):
        image = synthetic_image(i + 1)[:256, :512]
        Image.fromarray(image).save(root / "images" / f"f{i}.png")
        label = (image[..., 1] // 14).astype(np.uint8)
        label[label > 18] = 255
        Image.fromarray(label).save(root / "labels" / f"f{i}.png")
    torch.manual_seed(0)
    torch.save(build_espnetv2(S, 20).state_dict(), root / "espnetv2.pth")
    return root


def _train(root: Path, out: Path, steps: int, *extra: str) -> int:
    return main([
        "train", "segmentation-latent", "--dataset", "folder",
        "--data-dir", str(root / "images"), "--label-dir", str(root / "labels"),
        "--num-classes", "19", "--codec", "tic-hp", "--codec-option", "tic-hp.weights=random",
        "--rates", "1,3", "--segmenter-weights", str(root / "espnetv2.pth"),
        *SEGMENTER, "--steps", str(steps), "--log-every", "1",
        "--lr", "3e-3", "--out", str(out), *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def trained(labelled: Path) -> Path:
    out = labelled / "latent.pt"
    assert _train(labelled, out, 8) == 0
    return out


def test_training_losses_fall_and_resume_equals_one_run(labelled: Path, trained: Path) -> None:
    checkpoint = read_checkpoint(trained, "segmentation-latent")
    losses = [r["loss"] for r in checkpoint["training"]["losses"]]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    config = checkpoint["config"]
    # a 256x512 frame's 16x32 latent into a 256x128 input at stride 2: shuffle 4
    assert (config["codec"], config["latent_channels"], config["shuffle"]) == ("tic-hp", 48, 4)
    assert config["train"] == "all" and len(config["training_files_sha256"]) == 2
    halves = labelled / "halves.pt"
    assert _train(labelled, halves, 5) == 0
    assert _train(labelled, halves, 8, "--resume") == 0
    resumed = read_checkpoint(halves, "segmentation-latent")
    for name, tensor in checkpoint["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert [r["loss"] for r in resumed["training"]["losses"]] == losses


def _run(root: Path, out: Path, task: str, *extra: str) -> list[dict[str, str]]:
    assert main([
        "run", "--codecs", "tic-hp", "--rates", "tic-hp=1,3",
        "--codec-option", "tic-hp.weights=random", "--dataset", "folder",
        "--data-dir", str(root / "images"), "--label-dir", str(root / "labels"),
        "--num-classes", "19", "--task", task, "--segmenter", "espnetv2",
        "--segmenter-weights", str(root / "espnetv2.pth"), *SEGMENTER,
        "--workers", "0", "--out", str(out), *extra,
    ]) == 0  # fmt: skip
    with (out / "aggregates.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_latent_records_sit_beside_decoded_ones(labelled: Path, trained: Path) -> None:
    """The same bitstreams scored both ways: the same rate points and columns, so both runs'
    curves go on one mIoU-bpp plot and one BD table (``bench report A B``); the latent run
    writes the cost table, and warns that its network trained on these images."""
    from bench.report.compare import bd_pairs, load_sides
    from bench.tasks.segmentation import SegmentationTask

    decoded = _run(labelled, labelled / "decoded", "segmentation")
    latent = _run(
        labelled, labelled / "latent", "segmentation-latent", "--task-option", f"latent={trained}"
    )
    assert [(r["codec"], r["rate"], r["bpp_mean"]) for r in decoded] == [
        (r["codec"], r["rate"], r["bpp_mean"]) for r in latent
    ]
    for row in (*decoded, *latent):
        assert 0.0 <= float(row["miou"]) <= 1.0
    # the uncompressed row is the segmenter's own pixel path in both runs
    assert decoded[0]["codec"] == "none" and decoded[0]["miou"] == latent[0]["miou"]
    assert set(decoded[0]) <= set(latent[0])
    with (labelled / "latent" / "latent_cost.csv").open() as handle:
        cost = list(csv.DictReader(handle))
    assert [row["rate point"] for row in cost] == ["tic-hp@1", "tic-hp@3"]
    # 48 -> (16 + 3) * 4^2 channels: ESPNetv2 s=0.5's stem width and the reinforcing image
    assert float(cost[0]["transform params"]) == 48 * 19 * 16 + 19 * 16
    # a 16x32 latent: 512 positions x 48 x 304 multiply-accumulates
    assert float(cost[0]["transform GMAC"]) == pytest.approx(16 * 32 * 48 * 304 / 1e9)
    assert float(cost[0]["synthesis GMAC"]) > float(cost[0]["transform GMAC"])
    manifest = (labelled / "latent" / "manifest.json").read_text()
    assert "trained on 2 of the 2 images" in manifest
    column = next(c for c in SegmentationTask.known_columns() if c.name == "miou")
    same, _ = bd_pairs(load_sides([labelled / "decoded", labelled / "latent"]), column)
    assert [(p.anchor, p.test) for p in same] == [("tic-hp (run A)", "tic-hp (run B)")]


def test_the_latent_task_refuses_another_codecs_latents(labelled: Path, trained: Path) -> None:
    out = labelled / "other"
    assert main([
        "run", "--codecs", "tic", "--rates", "tic=0.5", "--codec-option", "tic.weights=random",
        "--dataset", "folder", "--data-dir", str(labelled / "images"),
        "--label-dir", str(labelled / "labels"), "--num-classes", "19",
        "--task", "segmentation-latent", "--segmenter", "espnetv2",
        "--segmenter-weights", str(labelled / "espnetv2.pth"), *SEGMENTER,
        "--task-option", f"latent={trained}", "--workers", "0", "--out", str(out),
    ]) == 0  # fmt: skip
    with (out / "records.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["codec"] == "tic"]
    assert rows and all(r["status"] == "error" for r in rows)
    assert all("trained on tic-hp's latents, not tic's" in r["error"] for r in rows)
