"""CompressAI-contract models behind the codec contract, with real entropy-coded bitstreams:
the zoo's architectures (``ZooCodec``) and users' own models (``CompressAIModelCodec``).

Weights come from the zoo's published URLs into bench's cache (checked against the SHA-256
prefix the file names carry), from torch.hub's cache when it already holds them, or from a
local file or directory (``weights=PATH``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from bench.codecs.base import Availability, RateScale, choice, flag
from bench.codecs.learned.base import (
    MAX_MEGAPIXELS,
    PAD_MULTIPLE,
    LearnedCodec,
    distributions_installed,
    load_weights,
    pad_amounts,
    read_bitstream,
    torch_availability,
    write_bitstream,
)
from bench.errors import BenchError, CodecUnavailable, UsageError

METRICS = ("mse", "ms-ssim")
_HINT = (
    "pip install compressai==1.2.8 with torch and torchvision from the package index "
    "(pip --isolated install torch==2.13.0 torchvision==0.28.0)"
)

__all__ = [
    "CompressAIModelCodec",
    "ZooCodec",
    "pad_amounts",
    "read_bitstream",
    "write_bitstream",
]


def _compressai() -> Any:
    try:
        import compressai
        import compressai.zoo
    except Exception as exc:  # ImportError, or torchvision failing to load its ops
        raise CodecUnavailable(f"CompressAI is not importable ({exc}); {_HINT}") from exc
    return compressai


def zoo_cache() -> Path:
    """Where bench keeps downloaded zoo weights: ``$BENCH_CACHE/compressai``."""
    from bench.config import cache_home

    return cache_home() / "compressai"


class ZooCodec(LearnedCodec):
    """Base of the zoo architectures: quality is the rate point, one model per quality.

    Options: ``metric`` mse or ms-ssim (the zoo trains one model set per metric); ``weights``:
    empty for the zoo's published weights (downloaded once into the cache), a checkpoint file
    in the zoo's format, a directory of them (the zoo's file names), or ``random`` (randomly
    initialised, entropy tables built: for tests of the pipeline, not of quality);
    ``download`` false to never download; ``device`` cpu, cuda or cuda:N; ``max_megapixels``
    the largest image coded (larger ones fail with a message, not an exhausted memory);
    ``batch_size`` how many same-shaped images go through the network at once.
    """

    architecture: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]] = ("torch", "compressai")
    rate_scale = RateScale("quality", 1, 8, quality_rises=True)
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    weight_options: ClassVar[tuple[str, ...]] = ("weights",)
    synthesis_module = "g_s"  # the zoo's forward returns g_s's output as x_hat, nothing more

    def __init__(
        self,
        *,
        metric: str = "mse",
        weights: str = "",
        download: bool = True,
        device: str = "cpu",
        max_megapixels: float = MAX_MEGAPIXELS,
        batch_size: int = 1,
    ) -> None:
        super().__init__(device=device, max_megapixels=max_megapixels, batch_size=batch_size)
        self.metric = choice(metric, METRICS, "metric")
        self.weights = str(weights)
        self.download = flag(download, "download")
        self.options = {
            "metric": self.metric,
            "weights": self.weights,
            "download": self.download,
            **self.options,
        }

    @classmethod
    def availability(cls) -> Availability:
        try:
            compressai = _compressai()
        except CodecUnavailable as exc:
            return Availability(False, str(exc), _HINT)
        return Availability(True, f"compressai {compressai.__version__}")

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch", "compressai", hint=_HINT)

    def model_id(self, rate: float) -> str:
        return f"{self.architecture}/{self.metric}/{int(rate)}"

    def url(self, quality: int) -> str:
        """The zoo's published URL of this architecture's weights at a quality."""
        from compressai.zoo.image import model_urls

        return str(model_urls[self.architecture][self.metric][quality])

    def checkpoint(self, quality: int) -> Path:
        """A local file with the weights for ``quality``, downloading the zoo's if need be.

        Raises:
            CodecUnavailable: no such file, or offline without a cached copy (the message
                names the file and where to put it).
        """
        url = self.url(quality)
        name = url.rsplit("/", 1)[-1]
        stem, _, tail = name.rpartition("-")
        prefix = tail.split(".", 1)[0]  # the first hex digits of the file's SHA-256
        if self.weights:
            path = Path(self.weights).expanduser()
            if path.is_file():
                return path
            found = sorted(path.glob(f"{stem}-*.pth*")) if path.is_dir() else []
            if found:
                return found[0]
            raise CodecUnavailable(
                f"{self.name}: no checkpoint {stem}-*.pth.tar in {path}; put the zoo's {name} "
                f"(from {url}) there, or pass weights=FILE"
            )
        from bench.download import digest_matches, download, sha256_of

        cached = zoo_cache() / name
        hub = _torch_hub_dir() / name
        for candidate in (cached, hub):
            if candidate.is_file() and digest_matches(sha256_of(candidate), prefix):
                return candidate
        advice = (
            f"Download {url} yourself and put it in {cached.parent} (or pass "
            f"--codec-option {self.name}.weights=DIR_OR_FILE)"
        )
        if not self.download:
            raise CodecUnavailable(f"{self.name}: no cached {name} and download=false. {advice}")
        try:
            return download(url, cached, prefix, advice=advice)
        except BenchError as exc:
            raise CodecUnavailable(f"{self.name}: {exc}") from exc

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        if self.weights == "random":
            return {"weights": "random (seeded by quality; entropy tables built)"}
        from bench.download import sha256_of

        weights = {}
        for rate in rates:
            path = self.checkpoint(int(rate))
            weights[str(int(rate))] = {"file": str(path), "sha256": sha256_of(path)}
        return {"weights": weights}

    def load_model(self, rate: float) -> Any:
        import torch

        quality = int(rate)
        compressai = _compressai()
        builder = getattr(compressai.zoo, self.architecture.replace("-", "_"))
        if self.weights == "random":
            torch.manual_seed(quality)
            return builder(quality=quality, metric=self.metric, pretrained=False)
        model = builder(quality=quality, metric=self.metric, pretrained=False)
        load_weights(
            model,
            self.checkpoint(quality),
            f"{self.architecture} (quality {quality})",
            convert=compressai.zoo.load_state_dict,  # the zoo's older tensor names
        )
        return model


def _torch_hub_dir() -> Path:
    """torch.hub's checkpoint cache, where CompressAI's own ``pretrained=True`` saves."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _zoo_codec(
    architecture: str, qualities: int = 8, *, channels_last: bool = False
) -> type[ZooCodec]:
    """A zoo architecture's codec class; ``channels_last`` where its reconstructions were
    checked equal to CompressAI's default layout (tests/test_compressai.py)."""
    return type(
        architecture.replace("-", "_").title().replace("_", "") + "Codec",
        (ZooCodec,),
        {
            "name": architecture,
            "architecture": architecture,
            "description": f"CompressAI zoo {architecture}, quality 1-{qualities}",
            "rate_scale": RateScale("quality", 1, qualities, quality_rises=True),
            "default_rates": tuple(float(q) for q in range(1, qualities + 1)),
            "channels_last": channels_last,
            "__module__": __name__,
        },
    )


