"""``bench train segmentation-latent``: the transform layer of ``--task segmentation-latent``
(and, by default, the segmenter behind it) on latents of the train split, the codec frozen.

Each training image is coded once per rate point by the real codec; ``decode_latent`` of that
bitstream (entropy decoding only) is what the network sees, so training and evaluation read
the same ŷ. A step takes whole latents (``--batch-size`` images of one size), each at a rate
point in turn, flipped at random, and the cross-entropy of the segmenter's logits against the
label map at the segmenter's input size (255 ignored). The segmenter's batch-norm statistics
stay frozen (batches of one or two images would only spoil them).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.codecs import create_codec
from bench.codecs.base import weight_digests
from bench.errors import UsageError
from bench.task_training.segmenter import option_assignments
from bench.tasks import create_segmenter
from bench.tasks.latent import (
    LATENT_FORMAT,
    latent_entry_of,
    latent_network,
    latent_tensor,
    parameter_count,
    shuffle_for,
)
from bench.training import AmpContext, ImageSampler, Training, TrainingOptions
from bench.training.loop import seed_everything
from bench.types import IGNORE_LABEL, TRAINING_FILES

if TYPE_CHECKING:
    from bench.datasets.base import Dataset
    from bench.training.loop import TrainingResult
    from bench.training.registry import Log

TRAIN_CHOICES = ("all", "transform")
"""``--train``: the transform layer and the segmenter (the paper's), or the layer alone."""


class LatentSampler(ImageSampler):
    """Seeded whole images in batches, given as (image index, flip) rows: the trainable holds
    their latents and label maps (the sampler's order, flips and resume state are
    ``ImageSampler``'s)."""

    def __init__(
        self, dataset: Dataset, *, batch_size: int, seed: int, limit: int | None = None
    ) -> None:
        super().__init__(dataset, crop=None, batch_size=batch_size, seed=seed, limit=limit)

    def batch_at(self, epoch: int, index: int) -> torch.Tensor:
        rows = []
        for k in range(self.batch_size):
            image, _, _, flip = self.window(epoch, index + k)
            rows.append([image, int(flip)])
        return torch.tensor(rows, dtype=torch.int64)


def parse_assignments(items: list[str], flag: str, prefix: str = "") -> dict[str, Any]:
    """``KEY=VALUE`` items (``CODEC.KEY=VALUE`` with ``prefix``) as keyword options, parsed as
    ``bench train segmenter`` parses its own (``option_assignments``)."""
    found: dict[str, Any] = {}
    for key, value in option_assignments(items, flag):
        if prefix:  # keys come with dashes as underscores
            prefix = prefix.replace("-", "_")
            if not key.startswith(prefix + "."):
                raise UsageError(f"{flag} {key}=...: expected {prefix}.KEY=VALUE")
            key = key[len(prefix) + 1 :]
        found[key] = value
    return found


class LatentTrainable:
    """The latent network (transform layer + segmenter) on cached latents and labels."""

    name = LATENT_FORMAT

    def __init__(
        self,
        network: Any,
        latents: list[list[torch.Tensor]],
        labels: list[torch.Tensor],
        *,
        train: str,
        lr: float,
        segmenter_lr: float,
        config: Mapping[str, Any],
        device: str = "cpu",
    ) -> None:
        self.network = network.to(device)
        self.latents = latents
        self.labels = labels
        self.train = train
        self.lr = lr
        self.segmenter_lr = segmenter_lr
        self._config = dict(config)
        self.device = device
        self.steps_done = 0
        groups = [{"params": list(network.transform.parameters()), "lr": lr}]
        if train == "all":
            groups.append({"params": list(network.segmenter.parameters()), "lr": segmenter_lr})
        else:
            network.segmenter.requires_grad_(False)
        self.optimizer = torch.optim.Adam(groups)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.network}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "segmenter_lr": self.segmenter_lr, "train": self.train}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done}

    def restore_extra(self, extra: Mapping[str, Any]) -> None:
        self.steps_done = int(extra.get("steps_done", 0))

    def inputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latents and label maps of a batch of (image, flip) rows; row k of step s takes
        rate point (s + k) mod the number of rate points."""
        latents, labels = [], []
        rates = len(self.latents[0])
        for k, (image, flip) in enumerate(batch.tolist()):
            latent = self.latents[image][(self.steps_done + k) % rates]
            label = self.labels[image]
            if flip:
                latent, label = latent.flip(-1), label.flip(-1)
            latents.append(latent)
            labels.append(label)
        return torch.cat(latents).to(self.device), torch.stack(labels).to(self.device)

    def step(self, batch: torch.Tensor, amp: AmpContext) -> dict[str, float]:
        latents, labels = self.inputs(batch)
        self.network.segmenter.eval()  # frozen batch-norm statistics
        logits = self.network(latents)
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL)
        amp.backward(loss, self.optimizer)  # averages gradients over data-parallel ranks
        self.steps_done += 1
        with torch.no_grad():
            valid = labels != IGNORE_LABEL
            correct = (logits.argmax(1) == labels) & valid
            accuracy = float(correct.sum()) / max(int(valid.sum()), 1)
        return {"loss": float(loss.detach()), "pixel_acc": accuracy}


def label_at(label: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A label map resized to ``size`` (height, width) by nearest neighbour, as int64."""
    tensor = torch.tensor(np.asarray(label, dtype=np.uint8))[None, None].float()
    if tuple(tensor.shape[-2:]) != size:
        tensor = F.interpolate(tensor, size=size, mode="nearest")
    return tensor[0, 0].long()


