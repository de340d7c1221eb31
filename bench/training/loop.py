"""The training loop of every learned codec: checkpoints, resume, progress and logging.

A codec contributes a ``Trainable`` (its modules, optimizers, losses and one training step);
``ImageSampler`` turns a bench dataset into seeded batches of random crops; ``Trainer`` owns
everything else::

    sampler = ImageSampler(open_dataset("folder", {"data_dir": "frames"}), crop=(256, 256),
                           batch_size=8, seed=0)
    options = TrainingOptions(steps=100_000, crop=(256, 256), batch_size=8, out=Path("gan.pt"))
    Trainer(MyGanTrainable(...), sampler, options).run(resume=True)

Conventions:

- Batches are float32 ``(N, 3, h, w)`` tensors in [0, 1] on ``options.device``; a trainable
  that wants [-1, 1] converts them itself (``to_signed(batch)``).
- Randomness: the trainer seeds torch, a numpy ``Generator`` (``Trainer.numpy_rng``), numpy's
  legacy global state and Python's ``random``, and saves and restores all of them. The sampler
  is counter-based: epoch ``e``'s permutation and the crop and flip of the ``i``-th image of that
  epoch are functions of (seed, e, i) alone, so its whole state is its position (epoch, index).
- Mixed precision: one ``GradScaler`` for all optimizers (PyTorch's recipe for several models
  and optimizers): ``amp.backward(loss, optimizer)`` scales, back-propagates and calls
  ``scaler.step(optimizer)``; the trainer calls ``scaler.update()`` once after each training
  step. Each optimizer skips its own step when its gradients hold inf/NaN.
- Checkpoints hold tensors and JSON-able values only, so ``torch.load(path, weights_only=True)``
  reads them, and are written atomically (``bench.weights.save_checkpoint``); their format is
  ``bench.weights.checkpoint_format(trainable.name)``, ``bench-NAME-1``.
- Divergence: a step whose losses hold NaN or an infinity (a PSNR's +inf aside) stops the run
  with ``TrainingDiverged``, and no state with a non-finite tensor is ever saved, so ``out``
  keeps the last good checkpoint.
- Resume keeps the model ``config()`` and the trainable's ``hyperparameters()``: other values
  raise ``ResumeMismatch``. Other batch size, crop, seed, AMP or device only warn.
- Fine-tuning (``init_from``): a new run starts from the weights of another checkpoint of the
  same model and config, with fresh optimisers, step 0 and its own hyper-parameters. The
  checkpoint records where its weights came from (``training.initialised_from``: file, SHA-256,
  step and images, nested for a chain), and ``bench.weights.training_record`` counts the
  source's images as trained on.

torch is imported where it is used, so ``import bench.training`` works without it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from bench.errors import BenchError, UsageError
from bench.training import distributed
from bench.training.data import ImageSampler
from bench.weights import checkpoint_format, first_nonfinite, read_checkpoint, save_checkpoint

if TYPE_CHECKING:
    import torch

    from bench.datasets.base import Dataset

RESERVED_KEYS = frozenset({"format", "config", "optimizers", "scaler", "training"})
"""Top-level checkpoint keys the trainer owns; module names and extra keys must differ."""


class TrainingError(BenchError):
    """Training cannot continue from a checkpoint: another model, another config, missing state
    (an unreadable checkpoint is a ``bench.weights.WeightsError``)."""


class ResumeMismatch(TrainingError, UsageError):
    """``resume`` with a model config or hyper-parameters other than the checkpoint's: the
    command's fault (``bench train`` exits 2), so it is a ``UsageError`` too."""


class TrainingDiverged(TrainingError):
    """A loss or a weight became NaN or infinite; the checkpoint keeps the last good step."""


# --------------------------------------------------------------------------- mixed precision


