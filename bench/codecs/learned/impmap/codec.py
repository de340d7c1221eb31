"""The importance-map autoencoder behind bench's codec contract; see
``bench.codecs.learned.impmap``."""

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
    checkpoints_at,
    describe_weights,
    distributions_installed,
    synchronize,
    torch_availability,
    trained_weights,
    weights_identity,
)
from bench.codecs.learned.impmap.bitstream import (
    HEADER_BYTES,
    ImpMapHeader,
    read_impmap_bitstream,
    write_impmap_bitstream,
)
from bench.codecs.learned.impmap.checkpoint import (
    TRAIN_COMMAND,
    impmap_config_of,
    lambda_of,
    load_impmap_checkpoint,
    read_impmap_checkpoint,
)
from bench.errors import CodecError
from bench.weights import training_record

if TYPE_CHECKING:
    from bench.codecs.learned.impmap.model import ImpMapConfig, ImpMapNetwork

MAX_MEGAPIXELS = 16.0
BLOCK = 4
"""The bit-plane coder's block side (the paper's Table 1: 4 x 4)."""
Loaded = tuple["ImpMapConfig", "ImpMapNetwork", bytes]
RANDOM_SIZE: dict[str, int] = {
    "n": 16, "groups": 0, "blocks_per_group": 1, "importance_width": 8, "importance_blocks": 1,
}  # fmt: skip
"""Size of the seeded stand-in (``weights=random``; pipeline tests only)."""


