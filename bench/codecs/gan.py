"""The GAN autoencoder codec of Löhdefink et al. (2019), after Agustsson et al. (2018).

An encoder maps an RGB image in [-1, 1] to a latent of ``F`` maps at 1/16 of its size; each
latent value is quantized to one of ``L`` fixed centres (soft-to-hard quantization: the soft
softmax assignment of the paper's eq. 1-2 for the gradient, the nearest centre in the forward
pass); a decoder (nine residual blocks and four transposed convolutions) maps the centres back
to an image; a multi-scale PatchGAN discriminator trains it with a least-squares GAN loss, a
feature-matching loss and an MSE loss. As in the paper, each symbol costs ``ld(L)`` bits by
default, so the rate is ``F * ld(L) / 256`` bpp (paper eq. 5) plus bench's header.

Beyond the paper, ``entropy_coding=true`` codes the indices with CompressAI's rANS coder under a
static per-channel model: ``bench train gan`` counts, after training, how often each latent map
``f`` takes each level over the training images and stores the counts (F x L, int64) in the
checkpoint as ``entropy_model``; the coder uses the CDFs of ``(counts + 1) / sum`` (Laplace
smoothing: every level stays codable) quantized to 16 bits by CompressAI.

Bitstream (big-endian, 37 header bytes, then the payload)::

    4s  magic b"BGAN"             B  version (1 packed, 2 entropy-coded)     8s  model identity
    I   image height              I  image width          4H  padding top, bottom, left, right
    H   F (bottleneck maps)       H  L (levels)           2H  latent height, latent width
    version 1 payload: the F x h x w level indices in C order, first symbol most significant;
    for L a power of two, ld(L) bits each (the last byte zero-filled); otherwise one base-L
    integer of ceil(n * ld(L) / 8) bytes (a Python int, exact).
    version 2: 4s entropy-model identity (so the header is 41 bytes), then the rANS string of
    the same F x h x w indices in the same order, symbol f * h * w + i coded with map f's CDF
    (CompressAI's ``RansEncoder.encode_with_indexes``; a multiple of 4 bytes, at least 8).

The model identity is the first 8 bytes of the SHA-256 of the config JSON and the generator's
tensors, so a decoder refuses a bitstream made by another model, even one of the same F and L;
the entropy-model identity is the first 4 bytes of the SHA-256 of the counts (``EntropyTables``),
so it also refuses an entropy-coded one whose checkpoint has no or other counts.

Design choices where the paper is silent (or where its reference code is defective):

* Block 6 of the encoder is conv + instance norm *without* the ReLU the paper lists for all six
  blocks: the reference TF code puts a ReLU before symmetric centres, so the negative half of
  the levels can never be chosen. ``bottleneck_activation="relu"`` reproduces that literally
  (for comparison only).
* Centres are fixed, spacing 1, symmetric about 0: ``linspace(-(L-1)/2, (L-1)/2, L)`` (the
  reference uses the integers -2..2 for L = 5); the affine instance norm of block 6 learns the
  scale of the latent against them. They are stored in the config.
* The straight-through estimator is written ``hard + (soft - soft.detach())``: the same
  gradient as ``soft + (hard - soft).detach()``, but the forward value is exactly the centre,
  so ``decode(encode(x))`` equals ``forward(x)`` bit for bit.
* Instance norms are affine (TF's default), convolutions keep their biases; 3x3 convolutions
  zero-pad by 1; the 7x7 ones reflection-pad by 3.
* PatchGAN convolutions are 4x4 with padding 2 (pix2pixHD); the D and the adversarial losses
  are averaged over the three scales; feature matching is the L1 distance of the four
  intermediate maps (not the logits), averaged over layers and scales, the real image's maps
  detached; the MSE is taken on the [-1, 1] scale the networks work in.
* Images are padded to a multiple of 16 by edge replication, centred (as the CompressAI codecs
  centre their zero padding), and cropped back. ``width`` scales every hidden channel count,
  not ``F`` and not the 3 RGB channels.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from bench.codecs.base import (
    TRAINING_FILES,
    Availability,
    Bitstream,
    Codec,
    Image,
    RateScale,
    check_image,
    flag,
)
from bench.codecs.learned import (
    MAX_MEGAPIXELS,
    TORCH_HINT,
    check_size,
    distributions_installed,
    pad_amounts,
    synchronize,
    torch_availability,
)
from bench.errors import CodecError, CodecUnavailable, UsageError

if TYPE_CHECKING:
    from torch import Tensor

    from bench.codecs.gan_model import GanGenerator

FORMAT = "bench-gan-1"
"""The ``format`` entry of checkpoints made by ``save_generator_checkpoint``."""
MAGIC = b"BGAN"
VERSION = 1
"""Bitstream version of packed indices (the paper's ld(L) bits per symbol)."""
VERSION_ENTROPY = 2
"""Bitstream version of rANS-coded indices (``entropy_coding=true``)."""
ENTROPY_PRECISION = 16
"""Bits of CompressAI's quantized CDFs (its rANS coder's precision)."""
ENTROPY_KEY = "entropy_model"
"""Checkpoint key of the per-channel level counts ``bench train gan`` writes."""
FIT_COMMAND = (
    "bench train gan --fit-entropy-model-only --out {checkpoint} --dataset DATASET "
    "--data-dir DIR (the training images)"
)
DOWNSAMPLING = 16
"""d = 2**4: four stride-2 convolutions (paper eq. 3)."""
_HEADER = struct.Struct(">4sB8sII4HHHHH")
HEADER_BYTES = _HEADER.size
_ENTROPY_ID = struct.Struct(">4s")
ENTROPY_HEADER_BYTES = HEADER_BYTES + _ENTROPY_ID.size
"""Header bytes of an entropy-coded (version 2) bitstream: 41."""
TRAIN_COMMAND = (
    "bench train gan --dataset cityscapes --data-dir DIR --split train "
    "--bottleneck {F} --levels {L} --out CHECKPOINT"
)
RANDOM_WIDTH = 1 / 32
"""Width of ``weights=random`` stand-ins (pipeline tests: mechanics, not quality)."""
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar")


def default_centres(levels: int, spacing: float = 1.0) -> tuple[float, ...]:
    """``L`` centres symmetric about 0, ``spacing`` apart: (-1.5, -0.5, 0.5, 1.5) for L = 4."""
    return tuple(spacing * (i - (levels - 1) / 2) for i in range(levels))


@dataclass(frozen=True)
class GanConfig:
    """Everything that fixes the generator's and discriminator's architecture and losses.

    Attributes:
        bottleneck: F, the latent maps.
        levels: L, the quantization levels (2..65535).
        width: factor on every hidden channel count (1.0 = the paper).
        centres: the L fixed reconstruction levels, increasing (default: spacing 1, symmetric).
        sigma: softness of the soft quantizer (paper: 1).
        bottleneck_activation: ``none`` (bench's choice) or ``relu`` (the reference code's
            defect: negative centres unreachable; for comparison only).
        residual_blocks: residual units of the decoder (9).
        discriminator_scales: PatchGANs at successive 2x average-pooled copies (3).
        mse_weight, fm_weight, gan_weight: generator loss weights (reference code: 12, 10, 1).

    >>> GanConfig().nominal_bpp
    0.0625
    """

    bottleneck: int = 8
    levels: int = 4
    width: float = 1.0
    centres: tuple[float, ...] = ()
    sigma: float = 1.0
    bottleneck_activation: str = "none"
    residual_blocks: int = 9
    discriminator_scales: int = 3
    mse_weight: float = 12.0
    fm_weight: float = 10.0
    gan_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= int(self.bottleneck) <= 65535:
            raise ValueError(f"bottleneck must be 1..65535, got {self.bottleneck}")
        if not 2 <= int(self.levels) <= 65535:
            raise ValueError(f"levels must be 2..65535, got {self.levels}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")
        centres = tuple(float(c) for c in self.centres) or default_centres(int(self.levels))
        if len(centres) != self.levels:
            raise ValueError(f"{len(centres)} centres for {self.levels} levels")
        if any(b <= a for a, b in itertools.pairwise(centres)):
            raise ValueError(f"centres must increase strictly, got {centres}")
        if self.bottleneck_activation not in ("none", "relu"):
            raise ValueError(
                f"bottleneck_activation must be none or relu, got {self.bottleneck_activation!r}"
            )
        object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "bottleneck", int(self.bottleneck))
        object.__setattr__(self, "levels", int(self.levels))
        object.__setattr__(self, "width", float(self.width))

    @property
    def nominal_bpp(self) -> float:
        """F * ld(L) / d**2 bits per pixel (paper eq. 5), without header or padding."""
        return self.bottleneck * math.log2(self.levels) / DOWNSAMPLING**2

    def channels(self, count: int) -> int:
        """A hidden channel count of the paper scaled by ``width`` (at least 1)."""
        return max(1, round(count * self.width))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), the form hashed into the model identity."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GanConfig:
        """Rebuild from ``asdict`` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GanConfig entries {unknown}")
        values = dict(data)
        if "centres" in values:
            values["centres"] = tuple(values["centres"])
        return cls(**values)


def _read_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    from bench.train import read_model_checkpoint

    return read_model_checkpoint(path, FORMAT, what="GAN", mmap=mmap)


def checkpoint_training(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a checkpoint says about its training (``bench.train.training_record``)."""
    from bench.train import training_record

    return training_record(_read_checkpoint(Path(path), mmap=True))