class AmpContext:
    """Autocast plus one GradScaler on CUDA when enabled; a transparent no-op elsewhere.

    One scaler serves every optimizer: ``backward(loss, optimizer)`` scales the loss,
    back-propagates and calls ``scaler.step(optimizer)`` (which unscales that optimizer's
    gradients and skips its step on inf/NaN); the trainer calls ``update()`` once per training
    step, after the trainable's step. A GAN calls ``backward`` twice per step (D, then G).

    Args:
        device: where the model runs; AMP is used only when its type is ``cuda``.
        enabled: whether to use AMP there.
        dtype: ``float16`` (with loss scaling) or ``bfloat16`` (no scaling needed).
    """

    def __init__(
        self, device: str = "cpu", enabled: bool = True, dtype: str = "float16", world: int = 1
    ) -> None:
        import torch

        if dtype not in ("float16", "bfloat16"):
            raise UsageError(f"amp dtype {dtype!r}: expected float16 or bfloat16")
        self.device = torch.device(device)
        self.enabled = bool(enabled) and self.device.type == "cuda"
        self.dtype = getattr(torch, dtype)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and dtype == "float16")
        self._stepped = False
        self.world = int(world)
        """Data-parallel processes: above 1, gradients are averaged over them before a step."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward-pass context: ``torch.autocast`` when enabled, else a no-op."""
        import torch

        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss multiplied by the current scale (unchanged without scaling)."""
        return self.scaler.scale(loss)

    def backward(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        zero_grad: bool = True,
        clip_grad_norm: float | None = None,
        retain_graph: bool = False,
    ) -> None:
        """Zero ``optimizer``'s gradients, back-propagate ``loss`` and step ``optimizer``.

        Gradients that reach parameters of other optimizers (a GAN's generator loss reaching
        the discriminator) are left in place; that optimizer zeroes them on its own next
        ``backward`` call.

        Args:
            loss: a scalar loss.
            optimizer: the optimizer to step.
            zero_grad: zero its gradients first (off to accumulate several losses).
            clip_grad_norm: clip the (unscaled) gradient norm of its parameters to this.
            retain_graph: keep the graph for a later backward pass.
        """
        import torch

        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(retain_graph=retain_graph)
        self._average(optimizer)  # before clipping: the norm of the mean gradient
        if clip_grad_norm is not None:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        self.scaler.step(optimizer)
        self._stepped = True

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``scaler.step(optimizer)``: for trainables that call ``scale(loss).backward()``
        (gradients averaged over data-parallel processes first)."""
        self._average(optimizer)
        self.scaler.step(optimizer)
        self._stepped = True

    def _average(self, optimizer: torch.optim.Optimizer) -> None:
        if self.world > 1:
            from bench.training.distributed import average_gradients

            average_gradients(optimizer, self.world)

    def update(self) -> None:
        """Adjust the scale once per training step (called by the trainer)."""
        if self._stepped and self.scaler.is_enabled():
            self.scaler.update()
        self._stepped = False

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (empty when scaling is off)."""
        return dict(self.scaler.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the scaler; a state saved without scaling (or loaded without it) is skipped."""
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(dict(state))


def to_signed(batch: torch.Tensor) -> torch.Tensor:
    """Map a [0, 1] batch to [-1, 1] (for models trained on signed inputs, e.g. GANs)."""
    return batch * 2.0 - 1.0


# --------------------------------------------------------------------------- the codec's part


@runtime_checkable
class Trainable(Protocol):
    """What a codec contributes to training: its model, its losses and one step.

    Optional methods, used when present:

    - ``checkpoint_extra() -> dict``: more tensors/JSON-able values for the checkpoint (stored
      at its top level; keys must not be module names or ``format``, ``config``,
      ``optimizers``, ``scaler``, ``training``).
    - ``restore_extra(extra: dict) -> None``: receives those values on resume.
    - ``evaluate() -> dict[str, float]``: metrics (e.g. PSNR on a held-out crop), called under
      ``torch.no_grad()`` every ``options.evaluate_every`` steps; the modules are put back in
      train mode afterwards.
    - ``hyperparameters() -> dict``: JSON-able values of the optimisation a resume keeps
      (learning rate, betas, loss...): saved in the checkpoint, and a resume that gives other
      values is refused (``ResumeMismatch``), as one with another ``config()`` is.
    """

    name: str
    """Identifies the model family; the checkpoint format is ``bench-{name}-1``."""

    def modules(self) -> dict[str, torch.nn.Module]:
        """The trained networks by name, e.g. ``{"generator": G, "discriminator": D}``."""
        ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by name (their state is checkpointed)."""
        ...

    def step(self, batch: torch.Tensor, amp: AmpContext) -> Mapping[str, float]:
        """One training step on a [0, 1] batch: forward, backward, optimizer steps; the losses."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-able: everything that defines the model (resume checks it is unchanged)."""
        ...


