"""The impmap bit-plane coder: masking, bit-exact round trips, its bytes against its own
model's ideal code length, and damaged streams."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

from bench.codecs.learned.impmap import coder
from bench.codecs.learned.impmap.coder import (
    decode_planes,
    encode_planes,
    ideal_code_length_bits,
    mask_indices,
)
from bench.errors import CodecUnavailable


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cell: int) -> np.ndarray:
    """A smooth random field: coarse Gaussian noise repeated over cell x cell squares plus a
    little fine noise."""
    c, h, w = shape
    coarse = rng.normal(size=(c, -(-h // cell), -(-w // cell)))
    field = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :h, :w]
    return field + 0.3 * rng.normal(size=shape)


def realistic_latent(
    rng: np.random.Generator, shape: tuple[int, int, int], importance: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Skewed 4-bit indices (a sigmoid of a smooth field, mostly small, per-channel
    activity) and their importance map (smooth, mostly 1..2, or constant ``importance``)."""
    activity = rng.uniform(0.5, 2.0, size=(shape[0], 1, 1))
    e = 1.0 / (1.0 + np.exp(-(activity * smooth_field(rng, shape, 4) - 2.0)))
    k = np.minimum(np.floor(16 * e), 15).astype(np.uint8)
    if importance is None:
        m = np.clip(np.rint(1.8 + smooth_field(rng, shape, 8)), 1, 4).astype(np.uint8)
    else:
        m = np.full(shape, importance, np.uint8)
    return k, m


# --------------------------------------------------------------------------------------------
# mask_indices


def test_mask_hand_checked_values():
    k = np.array([0b1011, 0b1011, 0b1011, 0b1011, 0b0111, 15, 0])
    m = np.array([1, 2, 3, 4, 1, 2, 4])
    assert mask_indices(k, m).tolist() == [0b1000, 0b1000, 0b1010, 0b1011, 0, 12, 0]
    assert mask_indices(k, m).dtype == np.uint8
    # B = 2: keep 1 of 2 bits of 3 -> 2
    assert mask_indices([3, 3], [1, 2], bits=2).tolist() == [2, 3]


def test_mask_with_all_bits_kept_is_plain_quantisation():
    rng = np.random.default_rng(1)
    k = rng.integers(0, 16, size=(16, 7, 9)).astype(np.uint8)
    np.testing.assert_array_equal(mask_indices(k, np.full(k.shape, 4)), k)


@pytest.mark.parametrize(
    ("k", "m", "match"),
    [
        ([16], [4], "indices must be in 0..15"),
        ([-1], [4], "indices must be in 0..15"),
        ([3], [0], "importance must be in 1..4"),
        ([3], [5], "importance must be in 1..4"),
        ([3, 4], [4], "differ in shape"),
        ([3.0], [4], "integer array"),
    ],
)
def test_mask_rejects_bad_input(k, m, match):
    with pytest.raises(ValueError, match=match):
        mask_indices(np.array(k), np.array(m))


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "shape", [(1, 1, 1), (1, 1, 5), (2, 3, 1), (16, 4, 4), (3, 9, 13), (16, 12, 8), (4, 17, 6)]
)
def test_round_trip_random_masked(seed, shape):
    rng = np.random.default_rng(seed)
    x = mask_indices(rng.integers(0, 16, size=shape), rng.integers(1, 5, size=shape))
    data = encode_planes(x)
    y = decode_planes(data, shape)
    assert y.dtype == np.uint8 and y.shape == shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_realistic(seed):
    rng = np.random.default_rng(seed)
    shape = (16, 21, 30)
    x = mask_indices(*realistic_latent(rng, shape))
    np.testing.assert_array_equal(decode_planes(encode_planes(x), shape), x)


@pytest.mark.parametrize("value", [0, 1, 8, 15])
@pytest.mark.parametrize("shape", [(1, 1, 1), (16, 6, 7)])
def test_round_trip_constant(value, shape):
    x = np.full(shape, value, np.uint8)
    data = encode_planes(x)
    np.testing.assert_array_equal(decode_planes(data, shape), x)
    if value == 0:
        assert len(data) <= 7  # 4 x 16 plane flags, 0 at a rising probability: 47 bits


@pytest.mark.parametrize(("bits", "block"), [(1, 4), (2, 3), (4, 1), (4, 8), (8, 4), (4, 64)])
def test_round_trip_other_bits_and_blocks(bits, block):
    rng = np.random.default_rng(bits * 100 + block)
    shape = (3, 11, 10)
    x = rng.integers(0, 1 << bits, size=shape).astype(np.uint8)
    x[:, :5] = 0  # a sparse part, so block flags matter
    data = encode_planes(x, bits=bits, block=block)
    np.testing.assert_array_equal(decode_planes(data, shape, bits=bits, block=block), x)


