"""One home for weights and checkpoints: reading (``weights_only=True``), strict loading,
bench's checkpoint format names, one reader, one atomic writer and one error type.

Two kinds of files go through here:

- plain weights (a segmenter's or a CompressAI model's ``state_dict``, maybe wrapped in
  ``{"state_dict": ...}`` or ``{"model": ...}``): ``load_state_dict`` then ``load_strict``;
- bench checkpoints, written by ``bench.training`` (``bench train NAME``): a dict with
  ``"format": checkpoint_format(NAME)`` (``bench-NAME-1``), the model's ``config``, one
  ``state_dict`` per trained module and the trainer's state (``training``, ``optimizers``,
  ``scaler``); ``read_checkpoint`` reads one, ``save_checkpoint`` writes one atomically.

torch is imported where it is used, so ``import bench.weights`` works without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.types import TRAINING_FILES

FORMAT_VERSION = 1
"""The version of bench's checkpoint layout; the format name ends with it."""




class WeightsError(BenchError):
    """A checkpoint cannot be used: unreadable, not plain weights, another format, or the
    wrong architecture."""


def checkpoint_format(name: str) -> str:
    """The ``format`` entry of a bench checkpoint of model family ``name``.

    >>> checkpoint_format("gan")
    'bench-gan-1'
    """
    return f"bench-{name}-{FORMAT_VERSION}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def torch_load(path: Path, *, mmap: bool = False, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU (``mmap``: tensors read lazily).

    Raises:
        WeightsError: no such file, or a file that is not a torch file of plain values (a
            pickle that would run code is refused).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), KeyError, EOFError...
        raise WeightsError(
            f"{path}: not a {what}: not a torch file, or one holding more than tensors and plain "
            f"values ({type(exc).__name__}: {_first_line(exc)}); bench loads checkpoints with "
            "weights_only=True"
        ) from exc


