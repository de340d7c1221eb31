"""``GanCodec``: the GAN autoencoder behind bench's codec contract (see
``bench.codecs.learned.gan`` for the model, the bitstream and every design choice)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
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
    flag,
)
from bench.codecs.learned.base import (
    MAX_MEGAPIXELS,
    check_size,
    distributions_installed,
    synchronize,
    torch_availability,
)
from bench.codecs.learned.gan.bitstream import (
    GanHeader,
    gan_padding,
    parse_gan_bitstream,
    read_gan_bitstream,
    write_gan_bitstream,
)
from bench.codecs.learned.gan.checkpoint import (
    ENTROPY_KEY,
    FIT_COMMAND,
    EntropyModel,
    checkpoint_training,
    load_gan_checkpoint,
    read_entropy_model,
    read_gan_config,
)
from bench.codecs.learned.gan.config import DOWNSAMPLING, GanConfig
from bench.codecs.learned.gan.entropy import EntropyTables
from bench.errors import CodecError, CodecUnavailable, UsageError
from bench.weights import WeightsError

if TYPE_CHECKING:
    from bench.codecs.learned.gan.model import GanGenerator

TRAIN_COMMAND = (
    "bench train gan --dataset cityscapes --data-dir DIR --split train "
    "--bottleneck {F} --levels {L} --out CHECKPOINT"
)
RANDOM_WIDTH = 1 / 32
"""Width of ``weights=random`` stand-ins (pipeline tests: mechanics, not quality)."""
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar")


@dataclass
class LoadedGan:
    """A generator ready to code, with its identity and where it came from."""

    config: GanConfig
    generator: GanGenerator
    identity: bytes
    source: str
    entropy: EntropyModel | None = None
    """The checkpoint's ``entropy_model`` (None when it has none)."""
    _tables: EntropyTables | None = field(default=None, repr=False)

    def tables(self) -> EntropyTables | None:
        """The rANS tables of ``entropy`` (built once; None without an entropy model)."""
        if self.entropy is None:
            return None
        if self._tables is None:
            self._tables = EntropyTables(self.entropy.counts)
        return self._tables


@dataclass
class _Entry:
    path: Path
    config: GanConfig
    loaded: LoadedGan | None = field(default=None, repr=False)


