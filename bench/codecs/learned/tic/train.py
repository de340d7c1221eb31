"""What the variable-rate TIC contributes to training: quality maps, losses, one step
(``TicTrainable``), and ``bench train tic``'s options (``TicTraining``).

The recipe of Chang & Yang (2024), section III-C and IV: stage 1 trains the whole codec on
uniform quality maps (q stratified over the batch: image i of B gets q in [i/B, (i+1)/B)),
stage 2 on two-level maps from thresholded Perlin noise (threshold uniform in [0, 0.3]; the
background value and an ROI value above it both random). The loss is the paper's eq. 3,
255^2 * mean(lambda(q) * (x - x_hat)^2) + bpp, with AdamW (weight decay 0.05), a polynomial
learning-rate schedule, gradient clipping (max norm 1, TransTIC's) and the entropy
bottleneck's auxiliary loss on its own Adam (CompressAI's convention). ``--init tic-hp=PATH``
starts the transforms from TransTIC's released base codec, as the paper did; ``--init
tic=PATH`` continues from a checkpoint of ``bench train tic`` (a fine-tune: new optimiser and
schedule). ``--loss balanced`` weighs the batch's images alike (``rate_distortion_loss``).

All randomness comes from torch's global generator, which the trainer seeds, saves and
restores, so a resumed run draws the same maps as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from bench.codecs.learned.tic.checkpoint import (
    EARLIER_TRAINING,
    load_tic_checkpoint,
    read_tic_checkpoint,
    training_lineage,
)
from bench.codecs.learned.tic.model import (
    TicConfig,
    TicHyperprior,
    build_model,
    rate_distortion_loss,
)
from bench.errors import UsageError
from bench.training import AmpContext, ImageSampler, Trainer, Training, TrainingOptions
from bench.training.loop import refuse_other_hyperparameters, seed_everything
from bench.weights import WeightsError, load_state_dict

if TYPE_CHECKING:
    from bench.training.loop import TrainingResult
    from bench.training.registry import Log

LEARNING_RATE = 1e-4
"""TransTIC's learning rate (its configs); the paper does not restate it."""
WEIGHT_DECAY = 0.05
AUX_LEARNING_RATE = 1e-3
CLIP_MAX_NORM = 1.0
POLY_POWER = 0.9
PERLIN_MAX_THRESHOLD = 0.3
LOSSES = ("paper", "balanced")
"""``paper``: eq. 3 over the batch; ``balanced``: each image's eq.-3 loss over its own value."""


def fade(t: Tensor) -> Tensor:
    """Perlin's quintic fade curve 6t^5 - 15t^4 + 10t^3."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    height: int, width: int, cells: int, generator: torch.Generator | None = None
) -> Tensor:
    """2-D gradient (Perlin) noise of an (height, width) grid with ``cells`` lattice cells
    along the shorter side: random unit gradients at the lattice points, blended with the
    fade curve; values in about [-1, 1] (scaled by sqrt 2), 0 at every lattice point."""
    step = min(height, width) / cells
    rows, cols = math.ceil(height / step) + 1, math.ceil(width / step) + 1
    angles = torch.rand(rows, cols, generator=generator) * (2 * math.pi)
    gradients = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    ys = torch.arange(height, dtype=torch.float32) / step
    xs = torch.arange(width, dtype=torch.float32) / step
    y0, x0 = ys.floor().long(), xs.floor().long()
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]

    def corner(dy: int, dx: int) -> Tensor:
        g = gradients[(y0 + dy)[:, None], (x0 + dx)[None, :]]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    u, v = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return (top * (1 - u) + bottom * u) * math.sqrt(2.0)


def perlin_quality_map(
    height: int,
    width: int,
    threshold: float,
    roi_value: float,
    background: float,
    cells: int = 4,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A two-level quality map: ``roi_value`` where Perlin noise exceeds ``threshold``, else
    ``background`` (a lower threshold gives a larger ROI)."""
    noise = perlin_noise(height, width, cells, generator)
    return torch.where(noise > threshold, torch.tensor(roi_value), torch.tensor(background))


def uniform_quality_maps(batch: int, height: int, width: int) -> Tensor:
    """(B, 1, H, W) uniform maps with q stratified over the batch, in a random order."""
    q = (torch.arange(batch, dtype=torch.float32) + torch.rand(batch)) / batch
    q = q[torch.randperm(batch)]
    return q.view(batch, 1, 1, 1).expand(batch, 1, height, width).contiguous()


