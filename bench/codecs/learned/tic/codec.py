"""The TIC codecs behind bench's codec contract: ``tic-hp`` (TransTIC's fixed-rate TIC_hp) and
``tic`` (one prompted model for every rate); see ``bench.codecs.learned.tic``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.codecs.base import (
    TRAINING_FILES,
    Availability,
    Bitstream,
    Codec,
    CodecInputs,
    Image,
    Latent,
    RateScale,
    check_image,
)
from bench.codecs.inputs import QUALITY_MAP, QualityMapSource
from bench.codecs.learned.base import (
    TORCH_HINT,
    compressai_availability,
    distributions_installed,
    synchronize,
    weights_identity,
)
from bench.codecs.learned.tic.bitstream import (
    HEADER_BYTES,
    TILE_HEADER_BYTES,
    VARIANT_HP,
    VARIANT_PROMPTED,
    TicHeader,
    read_tic_bitstream,
    tile_boxes,
    write_tic_bitstream,
)
from bench.codecs.learned.tic.checkpoint import (
    EARLIER_TRAINING,
    TRAIN_COMMAND,
    distinct_images,
    load_tic_checkpoint,
    read_tic_checkpoint,
    training_lineage,
)
from bench.errors import CodecError, CodecUnavailable
from bench.weights import training_record

if TYPE_CHECKING:
    from bench.codecs.learned.tic.model import TicHyperprior

MAX_MEGAPIXELS = 4.5
"""Default whole-image limit (padded): Cityscapes' 2048 x 1024 fits; more needs ``tile``."""
HP_RELEASE = (
    "TransTIC's release v1.0 (github.com/NYCU-MAPL/TransTIC/releases) publishes "
    "base_codec_{1..4}.pth.tar"
)
RANDOM_HP_SIZE = (32, 48)
"""(N, M) of the seeded stand-in ``tic-hp`` (pipeline tests only)."""


@dataclass
class LoadedTic:
    """A network ready to code, with what names it."""

    model: TicHyperprior
    identity: bytes
    source: str
    config: dict[str, Any]


def prepare_for_coding(model: TicHyperprior, device: str) -> TicHyperprior:
    """Eval mode on ``device``, with the entropy coders' tables built where a checkpoint
    left them empty (a training checkpoint) or lacks them."""
    model = model.eval().to(device)
    if model.entropy_tables_empty():
        model.update(force=True)
    return model


