"""Model checkpoints from a path, or from a URL checked against its SHA-256 and cached."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from bench.config import cache_home
from bench.download import download, sha256_of
from bench.errors import BenchError


def resolve_checkpoint(spec: str, sha256: str = "") -> Path:
    """A local file for ``spec``: a path as is, or a URL downloaded once into the cache.

    A URL needs ``sha256``: the file is kept only if it matches, and a cached copy is used
    only while it still matches. With a path, a given ``sha256`` is checked too.

    Raises:
        BenchError: a URL without a checksum, a checksum mismatch, a missing file.
    """
    scheme = urlparse(spec).scheme
    if scheme in ("http", "https", "file"):
        if not sha256:
            raise BenchError(
                f"{spec}: a checkpoint URL needs its SHA-256 (weights_sha256=...), so that what "
                "is downloaded is what was meant"
            )
        name = Path(urlparse(spec).path).name or "checkpoint.pth"
        target = cache_home() / "checkpoints" / f"{sha256[:16]}-{name}"
        if not (target.is_file() and sha256_of(target) == sha256.lower()):
            download(spec, target, sha256)
        return target
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise BenchError(f"{path}: no such checkpoint file")
    if sha256 and sha256_of(path) != sha256.lower():
        raise BenchError(f"{path}: SHA-256 differs from the expected {sha256}")
    return path
