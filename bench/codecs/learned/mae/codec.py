"""The modulated autoencoder behind bench's codec contract; see ``bench.codecs.learned.mae``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.codecs.base import (
    TRAINING_FILES,
    Availability,
    Bitstream,
    Codec,
    Image,
    RateScale,
    check_image,
)
from bench.codecs.learned.base import (
    TORCH_HINT,
    check_size,
    checkpoints_by_rate,
    compressai_availability,
    describe_weights,
    distributions_installed,
    synchronize,
    trained_weights,
    weights_identity,
)
from bench.codecs.learned.mae.bitstream import (
    HEADER_BYTES,
    MaeHeader,
    read_mae_bitstream,
    write_mae_bitstream,
)
from bench.codecs.learned.mae.checkpoint import (
    TRAIN_COMMAND,
    load_mae_checkpoint,
    mae_config_of,
    read_mae_checkpoint,
)
from bench.errors import CodecError
from bench.weights import WeightsError, training_record

if TYPE_CHECKING:
    from bench.codecs.learned.mae.model import MaeConfig, MaeNetwork

MAX_MEGAPIXELS = 16.0
RANDOM_N, RANDOM_HIDDEN = 16, 8
"""Width of the seeded stand-in (``weights=random``; pipeline tests only)."""


class MaeCodec(Codec):
    """The variable-rate modulated autoencoder (Yang et al. 2020): one network for every
    trained lambda, or the single-rate baseline (one lambda) that ``bench train mae
    --single-lambda`` makes. The rate point is lambda (the loss's bpp + lambda * MSE, MSE on
    [0, 1]); a model with one entropy model per lambda codes only its trained lambda values
    (``rate_points``), one with a shared entropy model any lambda in 1..65536.

    Options:
        weights: a ``bench-mae-1`` checkpoint (``bench train mae``); a directory of single-rate
            checkpoints (``bench train mae --single-lambda L``, one per lambda), which codes
            each lambda with the model trained for it, so N independent models are one curve;
            ``random`` for a seeded narrow stand-in with the paper's lambda set (pipeline tests
            only).
        shared_entropy_model: for ``weights=random`` only: the stand-in's entropy-model layout.
        device, max_megapixels: where to run and the largest image coded in one pass.
    """

    name = "mae"
    description = "Variable-rate modulated autoencoder (Yang et al. 2020), rate = lambda"
    rate_scale = RateScale("lambda", 1.0, 65536.0, quality_rises=True, integer=False)
    ceiling = None
    default_rates = (64.0, 256.0, 1024.0, 4096.0)
    weight_options: ClassVar[tuple[str, ...]] = ("weights",)
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    contract_rates: ClassVar[tuple[float, ...]] = (64.0, 4096.0)

    def __init__(
        self,
        *,
        weights: str = "",
        shared_entropy_model: bool = False,
        device: str = "cpu",
        max_megapixels: float = MAX_MEGAPIXELS,
    ) -> None:
        super().__init__()
        self.weights = str(weights)
        self.shared = str(shared_entropy_model).lower() in ("1", "true", "yes")
        if self.shared and self.weights != "random":
            raise ValueError(
                "shared_entropy_model is set by training (bench train mae "
                "--shared-entropy-model); as a codec option it only shapes weights=random"
            )
        self.device = str(device)
        if self.device != "cpu":
            from bench.tasks.base import resolve_device

            self.device = resolve_device(self.device)
        self.max_megapixels = float(max_megapixels)
        self._checkpoints: dict[float | None, Path] | None = None
        self._networks: dict[Path | None, tuple[MaeConfig, MaeNetwork, bytes]] = {}
        self.options = {
            "weights": self.weights,
            "shared_entropy_model": self.shared,
            "device": self.device,
            "max_megapixels": self.max_megapixels,
        }

    @classmethod
    def availability(cls) -> Availability:
        return compressai_availability()

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch", "compressai", hint=TORCH_HINT)

    def _sources(self) -> dict[float | None, Path]:
        """The checkpoint of each lambda: ``{None: file}`` for one checkpoint (it serves every
        lambda it knows), ``{lambda: file}`` for a directory of single-rate checkpoints."""
        if self._checkpoints is None:
            path = self._path()
            self._checkpoints = single_rate_members(path) if path.is_dir() else {None: path}
        return self._checkpoints

    def _config(self) -> MaeConfig:
        from bench.codecs.learned.mae.model import MaeConfig

        if self.weights == "random":
            return MaeConfig(
                n=RANDOM_N, hidden=RANDOM_HIDDEN, shared_entropy_model=self.shared, preset="custom"
            )
        path = self._sources()[None]
        return mae_config_of(read_mae_checkpoint(path, mmap=True), path)

    def _path(self) -> Path:
        return trained_weights(self.name, self.weights, TRAIN_COMMAND, form="CHECKPOINT")

    def network(self, lam: float | None = None) -> tuple[MaeConfig, MaeNetwork, bytes]:
        """The config, the network (eval mode, entropy tables built) and its identity, of the
        model that codes lambda ``lam`` (the one model where ``weights`` names one)."""
        import torch

        from bench.codecs.learned.mae.model import MaeNetwork

        if self.weights == "random":
            key: Path | None = None
        else:
            sources = self._sources()
            key = sources.get(None)
            if key is None:
                key = sources.get(float(np.float32(lam))) if lam is not None else None
                if key is None:
                    trained = ",".join(f"{v:g}" for v in sorted(k for k in sources if k))
                    raise CodecError(f"{self.name}: {self.weights} has single-rate models for "
                                     f"lambda {trained}, none for {lam}")  # fmt: skip
        if key not in self._networks:
            if key is None:
                config = self._config()
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = MaeNetwork(config)
            else:
                config, model = load_mae_checkpoint(key)
            model = model.eval().to(self.device)
            model.update(force=True)
            self._networks[key] = (config, model, weights_identity(model))
        return self._networks[key]

    def rate_points(self) -> tuple[float, ...] | None:
        if self.weights != "random" and None not in self._sources():
            return tuple(sorted(float(lam) for lam in self._sources() if lam is not None))
        config = self._config()
        if config.entropy_models == 1 and config.modulated:
            return None
        return config.lambdas

    def _lambda(self, rate: float) -> tuple[float, int, tuple[MaeConfig, MaeNetwork, bytes]]:
        """Lambda as coded (float32), its entropy model's index and the network coding it."""
        lam = float(np.float32(self.scale.validate(rate, self.name)))
        network = self.network(lam)
        config, model, _ = network
        if not config.modulated and lam != float(np.float32(config.lambdas[0])):
            raise CodecError(
                f"{self.name}: a single-rate model trained for lambda {config.lambdas[0]:g} "
                f"cannot code at lambda {lam:g}"
            )
        try:
            return lam, model.entropy_index(lam), network
        except ValueError as exc:
            raise CodecError(f"{self.name}: {exc}") from None

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        for rate in rates:
            self._lambda(rate)
        if self.weights == "random":
            config, _, _ = self.network()
            return {
                "weights": f"random (seeded stand-in, {config.describe()}; pipeline tests only)"
            }
        sources = self._sources()
        described = {
            ("" if lam is None else f"{lam:g}"): _describe_weights(path)
            for lam, path in sources.items()
        }
        files = sorted({f for entry in described.values() for f in entry.pop(TRAINING_FILES)})
        weights: dict[str, Any] = described.get("") or described
        return {"weights": weights, TRAINING_FILES: files}

    def encode(self, image: Image, rate: float) -> bytes:
        import torch

        from bench.codecs.learned.mae.model import pad_replicate

        image = check_image(image, self.name)
        height, width = image.shape[:2]
        check_size(self.name, height, width, self.max_megapixels)
        lam, index, (_, model, identity) = self._lambda(rate)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255.0)
        x, padding = pad_replicate(x.to(self.device))
        with torch.inference_mode():
            strings, latent = model.compress(x, lam)
            likelihoods = model(x, lam)["likelihoods"]["y"]
            bits = float(-torch.log2(likelihoods.double()).sum())
        synchronize(self.device)
        header = MaeHeader(identity, height, width, padding, index, lam, latent)
        data = write_mae_bitstream(header, strings[0])
        info = {
            "bpp_estimated": bits / (height * width),
            "header_bytes": HEADER_BYTES,
            "padding": ",".join(str(p) for p in padding),
        }
        return Bitstream(data, info)

    def decode(self, data: bytes) -> Image:
        import torch

        header, string = read_mae_bitstream(bytes(data))
        lam, index, (_, model, identity) = self._lambda(header.lam)
        if header.identity != identity:
            raise CodecError(f"{self.name}: the bitstream was made by other weights than "
                             f"{self.weights}")  # fmt: skip
        if index != header.entropy_index:
            raise CodecError(f"{self.name}: bitstream names entropy model {header.entropy_index} "
                             f"for lambda {lam:g}, these weights {index}")  # fmt: skip
        try:
            with torch.inference_mode():
                x_hat = model.decompress([string], header.latent, lam)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise CodecError(f"{self.name}: cannot decompress: {exc}") from exc
        top, _, left, _ = header.padding
        x_hat = x_hat[0, :, top : top + header.height, left : left + header.width]
        pixels = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
        synchronize(self.device)
        return np.ascontiguousarray(pixels.cpu().numpy())


def single_rate_members(directory: Path) -> dict[float | None, Path]:
    """The single-rate checkpoints (``*.pt``) of a directory by their lambda.

    Raises:
        WeightsError: none there, an unreadable or modulated checkpoint, or two for one lambda
            (each named).
    """

    def lambda_of(path: Path) -> float:
        config = mae_config_of(read_mae_checkpoint(path, mmap=True), path)
        if config.modulated:
            raise WeightsError(
                f"{path}: a modulated model; a weights directory holds single-rate models "
                f"(bench train mae --single-lambda L). Pass a modulated checkpoint as "
                f"weights={path}"
            )
        return config.lambdas[0]

    make = f"bench train mae --single-lambda L --out {directory}/L.pt"
    found = checkpoints_by_rate(directory, lambda_of, what="single-rate MAE", make=make)
    return {float(lam): path for lam, path in found.items()}


def _describe_weights(path: Path) -> dict[str, Any]:
    checkpoint = read_mae_checkpoint(path, mmap=True)
    return describe_weights(path, mae_config_of(checkpoint, path), training_record(checkpoint))


__all__ = ["MaeCodec", "single_rate_members"]