class LatentSegmentationTraining(Training):
    """``bench train segmentation-latent``."""

    name = "segmentation-latent"
    description = "the transform layer (and segmenter) of --task segmentation-latent"
    details = (
        "Trains the transform layer (a 1x1 convolution and a pixel shuffle) that feeds a "
        "codec's quantised latent to a segmenter without its stem (TIC paper, section III.B), "
        "with the codec frozen: every train image is coded once per rate point and the "
        "latent read back from the bitstream. --train all (default, the paper's) also trains "
        "the segmenter; --train transform keeps it as given. Whole images, batch-norm "
        "statistics frozen, Adam. Use it: bench run --codecs CODEC --task segmentation-latent "
        "--segmenter NAME --segmenter-weights W --task-option latent=OUT."
    )
    defaults: ClassVar[dict[str, Any]] = {"dataset": "cityscapes", "batch_size": 1, "crop": None}

    def __init__(self, args: argparse.Namespace) -> None:
        self.codec_name = str(args.codec)
        self.codec_options = parse_assignments(args.codec_option, "--codec-option", self.codec_name)
        try:
            self.rates = [float(v) for v in str(args.rates).split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--rates {args.rates!r}: expected numbers like 0,0.5,1") from None
        if not self.rates:
            raise UsageError("--rates needs at least one rate point of the codec")
        self.segmenter_name = str(args.segmenter)
        self.segmenter_options = parse_assignments(args.segmenter_option, "--segmenter-option")
        self.segmenter_options["weights"] = str(args.segmenter_weights)
        self.train = str(args.train)
        self.lr = float(args.lr)
        self.segmenter_lr = float(args.segmenter_lr)
        for name, value in (("--lr", self.lr), ("--segmenter-lr", self.segmenter_lr)):
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{name} {value}: expected a positive number")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--codec", default="tic", help="the frozen codec (default tic)")
        parser.add_argument("--rates", required=True, help="its rate points, e.g. 0,0.5,1")
        parser.add_argument("--codec-option", action="append", default=[],
                            metavar="CODEC.KEY=VALUE", help="e.g. tic.weights=PATH")  # fmt: skip
        parser.add_argument("--segmenter", default="espnetv2", help="default espnetv2")
        parser.add_argument("--segmenter-weights", required=True,
                            help="the segmenter's weights to start from")  # fmt: skip
        parser.add_argument("--segmenter-option", action="append", default=[],
                            metavar="KEY=VALUE")  # fmt: skip
        parser.add_argument("--train", choices=TRAIN_CHOICES, default="all",
                            help="all: transform layer and segmenter (the paper's); "
                            "transform: the layer alone")  # fmt: skip
        parser.add_argument("--lr", type=float, default=1e-3,
                            help="Adam's rate of the transform layer")  # fmt: skip
        parser.add_argument("--segmenter-lr", type=float, default=1e-4,
                            help="Adam's rate of the segmenter (--train all)")  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LatentSegmentationTraining:
        return cls(args)

    def dataset_options(self, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
        if dataset == "cityscapes":
            options.setdefault("split", "train")
        return options

    def check(self, options: TrainingOptions) -> None:
        if options.crop is not None:
            raise UsageError(
                "bench train segmentation-latent trains on whole latents: leave out --crop"
            )

    def sampler(
        self, dataset: Dataset, options: TrainingOptions, limit: int | None, log: Log
    ) -> LatentSampler:
        return LatentSampler(dataset, batch_size=options.batch_size, seed=options.seed, limit=limit)

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> LatentTrainable:
        codec = create_codec(self.codec_name, self.codec_options)
        if not codec.has_latent:
            raise UsageError(
                f"{self.codec_name} gives no latent from its bitstream; use a codec with one "
                "(tic, tic-hp)"
            )
        rates = [codec.scale.validate(rate, self.codec_name) for rate in self.rates]
        provenance = codec.prepare(rates)
        segmenter = create_segmenter(self.segmenter_name, self.segmenter_options)
        entry = latent_entry_of(segmenter)
        latents: list[list[torch.Tensor]] = []
        labels: list[torch.Tensor] = []
        shuffle = None
        for index, ref in enumerate(sampler.refs):
            sample = sampler.dataset.load(ref, with_label=True)
            if sample.label is None:
                raise UsageError(f"{ref.path} has no label map; latent training needs labels")
            coded = []
            for rate in rates:
                latent = codec.decode_latent(codec.encode(sampler.image(index), rate))
                coded.append(latent_tensor(latent))
                if shuffle is None:
                    shuffle = shuffle_for(latent.stride, latent.height, entry)
                    channels, stride = latent.channels, latent.stride
            latents.append(coded)
            labels.append(label_at(sample.label, entry.input_size))
        assert shuffle is not None
        seed_everything(options.seed)  # the transform layer's initial weights repeat
        network = latent_network(segmenter, channels, shuffle)
        digests = weight_digests(provenance)
        config = {
            "segmenter": self.segmenter_name,
            "architecture": getattr(segmenter, "architecture", self.segmenter_name),
            "segmenter_weights_sha256": segmenter.provenance().get("weights_sha256", ""),
            "codec": self.codec_name,
            "codec_options": {
                k: v for k, v in sorted(codec.options.items()) if k not in ("weights", "device")
            },
            "codec_weights_sha256": digests,
            "rates": rates,
            "latent_channels": channels,
            "latent_stride": stride,
            "shuffle": shuffle,
            "entry": entry.stage,
            "train": self.train,
            TRAINING_FILES: sorted(i["file_sha256"] for i in sampler.images),
        }
        return LatentTrainable(
            network,
            latents,
            labels,
            train=self.train,
            lr=self.lr,
            segmenter_lr=self.segmenter_lr,
            config=config,
            device=options.device,
        )

    def banner(self, trainable: Any, sampler: ImageSampler, options: TrainingOptions) -> str:
        config = trainable.config()
        transform = parameter_count(trainable.network.transform)
        return (
            f"bench train segmentation-latent: {config['codec']} at {config['rates']} "
            f"(latent {config['latent_channels']} channels, stride {config['latent_stride']}) "
            f"-> transform layer 1x1 conv + shuffle {config['shuffle']} ({transform:,} "
            f"parameters) -> {config['architecture']} from {config['entry']}; train "
            f"{trainable.train}; {len(sampler.images)} images of {sampler.dataset.tag} -> "
            f"{options.out}"
        )

    def finish(self, trainable: Any, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        return (
            f"trained to step {result.step} in {result.seconds / 60:.1f} min; last step: "
            f"{shown}\ncheckpoint: {result.checkpoint}\nuse it: bench run --codecs "
            f"{self.codec_name} --task segmentation-latent --segmenter {self.segmenter_name} "
            f"--segmenter-weights {self.segmenter_options['weights']} --task-option "
            f"latent={result.checkpoint}"
        )
