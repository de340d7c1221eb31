"""JPEG 2000 through OpenJPEG, driven by glymur (the way its Python users call it)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from bench.codecs.base import (
    Availability,
    Ceiling,
    Codec,
    Image,
    RateScale,
    check_image,
    choice,
    flag,
)
from bench.errors import CodecError, CodecUnavailable

_INSTALL_HINT = (
    "install the OpenJPEG shared library (Debian/Ubuntu: apt-get install libopenjp2-7; "
    "macOS: brew install openjpeg) and pip install glymur"
)
_CRATIO = RateScale("cratio", 1, 100_000, quality_rises=False, integer=False)
_PSNR = RateScale("psnr_db", 10, 100, quality_rises=True, integer=False)
_TMP_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _glymur():
    try:
        import glymur
    except ImportError as exc:
        raise CodecUnavailable(f"jpeg2000: glymur is not installed; {_INSTALL_HINT}") from exc
    if glymur.version.openjpeg_version in ("", "0.0.0"):
        raise CodecUnavailable(f"jpeg2000: glymur cannot find libopenjp2; {_INSTALL_HINT}")
    return glymur


class Jpeg2000Codec(Codec):
    """JPEG 2000 (ISO 15444-1) with OpenJPEG's encoder and decoder.

    The rate is a compression ratio against the 24-bit raw image (``cratio``), so a target
    bpp is hit directly with ``cratio = 24 / bpp``; with ``mode=psnr`` it is instead the PSNR
    in dB that OpenJPEG's rate allocation aims the single quality layer at. Defaults follow
    ``opj_compress``: reversible 5/3 wavelet, 6 resolutions, the RGB->YCC transform, and a
    JP2 file (``container=j2k`` gives the bare codestream, about 80 bytes smaller).
    """

    name = "jpeg2000"
    description = "JPEG 2000 (OpenJPEG via glymur), compression ratio or PSNR layers"
    rate_scale = _CRATIO
    ceiling = Ceiling(rate=1, min_psnr_db=float("inf"))

    def __init__(
        self,
        *,
        mode: str = "cratio",
        irreversible: bool = False,
        numres: int = 6,
        container: str = "jp2",
    ) -> None:
        super().__init__()
        self.mode = choice(mode, ("cratio", "psnr"), "mode")
        self.irreversible = flag(irreversible, "irreversible")
        if not 1 <= int(numres) <= 32:
            raise ValueError(f"option numres={numres} must be in 1..32")
        self.numres = int(numres)
        self.container = choice(container, ("jp2", "j2k"), "container")
        self.options = {
            "mode": self.mode,
            "irreversible": self.irreversible,
            "numres": self.numres,
            "container": self.container,
        }

    @property
    def scale(self) -> RateScale:
        return _PSNR if self.mode == "psnr" else _CRATIO

    @classmethod
    def availability(cls) -> Availability:
        try:
            glymur = _glymur()
        except CodecUnavailable as exc:
            return Availability(False, str(exc), _INSTALL_HINT)
        return Availability(
            True, f"glymur {glymur.__version__}, OpenJPEG {glymur.version.openjpeg_version}"
        )

    def rate_for_bpp(self, bpp: float) -> float | None:
        """``cratio = 24 / bpp`` (compression ratio against 24-bit RGB); None in PSNR mode."""
        return 24.0 / bpp if self.mode == "cratio" else None

    def encode(self, image: Image, rate: float) -> bytes:
        glymur = _glymur()
        image = check_image(image, self.name)
        layer = {"psnr": [float(rate)]} if self.mode == "psnr" else {"cratios": [float(rate)]}
        with tempfile.TemporaryDirectory(dir=_TMP_ROOT) as tmp:
            path = Path(tmp) / f"image.{self.container}"
            try:
                glymur.Jp2k(
                    str(path),
                    data=image,
                    irreversible=self.irreversible,
                    numres=self.numres,
                    **layer,
                )
            except Exception as exc:  # OpenJPEG reports failures as assorted exceptions
                raise CodecError(f"jpeg2000: OpenJPEG failed to encode: {exc}") from exc
            return path.read_bytes()

    def decode(self, data: bytes) -> Image:
        glymur = _glymur()
        suffix = "jp2" if data[4:8] == b"jP  " else "j2k"
        with tempfile.TemporaryDirectory(dir=_TMP_ROOT) as tmp:
            path = Path(tmp) / f"image.{suffix}"
            path.write_bytes(data)
            try:
                with warnings.catch_warnings():
                    # glymur warns (and may still return pixels) on malformed boxes
                    warnings.simplefilter("error")
                    decoded = glymur.Jp2k(str(path))[:]
            except Exception as exc:
                raise CodecError(f"jpeg2000: OpenJPEG failed to decode: {exc}") from exc
        if decoded.dtype != np.uint8:
            raise CodecError(f"jpeg2000: decoded {decoded.dtype} samples, expected 8-bit")
        return np.ascontiguousarray(decoded)