def test_single_one_in_last_sample_round_trips():
    """The inferred decisions: a lone 1 in the last sample of the last block."""
    for shape in [(1, 4, 4), (1, 5, 6), (2, 8, 8)]:
        x = np.zeros(shape, np.uint8)
        x[-1, -1, -1] = 1
        np.testing.assert_array_equal(decode_planes(encode_planes(x), shape), x)


def test_deterministic():
    rng = np.random.default_rng(5)
    shape = (16, 10, 11)
    x = mask_indices(*realistic_latent(rng, shape))
    first = encode_planes(x)
    assert encode_planes(x.copy()) == first
    np.testing.assert_array_equal(decode_planes(first, shape), decode_planes(first, shape))


# --------------------------------------------------------------------------------------------
# Rate


def test_bytes_match_ideal_code_length_on_a_long_input():
    rng = np.random.default_rng(7)
    shape = (16, 64, 96)
    x = mask_indices(*realistic_latent(rng, shape))
    data = encode_planes(x)
    ideal = ideal_code_length_bits(x)
    assert ideal > 20_000  # a real test: tens of kilobits
    assert 8 * len(data) <= ideal + 32 + 0.001 * ideal
    assert 8 * len(data) >= ideal - 32
    np.testing.assert_array_equal(decode_planes(data, shape), x)


def test_fewer_kept_bits_cost_fewer_bytes():
    rng = np.random.default_rng(8)
    shape = (16, 24, 32)
    k, _ = realistic_latent(rng, shape)
    sizes = [len(encode_planes(mask_indices(k, np.full(shape, m)))) for m in (1, 2, 3, 4)]
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3]


def test_ideal_code_length_of_the_empty_latent_by_hand():
    """All zero: only the 16 x 4 plane flags are coded, 16 zeros in each plane's context,
    whose P(1) starts at 1/2 and loses 1/32 of itself (rounded down) after each."""
    expected, p = 0.0, 32768
    for _ in range(16):
        expected += -math.log2(1 - p / 65536)
        p -= p >> 5
    assert ideal_code_length_bits(np.zeros((16, 8, 8), np.uint8)) == pytest.approx(4 * expected)
    assert 4 * expected == pytest.approx(47.35, abs=0.01)


# --------------------------------------------------------------------------------------------
# Damaged streams and bad arguments


def test_truncated_and_garbage_streams_never_hang():
    rng = np.random.default_rng(9)
    shape = (4, 6, 7)
    x = mask_indices(*realistic_latent(rng, shape))
    data = encode_planes(x)
    damaged = [data[:n] for n in range(len(data))]
    damaged += [bytes(rng.integers(0, 256, size=n, dtype=np.uint8)) for n in (1, 5, 40, 400)]
    damaged += [data + b"\x01", bytes(b ^ 0x5A for b in data), b"\xff" * 64]
    rejected = 0
    for stream in damaged:
        try:
            y = decode_planes(stream, shape)
        except ValueError:
            rejected += 1
        else:
            assert y.shape == shape and y.dtype == np.uint8
    assert rejected > 0  # some damage is detected (left-over bytes, impossible states)
    with pytest.raises(ValueError, match="left after decoding"):
        decode_planes(data + b"\x01" * 8, shape)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (4, 6)}, "3 positive integers"),
        ({"shape": (0, 6, 7)}, "3 positive integers"),
        ({"shape": (4, 6.5, 7)}, "3 integers"),
        ({"shape": (4, 6, 7), "bits": 0}, "bits must be in 1..8"),
        ({"shape": (4, 6, 7), "bits": 9}, "bits must be in 1..8"),
        ({"shape": (4, 6, 7), "block": 0}, "block must be"),
        ({"shape": (1 << 12, 1 << 12, 1 << 12)}, "more than"),
    ],
)
def test_decode_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decode_planes(b"", **kwargs)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((4, 4), np.uint8), r"\(C, h, w\)"),
        (np.zeros((1, 0, 4), np.uint8), r"\(C, h, w\)"),
        (np.full((1, 2, 2), 16), r"0\.\.15"),
        (np.zeros((1, 2, 2), np.float32), "integer array"),
    ],
)
def test_encode_rejects_bad_indices(x, match):
    with pytest.raises(ValueError, match=match):
        encode_planes(x)


def test_without_numba_the_coder_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(coder, "_numba", None)
    x = np.zeros((1, 2, 2), np.uint8)
    for call in (
        lambda: encode_planes(x),
        lambda: decode_planes(b"", x.shape),
        lambda: ideal_code_length_bits(x),
    ):
        with pytest.raises(CodecUnavailable, match=r"numba.*learned extra.*numba 0\.60\.0"):
            call()
    assert mask_indices([5], [1]).tolist() == [0]  # numpy only


def test_the_package_does_not_import_numba():
    code = (
        "import sys, bench.codecs.learned.impmap as p; sys.exit(1 if 'numba' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
