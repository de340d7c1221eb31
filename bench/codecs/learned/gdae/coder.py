"""Lossless coding of GDAE's latent level indices (C x h x w, values 0..L-1).

Two coders, named in the bitstream by an id:

* ``jxl`` (id 1, the default): JPEG XL lossless (libjxl's modular mode, FLIF's successor; the
  slides' FLIF is not available here) through ``imagecodecs.jpegxl_encode(lossless=True)``, of
  the C maps side by side as one grey uint8 mosaic h x (C * w): map ``c`` is columns
  ``c * w .. (c + 1) * w - 1``. Effort 7 (libjxl's default), one thread.
* ``rans`` (id 2): CompressAI's rANS coder with a static per-channel model (the GAN codec's
  ``EntropyTables``: one CDF per map from level counts fit on the training images and kept in
  the checkpoint). The payload is the 4-byte identity of those counts, then the rANS string,
  so a decoder with other counts refuses it instead of decoding garbage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bench.codecs.base import Availability
from bench.errors import CodecError, CodecUnavailable

LATENT_CODERS = {"jxl": 1, "rans": 2}
"""Latent coder name -> its id in the bitstream."""
JXL_EFFORT = 7
IMAGECODECS_HINT = "pip install imagecodecs (bench's base dependencies include it)"

Indices = npt.NDArray[np.integer[Any]]


def coder_name(coder_id: int) -> str:
    """The latent coder of a bitstream id. CodecError for an unknown one."""
    for name, value in LATENT_CODERS.items():
        if value == coder_id:
            return name
    raise CodecError(f"gdae: unknown latent coder id {coder_id} in the bitstream")


def jxl_availability() -> Availability:
    try:
        import imagecodecs
    except ImportError as exc:
        return Availability(False, f"imagecodecs is not importable ({exc})", IMAGECODECS_HINT)
    if not imagecodecs.JPEGXL.available:
        return Availability(False, "imagecodecs has no JPEG XL", IMAGECODECS_HINT)
    return Availability(True, f"imagecodecs {imagecodecs.__version__} (JPEG XL)")


def _imagecodecs() -> Any:
    found = jxl_availability()
    if not found.usable:
        raise CodecUnavailable(f"gdae: latent_coder=jxl needs {found.detail}; {found.hint}")
    import imagecodecs

    return imagecodecs


def mosaic(indices: Indices) -> npt.NDArray[np.uint8]:
    """(C, h, w) indices as one (h, C * w) uint8 image, the maps side by side."""
    array = np.asarray(indices)
    height = array.shape[1]
    return np.ascontiguousarray(array.astype(np.uint8).transpose(1, 0, 2).reshape(height, -1))


def unmosaic(image: npt.NDArray[np.uint8], shape: tuple[int, int, int]) -> npt.NDArray[np.int64]:
    """Inverse of ``mosaic``."""
    channels, height, width = shape
    return image.reshape(height, channels, width).transpose(1, 0, 2).astype(np.int64)


def encode_jxl(indices: Indices, levels: int) -> bytes:
    """The JPEG XL lossless file of the indices' mosaic."""
    array = np.asarray(indices)
    if array.size and (array.min() < 0 or array.max() >= levels):
        raise CodecError(f"gdae: level indices outside 0..{levels - 1}")
    ic = _imagecodecs()
    try:
        return bytes(ic.jpegxl_encode(mosaic(array), lossless=True, effort=JXL_EFFORT,
                                      numthreads=1))  # fmt: skip
    except ic.JpegxlError as exc:
        raise CodecError(f"gdae: libjxl failed to code the latent: {exc}") from exc


def decode_jxl(data: bytes, shape: tuple[int, int, int], levels: int) -> npt.NDArray[np.int64]:
    """Inverse of ``encode_jxl``. CodecError on a payload that is not such a mosaic."""
    ic = _imagecodecs()
    try:
        image = np.asarray(ic.jpegxl_decode(data, numthreads=1))
    except (ic.JpegxlError, ValueError) as exc:
        raise CodecError(f"corrupt gdae bitstream: the latent does not decode: {exc}") from exc
    channels, height, width = shape
    if image.shape != (height, channels * width) or image.dtype != np.uint8:
        raise CodecError(f"corrupt gdae bitstream: latent mosaic {image.shape} {image.dtype}, "
                         f"expected ({height}, {channels * width}) uint8")  # fmt: skip
    if image.size and image.max() >= levels:
        raise CodecError(f"corrupt gdae bitstream: latent levels above {levels - 1}")
    return unmosaic(image, shape)


def count_levels(indices: Indices, levels: int) -> npt.NDArray[np.int64]:
    """How often each map takes each level: (C, L) int64 counts of (C, h, w) or (N, C, h, w)
    indices."""
    array = np.asarray(indices, dtype=np.int64)
    if array.ndim == 4:
        array = array.transpose(1, 0, 2, 3)
    channels = array.shape[0]
    offsets = (np.arange(channels) * levels)[:, None]
    flat = (array.reshape(channels, -1) + offsets).reshape(-1)
    return np.bincount(flat, minlength=channels * levels).reshape(channels, levels)


def rans_tables(counts: npt.ArrayLike) -> Any:
    """The rANS tables of per-map level counts (``EntropyTables``)."""
    from bench.codecs.learned.gan.entropy import EntropyTables

    return EntropyTables(counts, what="gdae")


def encode_rans(indices: Indices, tables: Any) -> bytes:
    """The counts' identity (4 bytes), then the rANS string of the indices."""
    return bytes(tables.identity) + tables.encode(np.asarray(indices))


def decode_rans(data: bytes, shape: tuple[int, int, int], tables: Any) -> npt.NDArray[np.int64]:
    """Inverse of ``encode_rans``. CodecError when the payload was coded with other counts."""
    identity, payload = bytes(data[:4]), bytes(data[4:])
    if identity != tables.identity:
        raise CodecError(f"gdae: the latent was rANS-coded with entropy model {identity.hex()}; "
                         f"these weights have {tables.identity.hex()}")  # fmt: skip
    tables.check_shape(shape[0], tables.levels)
    return tables.decode(payload, shape)  # type: ignore[no-any-return]


__all__ = [
    "LATENT_CODERS",
    "coder_name",
    "count_levels",
    "decode_jxl",
    "decode_rans",
    "encode_jxl",
    "encode_rans",
    "jxl_availability",
    "mosaic",
    "rans_tables",
    "unmosaic",
]