def _same_rate(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


class GanCodec(Codec):
    """The GAN autoencoder codec: the rate point is the nominal bpp F * ld(L) / 256.

    Options:
        weights: a ``bench-gan-1`` checkpoint file or a directory of them (indexed by their
            config's nominal bpp); ``random`` or ``random:WIDTH`` for seeded stand-ins
            (pipeline tests only: width 1/32 by default, F from ``bottleneck`` or 8).
        bottleneck: use only checkpoints with this F (0: any; needed when two checkpoints
            share a nominal bpp, e.g. F=8, L=4 and F=4, L=16).
        device: cpu, cuda or cuda:N. max_megapixels: larger images fail with advice.
        batch_size: same-shaped images per forward pass (the bytes do not change).
        entropy_coding: code the level indices with CompressAI's rANS coder under the
            checkpoint's ``entropy_model`` (per-map level counts that ``bench train gan``
            writes) instead of ld(L) bits each (beyond the paper). A checkpoint without one
            makes its rate point unavailable; ``weights=random`` uses uniform counts. The
            rate point stays the nominal bpp; records' ``bpp`` is the measured rate of the
            bytes, ``bpp_estimated`` the nominal F * ld(L) / 256. Decoding needs no option:
            the bitstream says how it was coded.
    """

    name = "gan"
    description = "GAN autoencoder (Löhdefink et al. 2019 after Agustsson et al. 2018), bpp"
    rate_scale = RateScale("bpp", 1 / 256, 1.0, quality_rises=True, integer=False)
    ceiling = None
    default_rates = tuple(8 * bits / 256 for bits in range(1, 7))  # F = 8, L = 2..64
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}
    contract_rates: ClassVar[tuple[float, ...]] = (0.03125, 0.0625, 0.09375)
    weight_options: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(
        self,
        *,
        weights: str = "",
        bottleneck: int = 0,
        device: str = "cpu",
        max_megapixels: float = MAX_MEGAPIXELS,
        batch_size: int = 1,
        entropy_coding: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(entropy_coding, str):
            from bench.types import parse_option_value

            entropy_coding = parse_option_value(entropy_coding)  # type: ignore[assignment]
        if not isinstance(entropy_coding, bool | int) or entropy_coding not in (0, 1):
            raise ValueError(f"entropy_coding must be true or false, got {entropy_coding!r}")
        self.entropy_coding = flag(entropy_coding, "entropy_coding")
        self.weights = str(weights)
        self.bottleneck = int(bottleneck)
        if self.bottleneck < 0:
            raise ValueError(f"bottleneck must be 0 (any) or positive, got {bottleneck}")
        self.device = str(device)
        if self.device != "cpu":
            from bench.tasks.base import resolve_device

            self.device = resolve_device(self.device)
        self.max_megapixels = float(max_megapixels)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.random_width = RANDOM_WIDTH
        if self.weights.startswith("random:"):
            try:
                self.random_width = float(self.weights.partition(":")[2])
            except ValueError:
                raise ValueError(f"weights=random:WIDTH needs a number, got {weights!r}") from None
        self._index: list[_Entry] | None = None
        self._unreadable: list[tuple[Path, str]] = []
        """Checkpoint files of ``weights`` whose config cannot be read, and why."""
        self._random: dict[tuple[int, int], LoadedGan] = {}
        self.options = {
            "weights": self.weights,
            "bottleneck": self.bottleneck,
            "device": self.device,
            "max_megapixels": self.max_megapixels,
            "batch_size": self.batch_size,
            "entropy_coding": self.entropy_coding,
        }

    @classmethod
    def availability(cls) -> Availability:
        return torch_availability()

    @classmethod
    def installed(cls) -> Availability:
        return distributions_installed("torch")

    @property
    def is_random(self) -> bool:
        return self.weights == "random" or self.weights.startswith("random:")

    # ---- finding models

    def index(self) -> list[_Entry]:
        """The checkpoints ``weights`` names, with their configs (read once)."""
        if self._index is not None:
            return self._index
        if not self.weights:
            raise CodecUnavailable(
                f"{self.name}: no weights; train a checkpoint per rate point ("
                + TRAIN_COMMAND.format(F="F", L="L")
                + f") and pass --codec-option {self.name}.weights=CHECKPOINT_OR_DIR"
            )
        root = Path(self.weights).expanduser()
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES)
        elif root.is_file():
            files = [root]
        else:
            raise CodecUnavailable(f"{self.name}: weights {root} is neither a file nor a directory")
        index: list[_Entry] = []
        for path in files:
            try:
                index.append(_Entry(path, read_gan_config(path)))
            except WeightsError as exc:  # costs the rate points it would serve, not the run
                if root.is_file():
                    raise
                self._unreadable.append((path, str(exc)))
        self._index = index
        return self._index

    def rate_points(self) -> tuple[float, ...] | None:
        """The nominal bpp of the checkpoints ``weights`` names (those of F = ``bottleneck``
        when it is set): a target-bpp search visits only these. None with random weights,
        which code at any rate."""
        if self.is_random:
            return None
        return tuple(
            sorted(
                {
                    e.config.nominal_bpp
                    for e in self.index()
                    if not self.bottleneck or e.config.bottleneck == self.bottleneck
                }
            )
        )

    def _unavailable(self, rate: float, known: Iterable[_Entry]) -> CodecUnavailable:
        f_value = self.bottleneck or 8
        bits = rate * DOWNSAMPLING**2 / f_value
        levels = round(2**bits) if bits < 17 else 0
        if levels >= 2 and _same_rate(f_value * math.log2(levels) / 256, rate):
            command = TRAIN_COMMAND.format(F=f_value, L=levels)
        else:
            command = TRAIN_COMMAND.format(F="F", L="L") + f" with F * log2(L) / 256 = {rate:g}"
        have = "; ".join(
            f"{e.config.nominal_bpp:.6g} bpp (F={e.config.bottleneck}, L={e.config.levels})"
            + (
                f", excluded by {self.name}.bottleneck={self.bottleneck}"
                if self.bottleneck and e.config.bottleneck != self.bottleneck
                else ""
            )
            for e in known
        )
        unreadable = "".join(
            f"; a checkpoint could not be read, so the rate point it gives is unknown: {why}"
            for _, why in self._unreadable
        )
        return CodecUnavailable(
            f"{self.name}: no checkpoint for {rate:g} bpp in {self.weights}"
            + (f" (it has {have})" if have else "")
            + unreadable
            + f"; make one: {command}"
        )

    def _entry_for_rate(self, rate: float) -> _Entry:
        entries = self.index()
        matches = [
            e
            for e in entries
            if _same_rate(e.config.nominal_bpp, rate)
            and (not self.bottleneck or e.config.bottleneck == self.bottleneck)
        ]
        if not matches:
            raise self._unavailable(rate, entries)
        if len(matches) > 1:
            names = ", ".join(
                f"{e.path.name} (F={e.config.bottleneck}, L={e.config.levels}, "
                f"width={e.config.width:g})"
                for e in matches
            )
            raise UsageError(
                f"{self.name}: several checkpoints give {rate:g} bpp: {names}; choose with "
                f"--codec-option {self.name}.bottleneck=F or a weights file"
            )
        return matches[0]

    def _load(self, entry: _Entry) -> LoadedGan:
        from bench.codecs.learned.gan.model import model_identity

        if entry.loaded is None:
            config, generator = load_gan_checkpoint(entry.path)
            entry.loaded = LoadedGan(
                config,
                generator.to(self.device),
                model_identity(config, generator),
                str(entry.path),
                read_entropy_model(entry.path),
            )
        return entry.loaded

    def _random_model(self, bottleneck: int, levels: int) -> LoadedGan:
        import torch

        from bench.codecs.learned.gan.model import GanGenerator, model_identity

        key = (bottleneck, levels)
        if key not in self._random:
            config = GanConfig(bottleneck=bottleneck, levels=levels, width=self.random_width)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 * bottleneck + levels)
                generator = GanGenerator(config).eval()
            uniform = EntropyModel(
                np.zeros((bottleneck, levels), dtype=np.int64), 0, "images (uniform stand-in)"
            )
            self._random[key] = LoadedGan(
                config,
                generator.to(self.device),
                model_identity(config, generator),
                f"random (seeded, width {self.random_width:g}; pipeline tests only)",
                uniform,
            )
        return self._random[key]

    def model(self, rate: float) -> LoadedGan:
        """The generator coding at a nominal bpp (loaded once)."""
        rate = self.scale.validate(rate, self.name)
        if self.is_random:
            f_value = self.bottleneck or 8
            bits = rate * DOWNSAMPLING**2 / f_value
            levels = round(2**bits) if bits < 17 else 0
            if levels < 2 or not _same_rate(f_value * math.log2(levels) / 256, rate):
                raise UsageError(
                    f"{self.name}: {rate:g} bpp is not F * log2(L) / 256 for F={f_value} and "
                    "a whole L >= 2"
                )
            return self._random_model(f_value, levels)
        return self._load(self._entry_for_rate(rate))

    def model_for_bitstream(self, header: GanHeader) -> LoadedGan:
        """The generator that made a bitstream: same F, L and identity; CodecError if none."""
        if self.is_random:
            candidates = [self._random_model(header.bottleneck, header.levels)]
        else:
            candidates = [
                self._load(e)
                for e in self.index()
                if (e.config.bottleneck, e.config.levels) == (header.bottleneck, header.levels)
            ]
        matching = [c for c in candidates if c.identity == header.identity]
        if header.entropy_model is not None:  # among equal generators, the one with its counts
            matching.sort(
                key=lambda c: c.entropy is None or c.entropy.identity != header.entropy_model
            )
        if matching:
            return matching[0]
        ours = ", ".join(f"{c.identity.hex()} ({c.source})" for c in candidates) or "none"
        raise CodecError(
            f"{self.name}: bitstream made by model {header.identity.hex()} (F="
            f"{header.bottleneck}, L={header.levels}); this codec's models for that F and L: "
            f"{ours}. Decode with the weights that encoded it"
        )

    def _no_entropy_model(self, source: str) -> CodecUnavailable:
        return CodecUnavailable(
            f"{self.name}: entropy_coding=true needs the checkpoint's {ENTROPY_KEY} (per-map "
            f"level counts), and {source} has none (it predates them, or its fit did not "
            "finish). Re-run the bench train gan command that made it (with --resume it only "
            "fits them: training is done), or add them: " + FIT_COMMAND.format(checkpoint=source)
        )

    def _entropy_tables(self, header: GanHeader, loaded: LoadedGan) -> EntropyTables:
        """The tables of an entropy-coded bitstream's model; CodecError if ``loaded`` lacks them."""
        assert header.entropy_model is not None
        wanted = header.entropy_model.hex()
        if loaded.entropy is None:
            raise CodecError(
                f"{self.name}: the bitstream is entropy-coded with entropy model {wanted}, but "
                f"{loaded.source} has no {ENTROPY_KEY}. Decode with the checkpoint that "
                "encoded it"
            )
        if loaded.entropy.identity != header.entropy_model:
            raise CodecError(
                f"{self.name}: the bitstream is entropy-coded with entropy model {wanted}; "
                f"{loaded.source} has entropy model {loaded.entropy.describe()}. Decode with the "
                "checkpoint that encoded it"
            )
        tables = loaded.tables()
        assert tables is not None
        return tables

    def prepare(self, rates: Iterable[float]) -> dict[str, Any]:
        if self.is_random:
            return {
                "weights": f"random (seeded, width {self.random_width:g}; pipeline tests only, "
                "not a trained codec)"
                + ("; entropy coding with uniform counts" if self.entropy_coding else "")
            }
        from bench.download import sha256_of

        weights: dict[str, dict[str, Any]] = {}
        training_files: set[str] = set()
        missing: list[str] = []
        for rate in rates:
            try:
                entry = self._entry_for_rate(float(rate))
            except CodecUnavailable as exc:  # costs that rate point's records only
                weights[f"{rate:g}"] = {"missing": str(exc)}
                missing.append(str(exc))
                continue
            entropy = read_entropy_model(entry.path)
            if self.entropy_coding and entropy is None:
                unavailable = self._no_entropy_model(str(entry.path))
                weights[f"{rate:g}"] = {"missing": str(unavailable)}
                missing.append(str(unavailable))
                continue
            training = checkpoint_training(entry.path)
            weights[f"{rate:g}"] = {
                "file": str(entry.path),
                "sha256": sha256_of(entry.path),
                "config": asdict(entry.config),
                "note": "unverified: trained by bench",
                "training": {k: v for k, v in training.items() if k != "images"},
                "training_images": len(training.get("images", [])),
            }
            if entropy is not None:
                weights[f"{rate:g}"][ENTROPY_KEY] = {
                    "identity": entropy.identity.hex(),
                    "images": entropy.images,
                    "source": entropy.source,
                }
            training_files |= {
                str(i["file_sha256"]) for i in training.get("images", []) if i.get("file_sha256")
            }
        if missing and len(missing) == len(weights):
            raise CodecUnavailable(missing[0])
        return {"weights": weights, TRAINING_FILES: sorted(training_files)}

    # ---- coding

    def _check_size(self, height: int, width: int) -> None:
        check_size(self.name, height, width, self.max_megapixels)

    def _synchronize(self) -> None:
        synchronize(self.device)

    def encode(self, image: Image, rate: float) -> bytes:
        return self.encode_batch([image], rate)[0]

    def decode(self, data: bytes) -> Image:
        return self.decode_batch([data])[0]

    def encode_batch(self, images: Sequence[Image], rate: float) -> list[bytes]:
        import torch
        import torch.nn.functional as F

        checked = [check_image(image, self.name) for image in images]
        height, width = checked[0].shape[:2]
        if any(image.shape != checked[0].shape for image in checked):
            raise CodecError(f"{self.name}: a batch needs images of one shape")
        self._check_size(height, width)
        loaded = self.model(rate)
        config = loaded.config
        tables = None
        if self.entropy_coding:
            tables = loaded.tables()
            if tables is None:
                raise self._no_entropy_model(loaded.source)
        padding = gan_padding(height, width)
        top, bottom, left, right = padding
        x = torch.from_numpy(np.stack(checked)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        x = F.pad(x.to(self.device), (left, right, top, bottom), mode="replicate")
        with torch.inference_mode():
            indices = loaded.generator.encode(x).to("cpu").numpy()
        self._synchronize()
        header = GanHeader(
            loaded.identity,
            height,
            width,
            padding,
            config.bottleneck,
            config.levels,
            int(indices.shape[2]),
            int(indices.shape[3]),
            tables.identity if tables is not None else None,
        )
        info = {  # bpp_estimated: the nominal rate, beside the measured bpp of the bytes
            "bpp_estimated": config.nominal_bpp,
            "header_bytes": header.header_bytes,
            "padding": f"{top},{bottom},{left},{right}",
        }
        return [Bitstream(write_gan_bitstream(header, idx, tables), info) for idx in indices]

    def decode_batch(self, streams: Sequence[bytes]) -> list[Image]:
        import torch

        from bench.codecs.learned.gan.model import to_uint8

        headers = [parse_gan_bitstream(bytes(data))[0] for data in streams]
        if len(set(headers)) > 1:
            return [image for data in streams for image in self.decode_batch([data])]
        header = headers[0]
        loaded = self.model_for_bitstream(header)
        tables = None if header.entropy_model is None else self._entropy_tables(header, loaded)
        parsed = [read_gan_bitstream(bytes(data), tables)[1] for data in streams]
        indices = torch.from_numpy(np.stack(parsed)).to(self.device)
        with torch.inference_mode():
            x_hat = loaded.generator.decode(indices)
        top, _, left, _ = header.padding
        x_hat = x_hat[:, :, top : top + header.height, left : left + header.width]
        decoded = to_uint8(x_hat).permute(0, 2, 3, 1).to("cpu").numpy()
        self._synchronize()
        return [np.ascontiguousarray(image) for image in decoded]


__all__ = ["GanCodec", "LoadedGan"]
