"""The importance-map autoencoder's bitstream (see ``bench.codecs.learned.impmap``).

Layout (big-endian)::

    "BIMP" | version u8 | model identity 8 bytes | height u32 | width u32 |
    padding top, bottom, left, right u16 x 4 | lambda f32 | channels u16 | bits u8 |
    block u8 | latent rows u16, cols u16 | the bit-plane coder's bytes

The importance map is not in it: the decoder needs only the masked indices, whose zeroed
low bits the coder codes as ordinary bits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bench.errors import CodecError

MAGIC = b"BIMP"
VERSION = 1
_HEADER = struct.Struct(">4sB8sII4HfHBBHH")
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True)
class ImpMapHeader:
    identity: bytes
    height: int
    width: int
    padding: tuple[int, int, int, int]
    lam: float
    channels: int
    bits: int
    block: int
    latent: tuple[int, int]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.latent)


def write_impmap_bitstream(header: ImpMapHeader, payload: bytes) -> bytes:
    return _HEADER.pack(
        MAGIC, VERSION, header.identity, header.height, header.width, *header.padding,
        header.lam, header.channels, header.bits, header.block, *header.latent,
    ) + payload  # fmt: skip


def read_impmap_bitstream(data: bytes) -> tuple[ImpMapHeader, bytes]:
    """Parse ``write_impmap_bitstream``'s output.

    Raises:
        CodecError: not an impmap bitstream (magic, version) or shorter than its header.
    """
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise CodecError("not an impmap bitstream (bad magic or too short)")
    fields = _HEADER.unpack_from(data)
    _, version, identity, height, width, t, b, lft, r, lam, channels, bits, block, rows, cols = (
        fields
    )
    if version != VERSION:
        raise CodecError(f"impmap bitstream version {version}; this bench reads {VERSION}")
    header = ImpMapHeader(
        identity, height, width, (t, b, lft, r), lam, channels, bits, block, (rows, cols)
    )
    return header, bytes(data[HEADER_BYTES:])


__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "ImpMapHeader",
    "read_impmap_bitstream",
    "write_impmap_bitstream",
]
