"""The TIC codecs: TransTIC's module tree, real bitstreams, padding and tiling, lambda(q),
Perlin quality maps, prompted attention, training, and PSNR inside and outside an ROI."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from bench.codecs import create_codec  # noqa: E402
from bench.codecs.base import TRAINING_FILES  # noqa: E402
from bench.codecs.learned.tic.bitstream import (  # noqa: E402
    HEADER_BYTES,
    TILE_HEADER_BYTES,
    read_tic_bitstream,
    tile_boxes,
)
from bench.codecs.learned.tic.checkpoint import load_tic_checkpoint  # noqa: E402
from bench.codecs.learned.tic.layers import (  # noqa: E402
    WindowAttention,
    shift_mask,
    shift_regions,
)
from bench.codecs.learned.tic.model import (  # noqa: E402
    TicConfig,
    TicHyperprior,
    TicPrompted,
    build_model,
    lambda_chang,
    lambda_kao,
    rate_distortion_loss,
)
from bench.codecs.learned.tic.train import (  # noqa: E402
    TicTrainable,
    load_base_codec,
    perlin_noise,
    perlin_quality_map,
    uniform_quality_maps,
)
from bench.errors import CodecError  # noqa: E402
from bench.weights import WeightsError  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
OLD_NAMES = re.compile(r"^entropy_bottleneck\._(matrix|bias|factor)(\d+)$")
NEW_NAMES = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def transtic_listing(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every state-dict entry of TransTIC's TIC_hp (the fixture)."""
    entries = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        entries.append((key, tuple(int(v) for v in shape.split(",") if v), dtype))
    return entries


def renamed(key: str) -> str:
    """TransTIC's entropy-bottleneck names as CompressAI >= 1.2.6 names them."""
    match = OLD_NAMES.match(key)
    return f"entropy_bottleneck.{NEW_NAMES[match[1]]}.{match[2]}" if match else key


def rounded_forward(model, x, quality_map=None):
    """The network's own eval pass (rounded latents), as uint8 pixels."""
    with torch.no_grad():
        x_hat = model(x, quality_map)["x_hat"]
    return x_hat.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


# --- TransTIC's TIC_hp, name by name -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "n", "m", "parameters"),
    [
        ("transtic_tic_hp_n128_m192.txt", 128, 192, 7_510_723),
        ("transtic_tic_hp_n192_m320.txt", 192, 320, 17_658_179),
    ],
)
def test_tic_hp_has_transtic_names_shapes_and_counts(fixture, n, m, parameters):
    theirs = transtic_listing(fixture)
    model = TicHyperprior(n, m)
    ours = {k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}
    assert len(theirs) == len(ours) == 571
    assert {renamed(k): (s, d) for k, s, d in theirs} == ours
    assert sum(p.numel() for p in model.parameters()) == parameters
    masks = sorted(k for k in ours if k.endswith("attn_mask"))
    assert len(masks) == 16 and "h_a3.residual_group.blocks.1.attn_mask" not in ours


def test_a_transtic_checkpoint_loads_strictly_and_its_empty_tables_are_rebuilt(tmp_path):
    """A checkpoint in TransTIC's release layout, with its old entropy-bottleneck names and the
    empty CDF tables of a training checkpoint, loads strictly and codes."""
    reference = TicHyperprior(128, 192)  # randomly initialised: unlike the codec's own init
    old_names = {}
    for key, value in reference.state_dict().items():
        match = re.match(r"^entropy_bottleneck\.(matrices|biases|factors)\.(\d+)$", key)
        if match:
            short = {v: k for k, v in NEW_NAMES.items()}[match[1]]
            key = f"entropy_bottleneck._{short}{match[2]}"
        old_names[key] = value
    assert {k for k, _, _ in transtic_listing("transtic_tic_hp_n128_m192.txt")} == set(old_names)
    path = tmp_path / "base_codec_1.pth.tar"
    torch.save(
        {
            "epoch": 3,
            "state_dict": old_names,
            "loss": torch.tensor(0.5),
            "optimizer": {},
            "aux_optimizer": {},
            "lr_scheduler": {},
        },
        path,
    )
    codec = create_codec("tic-hp", {"weights": str(tmp_path)})
    loaded = codec.model(1).model
    for key, value in reference.state_dict().items():
        if not key.endswith(("_quantized_cdf", "_offset", "_cdf_length", "scale_table")):
            assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.entropy_tables_empty()
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = codec.encode(image, 1)
    assert codec.decode(data).shape == (256, 256, 3)
    prepared = codec.prepare([1])
    assert "unverified" in prepared["weights"]["1"]["note"]
    assert len(prepared["weights"]["1"]["sha256"]) == 64