def read_gan_config(path: str | os.PathLike[str]) -> GanConfig:
    """The config of a checkpoint, without copying its tensors (memory-mapped)."""
    from bench.tasks.base import WeightsError

    loaded = _read_checkpoint(Path(path), mmap=True)
    try:
        return GanConfig.from_dict(loaded["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad GAN config in checkpoint: {exc}") from exc


def load_gan_checkpoint(
    path: str | os.PathLike[str],
    *,
    bottleneck: int | None = None,
    levels: int | None = None,
    width: float | None = None,
) -> tuple[GanConfig, GanGenerator]:
    """The config and generator (eval mode, on the CPU) of a ``bench-gan-1`` checkpoint.

    The tensors are loaded with ``weights_only=True`` and strictly. ``bottleneck``, ``levels``
    and ``width``, when given, must match the checkpoint's.

    Raises:
        WeightsError: unreadable file, another format, another F/L/width than requested, or
            tensors that do not fit the config's architecture (named).
    """
    from bench.codecs.gan_model import GanGenerator
    from bench.tasks.base import WeightsError, load_strict

    source = Path(path)
    loaded = _read_checkpoint(source)
    try:
        config = GanConfig.from_dict(loaded["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: bad GAN config in checkpoint: {exc}") from exc
    checks = (
        ("bottleneck (F)", float(config.bottleneck), bottleneck),
        ("levels (L)", float(config.levels), levels),
        ("width", config.width, width),
    )
    wrong = [
        f"{what} {have:g} (requested {float(value):g})"
        for what, have, value in checks
        if value is not None and not math.isclose(have, float(value), rel_tol=1e-9)
    ]
    if wrong:
        raise WeightsError(f"{source}: checkpoint has " + ", ".join(wrong))
    state = loaded.get("generator")
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: no generator state_dict in checkpoint")
    generator = GanGenerator(config)
    what = f"GAN generator (F={config.bottleneck}, L={config.levels}, width={config.width:g})"
    load_strict(generator, state, source, what)
    return config, generator.eval()


# --------------------------------------------------------------------------- bitstream


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


# --------------------------------------------------------------------------- entropy model


def entropy_identity(counts: npt.ArrayLike) -> bytes:
    """4 bytes naming an entropy model: SHA-256 of its (F, L) counts (int64, little-endian),
    with the smoothing and CDF precision, so tables built another way get another name."""
    array = np.ascontiguousarray(np.asarray(counts, dtype="<i8"))
    digest = hashlib.sha256(
        f"bench-gan-entropy:laplace+1:precision{ENTROPY_PRECISION}:{array.shape};".encode()
    )
    digest.update(array.tobytes())
    return digest.digest()[: _ENTROPY_ID.size]


class EntropyTables:
    """CompressAI rANS tables of a static per-channel model: one CDF per latent map.

    Map ``f``'s probabilities are ``(counts[f] + 1) / sum(counts[f] + 1)`` (Laplace smoothing:
    every level stays codable), laid out as CompressAI's ``EntropyModel._pmf_to_cdf`` does (the
    L probabilities, then the tail mass of its escape symbol: 0 here, since indices never leave
    0..L-1; the quantizer still gives the escape symbol the least frequency) and quantized to
    16 bits by ``compressai._CXX.pmf_to_quantized_cdf``. Offsets are 0, CDF lengths L + 2.

    Raises:
        ValueError: counts that are not a non-negative integer (F, L) array.
        CodecUnavailable: CompressAI is not importable.
    """

    def __init__(self, counts: npt.ArrayLike) -> None:
        array = np.asarray(counts)
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 2:
            raise ValueError(f"entropy-model counts must be (F, L >= 2), got {array.shape}")
        if not np.issubdtype(array.dtype, np.integer) or (array.size and array.min() < 0):
            raise ValueError("entropy-model counts must be non-negative integers")
        self.counts: npt.NDArray[np.int64] = array.astype(np.int64)
        self.bottleneck, self.levels = (int(v) for v in self.counts.shape)
        self.identity = entropy_identity(self.counts)
        try:
            from compressai import ans
            from compressai._CXX import pmf_to_quantized_cdf
        except Exception as exc:  # compressai missing or broken
            raise CodecUnavailable(
                f"gan: entropy_coding needs CompressAI's rANS coder, which does not import "
                f"({exc}); {TORCH_HINT}"
            ) from None
        self._ans = ans
        smoothed = self.counts.astype(np.float64) + 1.0
        pmfs = smoothed / smoothed.sum(axis=1, keepdims=True)
        self.cdfs: list[list[int]] = [
            [int(v) for v in pmf_to_quantized_cdf([*row.tolist(), 0.0], ENTROPY_PRECISION)]
            for row in pmfs
        ]
        self.cdf_lengths = [self.levels + 2] * self.bottleneck
        self.offsets = [0] * self.bottleneck

    def check_shape(self, bottleneck: int, levels: int) -> None:
        """CodecError unless these tables are for F maps of L levels."""
        if (self.bottleneck, self.levels) != (bottleneck, levels):
            raise CodecError(
                f"entropy model for F={self.bottleneck}, L={self.levels}; the bitstream has "
                f"F={bottleneck}, L={levels}"
            )

    def _channels(self, per_map: int) -> list[int]:
        return np.repeat(np.arange(self.bottleneck), per_map).tolist()  # type: ignore[no-any-return]

    def bits(self, indices: npt.NDArray[np.integer[Any]]) -> float:
        """The ideal code length of (F, ...) indices under the quantized CDFs, in bits."""
        flat = np.asarray(indices).reshape(self.bottleneck, -1)
        cdf = np.asarray(self.cdfs, dtype=np.float64)
        freq = np.take_along_axis(cdf[:, 1:] - cdf[:, :-1], flat, axis=1)
        return float(-np.log2(freq / 2**ENTROPY_PRECISION).sum())

    def encode(self, indices: npt.NDArray[np.integer[Any]]) -> bytes:
        """The rANS string of (F, ...) level indices, in C order, map f coded with CDF f."""
        flat = np.asarray(indices).reshape(self.bottleneck, -1).astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= self.levels):
            raise CodecError(f"level indices outside 0..{self.levels - 1}")
        encoder = self._ans.RansEncoder()
        data = encoder.encode_with_indexes(
            flat.reshape(-1).tolist(),
            self._channels(flat.shape[1]),
            self.cdfs,
            self.cdf_lengths,
            self.offsets,
        )
        return bytes(data)

    def decode(self, data: bytes, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
        """Inverse of ``encode``: indices of ``shape`` (F, ...). CodecError on a bad payload
        (rANS has no checksum: a damaged string is caught only when it gives a count or a
        level that cannot be)."""
        count = math.prod(shape)
        if shape[0] != self.bottleneck or len(data) < 8 or len(data) % 4:
            raise CodecError(
                f"corrupt GAN bitstream: rANS payload of {len(data)} bytes (a multiple of 4, "
                "at least 8, expected)"
            )
        # The decoder reads 32-bit words forward without a bound; zeros after the string keep
        # a damaged one from reading past the buffer.
        padded = bytes(data) + bytes(4 * count + 16 * len(data) + 64)
        decoder = self._ans.RansDecoder()
        values = decoder.decode_with_indexes(
            padded, self._channels(count // self.bottleneck), self.cdfs, self.cdf_lengths,
            self.offsets,
        )  # fmt: skip
        out = np.asarray(values, dtype=np.int64)
        if out.size != count or (out.size and (out.min() < 0 or out.max() >= self.levels)):
            raise CodecError("corrupt GAN bitstream: rANS payload decodes to invalid levels")
        return out.reshape(shape)


def fit_entropy_model(generator: GanGenerator, images: Iterable[Image]) -> Tensor:
    """Per-map level counts of ``generator``'s indices over ``images``: int64 (F, L).

    Each image ((H, W, 3) uint8, whole) is coded as ``GanCodec`` codes it: scaled to [-1, 1],
    edge-padded to a multiple of 16 (``gan_padding``), encoded in eval mode without gradients
    on the generator's device; ``counts[f, l]`` is how often map ``f`` took level ``l``. The
    generator's train/eval mode is restored afterwards.
    """
    import torch
    import torch.nn.functional as F

    config = generator.config
    maps, levels = config.bottleneck, config.levels
    device = next(generator.parameters()).device
    offsets = (torch.arange(maps) * levels)[:, None]
    counts = torch.zeros(maps * levels, dtype=torch.int64)
    training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            for image in images:
                pixels = check_image(image, "gan")
                if not pixels.flags.writeable:  # torch.from_numpy warns on read-only arrays
                    pixels = pixels.copy()
                top, bottom, left, right = gan_padding(*pixels.shape[:2])
                x = F.pad(
                    to_network(pixels).to(device), (left, right, top, bottom), mode="replicate"
                )
                indices = generator.encode(x)[0].reshape(maps, -1).to("cpu")
                counts += torch.bincount((indices + offsets).reshape(-1), minlength=maps * levels)
    finally:
        generator.train(training)
    return counts.reshape(maps, levels)


@dataclass(frozen=True)
class EntropyModel:
    """A checkpoint's ``entropy_model``: the counts, how many images they came from, which."""

    counts: npt.NDArray[np.int64]
    images: int
    source: str

    @property
    def identity(self) -> bytes:
        return entropy_identity(self.counts)

    def describe(self) -> str:
        return f"{self.identity.hex()} (counts of {self.images} {self.source})"


def _entropy_model_of(
    loaded: Mapping[str, Any], config: GanConfig, source: Path
) -> EntropyModel | None:
    import torch

    from bench.tasks.base import WeightsError

    entry = loaded.get(ENTROPY_KEY)
    if entry is None:
        return None
    counts = entry.get("counts") if isinstance(entry, dict) else None
    shape = (config.bottleneck, config.levels)
    if (
        not isinstance(counts, torch.Tensor)
        or tuple(counts.shape) != shape
        or counts.is_floating_point()
        or counts.is_complex()
        or (counts.numel() and int(counts.min()) < 0)
    ):
        raise WeightsError(
            f"{source}: bad {ENTROPY_KEY} in checkpoint (expected 'counts', a non-negative "
            f"integer tensor of shape {shape}); re-fit it: " + FIT_COMMAND.format(checkpoint=source)
        )
    return EntropyModel(
        counts.to(torch.int64).numpy().copy(),
        int(entry.get("images", 0)),
        str(entry.get("source", "")),
    )


def read_entropy_model(path: str | os.PathLike[str]) -> EntropyModel | None:
    """The ``entropy_model`` of a checkpoint (None when it has none; memory-mapped read).

    Raises:
        WeightsError: unreadable checkpoint, or an entropy model that does not fit its config.
    """
    source = Path(path)
    loaded = _read_checkpoint(source, mmap=True)
    return _entropy_model_of(loaded, GanConfig.from_dict(loaded["config"]), source)


def add_entropy_model(
    path: str | os.PathLike[str],
    counts: Tensor,
    images: int,
    source: str = "training images",
) -> Path:
    """Store ``{"counts": int64 (F, L), "images": n, "source": ...}`` as the checkpoint's
    ``entropy_model`` (replacing one it had) and re-save it atomically; everything else, the
    trainer's state included, is kept, so ``--resume`` still works on it."""
    import torch

    from bench.train import save_atomic

    target = Path(path)
    state = _read_checkpoint(target)
    config = GanConfig.from_dict(state["config"])
    table = torch.as_tensor(counts).to("cpu", torch.int64).clone()
    state[ENTROPY_KEY] = {"counts": table, "images": int(images), "source": str(source)}
    _entropy_model_of(state, config, target)  # the same checks a reader makes
    save_atomic(state, target)
    return target


# --------------------------------------------------------------------------- the codec


@dataclass
class LoadedGan:
    """A generator ready to code, with its identity and where it came from."""

    config: GanConfig
    generator: GanGenerator
    identity: bytes
    source: str
    entropy: EntropyModel | None = None
    """The checkpoint's ``entropy_model`` (None when it has none)."""
    _tables: EntropyTables | None = field(default=None, repr=False)

    def tables(self) -> EntropyTables | None:
        """The rANS tables of ``entropy`` (built once; None without an entropy model)."""
        if self.entropy is None:
            return None
        if self._tables is None:
            self._tables = EntropyTables(self.entropy.counts)
        return self._tables


@dataclass
class _Entry:
    path: Path
    config: GanConfig
    loaded: LoadedGan | None = field(default=None, repr=False)


def _same_rate(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


class GanCodec(Codec):
    """The GAN autoencoder codec: the rate point is the nominal bpp F * ld(L) / 256.

    Options:
        weights: a ``bench-gan-1`` checkpoint file or a directory of them (indexed by their
            config's nominal bpp); ``random`` or ``random:WIDTH`` for seeded stand-ins
            (pipeline tests only: width 1/32 by default, F from ``bottleneck`` or 8).
        bottleneck: use only checkpoints with this F (0: any; needed when two checkpoints
            share a nominal bpp, e.g. F=8, L=4 and F=4, L=16).
        device: cpu, cuda or cuda:N. max_megapixels: larger images fail with advice.
        batch_size: same-shaped images per forward pass (the bytes do not change).
        entropy_coding: code the level indices with CompressAI's rANS coder under the
            checkpoint's ``entropy_model`` (per-map level counts that ``bench train gan``
            writes) instead of ld(L) bits each (beyond the paper). A checkpoint without one
            makes its rate point unavailable; ``weights=random`` uses uniform counts. The
            rate point stays the nominal bpp; records' ``bpp`` is the measured rate of the
            bytes, ``bpp_estimated`` the nominal F * ld(L) / 256. Decoding needs no option:
            the bitstream says how it was coded.
    """

    name = "gan"
    description = "GAN autoencoder (Löhdefink et al. 2019 after Agustsson et al. 2018), bpp"
    rate_scale = RateScale("bpp", 1 / 256, 1.0, quality_rises=True, integer=False)
    ceiling = None
    default_rates = tuple(8 * bits / 256 for bits in range(1, 7))  # F = 8, L = 2..64
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    contract_rates: ClassVar[tuple[float, ...]] = (0.03125, 0.0625, 0.09375)

    def __init__(
        self,
        *,
        weights: str = "",
        bottleneck: int = 0,
        device: str = "cpu",
        max_megapixels: float = MAX_MEGAPIXELS,
        batch_size: int = 1,
        entropy_coding: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(entropy_coding, str):
            from bench.types import parse_option_value

            entropy_coding = parse_option_value(entropy_coding)  # type: ignore[assignment]
        if not isinstance(entropy_coding, bool | int) or entropy_coding not in (0, 1):
            raise ValueError(f"entropy_coding must be true or false, got {entropy_coding!r}")
        self.entropy_coding = flag(entropy_coding, "entropy_coding")
        self.weights = str(weights)
        self.bottleneck = int(bottleneck)
        if self.bottleneck < 0:
            raise ValueError(f"bottleneck must be 0 (any) or positive, got {bottleneck}")
        self.device = str(device)
        if self.device != "cpu":
            from bench.tasks.base import resolve_device

            self.device = resolve_device(self.device)
        self.max_megapixels = float(max_megapixels)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.random_width = RANDOM_WIDTH
        if self.weights.startswith("random:"):
            try:
                self.random_width = float(self.weights.partition(":")[2])
            except ValueError:
                raise ValueError(f"weights=random:WIDTH needs a number, got {weights!r}") from None
        self._index: list[_Entry] | None = None
        self._random: dict[tuple[int, int], LoadedGan] = {}
        self.options = {
            "weights": self.weights,
            "bottleneck": self.bottleneck,
            "device": self.device,
            "max_megapixels": self.max_megapixels,
            "batch_size": self.batch_size,
            "entropy_coding": self.entropy_coding,
        }

    @classmethod
    def availability(cls) -> Availability:
        return torch_availability()

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch")

    @property
    def is_random(self) -> bool:
        return self.weights == "random" or self.weights.startswith("random:")

    # ---- finding models

    def index(self) -> list[_Entry]:
        """The checkpoints ``weights`` names, with their configs (read once)."""
        if self._index is not None:
            return self._index
        if not self.weights:
            raise CodecUnavailable(
                f"{self.name}: no weights; train a checkpoint per rate point ("
                + TRAIN_COMMAND.format(F="F", L="L")
                + f") and pass --codec-option {self.name}.weights=CHECKPOINT_OR_DIR"
            )
        root = Path(self.weights).expanduser()
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES)
        elif root.is_file():
            files = [root]
        else:
            raise CodecUnavailable(f"{self.name}: weights {root} is neither a file nor a directory")
        self._index = [_Entry(path, read_gan_config(path)) for path in files]
        return self._index

    def _unavailable(self, rate: float, known: Iterable[_Entry]) -> CodecUnavailable:
        f_value = self.bottleneck or 8
        bits = rate * DOWNSAMPLING**2 / f_value
        levels = round(2**bits) if bits < 17 else 0
        if levels >= 2 and _same_rate(f_value * math.log2(levels) / 256, rate):
            command = TRAIN_COMMAND.format(F=f_value, L=levels)
        else:
            command = TRAIN_COMMAND.format(F="F", L="L") + f" with F * log2(L) / 256 = {rate:g}"
        have = ", ".join(
            f"{e.config.nominal_bpp:.6g} (F={e.config.bottleneck}, L={e.config.levels})"
            for e in known
        )
        return CodecUnavailable(
            f"{self.name}: no checkpoint for {rate:g} bpp in {self.weights}"
            + (f" (it has {have})" if have else "")
            + f"; make one: {command}"
        )

    def _entry_for_rate(self, rate: float) -> _Entry:
        entries = self.index()
        matches = [
            e
            for e in entries
            if _same_rate(e.config.nominal_bpp, rate)
            and (not self.bottleneck or e.config.bottleneck == self.bottleneck)
        ]
        if not matches:
            raise self._unavailable(rate, entries)
        if len(matches) > 1:
            names = ", ".join(
                f"{e.path.name} (F={e.config.bottleneck}, L={e.config.levels}, "
                f"width={e.config.width:g})"
                for e in matches
            )
            raise UsageError(
                f"{self.name}: several checkpoints give {rate:g} bpp: {names}; choose with "
                f"--codec-option {self.name}.bottleneck=F or a weights file"
            )
        return matches[0]

    def _load(self, entry: _Entry) -> LoadedGan:
        from bench.codecs.gan_model import model_identity

        if entry.loaded is None:
            config, generator = load_gan_checkpoint(entry.path)
            entry.loaded = LoadedGan(
                config,
                generator.to(self.device),
                model_identity(config, generator),
                str(entry.path),
                read_entropy_model(entry.path),
            )
        return entry.loaded

    def _random_model(self, bottleneck: int, levels: int) -> LoadedGan:
        import torch

        from bench.codecs.gan_model import GanGenerator, model_identity

        key = (bottleneck, levels)
        if key not in self._random:
            config = GanConfig(bottleneck=bottleneck, levels=levels, width=self.random_width)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 * bottleneck + levels)
                generator = GanGenerator(config).eval()
            uniform = EntropyModel(
                np.zeros((bottleneck, levels), dtype=np.int64), 0, "images (uniform stand-in)"
            )
            self._random[key] = LoadedGan(
                config,
                generator.to(self.device),
                model_identity(config, generator),
                f"random (seeded, width {self.random_width:g}; pipeline tests only)",
                uniform,
            )
        return self._random[key]

    def model(self, rate: float) -> LoadedGan:
        """The generator coding at a nominal bpp (loaded once)."""
        rate = self.scale.validate(rate, self.name)
        if self.is_random:
            f_value = self.bottleneck or 8
            bits = rate * DOWNSAMPLING**2 / f_value
            levels = round(2**bits) if bits < 17 else 0
            if levels < 2 or not _same_rate(f_value * math.log2(levels) / 256, rate):
                raise UsageError(
                    f"{self.name}: {rate:g} bpp is not F * log2(L) / 256 for F={f_value} and "
                    "a whole L >= 2"
                )
            return self._random_model(f_value, levels)
        return self._load(self._entry_for_rate(rate))

    def model_for_bitstream(self, header: GanHeader) -> LoadedGan:
        """The generator that made a bitstream: same F, L and identity; CodecError if none."""
        if self.is_random:
            candidates = [self._random_model(header.bottleneck, header.levels)]
        else:
            candidates = [
                self._load(e)
                for e in self.index()
                if (e.config.bottleneck, e.config.levels) == (header.bottleneck, header.levels)
            ]
        matching = [c for c in candidates if c.identity == header.identity]
        if header.entropy_model is not None:  # among equal generators, the one with its counts
            matching.sort(
                key=lambda c: c.entropy is None or c.entropy.identity != header.entropy_model
            )
        if matching:
            return matching[0]
        ours = ", ".join(f"{c.identity.hex()} ({c.source})" for c in candidates) or "none"
        raise CodecError(
            f"{self.name}: bitstream made by model {header.identity.hex()} (F="
            f"{header.bottleneck}, L={header.levels}); this codec's models for that F and L: "
            f"{ours}. Decode with the weights that encoded it"
        )

    def _no_entropy_model(self, source: str) -> CodecUnavailable:
        return CodecUnavailable(
            f"{self.name}: entropy_coding=true needs the checkpoint's {ENTROPY_KEY} (per-map "
            f"level counts), and {source} has none (it predates them, or its fit did not "
            "finish). Re-run the bench train gan command that made it (with --resume it only "
            "fits them: training is done), or add them: " + FIT_COMMAND.format(checkpoint=source)
        )

    def _entropy_tables(self, header: GanHeader, loaded: LoadedGan) -> EntropyTables:
        """The tables of an entropy-coded bitstream's model; CodecError if ``loaded`` lacks them."""
        assert header.entropy_model is not None
        wanted = header.entropy_model.hex()
        if loaded.entropy is None:
            raise CodecError(
                f"{self.name}: the bitstream is entropy-coded with entropy model {wanted}, but "
                f"{loaded.source} has no {ENTROPY_KEY}. Decode with the checkpoint that "
                "encoded it"
            )
        if loaded.entropy.identity != header.entropy_model:
            raise CodecError(
                f"{self.name}: the bitstream is entropy-coded with entropy model {wanted}; "
                f"{loaded.source} has entropy model {loaded.entropy.describe()}. Decode with the "
                "checkpoint that encoded it"
            )
        tables = loaded.tables()
        assert tables is not None
        return tables

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        if self.is_random:
            return {
                "weights": f"random (seeded, width {self.random_width:g}; pipeline tests only, "
                "not a trained codec)"
                + ("; entropy coding with uniform counts" if self.entropy_coding else "")
            }
        from bench.download import sha256_of

        weights: dict[str, dict[str, Any]] = {}
        training_files: set[str] = set()
        missing: list[str] = []
        for rate in rates:
            try:
                entry = self._entry_for_rate(float(rate))
            except CodecUnavailable as exc:  # costs that rate point's records only
                weights[f"{rate:g}"] = {"missing": str(exc)}
                missing.append(str(exc))
                continue
            entropy = read_entropy_model(entry.path)
            if self.entropy_coding and entropy is None:
                unavailable = self._no_entropy_model(str(entry.path))
                weights[f"{rate:g}"] = {"missing": str(unavailable)}
                missing.append(str(unavailable))
                continue
            training = checkpoint_training(entry.path)
            weights[f"{rate:g}"] = {
                "file": str(entry.path),
                "sha256": sha256_of(entry.path),
                "config": asdict(entry.config),
                "note": "unverified: trained by bench",
                "training": {k: v for k, v in training.items() if k != "images"},
                "training_images": len(training.get("images", [])),
            }
            if entropy is not None:
                weights[f"{rate:g}"][ENTROPY_KEY] = {
                    "identity": entropy.identity.hex(),
                    "images": entropy.images,
                    "source": entropy.source,
                }
            training_files |= {
                str(i["file_sha256"]) for i in training.get("images", []) if i.get("file_sha256")
            }
        if missing and len(missing) == len(weights):
            raise CodecUnavailable(missing[0])
        return {"weights": weights, TRAINING_FILES: sorted(training_files)}

    # ---- coding

    def _check_size(self, height: int, width: int) -> None:
        check_size(self.name, height, width, self.max_megapixels)

    def _synchronize(self) -> None:
        synchronize(self.device)

    def encode(self, image: Image, rate: float) -> bytes:
        return self.encode_batch([image], rate)[0]

    def decode(self, data: bytes) -> Image:
        return self.decode_batch([data])[0]

    def encode_batch(self, images: Sequence[Image], rate: float) -> list[bytes]:
        import torch
        import torch.nn.functional as F

        checked = [check_image(image, self.name) for image in images]
        height, width = checked[0].shape[:2]
        if any(image.shape != checked[0].shape for image in checked):
            raise CodecError(f"{self.name}: a batch needs images of one shape")
        self._check_size(height, width)
        loaded = self.model(rate)
        config = loaded.config
        tables = None
        if self.entropy_coding:
            tables = loaded.tables()
            if tables is None:
                raise self._no_entropy_model(loaded.source)
        padding = gan_padding(height, width)
        top, bottom, left, right = padding
        x = torch.from_numpy(np.stack(checked)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        x = F.pad(x.to(self.device), (left, right, top, bottom), mode="replicate")
        with torch.inference_mode():
            indices = loaded.generator.encode(x).to("cpu").numpy()
        self._synchronize()
        header = GanHeader(
            loaded.identity,
            height,
            width,
            padding,
            config.bottleneck,
            config.levels,
            int(indices.shape[2]),
            int(indices.shape[3]),
            tables.identity if tables is not None else None,
        )
        info = {  # bpp_estimated: the nominal rate, beside the measured bpp of the bytes
            "bpp_estimated": config.nominal_bpp,
            "header_bytes": header.header_bytes,
            "padding": f"{top},{bottom},{left},{right}",
        }
        return [Bitstream(write_gan_bitstream(header, idx, tables), info) for idx in indices]

    def decode_batch(self, streams: Sequence[bytes]) -> list[Image]:
        import torch

        headers = [parse_gan_bitstream(bytes(data))[0] for data in streams]
        if len(set(headers)) > 1:
            return [image for data in streams for image in self.decode_batch([data])]
        header = headers[0]
        loaded = self.model_for_bitstream(header)
        tables = None if header.entropy_model is None else self._entropy_tables(header, loaded)
        parsed = [read_gan_bitstream(bytes(data), tables)[1] for data in streams]
        indices = torch.from_numpy(np.stack(parsed)).to(self.device)
        with torch.inference_mode():
            x_hat = loaded.generator.decode(indices)
        top, _, left, _ = header.padding
        x_hat = x_hat[:, :, top : top + header.height, left : left + header.width]
        decoded = to_uint8(x_hat).permute(0, 2, 3, 1).to("cpu").numpy()
        self._synchronize()
        return [np.ascontiguousarray(image) for image in decoded]


def to_uint8(x_hat: Tensor) -> Tensor:
    """[-1, 1] floats to uint8, deterministically: ((x + 1) * 127.5).round().clamp(0, 255)."""
    import torch

    return ((x_hat + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_network(image: Image) -> Tensor:
    """An (H, W, 3) uint8 image as a (1, 3, H, W) float tensor in [-1, 1] (x / 127.5 - 1)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