class _TicCodec(Codec):
    """What both TIC codecs share: padding, tiling, the bitstream and decoding."""

    variant: ClassVar[int]
    ceiling = None
    libraries: ClassVar[tuple[str, ...]] = ("torch", "compressai")
    weight_options: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(
        self,
        *,
        weights: str = "",
        device: str = "cpu",
        max_megapixels: float = MAX_MEGAPIXELS,
        tile: int = 0,
    ) -> None:
        super().__init__()
        self.weights = str(weights)
        self.device = str(device)
        if self.device != "cpu":
            from bench.tasks.base import resolve_device

            self.device = resolve_device(self.device)
        self.max_megapixels = float(max_megapixels)
        if self.max_megapixels <= 0:
            raise ValueError(f"max_megapixels must be positive, got {max_megapixels}")
        self.tile = int(tile)
        if self.tile < 0 or self.tile % 256:
            raise ValueError(f"tile must be 0 (off) or a multiple of 256, got {tile}")
        self._loaded: dict[int, LoadedTic] = {}
        self.options = {
            "weights": self.weights,
            "device": self.device,
            "max_megapixels": self.max_megapixels,
            "tile": self.tile,
        }

    @classmethod
    def availability(cls) -> Availability:
        return compressai_availability()

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch", "compressai", hint=TORCH_HINT)

    @property
    def is_random(self) -> bool:
        return self.weights == "random"

    def model(self, rate: float) -> LoadedTic:
        """The network that codes at ``rate`` (loaded once)."""
        raise NotImplementedError

    def model_for(self, header: TicHeader) -> LoadedTic:
        """The network that made a bitstream, checked by identity."""
        raise NotImplementedError

    def _tiling(self, height: int, width: int) -> int:
        from bench.codecs.learned.tic.model import PAD_MULTIPLE

        padded = (-(-height // PAD_MULTIPLE) * PAD_MULTIPLE) * (
            -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
        )
        if padded / 1e6 <= self.max_megapixels:
            return 0
        if self.tile:
            return self.tile
        raise CodecError(
            f"{self.name}: image of {width}x{height} pads to {padded / 1e6:.1f} MP, more than "
            f"max_megapixels={self.max_megapixels:g} for one pass; code it in tiles "
            f"(--codec-option {self.name}.tile=1024: each tile coded alone, which costs bits "
            f"and some quality at tile borders) or raise the limit "
            f"(--codec-option {self.name}.max_megapixels=N) if memory allows"
        )

    def _encode(self, image: Image, loaded: LoadedTic, quality: int, quality_map: Any) -> Bitstream:
        import torch

        from bench.codecs.learned.tic.model import PAD_MULTIPLE, pad_to

        image = check_image(image, self.name)
        height, width = image.shape[:2]
        tile = self._tiling(height, width)
        x_all = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255.0)
        q_all = None
        if quality_map is not None:
            q_all = torch.from_numpy(np.ascontiguousarray(quality_map, np.float32))[None, None]
        tiles = []
        bits = 0.0
        for top, left, rows, cols in tile_boxes(height, width, tile):
            x, _ = pad_to(x_all[..., top : top + rows, left : left + cols], PAD_MULTIPLE)
            q = None
            if q_all is not None:
                q, _ = pad_to(q_all[..., top : top + rows, left : left + cols], PAD_MULTIPLE)
                q = q.to(self.device)
            with torch.inference_mode():
                out = loaded.model.compress(x.to(self.device), q)
            shape = out["shape"]
            tiles.append(
                ((int(shape[0]), int(shape[1])), out["strings"][0][0], out["strings"][1][0])
            )
            bits += out["bits"][0]
        synchronize(self.device)
        header = TicHeader(self.variant, quality, loaded.identity, height, width, tile)
        data = write_tic_bitstream(header, tiles)
        padded = [
            (-(-r // PAD_MULTIPLE) * PAD_MULTIPLE - r, -(-c // PAD_MULTIPLE) * PAD_MULTIPLE - c)
            for _, _, r, c in tile_boxes(height, width, tile)
        ]
        bottom, right = padded[-1]
        info = {
            "bpp_estimated": bits / (height * width),
            "header_bytes": HEADER_BYTES + TILE_HEADER_BYTES * len(tiles),
            "padding": f"0,{bottom},0,{right}" + (f" tiles={len(tiles)}x{tile}" if tile else ""),
        }
        return Bitstream(data, info)

    def decode(self, data: bytes) -> Image:
        import torch

        header, tiles = read_tic_bitstream(bytes(data))
        if header.variant != self.variant:
            raise CodecError(f"{self.name}: the bitstream was made by another TIC variant")
        loaded = self.model_for(header)
        out = np.empty((header.height, header.width, 3), np.uint8)
        boxes = tile_boxes(header.height, header.width, header.tile)
        for (top, left, rows, cols), (shape, y_string, z_string) in zip(boxes, tiles, strict=True):
            with torch.inference_mode():
                x_hat = loaded.model.decompress([[y_string], [z_string]], shape)
            x_hat = x_hat[0, :, :rows, :cols].clamp(0, 1).mul(255).round().to(torch.uint8)
            out[top : top + rows, left : left + cols] = x_hat.permute(1, 2, 0).cpu().numpy()
        synchronize(self.device)
        return out

    has_latent = True

    def decode_latent(self, data: bytes) -> Latent:
        """ŷ (M × H/16 × W/16 of the image padded to multiples of 256) from the bitstream:
        the hyperprior's entropy decoding and the Gaussian conditional's, no synthesis.

        Raises:
            CodecError: another variant's or a tiled bitstream (tiles code separate latents
                that do not form one grid).
        """
        import torch

        from bench.codecs.learned.tic.model import LATENT_STRIDE

        header, tiles = read_tic_bitstream(bytes(data))
        if header.variant != self.variant:
            raise CodecError(f"{self.name}: the bitstream was made by another TIC variant")
        if len(tiles) != 1:
            raise CodecError(
                f"{self.name}: a bitstream of {len(tiles)} tiles has no single latent; code "
                f"without {self.name}.tile for latent tasks"
            )
        loaded = self.model_for(header)
        shape, y_string, z_string = tiles[0]
        with torch.inference_mode():
            y_hat = loaded.model.decompress_latent([[y_string], [z_string]], shape)
        synchronize(self.device)
        values = y_hat[0].float().cpu().numpy()
        model = loaded.model
        params = sum(p.numel() for name, p in model.named_parameters() if name.startswith("g_s"))
        return Latent(values, LATENT_STRIDE, header.height, header.width, model.g_s, params)


class TicHpCodec(_TicCodec):
    """TransTIC's fixed-rate TIC hyperprior: quality 1..8 (1-4: N=128, M=192; 5-8: N=192,
    M=320), one checkpoint per quality.

    Options:
        weights: a checkpoint file (one quality: the only rate of the run), a directory
            holding ``base_codec_{q}.pth.tar`` (TransTIC's release names) or ``q{q}.pth``,
            or a pattern with ``{q}`` (``/w/base_codec_{q}.pth.tar``); ``random`` for a
            seeded narrow stand-in (pipeline tests only). No checksum is published for
            TransTIC's files: the manifest records the SHA-256 seen, marked unverified.
        device, max_megapixels, tile: see the module docstring.
    """

    name = "tic-hp"
    description = "TIC hyperprior of TransTIC (Lu et al. 2022; Chen et al. 2023), quality 1-8"
    rate_scale = RateScale("quality", 1, 8, quality_rises=True)
    variant = VARIANT_HP
    default_rates = (1, 2, 3, 4)
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    contract_rates: ClassVar[tuple[float, ...]] = (1, 2)

    def checkpoint_path(self, quality: int) -> Path:
        """The file that holds quality ``quality``'s weights.

        Raises:
            CodecUnavailable: no weights given, or no such file (with where to get them).
        """
        if not self.weights:
            raise CodecUnavailable(
                f"{self.name}: no weights; {HP_RELEASE}: download them and pass "
                f"--codec-option {self.name}.weights=DIR"
            )
        text = os.path.expanduser(self.weights)
        root = Path(text.replace("{q}", str(quality)))
        if root.is_dir():
            for name in (f"base_codec_{quality}.pth.tar", f"q{quality}.pth", f"q{quality}.pt"):
                if (root / name).is_file():
                    return root / name
            raise CodecUnavailable(
                f"{self.name}: no base_codec_{quality}.pth.tar in {root}; {HP_RELEASE}"
            )
        if not root.is_file():
            raise CodecUnavailable(f"{self.name}: weights {root} do not exist; {HP_RELEASE}")
        return root

    def _random(self, quality: int) -> LoadedTic:
        import torch

        from bench.codecs.learned.tic.model import TicHyperprior

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(quality)
            model = TicHyperprior(*RANDOM_HP_SIZE)
        model = prepare_for_coding(model, self.device)
        source = f"random (seeded, N={RANDOM_HP_SIZE[0]}; pipeline tests only)"
        return LoadedTic(model, weights_identity(model), source, {"n": RANDOM_HP_SIZE[0]})

    def model(self, rate: float) -> LoadedTic:
        quality = int(self.scale.validate(rate, self.name))
        if quality in self._loaded:
            return self._loaded[quality]
        if self.is_random:
            loaded = self._random(quality)
        else:
            loaded = self._load(quality, self.checkpoint_path(quality))
        self._loaded[quality] = loaded
        return loaded

    def _load(self, quality: int, path: Path) -> LoadedTic:
        from bench.codecs.learned.base import load_weights
        from bench.codecs.learned.tic.model import HP_QUALITIES, TicHyperprior

        n, m = HP_QUALITIES[quality]
        model = TicHyperprior(n, m)
        load_weights(model, path, f"TIC_hp quality {quality} (N={n}, M={m})")
        model = prepare_for_coding(model, self.device)
        return LoadedTic(model, weights_identity(model), str(path), {"n": n, "m": m})

    def model_for(self, header: TicHeader) -> LoadedTic:
        loaded = self.model(header.quality)
        if loaded.identity != header.identity:
            raise CodecError(
                f"{self.name}: the bitstream was made by other weights for quality "
                f"{header.quality} than {loaded.source}"
            )
        return loaded

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        if self.is_random:
            return {"weights": "random (seeded stand-in; pipeline tests only, not TransTIC's)"}
        from bench.download import sha256_of

        found: dict[str, Any] = {}
        missing = []
        for rate in rates:
            quality = int(self.scale.validate(rate, self.name))
            try:
                path = self.checkpoint_path(quality)
            except CodecUnavailable as exc:
                found[str(quality)] = {"missing": str(exc)}
                missing.append(str(exc))
                continue
            found[str(quality)] = {
                "file": str(path),
                "sha256": sha256_of(path),
                "note": "unverified: TransTIC publishes no checksum for its weights",
            }
        if missing and len(missing) == len(found):
            raise CodecUnavailable(missing[0])
        return {"weights": found}

    def encode(self, image: Image, rate: float) -> bytes:
        quality = int(self.scale.validate(rate, self.name))
        return self._encode(image, self.model(quality), quality, None)


class TicCodec(_TicCodec):
    """The variable-rate TIC of Chang & Yang (2024): one network for every rate, steered by
    a quality map; the rate point q in [0, 1] is the map's value (uniform), or the ROI's
    value with the rest at ``background`` (``roi=classes:person,rider,car`` from the
    dataset's labels, or ``roi=DIR`` with one mask PNG per image).

    Options:
        weights: a ``bench-tic-1`` checkpoint (``bench train tic``); ``random`` for a seeded
            tiny stand-in (pipeline tests only).
        roi, background: the quality map's source and its value outside the ROI.
        device, max_megapixels, tile: see the module docstring.
    """

    name = "tic"
    description = "Variable-rate TIC with prompts and quality maps (Chang & Yang 2024), q in 0..1"
    rate_scale = RateScale("q", 0.0, 1.0, quality_rises=True, integer=False)
    variant = VARIANT_PROMPTED
    inputs = (QUALITY_MAP,)
    default_rates = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    contract_rates: ClassVar[tuple[float, ...]] = (0.0, 1.0)

    def __init__(
        self,
        *,
        weights: str = "",
        roi: str = "uniform",
        background: float = 0.0,
        device: str = "cpu",
        max_megapixels: float = MAX_MEGAPIXELS,
        tile: int = 0,
    ) -> None:
        super().__init__(weights=weights, device=device, max_megapixels=max_megapixels, tile=tile)
        self.source = QualityMapSource.parse(str(roi), float(background))
        self.options.update(roi=str(roi), background=float(background))

    def input_source(self) -> QualityMapSource:
        return self.source

    def _single(self) -> LoadedTic:
        if 0 in self._loaded:
            return self._loaded[0]
        if self.is_random:
            import torch

            from bench.codecs.learned.tic.model import TicConfig, build_model

            config = TicConfig.preset("tiny")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = build_model(config)
            model = prepare_for_coding(model, self.device)
            loaded = LoadedTic(
                model,
                weights_identity(model),
                "random (seeded tiny stand-in; pipeline tests only)",
                config.to_dict(),
            )
        else:
            if not self.weights:
                raise CodecUnavailable(
                    f"{self.name}: no weights; train them ({TRAIN_COMMAND}) and pass "
                    f"--codec-option {self.name}.weights=CHECKPOINT"
                )
            config, model = load_tic_checkpoint(Path(self.weights).expanduser())
            model = prepare_for_coding(model, self.device)
            loaded = LoadedTic(model, weights_identity(model), self.weights, config.to_dict())
        self._loaded[0] = loaded
        return loaded

    def model(self, rate: float) -> LoadedTic:
        self.scale.validate(rate, self.name)
        return self._single()

    def model_for(self, header: TicHeader) -> LoadedTic:
        loaded = self._single()
        if loaded.identity != header.identity:
            raise CodecError(
                f"{self.name}: the bitstream was made by other weights than {loaded.source}"
            )
        return loaded

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        for rate in rates:
            self.scale.validate(rate, self.name)
        if self.is_random:
            return {"weights": "random (seeded tiny stand-in; pipeline tests only, not trained)"}
        from bench.codecs.learned.tic.model import TicConfig
        from bench.download import sha256_of

        loaded = self._single()
        path = Path(self.weights).expanduser()
        checkpoint = read_tic_checkpoint(path, mmap=True)
        training = training_record(checkpoint)
        earlier = checkpoint.get(EARLIER_TRAINING, {})
        images = training_lineage(checkpoint)["images"]
        files = sorted({str(i["file_sha256"]) for i in images if i.get("file_sha256")})
        return {
            "weights": {
                "file": str(path),
                "sha256": sha256_of(path),
                "config": loaded.config,
                "size": TicConfig.from_dict(loaded.config).describe(),
                "note": "unverified: trained by bench",
                "training": {k: v for k, v in training.items() if k != "images"},
                "training_images": len(training.get("images", [])),
                "earlier_training": {
                    "steps": int(earlier.get("steps", 0)),
                    "images": len(distinct_images(earlier.get("images", []))),
                },
            },
            TRAINING_FILES: files,
        }

    def encode(self, image: Image, rate: float) -> bytes:
        image = check_image(image, self.name)
        value = float(self.scale.validate(rate, self.name))
        uniform = np.full(image.shape[:2], value, np.float32)
        return self._encode(image, self._single(), 0, uniform)

    def encode_with(self, image: Image, rate: float, inputs: CodecInputs) -> bytes:
        self.scale.validate(rate, self.name)
        quality_map = inputs.get(QUALITY_MAP)
        if quality_map is None:
            return self.encode(image, rate)
        image = check_image(image, self.name)
        if quality_map.shape != image.shape[:2]:
            raise CodecError(
                f"{self.name}: quality map {quality_map.shape} differs from the image "
                f"{image.shape[:2]}"
            )
        return self._encode(image, self._single(), 0, np.clip(quality_map, 0.0, 1.0))


__all__ = ["LoadedTic", "TicCodec", "TicHpCodec", "prepare_for_coding"]
