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
    compressai_availability,
    distributions_installed,
    synchronize,
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
from bench.errors import CodecError, CodecUnavailable
from bench.weights import training_record

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
        weights: a ``bench-mae-1`` checkpoint (``bench train mae``); ``random`` for a seeded
            narrow stand-in with the paper's lambda set (pipeline tests only).
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
        self._network: tuple[MaeConfig, MaeNetwork, bytes] | None = None
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

    def _config(self) -> MaeConfig:
        from bench.codecs.learned.mae.model import MaeConfig

        if self.weights == "random":
            return MaeConfig(
                n=RANDOM_N, hidden=RANDOM_HIDDEN, shared_entropy_model=self.shared, preset="custom"
            )
        path = self._path()
        return mae_config_of(read_mae_checkpoint(path, mmap=True), path)

    def _path(self) -> Path:
        if not self.weights:
            raise CodecUnavailable(
                f"{self.name}: no weights; train them ({TRAIN_COMMAND}) and pass "
                f"--codec-option {self.name}.weights=CHECKPOINT"
            )
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise CodecUnavailable(f"{self.name}: weights {path} do not exist ({TRAIN_COMMAND})")
        return path

    def network(self) -> tuple[MaeConfig, MaeNetwork, bytes]:
        """The config, the network (eval mode, entropy tables built) and its identity."""
        if self._network is None:
            import torch

            from bench.codecs.learned.mae.model import MaeNetwork

            if self.weights == "random":
                config = self._config()
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = MaeNetwork(config)
            else:
                config, model = load_mae_checkpoint(self._path())
            model = model.eval().to(self.device)
            model.update(force=True)
            self._network = (config, model, weights_identity(model))
        return self._network

    def rate_points(self) -> tuple[float, ...] | None:
        config = self._config()
        if config.entropy_models == 1 and config.modulated:
            return None
        return config.lambdas

    def _lambda(self, rate: float) -> tuple[float, int]:
        lam = float(np.float32(self.scale.validate(rate, self.name)))
        config, model, _ = self.network()
        if not config.modulated and lam != float(np.float32(config.lambdas[0])):
            raise CodecError(
                f"{self.name}: a single-rate model trained for lambda {config.lambdas[0]:g} "
                f"cannot code at lambda {lam:g}"
            )
        try:
            return lam, model.entropy_index(lam)
        except ValueError as exc:
            raise CodecError(f"{self.name}: {exc}") from None

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        for rate in rates:
            self._lambda(rate)
        config, _, _ = self.network()
        if self.weights == "random":
            return {
                "weights": f"random (seeded stand-in, {config.describe()}; pipeline tests only)"
            }
        from bench.download import sha256_of

        path = self._path()
        checkpoint = read_mae_checkpoint(path, mmap=True)
        training = training_record(checkpoint)
        files = sorted({str(i["file_sha256"]) for i in training.get("images", [])
                        if i.get("file_sha256")})  # fmt: skip
        return {
            "weights": {
                "file": str(path),
                "sha256": sha256_of(path),
                "config": config.to_dict(),
                "size": config.describe(),
                "note": "unverified: trained by bench",
                "training": {k: v for k, v in training.items() if k != "images"},
                "training_images": len(training.get("images", [])),
            },
            TRAINING_FILES: files,
        }

    def encode(self, image: Image, rate: float) -> bytes:
        import torch

        from bench.codecs.learned.mae.model import pad_replicate

        image = check_image(image, self.name)
        height, width = image.shape[:2]
        check_size(self.name, height, width, self.max_megapixels)
        lam, index = self._lambda(rate)
        _, model, identity = self.network()
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
        _, model, identity = self.network()
        if header.identity != identity:
            raise CodecError(f"{self.name}: the bitstream was made by other weights than "
                             f"{self.weights}")  # fmt: skip
        lam, index = self._lambda(header.lam)
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


__all__ = ["MaeCodec"]
