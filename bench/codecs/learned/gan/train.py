"""What the GAN codec contributes to training: ``GanTrainable`` (its models, optimisers and one
step), the entropy model's fit, and ``GanTraining`` (``bench train gan``: its options).

The paper's recipe (Löhdefink et al., section V-C): Adam, learning rate 2e-4, batch 1,
Cityscapes train at half resolution, 50 epochs; the reference code's Adam beta1 = 0.5. One
step updates the multi-scale discriminator on (x, x_hat) with the least-squares loss, then
the generator with LSGAN + feature matching + MSE (``GanConfig`` weights). With ``gan_weight``
and ``fm_weight`` both 0 the discriminator is skipped (a plain MSE autoencoder).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.codecs.base import check_image
from bench.codecs.learned.gan.bitstream import gan_padding
from bench.codecs.learned.gan.checkpoint import (
    add_entropy_model,
    checkpoint_training,
    load_gan_checkpoint,
)
from bench.codecs.learned.gan.config import GanConfig
from bench.codecs.learned.gan.model import (
    GanGenerator,
    MultiScaleDiscriminator,
    discriminator_loss,
    generator_loss,
    parameter_count,
    to_network,
)
from bench.errors import UsageError
from bench.training import (
    AmpContext,
    ImageSampler,
    Training,
    TrainingOptions,
    refuse_other_hyperparameters,
    seed_everything,
    to_signed,
)
from bench.types import Image

if TYPE_CHECKING:
    from bench.datasets.base import Dataset
    from bench.training.loop import TrainingResult
    from bench.training.registry import Log

PAPER_LEARNING_RATE = 2e-4
PAPER_BETAS = (0.5, 0.999)
PAPER_EPOCHS = 50


class GanTrainable:
    """The GAN autoencoder as a ``bench.training.Trainable``.

    Args:
        config: the architecture and loss weights (F, L, width, ...).
        device: where the networks live.
        learning_rate, betas: Adam's, for both networks.
    """

    name = "gan"

    def __init__(
        self,
        config: GanConfig,
        *,
        device: str = "cpu",
        learning_rate: float = PAPER_LEARNING_RATE,
        betas: tuple[float, float] = PAPER_BETAS,
    ) -> None:
        self.gan_config = config
        self.generator = GanGenerator(config).to(device)
        self.discriminator = MultiScaleDiscriminator(config).to(device)
        self.adversarial = config.gan_weight > 0 or config.fm_weight > 0
        self.learning_rate, self.betas = float(learning_rate), (float(betas[0]), float(betas[1]))
        self._optimizers = {
            "generator": torch.optim.Adam(
                self.generator.parameters(), lr=self.learning_rate, betas=self.betas
            ),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=self.learning_rate, betas=self.betas
            ),
        }

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._optimizers)

    def config(self) -> dict[str, Any]:
        return asdict(self.gan_config)

    def hyperparameters(self) -> dict[str, Any]:
        """What a resume keeps (``--lr``, ``--beta1``): another value is refused."""
        return {"lr": self.learning_rate, "betas": list(self.betas)}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"optimiser": {"name": "adam", "lr": self.learning_rate, "betas": list(self.betas)}}

    def restore_extra(self, extra: dict[str, Any]) -> None:
        # Checkpoints written before the trainer compared hyper-parameters hold them here.
        saved = extra.get("optimiser")
        if not isinstance(saved, dict):
            return
        saved = {"lr": saved.get("lr"), "betas": saved.get("betas")}
        refuse_other_hyperparameters(saved, self.hyperparameters())

    def step(self, batch: torch.Tensor, amp: AmpContext) -> dict[str, float]:
        """One discriminator update, then one generator update, on a [0, 1] batch.

        Returns the losses and the batch's PSNR in dB (on 0..255, from the MSE on [-1, 1]).
        """
        x = to_signed(batch)
        out: dict[str, float] = {}
        with amp.autocast():
            x_hat, _ = self.generator(x)
        if self.adversarial:
            with amp.autocast():
                d_loss = discriminator_loss(
                    self.discriminator(x), self.discriminator(x_hat.detach())
                )
            amp.backward(d_loss, self._optimizers["discriminator"])
            out["d"] = float(d_loss.detach())
            with amp.autocast():
                with torch.no_grad():
                    real = self.discriminator(x)
                fake = self.discriminator(x_hat)
                losses = generator_loss(self.gan_config, x, x_hat, real, fake)
        else:
            with amp.autocast():
                mse = torch.nn.functional.mse_loss(x_hat, x)
            zero = torch.zeros((), device=x.device)
            losses = {"total": self.gan_config.mse_weight * mse, "gan": zero,
                      "feature_matching": zero, "mse": mse}  # fmt: skip
        amp.backward(losses["total"], self._optimizers["generator"])
        out.update({f"g_{k}" if k != "mse" else k: float(v.detach()) for k, v in losses.items()})
        out["psnr"] = psnr_of_signed_mse(out["mse"])
        return out


def psnr_of_signed_mse(mse: float) -> float:
    """PSNR in dB of an MSE measured on images scaled to [-1, 1] (peak-to-peak 2).

    >>> round(psnr_of_signed_mse(4 / 255**2), 6)  # one 8-bit step of error everywhere
    48.130804
    """
    if math.isnan(mse):
        return math.nan  # a diverged step: never shown as a perfect one
    return math.inf if mse <= 0 else 10.0 * math.log10(4.0 / mse)


def fit_entropy_model(generator: GanGenerator, images: Iterable[Image]) -> Tensor:
    """Per-map level counts of ``generator``'s indices over ``images``: int64 (F, L).

    Each image ((H, W, 3) uint8, whole) is coded as ``GanCodec`` codes it: scaled to [-1, 1],
    edge-padded to a multiple of 16 (``gan_padding``), encoded in eval mode without gradients
    on the generator's device; ``counts[f, l]`` is how often map ``f`` took level ``l``. The
    generator's train/eval mode is restored afterwards.
    """
    config = generator.config
    maps, levels = config.bottleneck, config.levels
    device = next(generator.parameters()).device
    offsets = (torch.arange(maps) * levels)[:, None]
    counts = torch.zeros(maps * levels, dtype=torch.int64)
    training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            for image in images:
                pixels = check_image(image, "gan")
                if not pixels.flags.writeable:  # torch.from_numpy warns on read-only arrays
                    pixels = pixels.copy()
                top, bottom, left, right = gan_padding(*pixels.shape[:2])
                x = F.pad(
                    to_network(pixels).to(device), (left, right, top, bottom), mode="replicate"
                )
                indices = generator.encode(x)[0].reshape(maps, -1).to("cpu")
                counts += torch.bincount((indices + offsets).reshape(-1), minlength=maps * levels)
    finally:
        generator.train(training)
    return counts.reshape(maps, levels)


def fit_and_store(
    generator: GanGenerator, sampler: ImageSampler, checkpoint: Path, source: str, log: Log
) -> str:
    """Fit the entropy model on the sampler's whole images (no crops, no flips, padded as gan
    pads them), store it in ``checkpoint``; returns what it gives."""
    log(f"fitting the entropy model: level counts over {len(sampler)} whole images")
    counts = fit_entropy_model(generator, (sampler.image(i) for i in range(len(sampler))))
    add_entropy_model(checkpoint, counts, len(sampler), source)
    p = (counts + 1).double() / (counts + 1).sum(dim=1, keepdim=True)
    positions = max(int(counts[0].sum()), 1)  # latent positions seen, per map
    ideal = float(-(counts * p.log2()).sum()) / positions / 256  # code length / 16**2
    return (
        f"entropy model ({source}) in {checkpoint}: about {ideal:.4g} bpp entropy-coded on "
        f"them (nominal {generator.config.nominal_bpp:.4g}); code with --codec-option "
        "gan.entropy_coding=true"
    )


class GanTraining(Training):
    """``bench train gan``: one (F, L), its rate point F*ld(L)/256 bpp."""

    name = "gan"
    description = "the GAN autoencoder for one (F, L): its rate point F*ld(L)/256 bpp"
    details = (
        "Trains the GAN autoencoder of Löhdefink et al. with the paper's recipe by default "
        "(Adam 2e-4, beta1 0.5, batch 1, Cityscapes train at half resolution, 50 epochs). "
        "Resumable (--resume), checkpointed atomically, seeded."
    )
    defaults: ClassVar[dict[str, Any]] = {"dataset": "cityscapes", "batch_size": 1, "crop": None}

    def __init__(self, config: GanConfig | None, *, learning_rate: float, beta1: float,
                 fit_only: bool = False) -> None:  # fmt: skip
        self.config = config
        self.learning_rate, self.beta1 = learning_rate, beta1
        self.fit_only = fit_only

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bottleneck", type=int, default=8, help="F, latent maps (default 8)")
        parser.add_argument(
            "--levels", type=int, default=4, help="L, quantization levels (default 4)"
        )
        parser.add_argument(
            "--width", type=float, default=1.0,
            help="channel factor (1.0 = the paper; 0.125 on a CPU)",
        )  # fmt: skip
        parser.add_argument(
            "--lr", type=float, default=2e-4, help="Adam learning rate (paper: 2e-4)"
        )
        parser.add_argument(
            "--beta1", type=float, default=0.5, help="Adam beta1 (reference code: 0.5)"
        )
        parser.add_argument("--mse-weight", type=float, default=12.0, help="MSE weight (12)")
        parser.add_argument(
            "--fm-weight", type=float, default=10.0, help="feature matching weight (10)"
        )
        parser.add_argument("--gan-weight", type=float, default=1.0, help="LSGAN weight (1)")
        parser.add_argument(
            "--fit-entropy-model-only",
            action="store_true",
            help="train nothing: count the levels of the checkpoint --out over the (whole) "
            "images and store them as its entropy_model, which gan.entropy_coding=true needs "
            "(training does this at its end)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GanTraining:
        if args.steps is not None and args.epochs is not None:
            raise UsageError("give --steps or --epochs, not both")
        if args.fit_entropy_model_only:
            if args.resume:
                raise UsageError("--fit-entropy-model-only trains nothing; drop --resume")
            return cls(None, learning_rate=args.lr, beta1=args.beta1, fit_only=True)
        try:
            config = GanConfig(
                bottleneck=args.bottleneck,
                levels=args.levels,
                width=args.width,
                mse_weight=args.mse_weight,
                fm_weight=args.fm_weight,
                gan_weight=args.gan_weight,
            )
        except ValueError as exc:
            raise UsageError(f"bench train gan: {exc}") from None
        return cls(config, learning_rate=args.lr, beta1=args.beta1)

    def dataset_options(self, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
        if dataset == "cityscapes":
            options.setdefault("resolution", "half")  # the paper trains at half resolution
        return options

    def epochs(self, steps: int | None, epochs: int | None) -> int | None:
        return epochs if epochs is not None or steps else PAPER_EPOCHS

    def run_instead(self, dataset: Dataset, options: TrainingOptions, limit: int | None,
                    log: Log) -> str | None:  # fmt: skip
        if not self.fit_only:
            return None
        out = options.out
        assert out is not None
        _config, generator = load_gan_checkpoint(out)
        sampler = ImageSampler(dataset, crop=None, batch_size=1, seed=options.seed, limit=limit)
        trained_on = [i.get("sha256") for i in checkpoint_training(out).get("images", [])]
        same = trained_on == [i["sha256"] for i in sampler.images]
        source = "training images" if same else f"images of {dataset.tag} (not its training images)"
        return fit_and_store(generator.to(options.device), sampler, out, source, log)

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> GanTrainable:
        assert self.config is not None
        seed_everything(options.seed)  # the initial weights repeat too
        return GanTrainable(
            self.config,
            device=options.device,
            learning_rate=self.learning_rate,
            betas=(self.beta1, 0.999),
        )

    def banner(self, trainable: Any, sampler: ImageSampler, options: TrainingOptions) -> str:
        config = trainable.gan_config
        label = "" if config.width == 1.0 else f", width {config.width:g} (narrower than the paper)"
        return (
            f"bench train gan: F={config.bottleneck}, L={config.levels} "
            f"({config.nominal_bpp:g} bpp nominal){label}; generator "
            f"{parameter_count(trainable.generator):,} parameters, discriminator "
            f"{parameter_count(trainable.discriminator):,}; {len(sampler.images)} images of "
            f"{sampler.dataset.tag} -> {options.out}"
        )

    def finish(self, trainable: Any, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        lines = []
        if result.checkpoint is not None:
            generator, source = trainable.generator, "training images"
            lines.append(fit_and_store(generator, sampler, result.checkpoint, source, log))
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        rate = trainable.gan_config.nominal_bpp
        lines.append(
            f"trained to step {result.step} (epoch {result.epoch}) in {result.seconds / 60:.1f} "
            f"min; last step: {shown}\ncheckpoint: {result.checkpoint}\nuse it: bench run "
            f"--codecs gan --rates gan={rate:g} --codec-option gan.weights={result.checkpoint}"
        )
        return "\n".join(lines)


__all__ = [
    "PAPER_BETAS",
    "PAPER_EPOCHS",
    "PAPER_LEARNING_RATE",
    "GanTrainable",
    "GanTraining",
    "fit_entropy_model",
    "psnr_of_signed_mse",
]
