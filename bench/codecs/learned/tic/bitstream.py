"""The TIC codecs' bitstream: header and per-tile strings (bytes <-> strings).

See ``bench.codecs.learned.tic`` for the layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bench.errors import CodecError

MAGIC = b"TIC1"
_HEADER = struct.Struct(">4sBB8sIIH")
_TILE = struct.Struct(">HHII")
HEADER_BYTES = _HEADER.size
TILE_HEADER_BYTES = _TILE.size
VARIANT_HP, VARIANT_PROMPTED = 0, 1


@dataclass(frozen=True)
class TicHeader:
    variant: int
    quality: int
    identity: bytes
    height: int
    width: int
    tile: int


def tile_boxes(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(top, left, rows, cols) of the tiles covering an image, row-major (one box when
    ``tile`` is 0).

    >>> tile_boxes(600, 300, 256)[:3]
    [(0, 0, 256, 256), (0, 256, 256, 44), (256, 0, 256, 256)]
    """
    if tile <= 0:
        return [(0, 0, height, width)]
    return [
        (top, left, min(tile, height - top), min(tile, width - left))
        for top in range(0, height, tile)
        for left in range(0, width, tile)
    ]


def write_tic_bitstream(
    header: TicHeader, tiles: list[tuple[tuple[int, int], bytes, bytes]]
) -> bytes:
    """Header, then each tile's z shape, string lengths and strings."""
    parts = [
        _HEADER.pack(
            MAGIC,
            header.variant,
            header.quality,
            header.identity,
            header.height,
            header.width,
            header.tile,
        )
    ]
    for (rows, cols), y_string, z_string in tiles:
        parts += [_TILE.pack(rows, cols, len(y_string), len(z_string)), y_string, z_string]
    return b"".join(parts)


def read_tic_bitstream(data: bytes) -> tuple[TicHeader, list[tuple[tuple[int, int], bytes, bytes]]]:
    """Parse a bitstream made by ``write_tic_bitstream``.

    Raises:
        CodecError: not a TIC bitstream, or truncated / with trailing bytes.
    """
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise CodecError("not a TIC bitstream (bad magic or too short)")
    _, variant, quality, identity, height, width, tile = _HEADER.unpack_from(data)
    header = TicHeader(variant, quality, identity, height, width, tile)
    tiles = []
    offset = HEADER_BYTES
    for _ in tile_boxes(height, width, tile):
        if offset + TILE_HEADER_BYTES > len(data):
            raise CodecError("truncated TIC bitstream (tile header)")
        rows, cols, y_len, z_len = _TILE.unpack_from(data, offset)
        offset += TILE_HEADER_BYTES
        end = offset + y_len + z_len
        if end > len(data):
            raise CodecError("truncated TIC bitstream (tile strings)")
        tiles.append(((rows, cols), data[offset : offset + y_len], data[offset + y_len : end]))
        offset = end
    if offset != len(data):
        raise CodecError(f"TIC bitstream has {len(data) - offset} trailing bytes")
    return header, tiles


__all__ = [
    "HEADER_BYTES",
    "TILE_HEADER_BYTES",
    "TicHeader",
    "read_tic_bitstream",
    "tile_boxes",
    "write_tic_bitstream",
]
