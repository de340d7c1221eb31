"""The GAN autoencoder codec (Löhdefink et al. 2019): quantizer, bitstream, checkpoints, codec."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.codecs.learned.gan.bitstream import (  # noqa: E402
    ENTROPY_HEADER_BYTES,
    HEADER_BYTES,
    VERSION_ENTROPY,
    GanHeader,
    gan_padding,
    pack_symbols,
    payload_bytes,
    read_gan_bitstream,
    unpack_symbols,
    write_gan_bitstream,
)
from bench.codecs.learned.gan.checkpoint import (  # noqa: E402
    add_entropy_model,
    load_gan_checkpoint,
    save_generator_checkpoint,
)
from bench.codecs.learned.gan.codec import GanCodec  # noqa: E402
from bench.codecs.learned.gan.config import GanConfig  # noqa: E402
from bench.codecs.learned.gan.entropy import EntropyTables  # noqa: E402
from bench.codecs.learned.gan.model import (  # noqa: E402
    GanGenerator,
    MultiScaleDiscriminator,
    Quantizer,
    discriminator_loss,
    generator_loss,
    to_network,
    to_uint8,
)
from bench.codecs.learned.gan.train import fit_entropy_model  # noqa: E402
from bench.errors import CodecError, CodecUnavailable  # noqa: E402
from bench.weights import WeightsError  # noqa: E402

TINY = 1 / 32


def _smooth_image(height: int = 32, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random colour field (upsampled noise), uint8."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=gen)
    field = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")
    return (field.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _generator(seed: int = 0, **config: object) -> GanGenerator:
    torch.manual_seed(seed)
    return GanGenerator(GanConfig(width=TINY, **config))  # type: ignore[arg-type]


def test_config_rate_and_centres():
    config = GanConfig()
    assert config.nominal_bpp == 0.0625  # paper eq. 5: F=8, L=4
    assert config.centres == (-1.5, -0.5, 0.5, 1.5)
    assert GanConfig(bottleneck=2, levels=5).centres == (-2.0, -1.0, 0.0, 1.0, 2.0)
    assert GanConfig(bottleneck=10, levels=64).nominal_bpp == pytest.approx(60 / 256)
    assert GanConfig.from_dict(eval(repr(config.__dict__))) == config
    with pytest.raises(ValueError, match="increase"):
        GanConfig(levels=3, centres=(0.0, 0.0, 1.0))


def test_latent_shape_and_symbols():
    generator = _generator(bottleneck=6, levels=4).eval()
    x = to_network(_smooth_image(32, 64))
    latent = generator.encoder(x)
    assert latent.shape == (1, 6, 2, 4)
    with torch.no_grad():
        x_hat, indices = generator(x)
    assert x_hat.shape == x.shape and indices.dtype == torch.int64
    assert indices.shape == (1, 6, 2, 4)
    assert set(indices.unique().tolist()) <= {0, 1, 2, 3}
    assert torch.equal(generator.encode(x), indices)


def test_quantizer_reaches_every_level_and_passes_the_soft_gradient():
    for levels in (2, 4, 5, 8):
        quantizer = Quantizer(GanConfig(levels=levels).centres, sigma=1.0)
        r = torch.linspace(-levels, levels, 401)
        hard, idx = quantizer(r)
        assert idx.unique().tolist() == list(range(levels))  # all levels reachable
        assert torch.equal(hard, quantizer.centres[idx])  # forward value exactly the centre
        inside = torch.linspace(-(levels - 1) / 2 + 0.01, (levels - 1) / 2 - 0.01, 101)
        inside.requires_grad_()
        quantizer(inside)[0].sum().backward()
        assert inside.grad is not None and bool((inside.grad > 0).all())  # the soft slope
    r = torch.tensor([0.2, -1.1], requires_grad=True)
    quantizer = Quantizer((-1.5, -0.5, 0.5, 1.5))
    out, _ = quantizer(r)
    out.sum().backward()
    ref = r.detach().clone().requires_grad_()
    quantizer.soft(ref).sum().backward()
    assert r.grad is not None and ref.grad is not None
    assert torch.allclose(r.grad, ref.grad) and bool((r.grad > 0).all())


def test_encoder_gets_gradients_through_the_quantizer():
    generator = _generator().train()
    x = to_network(_smooth_image())
    x_hat, _ = generator(x)
    torch.nn.functional.mse_loss(x_hat, x).backward()
    convs = [m for m in generator.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6
    for conv in convs:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_the_reference_codes_relu_defect_is_avoided():
    """A ReLU before symmetric centres never picks a negative level; bench's bottleneck does.

    L = 5 gives the reference code's centres -2..2; a ReLU output of 0 maps to level 2 (0.0).
    """
    x = to_network(_smooth_image(64, 64, seed=3))
    assert GanConfig(levels=5).centres == (-2.0, -1.0, 0.0, 1.0, 2.0)
    ours = _generator(levels=5).eval()
    relu = _generator(levels=5, bottleneck_activation="relu").eval()
    with torch.no_grad():
        ours_idx, relu_idx = ours.encode(x), relu.encode(x)
        assert relu.encoder(x).min() >= 0
    assert relu_idx.min() == 2  # the negative centres -2 and -1 are never used
    assert (ours_idx < 2).any() and (ours_idx > 2).any()  # both halves used


def test_short_training_lowers_the_distortion_and_uses_every_level():
    generator = _generator(seed=1, levels=4)
    x = to_network(_smooth_image(32, 64, seed=1))
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        x_hat, _ = generator(x)
        loss = torch.nn.functional.mse_loss(x_hat, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]  # about 0.4x on three seeds
    with torch.no_grad():
        indices = generator.eval().encode(x)
    assert sorted(indices.unique().tolist()) == [0, 1, 2, 3]


def test_generator_and_discriminator_losses_train():
    config = GanConfig(width=TINY)
    torch.manual_seed(2)
    generator, discriminator = GanGenerator(config), MultiScaleDiscriminator(config)
    x = to_network(_smooth_image(32, 64, seed=2))
    outputs = discriminator(x)
    assert len(outputs) == 3 and all(len(maps) == 5 for maps in outputs)
    assert [o[-1].shape[1] for o in outputs] == [1, 1, 1]
    assert outputs[1][0].shape[-1] < outputs[0][0].shape[-1]  # pooled scales are smaller
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for _ in range(3):
        x_hat, _ = generator(x)
        parts = generator_loss(config, x, x_hat, discriminator(x), discriminator(x_hat))
        g_opt.zero_grad()
        parts["total"].backward()
        g_opt.step()
        d_loss = discriminator_loss(discriminator(x), discriminator(x_hat.detach()))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        values = [v.item() for v in parts.values()] + [d_loss.item()]
        assert all(math.isfinite(v) for v in values)
        assert parts["feature_matching"].item() > 0 and d_loss.item() > 0
        expected = parts["gan"] + 10 * parts["feature_matching"] + 12 * parts["mse"]
        assert parts["total"].item() == pytest.approx(expected.item())


@pytest.mark.parametrize("levels", [4, 5, 2, 3, 64])
def test_symbols_round_trip_bit_exactly(levels):
    rng = np.random.default_rng(levels)
    symbols = rng.integers(0, levels, size=(8, 3, 5))
    symbols.flat[0], symbols.flat[-1] = levels - 1, levels - 1  # extremes survive
    data = pack_symbols(symbols, levels)
    assert len(data) == payload_bytes(symbols.size, levels)
    assert len(data) == math.ceil(symbols.size * math.log2(levels) / 8)
    assert np.array_equal(unpack_symbols(data, symbols.size, levels).reshape(8, 3, 5), symbols)
    with pytest.raises(CodecError):
        unpack_symbols(data[:-1], symbols.size, levels)


def test_bitstream_size_is_nominal_bits_plus_header():
    header = GanHeader(b"12345678", 32, 64, (0, 0, 0, 0), 8, 4, 2, 4)
    indices = np.random.default_rng(0).integers(0, 4, size=(8, 2, 4))
    data = write_gan_bitstream(header, indices)
    nominal_bits = GanConfig(bottleneck=8, levels=4).nominal_bpp * 32 * 64
    assert 8 * len(data) == nominal_bits + 8 * HEADER_BYTES == 128 + 8 * 37
    parsed, symbols = read_gan_bitstream(data)
    assert parsed == header and np.array_equal(symbols, indices)
    five = GanHeader(b"abcdefgh", 30, 60, (1, 1, 2, 2), 8, 5, 2, 4)
    data5 = write_gan_bitstream(five, np.full((8, 2, 4), 4))
    assert len(data5) == HEADER_BYTES + math.ceil(64 * math.log2(5) / 8) == 37 + 19
    assert read_gan_bitstream(data5)[0] == five
    with pytest.raises(CodecError, match="latent"):
        read_gan_bitstream(write_gan_bitstream(header, indices)[:4] + data[4:12] + b"\0" * 30)


def test_random_codec_pads_odd_sizes_and_crops_back():
    codec = GanCodec(weights="random")
    image = _smooth_image(48, 64)[:37, :53]
    data = codec.encode(np.ascontiguousarray(image), 0.0625)
    assert gan_padding(37, 53) == (5, 6, 5, 6)
    info = data.info  # type: ignore[attr-defined]
    assert info["padding"] == "5,6,5,6" and info["header_bytes"] == HEADER_BYTES
    assert len(data) == HEADER_BYTES + 8 * 3 * 4 * 2 // 8
    decoded = codec.decode(data)
    assert decoded.shape == (37, 53, 3) and decoded.dtype == np.uint8
    header, _ = read_gan_bitstream(data)
    assert (header.height, header.width, header.latent_height, header.latent_width) == (
        37,
        53,
        3,
        4,
    )
    assert np.array_equal(codec.decode(data), decoded)
    with pytest.raises(CodecError):
        codec.decode(data[: len(data) // 2])
    with pytest.raises(CodecError):
        codec.decode(b"\0" * 64)


def test_decoded_image_is_the_networks_own_reconstruction(tmp_path):
    config = GanConfig(bottleneck=4, levels=5, width=TINY)
    torch.manual_seed(5)
    save_generator_checkpoint(tmp_path / "g.pt", config, GanGenerator(config))
    codec = GanCodec(weights=str(tmp_path / "g.pt"))
    rate = 4 * math.log2(5) / 256
    image = np.ascontiguousarray(_smooth_image(64, 64, seed=5)[:40, :50])
    data = codec.encode(image, rate)
    top, bottom, left, right = gan_padding(40, 50)
    x = torch.nn.functional.pad(to_network(image), (left, right, top, bottom), mode="replicate")
    generator = codec.model(rate).generator
    with torch.no_grad():
        x_hat, indices = generator(x)
    expected = to_uint8(x_hat[0, :, top : top + 40, left : left + 50]).permute(1, 2, 0).numpy()
    assert np.array_equal(read_gan_bitstream(data)[1], indices[0].numpy())
    assert np.array_equal(codec.decode(data), expected)


def test_checkpoints_load_strictly_and_name_mismatches(tmp_path):
    config = GanConfig(bottleneck=4, levels=4, width=TINY)
    torch.manual_seed(0)
    generator = GanGenerator(config)
    path = save_generator_checkpoint(
        tmp_path / "ckpt.pt", config, generator, MultiScaleDiscriminator(config), {"epoch": 3}
    )
    loaded_config, loaded = load_gan_checkpoint(path, bottleneck=4, levels=4, width=TINY)
    assert loaded_config == config
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), generator.state_dict().values(), strict=True)
    )
    with pytest.raises(WeightsError, match=r"levels \(L\) 4 \(requested 8\)"):
        load_gan_checkpoint(path, levels=8)
    with pytest.raises(WeightsError, match=r"bottleneck \(F\) 4 \(requested 8\)"):
        load_gan_checkpoint(path, bottleneck=8)
    with pytest.raises(WeightsError, match=r"width 0.03125 \(requested 1\)"):
        load_gan_checkpoint(path, width=1.0)
    state = {k: v for k, v in generator.state_dict().items() if "decoder" not in k}
    broken = torch.load(path, weights_only=True)
    broken["generator"] = state
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match="missing"):
        load_gan_checkpoint(tmp_path / "broken.pt")


def test_codec_indexes_checkpoints_by_rate_and_refuses_other_models(tmp_path):
    config = GanConfig(bottleneck=4, levels=4, width=TINY)
    for seed, folder in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        save_generator_checkpoint(tmp_path / folder / "f4l4.pt", config, GanGenerator(config))
    codec_a, codec_b = GanCodec(weights=str(tmp_path / "a")), GanCodec(weights=str(tmp_path / "b"))
    image = _smooth_image()
    data = codec_a.encode(image, 0.03125)
    assert codec_a.decode(data).shape == image.shape
    with pytest.raises(CodecError, match="bitstream made by model"):
        codec_b.decode(data)
    with pytest.raises(CodecError, match="bitstream made by model"):
        GanCodec(weights="random", bottleneck=4).decode(data)
    command = (
        "bench train gan --dataset cityscapes --data-dir DIR --split train "
        "--bottleneck 4 --levels 8 --out CHECKPOINT"
    )
    with pytest.raises(CodecUnavailable, match=command):
        GanCodec(weights=str(tmp_path / "a"), bottleneck=4).encode(image, 4 * 3 / 256)
    with pytest.raises(CodecUnavailable, match="no weights"):
        GanCodec().prepare([0.0625])
    manifest = codec_a.prepare([0.03125])["weights"]["0.03125"]
    assert manifest["file"].endswith("f4l4.pt") and len(manifest["sha256"]) == 64
    assert "unverified" in manifest["note"]


# --------------------------------------------------------------------------- entropy coding


def _checkpoint_with_counts(
    path, config: GanConfig, seed: int, counts: np.ndarray | None
) -> GanGenerator:
    torch.manual_seed(seed)
    generator = GanGenerator(config)
    save_generator_checkpoint(path, config, generator)
    if counts is not None:
        add_entropy_model(path, torch.from_numpy(counts), 2, "training images")
    return generator


@pytest.mark.parametrize("levels", [4, 5])
def test_entropy_coded_round_trip_is_bit_exact(tmp_path, levels):
    config = GanConfig(bottleneck=4, levels=levels, width=TINY)
    rate = config.nominal_bpp
    images = [_smooth_image(48, 64, seed=s) for s in (1, 2)]
    torch.manual_seed(3)
    counts = fit_entropy_model(GanGenerator(config), images).numpy()
    _checkpoint_with_counts(tmp_path / "g.pt", config, 3, counts)
    coded = GanCodec(weights=str(tmp_path / "g.pt"), entropy_coding=True)
    packed = GanCodec(weights=str(tmp_path / "g.pt"))
    image = np.ascontiguousarray(_smooth_image(64, 64, seed=7)[:40, :50])
    data, plain = coded.encode(image, rate), packed.encode(image, rate)
    assert data == coded.encode(image, rate)  # deterministic
    assert data[4] == VERSION_ENTROPY and plain[4] == 1
    info = data.info  # type: ignore[attr-defined]
    assert info["header_bytes"] == ENTROPY_HEADER_BYTES == HEADER_BYTES + 4
    assert info["bpp_estimated"] == pytest.approx(rate)  # nominal, beside the measured bpp
    tables = coded.model(rate).tables()
    header, indices = read_gan_bitstream(data, tables)
    assert header.entropy_model == tables.identity  # type: ignore[union-attr]
    assert np.array_equal(indices, read_gan_bitstream(plain)[1])
    assert np.array_equal(coded.decode(data), packed.decode(plain))
    assert np.array_equal(packed.decode(data), coded.decode(plain))  # decoding needs no option
    with pytest.raises(CodecError, match="needs the entropy model"):
        read_gan_bitstream(data)
    # rANS has no checksum: only payloads that cannot be a rANS string are caught for sure.
    for bad in (data[:-1], data[: ENTROPY_HEADER_BYTES + 4], data[: ENTROPY_HEADER_BYTES - 1]):
        with pytest.raises(CodecError, match="corrupt"):
            coded.decode(bad)


def _sizes(counts: np.ndarray, symbols: np.ndarray) -> tuple[int, int]:
    f_maps, levels = counts.shape
    header = GanHeader(b"12345678", 64, 96, (0, 0, 0, 0), f_maps, levels, 4, 6)
    tables = EntropyTables(counts)
    coded = write_gan_bitstream(replace(header, entropy_model=tables.identity), symbols, tables)
    assert np.array_equal(read_gan_bitstream(coded, tables)[1], symbols)
    packed = write_gan_bitstream(header, symbols)
    return len(packed) - HEADER_BYTES, len(coded) - ENTROPY_HEADER_BYTES


@pytest.mark.parametrize("levels", [4, 5])
def test_entropy_coding_pays_off_on_peaked_counts_and_costs_little_on_uniform(levels):
    rng = np.random.default_rng(levels)
    peaked = np.full((8, levels), 10, dtype=np.int64)
    peaked[:, levels // 2] = 1000  # a trained-like model: one level dominates every map
    p = (peaked + 1) / (peaked + 1).sum(axis=1, keepdims=True)
    symbols = np.stack([rng.choice(levels, size=24, p=row) for row in p]).reshape(8, 4, 6)
    packed, coded = _sizes(peaked, symbols)
    assert coded < packed / 2, (packed, coded)
    uniform = rng.integers(0, levels, size=(8, 4, 6))
    packed_u, coded_u = _sizes(np.zeros((8, levels), dtype=np.int64), uniform)
    assert packed_u <= coded_u <= packed_u + 12, (packed_u, coded_u)  # rANS flush: 8 bytes
    print(f"L={levels}: peaked {packed} -> {coded} bytes; uniform {packed_u} -> {coded_u}")


def test_fitted_counts_are_a_per_map_bincount_of_the_indices():
    generator = _generator(4, bottleneck=3, levels=5)
    generator.train()
    images = [_smooth_image(32, 48, seed=1), _smooth_image(48, 64, seed=2)[:37, :53]]
    counts = fit_entropy_model(generator, images)
    assert counts.dtype == torch.int64 and tuple(counts.shape) == (3, 5)
    assert generator.training  # mode restored
    generator.eval()
    expected = np.zeros((3, 5), dtype=np.int64)
    for image in images:
        top, bottom, left, right = gan_padding(*image.shape[:2])
        x = torch.nn.functional.pad(
            to_network(np.ascontiguousarray(image)), (left, right, top, bottom), mode="replicate"
        )
        with torch.no_grad():
            indices = generator.encode(x)[0].numpy()
        for f in range(3):
            expected[f] += np.bincount(indices[f].reshape(-1), minlength=5)
    assert np.array_equal(counts.numpy(), expected)
    assert counts.sum() == 3 * (2 * 3 + 3 * 4)


def test_entropy_coding_needs_the_checkpoints_own_entropy_model(tmp_path):
    config = GanConfig(bottleneck=4, levels=4, width=TINY)
    rate = config.nominal_bpp
    peaked = np.tile(np.array([5, 200, 300, 5]), (4, 1))
    _checkpoint_with_counts(tmp_path / "a" / "g.pt", config, 0, peaked)
    _checkpoint_with_counts(tmp_path / "b" / "g.pt", config, 0, peaked[:, ::-1].copy())
    _checkpoint_with_counts(tmp_path / "c" / "g.pt", config, 0, None)
    image = _smooth_image()
    data = GanCodec(weights=str(tmp_path / "a"), entropy_coding=True).encode(image, rate)
    loaded = torch.load(tmp_path / "a" / "g.pt", map_location="cpu", weights_only=True)
    assert loaded["entropy_model"]["counts"].dtype == torch.int64
    with pytest.raises(CodecError, match=r"entropy model \w+; .* has entropy model"):
        GanCodec(weights=str(tmp_path / "b")).decode(data)
    with pytest.raises(CodecError, match="has no entropy_model"):
        GanCodec(weights=str(tmp_path / "c")).decode(data)
    without = GanCodec(weights=str(tmp_path / "c"), entropy_coding=True)
    for call in (lambda: without.encode(image, rate), lambda: without.prepare([rate])):
        with pytest.raises(CodecUnavailable, match="bench train gan --fit-entropy-model-only"):
            call()
    plain = GanCodec(weights=str(tmp_path / "c"))
    assert plain.decode(plain.encode(image, rate)).shape == image.shape  # packed: needs none
    manifest = GanCodec(weights=str(tmp_path / "a"), entropy_coding=True).prepare([rate])
    assert manifest["weights"][f"{rate:g}"]["entropy_model"]["images"] == 2


def test_a_target_bpp_run_searches_only_the_checkpoints_it_has(tmp_path):
    # Before the fix, --target-bpp 0.0625 with the 0.0625 bpp checkpoint bisected the whole
    # bpp scale from 1/256 and failed every record: "no checkpoint for 0.00390625 bpp".
    from PIL import Image

    from bench.datasets.folder import FolderDataset
    from bench.runner import plan_codec, run

    config = GanConfig(bottleneck=8, levels=4, width=TINY)
    assert config.nominal_bpp == 0.0625
    torch.manual_seed(2)
    weights = save_generator_checkpoint(tmp_path / "w" / "f8l4.pt", config, GanGenerator(config))
    other = GanConfig(bottleneck=4, levels=4, width=TINY)  # 0.03125 bpp
    save_generator_checkpoint(tmp_path / "w" / "f4l4.pt", other, GanGenerator(other))
    (tmp_path / "images").mkdir()
    for seed in (1, 2):
        Image.fromarray(_smooth_image(64, 96, seed=seed)).save(tmp_path / "images" / f"{seed}.png")
    plan = plan_codec("gan", {"weights": str(weights)}, targets=[0.0625])
    assert plan.usable, plan.unusable_reason
    result = run(FolderDataset(data_dir=tmp_path / "images"), [plan], tmp_path / "run")
    assert [r.status for r in result.records] == ["ok", "ok"], [r.error for r in result.records]
    assert {r.rate for r in result.records} == {0.0625}
    assert all("searched 1 bpp values" in r.note for r in result.records), result.records[0].note
    assert GanCodec(weights=str(tmp_path / "w")).rate_points() == (0.03125, 0.0625)
    assert GanCodec(weights=str(tmp_path / "w"), bottleneck=8).rate_points() == (0.0625,)
    assert GanCodec(weights="random").rate_points() is None


def test_a_truncated_checkpoint_in_a_directory_costs_only_its_rate_points(tmp_path):
    # Before the fix, one truncated file of weights=DIR failed the whole run (WeightsError
    # from indexing the directory) although the other checkpoints were fine.
    from PIL import Image

    from bench.datasets.folder import FolderDataset
    from bench.runner import plan_codec, run

    for levels in (2, 4):
        config = GanConfig(bottleneck=8, levels=levels, width=TINY)
        save_generator_checkpoint(tmp_path / "w" / f"f8l{levels}.pt", config, GanGenerator(config))
    bad = tmp_path / "w" / "f8l4.pt"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    (tmp_path / "images").mkdir()
    Image.fromarray(_smooth_image(32, 48)).save(tmp_path / "images" / "a.png")
    plan = plan_codec("gan", {"weights": str(tmp_path / "w")}, rates=[0.03125, 0.0625])
    assert plan.usable, plan.unusable_reason
    result = run(FolderDataset(data_dir=tmp_path / "images"), [plan], tmp_path / "run")
    by_rate = {r.rate: r for r in result.records}
    assert by_rate[0.03125].ok, by_rate[0.03125].error
    assert not by_rate[0.0625].ok and str(bad) in by_rate[0.0625].error
    assert "no checkpoint for 0.0625 bpp" in by_rate[0.0625].error
    assert "missing" in plan.provenance["weights"]["0.0625"]


def test_no_checkpoint_names_the_option_that_excluded_one(tmp_path):
    # Before the fix: "no checkpoint for 0.0625 bpp (it has 0.0625 (F=8, L=4))".
    config = GanConfig(bottleneck=8, levels=4, width=TINY)
    save_generator_checkpoint(tmp_path / "f8l4.pt", config, GanGenerator(config))
    with pytest.raises(CodecUnavailable) as caught:
        GanCodec(weights=str(tmp_path), bottleneck=3).prepare([0.0625])
    assert "it has 0.0625 bpp (F=8, L=4), excluded by gan.bottleneck=3" in str(caught.value)
    with pytest.raises(CodecUnavailable) as caught:
        GanCodec(weights=str(tmp_path)).prepare([0.03125])
    assert "(it has 0.0625 bpp (F=8, L=4))" in str(caught.value)
