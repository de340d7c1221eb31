"""Downloads checked against a SHA-256 before they are kept."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from bench.errors import DatasetError

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_matches(digest: str, expected: str) -> bool:
    """Whether a hex SHA-256 is ``expected``, or starts with it when ``expected`` is a prefix
    (at least 8 hex digits, as torch.hub-style file names publish)."""
    expected = expected.lower()
    if len(expected) < 8:
        raise ValueError(f"a checksum needs at least 8 hex digits, got {expected!r}")
    return digest.lower().startswith(expected)


def download(url: str, target: Path, sha256: str, *, advice: str = "") -> Path:
    """Fetch ``url`` into ``target`` if its SHA-256 is ``sha256`` (or starts with it, for a
    published prefix); nothing is kept otherwise.

    The bytes go to a temporary file beside ``target`` and are renamed into place only after
    the checksum matches, so an interrupted or corrupted download never leaves a file that
    looks complete.

    ``advice`` replaces the default hint (point bench at a local copy with --data-dir).

    Raises:
        DatasetError: the server cannot be reached or the checksum differs (names the URL).
    """
    advice = (
        advice or f"Put the files in {target.parent} or point bench at a local copy with --data-dir"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, partial_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    partial = Path(partial_name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp,
        ):
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if not digest_matches(digest.hexdigest(), sha256):
            raise DatasetError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got "
                f"{digest.hexdigest()}; the file was not kept. The server's copy differs from "
                f"the one bench knows. {advice}"
            )
        partial.replace(target)
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DatasetError(f"cannot download {url}: {exc}. Offline? {advice}") from exc
    finally:
        partial.unlink(missing_ok=True)
