"""GDAE behind bench's codec contract; see ``bench.codecs.learned.gdae``."""

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
from bench.codecs.inputs import QUALITY_MAP, QualityMapSource
from bench.codecs.learned.base import (
    TORCH_HINT,
    check_size,
    checkpoints_at,
    describe_weights,
    distributions_installed,
    synchronize,
    torch_availability,
    trained_weights,
)
from bench.codecs.learned.gdae.bitstream import (
    HEADER_BYTES,
    GdaeHeader,
    read_gdae_bitstream,
    write_gdae_bitstream,
)
from bench.codecs.learned.gdae.checkpoint import (
    TRAIN_COMMAND,
    gdae_config_of,
    latent_channels_of,
    load_gdae_checkpoint,
    read_gdae_checkpoint,
)
from bench.codecs.learned.gdae.coder import LATENT_CODERS, coder_name, jxl_availability
from bench.errors import CodecError, CodecUnavailable, UsageError
from bench.weights import training_record

if TYPE_CHECKING:
    from bench.codecs.base import CodecInputs
    from bench.codecs.learned.gdae.model import GdaeConfig, GdaeGenerator

MAX_MEGAPIXELS = 16.0
RANDOM_SIZE: dict[str, Any] = {
    "channels": (8, 8, 8, 8), "growth": 4, "levels": 8, "discriminator_width": 8,
}  # fmt: skip
"""Size of the seeded stand-in (``weights=random``; pipeline tests only); its C is the rate."""


class Loaded:
    """A rate point's network: config, generator (eval mode), identity, rANS tables."""

    def __init__(self, config: GdaeConfig, model: GdaeGenerator, identity: bytes,
                 counts: np.ndarray | None) -> None:  # fmt: skip
        self.config, self.model, self.identity, self.counts = config, model, identity, counts
        self._tables: Any = None

    def tables(self, codec: str, source: str) -> Any:
        """The rANS tables of the checkpoint's level counts (built once)."""
        if self._tables is None:
            if self.counts is None:
                raise CodecUnavailable(
                    f"{codec}: latent_coder=rans needs the level counts that `bench train "
                    f"gdae` stores at the end of training; {source} has none (use "
                    f"latent_coder=jxl)"
                )
            from bench.codecs.learned.gdae.coder import rans_tables

            self._tables = rans_tables(self.counts)
        return self._tables


