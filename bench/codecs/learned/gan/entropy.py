"""Entropy coding of the GAN codec's level indices: CompressAI rANS tables of a static
per-map model (``EntropyTables``), named by the counts they come from (``entropy_identity``)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.codecs.learned.base import TORCH_HINT
from bench.errors import CodecError, CodecUnavailable

ENTROPY_PRECISION = 16
"""Bits of CompressAI's quantized CDFs (its rANS coder's precision)."""
ENTROPY_ID_BYTES = 4
"""Bytes of an entropy model's identity in the bitstream."""


def entropy_identity(counts: npt.ArrayLike) -> bytes:
    """4 bytes naming an entropy model: SHA-256 of its (F, L) counts (int64, little-endian),
    with the smoothing and CDF precision, so tables built another way get another name."""
    array = np.ascontiguousarray(np.asarray(counts, dtype="<i8"))
    digest = hashlib.sha256(
        f"bench-gan-entropy:laplace+1:precision{ENTROPY_PRECISION}:{array.shape};".encode()
    )
    digest.update(array.tobytes())
    return digest.digest()[:ENTROPY_ID_BYTES]


class EntropyTables:
    """CompressAI rANS tables of a static per-channel model: one CDF per latent map.

    Map ``f``'s probabilities are ``(counts[f] + 1) / sum(counts[f] + 1)`` (Laplace smoothing:
    every level stays codable), laid out as CompressAI's ``EntropyModel._pmf_to_cdf`` does (the
    L probabilities, then the tail mass of its escape symbol: 0 here, since indices never leave
    0..L-1; the quantizer still gives the escape symbol the least frequency) and quantized to
    16 bits by ``compressai._CXX.pmf_to_quantized_cdf``. Offsets are 0, CDF lengths L + 2.

    ``what`` names the codec in messages (the ``gdae`` codec uses these tables too).

    Raises:
        ValueError: counts that are not a non-negative integer (F, L) array.
        CodecUnavailable: CompressAI is not importable.
    """

    def __init__(self, counts: npt.ArrayLike, what: str = "gan") -> None:
        self.what = what
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
                f"{what}: entropy coding needs CompressAI's rANS coder, which does not import "
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
                f"corrupt {self.what} bitstream: rANS payload of {len(data)} bytes (a multiple "
                "of 4, at least 8, expected)"
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
            raise CodecError(
                f"corrupt {self.what} bitstream: rANS payload decodes to invalid levels"
            )
        return out.reshape(shape)
