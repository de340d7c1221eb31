"""Training learned codecs: one loop, checkpoints, resume, progress and logging for every codec.

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
  reads them, and are written atomically (a temporary file in the same directory, then
  ``os.replace``).

torch is imported where it is used, so ``import bench.train`` works without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from bench.download import sha256_of
from bench.errors import BenchError, DatasetError, UsageError
from bench.types import Image

if TYPE_CHECKING:
    import torch

    from bench.datasets.base import Dataset

FORMAT_VERSION = 1
RESERVED_KEYS = frozenset({"format", "config", "optimizers", "scaler", "training"})
"""Top-level checkpoint keys the trainer owns; module names and extra keys must differ."""


class TrainingError(BenchError):
    """Training cannot start or continue (bad checkpoint, mismatched model, bad options)."""


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

    def __init__(self, device: str = "cpu", enabled: bool = True, dtype: str = "float16") -> None:
        import torch

        if dtype not in ("float16", "bfloat16"):
            raise UsageError(f"amp dtype {dtype!r}: expected float16 or bfloat16")
        self.device = torch.device(device)
        self.enabled = bool(enabled) and self.device.type == "cuda"
        self.dtype = getattr(torch, dtype)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and dtype == "float16")
        self._stepped = False

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
        if clip_grad_norm is not None:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        self.step(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``scaler.step(optimizer)``: for trainables that call ``scale(loss).backward()``."""
        self.scaler.step(optimizer)
        self._stepped = True

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

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-able values (paths as strings, tuples as lists)."""
        values = asdict(self)
        values["out"] = str(self.out) if self.out is not None else None
        values["crop"] = list(self.crop) if self.crop is not None else None
        return values


# --------------------------------------------------------------------------- data


def pixel_sha256(image: Image) -> str:
    """SHA-256 of an image's decoded pixels: the C-ordered bytes of its (H, W, 3) uint8 array.

    >>> pixel_sha256(np.zeros((1, 1, 3), np.uint8))[:12]
    '709e80c88487'
    """
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


class ImageSampler:
    """Seeded batches of random crops (with random horizontal flips) from a bench dataset.

    Every image is decoded once at construction, to hash its pixels (``images``) and check
    its size; the decoded images are kept in memory when they fit in ``max_cache_bytes``,
    otherwise re-read on demand. Each epoch visits the images in a seeded permutation, in
    batches of ``batch_size`` (a remainder that does not fill a batch is skipped). The random
    choices depend only on (seed, epoch, position), so ``state()`` is the sampler's position.

    Args:
        dataset: a bench dataset (``bench.datasets.open_dataset``).
        crop: (height, width) of the crops, or None for whole images (which then must all
            have the same size when ``batch_size > 1``).
        batch_size: images per batch.
        seed: the sampler's seed.
        flip: random horizontal flips.
        limit: use only the first N images.
        max_cache_bytes: keep decoded images in memory up to this total size.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        crop: tuple[int, int] | None = None,
        batch_size: int = 1,
        seed: int = 0,
        flip: bool = True,
        limit: int | None = None,
        max_cache_bytes: int = 1 << 30,
    ) -> None:
        self.dataset = dataset
        self.crop = (int(crop[0]), int(crop[1])) if crop is not None else None
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flip = flip
        self.refs = dataset.refs()[:limit] if limit is not None else dataset.refs()
        if len(self.refs) < self.batch_size:
            raise DatasetError(
                f"{dataset.tag}: {len(self.refs)} image(s) cannot fill a batch of "
                f"{self.batch_size}; lower the batch size or add images"
            )
        self.images: list[dict[str, str]] = []
        self.shapes: list[tuple[int, int]] = []
        cache: list[Image] = []
        total = 0
        for ref in self.refs:
            pixels = dataset.load(ref, with_label=False).image
            self._check_size(ref.id, pixels)
            self.images.append(
                {"id": ref.id, "sha256": pixel_sha256(pixels), "file_sha256": sha256_of(ref.path)}
            )
            self.shapes.append((int(pixels.shape[0]), int(pixels.shape[1])))
            total += pixels.nbytes
            if total <= max_cache_bytes:
                cache.append(pixels)
        self._cache: list[Image] | None = cache if total <= max_cache_bytes else None
        if self.crop is None and self.batch_size > 1 and len(set(self.shapes)) > 1:
            raise DatasetError(
                f"{dataset.tag}: whole images of different sizes {sorted(set(self.shapes))[:4]} "
                "cannot be batched; set a crop size or batch size 1"
            )
        self.epoch = 0
        self.index = 0

    def _check_size(self, image_id: str, pixels: Image) -> None:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise DatasetError(f"{image_id}: expected (H, W, 3) uint8, got {pixels.shape}")
        if self.crop is not None and (
            pixels.shape[0] < self.crop[0] or pixels.shape[1] < self.crop[1]
        ):
            raise DatasetError(
                f"{self.dataset.tag}/{image_id}: {pixels.shape[1]}x{pixels.shape[0]} is smaller "
                f"than the {self.crop[1]}x{self.crop[0]} crop; use a smaller crop"
            )

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def batches_per_epoch(self) -> int:
        """Full batches in one pass over the images."""
        return len(self.refs) // self.batch_size

    def permutation(self, epoch: int) -> npt.NDArray[np.int64]:
        """The order in which epoch ``epoch`` visits the images."""
        return np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.refs))

    def image(self, index: int) -> Image:
        """The decoded pixels of image ``index`` (from the cache when it holds them)."""
        if self._cache is not None:
            return self._cache[index]
        return self.dataset.load(self.refs[index], with_label=False).image

    def window(self, epoch: int, position: int) -> tuple[int, int, int, bool]:
        """(image index, top, left, flip) of the ``position``-th image of ``epoch``.

        ``top`` and ``left`` are 0 for whole images.
        """
        index = int(self.permutation(epoch)[position])
        rng = np.random.default_rng([self.seed, 1, epoch, position])
        height, width = self.shapes[index]
        top = left = 0
        if self.crop is not None:
            top = int(rng.integers(0, height - self.crop[0] + 1))
            left = int(rng.integers(0, width - self.crop[1] + 1))
        flip = bool(self.flip and rng.random() < 0.5)
        return index, top, left, flip

    def sample(self, epoch: int, position: int) -> Image:
        """The (cropped, maybe flipped) uint8 pixels of the ``position``-th image of ``epoch``."""
        index, top, left, flip = self.window(epoch, position)
        pixels = self.image(index)
        if self.crop is not None:
            pixels = pixels[top : top + self.crop[0], left : left + self.crop[1]]
        if flip:
            pixels = pixels[:, ::-1]
        return np.ascontiguousarray(pixels)

    def batch_at(self, epoch: int, index: int) -> torch.Tensor:
        """The batch starting at position ``index`` of epoch ``epoch``: float32 NCHW in [0, 1]."""
        import torch

        stacked = np.stack([self.sample(epoch, index + k) for k in range(self.batch_size)])
        return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    def next_batch(self) -> torch.Tensor:
        """The next batch; advances the position, moving to the next epoch when one is done."""
        if self.index + self.batch_size > len(self.refs):
            self.epoch += 1
            self.index = 0
        batch = self.batch_at(self.epoch, self.index)
        self.index += self.batch_size
        return batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    @property
    def completed_epochs(self) -> int:
        """Whole passes over the images done so far."""
        return self.epoch + (1 if self.index + self.batch_size > len(self.refs) else 0)

    def state(self) -> dict[str, int]:
        """The position: epoch and index in that epoch's permutation."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a position saved by ``state()``."""
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])


