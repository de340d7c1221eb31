"""The bit-plane entropy coder of the importance-map autoencoder (spec §1.6): masked B-bit
indices ``k_m`` (C, h, w) <-> bytes, through a context-adaptive binary range coder.

Traversal (the encoder, the decoder and ``ideal_code_length_bits`` share one compiled
function, ``_traverse``, run in one of three modes, so the three cannot drift apart). For each
channel c = 0..C-1, for each plane p = B-1 (MSB) .. 0:

1. plane flag: is any bit of plane p in channel c a 1? Context ``plane[p]``.
2. If it is, for each ``block`` x ``block`` block in raster order (the blocks at the right
   and bottom edges are partial when h or w is not a multiple of the block size), a block
   flag: is any bit of this block on plane p a 1? Context ``block[p][s]``, s = 1 when the
   block already holds a sample made significant on a higher plane. When every earlier block
   of the plane had flag 0, the last block's flag is inferred to be 1 and not coded.
3. If the block flag is 1, for each sample of the block in raster order:
   * not yet significant (all higher bits 0): a significance bit, context
     ``sig[p][min(n, 2)]``, n = significant samples among its 8 neighbours in the state at
     that moment (higher planes, and the samples of plane p already coded, in any block);
   * significant: a refinement bit, context ``ref[p][r]``, r = 1 when the sample became
     significant on plane p + 1.
   When every earlier bit of the block on plane p was 0, the last sample's bit is inferred to
   be 1 and not coded.

The contexts are those of the spec, one set for the whole latent (4 + 8 + 12 + 8 = 32 at
B = 4), shared by all channels: with the fast adaptation below they follow each channel's
statistics within a few dozen decisions. The importance map is not transmitted; the zeros it
makes are coded as ordinary bits. Nothing else is transmitted: the decoder is told the shape.

Refinements measured and not taken (bytes on synthetic 16 x 64 x 96 latents: smooth, skewed
indices under a smooth importance map / all 4 bits kept / all 2 bits kept; no trained model
exists yet to measure on): ``sig[p][min(n, 4)]`` -0.7 / -1.3 / -1.5 %; block flags also by
the left and upper block flags of the plane -1.0 / +0.1 / +0.2 %; adaptation shift 4 -0.1 /
-0.4 / -0.3 %, shift 6 +0.4 / +0.5 / +0.5 %; a fresh context set per channel +1.5 / +0.7 /
+1.0 %. The gains are small and may not carry over to trained latents, so the coder keeps the
spec's contexts; revisit with real latents. The two inferred decisions save 0.1 - 0.2 %.

Probability model: each context holds P(bit = 1) in 16 bits, initialised to 1/2 (32768),
updated after each decision by ``p += (65536 - p) >> 5`` on a 1 and ``p -= p >> 5`` on a 0
(shift 5: a memory of about 32 decisions). The state stays in [31, 65505]; the coder also
clamps it to [32, 65504], so neither symbol ever gets probability 0.

Range coder: the LZMA-style binary range coder (``low`` 64-bit with a carry bit, ``range``
32-bit, a cached byte plus a count of pending 0xFF bytes for carry propagation, one byte
shifted out whenever ``range`` < 2^24); the split is ``(range >> 16) * p``, a 1 taking the
lower part. One coder for the whole latent. At the end the encoder picks the value in its
final interval with the most trailing zero bits, flushes, and drops the always-zero first
byte and all trailing zero bytes; the decoder reads zeros past the end of its input, so both
are implied. A valid stream keeps the decoder's ``code`` below ``range`` and is consumed to its
last byte; ``decode_planes`` raises ValueError when either fails (a damaged stream is caught
only then: there is no checksum).

Why a coder of our own and not constriction or torchac: both take every symbol's
distribution before decoding starts, which rules out adaptive probabilities and contexts built
from the same plane's already-decoded neighbours, unless one returns to Python for every bit.
The per-bit loop is compiled with numba (the ``learned`` extra): a few milliseconds per
Kodak-size latent (``benchmarks/impmap_coder.py``); the first call compiles it (seconds) or
loads it from numba's on-disk cache.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from bench.codecs.learned.base import TORCH_HINT
from bench.errors import CodecUnavailable
from bench.types import Availability

try:
    import numba as _numba
except ImportError:  # the learned extra is not installed: the public functions say so
    _numba = None

__all__ = [
    "coder_availability",
    "decode_planes",
    "encode_planes",
    "ideal_code_length_bits",
    "mask_indices",
]

MAX_ELEMENTS = 1 << 30
"""Largest latent (C * h * w) the coder accepts."""
PROB_BITS = 16
PROB_ONE = 1 << PROB_BITS
PROB_INIT = PROB_ONE // 2
PROB_MIN = 32
"""Clamp of a context's P(1) to [PROB_MIN, PROB_ONE - PROB_MIN] when coding."""
ADAPT_SHIFT = 5
TOP = 1 << 24
"""The range coder shifts a byte out whenever ``range`` drops below this."""

