"""GDAE's bitstream (see ``bench.codecs.learned.gdae``): a self-contained header, the latent
payload and an optional residual payload.

Layout (big-endian, 46 header bytes)::

    "BGDS" | version u8 | model identity 8 bytes | height u32 | width u32 |
    padding top, bottom, left, right u16 x 4 | C u16 | L u16 | latent rows u16, cols u16 |
    latent coder id u8 | latent bytes u32 | residual bytes u32 |
    the latent payload (``coder``: JPEG XL lossless or rANS) | the residual payload

The residual payload is opaque here: semantic residual compensation (SPRC) writes and reads
it (its own codec id, QP and heat-map source inside); length 0 means none, so GDAE alone is
the same stream with an empty residual. bpp counts all of it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bench.errors import CodecError

MAGIC = b"BGDS"
VERSION = 1
_HEADER = struct.Struct(">4sB8sII4HHHHHBII")
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True)
class GdaeHeader:
    identity: bytes
    height: int
    width: int
    padding: tuple[int, int, int, int]
    channels: int
    levels: int
    latent: tuple[int, int]
    coder: int

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.latent)


def write_gdae_bitstream(header: GdaeHeader, latent: bytes, residual: bytes = b"") -> bytes:
    """The header, then ``latent`` and ``residual`` (b"": none), each with its length."""
    head = _HEADER.pack(
        MAGIC, VERSION, header.identity, header.height, header.width, *header.padding,
        header.channels, header.levels, *header.latent, header.coder, len(latent), len(residual),
    )  # fmt: skip
    return head + bytes(latent) + bytes(residual)


def read_gdae_bitstream(data: bytes) -> tuple[GdaeHeader, bytes, bytes]:
    """Parse ``write_gdae_bitstream``'s output: (header, latent, residual).

    Raises:
        CodecError: not a GDAE bitstream (magic, version), or lengths that do not add up.
    """
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise CodecError("not a gdae bitstream (bad magic or too short)")
    (_, version, identity, height, width, top, bottom, left, right, channels, levels, rows,
     cols, coder, latent_bytes, residual_bytes) = _HEADER.unpack_from(data)  # fmt: skip
    if version != VERSION:
        raise CodecError(f"gdae bitstream version {version}; this bench reads {VERSION}")
    if HEADER_BYTES + latent_bytes + residual_bytes != len(data):
        raise CodecError(f"corrupt gdae bitstream: {len(data)} bytes, the header says "
                         f"{HEADER_BYTES} + {latent_bytes} + {residual_bytes}")  # fmt: skip
    header = GdaeHeader(identity, height, width, (top, bottom, left, right), channels, levels,
                        (rows, cols), coder)  # fmt: skip
    latent_end = HEADER_BYTES + latent_bytes
    return header, bytes(data[HEADER_BYTES:latent_end]), bytes(data[latent_end:])


__all__ = ["HEADER_BYTES", "MAGIC", "GdaeHeader", "read_gdae_bitstream", "write_gdae_bitstream"]