class ImpMapCodec(Codec):
    """The importance-map autoencoder (Alexandre et al., CLIC 2018): an encoder to 16 maps in
    [0, 1] at 1/8 resolution, a 4-bit quantiser, an importance network that keeps 1..4 most
    significant bits of each index, a bit-plane context-adaptive binary arithmetic coder.

    One checkpoint is one trade-off: the rate point is the lambda it was trained for (loss
    D + lambda * R with R the importance maps' sum in bits per pixel; a larger lambda gives
    fewer bits). ``weights`` names one checkpoint or a directory of them (one per lambda),
    whose lambda values are the codec's rate points (and its default sweep); ``--target-bpp``
    searches per image over them.

    Options:
        weights: a ``bench-impmap-1`` checkpoint (``bench train impmap``) or a directory of
            them; ``random`` for a seeded narrow stand-in that codes any lambda alike
            (pipeline tests only).
        device, max_megapixels: where to run and the largest image coded in one pass.
    """

    name = "impmap"
    description = "Importance-map autoencoder (Alexandre et al., CLIC 2018), rate = lambda"
    rate_scale = RateScale("lambda", 1e-3, 1e6, quality_rises=False, integer=False)
    ceiling = None
    default_rates = ()
    """The trained lambda values of the weights (``rate_points``)."""
    weight_options: ClassVar[tuple[str, ...]] = ("weights",)
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    contract_rates: ClassVar[tuple[float, ...]] = (100.0,)

    def __init__(
        self, *, weights: str = "", device: str = "cpu", max_megapixels: float = MAX_MEGAPIXELS
    ) -> None:
        super().__init__()
        self.weights = str(weights)
        self.device = str(device)
        if self.device != "cpu":
            from bench.tasks.base import resolve_device

            self.device = resolve_device(self.device)
        self.max_megapixels = float(max_megapixels)
        self._checkpoints: dict[float, Path] | None = None
        self._networks: dict[Path | None, Loaded] = {}
        self.options = {
            "weights": self.weights,
            "device": self.device,
            "max_megapixels": self.max_megapixels,
        }

    @classmethod
    def availability(cls) -> Availability:
        torch = torch_availability()
        if not torch.usable:
            return torch
        from bench.codecs.learned.impmap.coder import coder_availability

        coder = coder_availability()
        if not coder.usable:
            return coder
        return Availability(True, f"{torch.detail}, {coder.detail}")

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch", "numba", hint=TORCH_HINT)

    def _path(self) -> Path:
        return trained_weights(self.name, self.weights, TRAIN_COMMAND)

    def _sources(self) -> dict[float, Path]:
        """The checkpoint of each trained lambda."""
        if self._checkpoints is None:
            path = self._path()

            def lambda_in(file: Path) -> float:
                return lambda_of(read_impmap_checkpoint(file, mmap=True), file)

            self._checkpoints = checkpoints_at(path, lambda_in, what="impmap", make=TRAIN_COMMAND)
        return self._checkpoints

    def rate_points(self) -> tuple[float, ...] | None:
        if self.weights == "random":
            return None
        return tuple(self._sources())

    def network(self, lam: float) -> Loaded:
        """The config, network (eval mode) and identity of the model trained for ``lam``."""
        import torch

        from bench.codecs.learned.impmap.model import ImpMapConfig, ImpMapNetwork

        key: Path | None = None
        if self.weights != "random":
            sources = self._sources()
            key = sources.get(float(np.float32(lam)))
            if key is None:
                trained = ",".join(f"{v:g}" for v in sources)
                raise CodecError(f"{self.name}: {self.weights} has models for lambda {trained}, "
                                 f"none for {lam:g}")  # fmt: skip
        if key not in self._networks:
            if key is None:
                config = ImpMapConfig(**RANDOM_SIZE, preset="custom")
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = ImpMapNetwork(config)
            else:
                config, _, model = load_impmap_checkpoint(key)
            model = model.eval().to(self.device)
            self._networks[key] = (config, model, weights_identity(model))
        return self._networks[key]

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        lambdas = [float(np.float32(self.scale.validate(r, self.name))) for r in rates]
        for lam in lambdas:
            self.network(lam)
        if self.weights == "random":
            config, _, _ = self.network(lambdas[0] if lambdas else 1.0)
            return {
                "weights": f"random (seeded stand-in, {config.describe()}; pipeline tests only)"
            }
        described = {}
        for lam, path in self._sources().items():
            checkpoint = read_impmap_checkpoint(path, mmap=True)
            config = impmap_config_of(checkpoint, path)
            described[f"{lam:g}"] = describe_weights(path, config, training_record(checkpoint))
        files = sorted({f for entry in described.values() for f in entry.pop(TRAINING_FILES)})
        # One file reports one entry; a directory one per lambda (as ``weight_digests`` reads).
        weights = described if self._path().is_dir() else next(iter(described.values()))
        return {"weights": weights, TRAINING_FILES: files}

    def encode(self, image: Image, rate: float) -> bytes:
        import torch

        from bench.codecs.learned.impmap.coder import (
            encode_planes,
            ideal_code_length_bits,
            mask_indices,
        )
        from bench.codecs.learned.impmap.model import pad_replicate

        image = check_image(image, self.name)
        height, width = image.shape[:2]
        check_size(self.name, height, width, self.max_megapixels)
        lam = float(np.float32(self.scale.validate(rate, self.name)))
        config, model, identity = self.network(lam)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255.0)
        x, padding = pad_replicate(x.to(self.device), 8)
        with torch.inference_mode():
            e = model.encode(x)
            indices = model.indices(e)[0].to("cpu", torch.uint8).numpy()
            importance = model.importance_map(e)[0].to("cpu", torch.uint8).numpy()
        synchronize(self.device)
        masked = mask_indices(indices, importance, config.bits)
        payload = encode_planes(masked, config.bits, BLOCK)
        latent = (int(masked.shape[1]), int(masked.shape[2]))
        header = ImpMapHeader(identity, height, width, padding, lam, config.channels,
                              config.bits, BLOCK, latent)  # fmt: skip
        pixels = height * width
        info = {
            "bpp_estimated": ideal_code_length_bits(masked, config.bits, BLOCK) / pixels,
            "header_bytes": HEADER_BYTES,
            "padding": ",".join(str(p) for p in padding),
        }
        return Bitstream(write_impmap_bitstream(header, payload), info)

    def side_images(self, image: Image, rate: float) -> dict[str, Image]:
        """The importance map: per 8x8 block, the bits kept per element averaged over the
        channels, from black (1 of 4, the fewest) to white (all 4)."""
        import torch

        from bench.codecs.learned.impmap.model import pad_replicate

        image = check_image(image, self.name)
        height, width = image.shape[:2]
        config, model, _ = self.network(float(np.float32(rate)))
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255.0)
        x, (top, _, left, _) = pad_replicate(x.to(self.device), 8)
        with torch.inference_mode():
            levels = model.importance_map(model.encode(x))[0].float().mean(dim=0)
        grey = ((levels - 1) / max(config.bits - 1, 1) * 255).round().to("cpu", torch.uint8)
        full = np.kron(grey.numpy(), np.ones((8, 8), dtype=np.uint8))
        full = full[top : top + height, left : left + width]
        caption = f"importance map (bits kept, black 1 .. white {config.bits})"
        return {caption: np.ascontiguousarray(np.repeat(full[..., None], 3, axis=2))}

    def decode(self, data: bytes) -> Image:
        import torch

        from bench.codecs.learned.impmap.coder import decode_planes

        header, payload = read_impmap_bitstream(bytes(data))
        config, model, identity = self.network(header.lam)
        if header.identity != identity:
            raise CodecError(f"{self.name}: the bitstream was made by other weights than "
                             f"{self.weights}")  # fmt: skip
        if (header.channels, header.bits, header.block) != (config.channels, config.bits, BLOCK):
            raise CodecError(f"{self.name}: bitstream has {header.channels} maps of "
                             f"{header.bits} bits in {header.block}-blocks; these weights "
                             f"{config.channels} of {config.bits} in {BLOCK}")  # fmt: skip
        top, bottom, left, right = header.padding
        padded = (header.height + top + bottom, header.width + left + right)
        if padded != (header.latent[0] * 8, header.latent[1] * 8):
            raise CodecError(f"{self.name}: bitstream header is inconsistent: a "
                             f"{padded[1]}x{padded[0]} padded image with a "
                             f"{header.latent[1]}x{header.latent[0]} latent")  # fmt: skip
        try:
            masked = decode_planes(payload, header.latent_shape, header.bits, header.block)
        except ValueError as exc:
            raise CodecError(f"{self.name}: cannot decode the latent: {exc}") from exc
        with torch.inference_mode():
            indices = torch.from_numpy(masked.astype(np.int64))[None].to(self.device)
            x_hat = model.decode_indices(indices)
        x_hat = x_hat[0, :, top : top + header.height, left : left + header.width]
        pixels = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
        synchronize(self.device)
        return np.ascontiguousarray(pixels.cpu().numpy())


__all__ = ["ImpMapCodec"]
