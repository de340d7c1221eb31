"""Codecs by name: built-ins and plugins of the ``bench.codecs`` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping

from bench.codecs.base import (
    Availability,
    Ceiling,
    Codec,
    Image,
    OptionValue,
    RateScale,
    instantiate,
)
from bench.config import codec_defaults
from bench.errors import BenchError, UsageError
from bench.registry import Registry

CODECS: Registry[Codec] = Registry("codecs", "bench.codecs")
CODECS.add("none", "bench.codecs.raw:NoneCodec")
CODECS.add("jpeg", "bench.codecs.pillow_codecs:JpegCodec", "pip install pillow")
CODECS.add("webp", "bench.codecs.pillow_codecs:WebpCodec", "pip install pillow")
CODECS.add("jpeg2000", "bench.codecs.jpeg2000:Jpeg2000Codec", "pip install glymur")
CODECS.add("bpg", "bench.codecs.bpg:BpgCodec")
CODECS.add("avif", "bench.codecs.imagecodecs_codecs:AvifCodec", "pip install imagecodecs")
CODECS.add("jpegxl", "bench.codecs.imagecodecs_codecs:JpegXlCodec", "pip install imagecodecs")
CODECS.add("hevc-intra", "bench.codecs.heif:HevcIntraCodec", "pip install pillow-heif")
for _name, _cls in (
    ("bmshj2018-factorized", "Bmshj2018FactorizedCodec"),
    ("bmshj2018-hyperprior", "Bmshj2018HyperpriorCodec"),
    ("mbt2018-mean", "Mbt2018MeanCodec"),
    ("mbt2018", "Mbt2018Codec"),
    ("cheng2020-anchor", "Cheng2020AnchorCodec"),
    ("cheng2020-attn", "Cheng2020AttnCodec"),
):
    CODECS.add(_name, f"bench.codecs.learned.compressai_codecs:{_cls}", "pip install compressai")
CODECS.add(
    "compressai-model",
    "bench.codecs.learned.compressai_codecs:CompressAIModelCodec",
    "pip install torch",
)
CODECS.add("gan", "bench.codecs.learned.gan.codec:GanCodec", "pip install torch")
CODECS.add("tic-hp", "bench.codecs.learned.tic.codec:TicHpCodec", "pip install compressai")
CODECS.add("tic", "bench.codecs.learned.tic.codec:TicCodec", "pip install compressai")
CODECS.add("mae", "bench.codecs.learned.mae.codec:MaeCodec", "pip install compressai")
CODECS.add("impmap", "bench.codecs.learned.impmap.codec:ImpMapCodec", "pip install torch numba")
CODECS.add("gdae", "bench.codecs.learned.gdae.codec:GdaeCodec", "pip install torch")


def create_codec(name: str, options: Mapping[str, OptionValue] | None = None) -> Codec:
    """Instantiate a registered codec with keyword options."""
    return instantiate(CODECS.load(name), options or {})


def default_rates(codec: Codec) -> list[float]:
    """A codec's default sweep: ``bench/codecs/defaults.toml``, else its ``default_rates``,
    else (a codec of trained models, one per rate point) the rate points its weights have."""
    configured = codec_defaults().get(codec.name, {}).get("rates")
    rates = configured if configured is not None else list(codec.default_rates)
    why = ""
    if not rates:
        try:
            rates = list(codec.rate_points() or ())
        except BenchError as exc:
            why = f" ({exc})"
    if not rates:
        raise UsageError(
            f"{codec.name}: no default rates; pass --rates {codec.name}=v1,v2,...{why}"
        )
    return [float(r) for r in rates]


__all__ = [
    "CODECS",
    "Availability",
    "Ceiling",
    "Codec",
    "Image",
    "RateScale",
    "create_codec",
    "default_rates",
]
