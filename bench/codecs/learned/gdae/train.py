"""What GDAE contributes to training: its generator and PatchGAN, the two-phase schedule
(``GdaeTrainable``), the level counts for ``latent_coder=rans``, and ``bench train gdae``'s
options (``GdaeTraining``).

Loss (the slides' 10:5:2; the spec's section 2): phase 1 trains the generator alone on
``10 * MSE + 2 * (1 - SSIM)``; phase 2 adds ``5 * (-log D(x_hat))`` (the non-saturating GAN
loss) and trains the discriminator by binary cross-entropy on x (real) against
``x_hat.detach()`` (fake), half the sum of the two. MSE is on the [0, 1] scale, SSIM is
pytorch-msssim's single-scale SSIM (11-tap Gaussian, sigma 1.5) on [0, 1]. Adam, lr 1e-4,
betas (0.5, 0.999) for both networks. The phases follow the step count (``--phases A,B``, by
default 60 % / 40 % of ``--steps``).

Data (the slides): random scaling by a factor in 0.5..2.0, then a random crop (``--crop``,
default 256, 96 for the cpu preset). The sampler cuts windows ``--crop / 0.5`` large
(rounded up to a multiple of 16); each step scales each window by its own factor, uniform in
the range (bilinear, antialiased when shrinking) and crops ``--crop`` from it at random. The
factors and crops come from (seed, step) alone, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.codecs.base import check_image
from bench.codecs.learned.gdae.checkpoint import add_entropy_model
from bench.codecs.learned.gdae.coder import count_levels
from bench.codecs.learned.gdae.model import (
    PRESETS,
    GdaeConfig,
    GdaeGenerator,
    PatchDiscriminator,
    pad_replicate,
    parameter_count,
)
from bench.errors import UsageError
from bench.training import AmpContext, ImageSampler, Training, TrainingOptions
from bench.training.loop import seed_everything
from bench.types import Image

if TYPE_CHECKING:
    from bench.training.loop import TrainingResult
    from bench.training.registry import Log

LEARNING_RATE = 1e-4
BETAS = (0.5, 0.999)
LOSS_WEIGHTS = {"mse": 10.0, "gan": 5.0, "ssim": 2.0}
"""lambda1 : lambda2 : lambda3 = 10 : 5 : 2 (the slides)."""
PHASE_SPLIT = 0.6
"""The share of ``--steps`` of phase 1 (MSE + SSIM) by default; the rest adds the GAN."""
SCALE_RANGE = (0.5, 2.0)
PRESET_CROP = {"full": 256, "cpu": 96}
PRESET_BATCH = {"full": 8, "cpu": 8}
SSIM_WINDOW = 11


def split_steps(steps: int) -> tuple[int, int]:
    """``steps`` split 60 / 40 between the phases (each at least 1)."""
    if steps < 2:
        raise UsageError("bench train gdae needs at least 2 steps (one per phase)")
    first = min(max(1, round(steps * PHASE_SPLIT)), steps - 1)
    return first, steps - first


def window_side(crop: int, low: float) -> int:
    """The side of the sampler's windows: ``crop / low`` rounded up to a multiple of 16 (so
    that the smallest scaling still covers the crop)."""
    return math.ceil(crop / low / 16 - 1e-9) * 16


def augment(batch: Tensor, crop: tuple[int, int], scale_range: tuple[float, float],
            rng: np.random.Generator) -> Tensor:  # fmt: skip
    """Scale each image of a [0, 1] batch by a factor uniform in ``scale_range``, then crop
    ``crop`` from it at random (the crop never needs more than the scaled image)."""
    low, high = scale_range
    out = []
    for image in batch:
        height, width = image.shape[-2:]
        factor = float(rng.uniform(low, high)) if high > low else low
        size = (max(crop[0], round(height * factor)), max(crop[1], round(width * factor)))
        if size != (height, width):
            image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                                  antialias=factor < 1)[0]  # fmt: skip
        top = int(rng.integers(0, size[0] - crop[0] + 1))
        left = int(rng.integers(0, size[1] - crop[1] + 1))
        out.append(image[:, top : top + crop[0], left : left + crop[1]])
    return torch.stack(out).clamp(0, 1)


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of an MSE on the [0, 1] scale."""
    if math.isnan(mse):
        return math.nan
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