# --------------------------------------------------------------------------- options


@dataclass
class TrainingOptions:
    """How to train: length, batches, randomness, device and checkpoints.

    Args:
        steps: stop after this many training steps (overall, counting resumed ones).
        epochs: stop after this many passes over the images; with ``steps``, whichever
            comes first.
        batch_size: images per step; every epoch yields ``len(images) // batch_size`` batches.
        crop: (height, width) of the random crops, or None for whole images.
        seed: seeds torch, numpy, Python's random and the sampler.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision (used only on CUDA).
        amp_dtype: ``float16`` (with a GradScaler) or ``bfloat16``.
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)`` while
            running (the previous setting is restored afterwards).
        checkpoint_every: write a checkpoint every N steps (None: only at the end).
        checkpoint_seconds: also write one when this many seconds passed since the last.
        log_every: record the mean losses of the last N steps in the history (and print a
            line off a terminal) every N steps.
        evaluate_every: call the trainable's ``evaluate()`` every N steps.
        history: how many loss records the checkpoint keeps (the most recent).
        out: the checkpoint file (None: no checkpoints).
        init_from: start a new run from this checkpoint's weights (same trainer and model
            config) with fresh optimisers and step 0: fine-tuning. A resume of ``out``
            continues as saved and does not read it again.
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 1
    crop: tuple[int, int] | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    amp_dtype: str = "float16"
    deterministic: bool = True
    checkpoint_every: int | None = 500
    checkpoint_seconds: float | None = None
    log_every: int = 50
    evaluate_every: int | None = None
    history: int = 100_000
    out: Path | None = None
    init_from: Path | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise UsageError("training needs steps or epochs (or both)")
        for name in ("steps", "epochs", "checkpoint_every", "evaluate_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UsageError(f"training option {name}={value!r} must be a positive integer")
        for name in ("batch_size", "log_every", "history"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"training option {name}={value!r} must be a positive integer")
        if self.crop is not None:
            crop = tuple(int(v) for v in self.crop)
            if len(crop) != 2 or min(crop) < 1:
                raise UsageError(f"training option crop={self.crop!r}: expected (height, width)")
            self.crop = (crop[0], crop[1])
        if self.checkpoint_seconds is not None and self.checkpoint_seconds <= 0:
            raise UsageError("training option checkpoint_seconds must be positive")
        if self.out is not None:
            self.out = Path(self.out)
        if self.init_from is not None:
            self.init_from = Path(self.init_from)

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-able values (paths as strings, tuples as lists)."""
        values = asdict(self)
        values["out"] = str(self.out) if self.out is not None else None
        values["init_from"] = str(self.init_from) if self.init_from is not None else None
        values["crop"] = list(self.crop) if self.crop is not None else None
        return values


def _json_normal(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, sort_keys=True))


