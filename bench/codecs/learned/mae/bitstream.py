"""The modulated autoencoder's bitstream (see ``bench.codecs.learned.mae`` for the layout)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bench.errors import CodecError

MAGIC = b"BMAE"
VERSION = 1
_HEADER = struct.Struct(">4sB8sII4HBfHH")
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True)
class MaeHeader:
    identity: bytes
    height: int
    width: int
    padding: tuple[int, int, int, int]
    entropy_index: int
    lam: float
    latent: tuple[int, int]


def write_mae_bitstream(header: MaeHeader, string: bytes) -> bytes:
    return _HEADER.pack(
        MAGIC, VERSION, header.identity, header.height, header.width, *header.padding,
        header.entropy_index, header.lam, *header.latent,
    ) + string  # fmt: skip


def read_mae_bitstream(data: bytes) -> tuple[MaeHeader, bytes]:
    """Parse ``write_mae_bitstream``'s output.

    Raises:
        CodecError: not an MAE bitstream (magic, version) or shorter than its header.
    """
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise CodecError("not an MAE bitstream (bad magic or too short)")
    _, version, identity, height, width, t, b, lft, r, index, lam, rows, cols = _HEADER.unpack_from(
        data
    )
    if version != VERSION:
        raise CodecError(f"MAE bitstream version {version}; this bench reads {VERSION}")
    header = MaeHeader(identity, height, width, (t, b, lft, r), index, lam, (rows, cols))
    return header, bytes(data[HEADER_BYTES:])


__all__ = ["HEADER_BYTES", "MAGIC", "MaeHeader", "read_mae_bitstream", "write_mae_bitstream"]