class GdaeTrainable:
    """GDAE's generator and discriminator, trained in two phases.

    Args:
        config: the networks.
        phases: steps of phase 1 (MSE + SSIM) and of phase 2 (+ GAN).
        crop: (height, width) the networks see, cut from the sampler's (larger) windows.
        scale_range: the random scaling factors' range.
        weights: the loss weights ``mse``, ``ssim``, ``gan``.
        learning_rate, betas: Adam's, for both networks.
        seed: of the scaling and cropping.
    """

    name = "gdae"

    def __init__(
        self,
        config: GdaeConfig,
        *,
        phases: tuple[int, int],
        crop: tuple[int, int],
        scale_range: tuple[float, float] = SCALE_RANGE,
        weights: dict[str, float] | None = None,
        learning_rate: float = LEARNING_RATE,
        betas: tuple[float, float] = BETAS,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.gdae_config = config
        self.phases = (int(phases[0]), int(phases[1]))
        self.crop = (int(crop[0]), int(crop[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.weights = {**LOSS_WEIGHTS, **(weights or {})}
        self.learning_rate = float(learning_rate)
        self.betas = (float(betas[0]), float(betas[1]))
        self.seed = int(seed)
        self.generator = GdaeGenerator(config).to(device)
        self.discriminator = PatchDiscriminator(config).to(device)
        self._optimizers = {
            name: torch.optim.Adam(module.parameters(), lr=self.learning_rate, betas=self.betas)
            for name, module in self.modules().items()
        }
        self.steps_done = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._optimizers)

    def config(self) -> dict[str, Any]:
        return self.gdae_config.to_dict()

    def hyperparameters(self) -> dict[str, Any]:
        """What a resume keeps: another value is refused."""
        return {"phases": list(self.phases), "lr": self.learning_rate, "betas": list(self.betas),
                "loss_weights": dict(self.weights), "crop": list(self.crop),
                "scale_range": list(self.scale_range), "ssim_window": SSIM_WINDOW}  # fmt: skip

    def checkpoint_extra(self) -> dict[str, Any]:
        w = self.weights
        return {
            "objective": {
                "phase 1": f"{w['mse']:g} * MSE + {w['ssim']:g} * (1 - SSIM), on [0, 1]",
                "phase 2": f"phase 1 + {w['gan']:g} * -log D(x_hat); D: BCE, real x vs x_hat",
                "latent_channels": self.gdae_config.latent_channels,
            },
            "size": self.gdae_config.describe(),
            "schedule": {"steps_done": self.steps_done, **self.hyperparameters()},
        }

    def restore_extra(self, extra: dict[str, Any]) -> None:
        """The step count; the loop has already refused other hyper-parameters."""
        self.steps_done = int(extra.get("schedule", {}).get("steps_done", 0))

    def phase(self) -> int:
        """1 or 2: the phase of the next step."""
        return 1 if self.steps_done < self.phases[0] else 2

    def augment(self, batch: Tensor) -> Tensor:
        """This step's scaled and cropped batch (a function of seed and step alone)."""
        rng = np.random.default_rng([self.seed, 7, self.steps_done])
        return augment(batch, self.crop, self.scale_range, rng)

    def step(self, batch: Tensor, amp: AmpContext) -> dict[str, float]:
        from pytorch_msssim import ssim

        phase = self.phase()
        x = self.augment(batch)
        with amp.autocast():
            x_hat, _ = self.generator(x)
        x_hat = x_hat.float()
        mse = torch.mean((x_hat - x) ** 2)
        similarity = ssim(x_hat, x, data_range=1.0, win_size=SSIM_WINDOW, size_average=True)
        loss = self.weights["mse"] * mse + self.weights["ssim"] * (1 - similarity)
        gan = d_loss = torch.zeros((), device=x.device)
        if phase == 2:
            with amp.autocast():
                real, fake = self.discriminator(x), self.discriminator(x_hat.detach())
            d_loss = 0.5 * (
                F.binary_cross_entropy_with_logits(real.float(), torch.ones_like(real.float()))
                + F.binary_cross_entropy_with_logits(fake.float(), torch.zeros_like(fake.float()))
            )
            amp.backward(d_loss, self._optimizers["discriminator"])
            with amp.autocast():
                scores = self.discriminator(x_hat).float()
            gan = F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
            loss = loss + self.weights["gan"] * gan
        amp.backward(loss, self._optimizers["generator"])
        self.steps_done += 1
        mse_value = float(mse.detach())
        return {
            "loss": float(loss.detach()),
            "mse": mse_value,
            "psnr": psnr_of_mse(mse_value),
            "ssim": float(similarity.detach()),
            "gan": float(gan.detach()),
            "d": float(d_loss.detach()),
            "phase": float(phase),
        }


def fit_level_counts(generator: GdaeGenerator, images: Iterable[Image]) -> np.ndarray:
    """Per-map level counts (C, L) of ``generator``'s indices over whole ``images``, each
    coded as ``GdaeCodec`` codes it (edge-padded to a multiple of 8, eval mode). The
    generator's train/eval mode is restored afterwards."""
    config = generator.config
    device = next(generator.parameters()).device
    counts = np.zeros((config.latent_channels, config.levels), dtype=np.int64)
    training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            for image in images:
                pixels = np.array(check_image(image, "gdae"))
                x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255.0)
                x, _ = pad_replicate(x.to(device))
                counts += count_levels(generator.encode(x).cpu().numpy(), config.levels)
    finally:
        generator.train(training)
    return counts


def fit_and_store(generator: GdaeGenerator, sampler: ImageSampler, checkpoint: Path,
                  log: Log) -> str:  # fmt: skip
    """Fit the level counts on the sampler's whole images and store them in ``checkpoint``;
    returns what they give."""
    log(f"fitting the rANS model: level counts over {len(sampler)} whole images")
    counts = fit_level_counts(generator, (sampler.image(i) for i in range(len(sampler))))
    add_entropy_model(checkpoint, counts, len(sampler), "training images")
    p = (counts + 1) / (counts + 1).sum(axis=1, keepdims=True)
    positions = max(int(counts[0].sum()), 1)
    ideal = float(-(counts * np.log2(p)).sum()) / positions / 64
    return (f"rANS level counts in {checkpoint}: about {ideal:.4g} bpp on the training images "
            f"(raw {generator.config.raw_bpp:g}); code with --codec-option "
            "gdae.latent_coder=rans")  # fmt: skip


def _pair(text: str, what: str, kind: type = int) -> tuple[Any, ...]:
    try:
        return tuple(kind(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected numbers separated by commas") from None


class GdaeTraining(Training):
    """``bench train gdae``: one GDAE per latent width C (its rate point)."""

    name = "gdae"
    description = "the GAN dense autoencoder GDAE (one checkpoint per latent width C), 2 phases"
    details = (
        "Trains GDAE (Wang et al., ICPR 2020, as the spec reconstructs it) in two phases: "
        "10 MSE + 2 (1 - SSIM), then + 5 (-log D(x_hat)) with a 70x70 PatchGAN trained by BCE. "
        "Adam 1e-4, betas (0.5, 0.999). Data: random scaling x0.5-2.0, then random crops "
        "(--crop HxW, what the networks see: default 256x256, cpu 96x96; the sampler cuts "
        "windows --crop / LOW, rounded up to 16, so images must be at least that large: "
        "192x192 for the cpu preset). Presets: full (the spec's widths 64/128/128/128, "
        "growth 32, D nf 64; crop 256), cpu (32/64/64/64, growth 16, D nf 32; crop 96, "
        "batch 8). C = 16, L = 8 in both. After training, per-map level counts over the "
        "training images are stored for latent_coder=rans. Resumable (--resume), "
        "checkpointed, seeded."
    )
    defaults: ClassVar[dict[str, Any]] = {"dataset": "folder", "batch_size": None, "crop": None}

    def __init__(
        self,
        config: GdaeConfig,
        *,
        phases: tuple[int, int] | None,
        crop: tuple[int, int],
        scale_range: tuple[float, float],
        weights: dict[str, float],
        learning_rate: float,
        beta1: float,
    ) -> None:
        self.gdae_config = config
        self.phases = phases
        self.crop = crop
        self.scale_range = scale_range
        self.weights = weights
        self.learning_rate = learning_rate
        self.beta1 = beta1

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--preset", choices=list(PRESETS), default="cpu",
                            help="full (the spec's widths, generator 2.71 M parameters) or cpu "
                            "(half widths, 0.69 M; not a published size)")  # fmt: skip
        parser.add_argument(
            "--channels",
            metavar="C0,C1,C2,C3",
            help="widths at 1, 1/2, 1/4, 1/8 resolution (overrides the preset)",
        )
        parser.add_argument("--growth", type=int, help="dense blocks' growth (overrides)")
        parser.add_argument("--latent-channels", type=int, metavar="C",
                            help="latent maps: the rate point (default 16)")  # fmt: skip
        parser.add_argument("--levels", type=int, metavar="L", help="quantiser levels (8)")
        parser.add_argument("--discriminator-width", type=int, metavar="NF",
                            help="PatchGAN's first width (full 64, cpu 32)")  # fmt: skip
        parser.add_argument("--phases", metavar="A,B",
                            help="steps without and with the GAN (default: --steps split "
                            "60/40 %%; B = 0: no GAN, the ablation AE+DC)")  # fmt: skip
        parser.add_argument(
            "--mse-weight",
            type=float,
            default=LOSS_WEIGHTS["mse"],
            help="MSE (on [0, 1]) weight (10)",
        )
        parser.add_argument(
            "--gan-weight",
            type=float,
            default=LOSS_WEIGHTS["gan"],
            help="-log D(x_hat) weight in phase 2 (5)",
        )
        parser.add_argument(
            "--ssim-weight", type=float, default=LOSS_WEIGHTS["ssim"], help="1 - SSIM weight (2)"
        )
        parser.add_argument("--lr", type=float, default=LEARNING_RATE, help="Adam's rate (1e-4)")
        parser.add_argument("--beta1", type=float, default=BETAS[0], help="Adam's beta1 (0.5)")
        parser.add_argument(
            "--scale-range",
            metavar="LOW,HIGH",
            default="0.5,2.0",
            help="random scaling factors before the crop (default 0.5,2.0)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GdaeTraining:
        phases = None
        if args.phases:
            phases = _pair(args.phases, "--phases")
            if len(phases) != 2 or phases[0] < 1 or phases[1] < 0:
                raise UsageError(f"--phases {args.phases!r}: expected two step counts, the "
                                 "first positive (B = 0 trains without the GAN)")  # fmt: skip
            if args.steps not in (None, sum(phases)):
                raise UsageError(f"--phases add up to {sum(phases)} steps, --steps says "
                                 f"{args.steps}")  # fmt: skip
            args.steps = sum(phases)
        elif args.steps is None:
            raise UsageError("bench train gdae needs --steps or --phases")
        if args.epochs is not None:
            raise UsageError("bench train gdae counts steps: use --steps, not --epochs")
        channels = _pair(args.channels, "--channels") if args.channels else None
        try:
            config = GdaeConfig.from_preset(
                args.preset, channels=channels, growth=args.growth,
                latent_channels=args.latent_channels, levels=args.levels,
                discriminator_width=args.discriminator_width,
            )  # fmt: skip
        except ValueError as exc:
            raise UsageError(f"bench train gdae: {exc}") from None
        side = PRESET_CROP[args.preset]
        crop = _pair(args.crop, "--crop") if args.crop else (side, side)
        if len(crop) != 2 or min(crop) < 32 or crop[0] % 8 or crop[1] % 8:
            raise UsageError(f"--crop {args.crop!r}: expected HEIGHTxWIDTH, multiples of 8, at "
                             "least 32 (the PatchGAN's depth)")  # fmt: skip
        scale_range = _pair(args.scale_range, "--scale-range", float)
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise UsageError(f"--scale-range {args.scale_range!r}: expected 0 < LOW <= HIGH")
        # The sampler cuts windows large enough for the smallest scaling to cover the crop.
        args.crop = "x".join(str(window_side(side, scale_range[0])) for side in crop)
        if args.batch_size is None:
            args.batch_size = PRESET_BATCH[args.preset]
        weights = {"mse": args.mse_weight, "gan": args.gan_weight, "ssim": args.ssim_weight}
        return cls(config, phases=phases, crop=(crop[0], crop[1]),  # type: ignore[arg-type]
                   scale_range=(scale_range[0], scale_range[1]), weights=weights,
                   learning_rate=args.lr, beta1=args.beta1)  # fmt: skip

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> GdaeTrainable:
        assert options.steps is not None  # from_args makes sure
        seed_everything(options.seed)  # the initial weights too
        return GdaeTrainable(
            self.gdae_config,
            phases=self.phases or split_steps(options.steps),
            crop=self.crop,
            scale_range=self.scale_range,
            weights=self.weights,
            learning_rate=self.learning_rate,
            betas=(self.beta1, BETAS[1]),
            seed=options.seed,
            device=options.device,
        )

    def banner(self, trainable: Any, sampler: ImageSampler, options: TrainingOptions) -> str:
        window = "x".join(str(v) for v in options.crop or ())
        return (
            f"bench train gdae: {self.gdae_config.describe()}; generator "
            f"{parameter_count(trainable.generator):,} parameters, discriminator "
            f"{parameter_count(trainable.discriminator):,}; phases "
            f"{'/'.join(str(v) for v in trainable.phases)} steps; crops "
            f"{self.crop[0]}x{self.crop[1]} of windows {window} scaled "
            f"x{self.scale_range[0]:g}-{self.scale_range[1]:g}; {len(sampler.images)} images "
            f"of {sampler.dataset.tag} -> {options.out}"
        )

    def finish(self, trainable: Any, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        lines = []
        if result.checkpoint is not None:
            lines.append(fit_and_store(trainable.generator, sampler, result.checkpoint, log))
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        lines.append(
            f"trained to step {result.step} in {result.seconds / 60:.1f} min; last step: "
            f"{shown}\ncheckpoint: {result.checkpoint}\nuse it: bench run --codecs gdae "
            f"--codec-option gdae.weights={result.checkpoint} (or a directory of one checkpoint "
            f"per latent width C)"
        )
        return "\n".join(lines)


__all__ = ["GdaeTrainable", "GdaeTraining", "augment", "fit_level_counts", "split_steps"]
