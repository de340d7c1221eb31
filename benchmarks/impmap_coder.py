"""Time impmap's bit-plane coder against CompressAI's rANS on the same latents.

    OMP_NUM_THREADS=1 python benchmarks/impmap_coder.py [--repeat 20] [--seed 0]

For a Kodak-size latent (16 x 96 x 64, a 768 x 512 image at 1/8) and a 2K one (16 x 128 x
256), both B = 4 bit indices drawn from a skewed, spatially smooth distribution and masked by a
smooth importance map (mostly 1..2 bits kept), prints the median ms per image of encode and
decode and the bytes of:

* ``impmap``: ``encode_planes`` / ``decode_planes`` (its ideal code length beside it);
* ``rans``: CompressAI's ``RansEncoder.encode_with_indexes`` with one static CDF per channel
  built from the latent's own histogram (``bench.codecs.learned.gan.entropy.EntropyTables``,
  Laplace-smoothed, 16-bit). Its bytes leave out the tables, which a real stream would carry
  (16 x 16 counts), and the table build is timed apart.

Also prints the first call of the coder, which compiles it, or loads it from numba's cache
(``__pycache__`` beside the module); run with ``NUMBA_CACHE_DIR=$(mktemp -d)`` to time a cold
compile. Run by hand; the figures go in the notes, never in a timed test.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.codecs.learned.impmap.coder import (
    decode_planes,
    encode_planes,
    ideal_code_length_bits,
    mask_indices,
)

SHAPES: dict[str, tuple[int, int, int]] = {
    "kodak 768x512": (16, 96, 64),
    "2K 2048x1024": (16, 128, 256),
}


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cell: int) -> np.ndarray:
    c, h, w = shape
    coarse = rng.normal(size=(c, -(-h // cell), -(-w // cell)))
    field = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :h, :w]
    return field + 0.3 * rng.normal(size=shape)


def realistic_latent(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Masked 4-bit indices: a sigmoid of a smooth field (mostly small, per-channel
    activity), masked by a smooth importance map of mean about 1.9 bits (as the tests use)."""
    activity = rng.uniform(0.5, 2.0, size=(shape[0], 1, 1))
    e = 1.0 / (1.0 + np.exp(-(activity * smooth_field(rng, shape, 4) - 2.0)))
    k = np.minimum(np.floor(16 * e), 15).astype(np.uint8)
    m = np.clip(np.rint(1.8 + smooth_field(rng, shape, 8)), 1, 4).astype(np.uint8)
    return mask_indices(k, m)


def median_ms(func: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    latents = {name: (shape, realistic_latent(rng, shape)) for name, shape in SHAPES.items()}

    tiny = np.zeros((1, 1, 1), np.uint8)
    start = time.perf_counter()
    decode_planes(encode_planes(tiny), tiny.shape)
    first = time.perf_counter() - start
    print(
        f"impmap coder first call (compile, or load from numba's cache): {first:.2f} s "
        f"[NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', 'default')}]"
    )
    from bench.codecs.learned.gan.entropy import EntropyTables

    print(
        f"\n{'latent':<15} {'coder':<7} {'encode ms':>9} {'decode ms':>9} {'bytes':>7} "
        f"{'ideal B':>8} {'bpp':>6}"
    )
    for name, (shape, x) in latents.items():
        c, h, w = shape
        pixels = 64 * h * w
        enc_ms, data = median_ms(functools.partial(encode_planes, x), args.repeat)
        dec_ms, y = median_ms(functools.partial(decode_planes, data, shape), args.repeat)
        assert np.array_equal(y, x), "impmap round trip failed"
        ideal = ideal_code_length_bits(x) / 8
        print(
            f"{name:<15} {'impmap':<7} {enc_ms:>9.2f} {dec_ms:>9.2f} {len(data):>7} "
            f"{ideal:>8.0f} {8 * len(data) / pixels:>6.3f}"
        )
        counts = np.stack([np.bincount(x[i].ravel(), minlength=16) for i in range(c)])
        table_ms, tables = median_ms(functools.partial(EntropyTables, counts), args.repeat)
        flat = x.reshape(c, -1)
        enc_ms, data = median_ms(functools.partial(tables.encode, flat), args.repeat)
        dec_ms, y = median_ms(functools.partial(tables.decode, data, flat.shape), args.repeat)
        assert np.array_equal(y, flat), "rANS round trip failed"
        print(
            f"{'':<15} {'rans':<7} {enc_ms:>9.2f} {dec_ms:>9.2f} {len(data):>7} "
            f"{tables.bits(flat) / 8:>8.0f} {8 * len(data) / pixels:>6.3f}  "
            f"(+ {table_ms:.2f} ms to build its tables)"
        )
    print(f"\nmedians of {args.repeat} runs, one thread, {os.cpu_count()} CPU(s)")


if __name__ == "__main__":
    main()