def random_perlin_maps(batch: int, height: int, width: int) -> Tensor:
    """(B, 1, H, W) Perlin maps: threshold ~ U(0, 0.3), background ~ U(0, 1), ROI value ~
    U(background, 1), lattice 2, 4 or 8 cells."""
    maps = []
    for _ in range(batch):
        threshold = float(torch.rand(())) * PERLIN_MAX_THRESHOLD
        background = float(torch.rand(()))
        roi = background + float(torch.rand(())) * (1 - background)
        cells = (2, 4, 8)[int(torch.randint(0, 3, ()))]
        maps.append(perlin_quality_map(height, width, threshold, roi, background, cells))
    return torch.stack(maps)[:, None]


def load_base_codec(model: TicHyperprior, path: Path) -> int:
    """Copy TransTIC's released TIC_hp weights (``base_codec_q.pth.tar``) into a prompted
    model of the paper's size: every TIC_hp tensor must fit; the prompt generator keeps its
    initialisation. Returns the number of tensors copied.

    Raises:
        WeightsError: a tensor missing from the file or of another shape (named).
    """
    from compressai.models.utils import remap_old_keys

    state = remap_old_keys("entropy_bottleneck", load_state_dict(path))
    own = model.state_dict()
    base = {k for k in own if "_prompt" not in k}
    missing = sorted(base - set(state))
    unexpected = sorted(set(state) - set(own))
    tables = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
    wrong = sorted(
        k
        for k in base & set(state)
        if not k.endswith(tables) and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{path}: not a TIC_hp of this model's size ({model.n}, {model.m}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}"
        )
    model.load_state_dict({**{k: v for k, v in own.items() if k not in base}, **state})
    return len(state)


