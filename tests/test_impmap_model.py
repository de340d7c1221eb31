"""The importance-map autoencoder's networks (``impmap``): parameter counts against the spec's
arithmetic, shapes and ranges, the quantiser and masking by hand, straight-through values and
gradients, and the codec's hard path against the forward pass (tiny widths; runs in seconds)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.codecs.learned.impmap.model import (  # noqa: E402
    PRESETS,
    ImpMapConfig,
    ImpMapNetwork,
    MaskedQuantizer,
    crop,
    pad_replicate,
    to_network,
    to_uint8,
)

TINY = ImpMapConfig(
    n=8,
    groups=2,
    blocks_per_group=1,
    importance_width=8,
    importance_blocks=1,
    channels=16,
    bits=4,
    preset="custom",
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _network(config: ImpMapConfig = TINY, seed: int = 0) -> ImpMapNetwork:
    torch.manual_seed(seed)
    return ImpMapNetwork(config)


def _batch(n: int = 2, height: int = 32, width: int = 40, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, height, width, generator=generator)


# The spec's arithmetic (section 5): conv = k*k*cin*cout (+cout if biased), BN = 2c, convs
# followed by BN carry no bias; residual trunk = groups * blocks + 1 blocks.
def _expected(n: int, groups: int, blocks: int, width: int, imp_blocks: int, c: int = 16):
    def conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
        return k * k * cin * cout + (cout if bias else 0)

    def bn(ch: int) -> int:
        return 2 * ch

    trunk = (groups * blocks + 1) * 2 * (conv(n, n, 3) + bn(n))
    encoder = conv(3, n // 2, 5) + bn(n // 2) + conv(n // 2, n, 5) + bn(n) + trunk
    encoder += conv(n, c, 5, bias=True)
    decoder = conv(c, n, 3) + bn(n) + trunk + conv(n, n // 2, 5) + bn(n // 2)
    decoder += conv(n // 2, 3, 5, bias=True)
    importance = conv(c, width, 3, bias=True) + imp_blocks * 2 * conv(width, width, 3, bias=True)
    importance += conv(width, c, 3, bias=True)
    return {
        "encoder": encoder,
        "decoder": decoder,
        "importance": importance,
        "total": encoder + decoder + importance,
    }


@pytest.mark.parametrize(
    ("preset", "literal"),
    [
        ("paper", {"encoder": 4_987_984, "decoder": 4_955_203, "importance": 240_080,
                   "total": 10_183_267}),
        ("cpu", {"encoder": 375_344, "decoder": 358_947, "importance": 46_256,
                 "total": 780_547}),
    ],
)  # fmt: skip
def test_parameter_counts_match_the_spec(preset, literal):
    config = ImpMapConfig.from_preset(preset)
    net = ImpMapNetwork(config)
    counts = net.parameter_counts()
    arithmetic = _expected(
        config.n,
        config.groups,
        config.blocks_per_group,
        config.importance_width,
        config.importance_blocks,
        config.channels,
    )
    assert counts == arithmetic == literal
    assert sum(p.numel() for p in net.parameters()) == literal["total"]


def test_tiny_parameter_count_and_groups():
    net = _network()
    assert net.parameter_counts() == _expected(8, 2, 1, 8, 1)
    autoencoder = {id(p) for p in net.autoencoder_parameters()}
    importance = {id(p) for p in net.importance_parameters()}
    assert not autoencoder & importance
    assert autoencoder | importance == {id(p) for p in net.parameters()}
    assert (
        sum(p.numel() for p in net.importance_parameters()) == net.parameter_counts()["importance"]
    )


def test_batch_norm_settings_and_biases():
    net = _network()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 and m.eps == 1e-5 and m.affine for m in norms)
    assert not [m for m in net.importance_net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # only the encoder's last conv and the decoder's last transposed conv carry a bias
    convs = [
        m
        for m in [*net.encoder.modules(), *net.decoder.modules()]
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    assert [m.bias is not None for m in convs].count(True) == 2
    assert net.encoder.tail.bias is not None and net.decoder.tail[-1].bias is not None


def test_shapes_and_ranges():
    net = _network().eval()
    x = _batch(2, 32, 40)
    with torch.no_grad():
        out = net(x)
    assert out["x_hat"].shape == (2, 3, 32, 40)
    assert out["e"].shape == out["k"].shape == out["m"].shape == out["q"].shape == (2, 16, 4, 5)
    assert out["rate"].shape == (2,)
    assert out["e"].min() > 0 and out["e"].max() < 1
    assert out["k"].dtype == out["m"].dtype == out["k_m"].dtype == torch.int64
    assert out["k"].min() >= 0 and out["k"].max() <= 15
    assert out["m"].min() >= 1 and out["m"].max() <= 4
    assert out["x_hat"].min() >= 0 and out["x_hat"].max() <= 1
    p = net.importance(out["e"])
    assert p.min() >= 1 and p.max() <= 4 and p.dtype == torch.float32
    with pytest.raises(ValueError, match="multiples of 8"):
        net(_batch(1, 30, 40))


def test_quantiser_and_masking_by_hand():
    quantizer = MaskedQuantizer(4)
    e = torch.tensor([0.0, 0.0624, 0.0625, 0.5, 0.8125, 0.9999, 1.0, 7 / 16 + 1e-4])
    k = quantizer.indices(e)
    assert k.tolist() == [0, 0, 1, 8, 13, 15, 15, 7]
    assert (quantizer.dequantize(k) * 16).tolist() == [0, 0, 1, 8, 13, 15, 15, 7]
    thirteen, seven = torch.tensor([13] * 4), torch.tensor([7] * 4)
    levels = torch.tensor([1, 2, 3, 4])
    assert quantizer.mask(thirteen, levels).tolist() == [8, 12, 12, 13]  # 0b1101
    assert quantizer.mask(seven, levels).tolist() == [0, 4, 6, 7]  # 0b0111
    p = torch.tensor([1.0, 1.49, 1.51, 2.5, 3.2, 3.6, 4.0])
    assert quantizer.importance_map(p).tolist() == [1, 1, 2, 2, 3, 4, 4]  # 2.5: half to even


def test_masked_value_is_floor_at_m_bits():
    quantizer = MaskedQuantizer(4)
    generator = torch.Generator().manual_seed(3)
    e = torch.cat([torch.rand(4000, generator=generator), torch.tensor([0.0, 1.0, 0.5])])
    k = quantizer.indices(e)
    for depth in range(1, 5):
        m = torch.full_like(k, depth)
        value = quantizer.dequantize(quantizer.mask(k, m))
        expected = torch.floor(e * 2**depth).clamp(max=2**depth - 1) / 2**depth
        assert torch.equal(value, expected)
    # the all-B map is plain quantisation
    assert torch.equal(quantizer.mask(k, torch.full_like(k, 4)), k)


def test_all_b_map_equals_plain_quantisation():
    quantizer = MaskedQuantizer(4)
    e = torch.rand(2, 16, 3, 3, generator=torch.Generator().manual_seed(4), requires_grad=True)
    plain = quantizer(e)
    full = quantizer(e, torch.full((2, 16, 3, 3), 4.0, requires_grad=True))
    assert torch.equal(plain.q, full.q)
    assert torch.equal(plain.k_m, plain.k) and torch.equal(full.k_m, plain.k)
    assert torch.equal(plain.q, quantizer.dequantize(plain.k))
    assert (plain.m == 4).all() and (full.m == 4).all()


def test_rate_proxy_is_the_sum_of_levels():
    quantizer = MaskedQuantizer(4)
    e = torch.rand(2, 16, 3, 5, generator=torch.Generator().manual_seed(5))
    rates = {}
    for level in (1.0, 4.0):
        p = torch.full_like(e, level, requires_grad=True)
        out = quantizer(e, p)
        rates[level] = out.levels.flatten(1).sum(dim=1)
        assert rates[level].tolist() == [level * 16 * 3 * 5] * 2
        depth = int(level)
        assert torch.equal(out.q, torch.floor(e * 2**depth).clamp(max=2**depth - 1) / 2**depth)
    assert (rates[1.0] < rates[4.0]).all()


def test_soft_quantiser_follows_the_floor():
    quantizer = MaskedQuantizer(4)
    centres = (torch.arange(16) + 0.5) / 16  # mid-bins: floor's value is i/16
    soft = quantizer.soft(centres, 4)
    assert (soft - torch.arange(16) / 16).abs().max() < 1 / 16
    assert (soft[2:-2] - torch.arange(2, 14) / 16).abs().max() < 1e-4  # symmetric inside
    weights = quantizer.level_weights(torch.tensor([1.0, 2.5, 4.0]))
    assert weights.shape == (3, 4)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert weights[0].argmax() == 0 and weights[2].argmax() == 3


def test_straight_through_values_are_hard_and_gradients_flow():
    net = _network().train()
    x = _batch(2, 32, 40)
    out = net(x)
    hard_q = net.quantizer.dequantize(net.mask_indices(out["k"], out["m"]))
    assert out["q"].requires_grad and torch.equal(out["q"], hard_q)
    assert out["rate"].requires_grad
    assert out["rate"].tolist() == out["m"].flatten(1).sum(dim=1).float().tolist()
    assert torch.equal(out["k_m"], net.mask_indices(out["k"], out["m"]))
    loss = torch.nn.functional.mse_loss(out["x_hat"], x) + 1e-3 * out["rate"].mean()
    loss.backward()
    for part in (net.encoder, net.decoder, net.importance_net):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0  # type: ignore[union-attr]
    # the encoder's first conv gets its gradient through the soft quantisers
    assert float(net.encoder.head[0].weight.grad.abs().sum()) > 0


def test_importance_net_trains_with_the_autoencoder_frozen():
    net = _network().train()
    for p in net.autoencoder_parameters():
        p.requires_grad_(False)
    out = net(_batch())
    (out["rate"].mean() + out["x_hat"].square().mean()).backward()
    grads = [p.grad for p in net.importance_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in net.autoencoder_parameters())


def test_phase_one_uses_every_bit():
    net = _network().train()
    out = net(_batch(), use_importance=False)
    assert (out["m"] == 4).all() and torch.equal(out["k_m"], out["k"])
    assert torch.equal(out["q"], net.quantizer.dequantize(out["k"]))
    assert out["rate"].tolist() == [4 * 16 * 4 * 5] * 2
    out["x_hat"].mean().backward()
    assert all(p.grad is None for p in net.importance_parameters())
    assert float(net.encoder.head[0].weight.grad.abs().sum()) > 0


def test_decode_indices_equals_the_forward_pass():
    net = _network(seed=7)
    net.train()
    for _ in range(2):  # move the batch-norm statistics off their initial values
        net(_batch(seed=8))
    net.eval()
    x = _batch(2, 32, 40, seed=9)
    with torch.no_grad():
        out = net(x)
        e = net.encode(x)
        k_m = net.mask_indices(net.indices(e), net.importance_map(e))
        x_hat = net.decode_indices(k_m)
    assert torch.equal(e, out["e"])
    assert torch.equal(k_m, out["k_m"])
    assert torch.equal(x_hat, out["x_hat"])
    # the gradient-tracking eval pass gives the same values
    assert torch.equal(net(x)["x_hat"], x_hat)


def test_pixels_and_padding():
    image = np.random.default_rng(0).integers(0, 256, (30, 37, 3), dtype=np.uint8)
    x = to_network(image)
    assert x.shape == (1, 3, 30, 37) and x.min() >= 0 and x.max() <= 1
    assert np.array_equal(to_uint8(x)[0].permute(1, 2, 0).numpy(), image)
    padded, padding = pad_replicate(x)
    assert padded.shape == (1, 3, 32, 40) and padding == (1, 1, 1, 2)
    assert torch.equal(padded[..., 0, 1:-2], x[..., 0, :])  # the top row repeats the first
    assert torch.equal(crop(padded, padding), x)
    same, none = pad_replicate(torch.zeros(1, 3, 16, 24))
    assert none == (0, 0, 0, 0) and same.shape == (1, 3, 16, 24)


def test_presets_and_labels():
    paper, cpu = ImpMapConfig.from_preset("paper"), ImpMapConfig.from_preset("cpu")
    assert paper == ImpMapConfig() and paper.preset == "paper"
    assert (cpu.n, cpu.groups, cpu.blocks_per_group) == (64, 1, 3)
    assert (cpu.importance_width, cpu.importance_blocks, cpu.channels, cpu.bits) == (32, 2, 16, 4)
    assert "the paper's size" in paper.describe()
    assert "NOT a published size" in cpu.describe()
    assert "n=64" in cpu.describe() and "1x3+1" in cpu.describe()
    custom = ImpMapConfig.from_preset("cpu", n=32)
    assert custom.preset == "custom" and "NOT a published size" in custom.describe()
    assert ImpMapConfig.from_preset("paper", n=128, groups=None).preset == "paper"
    assert ImpMapConfig.from_preset("paper", soft_sigma=2.0).preset == "paper"
    assert ImpMapConfig.from_dict(custom.to_dict()) == custom
    assert ImpMapConfig.from_dict({**cpu.to_dict(), "unknown": 1}) == cpu
    assert set(PRESETS) == {"paper", "cpu"}


@pytest.mark.parametrize(
    "changes",
    [{"n": 7}, {"n": 0}, {"bits": 0}, {"bits": 9}, {"channels": 0}, {"groups": -1},
     {"blocks_per_group": 0}, {"importance_width": 0}, {"soft_sigma": 0.0}, {"n": 64.0}],
)  # fmt: skip
def test_invalid_configs(changes):
    with pytest.raises(ValueError):
        ImpMapConfig(**changes)


def test_invalid_presets():
    with pytest.raises(ValueError, match="expected one of"):
        ImpMapConfig.from_preset("large")
    with pytest.raises(ValueError, match="widht"):
        ImpMapConfig.from_preset("cpu", widht=3)
