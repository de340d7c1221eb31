"""What the importance-map autoencoder contributes to training: its three phases
(``ImpMapTrainable``) and ``bench train impmap``'s options (``ImpMapTraining``).

The paper's procedure (section 3.2): (1) the autoencoder alone on distortion, with the B-bit
quantiser in place and every bit kept; (2) the importance network alone on rate and
distortion, the autoencoder frozen (its batch-norm statistics too); (3) both together. The
phase follows the step count (``--phases A,B,C`` steps; by default the spec's CPU split of
``--steps``, 48 % / 16 % / 36 %).

Loss (the paper's eq. 4-5 are lost; the spec's CHOICE): ``D + lambda * R`` with
``D = MSE(x, x_hat) on 0..255 + K * (1 - MS-SSIM(x, x_hat))``, K = 5000 (Mentzer's weight),
and ``R`` the importance maps' soft sum in bits per pixel (``sum(m) / (H * W)``, an uncoded
upper bound of the rate between 0.25 and 1 bpp for C = 16, B = 4). Phase 1 has no rate term.
MS-SSIM is pytorch-msssim's (5 scales) with an 11-tap window where the crop allows it (the
smaller side must exceed 160) and a 7-tap one otherwise (above 96).

Optimisers: Adam on the autoencoder (phases 1 and 3) and Adam on the importance net (phases 2
and 3), at ``--lr``; in phase 3 the rate falls by 10 at half and again at three quarters of
the phase (the paper's learning rate range is [1e-4, 1e-6]).
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from bench.codecs.learned.impmap.model import PRESETS, ImpMapConfig, ImpMapNetwork
from bench.errors import UsageError
from bench.training import AmpContext, ImageSampler, Training, TrainingOptions
from bench.training.loop import seed_everything

if TYPE_CHECKING:
    from bench.training.loop import TrainingResult
    from bench.training.registry import Log

LEARNING_RATES = {"paper": 1e-4, "cpu": 5e-4}
"""Adam's rate by preset: the paper's 1e-4; 5e-4 for short CPU runs."""
MS_SSIM_WEIGHT = 5000.0
"""K of D = MSE + K (1 - MS-SSIM): Mentzer's ``K_ms_ssim`` (the spec's CHOICE)."""
PHASE_SPLIT = (0.48, 0.16, 0.36)
"""The share of ``--steps`` of each phase by default (the spec's 1200 / 400 / 900)."""


def ms_ssim_window(crop: tuple[int, int] | None) -> int:
    """pytorch-msssim's 5-scale MS-SSIM needs the smaller side above (window - 1) * 16: the
    11-tap window where the crop allows it, else 7.

    Raises:
        UsageError: a crop too small for either (or no crop: whole images of any size).
    """
    if crop is None:
        raise UsageError("bench train impmap needs --crop (MS-SSIM needs sides above 96)")
    side = min(crop)
    if side > 160:
        return 11
    if side > 96:
        return 7
    raise UsageError(f"--crop {crop[0]}x{crop[1]}: the 5-scale MS-SSIM of the loss needs both "
                     f"sides above 96 (e.g. --crop 128x128)")  # fmt: skip


def split_steps(steps: int) -> tuple[int, int, int]:
    """``steps`` in the default proportions of the three phases (each at least 1)."""
    if steps < 3:
        raise UsageError("bench train impmap needs at least 3 steps (one per phase)")
    first = max(1, round(steps * PHASE_SPLIT[0]))
    second = max(1, round(steps * PHASE_SPLIT[1]))
    return first, second, max(1, steps - first - second)


def psnr_of_mse255(mse: float) -> float:
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf


class ImpMapTrainable:
    """The importance-map autoencoder at one lambda, trained in three phases."""

    name = "impmap"

    def __init__(
        self,
        config: ImpMapConfig,
        *,
        lam: float,
        phases: tuple[int, int, int],
        learning_rate: float,
        window: int,
        device: str = "cpu",
    ) -> None:
        self.impmap_config = config
        self.lam = float(lam)
        self.phases = tuple(int(v) for v in phases)
        self.learning_rate = float(learning_rate)
        self.window = int(window)
        self.model = ImpMapNetwork(config).to(device)
        self.autoencoder = torch.optim.Adam(self.model.autoencoder_parameters(), lr=learning_rate)
        self.importance = torch.optim.Adam(self.model.importance_parameters(), lr=learning_rate)
        self.steps_done = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"autoencoder": self.autoencoder, "importance": self.importance}

    def config(self) -> dict[str, Any]:
        return self.impmap_config.to_dict()

    def hyperparameters(self) -> dict[str, Any]:
        """What a resume keeps: another value is refused."""
        return {"lambda": self.lam, "phases": list(self.phases), "lr": self.learning_rate,
                "ms_ssim_window": self.window, "ms_ssim_weight": MS_SSIM_WEIGHT}  # fmt: skip

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "objective": {
                "lambda": self.lam,
                "distortion": f"MSE(0..255) + {MS_SSIM_WEIGHT:g} * (1 - MS-SSIM)",
                "rate": "sum of the importance maps / pixels (bpp bound)",
            },
            "schedule": {"steps_done": self.steps_done, **self.hyperparameters()},
        }

    def restore_extra(self, extra: dict[str, Any]) -> None:
        """The step count; the loop has already refused other hyper-parameters."""
        self.steps_done = int(extra.get("schedule", {}).get("steps_done", 0))

    def phase(self) -> int:
        """1, 2 or 3: the phase of the next step."""
        first, second, _ = self.phases
        if self.steps_done < first:
            return 1
        return 2 if self.steps_done < first + second else 3

    def learning_rate_now(self) -> float:
        first, second, third = self.phases
        if self.phase() < 3:
            return self.learning_rate
        progress = (self.steps_done - first - second) / max(third, 1)
        return self.learning_rate * (1.0 if progress < 0.5 else 0.1 if progress < 0.75 else 0.01)

    def distortion(self, batch: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(D, MSE on 0..255, MS-SSIM) of a batch."""
        from pytorch_msssim import ms_ssim

        mse = torch.mean((x_hat - batch) ** 2) * 255.0**2
        similarity = ms_ssim(x_hat.clamp(0, 1), batch, data_range=1.0, win_size=self.window)
        return mse + MS_SSIM_WEIGHT * (1 - similarity), mse, similarity

    def step(self, batch: Tensor, amp: AmpContext) -> dict[str, float]:
        phase = self.phase()
        for optimizer in (self.autoencoder, self.importance):
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate_now()
        frozen = phase == 2  # the autoencoder: its weights and batch statistics
        for parameter in self.model.autoencoder_parameters():
            parameter.requires_grad_(not frozen)
        if frozen:
            self.model.encoder.eval()
            self.model.decoder.eval()
        with amp.autocast():
            out = self.model(batch, use_importance=phase > 1)
        x_hat = out["x_hat"].float()
        distortion, mse, similarity = self.distortion(batch, x_hat)
        pixels = batch.shape[-2] * batch.shape[-1]
        rate = out["rate"].float().mean() / pixels
        loss = distortion if phase == 1 else distortion + self.lam * rate
        if phase == 1:
            amp.backward(loss, self.autoencoder)
        elif phase == 2:
            amp.backward(loss, self.importance)
        else:
            self.autoencoder.zero_grad(set_to_none=True)
            amp.backward(loss, self.importance)
            amp.step(self.autoencoder)
        self.model.train()
        self.steps_done += 1
        mse_value = float(mse.detach())
        return {
            "loss": float(loss.detach()),
            "mse": mse_value,
            "psnr": psnr_of_mse255(mse_value),
            "ms_ssim": float(similarity.detach()),
            "bpp_bound": float(rate.detach()),
            "phase": float(phase),
        }


class ImpMapTraining(Training):
    """``bench train impmap``: one importance-map autoencoder per lambda."""

    name = "impmap"
    description = "the importance-map autoencoder (one checkpoint per lambda), in three phases"
    details = (
        "Trains Alexandre et al.'s importance-map autoencoder (CLIC 2018) at one lambda in the "
        "paper's three phases: the autoencoder alone on distortion; the importance net alone "
        "on rate + distortion, the autoencoder frozen; both together. Loss D + lambda * R, D = "
        "MSE(0..255) + 5000 (1 - MS-SSIM), R = sum of the importance maps in bits per pixel. "
        "Presets: paper (n=128, 5x3 residual blocks, importance net 64 wide, lr 1e-4; the paper "
        "used batch 10, use --crop 192x192 --batch-size 10), cpu (n=64, 1x3 blocks, importance "
        "net 32 wide, lr 5e-4; 128 crops, batch 8). Resumable (--resume), checkpointed, seeded."
    )
    defaults: ClassVar[dict[str, Any]] = {"dataset": "folder", "batch_size": 8, "crop": "128x128"}

    def __init__(
        self, config: ImpMapConfig, *, lam: float, phases: tuple[int, int, int] | None,
        learning_rate: float,
    ) -> None:  # fmt: skip
        self.impmap_config = config
        self.lam = lam
        self.phases = phases
        self.learning_rate = learning_rate

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--preset", choices=list(PRESETS), default="cpu",
                            help="paper (n=128, 10.2 M parameters) or cpu (n=64, not a "
                            "published size)")  # fmt: skip
        parser.add_argument("--lambda", dest="lam", type=float, required=True, metavar="L",
                            help="the trade-off: loss D + L * R, R in bits per pixel (the "
                            "importance maps' sum); larger gives fewer bits")  # fmt: skip
        parser.add_argument(
            "--phases",
            metavar="A,B,C",
            help="steps of each phase (default: --steps split 48/16/36 %%)",
        )
        parser.add_argument("--n", type=int, help="residual width (overrides the preset)")
        parser.add_argument("--groups", type=int, help="residual groups (overrides the preset)")
        parser.add_argument("--lr", type=float, help="Adam's rate (paper 1e-4, cpu 5e-4)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ImpMapTraining:
        if not (args.lam > 0 and math.isfinite(args.lam)):
            raise UsageError(f"--lambda {args.lam}: expected a positive number")
        phases = None
        if args.phases:
            try:
                phases = tuple(int(v) for v in args.phases.split(","))
            except ValueError:
                raise UsageError(f"--phases {args.phases!r}: expected three step counts") from None
            if len(phases) != 3 or min(phases) < 1:
                raise UsageError(f"--phases {args.phases!r}: expected three positive counts")
            total = sum(phases)
            if args.steps not in (None, total):
                raise UsageError(f"--phases add up to {total} steps, --steps says {args.steps}")
            args.steps = total
        elif args.steps is None:
            raise UsageError("bench train impmap needs --steps or --phases")
        if args.epochs is not None:
            raise UsageError("bench train impmap counts steps: use --steps, not --epochs")
        try:
            config = ImpMapConfig.from_preset(args.preset, n=args.n, groups=args.groups)
        except ValueError as exc:
            raise UsageError(f"bench train impmap: {exc}") from None
        lr = args.lr if args.lr is not None else LEARNING_RATES[args.preset]
        return cls(config, lam=args.lam, phases=phases, learning_rate=lr)  # type: ignore[arg-type]

    def check(self, options: TrainingOptions) -> None:
        ms_ssim_window(options.crop)
        crop = options.crop
        if crop is not None and (crop[0] % 8 or crop[1] % 8):
            raise UsageError(f"--crop {crop[0]}x{crop[1]}: impmap needs multiples of 8")

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> ImpMapTrainable:
        assert options.steps is not None  # from_args makes sure
        seed_everything(options.seed)  # the initial weights too
        return ImpMapTrainable(
            self.impmap_config,
            lam=self.lam,
            phases=self.phases or split_steps(options.steps),
            learning_rate=self.learning_rate,
            window=ms_ssim_window(options.crop),
            device=options.device,
        )

    def banner(self, trainable: Any, sampler: ImageSampler, options: TrainingOptions) -> str:
        params = sum(p.numel() for p in trainable.model.parameters())
        phases = "/".join(str(v) for v in trainable.phases)
        return (
            f"bench train impmap: {self.impmap_config.describe()}, {params:,} parameters, "
            f"lambda {self.lam:g}, phases {phases} steps, lr {self.learning_rate:g}, MS-SSIM "
            f"window {trainable.window}; {len(sampler.images)} images of {sampler.dataset.tag} "
            f"-> {options.out}"
        )

    def finish(self, trainable: Any, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        return (
            f"trained to step {result.step} in {result.seconds / 60:.1f} min; last step: "
            f"{shown}\ncheckpoint: {result.checkpoint}\nuse it: bench run --codecs impmap "
            f"--codec-option impmap.weights={result.checkpoint} (or a directory of one "
            f"checkpoint per lambda)"
        )