def test_a_checkpoint_of_another_size_names_what_differs(tmp_path):
    path = tmp_path / "base_codec_5.pth.tar"
    torch.save({"state_dict": TicHyperprior(128, 192).state_dict()}, path)
    codec = create_codec("tic-hp", {"weights": str(tmp_path)})
    with pytest.raises(Exception, match=r"quality 5 \(N=192, M=320\).*wrong shape"):
        codec.model(5)


# --- bitstreams ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rate"), [("tic-hp", 2), ("tic", 0.5)])
def test_decoding_equals_the_networks_own_pass_on_rounded_latents(name, rate):
    codec = create_codec(name, {"weights": "random"})
    image = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = codec.encode(image, rate)
    assert codec.encode(image, rate) == data
    decoded = codec.decode(data)
    assert np.array_equal(decoded, codec.decode(data))
    model = codec.model(rate).model
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    quality_map = torch.full((1, 1, 256, 256), rate) if name == "tic" else None
    assert np.abs(decoded.astype(int) - rounded_forward(model, x, quality_map)).max() <= 1
    header, tiles = read_tic_bitstream(data)
    assert (header.height, header.width, header.tile) == (256, 256, 0)
    assert len(data) == HEADER_BYTES + TILE_HEADER_BYTES + len(tiles[0][1]) + len(tiles[0][2])
    assert data.info["header_bytes"] == HEADER_BYTES + TILE_HEADER_BYTES
    assert 0.5 < data.info["bpp_estimated"] / (8 * len(data) / 256**2) < 2


def test_images_of_any_size_are_padded_to_256_and_cropped_back():
    codec = create_codec("tic", {"weights": "random"})
    image = np.random.default_rng(2).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    data = codec.encode(image, 0.25)
    assert data.info["padding"] == "0,56,0,212"
    assert codec.decode(data).shape == (200, 300, 3)
    assert read_tic_bitstream(data)[1][0][0] == (4, 8)  # z of the padded 256 x 512


def test_large_images_are_refused_or_tiled_and_the_tiling_is_recorded():
    image = np.random.default_rng(3).integers(0, 256, (300, 520, 3), dtype=np.uint8)
    small = create_codec("tic", {"weights": "random", "max_megapixels": 0.1})
    with pytest.raises(CodecError, match=r"tic\.tile=1024"):
        small.encode(image, 0.5)
    tiled = create_codec("tic", {"weights": "random", "max_megapixels": 0.1, "tile": 256})
    data = tiled.encode(image, 0.5)
    assert "tiles=6x256" in data.info["padding"]
    header, tiles = read_tic_bitstream(data)
    assert header.tile == 256 and len(tiles) == 6
    assert data.info["header_bytes"] == HEADER_BYTES + 6 * TILE_HEADER_BYTES
    assert tiled.decode(data).shape == image.shape
    assert tile_boxes(300, 520, 256)[-1] == (256, 512, 44, 8)


def test_tic_decodes_without_the_quality_map_and_the_map_steers_the_encoder():
    codec = create_codec("tic", {"weights": "random"})
    image = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    roi = np.zeros((256, 256), np.float32)
    roi[:128] = 1.0
    mapped = codec.encode_with(image, 1.0, {"quality_map": roi})
    assert codec.decode(mapped).shape == image.shape  # the decoder never sees the map
    model = codec.model(1.0).model
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        steered = model.g_a(x, torch.from_numpy(roi)[None, None])
        uniform = model.g_a(x, torch.ones(1, 1, 256, 256))
    assert not torch.equal(steered, uniform)
    with pytest.raises(CodecError, match="quality map"):
        codec.encode_with(image, 1.0, {"quality_map": roi[:100]})


def test_a_bitstream_of_other_weights_is_refused(tmp_path):
    image = np.zeros((256, 256, 3), np.uint8)
    data = create_codec("tic-hp", {"weights": "random"}).encode(image, 1)
    forged = bytearray(data)
    forged[6] ^= 0xFF  # the model identity
    with pytest.raises(CodecError, match="other weights"):
        create_codec("tic-hp", {"weights": "random"}).decode(bytes(forged))


# --- lambda(q), Perlin maps, prompts --------------------------------------------------------------


