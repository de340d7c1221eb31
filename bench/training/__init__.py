"""Training learned codecs: one loop, checkpoints, resume, progress and logging for every codec.

A codec contributes a ``Trainable`` (its modules, optimizers, losses and one training step) and
registers a ``Training`` (its options, and the trainable they build) in ``TRAINERS``;
``ImageSampler`` turns a bench dataset into seeded batches of random crops; ``Trainer`` owns
everything else::

    sampler = ImageSampler(open_dataset("folder", {"data_dir": "frames"}), crop=(256, 256),
                           batch_size=8, seed=0)
    options = TrainingOptions(steps=100_000, crop=(256, 256), batch_size=8, out=Path("gan.pt"))
    Trainer(MyGanTrainable(...), sampler, options).run(resume=True)

Modules: ``loop`` (``Trainer``, ``Trainable``, ``TrainingOptions``, ``AmpContext``), ``data``
(``ImageSampler``), ``registry`` (``TRAINERS``, ``Training``). Checkpoints are read and written
by ``bench.weights``. This package imports neither torch (until used) nor ``bench.codecs``.
"""

from __future__ import annotations

from bench.training.data import ImageSampler, pixel_sha256
from bench.training.loop import (
    AmpContext,
    ResumeMismatch,
    Trainable,
    Trainer,
    TrainingDiverged,
    TrainingError,
    TrainingOptions,
    TrainingResult,
    config_differences,
    refuse_other_hyperparameters,
    seed_everything,
    to_signed,
    train,
)
from bench.training.registry import TRAINERS, Training

__all__ = [
    "TRAINERS",
    "AmpContext",
    "ImageSampler",
    "ResumeMismatch",
    "Trainable",
    "Trainer",
    "Training",
    "TrainingDiverged",
    "TrainingError",
    "TrainingOptions",
    "TrainingResult",
    "config_differences",
    "pixel_sha256",
    "refuse_other_hyperparameters",
    "seed_everything",
    "to_signed",
    "train",
]