# Convolutions and GDN: channels-last (oneDNN) decodes the same pixels, faster. cheng2020-attn's
# reconstructions move by a level in some pixels with it; the autoregressive models are left as
# they are.
Bmshj2018FactorizedCodec = _zoo_codec("bmshj2018-factorized", channels_last=True)
Bmshj2018HyperpriorCodec = _zoo_codec("bmshj2018-hyperprior", channels_last=True)
Mbt2018MeanCodec = _zoo_codec("mbt2018-mean", channels_last=True)
Mbt2018Codec = _zoo_codec("mbt2018")
Cheng2020AnchorCodec = _zoo_codec("cheng2020-anchor", 6)
Cheng2020AttnCodec = _zoo_codec("cheng2020-attn", 6)


class CompressAIModelCodec(LearnedCodec):
    """Your own model with CompressAI's contract, named by import path plus checkpoint.

    Options:
        model: ``package.module:callable`` returning the ``nn.Module`` (a class or a
            factory); called with ``quality=RATE`` when it accepts a ``quality`` argument.
        checkpoint: the weights, a path (``{rate}`` is replaced by the rate point, e.g.
            ``ckpt/q{rate}.pth``), or an http(s) URL with ``checkpoint_sha256``; loaded with
            ``weights_only=True`` and strictly (a mismatch names the tensors); ``random`` keeps
            the model's initial weights (a pipeline check, not a codec).
        checkpoint_sha256: expected SHA-256 of the checkpoint (required for URLs).
        quality_rises: whether a larger rate point means more bits (default true).
        pad_multiple: the model's total down-sampling factor (default 64).
        device, max_megapixels, batch_size: as for the zoo codecs.
    """

    name = "compressai-model"
    description = "your model with CompressAI's compress/decompress, by import path + checkpoint"
    rate_scale = RateScale("quality", 0, 1000, quality_rises=True)
    contract_options: ClassVar[dict[str, Any]] = {
        "model": "compressai.zoo:bmshj2018_factorized",
        "checkpoint": "random",
    }
    contract_rates: ClassVar[tuple[float, ...]] = (1.0, 3.0)
    libraries: ClassVar[tuple[str, ...]] = ("torch", "compressai")
    """Rate points for the contract tests (a user's model has no default sweep)."""
    weight_options: ClassVar[tuple[str, ...]] = ("checkpoint", "checkpoint_sha256")

    def __init__(
        self,
        *,
        model: str = "",
        checkpoint: str = "",
        checkpoint_sha256: str = "",
        quality_rises: bool = True,
        pad_multiple: int = PAD_MULTIPLE,
        device: str = "cpu",
        max_megapixels: float = MAX_MEGAPIXELS,
        batch_size: int = 1,
    ) -> None:
        super().__init__(device=device, max_megapixels=max_megapixels, batch_size=batch_size)
        if int(pad_multiple) < 1:
            raise ValueError(f"pad_multiple must be positive, got {pad_multiple}")
        self.target = model
        self.checkpoint = str(checkpoint)
        self.checkpoint_sha256 = str(checkpoint_sha256)
        self.quality_rises = flag(quality_rises, "quality_rises")
        self.pad_multiple = int(pad_multiple)  # type: ignore[misc]
        self.options.update(
            model=model,
            checkpoint=self.checkpoint,
            checkpoint_sha256=self.checkpoint_sha256,
            quality_rises=self.quality_rises,
            pad_multiple=self.pad_multiple,
        )

    @property
    def scale(self) -> RateScale:
        return RateScale("quality", 0, 1000, quality_rises=self.quality_rises)

    @classmethod
    def availability(cls) -> Availability:
        return torch_availability()

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch")

    def model_id(self, rate: float) -> str:
        return f"{self.target}/{rate:g}"

    def _checkpoint_path(self, rate: float) -> Path:
        from bench.checkpoints import resolve_checkpoint

        spec = self.checkpoint.replace("{rate}", f"{rate:g}")
        try:
            return resolve_checkpoint(spec, self.checkpoint_sha256)
        except BenchError as exc:
            raise CodecUnavailable(f"{self.name}: {exc}") from exc

    def _require_options(self) -> None:
        if not self.target or ":" not in self.target:
            raise UsageError(
                f"{self.name}: --codec-option {self.name}.model=package.module:callable is "
                "required (the class or factory of your model)"
            )
        if not self.checkpoint:
            raise UsageError(
                f"{self.name}: --codec-option {self.name}.checkpoint=PATH is required (a file, "
                "a pattern with {rate}, a URL with checkpoint_sha256, or random)"
            )

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        self._require_options()
        if self.checkpoint == "random":
            return {"weights": "random (the model's initial weights)"}
        from bench.download import sha256_of

        weights = {}
        for rate in rates:
            path = self._checkpoint_path(rate)
            weights[f"{rate:g}"] = {"file": str(path), "sha256": sha256_of(path)}
        return {"weights": weights}

    def load_model(self, rate: float) -> Any:
        from bench.registry import import_target

        self._require_options()
        try:
            factory = import_target(self.target)
        except (ImportError, AttributeError) as exc:
            raise CodecUnavailable(
                f"{self.name}: cannot import model {self.target}: {exc}"
            ) from exc
        try:
            accepts_quality = "quality" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            accepts_quality = False
        model = factory(quality=int(rate)) if accepts_quality else factory()
        for method in ("compress", "decompress", "update"):
            if not callable(getattr(model, method, None)):
                raise CodecUnavailable(
                    f"{self.name}: {self.target} made a {type(model).__name__} without "
                    f"{method}(); bench needs CompressAI's compress/decompress/update contract"
                )
        if self.checkpoint != "random":
            load_weights(model, self._checkpoint_path(rate), self.target)
        return model
