"""The GAN codec's bitstream: header and level indices, packed or rANS-coded (bytes <-> arrays).

See ``bench.codecs.learned.gan`` for the layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.codecs.learned.base import pad_amounts
from bench.codecs.learned.gan.config import DOWNSAMPLING
from bench.codecs.learned.gan.entropy import ENTROPY_ID_BYTES, EntropyTables
from bench.errors import CodecError

MAGIC = b"BGAN"
VERSION = 1
"""Bitstream version of packed indices (the paper's ld(L) bits per symbol)."""
VERSION_ENTROPY = 2
"""Bitstream version of rANS-coded indices (``entropy_coding=true``)."""
_HEADER = struct.Struct(">4sB8sII4HHHHH")
HEADER_BYTES = _HEADER.size
_ENTROPY_ID = struct.Struct(f">{ENTROPY_ID_BYTES}s")
ENTROPY_HEADER_BYTES = HEADER_BYTES + _ENTROPY_ID.size
"""Header bytes of an entropy-coded (version 2) bitstream: 41."""


@dataclass(frozen=True)
class GanHeader:
    """What a receiver needs besides the payload: image size, padding, latent shape, model."""

    identity: bytes
    height: int
    width: int
    padding: tuple[int, int, int, int]
    bottleneck: int
    levels: int
    latent_height: int
    latent_width: int
    entropy_model: bytes | None = None
    """The 4-byte identity of the entropy model of an entropy-coded (version 2) bitstream;
    None for packed indices (version 1)."""

    @property
    def symbols(self) -> int:
        return self.bottleneck * self.latent_height * self.latent_width

    @property
    def header_bytes(self) -> int:
        """Bytes of this header in the bitstream: 37 packed, 41 entropy-coded."""
        return HEADER_BYTES if self.entropy_model is None else ENTROPY_HEADER_BYTES


def payload_bytes(count: int, levels: int) -> int:
    """Bytes of ``count`` packed level indices: ceil(count * ld(L) / 8), exactly."""
    if levels & (levels - 1) == 0:
        return (count * (levels.bit_length() - 1) + 7) // 8
    return ((levels**count - 1).bit_length() + 7) // 8


def _to_int(symbols: list[int], levels: int) -> int:
    """Base-L value of symbols (first most significant), by halves (fast big multiplies)."""
    if len(symbols) <= 64:
        value = 0
        for s in symbols:
            value = value * levels + s
        return value
    half = len(symbols) // 2
    tail = symbols[half:]
    return _to_int(symbols[:half], levels) * levels ** len(tail) + _to_int(tail, levels)


def _from_int(value: int, count: int, levels: int, out: list[int]) -> None:
    if count <= 64:
        digits = []
        for _ in range(count):
            value, digit = divmod(value, levels)
            digits.append(digit)
        out.extend(reversed(digits))
        return
    tail = count - count // 2
    high, low = divmod(value, levels**tail)
    _from_int(high, count // 2, levels, out)
    _from_int(low, tail, levels, out)


def pack_symbols(symbols: npt.NDArray[np.integer[Any]], levels: int) -> bytes:
    """Pack level indices 0..L-1 (any shape, C order): ld(L) bits each for a power of two,
    else one base-L big integer; the first symbol is the most significant."""
    flat = np.asarray(symbols).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= levels):
        raise CodecError(f"level indices outside 0..{levels - 1}")
    size = payload_bytes(int(flat.size), levels)
    if levels & (levels - 1) == 0:
        bits = levels.bit_length() - 1
        shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
        planes = ((flat[:, None] >> shifts) & 1).astype(np.uint8)
        return np.packbits(planes.reshape(-1)).tobytes()
    return _to_int(flat.tolist(), levels).to_bytes(size, "big")


def unpack_symbols(data: bytes, count: int, levels: int) -> npt.NDArray[np.int64]:
    """Inverse of ``pack_symbols``: ``count`` indices, int64. CodecError on a bad payload."""
    expected = payload_bytes(count, levels)
    if len(data) != expected:
        raise CodecError(
            f"corrupt GAN bitstream: payload of {len(data)} bytes, {expected} expected"
        )
    if levels & (levels - 1) == 0:
        bits = levels.bit_length() - 1
        planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        if planes[count * bits :].any():
            raise CodecError("corrupt GAN bitstream: non-zero fill bits")
        weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64)).astype(np.int64)
        return planes[: count * bits].reshape(count, bits).astype(np.int64) @ weights
    value = int.from_bytes(data, "big")
    if value >= levels**count:
        raise CodecError(f"corrupt GAN bitstream: payload exceeds {count} base-{levels} digits")
    out: list[int] = []
    _from_int(value, count, levels, out)
    return np.asarray(out, dtype=np.int64)