_ENCODE, _DECODE, _COST = 0, 1, 2
# Slots of the coder's state vector.
_LOW, _RANGE, _CACHE, _PENDING, _POS, _CODE, _BAD, _NSTATE = range(8)

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    """numba's ``njit(cache=True)`` when numba imports; the plain function otherwise (never
    called then: the public functions raise CodecUnavailable first)."""
    if _numba is None:
        return func
    return _numba.njit(cache=True, nogil=True)(func)  # type: ignore[no-any-return]


def coder_availability() -> Availability:
    """Whether the compiled coder can run: numba imports (and its version)."""
    if _numba is None:
        return Availability(False, "numba does not import", f"{TORCH_HINT}, numba 0.60.0")
    return Availability(True, f"numba {_numba.__version__}")


def _require_numba() -> None:
    if _numba is None:
        raise CodecUnavailable(
            f"impmap: the bit-plane coder needs numba, which does not import; {TORCH_HINT}, "
            "numba 0.60.0"
        )


# ---------------------------------------------------------------------------------------------
# Compiled kernel


@_jit
def _shift_low(st: Any, out: Any) -> None:
    """Move the top byte of ``low`` out, through the cache that absorbs a later carry."""
    low = st[_LOW]
    if low < 0xFF000000 or low >= 0x100000000:
        carry = low >> 32
        byte = st[_CACHE]
        while st[_PENDING] > 0:
            pos = st[_POS]
            if pos >= out.shape[0]:
                st[_BAD] = 1  # cannot happen: the buffer is sized for the worst case
                return
            out[pos] = (byte + carry) & 0xFF
            st[_POS] = pos + 1
            byte = 0xFF
            st[_PENDING] -= 1
        st[_CACHE] = (low >> 24) & 0xFF
    st[_PENDING] += 1
    st[_LOW] = (low & 0x00FFFFFF) << 8


@_jit
def _code(
    mode: int, st: Any, data: Any, out: Any, probs: Any, cost: Any, ctx: int, bit: int
) -> int:
    """Code one binary decision in context ``ctx``: encode ``bit``, decode it, or add its cost;
    then adapt the context. Returns the bit."""
    p = probs[ctx]
    pc = min(max(p, PROB_MIN), PROB_ONE - PROB_MIN)
    if mode == _COST:
        cost[0] += -math.log2((pc if bit else PROB_ONE - pc) / PROB_ONE)
    else:
        rng = st[_RANGE]
        bound = (rng >> PROB_BITS) * pc
        if mode == _ENCODE:
            if bit:
                rng = bound
            else:
                st[_LOW] += bound
                rng -= bound
            while rng < TOP:
                rng <<= 8
                _shift_low(st, out)
        else:
            code = st[_CODE]
            if code >= rng:
                st[_BAD] = 1  # impossible in a valid stream
            if code < bound:
                bit = 1
                rng = bound
            else:
                bit = 0
                code -= bound
                rng -= bound
            while rng < TOP:
                rng <<= 8
                pos = st[_POS]
                byte = data[pos] if pos < data.shape[0] else 0
                st[_POS] = pos + 1
                code = ((code << 8) | byte) & 0xFFFFFFFF
            st[_CODE] = code
        st[_RANGE] = rng
    if bit:
        probs[ctx] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
    else:
        probs[ctx] = p - (p >> ADAPT_SHIFT)
    return bit