class GdaeCodec(Codec):
    """GDAE (Wang et al., ICPR 2020 slides, as the spec reconstructs it): a dense residual
    encoder with strip pooling to C maps at 1/8 resolution, an L-level quantiser with fixed
    centres, lossless coding of the level indices (JPEG XL lossless or rANS), a dense residual
    decoder trained as a GAN generator.

    One checkpoint is one operating point; its rate point is its latent maps C (more maps,
    more bits). ``weights`` names one checkpoint or a directory of them, whose C values are
    the codec's rate points (and its default sweep); ``--target-bpp`` searches over them.

    Options:
        weights: a ``bench-gdae-1`` checkpoint (``bench train gdae``) or a directory of them;
            ``random`` for a seeded narrow stand-in of any C (pipeline tests only).
        latent_coder: ``jxl`` (JPEG XL lossless, the default) or ``rans`` (static per-map
            model from the checkpoint's level counts).
        residual: add semantic residual compensation (SPRC, ``residual.py``): the residual
            of GDAE's reconstruction inside the heat map's region (``heat >= threshold``),
            coded by ``residual_codec`` at a quality mapped linearly from the heat map's mean;
            the region mask and the residual's bytes travel in the bitstream.
        cam_weights: ImageNet VGG-16 weights (a torchvision state_dict) for the slides'
            Grad-CAM heat map; without them SPRC falls back to Grad-CAM of bench's Cityscapes
            ESPNetv2 segmenter, and the run manifest says so.
        heatmap: another heat map, ``NAME[@WEIGHTS]`` (``saliency``, ``gradcam-espnetv2``,
            ``gradcam-vgg16@PATH``); it overrides ``cam_weights``. Set with ``residual=false``
            it still gives ``psnr-roi`` its region, so GDAE alone is scored on the same region.
        threshold: the region is ``heat >= threshold`` (0.5).
        residual_codec: ``auto`` (``bpg`` where bpgenc is found, else ``jpeg2000``), ``bpg``,
            ``jpeg2000`` or ``webp``.
        device, max_megapixels: where to run and the largest image coded in one pass.

    The heat map reaches the codec as its per-image ``quality_map`` input (the seam ``tic``
    uses), so ``psnr-roi`` scores the same region the residual compensates.
    """

    name = "gdae"
    description = "GAN dense autoencoder (Wang et al., ICPR 2020), rate = latent maps C"
    rate_scale = RateScale("latent maps C", 1, 4096, quality_rises=True, integer=True)
    ceiling = None
    default_rates = ()
    """The latent maps C of the trained weights (``rate_points``)."""
    weight_options: ClassVar[tuple[str, ...]] = ("weights",)
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    contract_rates: ClassVar[tuple[float, ...]] = (16.0,)
    inputs: ClassVar[tuple[str, ...]] = (QUALITY_MAP,)

    def __init__(self, *, weights: str = "", latent_coder: str = "jxl", residual: bool = False,
                 cam_weights: str = "", heatmap: str = "", threshold: float = 0.5,
                 residual_codec: str = "auto", device: str = "cpu",
                 max_megapixels: float = MAX_MEGAPIXELS) -> None:  # fmt: skip
        from bench.codecs.heatmaps.sources import cam_heatmap
        from bench.codecs.learned.gdae.residual import resolve_codec_name

        super().__init__()
        self.weights = str(weights)
        if latent_coder not in LATENT_CODERS:
            raise UsageError(f"{self.name}: latent_coder {latent_coder!r}: expected "
                             f"{' or '.join(LATENT_CODERS)}")  # fmt: skip
        self.latent_coder = str(latent_coder)
        self.residual = bool(residual)
        self.cam_weights = str(cam_weights)
        self.threshold = float(threshold)
        if not 0.0 < self.threshold <= 1.0:
            raise UsageError(f"{self.name}: threshold must be in (0, 1], got {threshold}")
        self.heatmap_note = ""
        self.heatmap = str(heatmap).strip()
        if not self.heatmap and self.residual:
            self.heatmap, self.heatmap_note = cam_heatmap(self.cam_weights)
        self.residual_codec = resolve_codec_name(str(residual_codec)) if self.residual else ""
        self.device = str(device)
        if self.device != "cpu":
            from bench.tasks.base import resolve_device

            self.device = resolve_device(self.device)
        self.max_megapixels = float(max_megapixels)
        self._checkpoints: dict[float, Path] | None = None
        self._networks: dict[float, Loaded] = {}
        self._heat: np.ndarray | None = None
        self.options = {
            "weights": self.weights,
            "latent_coder": self.latent_coder,
            "residual": self.residual,
            "cam_weights": self.cam_weights,
            "heatmap": str(heatmap).strip(),
            "threshold": self.threshold,
            "residual_codec": str(residual_codec),
            "device": self.device,
            "max_megapixels": self.max_megapixels,
        }

    @classmethod
    def availability(cls) -> Availability:
        torch = torch_availability()
        if not torch.usable:
            return torch
        jxl = jxl_availability()
        if not jxl.usable:
            return jxl
        return Availability(True, f"{torch.detail}, {jxl.detail}")

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch", "imagecodecs", hint=TORCH_HINT)

    def _path(self) -> Path:
        return trained_weights(self.name, self.weights, TRAIN_COMMAND)

    def _sources(self) -> dict[float, Path]:
        """The checkpoint of each latent width C."""
        if self._checkpoints is None:
            path = self._path()

            def channels_in(file: Path) -> float:
                return latent_channels_of(read_gdae_checkpoint(file, mmap=True), file)

            self._checkpoints = checkpoints_at(path, channels_in, what="gdae", make=TRAIN_COMMAND)
        return self._checkpoints

    def rate_points(self) -> tuple[float, ...] | None:
        if self.weights == "random":
            return None
        return tuple(self._sources())

    def network(self, channels: float) -> Loaded:
        """The config, generator (eval mode), identity and level counts for C maps."""
        import torch

        from bench.codecs.learned.gdae.model import GdaeConfig, GdaeGenerator, model_identity

        key = float(channels)
        if key not in self._networks:
            if self.weights == "random":
                config = GdaeConfig(**RANDOM_SIZE, latent_channels=int(key), preset="custom")
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = GdaeGenerator(config)
                counts: np.ndarray | None = np.zeros((config.latent_channels, config.levels),
                                                     dtype=np.int64)  # fmt: skip
            else:
                sources = self._sources()
                path = sources.get(key)
                if path is None:
                    trained = ",".join(f"{v:g}" for v in sources)
                    raise CodecError(f"{self.name}: {self.weights} has models for C = "
                                     f"{trained}, none for {key:g}")  # fmt: skip
                config, model, counts = load_gdae_checkpoint(path)
            model = model.eval().to(self.device)
            self._networks[key] = Loaded(config, model, model_identity(config, model), counts)
        return self._networks[key]

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        values = [self.scale.validate(r, self.name) for r in rates]
        for value in values:
            loaded = self.network(value)
            if self.latent_coder == "rans":
                loaded.tables(self.name, self.weights)
        sprc = self._describe_sprc()
        if self.weights == "random":
            config = self.network(values[0] if values else 16.0).config
            return {"weights": f"random (seeded stand-in, {config.describe()}; pipeline tests "
                               "only)", **sprc}  # fmt: skip
        described = {}
        for value, path in self._sources().items():
            checkpoint = read_gdae_checkpoint(path, mmap=True)
            config = gdae_config_of(checkpoint, path)
            described[f"{value:g}"] = describe_weights(path, config, training_record(checkpoint))
        files = sorted({f for entry in described.values() for f in entry.pop(TRAINING_FILES)})
        weights = described if self._path().is_dir() else next(iter(described.values()))
        return {"weights": weights, TRAINING_FILES: files, **sprc}

    def _describe_sprc(self) -> dict[str, Any]:
        """What the manifest says about the heat map and the residual (checked before a run)."""
        if not self.heatmap:
            return {}
        from bench.codecs.heatmaps.sources import heatmap_source

        described: dict[str, Any] = dict(heatmap_source(self.heatmap).describe())
        if self.heatmap_note:
            described["heatmap_note"] = self.heatmap_note
        if self.residual:
            described["residual_codec"] = self.residual_codec
        return {"sprc": described}

    def input_source(self) -> QualityMapSource:
        """The heat map as the per-image input (uniform, i.e. none, without one)."""
        if not self.heatmap:
            return QualityMapSource.uniform()
        return QualityMapSource("heatmap", heatmap=self.heatmap, threshold=self.threshold)

    # ------------------------------------------------------------------ SPRC's extension points

    def _residual_payload(self, image: Image, reconstruction: Image) -> bytes:
        """The residual compensation's payload for ``image`` given GDAE's ``reconstruction``
        (both (H, W, 3) uint8); b"" for none (``residual=false``). Semantic residual
        compensation (SPRC) fills this in; the payload is opaque to the bitstream."""
        if not self.residual:
            return b""
        from bench.codecs.learned.gdae.residual import encode_residual

        heat = self._heat
        if heat is None:
            from bench.codecs.heatmaps.sources import heatmap_source

            heat = heatmap_source(self.heatmap)(image)
        return encode_residual(image, reconstruction, heat, codec_name=self.residual_codec,
                               threshold=self.threshold)  # fmt: skip

    def _residual_info(self, residual: bytes) -> dict[str, Any]:
        """What the encoder measured of a residual payload (its codec, quality, bytes)."""
        from bench.codecs.learned.gdae.residual import describe_residual

        return describe_residual(residual)

    def _apply_residual(self, reconstruction: Image, residual: bytes) -> Image:
        """GDAE's ``reconstruction`` corrected by a non-empty residual payload (SPRC's)."""
        from bench.codecs.learned.gdae.residual import apply_residual

        return apply_residual(reconstruction, residual)

    # ------------------------------------------------------------------ coding

    def _reconstruct(self, loaded: Loaded, indices: Any, header: GdaeHeader) -> Image:
        import torch

        from bench.codecs.learned.gdae.model import to_uint8

        top, _, left, _ = header.padding
        with torch.inference_mode():
            x_hat = loaded.model.decode(indices.to(self.device))
        x_hat = x_hat[0, :, top : top + header.height, left : left + header.width]
        pixels = to_uint8(x_hat).permute(1, 2, 0).cpu().numpy()
        synchronize(self.device)
        return np.ascontiguousarray(pixels)

    def encode_with(self, image: Image, rate: float, inputs: CodecInputs) -> bytes:
        """``encode`` with the runner's heat map (the ``quality_map`` input) for SPRC."""
        heat = inputs.get(QUALITY_MAP)
        if heat is None or not self.heatmap:
            return self.encode(image, rate)
        if heat.shape != np.asarray(image).shape[:2]:
            raise CodecError(f"{self.name}: heat map {heat.shape} differs from the image "
                             f"{np.asarray(image).shape[:2]}")  # fmt: skip
        self._heat = np.asarray(heat, dtype=np.float32)
        try:
            return self.encode(image, rate)
        finally:
            self._heat = None

    def encode(self, image: Image, rate: float) -> bytes:
        import torch

        from bench.codecs.learned.gdae.coder import encode_jxl, encode_rans
        from bench.codecs.learned.gdae.model import pad_replicate

        image = check_image(image, self.name)
        height, width = image.shape[:2]
        check_size(self.name, height, width, self.max_megapixels)
        loaded = self.network(self.scale.validate(rate, self.name))
        config = loaded.config
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255.0)
        x, padding = pad_replicate(x.to(self.device), 8)
        with torch.inference_mode():
            indices = loaded.model.encode(x)
        synchronize(self.device)
        levels = indices[0].to("cpu", torch.uint8).numpy()
        info: dict[str, Any] = {"header_bytes": HEADER_BYTES,
                                "padding": ",".join(str(p) for p in padding)}  # fmt: skip
        if self.latent_coder == "rans":
            tables = loaded.tables(self.name, self.weights)
            latent = encode_rans(levels, tables)
            info["bpp_estimated"] = (tables.bits(levels) + 32) / (height * width)
        else:
            latent = encode_jxl(levels, config.levels)
        header = GdaeHeader(loaded.identity, height, width, padding, config.latent_channels,
                            config.levels, (int(levels.shape[1]), int(levels.shape[2])),
                            LATENT_CODERS[self.latent_coder])  # fmt: skip
        residual = b""
        if self.residual:
            reconstruction = self._reconstruct(loaded, indices, header)
            residual = self._residual_payload(image, reconstruction)
            info.update(self._residual_info(residual))
        return Bitstream(write_gdae_bitstream(header, latent, residual), info)

    def decode(self, data: bytes) -> Image:
        import torch

        from bench.codecs.learned.gdae.coder import decode_jxl, decode_rans

        header, latent, residual = read_gdae_bitstream(bytes(data))
        loaded = self.network(float(header.channels))
        config = loaded.config
        if header.identity != loaded.identity:
            raise CodecError(f"{self.name}: the bitstream was made by other weights than "
                             f"{self.weights}")  # fmt: skip
        if (header.channels, header.levels) != (config.latent_channels, config.levels):
            raise CodecError(f"{self.name}: bitstream has C={header.channels}, "
                             f"L={header.levels}; these weights C={config.latent_channels}, "
                             f"L={config.levels}")  # fmt: skip
        top, bottom, left, right = header.padding
        padded = (header.height + top + bottom, header.width + left + right)
        if padded != (header.latent[0] * 8, header.latent[1] * 8):
            raise CodecError(f"{self.name}: bitstream header is inconsistent: a "
                             f"{padded[1]}x{padded[0]} padded image with a "
                             f"{header.latent[1]}x{header.latent[0]} latent")  # fmt: skip
        if coder_name(header.coder) == "rans":
            levels = decode_rans(
                latent, header.latent_shape, loaded.tables(self.name, self.weights)
            )
        else:
            levels = decode_jxl(latent, header.latent_shape, config.levels)
        indices = torch.from_numpy(levels.astype(np.int64))[None]
        reconstruction = self._reconstruct(loaded, indices, header)
        if residual:
            return self._apply_residual(reconstruction, residual)
        return reconstruction


__all__ = ["GdaeCodec"]
