"""GDAE's networks, latent coders and bitstream: parameter counts against the spec's arithmetic
(section 5), the blocks' definitions, bit-exact lossless coding of the latent (JPEG XL and
rANS) and the BGDS header."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.codecs.learned.gdae.bitstream import (  # noqa: E402
    HEADER_BYTES,
    GdaeHeader,
    read_gdae_bitstream,
    write_gdae_bitstream,
)
from bench.codecs.learned.gdae.coder import (  # noqa: E402
    count_levels,
    decode_jxl,
    decode_rans,
    encode_jxl,
    encode_rans,
    mosaic,
    rans_tables,
)
from bench.codecs.learned.gdae.model import (  # noqa: E402
    DenseResidualBlock,
    GdaeConfig,
    GdaeGenerator,
    PatchDiscriminator,
    StripPooling,
    parameter_count,
)
from bench.errors import CodecError  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The spec's parameter arithmetic (section 5, ``param_counts.py``), re-derived here.
def conv(cin: int, cout: int, kh: int, kw: int | None = None, bias: bool = True) -> int:
    return cin * cout * kh * (kw or kh) + (cout if bias else 0)


def drb(c: int, g: int, layers: int = 4) -> int:
    return sum(conv(c + i * g, g, 3) for i in range(layers)) + conv(c + layers * g, c, 1)


def spm(c: int) -> int:  # (3x1) and (1x3) bias-free convs, two BNs, a biased 1x1 conv
    return conv(c, c, 3, 1, bias=False) + conv(c, c, 1, 3, bias=False) + 2 * 2 * c + conv(c, c, 1)


def encoder(ch: tuple[int, ...], g: int, latent: int) -> int:
    c0, c1, c2, c3 = ch
    total = conv(3, c0, 3)
    for cin, cout in ((c0, c1), (c1, c2), (c2, c3)):
        total += conv(cin, cout, 3) + drb(cout, g)
    return total + spm(c3) + conv(c3, latent, 3)


def decoder(ch: tuple[int, ...], g: int, latent: int) -> int:
    c0, c1, c2, c3 = ch
    total = conv(latent, c3, 3) + spm(c3)
    for cin, cout in ((c3, c2), (c2, c1), (c1, c0)):
        total += drb(cin, g) + conv(cin, cout, 4)  # a 4x4 transposed conv counts the same
    return total + conv(c0, 3, 3)


def patchgan(nf: int) -> int:  # pix2pix n_layers = 3: nf, 2nf, 4nf (stride 2), 8nf (stride 1)
    widths = [nf, 2 * nf, 4 * nf, 8 * nf]
    total = conv(3, nf, 4)
    for cin, cout in itertools.pairwise(widths):
        total += conv(cin, cout, 4, bias=False) + 2 * cout
    return total + conv(8 * nf, 1, 4)


@pytest.mark.parametrize(
    ("preset", "channels", "growth", "nf", "generator", "discriminator"),
    [
        ("full", (64, 128, 128, 128), 32, 64, 2_710_547, 2_765_633),
        ("cpu", (32, 64, 64, 64), 16, 32, 688_659, 694_689),
    ],
)
def test_parameter_counts_are_the_specs(preset, channels, growth, nf, generator, discriminator):
    config = GdaeConfig.from_preset(preset)
    assert (config.channels, config.growth, config.discriminator_width) == (channels, growth, nf)
    assert (config.latent_channels, config.levels, config.preset) == (16, 8, preset)
    model = GdaeGenerator(config)
    assert parameter_count(model.encoder) == encoder(channels, growth, 16)
    assert parameter_count(model.decoder) == decoder(channels, growth, 16)
    assert (
        parameter_count(model)
        == generator
        == encoder(channels, growth, 16) + decoder(channels, growth, 16)
    )
    assert parameter_count(PatchDiscriminator(config)) == discriminator == patchgan(nf)
    if preset == "full":  # the spec's worked numbers
        assert drb(128, 32) == 235_776 and spm(128) == 115_328
        assert parameter_count(model.encoder) == 1_211_920
        assert parameter_count(model.decoder) == 1_498_627


def test_config_presets_labels_and_round_trip():
    config = GdaeConfig.from_preset("cpu", latent_channels=8)
    assert config.preset == "custom" and config.latent_channels == 8
    assert "NOT a published size" in config.describe()
    assert GdaeConfig.from_dict(config.to_dict()) == config
    assert GdaeConfig() == GdaeConfig.from_preset("full")  # the spec's sizes are the default
    assert config.centres == tuple(np.linspace(-3.5, 3.5, 8))
    assert GdaeConfig().raw_bpp == 0.75
    with pytest.raises(ValueError, match="unknown"):
        GdaeConfig.from_dict({"width": 2})
    with pytest.raises(ValueError, match="four widths"):
        GdaeConfig(channels=(8, 8, 8))  # type: ignore[arg-type]


def test_dense_block_and_strip_pooling_compute_their_definitions():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    block = DenseResidualBlock(6, 3)
    features = [x]
    for conv3 in block.layers:
        features.append(torch.relu(conv3(torch.cat(features, 1))))
    assert [f.shape[1] for f in features] == [6, 3, 3, 3, 3]
    assert torch.allclose(block(x), x + block.fuse(torch.cat(features, 1)), atol=1e-6)
    pool = StripPooling(6).eval()
    column = pool.vertical(x.mean(3, keepdim=True))  # (N, C, H, 1)
    row = pool.horizontal(x.mean(2, keepdim=True))  # (N, C, 1, W)
    gate = torch.sigmoid(pool.gate(torch.relu(column + row)))
    assert torch.allclose(pool(x), x * gate, atol=1e-6)
    assert not any(m.bias is not None for m in (pool.vertical[0], pool.horizontal[0]))


def test_generator_shapes_and_hard_latent():
    config = GdaeConfig(channels=(8, 8, 8, 8), growth=4, latent_channels=5, levels=8,
                        discriminator_width=4, preset="custom")  # fmt: skip
    torch.manual_seed(1)
    model = GdaeGenerator(config).eval()
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        x_hat, indices = model(x)
        assert x_hat.shape == x.shape and indices.shape == (1, 5, 3, 5)
        assert int(indices.min()) >= 0 and int(indices.max()) <= 7
        assert torch.equal(model.decode(model.encode(x)), x_hat)  # forward uses the hard latent
    # Training: the value is still the centre, the gradient reaches the encoder.
    model.train()
    x_hat_train, _ = model(x)
    x_hat_train.mean().backward()
    assert model.encoder.stages[0][0].weight.grad is not None
    assert float(model.encoder.stages[0][0].weight.grad.abs().sum()) > 0
    assert PatchDiscriminator(config)(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def _indices(seed: int = 0, shape: tuple[int, int, int] = (16, 5, 7)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(8, size=shape, p=[0.02, 0.05, 0.15, 0.3, 0.3, 0.1, 0.05, 0.03])


def test_jxl_latent_round_trips_bit_exactly_and_deterministically():
    indices = _indices()
    image = mosaic(indices)
    assert image.shape == (5, 16 * 7) and image.dtype == np.uint8
    assert np.array_equal(image[:, 3 * 7 : 4 * 7], indices[3])  # map c: columns c*w..(c+1)*w-1
    data = encode_jxl(indices, 8)
    assert data == encode_jxl(indices.copy(), 8)
    assert np.array_equal(decode_jxl(data, indices.shape, 8), indices)
    assert len(data) < 16 * 5 * 7 * 3 / 8 * 1.5  # a lossless coder, not raw bytes
    with pytest.raises(CodecError, match="mosaic"):
        decode_jxl(data, (16, 5, 6), 8)
    with pytest.raises(CodecError, match="outside"):
        encode_jxl(indices + 1, 8)


def test_rans_latent_round_trips_bit_exactly_with_the_fitted_counts():
    train = np.stack([_indices(seed) for seed in range(4)])
    counts = count_levels(train, 8)
    assert counts.shape == (16, 8) and int(counts.sum()) == train.size
    assert int(counts[2, 3]) == int((train[:, 2] == 3).sum())
    tables = rans_tables(counts)
    indices = _indices(9)
    data = encode_rans(indices, tables)
    assert data == encode_rans(indices, rans_tables(counts))
    assert data[:4] == tables.identity
    assert np.array_equal(decode_rans(data, indices.shape, tables), indices)
    raw_bytes = indices.size * 3 / 8
    assert len(data) < raw_bytes  # the skewed counts code below 3 bits a symbol
    with pytest.raises(CodecError, match="entropy model"):
        decode_rans(data, indices.shape, rans_tables(counts + 1))


def test_bitstream_carries_latent_and_residual_with_their_lengths():
    header = GdaeHeader(b"12345678", 43, 61, (2, 3, 1, 2), 16, 8, (6, 8), 1)
    data = write_gdae_bitstream(header, b"latent!", b"res")
    assert len(data) == HEADER_BYTES + 7 + 3 and data[:4] == b"BGDS"
    assert read_gdae_bitstream(data) == (header, b"latent!", b"res")
    assert read_gdae_bitstream(write_gdae_bitstream(header, b"x"))[2] == b""
    with pytest.raises(CodecError, match="header says"):
        read_gdae_bitstream(data[:-1])
    with pytest.raises(CodecError, match="not a gdae"):
        read_gdae_bitstream(b"BGAN" + data[4:])