@_jit
def _traverse(
    mode: int, k: Any, bits: int, block: int, data: Any, out: Any, st: Any, cost: Any
) -> None:
    """The bit-plane traversal of the module docstring over ``k`` (C, h, w) uint8: read in
    the encode and cost modes, filled (from zeros) in the decode mode."""
    n_ch, h, w = k.shape
    nbh = (h + block - 1) // block
    nbw = (w + block - 1) // block
    n_blocks = nbh * nbw
    c_plane = 0
    c_block = c_plane + bits
    c_sig = c_block + 2 * bits
    c_ref = c_sig + 3 * bits
    probs = np.full(c_ref + 2 * bits, PROB_INIT, np.int64)
    if mode == _DECODE:
        code = 0
        for _ in range(4):  # the first byte of every stream, always 0, is not stored
            pos = st[_POS]
            byte = data[pos] if pos < data.shape[0] else 0
            st[_POS] = pos + 1
            code = (code << 8) | byte
        st[_CODE] = code
    sig_plane = np.empty((h, w), np.int8)  # plane on which a sample became significant, or -1
    neighbours = np.empty((h + 2, w + 2), np.int32)  # significant neighbours, padded by 1
    block_sig = np.empty(n_blocks, np.int32)  # significant samples per block
    for c in range(n_ch):
        sig_plane[:] = -1
        neighbours[:] = 0
        block_sig[:] = 0
        for p in range(bits - 1, -1, -1):
            if st[_BAD]:
                return
            any_one = 0
            if mode != _DECODE:
                for y in range(h):
                    for x in range(w):
                        if (k[c, y, x] >> p) & 1:
                            any_one = 1
                            break
                    if any_one:
                        break
            if not _code(mode, st, data, out, probs, cost, c_plane + p, any_one):
                continue
            plane_has_one = False
            for bi in range(n_blocks):
                y0 = (bi // nbw) * block
                x0 = (bi % nbw) * block
                y1 = min(y0 + block, h)
                x1 = min(x0 + block, w)
                block_one = 0
                if mode != _DECODE:
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            if (k[c, y, x] >> p) & 1:
                                block_one = 1
                if bi == n_blocks - 1 and not plane_has_one:
                    block_one = 1  # inferred: the plane flag said some block has a 1
                else:
                    ctx = c_block + 2 * p + (1 if block_sig[bi] > 0 else 0)
                    block_one = _code(mode, st, data, out, probs, cost, ctx, block_one)
                if not block_one:
                    continue
                plane_has_one = True
                seen_one = False
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        b = (k[c, y, x] >> p) & 1 if mode != _DECODE else 0
                        last = y == y1 - 1 and x == x1 - 1
                        became = sig_plane[y, x]
                        if last and not seen_one:
                            b = 1  # inferred: the block flag said some sample has a 1
                        elif became < 0:
                            n = min(neighbours[y + 1, x + 1], 2)
                            b = _code(mode, st, data, out, probs, cost, c_sig + 3 * p + n, b)
                        else:
                            r = 1 if became == p + 1 else 0
                            b = _code(mode, st, data, out, probs, cost, c_ref + 2 * p + r, b)
                        if b:
                            seen_one = True
                            if mode == _DECODE:
                                k[c, y, x] |= 1 << p
                            if became < 0:
                                sig_plane[y, x] = p
                                block_sig[bi] += 1
                                for dy in range(3):
                                    for dx in range(3):
                                        neighbours[y + dy, x + dx] += 1
                                neighbours[y + 1, x + 1] -= 1  # not its own neighbour
    if mode == _ENCODE:
        _flush(st, out)


@_jit
def _flush(st: Any, out: Any) -> None:
    """End the encoder: take the value of the final interval with the most trailing zero
    bits, then shift all of ``low`` out."""
    low = st[_LOW]
    high = low + st[_RANGE] - 1
    for shift in range(40, -1, -1):
        mask = (1 << shift) - 1
        value = (low + mask) & ~mask
        if value <= high:
            st[_LOW] = value
            break
    for _ in range(5):
        _shift_low(st, out)


# ---------------------------------------------------------------------------------------------
# Public API


def _check_params(bits: int, block: int) -> tuple[int, int]:
    if isinstance(bits, bool) or isinstance(block, bool):
        raise ValueError("bits and block must be integers, not booleans")
    try:
        bits, block = operator.index(bits), operator.index(block)
    except TypeError:
        raise ValueError(f"bits and block must be integers, got {bits!r}, {block!r}") from None
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8 (uint8 indices), got {bits}")
    if not 1 <= block <= 1 << 16:
        raise ValueError(f"block must be in 1..65536, got {block}")
    return bits, block


def _integer_array(values: npt.ArrayLike, name: str) -> npt.NDArray[np.integer[Any]]:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {array.dtype}")
    return array


def mask_indices(
    indices: npt.ArrayLike, importance: npt.ArrayLike, bits: int = 4
) -> npt.NDArray[np.uint8]:
    """Keep the ``importance`` most significant of the ``bits`` bits of each index (spec §1.4):
    ``k_m = (k >> (bits - m)) << (bits - m)``.

    Args:
        indices: integer indices in 0..2**bits - 1, any shape.
        importance: integers in 1..bits, the same shape.
        bits: the index width B.

    Returns:
        The masked indices, uint8, of that shape.

    Raises:
        ValueError: values out of range, shapes that differ, non-integer arrays.

    >>> mask_indices([13, 13, 13, 13], [1, 2, 3, 4]).tolist()
    [8, 12, 12, 13]
    """
    bits, _ = _check_params(bits, 1)
    k = _integer_array(indices, "indices")
    m = _integer_array(importance, "importance")
    if k.shape != m.shape:
        raise ValueError(f"indices {k.shape} and importance {m.shape} differ in shape")
    if k.size and (k.min() < 0 or k.max() > (1 << bits) - 1):
        raise ValueError(f"indices must be in 0..{(1 << bits) - 1}, got {k.min()}..{k.max()}")
    if m.size and (m.min() < 1 or m.max() > bits):
        raise ValueError(f"importance must be in 1..{bits}, got {m.min()}..{m.max()}")
    drop = (bits - m).astype(np.uint8)
    return ((k.astype(np.uint8) >> drop) << drop).astype(np.uint8)


def _check_latent(indices: npt.ArrayLike, bits: int) -> npt.NDArray[np.uint8]:
    k = _integer_array(indices, "indices")
    if k.ndim != 3 or 0 in k.shape:
        raise ValueError(f"indices must be a non-empty (C, h, w) array, got shape {k.shape}")
    if k.size > MAX_ELEMENTS:
        raise ValueError(f"latent of {k.size} elements, more than {MAX_ELEMENTS}")
    if k.min() < 0 or k.max() > (1 << bits) - 1:
        raise ValueError(f"indices must be in 0..{(1 << bits) - 1}, got {k.min()}..{k.max()}")
    return np.ascontiguousarray(k, dtype=np.uint8)


def _run(mode: int, k: npt.NDArray[np.uint8], bits: int, block: int, data: bytes) -> Any:
    _require_numba()
    n_ch, h, w = k.shape
    blocks = -(-h // block) * -(-w // block)
    decisions = n_ch * bits * (1 + blocks + h * w)
    # Each coded decision narrows the interval by at most 2**11.1 (P >= 32 / 65536).
    out = np.zeros(2 * decisions + 16 if mode == _ENCODE else 0, np.uint8)
    st = np.zeros(_NSTATE, np.int64)
    st[_RANGE] = 0xFFFFFFFF
    st[_PENDING] = 1  # the first byte, always 0, which the stream does not store
    cost = np.zeros(1, np.float64)
    _traverse(mode, k, bits, block, np.frombuffer(data, np.uint8), out, st, cost)
    return out, st, cost


def encode_planes(indices: npt.ArrayLike, bits: int = 4, block: int = 4) -> bytes:
    """Code masked indices (C, h, w) in 0..2**bits - 1 bit plane by bit plane (module
    docstring). The bytes hold no shape: the decoder is told it.

    Raises:
        ValueError: bad indices, bits or block.
        CodecUnavailable: numba does not import.
    """
    bits, block = _check_params(bits, block)
    k = _check_latent(indices, bits)
    out, st, _ = _run(_ENCODE, k, bits, block, b"")
    if st[_BAD] or out[0] != 0:
        raise RuntimeError("impmap coder: buffer overflow or a first byte other than 0 (a bug)")
    # Skip the always-zero first byte; trailing zeros are implied (the decoder reads zeros).
    return bytes(out[1 : int(st[_POS])]).rstrip(b"\0")


def decode_planes(
    data: bytes, shape: tuple[int, ...], bits: int = 4, block: int = 4
) -> npt.NDArray[np.uint8]:
    """Inverse of ``encode_planes``: the (C, h, w) uint8 indices of ``shape``.

    Deterministic; reads zeros past the end of ``data``. A damaged stream either decodes to
    some array of ``shape`` or raises ValueError (when the range coder's state turns
    impossible, or bytes are left over); it never hangs.

    Raises:
        ValueError: bad shape, bits or block; a stream that cannot be valid.
        CodecUnavailable: numba does not import.
    """
    bits, block = _check_params(bits, block)
    try:
        dims = tuple(operator.index(v) for v in shape)
    except TypeError:
        raise ValueError(f"shape must be 3 integers (C, h, w), got {shape!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"shape must be 3 positive integers (C, h, w), got {shape!r}")
    if math.prod(dims) > MAX_ELEMENTS:
        raise ValueError(f"shape {dims} has more than {MAX_ELEMENTS} elements")
    payload = bytes(data)
    k = np.zeros(dims, np.uint8)
    _, st, _ = _run(_DECODE, k, bits, block, payload)
    if st[_BAD]:
        raise ValueError("corrupt impmap stream: the range decoder reached an impossible state")
    # The decoder reads exactly as many bytes as the unstripped stream holds (less its first).
    if int(st[_POS]) < len(payload):
        raise ValueError(
            f"corrupt impmap stream: {len(payload) - int(st[_POS])} bytes left after decoding "
            f"{dims}"
        )
    return k


def ideal_code_length_bits(indices: npt.ArrayLike, bits: int = 4, block: int = 4) -> float:
    """The ideal code length of ``encode_planes``' own adaptive model on these indices:
    the sum of -log2 P(decision) over every decision it codes (inferred ones cost nothing),
    with the same clamped 16-bit probabilities. The bytes exceed it by the range coder's
    overhead (truncated splits, the flush): a few bytes on a latent.

    Raises:
        ValueError: bad indices, bits or block.
        CodecUnavailable: numba does not import.
    """
    bits, block = _check_params(bits, block)
    k = _check_latent(indices, bits)
    _, _, cost = _run(_COST, k, bits, block, b"")
    return float(cost[0])