def refuse_other_hyperparameters(
    saved: Any, given: Mapping[str, Any], source: Path | str = ""
) -> None:
    """Raise ``ResumeMismatch`` naming each hyper-parameter whose value in the checkpoint
    (``saved``) differs from the one given now: a resume keeps the checkpoint's."""
    differences = config_differences(saved, given)
    if differences:
        raise ResumeMismatch(
            (f"{source}: " if source else "")
            + "a resume keeps the checkpoint's hyper-parameters, and these differ: "
            + "; ".join(differences)
            + ". Resume with the checkpoint's values, or start a new run into another --out"
        )


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON-able configs differ, with both values.

    >>> config_differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}})
    ['b.c (checkpoint 2, now 3)']
    """
    if isinstance(saved, dict) and isinstance(current, dict):
        found: list[str] = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved:
                found.append(f"{name} (not in the checkpoint, now {current[key]!r})")
            elif key not in current:
                found.append(f"{name} (checkpoint {saved[key]!r}, now absent)")
            else:
                found += config_differences(saved[key], current[key], name)
        return found
    if saved != current:
        return [f"{prefix or '<config>'} (checkpoint {saved!r}, now {current!r})"]
    return []


def _rng_state(
    numpy_rng: np.random.Generator, sampler: ImageSampler, device: str
) -> dict[str, Any]:
    import torch

    version, mt, gauss = random.getstate()
    legacy: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # bit_generator.state holds 128-bit integers: kept as its JSON text.
        "numpy": json.dumps(numpy_rng.bit_generator.state),
        "numpy_global": {
            "name": str(legacy[0]),
            "keys": torch.from_numpy(np.asarray(legacy[1], dtype=np.int64)),
            "pos": int(legacy[2]),
            "has_gauss": int(legacy[3]),
            "cached_gaussian": float(legacy[4]),
        },
        "python": {"version": int(version), "state": [int(v) for v in mt], "gauss": gauss},
        "sampler": sampler.state(),
    }
    if torch.device(device).type == "cuda":
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _restore_rng(
    state: Mapping[str, Any], numpy_rng: np.random.Generator, sampler: ImageSampler, device: str
) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    numpy_rng.bit_generator.state = json.loads(state["numpy"])
    legacy = state["numpy_global"]
    np.random.set_state(
        (
            legacy["name"],
            legacy["keys"].numpy().astype(np.uint32),
            legacy["pos"],
            legacy["has_gauss"],
            legacy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    sampler.load_state(state["sampler"])
    if torch.device(device).type == "cuda" and "cuda" in state:
        cuda_states = list(state["cuda"])
        if distributed.current().size > 1:
            # Rank 0 saved from cuda:0; every rank draws what it drew (same seed, same calls).
            torch.cuda.set_rng_state(cuda_states[0], device)
        elif len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainingResult:
    """What a run did: where it stopped, its losses and its checkpoint."""

    step: int
    epoch: int
    seconds: float
    losses: dict[str, float]
    """The losses of the last step."""
    history: list[dict[str, Any]]
    """Records of mean losses every ``log_every`` steps (and evaluations), oldest first."""
    checkpoint: Path | None
    resumed_from: int | None = None
    """The step the run continued from, when it resumed."""
    evaluations: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """The training loop of every learned codec: seeding, progress, checkpoints, resume.

    Args:
        trainable: the codec's model, optimizers and step.
        sampler: the batches (its crop, batch size and seed must equal the options').
        options: the run's options.
        log: where progress lines go off a terminal (default: stderr).
        progress: show a tqdm bar (default: when stderr is a terminal).
    """

    def __init__(
        self,
        trainable: Trainable,
        sampler: ImageSampler,
        options: TrainingOptions,
        *,
        log: Callable[[str], None] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.trainable = trainable
        self.sampler = sampler
        self.options = options
        self.world = distributed.current()
        """This process's place among data-parallel ones: rank 0 alone logs and saves."""
        self.log = (log or _log_to_stderr) if self.world.main else _silent
        self.progress = self.world.main and (sys.stderr.isatty() if progress is None else progress)
        if self.world.size > 1 and (sampler.rank, sampler.world) != (
            self.world.rank,
            self.world.size,
        ):
            sampler.shard(self.world.rank, self.world.size)
        for name, mine, theirs in (
            ("crop", sampler.crop, options.crop),
            ("batch_size", sampler.batch_size, options.batch_size),
            ("seed", sampler.seed, options.seed),
        ):
            if mine != theirs:
                raise UsageError(
                    f"the sampler's {name}={mine!r} differs from the training option "
                    f"{name}={theirs!r}; build the sampler from the same options"
                )
        self.modules = dict(trainable.modules())
        self.optimizers = dict(trainable.optimizers())
        clash = sorted(set(self.modules) & RESERVED_KEYS)
        if clash:
            raise UsageError(
                f"{trainable.name}: module names {clash} are reserved checkpoint keys; rename them"
            )
        self.format = checkpoint_format(trainable.name)
        self.amp = AmpContext(options.device, options.amp, options.amp_dtype, self.world.size)
        self.numpy_rng = np.random.default_rng(options.seed)
        """Trainer-level numpy randomness, saved and restored with the checkpoint."""
        self.step = 0
        self.saved_step: int | None = None
        """The step that ``options.out`` holds (saved or resumed from); None before either."""
        self.seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self._window: dict[str, float] = {}
        self._window_count = 0
        self.initialised_from: dict[str, Any] | None = None
        """Where the weights of step 0 came from (``init_from``); None for a fresh start."""

    # ---------------------------------------------------------------- state

    @property
    def total_steps(self) -> int:
        """Where the run stops: ``steps``, or ``epochs`` passes, whichever comes first."""
        return self.length(self.options, self.sampler)

    @staticmethod
    def length(options: TrainingOptions, sampler: ImageSampler) -> int:
        """The steps a run of ``options`` over ``sampler`` makes (for schedules)."""
        limits = []
        if options.steps is not None:
            limits.append(options.steps)
        if options.epochs is not None:
            limits.append(options.epochs * sampler.batches_per_epoch)
        return min(limits)

    def state_dict(self) -> dict[str, Any]:
        """The whole checkpoint: config, modules, optimizers, scaler and training state."""
        extra = _optional(self.trainable, "checkpoint_extra")
        state: dict[str, Any] = {
            "format": self.format,
            "config": _json_normal(self.trainable.config()),
        }
        for name, module in self.modules.items():
            state[name] = module.state_dict()
        state["optimizers"] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        state["scaler"] = self.amp.state_dict()
        state["training"] = {
            "step": self.step,
            "epoch": self.sampler.completed_epochs,
            "seconds": self.seconds,
            "options": self.options.to_json(),
            "dataset": self.sampler.dataset.tag,
            "images": [dict(image) for image in self.sampler.images],
            "losses": list(self.history),
            "evaluations": list(self.evaluations),
            "window": {"sums": dict(self._window), "count": self._window_count},
            "rng": _rng_state(self.numpy_rng, self.sampler, self.options.device),
            "world_size": self.world.size,
        }
        hyperparameters = self._hyperparameters()
        if hyperparameters is not None:
            state["training"]["hyperparameters"] = hyperparameters
        if self.initialised_from is not None:
            state["training"]["initialised_from"] = self.initialised_from
        if extra:
            clash = sorted(set(extra) & (RESERVED_KEYS | set(self.modules)))
            if clash:
                raise UsageError(
                    f"{self.trainable.name}: checkpoint_extra() keys {clash} clash with the "
                    "trainer's; rename them"
                )
            state.update(extra)
        return state

    def load_state_dict(self, state: Mapping[str, Any], source: Path | str = "checkpoint") -> None:
        """Restore everything ``state_dict()`` saved; the model's config must be unchanged.

        Raises:
            TrainingError: another model family, a differing config, missing modules.
        """
        self._check_model(state, source, "Resume with the same model options, or train into "
                          "another checkpoint")  # fmt: skip
        saved_hyper = state.get("training", {}).get("hyperparameters")
        given_hyper = self._hyperparameters()
        if saved_hyper is not None and given_hyper is not None:
            refuse_other_hyperparameters(saved_hyper, given_hyper, source)
        missing = sorted(set(self.modules) - set(state)) + sorted(
            set(self.optimizers) - set(state.get("optimizers", {}))
        )
        if missing:
            raise TrainingError(f"{source}: no saved state for {missing}")
        training = state["training"]
        saved_world = int(training.get("world_size", 1))
        if saved_world != self.world.size:
            raise ResumeMismatch(
                f"{source}: trained by {saved_world} data-parallel process(es), resumed by "
                f"{self.world.size}: the global batch ({self.options.batch_size} per process) "
                "and the sampler's sharding would change, so the run would not continue as it "
                f"began. Resume with torchrun --nproc_per_node={saved_world} (or one process "
                f"for 1), or train into another checkpoint"
            )
        self._warn_on_changes(training, source)
        for name, module in self.modules.items():
            module.load_state_dict(state[name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.amp.load_state_dict(state.get("scaler", {}))
        self.step = int(training["step"])
        self.seconds = float(training["seconds"])
        self.history = list(training.get("losses", []))
        self.evaluations = list(training.get("evaluations", []))
        origin = training.get("initialised_from")
        self.initialised_from = dict(origin) if isinstance(origin, Mapping) else None
        window = training.get("window", {"sums": {}, "count": 0})
        self._window = {k: float(v) for k, v in window["sums"].items()}
        self._window_count = int(window["count"])
        _restore_rng(training["rng"], self.numpy_rng, self.sampler, self.options.device)
        restore = getattr(self.trainable, "restore_extra", None)
        if callable(restore):
            reserved = RESERVED_KEYS | set(self.modules)
            restore({k: v for k, v in state.items() if k not in reserved})

    def _check_model(self, state: Mapping[str, Any], source: Path | str, what_to_do: str) -> None:
        """``state`` is a checkpoint of this model with this config.

        Raises:
            TrainingError: another model family; ResumeMismatch: a differing config.
        """
        if state.get("format") != self.format:
            raise TrainingError(
                f"{source}: a {state.get('format')!r} checkpoint, not {self.format!r}; "
                "it was written by another model"
            )
        current = _json_normal(self.trainable.config())
        differences = config_differences(state.get("config"), current)
        if differences:
            raise ResumeMismatch(
                f"{source}: the model's config differs from the checkpoint's at "
                + "; ".join(differences)
                + f". {what_to_do}"
            )

    def initialise_from(self, path: Path) -> None:
        """Load the modules' weights of the checkpoint at ``path`` (same model and config);
        the optimisers, step and hyper-parameters stay this run's. Recorded in
        ``initialised_from``.

        Raises:
            WeightsError: no such file or not a checkpoint; TrainingError: another model, a
            differing config (``ResumeMismatch``) or missing modules.
        """
        from bench.download import sha256_of

        state = read_checkpoint(path)
        self._check_model(state, path, "Fine-tune with the same model options as the "
                          "checkpoint's")  # fmt: skip
        missing = sorted(set(self.modules) - set(state))
        if missing:
            raise TrainingError(f"{path}: no saved state for {missing}")
        for name, module in self.modules.items():
            _size_empty_buffers(module, state[name])
            module.load_state_dict(state[name])
        training = state.get("training", {})
        keep = ("step", "epoch", "seconds", "dataset", "images", "hyperparameters",
                "initialised_from")  # fmt: skip
        self.initialised_from = {
            "file": str(path),
            "sha256": sha256_of(path),
            **_json_normal({k: training[k] for k in keep if k in training}),
        }
        self.log(
            f"initialising {self.trainable.name} from {path} (its step "
            f"{training.get('step', '?')}): fresh optimisers, step 0"
        )

    def _hyperparameters(self) -> dict[str, Any] | None:
        function = getattr(self.trainable, "hyperparameters", None)
        return _json_normal(dict(function())) if callable(function) else None

    def _warn_on_changes(self, training: Mapping[str, Any], source: Path | str) -> None:
        saved = training.get("options", {})
        now = self.options.to_json()
        changed = [
            f"{key} ({saved.get(key)!r} -> {now[key]!r})"
            for key in ("batch_size", "crop", "seed", "amp", "amp_dtype", "device")
            if key in saved and saved[key] != now[key]
        ]
        if changed:
            warnings.warn(
                f"{source}: resuming with changed options {', '.join(changed)}; the run will "
                "not repeat an uninterrupted one",
                stacklevel=3,
            )
        saved_images = [image.get("sha256") for image in training.get("images", [])]
        if saved_images and saved_images != [image["sha256"] for image in self.sampler.images]:
            warnings.warn(
                f"{source}: the training images differ from the checkpoint's; the sampler "
                "continues at its saved position over the new ones",
                stacklevel=3,
            )

    def save(self, path: Path | None = None) -> Path:
        """Write the checkpoint atomically to ``path`` (default: ``options.out``)."""
        target = path or self.options.out
        if target is None:
            raise UsageError("no checkpoint path: set the training option out")
        state = self.state_dict()
        # Never a diverged state: every reader refuses non-finite tensors (check_finite).
        bad = first_nonfinite(state)
        if bad is not None:
            self._diverged(f"tensor {bad} is not finite")
        if self.world.main:  # the ranks hold the same state; one writes it
            save_checkpoint(state, target)
        if target == self.options.out:
            self.saved_step = self.step
        return target

    # ---------------------------------------------------------------- the loop

    def run(self, resume: bool = False) -> TrainingResult:
        """Train until ``total_steps``; with ``resume``, continue from ``options.out``.

        A missing checkpoint file with ``resume`` starts from scratch (so a preempted job can
        always be restarted with the same command).
        """
        import torch

        options = self.options
        resumed_from: int | None = None
        previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        if options.deterministic:
            if torch.device(options.device).type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            self._seed(options.seed)
            for module in self.modules.values():
                module.to(options.device)
                module.train()
            if resume and options.out is not None and options.out.is_file():
                self.load_state_dict(read_checkpoint(options.out), options.out)
                resumed_from = self.saved_step = self.step
                self.log(f"resuming {self.trainable.name} from {options.out} at step {self.step}")
            else:
                if resume:
                    self.log(f"no checkpoint at {options.out}: training "
                             f"{self.trainable.name} anew")  # fmt: skip
                if options.init_from is not None:
                    self.initialise_from(options.init_from)
            if self.world.size > 1:
                distributed.broadcast_modules(self.modules)  # one start, as DDP's wrapping
            losses = self._loop()
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        checkpoint = self.save() if options.out is not None else None
        distributed.barrier()  # the checkpoint is there when any rank returns
        return TrainingResult(
            step=self.step,
            epoch=self.sampler.completed_epochs,
            seconds=self.seconds,
            losses=losses,
            history=list(self.history),
            checkpoint=checkpoint,
            resumed_from=resumed_from,
            evaluations=list(self.evaluations),
        )

    def _diverged(self, what: str) -> None:
        out, saved = self.options.out, self.saved_step
        if out is None:
            kept = "no checkpoint is written (no out)"
        elif saved is not None:
            kept = f"{out} keeps step {saved}, the last good checkpoint"
        else:
            kept = f"nothing was saved to {out}"
        raise TrainingDiverged(
            f"{self.trainable.name} diverged at step {self.step}: {what}; training stopped and "
            f"{kept}. Lower the learning rate (or resume from an earlier checkpoint)"
        )

    def _seed(self, seed: int) -> None:
        seed_everything(seed)
        self.numpy_rng = np.random.default_rng(seed)

    def _loop(self) -> dict[str, float]:
        import torch

        options = self.options
        total = self.total_steps
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=total,
                initial=self.step,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                desc=self.trainable.name,
            )
        started = time.monotonic()
        base_seconds = self.seconds
        start_step = self.step
        last_save = started
        losses: dict[str, float] = {}
        try:
            while self.step < total:
                batch = self.sampler.next_batch().to(options.device, non_blocking=True)
                losses = {k: float(v) for k, v in self.trainable.step(batch, self.amp).items()}
                if self.world.size > 1:
                    losses = distributed.mean_over_ranks(losses, self.world.size, options.device)
                self.amp.update()
                self.step += 1
                now = time.monotonic()
                self.seconds = base_seconds + (now - started)
                bad = [f"{k}={v}" for k, v in losses.items() if _diverged_value(k, v)]
                if bad:  # the step's own values, NaN shown as nan; nothing recorded or saved
                    if bar is None:
                        rate = (self.step - start_step) / max(now - started, 1e-9)
                        self.log(_progress_line({**self._window_mean(), **losses}, total, rate))
                    self._diverged("loss " + ", ".join(bad))
                for key, value in losses.items():
                    self._window[key] = self._window.get(key, 0.0) + value
                self._window_count += 1
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                    bar.update(1)
                if self.step % options.log_every == 0:
                    record = self._record()
                    if bar is None:
                        rate = (self.step - start_step) / max(now - started, 1e-9)
                        self.log(_progress_line(record, total, rate))
                elif self.step == total and bar is None:
                    # A run's last, partial window is logged but kept unrecorded (its sums go
                    # into the checkpoint), so a resumed run records what an uninterrupted would.
                    rate = (self.step - start_step) / max(now - started, 1e-9)
                    self.log(_progress_line(self._window_mean(), total, rate))
                if options.evaluate_every and self.step % options.evaluate_every == 0:
                    self._evaluate(torch)
                due = options.checkpoint_every is not None and (
                    self.step % options.checkpoint_every == 0
                )
                if options.checkpoint_seconds is not None:
                    due = due or now - last_save >= options.checkpoint_seconds
                if due and options.out is not None and self.step < total:
                    self.save()
                    last_save = time.monotonic()
        finally:
            if bar is not None:
                bar.close()
        return losses

    def _window_mean(self) -> dict[str, Any]:
        count = max(self._window_count, 1)
        return {
            "step": self.step,
            "epoch": self.sampler.completed_epochs,
            "seconds": round(self.seconds, 3),
            **{k: v / count for k, v in self._window.items()},
        }

    def _record(self) -> dict[str, Any]:
        record = self._window_mean()
        self.history.append(record)
        del self.history[: -self.options.history]
        self._window = {}
        self._window_count = 0
        return record

    def _evaluate(self, torch: Any) -> None:
        evaluate = getattr(self.trainable, "evaluate", None)
        if not callable(evaluate):
            return
        with torch.no_grad():
            metrics = {k: float(v) for k, v in evaluate().items()}
        for module in self.modules.values():
            module.train()
        entry = {"step": self.step, **metrics}
        self.evaluations.append(entry)
        if not self.progress:
            self.log(
                f"evaluation at step {self.step}: "
                + " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            )


def _size_empty_buffers(module: torch.nn.Module, state: Mapping[str, Any]) -> None:
    """Resize ``module``'s empty buffers to their saved shapes: tables that a model builds
    after training (CompressAI's entropy ``update()``) are empty in a fresh one."""
    for name, buffer in module.named_buffers():
        saved = state.get(name)
        if buffer.numel() == 0 and saved is not None and saved.shape != buffer.shape:
            buffer.resize_(saved.shape)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global state and Python's ``random``.

    Call it before building a trainable's modules so that their initial weights repeat too.
    """
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _diverged_value(name: str, value: float) -> bool:
    """NaN, or an infinity other than a PSNR's (+inf on a perfect reconstruction)."""
    if math.isnan(value):
        return True
    return math.isinf(value) and not (value > 0 and "psnr" in name)


def _optional(trainable: Trainable, method: str) -> dict[str, Any]:
    function = getattr(trainable, method, None)
    return dict(function()) if callable(function) else {}


def _silent(line: str) -> None:
    """The log of ranks other than 0."""


def _log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _progress_line(record: Mapping[str, Any], total: int, rate: float) -> str:
    """``step 100/1000 epoch 3 mse=0.0123 1.52 step/s eta 9m52s``."""
    losses = " ".join(
        f"{k}={v:.4g}"
        for k, v in record.items()
        if k not in ("step", "epoch", "seconds") and isinstance(v, float)
    )
    remaining = (total - int(record["step"])) / rate if rate > 0 else math.inf
    return (
        f"step {record['step']}/{total} epoch {record['epoch']} {losses} "
        f"{rate:.3g} step/s eta {_duration(remaining)}"
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def train(
    trainable: Trainable,
    dataset: Dataset,
    options: TrainingOptions,
    *,
    resume: bool = False,
    limit: int | None = None,
) -> TrainingResult:
    """Train ``trainable`` on ``dataset``: the sampler built from ``options``, then ``run``."""
    sampler = ImageSampler(
        dataset,
        crop=options.crop,
        batch_size=options.batch_size,
        seed=options.seed,
        limit=limit,
    )
    return Trainer(trainable, sampler, options).run(resume=resume)


__all__ = [
    "AmpContext",
    "ResumeMismatch",
    "Trainable",
    "Trainer",
    "TrainingDiverged",
    "TrainingError",
    "TrainingOptions",
    "TrainingResult",
    "config_differences",
    "seed_everything",
    "to_signed",
    "train",
]
