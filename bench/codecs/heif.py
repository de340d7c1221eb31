"""HEVC intra coding (x265) in a HEIF container through libheif (pillow-heif).

This is the coding engine inside BPG, available wherever pillow-heif's wheel installs.
"""

from __future__ import annotations

import io

import numpy as np

from bench.codecs.base import Availability, Ceiling, Codec, Image, RateScale, check_image, choice
from bench.errors import CodecError, CodecUnavailable

_HINT = "pip install pillow-heif"
_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def _pillow_heif():
    try:
        import pillow_heif
    except ImportError as exc:
        raise CodecUnavailable(f"hevc-intra: pillow-heif is not installed; {_HINT}") from exc
    if "x265" not in pillow_heif.libheif_info().get("encoders", {}):
        raise CodecUnavailable("hevc-intra: this libheif has no x265 encoder; " + _HINT)
    return pillow_heif


class HevcIntraCodec(Codec):
    """HEVC intra (x265 through libheif), libheif quality 0-100.

    Options: ``chroma`` 420 (x265's default), 422 or 444; ``preset`` an x265 preset
    (default: libheif's). x265 runs on one worker thread so timings compare across codecs.
    """

    name = "hevc-intra"
    description = "HEVC intra / HEIF (pillow-heif / libheif + x265), quality 0-100"
    rate_scale = RateScale("quality", 0, 100, quality_rises=True)
    ceiling = Ceiling(rate=100, min_psnr_db=46.0, options={"chroma": "444"})

    def __init__(self, *, chroma: str = "420", preset: str = "") -> None:
        super().__init__()
        self.chroma = choice(chroma, ("420", "422", "444"), "chroma")
        self.preset = choice(preset, ("", *_PRESETS), "preset") if preset else ""
        self.options = {"chroma": self.chroma, "preset": self.preset}  # "" = libheif default

    @classmethod
    def availability(cls) -> Availability:
        try:
            ph = _pillow_heif()
        except CodecUnavailable as exc:
            return Availability(False, str(exc), _HINT)
        info = ph.libheif_info()
        return Availability(
            True, f"pillow-heif {ph.__version__}, libheif {info['libheif']}, {info['HEIF']}"
        )

    def encode(self, image: Image, rate: float) -> bytes:
        ph = _pillow_heif()
        image = check_image(image, self.name)
        params = {"x265:pools": "1", "x265:frame-threads": "1"}
        if self.preset:
            params["preset"] = self.preset
        buffer = io.BytesIO()
        try:
            heif = ph.from_bytes(
                mode="RGB", size=(image.shape[1], image.shape[0]), data=image.tobytes()
            )
            heif.save(buffer, quality=int(rate), chroma=self.chroma, enc_params=params, tile_size=0)
        except (RuntimeError, ValueError) as exc:
            raise CodecError(f"hevc-intra: libheif failed to encode: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> Image:
        ph = _pillow_heif()
        try:
            heif = ph.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
            decoded = np.asarray(heif)
        except (RuntimeError, ValueError, OSError) as exc:
            raise CodecError(f"hevc-intra: libheif failed to decode: {exc}") from exc
        if decoded.dtype != np.uint8 or decoded.ndim != 3:
            raise CodecError(f"hevc-intra: decoded {decoded.dtype} {decoded.shape}, expected RGB")
        return np.ascontiguousarray(decoded[..., :3])