# --------------------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a bench training checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        TrainingError: no such file, a pickle holding more than tensors and plain values,
            or a file that is not a bench training checkpoint.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"{path}: not a bench checkpoint, or one holding more than tensors and plain values "
            f"({first}); bench loads checkpoints with weights_only=True"
        ) from exc
    fmt = loaded.get("format") if isinstance(loaded, dict) else None
    if (
        not isinstance(fmt, str)
        or not fmt.startswith("bench-")
        or not isinstance(loaded.get("training"), dict)
    ):
        raise TrainingError(
            f"{path}: not a bench training checkpoint (no 'format': 'bench-NAME-N' and "
            "'training' entries)"
        )
    if not fmt.endswith(f"-{FORMAT_VERSION}"):
        raise TrainingError(
            f"{path}: checkpoint format {fmt!r} is not version {FORMAT_VERSION}, which this "
            "version of bench reads"
        )
    return dict(loaded)


def read_model_checkpoint(
    path: Path, fmt: str, *, what: str, hint: str = "", mmap: bool = False
) -> dict[str, Any]:
    """Read a codec's ``bench-NAME-1`` checkpoint (``weights_only=True``, onto the CPU;
    ``mmap`` reads its tensors lazily, for configs and records).

    Raises:
        WeightsError: no such file, an unreadable file, or another format (``hint`` appended).
    """
    import torch

    from bench.tasks.base import WeightsError

    if not path.is_file():
        raise WeightsError(f"{path}: no such {what} checkpoint" + (f"; {hint}" if hint else ""))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a readable {fmt} checkpoint ({str(exc).splitlines()[0]}); bench "
            "loads checkpoints with weights_only=True"
        ) from exc
    if not isinstance(loaded, dict) or loaded.get("format") != fmt:
        found = loaded.get("format") if isinstance(loaded, dict) else type(loaded).__name__
        raise WeightsError(
            f"{path}: not a {fmt} checkpoint (format {found!r})" + (f"; {hint}" if hint else "")
        )
    return dict(loaded)