def test_lambda_curves():
    q = torch.tensor([0.0, 0.5, 1.0])
    chang = lambda_chang(q)
    assert chang[0].item() == pytest.approx(1 / (10 * 255**2), rel=1e-6)
    assert chang[2].item() == pytest.approx(0.1 + 1 / (10 * 255**2), rel=1e-6)
    expected_middle = 0.1 * ((math.exp(2) - 1) / (math.exp(4) - 1) + 1 / 255**2)
    assert chang[1].item() == pytest.approx(expected_middle, rel=1e-6)
    kao = lambda_kao(q)
    assert kao[0].item() == pytest.approx(0.0018, rel=1e-6)
    assert kao[2].item() == pytest.approx(0.0932, rel=1e-6)
    assert kao[1].item() == pytest.approx(math.sqrt(0.0018 * 0.0932), rel=1e-6)


def test_the_loss_is_eq_3_and_the_balanced_objective_weighs_images_alike():
    """``loss`` is eq. 3 over the batch, computed here from its definition; the balanced
    objective is 1 in value and has the gradient of the mean of the images' log-losses."""
    config = TicConfig.preset("tiny")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=generator)
    x_hat = (x + 0.05 * torch.randn(3, 3, 8, 8, generator=generator)).requires_grad_()
    y = torch.rand(3, 4, 2, 2, generator=generator).clamp(0.01).requires_grad_()
    z = torch.rand(3, 2, 1, 1, generator=generator).clamp(0.01)
    quality_map = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, 1, 8, 8)
    out = {"x_hat": x_hat, "likelihoods": {"y": y, "z": z}}
    losses = rate_distortion_loss(config, x, out, quality_map)
    bits = -(y.log2().sum() + z.log2().sum())
    lambdas = lambda_chang(torch.tensor([0.0, 0.5, 1.0])).view(3, 1, 1, 1)
    by_hand = 255**2 * (lambdas * (x_hat - x).pow(2).mean(1, keepdim=True)).mean() + bits / 192
    assert losses["loss"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert losses["objective"] is losses["loss"]
    balanced = rate_distortion_loss(config, x, out, quality_map, balanced=True)
    assert balanced["loss"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert balanced["objective"].item() == pytest.approx(1.0, rel=1e-6)
    (gradient,) = torch.autograd.grad(balanced["objective"], [y])
    each = 255**2 * (lambdas * (x_hat - x).pow(2).mean(1, keepdim=True)).flatten(1).mean(1)
    each = each + -(y.log2().flatten(1).sum(1) + z.log2().flatten(1).sum(1)) / 64
    (expected,) = torch.autograd.grad(each.log().mean(), [y])
    assert torch.allclose(gradient, expected, rtol=1e-5, atol=1e-9)
    # under eq. 3 the image at q = 1 has by far the largest loss, and each image's rate gets the
    # same gradient; the balanced objective scales each image's gradient by 1 / its loss
    assert each[2] > 10 * each[0]
    (plain,) = torch.autograd.grad(rate_distortion_loss(config, x, out, quality_map)["loss"], [y])
    ratio = plain[0].abs().sum() / plain[2].abs().sum()
    inverse_likelihoods = y.reciprocal().flatten(1).sum(1)
    expected_ratio = inverse_likelihoods[0] / inverse_likelihoods[2]
    assert ratio.item() == pytest.approx(expected_ratio.item(), rel=1e-5)
    assert (gradient[0].abs().sum() / gradient[2].abs().sum()).item() == pytest.approx(
        ratio.item() * (each[2] / each[0]).item(), rel=1e-4
    )


def test_perlin_maps_have_two_values_and_a_lower_threshold_gives_a_larger_roi():
    shares = []
    for threshold in (0.3, 0.2, 0.1, 0.0):
        generator = torch.Generator().manual_seed(5)
        quality_map = perlin_quality_map(256, 256, threshold, 0.9, 0.2, 4, generator)
        assert quality_map.unique().tolist() == pytest.approx([0.2, 0.9])
        shares.append(float((quality_map > 0.5).float().mean()))
    assert shares == sorted(shares) and shares[0] < shares[-1]
    assert 0.2 < shares[-1] < 0.8  # about half the noise is above 0
    noise = perlin_noise(64, 64, 4, torch.Generator().manual_seed(0))
    assert noise[0, 0] == 0 and noise[16, 16] == pytest.approx(0, abs=1e-6)  # lattice points
    assert float(noise.abs().max()) <= 1.0 + 1e-6
    maps = uniform_quality_maps(4, 8, 8)
    firsts = sorted(maps[:, 0, 0, 0].tolist())
    assert all(i / 4 <= v < (i + 1) / 4 for i, v in enumerate(firsts))  # stratified


def test_prompted_attention_takes_16_prompts_per_window_and_masks_them_by_region():
    attention = WindowAttention(32, 8, 8)
    x, prompts = torch.randn(6, 64, 32), torch.randn(6, 16, 32)
    assert attention(x, None, prompts).shape == (6, 64, 32)
    mask = shift_mask(16, 16, 8, 4, prompt_down=2)
    assert mask.shape == (4, 64, 80)
    assert torch.equal(mask[:, :, 16:], shift_mask(16, 16, 8, 4))  # image keys as Swin's
    labels = shift_regions(16, 16, 8, 4)
    # last window (bottom right): prompt (0, 0) covers pixels (8..9, 8..9), region of (8, 8)
    query_of = {(r, c): r * 8 + c for r in range(8) for c in range(8)}
    # the bottom-right window: query (0, 0) is pixel (8, 8); prompt 0 covers pixels (8..9,
    # 8..9), same region; prompt 3 covers (8..9, 14..15), another region, which query (0, 7),
    # pixel (8, 15), shares
    assert labels[8, 8] == labels[9, 9] != labels[8, 14] == labels[8, 15]
    assert mask[3, query_of[0, 0], 0] == 0
    assert mask[3, query_of[0, 0], 3] == -100.0
    assert mask[3, query_of[0, 7], 3] == 0
    model = TicPrompted(32, 48, 8).eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        low, high = (
            model.g_a(x, torch.zeros(1, 1, 256, 256)),
            model.g_a(x, torch.ones(1, 1, 256, 256)),
        )
    assert low.shape == (1, 48, 16, 16) and not torch.equal(low, high)
    unprompted = {k for k in model.state_dict() if "_prompt" not in k}
    assert unprompted == set(TicHyperprior(32, 48).state_dict())


# --- training -------------------------------------------------------------------------------------


def _folder(tmp_path: Path, count: int = 2) -> Path:
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(6)
    for i in range(count):
        y, x = np.mgrid[0:256, 0:256]
        image = np.stack([(x + 40 * i) % 256, y, (x + y) // 2], axis=-1).astype(np.uint8)
        image = np.clip(image + rng.integers(-8, 8, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"im{i}.png")
    return root


def test_a_few_training_steps_fall_and_resume_repeats_the_next_step(tmp_path):
    from bench.datasets import open_dataset
    from bench.training import ImageSampler, Trainer, TrainingOptions, seed_everything

    dataset = open_dataset("folder", {"data_dir": _folder(tmp_path)})
    config = TicConfig.preset("tiny")

    def trainer(steps: int, out: Path) -> Trainer:
        options = TrainingOptions(
            steps=steps,
            crop=(256, 256),
            batch_size=1,
            seed=3,
            checkpoint_every=2,
            log_every=1,
            out=out,
        )
        sampler = ImageSampler(dataset, crop=(256, 256), batch_size=1, seed=3)
        seed_everything(3)  # the initial weights, as bench train tic does
        trainable = TicTrainable(config, total_steps=4, perlin_from=2, learning_rate=1e-3)
        return Trainer(trainable, sampler, options, progress=False, log=lambda _: None)

    straight = trainer(3, tmp_path / "straight.pt")
    result = straight.run()
    records = [h for h in result.history if "loss" in h]
    assert all(math.isfinite(h[k]) for h in records for k in ("loss", "bpp", "mse", "aux"))
    assert records[-1]["bpp"] < records[0]["bpp"]  # the loss itself swings with the random q
    trainer(2, tmp_path / "resumed.pt").run()
    resumed = trainer(3, tmp_path / "resumed.pt").run(resume=True)
    assert resumed.losses == pytest.approx(result.losses, rel=1e-5)
    config_back, model = load_tic_checkpoint(tmp_path / "straight.pt")
    assert config_back == config and isinstance(model, TicPrompted)
    codec = create_codec("tic", {"weights": str(tmp_path / "straight.pt")})
    image = np.asarray(dataset.load(dataset.refs()[0]).image)
    assert codec.decode(codec.encode(image, 0.5)).shape == image.shape
    assert "NOT the paper's size" in codec.prepare([0.5])["weights"]["size"]
    # a fine-tune starts from those weights, records its loss, and still names the images
    # of the run it started from (so that bench run's leak warning sees them)
    seed_everything(4)
    start = ("tic", tmp_path / "straight.pt")
    tuned = TicTrainable(config, total_steps=1, perlin_from=0, init=start, loss="balanced")
    saved = model.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in tuned.model.state_dict().items())
    extra = tuned.checkpoint_extra()
    assert extra["schedule"]["loss"] == "balanced"
    assert extra["schedule"]["initialised_from"] == f"tic={tmp_path / 'straight.pt'}"
    assert extra["earlier_training"]["steps"] == 3
    options = TrainingOptions(steps=1, crop=(256, 256), batch_size=1, seed=4, out=tmp_path / "t.pt")
    sampler = ImageSampler(dataset, crop=(256, 256), batch_size=1, seed=4, limit=1)
    Trainer(tuned, sampler, options, progress=False, log=lambda _: None).run()
    first_run = create_codec("tic", {"weights": str(tmp_path / "straight.pt")}).prepare([0.5])
    prepared = create_codec("tic", {"weights": str(tmp_path / "t.pt")}).prepare([0.5])
    assert prepared["weights"]["training_images"] == 1
    assert prepared["weights"]["earlier_training"] == {"steps": 3, "images": 2}
    assert prepared[TRAINING_FILES] == first_run[TRAINING_FILES]
    # a fine-tune of the fine-tune: steps add up, the shared images count once
    again = TicTrainable(config, total_steps=1, perlin_from=0, init=("tic", tmp_path / "t.pt"))
    assert again.checkpoint_extra()["earlier_training"]["steps"] == 4
    assert len(again.checkpoint_extra()["earlier_training"]["images"]) == 2
    with pytest.raises(WeightsError, match="give the same --size"):
        TicTrainable(TicConfig.preset("small"), total_steps=2, perlin_from=0, init=start)


def test_the_base_codec_initialises_a_prompted_model_of_the_papers_size(tmp_path):
    base = TicHyperprior(128, 192)
    path = tmp_path / "base_codec_1.pth.tar"
    torch.save({"state_dict": base.state_dict(), "epoch": 1}, path)
    prompted = build_model(TicConfig())
    prompt_before = prompted.g_a0_prompt.down1[0].weight.clone()
    load_base_codec(prompted, path)
    assert torch.equal(prompted.g_a0.weight, base.g_a0.weight)
    assert torch.equal(prompted.g_s7.weight, base.g_s7.weight)
    assert torch.equal(prompted.g_a0_prompt.down1[0].weight, prompt_before)
    small = build_model(TicConfig.preset("tiny"))
    with pytest.raises(Exception, match="not a TIC_hp of this model's size"):
        load_base_codec(small, path)


def test_narrower_presets_keep_the_papers_head_width():
    """TIC's heads at N = 128 are 16 channels wide (8 channels in the 16-head stages); the
    narrower presets divide the heads, not the head width, and say so; the paper's preset and
    TIC_hp keep TIC's heads."""
    assert TicConfig.preset("paper").heads == (8, 8, 8, 16, 16, 16) == TicConfig().heads
    assert TicConfig.preset("paper").is_paper_size
    tiny = TicConfig.preset("tiny")
    assert tiny.heads == (2, 2, 2, 4, 4, 4)
    assert TicConfig.preset("small").heads == (4, 4, 4, 8, 8, 8)
    assert (
        "heads [2, 2, 2, 4, 4, 4]" in tiny.describe() and "NOT the paper's size" in tiny.describe()
    )
    model = build_model(tiny)
    assert model.g_a1.residual_group.blocks[0].attn.num_heads == 2
    assert model.g_a7.residual_group.blocks[0].attn.num_heads == 4  # M = 48: 12 per head
    assert model.g_s6.residual_group.blocks[0].attn.num_heads == 2  # the decoder mirrors
    assert TicConfig.from_dict(tiny.to_dict()) == tiny  # through a checkpoint's JSON
    assert TicConfig.from_dict({"n": 32, "m": 48}).heads == (8, 8, 8, 16, 16, 16)  # older files
    with pytest.raises(ValueError, match="does not split into"):
        TicConfig(n=32, m=48, heads=(3, 2, 2, 4, 4, 4))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--init", "gan=x.pt"], "expected tic-hp=PATH or tic=PATH"),
        (["--init", "tic-hp=x.pth.tar"], "needs --size paper"),
        (["--init", "tic=x.pt", "--resume"], "give one of them"),
        (["--init-from", "x.pt"], "fine-tune with --init tic=PATH"),
    ],
)
def test_train_tic_refuses_a_start_it_cannot_make(tmp_path, capsys, extra, message):
    from bench.cli import EXIT_USAGE, main

    argv = ["train", "tic", "--size", "tiny", "--steps", "1", "--out", str(tmp_path / "o.pt")]
    assert main(argv + extra) == EXIT_USAGE
    assert message in capsys.readouterr().err
