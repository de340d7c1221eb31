"""The contract every registered codec passes, on real Kodak images."""

from __future__ import annotations

import numpy as np
import pytest

from bench.codecs import CODECS, create_codec, default_rates
from bench.errors import CodecError, UsageError
from bench.metrics.fidelity import psnr_rgb


def _codec_params():
    params = []
    for name in CODECS.names():
        cls = CODECS.load(name)
        availability = cls.availability()
        marks = (
            []
            if availability.usable
            else [
                pytest.mark.skip(
                    reason=f"{name} not usable here: {availability.detail}; {availability.hint}"
                )
            ]
        )
        params.append(pytest.param(name, marks=marks, id=name))
    return params


CODEC_NAMES = _codec_params()


def _codec(name):
    """The codec with the options its contract tests need (stand-in weights for learned ones)."""
    return create_codec(name, CODECS.load(name).contract_options)


def _mechanics_only(name) -> bool:
    return bool(CODECS.load(name).contract_options)


def _middle_rate(codec) -> float:
    rates = getattr(codec, "contract_rates", ()) or default_rates(codec)
    return rates[len(rates) // 2]


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_round_trip_keeps_shape_and_dtype(name, kodim):
    codec = _codec(name)
    original = kodim(4)  # portrait: 768 rows, 512 columns
    data = codec.encode(original, _middle_rate(codec))
    assert isinstance(data, bytes) and len(data) > 0
    decoded = codec.decode(data)
    assert decoded.shape == original.shape == (768, 512, 3)
    assert decoded.dtype == np.uint8
    if not _mechanics_only(name):
        assert psnr_rgb(original, decoded) > 20.0


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_odd_sized_image_round_trips(name, kodim):
    codec = _codec(name)
    original = np.ascontiguousarray(kodim(8)[:173, :251])
    decoded = codec.decode(codec.encode(original, _middle_rate(codec)))
    assert decoded.shape == original.shape
    if not _mechanics_only(name):
        assert psnr_rgb(original, decoded) > 20.0


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_encoding_and_decoding_are_deterministic(name, kodim):
    codec = _codec(name)
    original = kodim(15)
    rate = _middle_rate(codec)
    data = codec.encode(original, rate)
    assert codec.encode(original, rate) == data
    first, second = codec.decode(data), codec.decode(data)
    assert np.array_equal(first, second)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_quality_ceiling(name, kodim):
    """The near-lossless setting reaches a high PSNR (catches rounding and colour bugs)."""
    cls = CODECS.load(name)
    ceiling = cls.ceiling
    if ceiling is None:
        pytest.skip(f"{name} has no near-lossless setting")
    codec = create_codec(name, ceiling.options)
    for number in (4, 20):
        original = kodim(number)
        decoded = codec.decode(codec.encode(original, ceiling.rate))
        psnr = psnr_rgb(original, decoded)
        assert psnr >= ceiling.min_psnr_db, f"{name} on kodim{number:02d}: {psnr:.2f} dB"


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_declared_direction_matches_bitrate(name, kodim):
    """Higher quality by the codec's declared direction means more bytes and higher PSNR."""
    if _mechanics_only(name):
        pytest.skip(f"{name} runs with stand-in weights here; rate and quality mean nothing")
    codec = create_codec(name)
    scale = codec.scale
    rates = scale.by_quality(default_rates(codec))
    low, high = rates[0], rates[-1]
    if low == high:
        pytest.skip(f"{name} has a single rate point")
    original = kodim(21)
    low_data, high_data = codec.encode(original, low), codec.encode(original, high)
    assert len(low_data) < len(high_data)
    assert psnr_rgb(original, codec.decode(low_data)) < psnr_rgb(original, codec.decode(high_data))


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_corrupt_bitstream_raises_codec_error(name, kodim):
    """Garbage is a CodecError; a truncated stream is a CodecError or (decoders that conceal
    errors, like bpgdec) a well-formed image, never another exception."""
    codec = _codec(name)
    original = kodim(2)
    data = codec.encode(original, _middle_rate(codec))
    try:
        concealed = codec.decode(data[: len(data) // 8])
    except CodecError:
        pass
    else:
        assert concealed.shape == original.shape and concealed.dtype == np.uint8
    with pytest.raises(CodecError):
        codec.decode(b"\x00" * 64)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_rates_outside_range_are_refused(name):
    codec = _codec(name)
    scale = codec.scale
    with pytest.raises(UsageError, match=scale.name):
        scale.validate(scale.high + 1, name)
    with pytest.raises(UsageError, match=scale.name):
        scale.validate(scale.low - 1, name)


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(UsageError, match=r"unknown option quantizer; accepted: subsampling"):
        create_codec("jpeg", {"quantizer": 3})
    with pytest.raises(UsageError, match="subsampling"):
        create_codec("jpeg", {"subsampling": "411"})


def test_unknown_codec_suggests_the_closest():
    with pytest.raises(UsageError, match="Did you mean 'jpeg2000'"):
        CODECS.load("jpeg200")


def test_jpeg2000_compression_ratio_hits_the_target_bpp(kodim):
    codec = create_codec("jpeg2000")
    original = kodim(19)
    pixels = original.shape[0] * original.shape[1]
    for bpp in (0.0625, 0.25, 1.0):
        data = codec.encode(original, 24 / bpp)
        assert 8 * len(data) / pixels == pytest.approx(bpp, rel=0.03)


def test_jpeg2000_psnr_layers_aim_at_the_requested_db(kodim):
    codec = create_codec("jpeg2000", {"mode": "psnr"})
    assert codec.scale.name == "psnr_db" and codec.scale.quality_rises
    original = kodim(12)
    for target in (30.0, 38.0):
        achieved = psnr_rgb(original, codec.decode(codec.encode(original, target)))
        assert achieved == pytest.approx(target, abs=1.0)


def test_jpeg_subsampling_option_changes_the_bitstream(kodim):
    original = kodim(6)
    s420 = create_codec("jpeg").encode(original, 75)
    s444 = create_codec("jpeg", {"subsampling": "444"}).encode(original, 75)
    assert len(s444) > len(s420)
