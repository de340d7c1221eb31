"""``bench train segmenter``: fine-tune a segmenter on a codec's reconstructions.

The segmenter (any ``TorchSegmenter`` that states its ``input_size`` and ``normalize``:
espnetv2, espnet) starts from ``--segmenter-weights`` and trains with Adam on pixel-wise
cross-entropy over the Cityscapes trainIds (255 ignored). The training images are coded once
through ``--codec`` at ``--rate`` (``SegmentationSampler``); ``--schedule`` picks what the
batches show: reconstructions only, the union of originals and reconstructions, or originals
for the first half of the steps and reconstructions after (the paper's three variants).

BatchNorm statistics stay frozen (the layers in eval mode) by default: batches of two crops
would give noisy statistics; their affine weights still train. ``--train-bn-statistics``
updates the running statistics instead.

The checkpoint (``bench-segmenter-1``) names its trained network ``model``, so
``bench run --task segmentation --segmenter NAME --segmenter-weights OUT.pt`` loads it as it
loads published weights (``bench.weights.load_state_dict`` unwraps ``{"model": ...}``), and
its training record lists the images it was trained on, so that a run scoring them warns.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.codecs import create_codec
from bench.codecs.base import Codec
from bench.datasets.base import Dataset
from bench.download import sha256_of
from bench.errors import UsageError
from bench.task_training.segmenter_data import SCHEDULES, SegmentationSampler, split_batch
from bench.tasks import create_segmenter
from bench.tasks.base import TorchSegmenter
from bench.training import AmpContext, ImageSampler, Trainer, Training, TrainingOptions
from bench.training.loop import TrainingResult, seed_everything
from bench.training.registry import Log
from bench.types import IGNORE_LABEL, OptionValue, parse_option_value

LEARNING_RATE = 1e-4
"""Adam's default rate (fine-tuning from trained weights)."""


def option_assignments(items: Sequence[str], flag: str) -> list[tuple[str, OptionValue]]:
    """``["s=2.0"]`` -> ``[("s", 2.0)]`` (values typed by their look; dashes in keys become
    underscores)."""
    found = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        found.append((key.strip().replace("-", "_"), parse_option_value(value.strip())))
    return found


def batchnorm_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's BatchNorm layers (any dimension)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


class SegmenterTrainable:
    """A segmenter's network, Adam and the cross-entropy step on packed batches.

    Args:
        segmenter: the loaded segmenter (its ``model`` is trained in place).
        sampler: the batches (for the config: codec, rate, schedule and image hashes).
        learning_rate: Adam's rate.
        freeze_bn_statistics: keep BatchNorm layers in eval mode (running statistics fixed).
        segmenter_options: the segmenter's options besides weights and device (for the config).
        codec_provenance: what the codec's ``prepare`` reported (for the checkpoint).
    """

    name = "segmenter"

    def __init__(
        self,
        segmenter: TorchSegmenter,
        sampler: SegmentationSampler,
        *,
        learning_rate: float = LEARNING_RATE,
        freeze_bn_statistics: bool = True,
        segmenter_options: Mapping[str, Any] | None = None,
        codec_provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.sampler = sampler
        self.learning_rate = float(learning_rate)
        self.freeze_bn_statistics = bool(freeze_bn_statistics)
        self.segmenter_options = dict(segmenter_options or {})
        self.codec_provenance = dict(codec_provenance or {})
        self.start_weights_sha256 = sha256_of(segmenter.weights)
        self.model: torch.nn.Module = segmenter.model
        self.adam = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate)
        self._batchnorms = batchnorm_layers(self.model)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.adam}

    def config(self) -> dict[str, Any]:
        """What the network was fine-tuned from and on; a resume with another is refused."""
        sampler = self.sampler
        return {
            "segmenter": self.segmenter.name,
            "architecture": self.segmenter.architecture,
            "segmenter_options": self.segmenter_options,
            "start_weights_sha256": self.start_weights_sha256,
            "input_size": list(sampler.input_size),
            "codec": sampler.codec.name,
            "codec_options": dict(sampler.codec.options),
            "rate": sampler.rate,
            "schedule": sampler.schedule,
            "images": [image["sha256"] for image in sampler.images],
        }

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.learning_rate,
            "freeze_bn_statistics": self.freeze_bn_statistics,
            "switch_at": self.sampler.switch_at,
            "loss": f"cross-entropy, ignore_index {IGNORE_LABEL}",
        }

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "finetune": {
                "reconstructions": [dict(c) for c in self.sampler.coded],
                "mean_bpp": self.sampler.mean_bpp,
                "codec_provenance": self.codec_provenance,
                "start_weights": str(self.segmenter.weights),
            }
        }

    def restore_extra(self, extra: dict[str, Any]) -> None:
        """Nothing to restore: the loop has already refused other configs."""

    def train_mode(self) -> None:
        """Training mode, BatchNorm layers in eval mode when their statistics are frozen."""
        self.model.train()
        if self.freeze_bn_statistics:
            for layer in self._batchnorms:
                layer.eval()

    def loss(self, images: Tensor, labels: Tensor, amp: AmpContext | None = None) -> Tensor:
        """Mean cross-entropy over the labelled pixels (0 when a batch has none)."""
        with amp.autocast() if amp is not None else contextlib.nullcontext():
            logits = self.model(self.segmenter.normalize(images))
        logits = logits.float()
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(
                logits, size=labels.shape[-2:], mode="bilinear", align_corners=False
            )
        total = F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL, reduction="sum")
        return total / (labels != IGNORE_LABEL).sum().clamp(min=1)

    def step(self, batch: Tensor, amp: AmpContext) -> dict[str, float]:
        images, labels = split_batch(batch)
        self.train_mode()
        loss = self.loss(images, labels, amp)
        amp.backward(loss, self.adam)
        return {"loss": float(loss.detach())}


