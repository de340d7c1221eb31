"""What the modulated autoencoder contributes to training: one step over every lambda of its
set on the same batch (``MaeTrainable``), and ``bench train mae``'s options (``MaeTraining``).

Loss (the student report's eq. 3, and the authors' code): sum over lambda of
w_lambda * (bpp_lambda + lambda * MSE_lambda), MSE on [0, 1], with w = 1 (the report's and the
authors' choice) or, with ``--lambda-weights inverse``, w = 1 / lambda: each term is then
MSE + bpp / lambda, so every lambda's term has the same scale of gradient. With w = 1 the
largest lambda's distortion dominates the shared weights' gradient (its term is about 50 times
the smallest one's at lambda 64..4096) and the modulation learns to separate the rates only
slowly (measured: after 750 CPU steps the four lambda values coded within 1 % of each other's
bpp). Adam on the networks; a separate Adam (1e-3) on the entropy bottlenecks' quantiles for
their auxiliary loss.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from bench.codecs.learned.mae.model import PRESETS, MaeConfig, MaeNetwork, rate_distortion
from bench.errors import UsageError
from bench.training import AmpContext, ImageSampler, Training, TrainingOptions
from bench.training.loop import seed_everything

if TYPE_CHECKING:
    from bench.training.loop import TrainingResult
    from bench.training.registry import Log

LEARNING_RATES = {"paper": 1e-4, "authors": 1e-4, "cpu": 5e-4}
"""Adam's rate by preset: the authors' 1e-4; 5e-4 for short CPU runs (the spec's CHOICE)."""
MODULATION_STARTS = ("identity", "sqrt-lambda")
"""How the modulation networks start: exp(0) = 1 everywhere (the authors'), or the latent's
(de)modulation at (lambda / lambda_ref) ** (+-1/2) (``MaeNetwork.start_with_rate_scaling``)."""
LAMBDA_WEIGHTS = ("equal", "inverse")
"""w_lambda of the loss: 1 (the report's eq. 3 with w = 1, the authors' code) or 1 / lambda."""
AUX_LEARNING_RATE = 1e-3


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of an MSE on [0, 1] (NaN stays NaN)."""
    if math.isnan(mse):
        return math.nan
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


class MaeTrainable:
    """The modulated autoencoder (or its single-rate baseline) as a ``Trainable``."""

    name = "mae"

    def __init__(
        self,
        config: MaeConfig,
        *,
        learning_rate: float,
        lambda_weights: str = "equal",
        modulation_lr_scale: float = 1.0,
        clip_grad_norm: float | None = None,
        modulation_start: str = "identity",
        device: str = "cpu",
    ) -> None:
        if lambda_weights not in LAMBDA_WEIGHTS:
            raise ValueError(f"lambda_weights {lambda_weights!r}: expected equal or inverse")
        if modulation_start not in MODULATION_STARTS:
            raise ValueError(f"modulation_start {modulation_start!r}: expected identity or "
                             "sqrt-lambda")  # fmt: skip
        self.mae_config = config
        self.learning_rate = float(learning_rate)
        self.lambda_weights = lambda_weights
        self.modulation_lr_scale = float(modulation_lr_scale)
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self.modulation_start = modulation_start
        self.model = MaeNetwork(config)
        if modulation_start == "sqrt-lambda":
            self.model.start_with_rate_scaling(0.5)
        self.model.to(device)
        named = list(self.model.named_parameters())
        scaled = ("modulation.", "demodulation.")
        modulation = [p for n, p in named if n.startswith(scaled)]
        quantiles = [p for n, p in named if n.endswith(".quantiles")]
        rest = [p for n, p in named if not n.endswith(".quantiles") and not n.startswith(scaled)]
        # One group unless scaled, so the optimiser state of earlier checkpoints still loads.
        main = [p for n, p in named if not n.endswith(".quantiles")]
        groups: list[dict[str, Any]] = [{"params": main, "lr": self.learning_rate}]
        if modulation and self.modulation_lr_scale != 1.0:
            groups = [
                {"params": rest, "lr": self.learning_rate},
                {"params": modulation, "lr": self.learning_rate * self.modulation_lr_scale},
            ]
        self.main = torch.optim.Adam(groups, lr=self.learning_rate)
        self.aux = torch.optim.Adam(quantiles, lr=AUX_LEARNING_RATE)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": self.main, "aux": self.aux}

    def config(self) -> dict[str, Any]:
        return self.mae_config.to_dict()

    def hyperparameters(self) -> dict[str, Any]:
        """What a resume keeps (``--lr``, ``--lambda-weights``): the trainer refuses another
        value. (w = 1 is not named, so checkpoints from before the option still resume.)"""
        kept: dict[str, Any] = {"lr": self.learning_rate}
        if self.lambda_weights != "equal":
            kept["lambda_weights"] = self.lambda_weights
        if self.modulation_lr_scale != 1.0:
            kept["modulation_lr_scale"] = self.modulation_lr_scale
        if self.clip_grad_norm is not None:
            kept["clip_grad_norm"] = self.clip_grad_norm
        if self.modulation_start != "identity":
            kept["modulation_start"] = self.modulation_start
        return kept

    def weight(self, lam: float) -> float:
        """w_lambda of the loss."""
        return 1.0 if self.lambda_weights == "equal" else 1.0 / lam

    def step(self, batch: Tensor, amp: AmpContext) -> dict[str, float]:
        total = torch.zeros((), device=batch.device)
        shown: dict[str, float] = {}
        with amp.autocast():
            for lam in self.mae_config.lambdas:
                out = self.model(batch, lam)
                out = {
                    "x_hat": out["x_hat"].float(),
                    "likelihoods": {k: v.float() for k, v in out["likelihoods"].items()},
                }
                loss, bpp, mse = rate_distortion(batch, out, lam)
                total = total + self.weight(lam) * loss
                shown[f"bpp@{lam:g}"] = float(bpp.detach())
                shown[f"psnr@{lam:g}"] = psnr_of_mse(float(mse.detach()))
        amp.backward(total, self.main, clip_grad_norm=self.clip_grad_norm)
        aux = self.model.aux_loss()
        amp.backward(aux, self.aux)
        return {"loss": float(total.detach()), **shown, "aux": float(aux.detach())}


class MaeTraining(Training):
    """``bench train mae``: the modulated autoencoder, or (``--single-lambda``) the
    single-rate baseline."""

    name = "mae"
    description = "the variable-rate modulated autoencoder (one checkpoint for its lambda set)"
    details = (
        "Trains Yang et al.'s modulated autoencoder (Balle 2017 factorized prior + six "
        "modulation networks): every lambda of the set on the same batch each step, loss "
        "sum(bpp + lambda * MSE) with MSE on [0, 1], Adam plus an auxiliary Adam (1e-3) for the "
        "entropy bottlenecks. --single-lambda L trains the single-rate baseline (no modulation). "
        "Presets: paper (N=128, hidden 64, lambda 64..4096; the report used 256 crops, batch 1), "
        "authors (N=192, hidden 50, lambda 128,512,2048; 240 crops, batch 8), cpu (N=64, "
        "hidden 32; 128 crops, batch 8, lr 5e-4). Resumable (--resume), checkpointed, seeded."
    )
    defaults: ClassVar[dict[str, Any]] = {"dataset": "folder", "batch_size": 8, "crop": "128x128"}

    def __init__(
        self,
        config: MaeConfig,
        *,
        learning_rate: float,
        lambda_weights: str = "equal",
        modulation_lr_scale: float = 1.0,
        clip_grad_norm: float | None = None,
        modulation_start: str = "identity",
    ) -> None:
        self.mae_config = config
        self.modulation_start = modulation_start
        self.clip_grad_norm = clip_grad_norm
        self.learning_rate = learning_rate
        self.lambda_weights = lambda_weights
        self.modulation_lr_scale = modulation_lr_scale

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--preset", choices=list(PRESETS), default="cpu",
                            help="paper (N=128), authors (N=192) or cpu (N=64, not a published "
                            "size)")  # fmt: skip
        parser.add_argument("--n", type=int, help="channels N (overrides the preset)")
        parser.add_argument(
            "--hidden", type=int, help="modulation networks' hidden width (overrides the preset)"
        )
        parser.add_argument("--lambdas", help="the lambda set, comma-separated (e.g. 64,256)")
        parser.add_argument(
            "--single-lambda",
            type=float,
            metavar="L",
            help="train the single-rate baseline at lambda L (no modulation)",
        )
        parser.add_argument("--shared-entropy-model", action="store_true",
                            help="one entropy model for every lambda (codes lambda values "
                            "between the trained ones, at some cost in rate)")  # fmt: skip
        parser.add_argument("--lr", type=float, help="Adam's rate (paper/authors 1e-4, cpu 5e-4)")
        parser.add_argument("--lambda-weights", choices=LAMBDA_WEIGHTS, default="equal",
                            help="w of the loss sum(w (bpp + lambda MSE)): equal (w = 1, the "
                            "report's and the authors') or inverse (w = 1/lambda: every lambda "
                            "weighs alike; the rates separate much sooner)")  # fmt: skip
        parser.add_argument("--modulation-lr-scale", type=float, default=1.0, metavar="K",
                            help="the modulation networks learn at K times --lr (default 1; "
                            "they start at zero and move slowly in short runs)")  # fmt: skip
        parser.add_argument("--clip-grad-norm", type=float, metavar="C",
                            help="clip the networks' gradient norm to C (default: none, as "
                            "the authors; CompressAI's example trainer clips at 1.0)")  # fmt: skip
        parser.add_argument("--modulation-start", choices=MODULATION_STARTS, default="identity",
                            help="identity (every scale exp(0) = 1, the authors') or "
                            "sqrt-lambda (the latent's modulation starts at (lambda / "
                            "lambda_ref)^(1/2), its demodulation at the inverse: the rates "
                            "start apart)")  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MaeTraining:
        if args.steps is None and args.epochs is None:
            raise UsageError("bench train mae needs --steps or --epochs")
        lambdas = None
        if args.lambdas:
            try:
                lambdas = tuple(float(v) for v in args.lambdas.split(","))
            except ValueError:
                raise UsageError(f"--lambdas {args.lambdas!r}: expected numbers") from None
        changes: dict[str, Any] = {"n": args.n, "hidden": args.hidden, "lambdas": lambdas}
        if args.single_lambda is not None:
            if lambdas is not None or args.shared_entropy_model:
                raise UsageError("--single-lambda trains one lambda: drop --lambdas and "
                                 "--shared-entropy-model")  # fmt: skip
            if args.modulation_start != "identity":
                raise UsageError("--modulation-start: a single-lambda model has no modulation")
            changes.update(lambdas=(args.single_lambda,), modulated=False)
        else:
            changes["shared_entropy_model"] = bool(args.shared_entropy_model) or None
        try:
            config = MaeConfig.from_preset(args.preset, **changes)
        except ValueError as exc:
            raise UsageError(f"bench train mae: {exc}") from None
        lr = args.lr if args.lr is not None else LEARNING_RATES[args.preset]
        if not (args.modulation_lr_scale > 0 and math.isfinite(args.modulation_lr_scale)):
            raise UsageError(f"--modulation-lr-scale {args.modulation_lr_scale}: expected > 0")
        clip = args.clip_grad_norm
        if clip is not None and not (clip > 0 and math.isfinite(clip)):
            raise UsageError(f"--clip-grad-norm {clip}: expected a positive number")
        return cls(config, learning_rate=lr, lambda_weights=args.lambda_weights,
                   modulation_lr_scale=args.modulation_lr_scale,
                   clip_grad_norm=clip, modulation_start=args.modulation_start)  # fmt: skip

    def check(self, options: TrainingOptions) -> None:
        crop = options.crop
        if crop is not None and (crop[0] % 16 or crop[1] % 16):
            raise UsageError(f"--crop {crop[0]}x{crop[1]}: MAE needs multiples of 16")

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> MaeTrainable:
        seed_everything(options.seed)  # the initial weights too
        return MaeTrainable(self.mae_config, learning_rate=self.learning_rate,
                            lambda_weights=self.lambda_weights,
                            modulation_lr_scale=self.modulation_lr_scale,
                            clip_grad_norm=self.clip_grad_norm,
                            modulation_start=self.modulation_start,
                            device=options.device)  # fmt: skip

    def banner(self, trainable: Any, sampler: ImageSampler, options: TrainingOptions) -> str:
        params = sum(p.numel() for p in trainable.model.parameters())
        return (
            f"bench train mae: {self.mae_config.describe()}, {params:,} parameters, lr "
            f"{self.learning_rate:g} (modulation x{self.modulation_lr_scale:g}), lambda weights "
            f"{self.lambda_weights}, modulation start {self.modulation_start}; "
            f"{len(sampler.images)} images of {sampler.dataset.tag} -> {options.out}"
        )

    def finish(self, trainable: Any, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        rates = ",".join(f"{v:g}" for v in self.mae_config.lambdas)
        return (
            f"trained to step {result.step} (epoch {result.epoch}) in {result.seconds / 60:.1f} "
            f"min; last step: {shown}\ncheckpoint: {result.checkpoint}\nuse it: bench run "
            f"--codecs mae --rates mae={rates} --codec-option mae.weights={result.checkpoint}"
        )