def training_record(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint says about its training: step, epoch, seconds, options, dataset and
    images ({id, sha256, file_sha256}); empty for a checkpoint without that record."""
    training = checkpoint.get("training")
    if not isinstance(training, dict):
        return {}
    keep = ("step", "epoch", "seconds", "options", "dataset", "images")
    return {k: training[k] for k in keep if k in training}


def save_atomic(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_normal(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, sort_keys=True))


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
        if len(cuda_states) == torch.cuda.device_count():
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
        self.log = log or _log_to_stderr
        self.progress = sys.stderr.isatty() if progress is None else progress
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
        self.format = f"bench-{trainable.name}-{FORMAT_VERSION}"
        self.amp = AmpContext(options.device, options.amp, options.amp_dtype)
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
        }
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
        if state.get("format") != self.format:
            raise TrainingError(
                f"{source}: a {state.get('format')!r} checkpoint, not {self.format!r}; "
                "it was written by another model"
            )
        current = _json_normal(self.trainable.config())
        differences = config_differences(state.get("config"), current)
        if differences:
            raise TrainingError(
                f"{source}: the model's config differs from the checkpoint's at "
                + "; ".join(differences)
                + ". Resume with the same model options, or train into another checkpoint"
            )
        missing = sorted(set(self.modules) - set(state)) + sorted(
            set(self.optimizers) - set(state.get("optimizers", {}))
        )
        if missing:
            raise TrainingError(f"{source}: no saved state for {missing}")
        training = state["training"]
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
        window = training.get("window", {"sums": {}, "count": 0})
        self._window = {k: float(v) for k, v in window["sums"].items()}
        self._window_count = int(window["count"])
        _restore_rng(training["rng"], self.numpy_rng, self.sampler, self.options.device)
        restore = getattr(self.trainable, "restore_extra", None)
        if callable(restore):
            reserved = RESERVED_KEYS | set(self.modules)
            restore({k: v for k, v in state.items() if k not in reserved})

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
        save_atomic(self.state_dict(), target)
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
                self.load_state_dict(load_checkpoint(options.out), options.out)
                resumed_from = self.saved_step = self.step
                self.log(f"resuming {self.trainable.name} from {options.out} at step {self.step}")
            elif resume:
                self.log(f"no checkpoint at {options.out}: training {self.trainable.name} anew")
            losses = self._loop()
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        checkpoint = self.save() if options.out is not None else None
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
                self.amp.update()
                self.step += 1
                now = time.monotonic()
                self.seconds = base_seconds + (now - started)
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


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global state and Python's ``random``.

    Call it before building a trainable's modules so that their initial weights repeat too.
    """
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _optional(trainable: Trainable, method: str) -> dict[str, Any]:
    function = getattr(trainable, method, None)
    return dict(function()) if callable(function) else {}


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
    "ImageSampler",
    "Trainable",
    "Trainer",
    "TrainingError",
    "TrainingOptions",
    "TrainingResult",
    "config_differences",
    "load_checkpoint",
    "pixel_sha256",
    "read_model_checkpoint",
    "save_atomic",
    "seed_everything",
    "to_signed",
    "train",
    "training_record",
]