class SegmenterTraining(Training):
    """``bench train segmenter``: fine-tune a segmenter on one codec's reconstructions."""

    name = "segmenter"
    description = "fine-tune a segmenter (espnetv2, espnet) on a codec's reconstructions"
    details = (
        "Fine-tunes a segmentation network (--segmenter, from --segmenter-weights) on the "
        "reconstructions of --codec at --rate, as Loehdefink et al. (GAN vs JPEG 2000 for "
        "automotive segmentation, Tables I-II) do: every training image is coded once (encode, "
        "bytes, decode) and kept in memory; images and labels are resized to the segmenter's "
        "input size (1024x512 for espnet/espnetv2; labels by nearest neighbour), then cut into "
        "random crops with the same window and flip. Loss: cross-entropy on the Cityscapes "
        "trainIds, 255 ignored; Adam at --lr. BatchNorm statistics are frozen (eval mode) "
        "unless --train-bn-statistics. The checkpoint loads directly as --segmenter-weights "
        "in bench run. Resumable (--resume), checkpointed, seeded."
    )
    defaults: ClassVar[dict[str, Any]] = {
        "dataset": "cityscapes",
        "split": "train",
        "crop": "512x512",
        "batch_size": 2,
    }

    def __init__(
        self,
        segmenter: TorchSegmenter,
        codec: Codec,
        *,
        rate: float,
        schedule: str,
        learning_rate: float,
        freeze_bn_statistics: bool,
        segmenter_options: Mapping[str, Any],
    ) -> None:
        self.segmenter = segmenter
        self.codec = codec
        self.rate = rate
        self.schedule = schedule
        self.learning_rate = learning_rate
        self.freeze_bn_statistics = freeze_bn_statistics
        self.segmenter_options = dict(segmenter_options)
        self.codec_provenance: dict[str, Any] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("segmenter and codec")
        group.add_argument("--segmenter", required=True, metavar="NAME",
                           help="the segmenter to fine-tune (bench list segmenters): espnetv2, "
                           "espnet")  # fmt: skip
        group.add_argument("--segmenter-weights", required=True, metavar="PATH",
                           help="its starting weights (published or bench's)")  # fmt: skip
        group.add_argument("--segmenter-option", action="append", default=[],
                           metavar="KEY=VALUE", help="a segmenter option, e.g. s=2.0")  # fmt: skip
        group.add_argument("--codec", required=True, metavar="NAME",
                           help="the codec whose reconstructions to train on")  # fmt: skip
        group.add_argument("--rate", type=float, required=True, metavar="R",
                           help="its rate point (the codec's own scale: jpeg2000's compression "
                           "ratio, jpeg's quality...)")  # fmt: skip
        group.add_argument("--codec-option", action="append", default=[],
                           metavar="CODEC.KEY=VALUE", help="a codec option, e.g. "
                           "gan.weights=PATH")  # fmt: skip
        group.add_argument("--schedule", choices=SCHEDULES, default="reconstructed",
                           help="what batches show: reconstructed (reconstructions only), mixed "
                           "(the union of originals and reconstructions, each pair of epochs "
                           "showing every image once of each), sequential (original images for "
                           "the first half of the steps, then reconstructions); default "
                           "%(default)s")  # fmt: skip
        group.add_argument("--lr", type=float, default=LEARNING_RATE,
                           help="Adam's learning rate (default %(default)g)")  # fmt: skip
        group.add_argument("--train-bn-statistics", action="store_true",
                           help="update BatchNorm running statistics (default: frozen, since "
                           "batches are small)")  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SegmenterTraining:
        if args.steps is None and args.epochs is None:
            raise UsageError("bench train segmenter needs --steps (or --epochs)")
        if not (args.lr > 0 and math.isfinite(args.lr)):
            raise UsageError(f"--lr {args.lr}: expected a positive number")
        options: dict[str, Any] = {}
        for key, value in option_assignments(args.segmenter_option, "--segmenter-option"):
            if key in ("weights", "device"):
                flag = "--segmenter-weights" if key == "weights" else "--device"
                raise UsageError(f"--segmenter-option {key}=...: give it as {flag}")
            options[key] = value
        codec_options: dict[str, OptionValue] = {}
        for key, value in option_assignments(args.codec_option, "--codec-option"):
            codec, dot, option = key.partition(".")
            if not dot or not option:
                raise UsageError(f"--codec-option expects CODEC.KEY=VALUE, got {key}={value}")
            if codec != args.codec:
                raise UsageError(
                    f"--codec-option {key}: for codec {codec!r}, but --codec is {args.codec!r}"
                )
            codec_options[option] = value
        coder = create_codec(args.codec, codec_options)
        rate = coder.scale.validate(args.rate, coder.name)
        segmenter = create_segmenter(
            args.segmenter, {"weights": args.segmenter_weights, "device": args.device, **options}
        )
        if not isinstance(segmenter, TorchSegmenter) or segmenter.input_size is None:
            raise UsageError(
                f"segmenter {args.segmenter} cannot be fine-tuned here: bench train segmenter "
                "needs a PyTorch segmenter that states its input size and normalisation "
                "(espnetv2, espnet)"
            )
        return cls(
            segmenter,
            coder,
            rate=rate,
            schedule=args.schedule,
            learning_rate=args.lr,
            freeze_bn_statistics=not args.train_bn_statistics,
            segmenter_options=options,
        )

    def check(self, options: TrainingOptions) -> None:
        size = self.segmenter.input_size
        crop = options.crop
        if size is not None and crop is not None and (crop[0] > size[0] or crop[1] > size[1]):
            raise UsageError(
                f"--crop {crop[0]}x{crop[1]} is larger than {self.segmenter.name}'s input "
                f"{size[0]}x{size[1]} (HEIGHTxWIDTH), where crops are cut"
            )

    def sampler(self, dataset: Dataset, options: TrainingOptions, limit: int | None,
                log: Log) -> SegmentationSampler:  # fmt: skip
        availability = self.codec.availability()
        if not availability.usable:
            raise UsageError(
                f"codec {self.codec.name} cannot run here: {availability.detail}"
                + (f"; {availability.hint}" if availability.hint else "")
            )
        self.codec_provenance = dict(self.codec.prepare([self.rate]))
        assert self.segmenter.input_size is not None  # from_args makes sure
        sampler = SegmentationSampler(
            dataset,
            codec=self.codec,
            rate=self.rate,
            input_size=self.segmenter.input_size,
            schedule=self.schedule,
            crop=options.crop,
            batch_size=options.batch_size,
            seed=options.seed,
            limit=limit,
            log=log,
        )
        if self.schedule == "sequential":
            sampler.switch_at = Trainer.length(options, sampler) // 2
        return sampler

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> SegmenterTrainable:
        if not isinstance(sampler, SegmentationSampler):
            raise UsageError("bench train segmenter trains on a SegmentationSampler's batches")
        seed_everything(options.seed)
        return SegmenterTrainable(
            self.segmenter,
            sampler,
            learning_rate=self.learning_rate,
            freeze_bn_statistics=self.freeze_bn_statistics,
            segmenter_options=self.segmenter_options,
            codec_provenance=self.codec_provenance,
        )

    def banner(self, trainable: Any, sampler: ImageSampler, options: TrainingOptions) -> str:
        params = sum(p.numel() for p in trainable.model.parameters())
        coded = sampler.mean_bpp if isinstance(sampler, SegmentationSampler) else math.nan
        switch = (
            f" (reconstructions from step {trainable.sampler.switch_at})"
            if self.schedule == "sequential"
            else ""
        )
        bn = "frozen" if self.freeze_bn_statistics else "updated"
        return (
            f"bench train segmenter: {self.segmenter.architecture}, {params:,} parameters, "
            f"on {self.codec.name} at rate {self.rate:g} ({coded:.4f} bpp), schedule "
            f"{self.schedule}{switch}, lr {self.learning_rate:g}, BatchNorm statistics {bn}; "
            f"{len(sampler.images)} images of {sampler.dataset.tag} -> {options.out}"
        )

    def finish(self, trainable: Any, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        options = "".join(
            f" --segmenter-option {k}={v}" for k, v in sorted(self.segmenter_options.items())
        )
        return (
            f"trained to step {result.step} in {result.seconds / 60:.1f} min; last step: "
            f"{shown}\ncheckpoint: {result.checkpoint}\nuse it: bench run --task segmentation "
            f"--segmenter {self.segmenter.name} --segmenter-weights {result.checkpoint}{options}"
        )


__all__ = ["LEARNING_RATE", "SegmenterTrainable", "SegmenterTraining", "batchnorm_layers"]
