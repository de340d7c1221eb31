"""SPRC: the residual of a reconstruction inside a heat map's region, coded by a bench codec.

The encoder has the original ``x``, a reconstruction ``x0`` (the GDAE's) and a heat map ``H`` in
[0, 1] of ``x`` (``bench.codecs.heatmaps.sources``):

1. **Region.** ``H >= threshold``, made blockwise: the image is cut into ``block`` x ``block``
   blocks (the last row and column may be smaller) and a block is in the region when **any** of
   its pixels is, so the coded region covers every region pixel (the ``psnr-roi`` region of the
   same heat map and threshold is inside it) and the mask costs one bit per block.
2. **Score** ``s = mean(H)`` over the whole image: the share of the image the heat map calls
   important (the spec's choice, §1.3).
3. **Quality, by linear mapping of s** onto the residual codec's own scale:
   ``q = q(s=0) + s * (q(s=1) - q(s=0))``. BPG: QP = round(44 - 16 s) (``quality_range``
   (28, 44) = (q_lo, q_hi) of the spec), clipped to 0..51, coded 4:4:4. JPEG 2000 (the fallback
   where bpgenc is absent): OpenJPEG's PSNR-targeted single layer (``mode=psnr``, 9/7 wavelet);
   the scale is the PSNR aimed at inside the region, 26 + 11 s dB, and the encoder turns it into
   the whole coded picture's target by adding 10 log10(coded pixels / region pixels), since the
   rest of the picture is a flat 128 coded almost exactly. The range matches what BPG's QP
   44..28 did to the residuals of JPEG-coded Kodak images (kodim01, 05, 15, 23 at JPEG quality
   15 and 40, saliency regions): QP 44 left the region's PSNR where it was (24 to 35 dB), QP 36
   gave 29 to 36 dB and QP 28 gave 35 to 40 dB; OpenJPEG hits its target within 0.5 dB. WebP:
   quality 40 + 50 s (not calibrated).
4. **Residual image.** ``r8 = clip(round(x - x0) + 128, 0, 255)`` inside the region, 128
   outside, cropped to the bounding box of the region's blocks, coded by the bench codec.
   (The spec weights the residual by ``H`` instead of masking it; here the mask decides and
   the residual inside it is kept whole.)

The decoder adds ``r8 - 128`` to ``x0`` inside the mask only and clips to 0..255; outside the
mask the reconstruction is untouched. Everything it needs is in the blob (big-endian)::

    4s  magic b"SPRC"        B  version (1)          B  residual codec id (1 bpg, 2 jpeg2000,
    f   quality value         f  threshold               3 webp)
    f   score s               H  block                H  mask rows    H  mask columns
    I   mask bytes            then the mask (one bit per block, row-major, numpy packbits,
                              zlib), then the residual codec's bytes to the end

An empty region gives no blob at all (``b""``): the GDAE stream then says "no residual".
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.codecs import create_codec
from bench.codecs.base import Codec
from bench.errors import CodecError, UsageError
from bench.types import Image, OptionValue

MAGIC = b"SPRC"
VERSION = 1
_HEADER = struct.Struct(">4sBBfffHHHI")
HEADER_BYTES = _HEADER.size
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ResidualCodec:
    """How one bench codec codes the residual: its options and its quality mapping.

    Attributes:
        name: the codec's registry name.
        ident: its id in the blob's header.
        at_zero, at_one: the quality value at score 0 and at score 1 (the codec's own scale).
        integer: whether the value is rounded to a whole number.
        low, high: the clip range of the value.
        region_psnr: the value is a PSNR aimed at inside the region (JPEG 2000's psnr mode);
            the encoder converts it to a target for the whole coded picture.
        options: the codec's options.
    """

    name: str
    ident: int
    at_zero: float
    at_one: float
    integer: bool
    low: float
    high: float
    region_psnr: bool = False
    options: Mapping[str, OptionValue] = field(default_factory=dict)

    def quality(self, score: float, quality_range: tuple[float, float] | None = None) -> float:
        """The quality value of a score in [0, 1]; ``quality_range`` = (value at s = 1, value
        at s = 0) replaces the default (for BPG, the spec's (q_lo, q_hi)).

        >>> RESIDUAL_CODECS["bpg"].quality(0.0), RESIDUAL_CODECS["bpg"].quality(0.5)
        (44.0, 36.0)
        """
        at_one, at_zero = (
            quality_range if quality_range is not None else (self.at_one, self.at_zero)
        )
        value = at_zero + float(np.clip(score, 0.0, 1.0)) * (at_one - at_zero)
        value = float(round(value)) if self.integer else round(value, 2)
        return float(np.clip(value, self.low, self.high))


RESIDUAL_CODECS: dict[str, ResidualCodec] = {
    "bpg": ResidualCodec("bpg", 1, 44, 28, True, 0, 51, options={"chroma": "444"}),
    "jpeg2000": ResidualCodec(
        "jpeg2000", 2, 26, 37, False, 10, 100, True, {"mode": "psnr", "irreversible": True}
    ),
    "webp": ResidualCodec("webp", 3, 40, 90, True, 0, 100),
}
_BY_ID = {codec.ident: codec for codec in RESIDUAL_CODECS.values()}


def resolve_codec_name(codec_name: str) -> str:
    """``auto`` -> ``bpg`` where bench's bpg codec is available (bpgenc and bpgdec found), else
    ``jpeg2000``; other names are checked against the residual codecs.

    Raises:
        UsageError: a codec that cannot code residuals.
    """
    if codec_name == "auto":
        from bench.codecs import CODECS

        return "bpg" if CODECS.load("bpg").availability().usable else "jpeg2000"
    if codec_name not in RESIDUAL_CODECS:
        raise UsageError(
            f"residual codec {codec_name!r}: choose auto or one of {', '.join(RESIDUAL_CODECS)}"
        )
    return codec_name


def block_mask(heat: npt.NDArray[Any], threshold: float, block: int) -> Mask:
    """The region ``heat >= threshold`` at block resolution: a block is in it when any of its
    pixels is.

    >>> heat = np.zeros((5, 6), np.float32); heat[4, 5] = 0.9
    >>> block_mask(heat, 0.5, 4).astype(int).tolist()
    [[0, 0], [0, 1]]
    """
    height, width = heat.shape
    rows, cols = math.ceil(height / block), math.ceil(width / block)
    inside = np.zeros((rows * block, cols * block), bool)
    inside[:height, :width] = np.asarray(heat) >= threshold
    return np.asarray(inside.reshape(rows, block, cols, block).any(axis=(1, 3)))


def pixel_mask(mask: Mask, block: int, shape: tuple[int, int]) -> Mask:
    """A block mask at pixel resolution, cropped to ``shape`` = (H, W)."""
    full = np.repeat(np.repeat(mask, block, axis=0), block, axis=1)
    return np.asarray(full[: shape[0], : shape[1]])


def _box(mask: Mask, block: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) in pixels of the bounding box of a non-empty block mask."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    top, bottom = int(rows[0]) * block, min(shape[0], (int(rows[-1]) + 1) * block)
    left, right = int(cols[0]) * block, min(shape[1], (int(cols[-1]) + 1) * block)
    return top, bottom, left, right


def _codec(spec: ResidualCodec, picture_shape: tuple[int, int] | None = None) -> Codec:
    options = dict(spec.options)
    if spec.name == "jpeg2000" and picture_shape is not None:
        # OpenJPEG needs 2^(numres - 1) <= the smaller side; small regions get fewer levels
        options["numres"] = max(1, min(6, int(math.log2(max(1, min(picture_shape)))) + 1))
    return create_codec(spec.name, options)


def _check(image: npt.NDArray[Any], what: str) -> Image:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CodecError(f"sprc: {what} must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    return image


def encode_residual(
    original: Image,
    reconstruction: Image,
    heat: npt.NDArray[Any],
    *,
    codec_name: str = "auto",
    threshold: float = 0.5,
    quality_range: tuple[float, float] | None = None,
    block: int = 8,
) -> bytes:
    """The SPRC blob of one image (see the module docstring); ``b""`` for an empty region.

    Args:
        original, reconstruction: (H, W, 3) uint8 RGB images of one size.
        heat: the (H, W) heat map of ``original``, values in [0, 1].
        codec_name: ``auto``, ``bpg``, ``jpeg2000`` or ``webp``.
        threshold: the region is ``heat >= threshold``.
        quality_range: (value at s = 1, value at s = 0) on the residual codec's scale; None
            for its default (BPG: (28, 44)).
        block: the mask's block size in pixels (1..65535).

    Raises:
        CodecError: images or heat map of other shapes; UsageError: a bad codec or block.
    """
    original = _check(original, "the original")
    reconstruction = _check(reconstruction, "the reconstruction")
    heat = np.asarray(heat, dtype=np.float32)
    shape = (original.shape[0], original.shape[1])
    if reconstruction.shape != original.shape or heat.shape != shape:
        raise CodecError(
            f"sprc: original {original.shape}, reconstruction {reconstruction.shape} and heat "
            f"map {heat.shape} must have one size"
        )
    if not 1 <= int(block) <= 65535:
        raise UsageError(f"sprc: block must be in 1..65535, got {block}")
    block = int(block)
    spec = RESIDUAL_CODECS[resolve_codec_name(codec_name)]
    mask = block_mask(heat, threshold, block)
    if not mask.any():
        return b""
    score = float(np.clip(heat.mean(), 0.0, 1.0))
    quality = spec.quality(score, quality_range)

    inside = pixel_mask(mask, block, shape)
    residual = np.round(original.astype(np.float32) - reconstruction.astype(np.float32))
    r8 = np.where(inside[..., None], np.clip(residual + 128, 0, 255), 128).astype(np.uint8)
    top, bottom, left, right = _box(mask, block, shape)
    picture = np.ascontiguousarray(r8[top:bottom, left:right])
    rate = quality
    if spec.region_psnr:
        share = float(inside[top:bottom, left:right].mean())
        rate = float(np.clip(quality + 10 * math.log10(1 / share), spec.low, spec.high))
    payload = bytes(_codec(spec, (bottom - top, right - left)).encode(picture, rate))

    packed = zlib.compress(np.packbits(mask.ravel()).tobytes(), 9)
    header = _HEADER.pack(
        MAGIC, VERSION, spec.ident, quality, float(threshold), score, block, *mask.shape,
        len(packed),
    )  # fmt: skip
    return header + packed + payload


@dataclass(frozen=True)
class _Parsed:
    spec: ResidualCodec
    quality: float
    threshold: float
    score: float
    block: int
    mask: Mask
    payload: bytes


def _parse(blob: bytes) -> _Parsed:
    if len(blob) < HEADER_BYTES:
        raise CodecError(f"sprc: a residual blob of {len(blob)} bytes is shorter than its header")
    magic, version, ident, quality, threshold, score, block, rows, cols, mask_bytes = (
        _HEADER.unpack_from(blob)
    )
    if magic != MAGIC:
        raise CodecError(f"sprc: not a residual blob (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise CodecError(f"sprc: residual blob version {version}; this bench reads {VERSION}")
    if ident not in _BY_ID:
        raise CodecError(f"sprc: unknown residual codec id {ident}")
    end = HEADER_BYTES + mask_bytes
    if end > len(blob):
        raise CodecError("sprc: the residual blob is truncated inside its mask")
    try:
        bits = np.frombuffer(zlib.decompress(blob[HEADER_BYTES:end]), np.uint8)
    except zlib.error as exc:
        raise CodecError(f"sprc: the residual mask is corrupt: {exc}") from exc
    if bits.size * 8 < rows * cols:
        raise CodecError("sprc: the residual mask is shorter than its rows x columns")
    mask = np.unpackbits(bits)[: rows * cols].astype(bool).reshape(rows, cols)
    return _Parsed(
        _BY_ID[ident], float(quality), float(threshold), float(score), int(block), mask,
        bytes(blob[end:]),
    )  # fmt: skip


def apply_residual(reconstruction: Image, blob: bytes) -> Image:
    """The reconstruction with the residual of ``blob`` added inside its mask (clipped to
    0..255); an empty blob returns the reconstruction unchanged.

    Raises:
        CodecError: a blob that is not SPRC's, or made for an image of another size.
    """
    reconstruction = _check(reconstruction, "the reconstruction")
    if not blob:
        return reconstruction
    parsed = _parse(blob)
    shape = (reconstruction.shape[0], reconstruction.shape[1])
    expected = (math.ceil(shape[0] / parsed.block), math.ceil(shape[1] / parsed.block))
    if parsed.mask.shape != expected:
        raise CodecError(
            f"sprc: the residual mask is {parsed.mask.shape[1]}x{parsed.mask.shape[0]} blocks of "
            f"{parsed.block}, but the image is {shape[1]}x{shape[0]}"
        )
    if not parsed.mask.any():
        raise CodecError("sprc: a residual blob with an empty mask")
    top, bottom, left, right = _box(parsed.mask, parsed.block, shape)
    picture = _codec(parsed.spec).decode(parsed.payload)
    if picture.shape != (bottom - top, right - left, 3):
        raise CodecError(
            f"sprc: the residual picture is {picture.shape}, expected "
            f"{(bottom - top, right - left, 3)}"
        )
    inside = pixel_mask(parsed.mask, parsed.block, shape)[top:bottom, left:right]
    out = reconstruction.copy()
    box = out[top:bottom, left:right].astype(np.int16)
    corrected = np.clip(box + picture.astype(np.int16) - 128, 0, 255).astype(np.uint8)
    out[top:bottom, left:right] = np.where(
        inside[..., None], corrected, out[top:bottom, left:right]
    )
    return out


def describe_residual(blob: bytes) -> dict[str, Any]:
    """What a record says about a residual blob: its codec, quality value, score, region
    share (of the mask's blocks) and bytes; ``{"residual_codec": "none", ...}`` when empty.

    >>> describe_residual(b"")["residual_bytes"]
    0
    """
    if not blob:
        return {"residual_codec": "none", "residual_bytes": 0, "residual_region_fraction": 0.0}
    parsed = _parse(blob)
    return {
        "residual_codec": parsed.spec.name,
        "residual_quality": round(parsed.quality, 2),
        "residual_score": round(parsed.score, 6),
        "residual_threshold": round(parsed.threshold, 6),
        "residual_block": parsed.block,
        "residual_region_fraction": float(parsed.mask.mean()),
        "residual_bytes": len(blob),
        "residual_payload_bytes": len(parsed.payload),
    }
