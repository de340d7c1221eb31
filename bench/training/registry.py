"""What can be trained, by name: ``TRAINERS`` and the ``Training`` an entry points to.

``bench train NAME [options]`` is one generic command: it adds the options every training
shares (data, steps or epochs, batch size, crop, seed, device, checkpoints, resume, out), lets
the entry add its own, and runs ``Trainer`` on the ``Trainable`` the entry builds. A codec
package registers its entry with one line (a ``"module:Class"`` string, so listing the
registry imports nothing)::

    TRAINERS.add("gan", "bench.codecs.learned.gan.train:GanTraining")

or, from another distribution, through the ``bench.trainers`` entry-point group::

    [project.entry-points."bench.trainers"]
    mine = "my_package.train:MyTraining"

``bench.training`` never imports ``bench.codecs``: codecs sit above training.
(``segmenter`` and ``segmentation-latent`` train what a task runs on a codec's output, so they
live in ``bench.task_training``, above both.)
"""

from __future__ import annotations

import abc
import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from bench.registry import Registry
from bench.training.data import ImageSampler

if TYPE_CHECKING:
    from bench.datasets.base import Dataset
    from bench.training.loop import Trainable, TrainingOptions, TrainingResult

Log = Callable[[str], None]


class Training(abc.ABC):
    """One ``bench train NAME``: its own options, and the ``Trainable`` it builds from them.

    Class attributes:
        name: the registry key and the command's NAME.
        description: one line for ``bench train --help``.
        details: the paragraph of ``bench train NAME --help`` (default ``description``).
        defaults: defaults of the shared options for this model, by their ``argparse``
            destination (``dataset``, ``crop``, ``batch_size``, ``resolution``...).

    Subclasses implement ``add_arguments`` (classmethod), ``from_args`` (classmethod) and
    ``build``; the other methods are hooks with do-nothing defaults.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    details: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this model's options (the shared ones are there already)."""
        return None

    @classmethod
    @abc.abstractmethod
    def from_args(cls, args: argparse.Namespace) -> Training:
        """The training the parsed options describe (``UsageError`` on a bad combination)."""

    def dataset_options(self, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
        """The options to open the training dataset with (e.g. a default resolution)."""
        return options

    def epochs(self, steps: int | None, epochs: int | None) -> int | None:
        """The run's epochs, given ``--steps`` and ``--epochs`` (a default of the model's)."""
        return epochs

    def run_instead(self, dataset: Dataset, options: TrainingOptions, limit: int | None,
                    log: Log) -> str | None:  # fmt: skip
        """Do something else than training (a mode of the model's options) and return what
        to print; None (the default) trains."""
        return None

    def sampler(self, dataset: Dataset, options: TrainingOptions, limit: int | None,
                log: Log) -> ImageSampler:  # fmt: skip
        """The batches to train on (default: ``ImageSampler``'s seeded random crops of the
        images). A model that trains on more than pixels (labels, reconstructions) returns a
        subclass whose batches carry them."""
        return ImageSampler(
            dataset, crop=options.crop, batch_size=options.batch_size, seed=options.seed,
            limit=limit,
        )  # fmt: skip

    def check(self, options: TrainingOptions) -> None:  # noqa: B027
        """Refuse shared options this model cannot train with (``UsageError``)."""

    @abc.abstractmethod
    def build(self, options: TrainingOptions, sampler: ImageSampler) -> Trainable:
        """The trainable to train. ``bench train`` calls ``seed_everything(options.seed)`` just
        before, so the initial weights repeat (same seed and data: the same checkpoint tensors,
        bit for bit); call it here too for callers that build without the command."""

    def banner(self, trainable: Trainable, sampler: ImageSampler, options: TrainingOptions) -> str:
        """The line printed before training starts."""
        return (
            f"bench train {self.name}: {len(sampler.images)} images of "
            f"{sampler.dataset.tag} -> {options.out}"
        )

    def finish(self, trainable: Trainable, result: TrainingResult, sampler: ImageSampler,
               log: Log) -> str:  # fmt: skip
        """Work after a completed run (its checkpoint written); returns how to use it."""
        return f"use it: {result.checkpoint}"


TRAINERS: Registry[Training] = Registry("trainers", "bench.trainers")
TRAINERS.add("gan", "bench.codecs.learned.gan.train:GanTraining", "pip install torch")
TRAINERS.add("tic", "bench.codecs.learned.tic.train:TicTraining", "pip install compressai")
TRAINERS.add("mae", "bench.codecs.learned.mae.train:MaeTraining", "pip install compressai")
TRAINERS.add("impmap", "bench.codecs.learned.impmap.train:ImpMapTraining", "pip install torch")
TRAINERS.add("gdae", "bench.codecs.learned.gdae.train:GdaeTraining", "pip install torch")
TRAINERS.add(
    "segmentation-latent",
    "bench.task_training.latent:LatentSegmentationTraining",
    "pip install compressai",
)
TRAINERS.add("segmenter", "bench.task_training.segmenter:SegmenterTraining", "pip install torch")

__all__ = ["TRAINERS", "Training"]
