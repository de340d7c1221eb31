"""The codec contract: ``encode(image, rate) -> bytes`` and ``decode(bytes) -> image``."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from bench.errors import CodecError, UsageError
from bench.registry import construct, keyword_options
from bench.types import TRAINING_FILES as TRAINING_FILES  # re-exported: codecs read it here
from bench.types import Availability, Image, Latent, OptionValue

CodecInputs = Mapping[str, npt.NDArray[Any]]
"""Per-image inputs besides the image, by name (e.g. ``quality_map``: (H, W) float32 in 0..1)."""


def weight_digests(provenance: Mapping[str, Any]) -> dict[str, str]:
    """The SHA-256 of the weight files a learned codec's ``prepare`` reported, by rate point
    label (``f"{rate:g}"``), or under ``""`` for one file that serves every rate point; empty
    for codecs without weight files (classical ones, ``random`` stand-ins).

    ``prepare`` reports ``{"weights": {"file": ..., "sha256": ...}}`` for one file and
    ``{"weights": {"0.0625": {"file": ..., "sha256": ...}, ...}}`` for one per rate point (a
    rate point without a checkpoint has ``{"missing": ...}`` instead and no digest).
    """
    weights = provenance.get("weights")
    if not isinstance(weights, Mapping):
        return {}
    if isinstance(weights.get("sha256"), str):
        return {"": str(weights["sha256"])}
    return {
        str(label): str(entry["sha256"])
        for label, entry in weights.items()
        if isinstance(entry, Mapping) and isinstance(entry.get("sha256"), str)
    }


class Bitstream(bytes):
    """The bytes of an encoded image, with what the encoder measured beyond them.

    ``info`` entries named like record columns (``bpp_estimated``, ``header_bytes``,
    ``padding``) are copied into the record. Plain ``bytes`` are a Bitstream without info.

    >>> data = Bitstream(b"abc", {"header_bytes": 1})
    >>> len(data), data.info["header_bytes"], data == b"abc"
    (3, 1, True)
    """

    info: Mapping[str, Any]

    def __new__(cls, data: bytes, info: Mapping[str, Any] | None = None) -> Bitstream:
        made = super().__new__(cls, data)
        made.info = dict(info or {})
        return made


def bitstream_info(data: bytes | bytearray) -> Mapping[str, Any]:
    """What an encoder measured beyond the bytes (empty for plain bytes)."""
    return getattr(data, "info", {})


@dataclass(frozen=True)
class RateScale:
    """The parameter that sets a codec's rate, its range and its direction.

    Attributes:
        name: the codec's own name for it ("quality", "qp", "cratio", "distance").
        low, high: the accepted closed range.
        quality_rises: True when a larger value gives higher quality and more bits
            (JPEG quality); False when it gives lower quality (BPG's QP, a compression ratio).
        integer: whether only whole values are meaningful.
    """

    name: str
    low: float
    high: float
    quality_rises: bool
    integer: bool = True

    def validate(self, value: float, codec: str) -> float:
        """Return ``value`` checked against the range (and integrality) or raise UsageError."""
        if not self.low <= value <= self.high:
            raise UsageError(
                f"{codec}: {self.name} {value:g} is outside {self.low:g}..{self.high:g}"
            )
        if self.integer and value != int(value):
            raise UsageError(f"{codec}: {self.name} must be a whole number, got {value:g}")
        return float(value)

    def by_quality(self, values: Iterable[float]) -> list[float]:
        """Sort rate values from the lowest quality to the highest."""
        return sorted(values, reverse=not self.quality_rises)


@dataclass(frozen=True)
class Ceiling:
    """A near-lossless setting and the PSNR it must reach on a natural image.

    Used by the contract test: a codec that misses its ceiling has a rounding or colour
    conversion error somewhere in its path.
    """

    rate: float
    min_psnr_db: float
    options: Mapping[str, OptionValue] = field(default_factory=dict)


class Codec(abc.ABC):
    """Base class of every codec.

    Subclasses take their options as keyword-only constructor arguments with defaults, set
    ``name``, ``rate_scale`` and ``ceiling``, and implement ``encode`` and ``decode``. The
    bytes returned by ``encode`` must be everything a receiver needs: bpp is computed from
    their length alone.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    rate_scale: ClassVar[RateScale]
    ceiling: ClassVar[Ceiling | None]
    """A near-lossless setting for the contract test; None where there is none (learned codecs)."""
    contract_options: ClassVar[Mapping[str, OptionValue]] = {}
    """Options that let the contract tests run without external files (e.g. stand-in weights);
    when set, the tests check the mechanics only, not quality."""
    default_rates: ClassVar[tuple[float, ...]] = ()
    """Fallback sweep for plugins; built-ins take theirs from ``bench/codecs/defaults.toml``."""

    weight_options: ClassVar[tuple[str, ...]] = ()
    """Options that name weight files (``weights``, ``checkpoint``): a record's
    ``codec_identity`` has the SHA-256 of the file coding its rate point in their place, so
    that records are told apart by the weights' content, never by their path."""

    libraries: ClassVar[tuple[str, ...]] = ()
    """Modules that coding with this codec imports and that take long to import (``torch``,
    ``compressai``): a local pool imports them once, in the process its workers are forked
    from, instead of once in every worker."""

    inputs: ClassVar[tuple[str, ...]] = ()
    """Names of the per-image inputs the codec takes besides the image (``quality_map``);
    the runner builds them from ``input_source()`` and calls ``encode_with``."""

    def __init__(self) -> None:
        self.options: dict[str, OptionValue] = {}
        """The options in effect, as keyword arguments that recreate this codec."""

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> Availability:
        """Whether the codec can run here, and how to make it so if not."""

    @classmethod
    def installed(cls) -> Availability:
        """What ``bench list codecs`` shows: whether the codec's libraries are installed,
        decided without importing heavy ones (a codec on torch checks the package metadata;
        ``availability`` imports them when a run starts). Default: ``availability``."""
        return cls.availability()

    @property
    def scale(self) -> RateScale:
        """The rate scale of this instance (options may change it, e.g. JPEG 2000 in dB)."""
        return self.rate_scale

    def library_version(self) -> str:
        """The name and version of the library or binary that does the coding."""
        return self.availability().detail

    def side_images(self, image: Image, rate: float) -> dict[str, Image]:
        """Pictures of what the encoder decided for ``image`` at ``rate`` (an importance map,
        a quality map), by caption: RGB uint8 arrays of the image's size, which the report
        shows beside the reconstruction. Default: none."""
        return {}

    def rate_points(self) -> tuple[float, ...] | None:
        """The only rate values the codec can code at, when they are a finite set (a learned
        codec's checkpoints); None when any value of its scale is allowed. A target-bpp search
        visits only these."""
        return None

    def rate_for_bpp(self, bpp: float) -> float | None:
        """The rate value the codec's own rate control gives for a bpp target, if it has one
        (the target-bpp search probes it first); None otherwise."""
        return None

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        """Get ready to code at ``rates`` before a run starts (e.g. fetch model weights) and
        return what the run manifest should record about it (e.g. checkpoint hashes).

        Raises:
            CodecUnavailable: something the codec needs for these rates is missing.
        """
        return {}

    @abc.abstractmethod
    def encode(self, image: Image, rate: float) -> bytes:
        """Encode an (H, W, 3) uint8 RGB image at a rate point into a self-contained bitstream
        (``bytes``, or a ``Bitstream`` carrying what the encoder measured beyond them)."""

    def input_source(self) -> Any:
        """Where the runner takes this codec's per-image inputs from (a
        ``bench.codecs.inputs.QualityMapSource``); only for codecs with ``inputs``."""
        from bench.codecs.inputs import QualityMapSource

        return QualityMapSource.uniform()

    def encode_with(self, image: Image, rate: float, inputs: CodecInputs) -> bytes:
        """Encode with per-image inputs; codecs that declare ``inputs`` override this, and
        whatever their decoder needs of the inputs travels in the bitstream."""
        if inputs:
            raise CodecError(f"{self.name} takes no input besides the image, got {sorted(inputs)}")
        return self.encode(image, rate)

    @abc.abstractmethod
    def decode(self, data: bytes) -> Image:
        """Decode a bitstream made by ``encode`` back to an (H, W, 3) uint8 RGB image."""

    batch_size: int = 1
    """How many same-shaped images the runner hands ``encode_batch`` at once (1: one by one)."""

    def encode_batch(self, images: Sequence[Image], rate: float) -> list[bytes]:
        """Encode same-shaped images at one rate point, each into its self-contained
        bitstream. Codecs that gain from batches (a network on a GPU) override this; the
        bitstreams must decode one by one with ``decode``."""
        return [self.encode(image, rate) for image in images]

    def decode_batch(self, streams: Sequence[bytes]) -> list[Image]:
        """Decode bitstreams made by ``encode_batch`` (same shape and rate point)."""
        return [self.decode(data) for data in streams]

    has_latent: ClassVar[bool] = False
    """Whether ``decode_latent`` gives the quantised latent of the codec's bitstreams."""

    def decode_latent(self, data: bytes) -> Latent:
        """The quantised latent of a bitstream made by ``encode``: entropy decoding only, no
        synthesis transform. Learned codecs whose latent is a natural input (``has_latent``)
        override this.

        Raises:
            CodecError: the codec has no such latent.
        """
        raise CodecError(
            f"{self.name} does not give its latent from a bitstream; latent tasks need a codec "
            "with has_latent (tic, tic-hp)"
        )


def check_image(image: Image, codec: str) -> Image:
    """Return ``image`` as a C-contiguous (H, W, 3) uint8 array or raise CodecError."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CodecError(
            f"{codec}: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)


def option_names(cls: type[Codec]) -> list[str]:
    """The keyword options a codec class accepts."""
    return keyword_options(cls)


def instantiate(cls: type[Codec], options: Mapping[str, OptionValue]) -> Codec:
    """Create a codec from keyword options, naming the accepted ones when one is unknown."""
    return construct(cls, options, cls.name)


def flag(value: Any, option: str) -> bool:
    """A boolean option: True/False, or their spellings on a command line (true/false, yes/no,
    on/off, 1/0); anything else is a ValueError naming the option (a usage error).

    >>> flag("off", "optimize"), flag(True, "optimize")
    (False, True)
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"option {option}={value!r} must be true or false")


def choice(value: Any, allowed: Iterable[Any], option: str) -> Any:
    """Return ``value`` if it is one of ``allowed`` (compared as strings) or raise ValueError."""
    allowed = list(allowed)
    for candidate in allowed:
        if str(value) == str(candidate):
            return candidate
    raise ValueError(f"option {option}={value!r} must be one of {', '.join(map(str, allowed))}")