def write_gan_bitstream(
    header: GanHeader,
    indices: npt.NDArray[np.integer[Any]],
    tables: EntropyTables | None = None,
) -> bytes:
    """Header then the indices of shape (F, h, w): packed (version 1) when
    ``header.entropy_model`` is None, else rANS-coded with ``tables`` (version 2), whose
    identity must be ``header.entropy_model``."""
    shape = (header.bottleneck, header.latent_height, header.latent_width)
    if tuple(indices.shape) != shape:
        raise CodecError(f"indices of shape {tuple(indices.shape)}, header says {shape}")
    if len(header.identity) != 8:
        raise CodecError("model identity must be 8 bytes")
    coded = header.entropy_model is not None
    head = _HEADER.pack(
        MAGIC,
        VERSION_ENTROPY if coded else VERSION,
        header.identity,
        header.height,
        header.width,
        *header.padding,
        header.bottleneck,
        header.levels,
        header.latent_height,
        header.latent_width,
    )
    if header.entropy_model is None:
        return head + pack_symbols(indices, header.levels)
    if len(header.entropy_model) != _ENTROPY_ID.size:
        raise CodecError(f"entropy-model identity must be {_ENTROPY_ID.size} bytes")
    if tables is None or tables.identity != header.entropy_model:
        raise CodecError(
            f"the header names entropy model {header.entropy_model.hex()}; code it with those "
            "tables"
        )
    tables.check_shape(header.bottleneck, header.levels)
    return head + _ENTROPY_ID.pack(header.entropy_model) + tables.encode(indices)


def parse_gan_bitstream(data: bytes) -> tuple[GanHeader, bytes]:
    """The header of a GAN bitstream (either version) and its payload, unread.

    Raises:
        CodecError: not a GAN bitstream, an unknown version, inconsistent sizes.
    """
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise CodecError("not a bench GAN bitstream (no BGAN header)")
    _magic, version, ident, height, width, *rest = _HEADER.unpack_from(data)
    if version not in (VERSION, VERSION_ENTROPY):
        raise CodecError(
            f"GAN bitstream version {version}; this bench reads {VERSION} (packed) and "
            f"{VERSION_ENTROPY} (entropy-coded)"
        )
    entropy_model: bytes | None = None
    if version == VERSION_ENTROPY:
        if len(data) < ENTROPY_HEADER_BYTES:
            raise CodecError("corrupt GAN bitstream: entropy-coded header cut short")
        (entropy_model,) = _ENTROPY_ID.unpack_from(data, HEADER_BYTES)
    top, bottom, left, right, bottleneck, levels, lat_h, lat_w = rest
    header = GanHeader(
        ident,
        height,
        width,
        (top, bottom, left, right),
        bottleneck,
        levels,
        lat_h,
        lat_w,
        entropy_model,
    )
    if (
        levels < 2
        or bottleneck < 1
        or (height + top + bottom) != DOWNSAMPLING * lat_h
        or (width + left + right) != DOWNSAMPLING * lat_w
    ):
        raise CodecError(
            f"corrupt GAN bitstream: image {height}x{width} padded by {header.padding} does "
            f"not give latent {lat_h}x{lat_w} (F={bottleneck}, L={levels})"
        )
    return header, data[header.header_bytes :]


def read_gan_bitstream(
    data: bytes, tables: EntropyTables | None = None
) -> tuple[GanHeader, npt.NDArray[np.int64]]:
    """Parse ``write_gan_bitstream``'s output: the header and the (F, h, w) int64 indices.

    An entropy-coded bitstream needs ``tables`` (``EntropyTables`` of the entropy model the
    header names; ``GanCodec.decode`` finds them in the checkpoint).

    Raises:
        CodecError: not a GAN bitstream, another version, inconsistent sizes, bad payload, an
            entropy-coded bitstream without its entropy model's tables.
    """
    header, payload = parse_gan_bitstream(data)
    shape = (header.bottleneck, header.latent_height, header.latent_width)
    if header.entropy_model is None:
        return header, unpack_symbols(payload, header.symbols, header.levels).reshape(shape)
    if tables is None:
        raise CodecError(
            f"entropy-coded GAN bitstream (entropy model {header.entropy_model.hex()}): "
            "decoding it needs the entropy model of the checkpoint that encoded it"
        )
    if tables.identity != header.entropy_model:
        raise CodecError(
            f"GAN bitstream entropy-coded with entropy model {header.entropy_model.hex()}, "
            f"not {tables.identity.hex()}; decode with the checkpoint that encoded it"
        )
    tables.check_shape(header.bottleneck, header.levels)
    return header, tables.decode(payload, shape)


def gan_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) to a multiple of 16, centred; a 16x16 result is widened to
    16x32 (instance norm needs more than one latent value per map)."""
    top, bottom, left, right = pad_amounts(height, width, DOWNSAMPLING)
    if height + top + bottom == DOWNSAMPLING and width + left + right == DOWNSAMPLING:
        left = (2 * DOWNSAMPLING - width) // 2
        right = 2 * DOWNSAMPLING - width - left
    return top, bottom, left, right