def first_nonfinite(state: Any, prefix: str = "") -> str | None:
    """The dotted name of the first floating-point tensor in ``state`` (nested dicts, lists)
    that holds NaN or an infinity, or None when every one is finite.

    >>> import torch
    >>> first_nonfinite({"a": torch.ones(2), "b": {"c": torch.tensor([1.0, float("nan")])}})
    'b.c'
    """
    import torch

    if torch.is_tensor(state):
        if (state.is_floating_point() or state.is_complex()) and not bool(
            torch.isfinite(state).all()
        ):
            return prefix or "<tensor>"
        return None
    if isinstance(state, Mapping):
        items: Any = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = first_nonfinite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def check_finite(state: Any, source: str | os.PathLike[str]) -> None:
    """Refuse weights that hold NaN or infinite values (a diverged training).

    Raises:
        WeightsError: naming ``source`` and the first non-finite tensor.
    """
    bad = first_nonfinite(state)
    if bad is not None:
        raise WeightsError(
            f"{source}: tensor {bad} holds NaN or infinite values (a diverged training?); "
            "these weights cannot be used"
        )


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a checkpoint as plain tensors (``weights_only=True``); unwraps ``state_dict`` /
    ``model`` containers and a DataParallel ``module.`` prefix.

    Raises:
        WeightsError: missing file, or a pickle that holds more than plain weights.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage raises anything: UnpicklingError, KeyError, IndexError...
        raise WeightsError(
            f"{path}: not a plain-weights checkpoint ({type(exc).__name__}: "
            f"{_first_line(exc)}); bench loads "
            "checkpoints with weights_only=True and refuses pickles that run code. If you trust "
            "the file, save its tensors alone once: torch.save(torch.load(PATH, "
            "weights_only=False)['state_dict'], OUT)"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise WeightsError(f"{path}: expected a mapping of tensor names to tensors")
    if all(k.startswith("module.") for k in loaded):
        loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    check_finite(loaded, path)
    return dict(loaded)


def load_strict(model: Any, state: Mapping[str, Any], source: Path, architecture: str) -> None:
    """Load ``state`` into ``model``, failing with the missing, unexpected and misshapen tensors.

    Raises:
        WeightsError: naming up to six tensors of each kind, and how many more.
    """
    own = model.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 have no BatchNorm step counters; they do not
    # affect inference, so the model's own are kept.
    state = {**{k: v for k, v in own.items() if k.endswith(".num_batches_tracked")}, **state}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or misshapen:

        def listing(names: list[str]) -> str:
            return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")

        parts = [
            f"{label} ({len(names)}): {listing(names)}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", misshapen),
            )
            if names
        ]
        raise WeightsError(
            f"{source} does not match the {architecture} architecture: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def read_checkpoint(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    what: str = "",
    hint: str = "",
    mmap: bool = False,
) -> dict[str, Any]:
    """Read a bench checkpoint (``weights_only=True``, onto the CPU; ``mmap`` reads its tensors
    lazily, for configs and records).

    Args:
        path: the file.
        name: the model family it must be (``checkpoint_format(name)``); None accepts any
            ``bench-NAME-1`` checkpoint that holds a trainer's ``training`` record.
        what: how to name the model in messages (default ``name``).
        hint: appended to the messages of a missing file or another format (how to make one).
        mmap: memory-map the tensors.

    Every floating-point tensor must be finite (``check_finite``); with ``mmap`` (configs and
    records only) the tensors are not read, nor checked.

    Raises:
        WeightsError: no such file, an unreadable file, another format or version, or a
            non-finite tensor (named).
    """
    path = Path(path)
    label = f"{what or name} checkpoint" if (what or name) else "checkpoint"
    suffix = f"; {hint}" if hint else ""
    if not path.is_file():
        raise WeightsError(f"{path}: no such {label}{suffix}")
    loaded = torch_load(path, mmap=mmap, what=label)
    found = loaded.get("format") if isinstance(loaded, dict) else None
    if name is not None:
        expected = checkpoint_format(name)
        if found != expected:
            shown = found if isinstance(loaded, dict) else type(loaded).__name__
            raise WeightsError(f"{path}: not a {expected} checkpoint (format {shown!r}){suffix}")
        if not mmap:
            check_finite(loaded, path)
        return dict(loaded)
    if (
        not isinstance(found, str)
        or not found.startswith("bench-")
        or not isinstance(loaded.get("training"), dict)
    ):
        raise WeightsError(
            f"{path}: not a bench training checkpoint (no 'format': 'bench-NAME-N' and "
            "'training' entries)" + suffix
        )
    if not found.endswith(f"-{FORMAT_VERSION}"):
        raise WeightsError(
            f"{path}: checkpoint format {found!r} is not version {FORMAT_VERSION}, which this "
            "version of bench reads"
        )
    if not mmap:
        check_finite(loaded, path)
    return dict(loaded)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it (a reader
    never sees half a file; an interrupted write leaves the old one)."""
    import torch

    path = Path(path)
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
    return path


def training_record(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint says about its training: step, epoch, seconds, options, dataset and
    images ({id, sha256, file_sha256}); empty for a checkpoint without that record."""
    training = checkpoint.get("training")
    if not isinstance(training, dict):
        return {}
    keep = ("step", "epoch", "seconds", "options", "dataset", "images")
    record = {k: training[k] for k in keep if k in training}
    # Fine-tuned (``--init-from``): the source's images were trained on too, and the chain
    # of sources (file, SHA-256, step) is the provenance.
    chain: list[dict[str, Any]] = []
    images = list(record.get("images", []))
    origin = training.get("initialised_from")
    while isinstance(origin, Mapping):
        chain.append({k: origin[k] for k in ("file", "sha256", "step") if k in origin})
        images += origin.get("images", [])
        origin = origin.get("initialised_from")
    if chain:
        record["initialised_from"] = chain
        record["images"] = distinct_images(images)
    return record


def distinct_images(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training-image records without repeats (runs of one lineage share images), first kept;
    an image is its pixel hash, or its file hash where a record has no pixel hash."""
    seen: set[str] = set()
    kept = []
    for image in images:
        key = str(image.get("sha256") or image.get("file_sha256") or image)
        if key not in seen:
            seen.add(key)
            kept.append(image)
    return kept


def trained_on_files(path: str | os.PathLike[str]) -> list[str]:
    """The SHA-256 of the image files a bench checkpoint was trained on (its ``training``
    record's ``file_sha256``); empty for plain weights and unreadable files.
    """
    try:
        loaded = torch_load(Path(path), mmap=True)
    except WeightsError:
        return []
    if not isinstance(loaded, Mapping) or not str(loaded.get("format", "")).startswith("bench-"):
        return []
    images = training_record(loaded).get("images", [])
    return [
        str(i["file_sha256"]) for i in images if isinstance(i, Mapping) and i.get("file_sha256")
    ]


__all__ = [
    "FORMAT_VERSION",
    "TRAINING_FILES",
    "WeightsError",
    "check_finite",
    "checkpoint_format",
    "distinct_images",
    "first_nonfinite",
    "load_state_dict",
    "load_strict",
    "read_checkpoint",
    "save_checkpoint",
    "torch_load",
    "trained_on_files",
    "training_record",
]