def load_tic_weights(model: TicHyperprior, config: TicConfig, path: Path) -> dict[str, Any]:
    """Copy the network of a ``bench train tic`` checkpoint into ``model`` (a fine-tune's start).

    Returns its ``training_lineage`` (steps and images), so that the fine-tune still names
    every image its weights saw.

    Raises:
        WeightsError: not a TIC checkpoint, or one of another network (what differs, named).
    """
    saved_config, saved_model = load_tic_checkpoint(path)
    if saved_config != config:
        raise WeightsError(
            f"{path}: a TIC of {saved_config.describe()}, lambda {saved_config.lambda_curve}; "
            f"this run trains {config.describe()}, lambda {config.lambda_curve}: give the same "
            "--size and --lambda-curve"
        )
    model.load_state_dict(saved_model.state_dict())
    return training_lineage(read_tic_checkpoint(path, mmap=True))


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of an MSE on [0, 1]; NaN stays NaN (a diverged step is never shown as +inf).

    >>> psnr_of_mse(0.01), psnr_of_mse(0.0), psnr_of_mse(float("nan"))
    (20.0, inf, nan)
    """
    if math.isnan(mse):
        return math.nan
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


class TicTrainable:
    """The variable-rate TIC as a ``bench.training.Trainable``.

    Args:
        config: the network and its lambda curve.
        total_steps: the run's length (the polynomial schedule ends there).
        perlin_from: the step where stage 2 (Perlin maps) starts; ``total_steps`` for
            stage 1 only, 0 for stage 2 only.
        device, learning_rate: where and how fast.
        init: weights to start from: ``("tic-hp", path)`` for TransTIC's base codec (paper
            size only) or ``("tic", path)`` for a checkpoint of ``bench train tic`` of the
            same config.
        loss: ``paper`` (eq. 3) or ``balanced`` (see ``rate_distortion_loss``).
    """

    name = "tic"

    def __init__(
        self,
        config: TicConfig,
        *,
        total_steps: int,
        perlin_from: int,
        device: str = "cpu",
        learning_rate: float = LEARNING_RATE,
        init: tuple[str, Path] | None = None,
        loss: str = "paper",
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
        self.tic_config = config
        self.loss = loss
        self.model = build_model(config)
        self.initialised_from = ""
        self.earlier: dict[str, Any] = {"steps": 0, "images": []}
        if init is not None:
            kind, path = init
            if kind == "tic-hp":
                load_base_codec(self.model, path)
            elif kind == "tic":
                self.earlier = load_tic_weights(self.model, config, path)
            else:
                raise ValueError(f"init {kind!r}: expected tic-hp or tic")
            self.initialised_from = f"{kind}={path}"
        self.model.to(device)
        self.total_steps, self.perlin_from = int(total_steps), int(perlin_from)
        self.learning_rate = float(learning_rate)
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, parameter in self.model.named_parameters():
            if name.endswith(".quantiles"):
                continue
            plain = parameter.ndim <= 1 or "relative_position_bias_table" in name
            (no_decay if plain else decay).append(parameter)
        self.main = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": WEIGHT_DECAY},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.learning_rate,
        )
        quantiles = [p for n, p in self.model.named_parameters() if n.endswith(".quantiles")]
        self.aux = torch.optim.Adam(quantiles, lr=AUX_LEARNING_RATE)
        self.steps_done = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": self.main, "aux": self.aux}

    def config(self) -> dict[str, Any]:
        return self.tic_config.to_dict()

    def hyperparameters(self) -> dict[str, Any]:
        """What a resume keeps (``--lr``, ``--loss``): another value is refused."""
        return {"lr": self.learning_rate, "loss": self.loss}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "schedule": {
                "steps_done": self.steps_done,
                "total_steps": self.total_steps,
                "perlin_from": self.perlin_from,
                "learning_rate": self.learning_rate,
                "weight_decay": WEIGHT_DECAY,
                "poly_power": POLY_POWER,
                "clip_max_norm": CLIP_MAX_NORM,
                "initialised_from": self.initialised_from,
                "loss": self.loss,
            },
            EARLIER_TRAINING: self.earlier,
        }

    def restore_extra(self, extra: dict[str, Any]) -> None:
        schedule = extra.get("schedule", {})
        self.steps_done = int(schedule.get("steps_done", 0))
        self.earlier = dict(extra.get(EARLIER_TRAINING, self.earlier))
        # Checkpoints written before the trainer compared hyper-parameters hold them here.
        saved = {"lr": schedule.get("learning_rate", self.learning_rate),
                 "loss": schedule.get("loss", "paper")}  # fmt: skip
        refuse_other_hyperparameters(saved, self.hyperparameters())

    def learning_rate_now(self) -> float:
        """The polynomial schedule: lr * (1 - step / total) ^ 0.9."""
        progress = min(self.steps_done / max(self.total_steps, 1), 1.0)
        return self.learning_rate * (1.0 - progress) ** POLY_POWER

    def quality_maps(self, batch: Tensor) -> Tensor:
        b, _, h, w = batch.shape
        perlin = self.steps_done >= self.perlin_from
        maps = random_perlin_maps(b, h, w) if perlin else uniform_quality_maps(b, h, w)
        return maps.to(batch.device)

    def step(self, batch: Tensor, amp: AmpContext) -> dict[str, float]:
        for group in self.main.param_groups:
            group["lr"] = self.learning_rate_now()
        quality_map = self.quality_maps(batch)
        with amp.autocast():
            out = self.model(batch, quality_map)
        losses = rate_distortion_loss(
            self.tic_config,
            batch,
            {
                "x_hat": out["x_hat"].float(),
                "likelihoods": {k: v.float() for k, v in out["likelihoods"].items()},
            },
            quality_map,
            balanced=self.loss == "balanced",
        )
        amp.backward(losses["objective"], self.main, clip_grad_norm=CLIP_MAX_NORM)
        aux = self.model.aux_loss()
        amp.backward(aux, self.aux)
        self.steps_done += 1
        mse = float(losses["mse"].detach())
        return {
            "loss": float(losses["loss"].detach()),
            "bpp": float(losses["bpp"].detach()),
            "mse": mse,
            "psnr": psnr_of_mse(mse),
            "q": float(quality_map.mean()),
            "aux": float(aux.detach()),
        }


class TicTraining(Training):
    """``bench train tic``: the variable-rate TIC, one checkpoint for every q in 0..1."""

    name = "tic"
    description = "the variable-rate TIC (one checkpoint for every q in 0..1)"
    details = (
        "Trains the prompted variable-rate TIC of Chang & Yang: stage 1 on uniform quality maps, "
        "stage 2 (from --perlin-from) on two-level Perlin maps; loss lambda(q)-weighted MSE + "
        "bpp, AdamW (weight decay 0.05), polynomial schedule, gradient clipping, aux loss. "
        "Resumable (--resume), checkpointed atomically, seeded."
    )
    defaults: ClassVar[dict[str, Any]] = {"dataset": "folder", "batch_size": 8, "crop": "256x256"}

    def __init__(
        self,
        config: TicConfig,
        *,
        init: tuple[str, Path] | None,
        perlin_from: int | None,
        learning_rate: float,
        loss: str,
    ) -> None:
        self.config = config
        self.init = init
        self.perlin_from = perlin_from
        self.learning_rate = learning_rate
        self.loss = loss
        self.total = 0

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--size",
            choices=["paper", "small", "tiny"],
            default="paper",
            help="paper: N=128, M=192 (the paper's); small and tiny are narrower CPU models",
        )
        parser.add_argument(
            "--lambda-curve",
            choices=["chang", "kao"],
            default="chang",
            help="lambda(q): the paper's eq. 7 (chang) or Kao et al.'s eq. 4 (kao)",
        )
        parser.add_argument(
            "--init",
            metavar="tic-hp=PATH|tic=PATH",
            help="start from TransTIC's base codec weights (tic-hp=, paper size only) or from a "
            "checkpoint of bench train tic (tic=, a fine-tune with a new schedule)",
        )
        parser.add_argument(
            "--loss",
            choices=list(LOSSES),
            default="paper",
            help="paper: eq. 3 over the batch; balanced: each image's eq.-3 loss over its own "
            "value, so that low-q images weigh as much as high-q ones (same optimum per image)",
        )
        parser.add_argument(
            "--perlin-from", type=int, help="step where Perlin maps start (default: half)"
        )
        parser.add_argument("--lr", type=float, default=LEARNING_RATE, help="AdamW learning rate")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TicTraining:
        if args.steps is None and args.epochs is None:
            raise UsageError("bench train tic needs --steps or --epochs (the paper: 300,000 steps)")
        if getattr(args, "init_from", None):
            raise UsageError(
                "bench train tic: fine-tune with --init tic=PATH, which keeps TIC's lineage of "
                "steps and images (--init-from does not know it)"
            )
        init = None
        if args.init:
            name, sep, path = args.init.partition("=")
            if name not in ("tic-hp", "tic") or not sep or not path:
                raise UsageError(f"--init {args.init!r}: expected tic-hp=PATH or tic=PATH")
            if name == "tic-hp" and args.size != "paper":
                raise UsageError("--init tic-hp=PATH needs --size paper (TransTIC's N=128, M=192)")
            if args.resume:
                raise UsageError(
                    "--init starts a new run; --resume continues one: give one of them"
                )
            init = (name, Path(path).expanduser())
        try:
            config = TicConfig.preset(args.size, lambda_curve=args.lambda_curve)
        except ValueError as exc:
            raise UsageError(f"bench train tic: {exc}") from None
        return cls(config, init=init, perlin_from=args.perlin_from, learning_rate=args.lr,
                   loss=args.loss)  # fmt: skip

    def check(self, options: TrainingOptions) -> None:
        crop = options.crop
        if crop is not None and (crop[0] % 256 or crop[1] % 256):
            raise UsageError(
                f"--crop {crop[0]}x{crop[1]}: TIC needs multiples of 256 (e.g. 256x256)"
            )

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> TicTrainable:
        self.total = Trainer.length(options, sampler)
        if self.perlin_from is None:
            self.perlin_from = self.total // 2
        seed_everything(options.seed)  # the initial weights too
        return TicTrainable(
            self.config,
            total_steps=self.total,
            perlin_from=self.perlin_from,
            device=options.device,
            learning_rate=self.learning_rate,
            init=self.init,
            loss=self.loss,
        )

    def banner(self, trainable: Any, sampler: ImageSampler, options: TrainingOptions) -> str:
        params = sum(p.numel() for p in trainable.model.parameters())
        start = f" from {trainable.initialised_from}" if trainable.initialised_from else ""
        return (
            f"bench train tic: {self.config.describe()}, {params:,} parameters{start}; lambda "
            f"{self.config.lambda_curve}, {self.loss} loss; {self.total} steps (Perlin maps "
            f"from step {self.perlin_from}); {len(sampler.images)} images "
            f"of {sampler.dataset.tag} -> {options.out}"
        )

    def finish(self, trainable: Any, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        return (
            f"trained to step {result.step} (epoch {result.epoch}) in {result.seconds / 60:.1f} "
            f"min; last step: {shown}\ncheckpoint: {result.checkpoint}\nuse it: bench run "
            f"--codecs tic --codec-option tic.weights={result.checkpoint}"
        )
